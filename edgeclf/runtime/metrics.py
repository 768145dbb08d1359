"""The one home of every accuracy and agreement figure edgeclf reports: numpy on arrays of
predicted probabilities, used by training, export, verify and compare alike.

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

from dataclasses import asdict, dataclass
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



def confusion_matrix(probs, y, num_classes: int) -> np.ndarray:
    """``cm[true, predicted]`` counts, int64 ``(num_classes, num_classes)``."""
    p = _probs(probs, "probabilities") if len(np.asarray(probs)) else np.zeros((0, num_classes))
    t = _targets(y, p.shape[0])
    cm = np.zeros((num_classes, num_classes), np.int64)
    if len(t):
        np.add.at(cm, (t, p.argmax(axis=1)), 1)
    return cm


def mean_log_loss(probs, y, eps: float = 1e-12) -> float:
    """Mean negative log probability of the true class (NaN for zero rows)."""
    p = _probs(probs, "probabilities")
    t = _targets(y, p.shape[0])
    if not len(t):
        return float("nan")
    return float(-np.mean(np.log(np.clip(p[np.arange(len(t)), t], eps, 1.0))))


def majority_class(y, num_classes: int) -> int:
    """The most frequent class index in ``y`` (0 when empty): the majority-class baseline."""
    arr = np.asarray(y, np.int64)
    return int(np.bincount(arr, minlength=num_classes).argmax()) if len(arr) else 0


def top1_flips(probs, reference, *, min_margin: float = 0.0) -> int:
    """Rows whose top-1 differs from the reference's, counting only rows where the reference's
    best two classes are more than ``min_margin`` apart (a float file may break an exact tie
    differently; that is no error)."""
    a, b = _probs(probs, "probabilities"), _probs(reference, "reference probabilities")
    _same_shape(a, b)
    if not len(a):
        return 0
    if b.shape[1] > 1:
        top2 = np.sort(b, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
    else:
        margin = np.ones(len(b))
    return int(((a.argmax(1) != b.argmax(1)) & (margin > min_margin)).sum())


def collapse_reason(probs, reference) -> Optional[str]:
    """Why a quantized model's predictions look collapsed against its reference, or None.

    Collapsed: one class for every image where the reference predicts several, or top-1
    agreement no better than chance + 10 points (with 10 or more images), counted over the
    images where the reference's best two classes are more than 1e-3 apart."""
    a, b = _probs(probs, "probabilities"), _probs(reference, "reference probabilities")
    _same_shape(a, b)
    # Rows where the reference itself is undecided (an untrained model gives 0.5002/0.4998) say
    # nothing about the quantized file: judge only the rows the reference is sure of.
    if b.shape[1] > 1:
        top2 = np.sort(b, axis=1)[:, -2:]
        sure = (top2[:, 1] - top2[:, 0]) > 1e-3
        a, b = a[sure], b[sure]
    n, c = a.shape
    if n < 4:
        return None
    pred, ref = a.argmax(1), b.argmax(1)
    if len(set(pred.tolist())) == 1 and len(set(ref.tolist())) > 1:
        return (f"it predicts '{int(pred[0])}' for all {n} validation images, "
                f"where the reference predicts {len(set(ref.tolist()))} different classes")
    agree = float((pred == ref).mean())
    if n >= 10 and agree <= 1.0 / c + 0.1:
        return f"its top-1 agrees with the reference on only {100 * agree:.1f}% of {n} images (chance is {100 / c:.0f}%)"
    return None
