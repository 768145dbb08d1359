"""The one place that knows what a run directory and an export directory hold and what their
files are called. Everything else asks these classes for paths and contents.

A run directory (``edgeclf train``)::

    model.keras    the inference model (tf_keras native format, no augmentation layers)
    spec.json      the ModelSpec: labels, input size, output kind, resize method
    labels.txt     the labels again, one per line, for people and other tools (never read back)
    config.json    the training options; split.json which files went where
    history.json, metrics.json, curves.png, confusion.png, mistakes.png

An export directory (``edgeclf export``)::

    model_<precision>.<format>   one per exported file (``Format`` x ``Precision``)
    export.json                   what was written and measured; golden.npz for ``verify``

Standard library, numpy-free: the device and the host both read these names.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from ..errors import DataError, ModelFileError
from .spec import (DEFAULT_SEED, DEFAULT_TEST_SPLIT, DEFAULT_VAL_SPLIT, SUPPORTED_PRECISIONS, Format, ModelSpec,
                   Precision)

Item = tuple[str, int]  # (absolute image path, label index)


def _read_json(path: Path, what: str, fix: str) -> dict:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{path.parent}: no {path.name} ({what}); {fix}") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelFileError(f"{path}: cannot read the {what} ({type(exc).__name__}: {exc}); {fix}") from None
    if not isinstance(d, dict):
        raise ModelFileError(f"{path}: the {what} is not a JSON object; {fix}")
    return d


@dataclass(frozen=True)
class RunSplit:
    """``split.json``: which images trained, validated and tested, by label index."""

    train: tuple[Item, ...]
    val: tuple[Item, ...]
    test: tuple[Item, ...]
    seed: int
    val_split: Optional[float]
    test_split: float
    root: str = ""
    val_dir: Optional[str] = None


class RunDir:
    """A run directory written by ``edgeclf train``."""

    MODEL = "model.keras"
    SPEC = "spec.json"
    LABELS = "labels.txt"
    CONFIG = "config.json"
    SPLIT = "split.json"
    HISTORY = "history.json"
    METRICS = "metrics.json"
    CURVES = "curves.png"
    CONFUSION = "confusion.png"
    MISTAKES = "mistakes.png"
    _FIX = "train the run again"

    def __init__(self, path):
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @classmethod
    def is_run(cls, path) -> bool:
        """True for a folder holding a run's model file (what tells a run from a SavedModel)."""
        p = Path(path).expanduser()
        return p.is_dir() and (p / cls.MODEL).is_file()

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def model_path(self) -> Path:
        return self.path / self.MODEL

    def spec(self) -> ModelSpec:
        """The run's ModelSpec (labels, input size, output kind, resize method)."""
        path = self.path / self.SPEC
        return ModelSpec.from_dict(_read_json(path, "model spec", self._FIX), source=str(path))

    def config(self) -> dict:
        """The training options (``config.json``); empty when the file is absent."""
        path = self.path / self.CONFIG
        return _read_json(path, "run configuration", self._FIX) if path.exists() else {}

    def data_roots(self) -> tuple[str, ...]:
        """The data folders the run was trained on, as ``split.json`` and ``config.json`` record
        them (nothing for files that are missing or unreadable: loading says what is wrong)."""
        roots = []
        for name, keys in ((self.SPLIT, ("root", "val_dir")), (self.CONFIG, ("data", "val_dir"))):
            try:
                d = json.loads((self.path / name).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError, RecursionError):
                continue
            if isinstance(d, dict):
                roots += [d[k] for k in keys if isinstance(d.get(k), str) and d[k]]
        return tuple(dict.fromkeys(roots))

    def has_split(self) -> bool:
        return (self.path / self.SPLIT).is_file()

    def split(self, num_labels: int) -> RunSplit:
        """``split.json``, checked: every label index must name one of ``num_labels`` labels."""
        path = self.path / self.SPLIT
        d = _read_json(path, "data split", self._FIX)
        try:
            parts = {}
            for key in ("train", "val", "test"):
                items = tuple((str(p), int(i)) for p, i in d.get(key) or [])
                bad = [i for _, i in items if not 0 <= i < num_labels]
                if bad:
                    raise DataError(f"{path}: the {key} split holds label index {bad[0]}, outside the run's "
                                    f"{num_labels} labels; the split file does not belong to this model; "
                                    f"{self._FIX}")
                parts[key] = items
            vs = d.get("val_split", DEFAULT_VAL_SPLIT)
            return RunSplit(train=parts["train"], val=parts["val"], test=parts["test"],
                            seed=int(d.get("seed", DEFAULT_SEED)),
                            val_split=None if vs is None else float(vs),
                            test_split=float(d.get("test_split") or DEFAULT_TEST_SPLIT),
                            root=str(d.get("root", "")), val_dir=d.get("val_dir") or None)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{path} is not a readable split file ({exc}); {self._FIX}") from None


class ExportDir:
    """An export directory written by ``edgeclf export``."""

    REPORT = "export.json"
    GOLDEN = "golden.npz"
    # golden.npz keys: "images", then per exported file F (its name at export time) these + F.
    GOLDEN_KEY_IMAGES = "images"
    GOLDEN_KEY_PROBS = "probs::"
    GOLDEN_KEY_ATOL = "atol::"
    GOLDEN_KEY_SHA256 = "sha256::"

    def __init__(self, path):
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"ExportDir({str(self.path)!r})"

    @staticmethod
    def model_name(fmt, precision) -> str:
        """``model_<precision>.<format>``: the name of an exported file."""
        return f"model_{Precision(precision).value}.{Format(fmt).value}"

    def model_files(self) -> list[Path]:
        """The deployable files in the folder, in export order (see ``model_order``)."""
        return sorted((q for q in self.path.iterdir() if is_model_file(q)), key=model_order)


class JobDir:
    """The folder ``edgeclf run`` fills: the data, the run, the export, the report."""

    DATA = "data"
    RUN = "run"
    EXPORT = "export"
    REPORT = "report"
    COMPARE = "compare.json"
    INCOMPLETE = ".edgeclf-run-incomplete"  # present while the job has not finished


SYNTH_RECORD = ".edgeclf-synth.json"  # what ``data synth`` wrote, inside the dataset

MODEL_SUFFIXES = tuple(f".{f.value}" for f in Format)


def is_model_file(path) -> bool:
    p = Path(path)
    return p.suffix.lower() in MODEL_SUFFIXES and not p.name.startswith(".") and p.is_file()


def model_order(path) -> tuple:
    """Export order: TFLite before ONNX, then precisions in ``Precision`` order (float32 first),
    then files whose name names no precision, by name."""
    p = Path(path)
    suffix = p.suffix.lower().lstrip(".")
    fmt_rank = [f.value for f in Format].index(suffix) if suffix in [f.value for f in Format] else len(Format)
    stem = p.stem.lower()
    order = list(SUPPORTED_PRECISIONS[Format.TFLITE])
    rank = next((i for i, pr in enumerate(order) if stem.endswith(pr.value)), len(order))
    return (fmt_rank, rank, p.name)


def unique_paths(paths: Iterable) -> list[Path]:
    """``paths`` without repeats of the same real file, first occurrence kept."""
    seen, out = set(), []
    for p in paths:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            out.append(Path(p))
    return out
