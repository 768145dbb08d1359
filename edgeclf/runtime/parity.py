"""How far a deployable file is from its reference: metrics on predicted probabilities.

Everything here works on arrays (numpy only), so the same numbers come out whether the
probabilities were produced by LiteRT, ONNX Runtime or Keras. ``check_parity`` returns a
frozen report and never raises on a failed gate; the CLI turns ``passed`` into an exit code.

Conventions: accuracies and agreement are fractions in [0, 1]; an accuracy *delta* is in
percentage points (model minus reference, so a drop is negative).

Example:
    >>> import numpy as np
    >>> ref = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], np.float32)
    >>> out = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6]], np.float32)
    >>> r = check_parity(out, ref, np.array([0, 1, 0]), labels=("cat", "dog"))
    >>> round(r.agreement, 3), round(r.accuracy_delta, 1), len(r.flips)
    (0.667, -33.3, 1)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional, Sequence

import numpy as np

from ..errors import UsageError


def _probs(a, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise UsageError(f"{name} must be a 2-D array (images, classes); got shape {arr.shape}")
    return arr.astype(np.float64, copy=False)


def _targets(y, n: int) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise UsageError(f"true labels must be a 1-D array of {n} class indices; got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise UsageError(f"true labels must be integer class indices; got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise UsageError(f"the model's probabilities have shape {a.shape} but the reference's {b.shape}; "
                         "both must cover the same images and classes")


def accuracy(probs, y) -> float:
    """Fraction of rows whose top-1 class equals ``y`` (NaN for zero rows)."""
    p = _probs(probs, "probabilities")
    t = _targets(y, p.shape[0])
    if p.shape[0] == 0:
        return float("nan")
    return float(np.mean(p.argmax(axis=1) == t))


def top1_agreement(probs, reference) -> float:
    """Fraction of rows whose top-1 class is the same in both (NaN for zero rows)."""
    a, b = _probs(probs, "probabilities"), _probs(reference, "reference probabilities")
    _same_shape(a, b)
    if a.shape[0] == 0:
        return float("nan")
    return float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))


def abs_prob_diff(probs, reference) -> tuple[float, float]:
    """(max, mean) absolute difference between the two probability arrays, over all entries."""
    a, b = _probs(probs, "probabilities"), _probs(reference, "reference probabilities")
    _same_shape(a, b)
    if a.size == 0:
        return float("nan"), float("nan")
    d = np.abs(a - b)
    return float(d.max()), float(d.mean())


def per_class_accuracy(probs, y, num_classes: int) -> np.ndarray:
    """Accuracy per true class (NaN where a class has no images)."""
    p = _probs(probs, "probabilities")
    t = _targets(y, p.shape[0])
    pred = p.argmax(axis=1)
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        mask = t == c
        if mask.any():
            out[c] = float(np.mean(pred[mask] == c))
    return out


@dataclass(frozen=True)
class ClassDelta:
    """One class's accuracy in the model and the reference."""

    label: str
    count: int
    accuracy: Optional[float]
    reference_accuracy: Optional[float]
    delta: Optional[float]  # percentage points, model - reference

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Flip:
    """An image whose top-1 prediction differs between the reference and the model."""

    index: int
    source: Optional[str]
    true_label: str
    reference_label: str
    reference_confidence: float
    label: str
    confidence: float

    @property
    def kind(self) -> str:
        """'broke' (reference right, model wrong), 'fixed' (the reverse) or 'both wrong'."""
        if self.reference_label == self.true_label:
            return "broke"
        if self.label == self.true_label:
            return "fixed"
        return "both wrong"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kind"] = self.kind
        return d


@dataclass(frozen=True)
class ParityReport:
    """A model's predictions measured against a reference's on the same images."""

    num_images: int
    accuracy: float
    reference_accuracy: float
    accuracy_delta: float  # percentage points, model - reference
    agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    per_class: tuple[ClassDelta, ...]
    flips: tuple[Flip, ...]
    max_accuracy_drop: Optional[float]
    min_agreement: Optional[float]
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {
            "num_images": self.num_images,
            "accuracy": self.accuracy,
            "reference_accuracy": self.reference_accuracy,
            "accuracy_delta": self.accuracy_delta,
            "agreement": self.agreement,
            "max_abs_diff": self.max_abs_diff,
            "mean_abs_diff": self.mean_abs_diff,
            "per_class": [c.to_dict() for c in self.per_class],
            "flips": [f.to_dict() for f in self.flips],
            "thresholds": {"max_accuracy_drop": self.max_accuracy_drop, "min_agreement": self.min_agreement},
            "failures": list(self.failures),
            "passed": self.passed,
        }


