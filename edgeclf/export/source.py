"""What an export starts from: a run directory from ``edgeclf train``, or a Keras model a user
already has (``.keras``, ``.h5``, SavedModel folder) plus ``--labels``.

Keras files load with safe mode on, so a file cannot run arbitrary Python (a ``Lambda``
layer is refused with the reason). Images for calibration, QAT fine-tuning and validation
come from the run's ``split.json`` or from a class-folder dataset given with ``--data`` /
``--calibration``; evaluation images are never used for calibration.
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

DEFAULT_SEED = 123

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


@dataclass(frozen=True)
class ModelSource:
    """A loaded Keras classifier and everything known about it."""

    path: Path
    model: object  # tf_keras.Model
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


_LAMBDA_REFUSED = ("the model contains a Lambda layer, whose Python code safe mode refuses to run from a "
                   "file (it could execute anything); replace the Lambda with a built-in layer or a "
                   "registered custom layer and save the model again")


def _has_lambda(config) -> bool:
    if isinstance(config, dict):
        if config.get("class_name") == "Lambda":
            return True
        return any(_has_lambda(v) for v in config.values())
    if isinstance(config, list):
        return any(_has_lambda(v) for v in config)
    return False


def _refuse_lambda_outside_keras_format(path: Path) -> None:
    """Keras' safe mode guards only the ``.keras`` format: an ``.h5`` file or a SavedModel
    with a Lambda layer would unmarshal and run its stored bytecode, so look first."""
    if path.is_dir():
        meta = path / "keras_metadata.pb"
        if meta.is_file() and b'"class_name": "Lambda"' in meta.read_bytes():
            raise ModelFileError(f"{path}: {_LAMBDA_REFUSED}")
        return
    if path.suffix.lower() not in (".h5", ".hdf5"):
        return
    try:
        import h5py

        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except Exception:  # not HDF5 at all: let the loader give its own error
        return
    if raw is None:
        return
    try:
        config = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
    except ValueError:
        return
    if _has_lambda(config):
        raise ModelFileError(f"{path}: {_LAMBDA_REFUSED}")


def load_keras_model(path: Path):
    """Load a Keras model with safe mode on; one clear ModelFileError when it cannot."""
    from .._optional import import_keras
    from .._quiet import native_stderr_silenced

    keras = import_keras()
    if not path.exists():
        raise UsageError(f"model not found: {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise ModelFileError(f"{path}: the file is empty; export it again from the training script")
    _refuse_lambda_outside_keras_format(path)
    try:
        with native_stderr_silenced():
            if path.is_dir():
                return keras.models.load_model(str(path), compile=False)
            return keras.models.load_model(str(path), compile=False, safe_mode=True)
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        if "Lambda" in msg or "safe_mode" in msg or "safe mode" in msg:
            raise ModelFileError(f"{path}: {_LAMBDA_REFUSED}") from None
        raise ModelFileError(f"{path}: cannot load this Keras model ({msg.splitlines()[0][:300]})") from None
    except (OSError, ImportError) as exc:
        raise ModelFileError(
            f"{path}: not a readable Keras model ({type(exc).__name__}: {str(exc)[:300]}); "
            "give a .keras, .h5 or SavedModel folder"
        ) from None
    except Exception as exc:  # h5py / protobuf raise many kinds on damaged files
        raise ModelFileError(f"{path}: damaged or not a Keras model ({type(exc).__name__}: {str(exc)[:300]})") from None


def infer_output_kind(model) -> OutputKind:
    """What the last layer gives: softmax → probabilities, a single sigmoid unit → sigmoid."""
    last = model.layers[-1]
    act = getattr(last, "activation", None)
    name = getattr(act, "__name__", "") if act is not None else ""
    if type(last).__name__ == "Softmax":
        name = "softmax"
    width = int(model.outputs[0].shape[-1])
    if name == "softmax":
        return OutputKind.PROBABILITIES
    if name == "sigmoid" and width == 1:
        return OutputKind.SIGMOID
    return OutputKind.LOGITS


def model_input_size(model) -> tuple[int, int]:
    shape = model.inputs[0].shape
    if len(shape) != 4 or shape[-1] != 3 or shape[1] is None or shape[2] is None:
        raise ModelFileError(
            f"the model's input shape is {tuple(shape)}; edgeclf exports image classifiers "
            "with a fixed (batch, height, width, 3) input"
        )
    return int(shape[1]), int(shape[2])


ONE_UNIT_WITHOUT_SIGMOID = ("the model ends in one unit without a sigmoid; edgeclf needs a binary model to end in "
                            "Dense(1, activation='sigmoid') (or N logits)")


def _check_labels_fit(model, labels, kind: OutputKind, where: str) -> None:
    width = int(model.outputs[0].shape[-1])
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


def load_source(source, *, labels_file=None, data=None, calibration=None, seed: Optional[int] = None) -> ModelSource:
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
    """
    path = Path(source)
    if not path.exists():
        raise UsageError(f"source not found: {path}; give a run directory or a .keras/.h5/SavedModel model")
    run_dir = path.is_dir() and (path / "model.keras").is_file()
    train: list = []
    val: list = []
    held_out: list = []  # validation and test images: never calibration
    data_source = ""
    resize = "bilinear"
    val_split, test_split = 0.2, 0.0
    split_seed = seed  # a run's data is split with the run's seed whatever --seed says
    if run_dir:
        model_path = path / "model.keras"
        model = load_keras_model(model_path)
        config = _read_json(path / "config.json", "run configuration") if (path / "config.json").exists() else {}
        split_seed = _run_seed(config)
        if seed is None:
            seed = split_seed
        if labels_file is not None:
            labels = read_labels_file(labels_file)
        elif (path / "labels.txt").is_file():
            labels = read_labels_file(path / "labels.txt")
        else:
            raise ModelFileError(f"{path}: run directory has no labels.txt; give --labels FILE")
        kind = OutputKind(config.get("output_kind") or infer_output_kind(model).value)
        resize = str(config.get("resize_method", "bilinear"))
        name = str(config.get("model", "")) or model.name
        split_file = path / "split.json"
        if split_file.is_file():
            split = _read_json(split_file, "data split")
            run_val = [(str(p), int(i)) for p, i in split.get("val", [])]
            run_test = [(str(p), int(i)) for p, i in split.get("test", [])]
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
                train = [(str(p), int(i)) for p, i in split.get("train", [])]
                val = run_val or run_test
                data_source = f"{split_file} (train split for calibration, val split for validation)"
        sha = file_sha256(model_path)
    else:
        if path.is_dir() and not (path / "saved_model.pb").is_file():
            raise UsageError(f"{path} is neither a run directory (no model.keras) nor a SavedModel folder")
        if path.is_file() and path.suffix.lower() not in KERAS_SUFFIXES:
            raise UsageError(f"{path}: unknown model file type {path.suffix!r}; give a .keras, .h5 or SavedModel folder")
        if labels_file is None:
            raise UsageError(f"{path} is not an edgeclf run directory, so --labels FILE is required "
                             "(one class name per line, in output order)")
        model = load_keras_model(path)
        labels = read_labels_file(labels_file)
        kind = infer_output_kind(model)
        name = model.name
        sha = _sha256_of(path)
    if seed is None:
        seed = DEFAULT_SEED
    if split_seed is None:
        split_seed = seed
    cal_samples: list = []
    input_size = model_input_size(model)
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
