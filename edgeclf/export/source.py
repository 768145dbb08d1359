"""What an export starts from: a run directory from ``edgeclf train``, or a Keras model a user
already has (``.keras``, ``.h5``, SavedModel folder) plus ``--labels``.

Every model loads through ``keras_load.load_keras_model``: the format is decided by content,
the stored config is checked for code before anything is deserialized (a ``Lambda`` layer
is refused with the reason), and Keras 3 files load with Keras 3 in safe mode. Images for
calibration, QAT fine-tuning and validation come from the run's ``split.json`` or from a
class-folder dataset given with ``--data`` / ``--calibration``; evaluation images are never
used for calibration.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .._term import info
from ..errors import DataError, ModelFileError, UsageError
from ..runtime.metadata import OutputKind, file_sha256, read_labels_file
from ..runtime.preprocess import is_image_file
from .calibration import ImageBank
from .keras_load import InputRange, LoadedModel, load_keras_model  # noqa: F401 - the one Keras door

__all__ = ["ModelSource", "load_source", "load_keras_model", "LoadedModel"]

DEFAULT_SEED = 123



@dataclass(frozen=True)
class ModelSource:
    """A loaded Keras classifier and everything known about it."""

    path: Path
    model: LoadedModel  # .predict(pixels 0..255), .keras_model, .function
    labels: tuple[str, ...]
    input_size: tuple[int, int]
    output_kind: OutputKind
    sha256: str
    name: str
    resize_method: str = "bilinear"
    train: tuple = ()  # ((path, index), ...) — QAT images, and calibration unless given apart
    val: tuple = ()  # held-out images for parity and accuracy
    calibration: tuple = ()  # images from --calibration; empty: sample the training images
    data_source: str = ""  # where train/val came from, for export.json
    seed: int = DEFAULT_SEED  # --seed, else the run's (config.json), else 123
    images: Optional[ImageBank] = None  # images already decoded (--data), shared by the whole export


def _sha256_of(path: Path) -> str:
    if path.is_file():
        return file_sha256(path)
    import hashlib

    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode())
        h.update(file_sha256(p).encode())
    return h.hexdigest()


ONE_UNIT_WITHOUT_SIGMOID = ("the model ends in one unit without a sigmoid; edgeclf needs a binary model to end in "
                            "Dense(1, activation='sigmoid') (or N logits)")


def _check_labels_fit(model, labels, kind: OutputKind, where: str) -> None:
    width = int(model.output_width)
    if width == 1 and kind is not OutputKind.SIGMOID:
        # Dense(1) with no activation is one logit; the runtime has no output kind for it, and
        # read as 1-class logits its softmax would be 1.0 for every image.
        raise ModelFileError(f"{where}: {ONE_UNIT_WITHOUT_SIGMOID}")
    want = 1 if kind is OutputKind.SIGMOID else len(labels)
    if width != want:
        if kind is OutputKind.SIGMOID:
            raise UsageError(f"{where}: the model has one sigmoid output, so it needs exactly 2 labels, not {len(labels)}")
        raise UsageError(f"{where}: {len(labels)} labels given but the model has {width} outputs; "
                         "give one label per output, in index order")


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{path.parent}: run directory has no {path.name}; train again or give the model file with --labels") from None
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: cannot read the {what} ({exc})") from None


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _label_index(class_names: Sequence[str], labels: Sequence[str], where: str) -> dict[int, int]:
    """Folder label index -> the model's label index, matched by name."""
    unknown = [c for c in class_names if c not in labels]
    if unknown:
        raise DataError(f"{where}: class folder{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                        f"{'are' if len(unknown) > 1 else 'is'} not among the model's labels ({', '.join(labels)}); "
                        "name the class folders as the labels")
    pos = {name: i for i, name in enumerate(labels)}
    return {k: pos[name] for k, name in enumerate(class_names)}