def _nan_to_none(v: float) -> Optional[float]:
    return None if v != v else float(v)


def validate_thresholds(max_accuracy_drop: Optional[float], min_agreement: Optional[float]) -> None:
    """Raise UsageError for gates that make no sense (a negative drop, agreement outside [0, 1])."""
    if max_accuracy_drop is not None and not (max_accuracy_drop >= 0):
        raise UsageError(f"max accuracy drop must be >= 0 percentage points; got {max_accuracy_drop}")
    if min_agreement is not None and not (0.0 <= min_agreement <= 1.0):
        raise UsageError(f"min agreement is a fraction between 0 and 1; got {min_agreement}"
                         + (" (did you mean a fraction, e.g. 0.99?)" if min_agreement > 1 else ""))


def check_parity(probs, reference_probs, y, *, labels: Optional[Sequence[str]] = None,
                 sources: Optional[Sequence[object]] = None, max_accuracy_drop: Optional[float] = None,
                 min_agreement: Optional[float] = None) -> ParityReport:
    """Compare a model's probabilities with a reference's on the same labelled images.

    Args:
        probs: the model's probabilities, ``(N, C)``.
        reference_probs: the reference's probabilities for the same images, ``(N, C)``.
        y: the true class index of each image, ``(N,)``.
        labels: class names in column order (default ``"0"``, ``"1"``, ...).
        sources: what each row came from (file paths), reported for flipped images.
        max_accuracy_drop: fail when accuracy falls more than this many points below the
            reference's (``None``: no gate).
        min_agreement: fail when top-1 agreement with the reference is below this fraction.

    Returns:
        A frozen ``ParityReport``; ``passed`` is False when a gate failed, ``failures`` says
        which. Arrays of the wrong shape and impossible gates raise UsageError.
    """
    validate_thresholds(max_accuracy_drop, min_agreement)
    p = _probs(probs, "probabilities")
    r = _probs(reference_probs, "reference probabilities")
    _same_shape(p, r)
    n, c = p.shape
    t = _targets(y, n)
    if n and (t.min() < 0 or t.max() >= c):
        raise UsageError(f"true labels must be class indices in 0..{c - 1}; got values {t.min()}..{t.max()}")
    if labels is None:
        labels = [str(i) for i in range(c)]
    labels = [str(x) for x in labels]
    if len(labels) != c:
        raise UsageError(f"{len(labels)} labels given for {c} classes")
    if sources is not None and len(sources) != n:
        raise UsageError(f"{len(sources)} sources given for {n} images")

    acc = accuracy(p, t)
    ref_acc = accuracy(r, t)
    agree = top1_agreement(p, r)
    max_d, mean_d = abs_prob_diff(p, r)
    delta = (acc - ref_acc) * 100.0

    pc, rc = per_class_accuracy(p, t, c), per_class_accuracy(r, t, c)
    counts = np.bincount(t, minlength=c) if n else np.zeros(c, np.int64)
    per_class = tuple(
        ClassDelta(label=labels[i], count=int(counts[i]), accuracy=_nan_to_none(pc[i]),
                   reference_accuracy=_nan_to_none(rc[i]),
                   delta=_nan_to_none((pc[i] - rc[i]) * 100.0))
        for i in range(c)
    )

    pred, ref_pred = p.argmax(axis=1), r.argmax(axis=1)
    flips = tuple(
        Flip(index=int(i), source=None if sources is None else str(sources[i]), true_label=labels[t[i]],
             reference_label=labels[ref_pred[i]], reference_confidence=float(r[i, ref_pred[i]]),
             label=labels[pred[i]], confidence=float(p[i, pred[i]]))
        for i in np.flatnonzero(pred != ref_pred)
    )

    failures = []
    if max_accuracy_drop is not None and n and -delta > max_accuracy_drop + 1e-9:
        failures.append(f"accuracy dropped {-delta:.2f} points (limit {max_accuracy_drop:g})")
    if min_agreement is not None and n and agree < min_agreement - 1e-12:
        failures.append(f"agreement {agree:.4f} is below {min_agreement:g}")
    return ParityReport(
        num_images=n, accuracy=acc, reference_accuracy=ref_acc, accuracy_delta=delta, agreement=agree,
        max_abs_diff=max_d, mean_abs_diff=mean_d, per_class=per_class, flips=flips,
        max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement, failures=tuple(failures),
    )


