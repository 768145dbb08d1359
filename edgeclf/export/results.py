"""What an export wrote and measured: ``ExportedFile`` per delivered file, ``NotExported`` per
file kept out (with the reason and, when it was measured, its figures), ``ExportReport``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from .. import __version__
from .._term import format_table, human_bytes


@dataclass(frozen=True)
class ExportedFile:
    """One delivered file and how it compares with the source model on the check images."""

    file: str
    format: str
    precision: str
    size_bytes: int
    sha256: str
    agreement: Optional[float]  # top-1 agreement with the source
    accuracy: Optional[float]  # None when the check images have no labels
    max_abs_diff: Optional[float]  # max |p_file - p_source| over images and classes
    golden_atol: float
    size_vs_float32: Optional[float] = None
    seconds: float = 0.0
    mobile: Optional[dict] = None  # ONNX/ORT: ORT's mobile usability verdicts (NNAPI, CoreML)
    budget: Optional[dict] = None  # int8 within an accuracy budget: export.budget.BudgetResult.to_dict()
    check: Optional[dict] = None  # export.check.Verdict.to_dict(): the gate and every figure
    speed: Optional[dict] = None  # TFLite int8: layers kept float for speed and their times (speed.SpeedChoice)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class NotExported:
    """A file the export did not deliver: its converter failed, or it failed its check."""

    file: str
    format: str
    precision: str
    reason: str
    stage: str  # "plan" (not possible with this data), "convert", "check"
    explicit: bool = False  # asked for by name (then the export exits 1)
    check: Optional[dict] = None  # the figures, when the file was measured
    budget: Optional[dict] = None  # the accuracy budget's search, when one ran and could not meet the gate

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ExportReport:
    """What ``export_model`` wrote and measured (also written as ``export.json``)."""

    out: str
    source: str
    source_sha256: str
    model_name: str
    labels: tuple[str, ...]
    image_size: tuple[int, int]
    output_kind: str
    calibration: dict
    validation: dict
    keras_accuracy: Optional[float]
    files: tuple[ExportedFile, ...]
    qat: Optional[dict] = None
    not_exported: tuple[NotExported, ...] = ()
    edgeclf_version: str = __version__
    # What the source model itself takes and gives (the files may add scaling and a head):
    # what ``compare`` needs to run the source as the reference.
    input_range: str = "0,255"
    source_output_kind: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["image_size"] = list(self.image_size)
        d["files"] = [f.to_dict() for f in self.files]
        d["not_exported"] = [x.to_dict() for x in self.not_exported]
        return d

    def file(self, name: str) -> ExportedFile:
        for f in self.files:
            if f.file == name:
                return f
        raise KeyError(name)

    @property
    def failed(self) -> tuple[NotExported, ...]:
        """Files asked for by name (or float32, the baseline) that were not delivered: exit 1."""
        return tuple(x for x in self.not_exported if x.explicit)

    def mobile_table(self) -> str:
        """ORT's mobile usability verdicts of the ONNX and ORT files ('' when there are none)."""
        from .ort_mobile import MobileUsability, mobile_table

        found = [MobileUsability(**{k: v for k, v in f.mobile.items() if k != "providers"})
                 for f in self.files if f.mobile is not None]
        return mobile_table(found) if found else ""

    def table(self) -> str:
        """The terminal summary: each delivered file with its figures, then each file kept out and why."""
        rows = []
        for f in self.files:
            mean = (f.check or {}).get("mean_abs_diff")
            floats = (f.budget or {}).get("float_layers") or [x["layer"] for x in (f.speed or {}).get("float_layers", [])]
            rows.append([
                f.file, f.precision + (f" ({len(floats)} layers float)" if floats else ""), human_bytes(f.size_bytes),
                "" if f.size_vs_float32 is None else f"{100 * f.size_vs_float32:.0f}%",
                "" if f.agreement is None else f"{100 * f.agreement:.1f}%",
                "" if mean is None else f"{mean:.4f}",
                "n/a" if f.accuracy is None else f"{100 * f.accuracy:.1f}%", "ok",
            ])
        if self.keras_accuracy is not None:
            rows.append(["(source model)", "float32", "", "", "100.0%", "", f"{100 * self.keras_accuracy:.1f}%", ""])
        out = format_table(["file", "precision", "size", "vs float32", "agreement", "mean |Δp|", "accuracy",
                            "check"], rows)
        if self.not_exported:
            out += "\n\nNot delivered:\n" + "\n".join(
                f"  {x.file}: {'FAILED its check' if x.stage == 'check' else 'skipped'}: {x.reason}"
                for x in self.not_exported)
        n = self.validation.get("size")
        if n is not None:
            out += (f"\n\nEvery file above was checked against the source model on {n} held-out images "
                    f"({self.validation.get('source', '')}).")
        return out