def _split_items(split: dict, part: str, labels, where: Path) -> list[tuple[str, int]]:
    """(path, label index) of one part of split.json; an index outside the labels is a DataError."""
    out = []
    for item in split.get(part, []) or []:
        try:
            p, i = item
            i = int(i)
        except (TypeError, ValueError):
            raise DataError(f"{where}: {part} entry {item!r} is not [path, label index]; train the run again") from None
        if not 0 <= i < len(labels):
            raise DataError(f"{where}: {part} image {p} has label index {i}, outside the {len(labels)} labels "
                            f"({', '.join(labels)}); the split does not belong to these labels: give the run's "
                            "labels.txt, or export with --data DIR")
        out.append((str(p), i))
    return out


def _run_seed(config: dict) -> int:
    try:
        return int(config.get("seed", DEFAULT_SEED))
    except (TypeError, ValueError):
        return DEFAULT_SEED


def _split_data(data, labels, size, resize_method: str, *, seed: int, val_split: float, test_split: float,
                bank: ImageBank):
    """``--data`` split as ``edgeclf train`` splits it: scan, drop unreadable images, split.

    Returns (train, val, test) as (absolute path, model label index)."""
    from ..data.cache import decode_images
    from ..data.folders import drop_bad, scan_folder
    from ..data.splits import split_folder

    folder = scan_folder(data, what="--data directory")
    index = _label_index(folder.class_names, labels, f"--data {folder.root}")
    decoded = decode_images(folder.paths, size, resize_method=resize_method, root=folder.root)
    bank.add(decoded.paths, decoded.pixels, decoded.bad)
    if decoded.bad:
        info(f"--data: {len(decoded.bad)} unreadable image(s) left out, as training leaves them out")
    folder = drop_bad(folder, decoded.bad, what="--data directory")
    split = split_folder(folder, val_split=val_split, test_split=test_split, seed=seed)

    def mapped(items):
        return [(p, index[y]) for p, y in items]

    return mapped(split.train), mapped(split.val), mapped(split.test)


def _calibration_samples(root, labels) -> list[tuple[str, int]]:
    """(absolute path, label index or -1) for a ``--calibration`` folder: class folders named
    as the labels, or loose images."""
    from ..data.folders import list_classes, scan_folder

    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"--calibration {root} {'is not a folder' if root.exists() else 'does not exist'}; "
                        "give a folder of images (loose, or one folder per class)")
    if list_classes(root):
        folder = scan_folder(root, what="--calibration folder")
        index = _label_index(folder.class_names, labels, f"--calibration {folder.root}")
        return [(p, index[y]) for p, y in folder.files]
    loose = sorted(os.path.abspath(e.path) for e in os.scandir(root)
                   if not _hidden(e.name) and e.is_file() and is_image_file(e.name))
    if not loose:
        raise DataError(f"--calibration {root} holds no images")
    return [(p, -1) for p in loose]


