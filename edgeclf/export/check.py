"""The check stage: no file is delivered before it was measured against its source model on
held-out images and passed its gate (``runtime.spec.DEFAULT_GATES``, or the stated budget).

It is fail-closed: a file that misses its gate is kept out of the export folder and listed
with its figures; a file whose figures cannot be computed (its engine fails to run it) is
kept out the same way. Policies can change a file before the verdict: the accuracy budget
keeps an int8 file's most harmful layers float until it passes (``export.budget``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from ..runtime import metrics
from ..runtime.spec import CheckGate, Format, Precision


@dataclass(frozen=True)
class Figures:
    """How a file's probabilities compare with its source's on the check images."""

    images: int
    agreement: float  # top-1 agreement, every image
    agreement_decided: float  # top-1 agreement where the source's best two differ by > the gate's tie margin
    max_abs_diff: float  # max |p_file - p_source| over images and classes
    mean_abs_diff: float  # each image's largest |p_file - p_source|, averaged
    top1_prob: float  # mean top-1 probability of the file
    source_top1_prob: float  # the same for the source
    accuracy: Optional[float] = None
    source_accuracy: Optional[float] = None
    collapse: Optional[str] = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    """The check's answer for one file: passed, or the reasons it did not."""

    passed: bool
    failures: tuple[str, ...]
    figures: Figures
    gate: CheckGate

    @property
    def reason(self) -> str:
        return "; ".join(self.failures)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "failures": list(self.failures), "gate": self.gate.to_dict(),
                **self.figures.to_dict()}


def source_probabilities(model, images: np.ndarray, kind) -> np.ndarray:
    """The source model's probabilities on uint8 ``images``: what every file is checked against."""
    from ..runtime.classifier import to_probabilities

    if not len(images):
        return np.zeros((0, max(int(getattr(model, "output_width", 1)), 2)), np.float32)
    return to_probabilities(model.predict(images.astype(np.float32)), kind)


def _decided(reference: np.ndarray, margin: float) -> np.ndarray:
    if reference.shape[1] < 2:
        return np.ones(len(reference), bool)
    top2 = np.sort(reference, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) > margin


def measure(probs: np.ndarray, reference: np.ndarray, y: Optional[np.ndarray], *, tie_margin: float = 1e-5
            ) -> Figures:
    """The figures of ``probs`` against ``reference`` (both ``(N, classes)`` probabilities)."""
    probs = np.asarray(probs, np.float32)
    reference = np.asarray(reference, np.float32)
    if probs.shape != reference.shape:
        raise ValueError(f"the file gives {probs.shape} probabilities where the source gives {reference.shape}")
    n = len(probs)
    if n == 0:
        nan = float("nan")
        return Figures(0, nan, nan, nan, nan, nan, nan)
    diff = np.abs(probs - reference)
    decided = _decided(reference, tie_margin)
    same = probs.argmax(1) == reference.argmax(1)
    return Figures(
        images=n, agreement=float(same.mean()),
        agreement_decided=float(same[decided].mean()) if decided.any() else 1.0,
        max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.max(axis=1).mean()),
        top1_prob=float(probs.max(axis=1).mean()), source_top1_prob=float(reference.max(axis=1).mean()),
        accuracy=metrics.accuracy(probs, y) if y is not None else None,
        source_accuracy=metrics.accuracy(reference, y) if y is not None else None,
        collapse=metrics.collapse_reason(probs, reference))


