"""Compare deployable files on one labelled image set: the host-side service behind
``edgeclf compare`` and ``edgeclf run``.

Every file is loaded through the runtime, sees exactly the same decoded images, and is measured
against one reference (a float32 file, or the Keras model through ``evaluate.reference``) with
``runtime.metrics``. Results are frozen dataclasses with ``to_dict()``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import DataError, UsageError
from ..runtime.layout import ExportDir, RunDir, unique_paths
from ..runtime.metrics import ParityReport, check_parity, validate_thresholds
from ..runtime.spec import Precision

log = logging.getLogger(__name__)



def _unit(v: float) -> Optional[float]:
    return None if v is None or v != v else float(v)


@dataclass(frozen=True)
class FileFacts:
    """What was measured of one model file while running it (shared by output and result)."""

    path: str
    format: str
    precision: str
    size_bytes: Optional[int]
    threads: Optional[int]
    input_size: tuple[int, int]
    load_ms: Optional[float]
    latency: Optional[object]  # LatencyStats at batch 1, or None when not measured
    memory: Optional[object]  # runtime.memory.MemoryUse (fresh process, batch 1), or None when not measured

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def facts(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(FileFacts)}


@dataclass(frozen=True)
class ModelResult(FileFacts):
    """One file measured on the comparison's images, against the reference."""

    parity: ParityReport
    is_reference: bool = False

    @property
    def passed(self) -> bool:
        return self.parity.passed

    def to_dict(self) -> dict:
        p = self.parity
        lat = None
        if self.latency is not None:
            lat = {k: getattr(self.latency, k) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms")}
            lat.update(runs=self.latency.runs, warmup=self.latency.warmup, batch_size=1)
        return {
            "path": self.path,
            "format": self.format,
            "precision": self.precision,
            "size_bytes": self.size_bytes,
            "is_reference": self.is_reference,
            "num_images": p.num_images,
            "accuracy": _unit(p.accuracy),
            "accuracy_delta": _unit(p.accuracy_delta),
            "agreement": _unit(p.agreement),
            "max_abs_diff": _unit(p.max_abs_diff),
            "mean_abs_diff": _unit(p.mean_abs_diff),
            "per_class": [c.to_dict() for c in p.per_class],
            "flips": [f.to_dict() for f in p.flips],
            "load_ms": self.load_ms,
            "threads": self.threads,
            "input_size": list(self.input_size),
            "latency": lat,
            "memory": None if self.memory is None else self.memory.to_dict(),
            "thresholds": {"max_accuracy_drop": p.max_accuracy_drop, "min_agreement": p.min_agreement},
            "failures": list(p.failures),
            "passed": self.passed,
        }


@dataclass(frozen=True)
class Comparison:
    """Every file against one reference on the same images: what ``edgeclf compare`` reports."""

    reference: ModelResult
    models: tuple[ModelResult, ...]
    labels: tuple[str, ...]
    sources: tuple[str, ...]
    y: tuple[int, ...]
    skipped: tuple[tuple[str, str], ...]
    data: str
    threads: Optional[int]
    system: Optional[object] = None  # SystemInfo

    @property
    def passed(self) -> bool:
        return all(m.passed for m in self.models)

    def to_dict(self) -> dict:
        ref = self.reference
        return {
            "reference": {"path": ref.path, "format": ref.format, "precision": ref.precision,
                          "size_bytes": ref.size_bytes, "accuracy": _unit(ref.parity.accuracy),
                          "memory": None if ref.memory is None else ref.memory.to_dict(),
                          "latency": None if ref.latency is None else
                          {k: getattr(ref.latency, k) for k in ("p50_ms", "p90_ms", "p99_ms")}},
            "models": [m.to_dict() for m in self.models],
            "passed": self.passed,
            "data": {"source": self.data, "num_images": len(self.sources), "labels": list(self.labels),
                     "skipped": [list(s) for s in self.skipped]},
            "threads": self.threads,
            "system": None if self.system is None else self.system.to_dict(),
        }


class ImageSet:
    """Labelled image files, decoded once per (input size, resize method) and kept in memory.

    A file that cannot be decoded is dropped (and listed in ``skipped``) the first time any
    size is decoded, so every model sees exactly the same images.
    """

    def __init__(self, sources: Sequence[str], y: Sequence[int], *, progress_label: str = "decoding"):
        if len(sources) != len(y):
            raise UsageError(f"{len(sources)} images but {len(y)} labels")
        self._sources = [str(s) for s in sources]
        self._y = np.asarray(y, dtype=np.int64)
        self._keep: Optional[np.ndarray] = None
        self._cache: dict = {}
        self.skipped: list[tuple[str, str]] = []
        self._label = progress_label

    @property
    def sources(self) -> list[str]:
        return [s for s, k in zip(self._sources, self._mask()) if k]

    @property
    def y(self) -> np.ndarray:
        return self._y[self._mask()]

    def _mask(self) -> np.ndarray:
        return np.ones(len(self._sources), bool) if self._keep is None else self._keep

    def batch(self, size, resize_method: str = "bilinear") -> np.ndarray:
        """All kept images as uint8 ``(N, H, W, 3)`` at ``size``."""
        from .._term import progress
        from ..errors import ImageError
        from ..runtime.preprocess import image_size_arg, load_image

        key = (image_size_arg(size), str(getattr(resize_method, "value", resize_method)))
        if key in self._cache:
            return self._cache[key]
        first = self._keep is None
        keep = np.ones(len(self._sources), bool) if first else self._keep
        out = []
        label = f"{self._label} {key[0][0]}x{key[0][1]}"
        for i in progress([i for i in range(len(self._sources)) if keep[i]], label=label):
            try:
                out.append(load_image(self._sources[i], key[0], resize_method=key[1]))
            except ImageError as exc:
                if not first:
                    raise
                keep[i] = False
                self.skipped.append((self._sources[i], exc.reason))
        if first:
            self._keep = keep
            # Batches decoded earlier at another size can no longer exist (this is the first).
            if self._sources and not keep.any():
                path, reason = self.skipped[0]
                raise DataError(f"none of the {len(self._sources)} images could be read "
                                f"(the first, {path}: {reason}); check the --data folder")
        arr = np.stack(out) if out else np.zeros((0, *key[0], 3), np.uint8)
        self._cache[key] = arr
        return arr


def align_columns(probs: np.ndarray, model_labels: Sequence[str], labels: Sequence[str], *, name: str) -> np.ndarray:
    """Reorder ``probs`` columns from ``model_labels`` order into ``labels`` order.

    Raises DataError when the two sets of class names differ.
    """
    model_labels, labels = [str(x) for x in model_labels], [str(x) for x in labels]
    if sorted(model_labels) != sorted(labels):
        missing = [x for x in labels if x not in model_labels]
        extra = [x for x in model_labels if x not in labels]
        detail = "; ".join(s for s in (f"the data has {missing} which the model lacks" if missing else "",
                                        f"the model has {extra} which the data lacks" if extra else "") if s)
        raise DataError(f"{name}: its labels {model_labels} differ from the data's classes {labels} ({detail}); "
                        "compare a model on data with the classes it was trained on")
    if model_labels == labels:
        return probs
    order = [model_labels.index(x) for x in labels]
    return probs[:, order]


def predict_all(predict_proba, batch: np.ndarray, *, batch_size: int = 32, label: str = "") -> np.ndarray:
    """``predict_proba`` over ``batch`` in chunks, with progress on stderr."""
    from .._term import progress

    chunks = range(0, len(batch), batch_size)
    outs = [np.asarray(predict_proba(batch[i:i + batch_size]), np.float32)
            for i in progress(chunks, total=len(chunks), label=label)]
    if not outs:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(outs)


@dataclass(frozen=True)
class ModelOutput(FileFacts):
    """A model's probabilities on an ``ImageSet`` plus what was measured while getting them."""

    probs: np.ndarray


def run_file(path, images: ImageSet, labels: Sequence[str], *, threads: Optional[int] = None,
             latency_runs: Optional[int] = 50, latency_seconds: Optional[float] = 1.0,
             warmup: int = 3, model_labels: Optional[Sequence[str]] = None, memory: bool = True) -> ModelOutput:
    """Load one model file through the runtime, predict every image, time batch-1 inference,
    and (``memory``) measure its peak memory at batch 1 in a fresh process (``runtime.memory``).

    ``latency_runs=0`` skips the latency measurement; ``model_labels`` supplies labels for a
    file without edgeclf metadata.
    """
    import time

    from ..runtime import load_classifier
    from ..runtime.backend import import_engine
    from ..runtime.latency import measure_latency

    name = os.path.basename(str(path))
    import_engine(path)
    t0 = time.perf_counter_ns()
    clf = load_classifier(path, threads=threads) if model_labels is None else \
        load_classifier(path, threads=threads, labels=model_labels)
    load_ms = (time.perf_counter_ns() - t0) / 1e6
    batch = images.batch(clf.input_size, clf.metadata.resize_method)
    probs = predict_all(clf.predict_proba, batch, label=f"{name:<24}")
    probs = align_columns(probs, clf.labels, labels, name=name)
    latency = None
    if latency_runs != 0 and len(batch):
        one = batch[:1]
        latency = measure_latency(lambda: clf.predict_proba(one), warmup=warmup, runs=latency_runs,
                                  seconds=latency_seconds)
    try:
        size = os.path.getsize(path)
    except OSError:
        size = None
    mem = None
    if memory:
        from ..errors import ModelFileError
        from ..runtime.memory import measure_memory

        try:
            mem = measure_memory(path, threads=clf.threads, labels=model_labels)
        except ModelFileError as exc:  # the file ran here; a missing figure must not stop the comparison
            log.warning(f"{name}: memory not measured: {exc}")
    return ModelOutput(path=str(path), format=str(clf.format), precision=str(clf.precision or ""),
                       size_bytes=size, threads=clf.threads, input_size=tuple(clf.input_size),
                       load_ms=load_ms, latency=latency, memory=mem, probs=probs)


def _result(out: ModelOutput, ref: ModelOutput, images: ImageSet, labels, *, is_reference: bool,
            max_accuracy_drop, min_agreement) -> ModelResult:
    rep = check_parity(out.probs, ref.probs, images.y, labels=labels, sources=images.sources,
                       max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement)
    return ModelResult(**out.facts(), parity=rep, is_reference=is_reference)


def compare_models(paths: Sequence, images: ImageSet, labels: Sequence[str], *, reference=None,
                   threads: Optional[int] = None, max_accuracy_drop: Optional[float] = None,
                   min_agreement: Optional[float] = None, latency_runs: Optional[int] = 50,
                   latency_seconds: Optional[float] = 1.0, data: str = "",
                   model_labels: Optional[Sequence[str]] = None, memory: bool = True) -> Comparison:
    """Measure every model file in ``paths`` against a reference on the same images.

    Args:
        paths: model files (.tflite / .onnx) the runtime can load.
        images: the labelled images (``ImageSet``); class indices follow ``labels``.
        labels: the class names, in the order of ``images.y``; every model's labels must be
            the same set (any order).
        reference: a model file (one of ``paths`` or another), a ``ModelOutput`` computed
            elsewhere (the Keras model), or None for the float32 file among ``paths``.
        threads: engine threads for every model (None: the engine's default).
        max_accuracy_drop, min_agreement: the gates (see ``check_parity``).
        latency_runs, latency_seconds: bounds of the batch-1 latency measurement per file.
        model_labels: labels for every file (for files without edgeclf metadata).
        memory: measure each file's peak memory (a fresh process per file, ``runtime.memory``).

    Returns:
        A frozen ``Comparison``; ``passed`` is False when any model failed a gate.
    """
    from ..runtime.latency import system_info

    validate_thresholds(max_accuracy_drop, min_agreement)
    if not paths:
        raise UsageError("give at least one model file to compare")
    opts = dict(threads=threads, latency_runs=latency_runs, latency_seconds=latency_seconds,
                model_labels=model_labels, memory=memory)
    outputs: dict[str, ModelOutput] = {}
    ref_out: Optional[ModelOutput] = reference if isinstance(reference, ModelOutput) else None
    ref_path = None if reference is None or ref_out is not None else str(reference)
    if reference is None:
        ref_path = str(default_reference(paths))
    keyed = {os.path.realpath(str(p)): str(p) for p in paths}
    if ref_path is not None and os.path.realpath(ref_path) not in keyed:
        ref_out = run_file(ref_path, images, labels, **opts)
    for p in paths:
        outputs[str(p)] = run_file(p, images, labels, **opts)
    if ref_out is None:
        ref_out = outputs[keyed[os.path.realpath(ref_path)]]
    if len(ref_out.probs) != len(images.y):
        raise UsageError("the reference was computed on a different number of images than the models")
    gates = dict(max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement)
    ref_result = _result(ref_out, ref_out, images, labels, is_reference=True, max_accuracy_drop=None,
                         min_agreement=None)
    models = tuple(_result(o, ref_out, images, labels, is_reference=o is ref_out, **gates) for o in outputs.values())
    return Comparison(reference=ref_result, models=models, labels=tuple(labels), sources=tuple(images.sources),
                      y=tuple(int(v) for v in images.y), skipped=tuple(images.skipped), data=str(data),
                      threads=threads, system=system_info())


def default_reference(paths: Sequence):
    """The float32 file among ``paths`` (TFLite first), else ``model_float32.*`` beside them.

    The precision is read from the file's edgeclf metadata, falling back to the file name.
    """
    def precision_of(p) -> str:
        try:
            from ..runtime.metadata import read_tflite_metadata, sniff_format

            data = Path(p).read_bytes()
            if sniff_format(data) == "tflite":
                meta = read_tflite_metadata(data, source=str(p))
                if meta is not None:
                    return meta.precision
        except Exception:  # unreadable here means: judge by name; loading will say what is wrong
            pass
        return Precision.FLOAT32.value if Precision.FLOAT32.value in Path(p).stem else ""

    ranked = sorted(paths, key=lambda p: 0 if str(p).endswith(".tflite") else 1)
    for p in ranked:
        if precision_of(p) == Precision.FLOAT32.value:
            return p
    for p in ranked:
        for fmt in ("tflite", "onnx"):
            cand = Path(p).with_name(ExportDir.model_name(fmt, Precision.FLOAT32))
            if cand.exists():
                return cand
    names = ", ".join(os.path.basename(str(p)) for p in paths)
    raise UsageError(f"no float32 model among {names} (nor model_float32.tflite/.onnx beside them) to use as "
                     "the reference; name one with --reference FILE")


# --------------------------------------------------------------------------------------------
# what to compare, and on which images


def expand_models(models) -> list[Path]:
    """Model files from the arguments; a directory stands for the model files in it."""
    out: list[Path] = []
    for m in models:
        p = Path(m)
        if p.is_dir():
            found = ExportDir(p).model_files()
            if not found:
                raise UsageError(f"{p} is a directory with no .tflite or .onnx files; give model files "
                                 "or an export directory")
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise UsageError(f"model file {p} does not exist")
    return unique_paths(out)


@dataclass(frozen=True)
class EvalData:
    """Labelled images to compare on: a class-folder directory or a run's validation split."""

    root: Path
    kind: str  # "run" or "folders"
    labels: tuple[str, ...]
    sources: tuple[str, ...]
    y: tuple[int, ...]
    ignored: tuple = ()


def load_eval_data(path) -> EvalData:
    """Read ``data``: a run directory (its validation split) or class folders."""
    root = Path(path).expanduser()
    run = RunDir(root)
    if run.has_split():
        labels = run.spec().labels
        val = run.split(len(labels)).val
        if not val:
            raise DataError(f"run directory {root} has no validation images in {RunDir.SPLIT} (trained with "
                            "--val-split 0?); pass a class-folder directory with --data instead")
        return EvalData(root, "run", labels, tuple(p for p, _ in val), tuple(i for _, i in val))
    from ..data.folders import scan_folder

    folder = scan_folder(root, what="--data directory")
    return EvalData(folder.root, "folders", tuple(folder.class_names), tuple(folder.paths), tuple(folder.labels),
                    tuple(folder.ignored))