# --------------------------------------------------------------------------------------------
# Comparing deployable files on one labelled image set


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

    @property
    def name(self) -> str:
        import os

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
        from .preprocess import image_size_arg, load_image

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
                from ..errors import DataError

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
    from ..errors import DataError

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
             warmup: int = 3, model_labels: Optional[Sequence[str]] = None) -> ModelOutput:
    """Load one model file through the runtime, predict every image, time batch-1 inference.

    ``latency_runs=0`` skips the latency measurement; ``model_labels`` supplies labels for a
    file without edgeclf metadata.
    """
    import os
    import time

    from . import load_classifier
    from .backend import import_engine
    from .latency import measure_latency

    name = os.path.basename(str(path))
    import_engine(path)
    t0 = time.perf_counter_ns()
    clf = load_classifier(path, threads=threads) if model_labels is None else \
        load_classifier(path, threads=threads, labels=model_labels)
    load_ms = (time.perf_counter_ns() - t0) / 1e6
    meta = getattr(clf, "metadata", None)
    method = getattr(meta, "resize_method", "bilinear") or "bilinear"
    batch = images.batch(clf.input_size, method)
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
    return ModelOutput(path=str(path), format=str(clf.format), precision=str(getattr(clf, "precision", "") or ""),
                       size_bytes=size, threads=getattr(clf, "threads", threads), input_size=tuple(clf.input_size),
                       load_ms=load_ms, latency=latency, probs=probs)


def _result(out: ModelOutput, ref: ModelOutput, images: ImageSet, labels, *, is_reference: bool,
            max_accuracy_drop, min_agreement) -> ModelResult:
    rep = check_parity(out.probs, ref.probs, images.y, labels=labels, sources=images.sources,
                       max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement)
    return ModelResult(**out.facts(), parity=rep, is_reference=is_reference)


def compare_models(paths: Sequence, images: ImageSet, labels: Sequence[str], *, reference=None,
                   threads: Optional[int] = None, max_accuracy_drop: Optional[float] = None,
                   min_agreement: Optional[float] = None, latency_runs: Optional[int] = 50,
                   latency_seconds: Optional[float] = 1.0, data: str = "",
                   model_labels: Optional[Sequence[str]] = None) -> Comparison:
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

    Returns:
        A frozen ``Comparison``; ``passed`` is False when any model failed a gate.
    """
    import os

    from .latency import system_info

    validate_thresholds(max_accuracy_drop, min_agreement)
    if not paths:
        raise UsageError("give at least one model file to compare")
    opts = dict(threads=threads, latency_runs=latency_runs, latency_seconds=latency_seconds,
                model_labels=model_labels)
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
    import os
    from pathlib import Path

    def precision_of(p) -> str:
        try:
            from .metadata import read_tflite_metadata, sniff_format

            data = Path(p).read_bytes()
            if sniff_format(data) == "tflite":
                meta = read_tflite_metadata(data, source=str(p))
                if meta is not None:
                    return meta.precision
        except Exception:  # unreadable here means: judge by name; loading will say what is wrong
            pass
        return "float32" if "float32" in Path(p).stem else ""

    ranked = sorted(paths, key=lambda p: 0 if str(p).endswith(".tflite") else 1)
    for p in ranked:
        if precision_of(p) == "float32":
            return p
    for p in ranked:
        for ext in (".tflite", ".onnx"):
            cand = Path(p).with_name(f"model_float32{ext}")
            if cand.exists():
                return cand
    names = ", ".join(os.path.basename(str(p)) for p in paths)
    raise UsageError(f"no float32 model among {names} (nor model_float32.tflite/.onnx beside them) to use as "
                     "the reference; name one with --reference FILE")