def judge(figures: Figures, gate: CheckGate) -> Verdict:
    """Whether ``figures`` pass ``gate``, with one reason per figure that does not."""
    f, g = figures, gate
    why = []
    if f.images == 0:
        why.append("no check images: nothing proves the file")
    if f.collapse:
        why.append(f"collapsed: {f.collapse}")
    if g.min_agreement is not None and not f.agreement_decided >= g.min_agreement:
        why.append(f"top-1 agreement {100 * f.agreement_decided:.1f}% < {100 * g.min_agreement:g}%")
    if g.max_abs_diff is not None and not f.max_abs_diff <= g.max_abs_diff:
        why.append(f"max |Δp| {f.max_abs_diff:.2g} > {g.max_abs_diff:g}")
    if g.max_mean_abs_diff is not None and not f.mean_abs_diff <= g.max_mean_abs_diff:
        why.append(f"mean |Δp| {f.mean_abs_diff:.3f} > {g.max_mean_abs_diff:g}")
    if g.max_top1_shift is not None and not abs(f.top1_prob - f.source_top1_prob) <= g.max_top1_shift:
        why.append(f"mean top-1 probability {f.top1_prob:.3f} against the source's {f.source_top1_prob:.3f} "
                   f"(more than {g.max_top1_shift:g} apart)")
    if g.max_accuracy_drop is not None and f.accuracy is not None and f.source_accuracy is not None:
        drop = 100 * (f.source_accuracy - f.accuracy)
        if not drop <= g.max_accuracy_drop:
            why.append(f"accuracy {100 * f.accuracy:.1f}% is {drop:.1f} points below the source's "
                       f"(at most {g.max_accuracy_drop:g} allowed)")
    return Verdict(not why, tuple(why), f, g)


def check_probs(probs: np.ndarray, reference: np.ndarray, y: Optional[np.ndarray], gate: CheckGate) -> Verdict:
    """``measure`` then ``judge``: the check of one file's probabilities."""
    return judge(measure(probs, reference, y, tie_margin=gate.tie_margin), gate)


class CheckStage:
    """Measures each converted file with the TensorFlow-free runtime on the check images, applies
    the policies that may change it (the int8 accuracy budget), and gives the verdict."""

    def __init__(self, *, images: np.ndarray, reference: np.ndarray, y: Optional[np.ndarray], options, model,
                 calibration: Optional[np.ndarray]):
        self.images = images
        self.reference = reference
        self.y = y
        self.options = options
        self.model = model
        self.calibration = calibration

    def run(self, job, data: bytes, ctx) -> tuple[bytes, np.ndarray, Verdict, Optional[dict]]:
        """(the file as it will be delivered, its probabilities, the verdict, the budget record)."""
        from .budget import predict_bytes

        probs = predict_bytes(data, "." + job.format.value, self.images)
        gate = self.options.gate(job.precision)
        verdict = check_probs(probs, self.reference, self.y, gate)
        budget = None
        if (job.precision is Precision.INT8 and job.format is not Format.ORT and self.calibration is not None
                and (self.options.has_budget or not verdict.passed)):
            data, probs, budget = self._budget(job, data, probs, gate, ctx)
            verdict = check_probs(probs, self.reference, self.y, gate)
        return data, probs, verdict, budget

    def _budget(self, job, data: bytes, probs: np.ndarray, gate: CheckGate, ctx):
        """The accuracy-budget policy: keep the int8 file's most harmful layers float until its
        agreement (and accuracy drop) meet the gate."""
        from .._term import info
        from .budget import Budget, enforce_budget
        from .converters import SPEED_KEY

        budget = Budget(gate.max_accuracy_drop if self.y is not None else None, gate.min_agreement)
        float_onnx = ctx.float_onnx() if job.format is Format.ONNX else None
        # The TFLite int8 file may keep layers float for speed: the budget starts from them.
        sel, speed = ctx.cache.get(SPEED_KEY, (None, None)) if job.format.value == "tflite" else (None, None)
        data, probs, res = enforce_budget(
            budget, job.format.value, job.name, full_file=data, full_probs=probs, keras_probs=self.reference,
            images=self.images, y=self.y, model=self.model, calibration=self.calibration, io=ctx.io,
            meta=ctx.file_meta(job), float_onnx=float_onnx, keep_float=speed.layer_errors() if speed else (),
            selective=sel)
        info(res.message)
        return data, probs, res.to_dict()