def load_source(source, *, labels_file=None, data=None, calibration=None, seed: Optional[int] = None,
                input_range=None, output_kind=None) -> ModelSource:
    """Load a run directory or a Keras model file, with its labels and images.

    Args:
        source: a run directory (``model.keras``, ``labels.txt``, ``config.json``,
            ``split.json``) or a ``.keras`` / ``.h5`` file or SavedModel folder.
        labels_file: required for a non-run source; overrides a run's labels otherwise.
        data: a class-folder dataset, split exactly as ``edgeclf train`` splits it (same
            seed, same fractions as the run) into images for calibration/QAT and images for
            validation. Overrides a run's split.
        calibration: a folder of images used for calibration only (class folders or loose);
            the validation and test images are left out of it.
        seed: the seed of the calibration sample, and of the ``--data`` split of a model that
            is not a run (default: the run's seed from ``config.json``, else 123). A run's
            data is always split with the run's own seed, so its split is reproduced.
        input_range: the pixel values the model expects ("0,255", "0,1", "-1,1"); default:
            inferred (a run's model takes 0..255). The exported files still take 0..255.
        output_kind: logits / probabilities / sigmoid; default: the run's, else inferred.
    """
    path = Path(source)
    if not path.exists():
        raise UsageError(f"source not found: {path}; give a run directory or a .keras/.h5/SavedModel model")
    run_dir = path.is_dir() and os.path.lexists(path / "model.keras")  # the loader refuses a non-file
    train: list = []
    val: list = []
    held_out: list = []  # validation and test images: never calibration
    data_source = ""
    resize = "bilinear"
    val_split, test_split = 0.2, 0.0
    split_seed = seed  # a run's data is split with the run's seed whatever --seed says
    if run_dir:
        model_path = path / "model.keras"
        config = _read_json(path / "config.json", "run configuration") if (path / "config.json").exists() else {}
        model = load_keras_model(model_path, input_range=input_range or InputRange.PIXELS,
                                 output_kind=output_kind or config.get("output_kind") or None)
        split_seed = _run_seed(config)
        if seed is None:
            seed = split_seed
        if labels_file is not None:
            labels = read_labels_file(labels_file)
        elif (path / "labels.txt").is_file():
            labels = read_labels_file(path / "labels.txt")
        else:
            raise ModelFileError(f"{path}: run directory has no labels.txt; give --labels FILE")
        kind = model.output_kind
        _check_labels_fit(model, labels, kind, str(path))  # before split.json's indexes are read against them
        resize = str(config.get("resize_method", "bilinear"))
        name = str(config.get("model", "")) or model.name
        split_file = path / "split.json"
        if split_file.is_file():
            split = _read_json(split_file, "data split")
            run_val = _split_items(split, "val", labels, split_file)
            run_test = _split_items(split, "test", labels, split_file)
            held_out += run_val + run_test
            try:
                val_split = float(split.get("val_split") if split.get("val_split") is not None else 0.2)
                test_split = float(split.get("test_split") or 0.0)
            except (TypeError, ValueError):
                pass
            if data is not None and split.get("val_dir"):
                info(f"Note: this run validated on --val-dir {split['val_dir']} and trained on every image of "
                     f"its data; if --data {data} is that data, its validation split held nothing out")
            if data is None:
                train = _split_items(split, "train", labels, split_file)
                val = run_val or run_test
                data_source = f"{split_file} (train split for calibration, val split for validation)"
        sha = file_sha256(model_path)
    else:
        if path.is_dir() and not (path / "saved_model.pb").exists():
            raise UsageError(f"{path} is neither a run directory (no model.keras) nor a SavedModel folder")
        if labels_file is None:
            raise UsageError(f"{path} is not an edgeclf run directory, so --labels FILE is required "
                             "(one class name per line, in output order)")
        labels = read_labels_file(labels_file)
        model = load_keras_model(path, input_range=input_range, output_kind=output_kind)
        info(f"Model: {model.describe()}")
        for note in model.notes:
            info(f"  {note}")
        kind = model.output_kind
        name = model.name
        sha = _sha256_of(path)
    if seed is None:
        seed = DEFAULT_SEED
    if split_seed is None:
        split_seed = seed
    cal_samples: list = []
    input_size = tuple(model.input_size)
    _check_labels_fit(model, labels, kind, str(path))
    bank = ImageBank(input_size, resize)
    if data is not None:
        train, val, test = _split_data(data, labels, input_size, resize, seed=split_seed, val_split=val_split,
                                       test_split=test_split, bank=bank)
        held_out += val + test
        data_source = (f"{Path(data).expanduser().resolve()} (split as edgeclf train splits it: "
                       f"val {val_split:g}, seed {split_seed})")
    if calibration is not None:
        cal = _calibration_samples(calibration, labels)
        held = {os.path.realpath(p) for p, _ in held_out}
        cal_samples = [s for s in cal if os.path.realpath(s[0]) not in held]
        if not cal_samples:
            raise DataError(f"{calibration}: every image there is a validation or test image; calibrate on training images")
        if len(cal_samples) < len(cal):
            info(f"Calibration: left out {len(cal) - len(cal_samples)} image(s) of {calibration} that are "
                 "validation or test images")
        data_source = (data_source + "; " if data_source else "") + f"calibration from {Path(calibration).resolve()}"
    return ModelSource(path=path, model=model, labels=tuple(labels), input_size=input_size, output_kind=kind,
                       sha256=sha, name=name, resize_method=resize, train=tuple(train), val=tuple(val),
                       data_source=data_source, calibration=tuple(cal_samples), seed=seed, images=bank)
