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

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .._term import info
from ..errors import DataError, ModelFileError, OptionError, UsageError
from ..runtime.layout import RunDir
from ..runtime.metadata import file_sha256, read_labels_file
from ..runtime.spec import (DEFAULT_RESIZE, DEFAULT_SEED, DEFAULT_TEST_SPLIT, DEFAULT_VAL_SPLIT, MAX_SEED,
                            OutputKind, check_output_width)
from ..runtime.preprocess import is_image_file
from .calibration import ImageBank
from .keras_load import InputRange, LoadedModel, load_keras_model  # noqa: F401 - the one Keras door

__all__ = ["ModelSource", "load_source", "load_keras_model", "LoadedModel", "source_inputs"]

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
    resize_method: str = DEFAULT_RESIZE.value
    train: tuple = ()  # ((path, index), ...) — QAT images, and calibration unless given apart
    val: tuple = ()  # held-out images for parity and accuracy
    calibration: tuple = ()  # images from --calibration; empty: sample the training images
    data_source: str = ""  # where train/val came from, for export.json
    seed: int = DEFAULT_SEED  # --seed, else the run's split seed, else DEFAULT_SEED
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


def source_inputs(source, *more) -> tuple:
    """Everything an export (or explain-quant) of ``source`` reads, for the output checks: the
    source, the other inputs given (``--data``, ``--calibration``), and for a run directory the
    data it was trained on, which its split reads again."""
    roots = RunDir(source).data_roots() if RunDir.is_run(source) else ()
    return (source, *more, *roots)


ONE_UNIT_WITHOUT_SIGMOID = ("the model ends in one unit without a sigmoid; edgeclf needs a binary model to end in "
                            "Dense(1, activation='sigmoid') (or N logits)")


def _check_labels_fit(model, labels, kind: OutputKind, where: str) -> None:
    width = int(model.output_width)
    if width == 1 and kind is not OutputKind.SIGMOID:
        # Dense(1) with no activation is one logit; the runtime has no output kind for it, and
        # read as 1-class logits its softmax would be 1.0 for every image.
        raise ModelFileError(f"{where}: {ONE_UNIT_WITHOUT_SIGMOID}")
    try:
        check_output_width(kind, len(labels), width)
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}; give one label per output, in index order (two for a sigmoid "
                         "model)") from None


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
        source: a run directory (``RunDir``: the model, its spec and split) or a ``.keras`` /
            ``.h5`` file or SavedModel folder.
        labels_file: required for a non-run source; overrides a run's labels otherwise.
        data: a class-folder dataset, split exactly as ``edgeclf train`` splits it (same
            seed, same fractions as the run) into images for calibration/QAT and images for
            validation. Overrides a run's split.
        calibration: a folder of images used for calibration only (class folders or loose);
            the validation and test images are left out of it.
        seed: the seed of the calibration sample, and of the ``--data`` split of a model that
            is not a run (default: the run's split seed, else ``DEFAULT_SEED``). A run's
            data is always split with the run's own seed, so its split is reproduced.
        input_range: the pixel values the model expects ("0,255", "0,1", "-1,1"); default:
            inferred (a run's model takes 0..255). The exported files still take 0..255.
        output_kind: logits / probabilities / sigmoid; default: the run's, else inferred.
    """
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        raise OptionError("seed", f"must be a whole number from 0 to {MAX_SEED}; got {seed!r}")  # as train's
    path = Path(source)
    if not path.exists():
        raise UsageError(f"source not found: {path}; give a run directory or a .keras/.h5/SavedModel model")
    run_dir = path.is_dir() and os.path.lexists(path / RunDir.MODEL)  # the loader refuses a non-file
    train: list = []
    val: list = []
    held_out: list = []  # validation and test images: never calibration
    data_source = ""
    resize = DEFAULT_RESIZE.value
    val_split, test_split = DEFAULT_VAL_SPLIT, DEFAULT_TEST_SPLIT
    split_seed = seed  # a run's data is split with the run's seed whatever --seed says
    if run_dir:
        run = RunDir(path)
        spec = run.spec()
        model = load_keras_model(run.model_path, input_range=input_range or InputRange.PIXELS,
                                 output_kind=output_kind or spec.output_kind)
        labels = read_labels_file(labels_file) if labels_file is not None else spec.labels
        kind = model.output_kind
        _check_labels_fit(model, labels, kind, str(path))  # before split.json's indexes are read against them
        resize = spec.resize_method
        name = spec.model_name or model.name
        if run.has_split():
            split = run.split(len(labels))
            split_seed = split.seed
            held_out += list(split.val) + list(split.test)
            val_split = split.val_split if split.val_split is not None else DEFAULT_VAL_SPLIT
            test_split = split.test_split
            if data is not None and split.val_dir:
                info(f"Note: this run validated on --val-dir {split.val_dir} and trained on every image of "
                     f"its data; if --data {data} is that data, its validation split held nothing out")
            if data is None:
                train = list(split.train)
                val = list(split.val or split.test)
                data_source = f"{run.file(RunDir.SPLIT)} (train split for calibration, val split for validation)"
        if seed is None:
            seed = split_seed
        sha = file_sha256(run.model_path)
    else:
        if path.is_dir() and not (path / "saved_model.pb").exists():
            raise UsageError(f"{path} is neither a run directory (no {RunDir.MODEL}) nor a SavedModel folder")
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
