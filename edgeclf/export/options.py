"""``ExportOptions``: everything ``export_model`` can be told, checked in one place."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional

from ..errors import OptionError, UsageError
from ..runtime import metrics
from ..runtime.spec import (DEFAULT_CALIBRATION_SIZE, DEFAULT_GATES, MAX_SEED, CheckGate, IOType, Precision,
                            parse_enum)


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how (all optional; the defaults export every supported file).

    Attributes:
        formats: ``"tflite"``, ``"onnx"``, ``"ort"`` (default tflite and onnx).
        precisions: any of float32, float16, dynamic, int8, int8-full, int16x8, qat (default: every one
            the formats support and the data allows). Named precisions are *explicit*: one
            that cannot be made, or whose file fails its check, makes the export fail (exit 1).
        io: input/output type of the integer TFLite files (int8, int8-full, qat): uint8 (default), int8,
            float32.
        labels: a labels file (one class per line), for a model file that is not a run.
        data: a class-folder dataset, split as ``edgeclf train`` splits it, for calibration,
            QAT and the check images; replaces a run's split.
        calibration: a folder of images used only for calibration.
        calibration_size: images in the calibration sample.
        qat_epochs: fine-tuning epochs for QAT.
        seed: seed of the calibration sample and splits (default: the run's, else 123).
        overwrite: replace an existing output folder (only one edgeclf made).
        keep_logits: export a logits model as it is (default: a softmax is appended).
        keep_sigmoid: export a one-sigmoid model's single unit as it is (default: the files give
            ``[1 - p, p]`` with both labels, so phone clients name the right class).
        batch: a fixed batch size for the ONNX and ORT files (1 for NNAPI/CoreML).
        card: an ``std_metadata.ModelCard`` for the standard TFLite metadata.
        input_range: the pixel values the model expects ("0,255", "0,1", "-1,1").
        output_kind: "logits", "probabilities" or "sigmoid" (default: inferred).
        max_accuracy_drop, min_agreement: the check's gate for every quantized file, in place
            of the defaults (``runtime.spec.DEFAULT_GATES``); an int8 file that misses it keeps
            its most harmful layers float until it holds (``export.budget``).
    """

    formats: Optional[tuple[str, ...]] = None
    precisions: Optional[tuple[str, ...]] = None
    io: Optional[str] = None
    labels: Optional[str] = None
    data: Optional[str] = None
    calibration: Optional[str] = None
    calibration_size: int = DEFAULT_CALIBRATION_SIZE
    qat_epochs: int = 1
    seed: Optional[int] = None
    overwrite: bool = False
    keep_logits: bool = False
    keep_sigmoid: bool = False
    batch: Optional[int] = None
    card: object = None
    input_range: Optional[str] = None
    output_kind: Optional[str] = None
    max_accuracy_drop: Optional[float] = None
    min_agreement: Optional[float] = None

    def __post_init__(self):
        for name in ("formats", "precisions"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value) if not isinstance(value, str) else (value,))
        if not 1 <= self.calibration_size <= 100_000:
            raise OptionError("calibration_size", f"must be from 1 to 100000, not {self.calibration_size}")
        if not 0 <= self.qat_epochs <= 1000:
            raise OptionError("qat_epochs", f"must be from 0 to 1000, not {self.qat_epochs}")
        if self.batch is not None and not 1 <= self.batch <= 4096:
            raise OptionError("batch", f"must be a batch size from 1 to 4096; got {self.batch}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise OptionError("seed", f"must be from 0 to {MAX_SEED}; got {self.seed}")
        metrics.validate_thresholds(self.max_accuracy_drop, self.min_agreement)

    @classmethod
    def of(cls, options: Optional["ExportOptions"] = None, **changes) -> "ExportOptions":
        """``options`` (or the defaults) with ``changes``; unknown names are a UsageError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise UsageError(f"unknown export option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        base = options if options is not None else cls()
        return replace(base, **changes) if changes else base

    @property
    def io_type(self) -> IOType:
        return IOType.UINT8 if self.io is None else parse_enum(IOType, self.io, name="--io type")

    @property
    def explicit_precisions(self) -> bool:
        return bool(self.precisions)

    @property
    def has_budget(self) -> bool:
        return self.max_accuracy_drop is not None or self.min_agreement is not None

    def gate(self, precision: Precision) -> CheckGate:
        """The check a file of ``precision`` must pass: the default, with a stated budget in
        place of the default agreement (quantized files; float32 and float16 keep theirs)."""
        gate = DEFAULT_GATES[Precision(precision)]
        if not self.has_budget or precision in (Precision.FLOAT32, Precision.FLOAT16):
            return gate
        return replace(gate, min_agreement=self.min_agreement if self.min_agreement is not None else gate.min_agreement,
                       max_accuracy_drop=self.max_accuracy_drop)
