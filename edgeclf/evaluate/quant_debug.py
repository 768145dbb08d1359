"""Which layers int8 hurts: the per-layer quantization error of a model's full-int8 TFLite and
ONNX files against the float model, ranked, named after the Keras layers, as a table, JSON and
a Markdown report with a plot (``edgeclf explain-quant``).

The figures come from ``edgeclf.export.budget`` (the TFLite QuantizationDebugger and ONNX
Runtime's ``qdq_loss_debug``), measured on the calibration images, the same ranking that
``edgeclf export --min-agreement`` keeps layers float by; each file's agreement and accuracy
against the Keras model are measured on the validation images.

Example:
    >>> expl = explain_quantization("runs/mobilenet_v3", formats=["tflite"])   # doctest: +SKIP
    >>> print(expl.table(top=10))                                              # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .._io import atomic_path, write_json, write_text
from .._term import human_bytes, info
from ..errors import MissingDependencyError, UsageError
from ..runtime import metrics
from ..runtime.spec import DEFAULT_CALIBRATION_SIZE, DEFAULT_FORMATS, Format, IOType, ModelSpec, parse_enum

PLOT_NAME = "quant_layers.png"
REPORT_NAME = "quant_report.md"
JSON_NAME = "quant_layers.json"


@dataclass(frozen=True)
class FormatExplanation:
    """One format's full-int8 file: how far it is from the Keras model, and per layer why."""

    format: str
    agreement: float
    accuracy: Optional[float]
    size_bytes: int
    layers: object  # export.budget.LayerErrors

    def to_dict(self) -> dict:
        return {"format": self.format, "agreement": self.agreement, "accuracy": self.accuracy,
                "size_bytes": self.size_bytes, **self.layers.to_dict()}


@dataclass(frozen=True)
class QuantExplanation:
    """The per-layer quantization error of a model's int8 files (``explain_quantization``)."""

    source: str
    model_name: str
    calibration_images: int
    validation_images: int
    keras_accuracy: Optional[float]
    formats: tuple[FormatExplanation, ...]

    def to_dict(self) -> dict:
        return {"source": self.source, "model_name": self.model_name,
                "calibration_images": self.calibration_images, "validation_images": self.validation_images,
                "keras_accuracy": self.keras_accuracy, "formats": [f.to_dict() for f in self.formats]}

    def summary(self) -> str:
        """One line per format: the full-int8 file against the Keras model."""
        lines = []
        for f in self.formats:
            acc = "" if f.accuracy is None else f", accuracy {100 * f.accuracy:.1f}%"
            keras = "" if self.keras_accuracy is None else f" (Keras {100 * self.keras_accuracy:.1f}%)"
            lines.append(f"{f.format} int8: agreement {100 * f.agreement:.1f}%{acc}{keras} on "
                         f"{self.validation_images} validation images, {human_bytes(f.size_bytes)}")
        return "\n".join(lines)

    def table(self, top: Optional[int] = 20) -> str:
        """The ranked layers, one table per format."""
        parts = []
        for f in self.formats:
            parts.append(f"{f.format}: {f.layers.metric} per layer, most harmful first "
                         f"({f.layers.images} calibration images)")
            parts.append(f.layers.table(top))
        return "\n".join(parts)


def explain_quantization(source, *, formats: Optional[Sequence[str]] = None, labels=None, data=None,
                         calibration=None, calibration_size: int = DEFAULT_CALIBRATION_SIZE,
                         seed: Optional[int] = None, io: Optional[str] = None,
                         sensitivity: bool = False) -> QuantExplanation:
    """Rank the layers of ``source``'s full-int8 TFLite and/or ONNX files by quantization error.

    Args:
        source: a run directory, or a ``.keras``/``.h5``/SavedModel with ``labels``.
        formats: ``"tflite"`` and/or ``"onnx"`` (default both).
        labels, data, calibration, calibration_size, seed: as ``export_model`` takes them: the
            calibration sample quantizes and ranks, the validation images measure agreement.
        io: the TFLite int8 file's input/output type (default uint8).
        sensitivity: rank by measured output sensitivity instead (what ``export``'s budget
            ranks by: one quantization per layer, so about a second a layer); the engine's
            own figure stays in each layer's ``stats``.

    Returns:
        A ``QuantExplanation``.
    """
    from ..export.layer_names import keras_layer_names
    from ..export.budget import (RANKING_IMAGES, OnnxSelective, TFLiteSelective, predict_bytes,
                                 rank_by_sensitivity)
    from ..export.calibration import ImageBank, calibration_set, load_images
    from ..export.check import source_probabilities
    from ..export.source import load_source

    fmts = [parse_enum(Format, f, name="format") for f in (formats or [f.value for f in DEFAULT_FORMATS])]
    if Format.ORT in fmts:
        raise UsageError("explain-quant reads tflite and onnx files; an .ort file is the onnx one converted: "
                         "explain --format onnx")
    fmts = list(dict.fromkeys(fmts))
    io_type = IOType.UINT8 if io is None else parse_enum(IOType, io, name="--io type")
    if calibration_size < 1:
        from ..errors import OptionError

        raise OptionError("calibration_size", f"must be at least 1, not {calibration_size}")
    info(f"Loading {source} ...")
    src = load_source(source, labels_file=labels, data=data, calibration=calibration, seed=seed)
    bank = src.images if src.images is not None else ImageBank(src.input_size, src.resize_method)
    pool = src.calibration or src.train
    if not pool:
        raise UsageError("int8 needs calibration images: give a run directory, --data DATA or --calibration DATA")
    cal = calibration_set(pool, src.input_size, n=calibration_size, seed=src.seed, resize_method=src.resize_method,
                          bank=bank)
    val = load_images(src.val, src.input_size, resize_method=src.resize_method, what="validation", bank=bank)
    check = val if len(val) else cal
    if not len(val):
        info("No validation images: agreement is measured on the calibration images")
    y = check.indices if check.has_labels else None
    keras_probs = source_probabilities(src.model, check.images, src.output_kind)
    keras_acc = metrics.accuracy(keras_probs, y) if y is not None else None
    meta = ModelSpec(labels=src.labels, input_size=src.input_size, output_kind=src.output_kind,
                     precision="int8", resize_method=src.resize_method, source_sha256=src.sha256,
                     model_name=src.name)
    out = []
    for fmt in fmts:
        info(f"{fmt.value}: quantizing and measuring each layer's error ...")
        if fmt is Format.TFLITE:
            sel = TFLiteSelective(src.model, cal.images, io=io_type)
        else:
            from ..export.onnx_export import convert_onnx

            names, containers = keras_layer_names(src.model)
            float_bytes = convert_onnx(src.model, output_kind=src.output_kind).SerializeToString()
            sel = OnnxSelective(float_bytes, cal.images, layer_names=names, containers=containers)

        def make(kept, sel=sel):
            return sel.file(kept, meta)
        try:
            layers = sel.layer_errors()
            data_bytes = make([])
            if sensitivity:
                info(f"{fmt.value}: measuring each of {len(layers.layers)} layers' effect on the output ...")
                layers = rank_by_sensitivity(layers, make=make, predict=lambda d, s="." + fmt.value: predict_bytes(
                    d, s, cal.images[:RANKING_IMAGES]))
        finally:
            if isinstance(sel, OnnxSelective):
                sel.close()
        probs = predict_bytes(data_bytes, "." + fmt.value, check.images)
        out.append(FormatExplanation(
            format=fmt.value, agreement=metrics.top1_agreement(probs, keras_probs),
            accuracy=metrics.accuracy(probs, y) if y is not None else None, size_bytes=len(data_bytes),
            layers=layers))
    return QuantExplanation(source=str(Path(src.path).resolve()), model_name=src.name, calibration_images=len(cal),
                            validation_images=len(check), keras_accuracy=keras_acc, formats=tuple(out))


def plot_layers(expl: QuantExplanation, path, *, top: int = 20) -> Path:
    """One horizontal bar chart per format: the ``top`` most harmful layers and their error."""
    from .._optional import require

    matplotlib = require("matplotlib", purpose="the quantization plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(expl.formats))
    rows = max((min(top, len(f.layers.layers)) for f in expl.formats), default=1)
    fig, axes = plt.subplots(1, n, figsize=(6.5 * n, 1.2 + 0.32 * max(rows, 3)), squeeze=False)
    for ax, f in zip(axes[0], expl.formats):
        layers = f.layers.layers[:top][::-1]
        ax.barh([x.layer for x in layers], [x.error for x in layers], color="#c0504d")
        ax.set_xlabel(f.layers.metric)
        ax.set_title(f"{f.format} int8: agreement {100 * f.agreement:.1f}%", fontsize=10)
        ax.tick_params(axis="y", labelsize=7)
        if f.layers.metric == "rmse/scale":
            ax.axvline(0.7, color="grey", linestyle="--", linewidth=0.8)  # the LiteRT guide's "suspect" line
    fig.suptitle(f"{expl.model_name}: quantization error per layer (most harmful at the top)", fontsize=11)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(path)


def render_markdown(expl: QuantExplanation, *, plot: Optional[str], plot_note: str = "", top: int = 20) -> str:
    lines = [f"# Quantization error per layer: {expl.model_name}", "",
             f"Source `{expl.source}`; {expl.calibration_images} calibration images, "
             f"{expl.validation_images} validation images.", ""]
    lines += [f"- {line}" for line in expl.summary().splitlines()]
    lines += ["", "Metrics: **sensitivity**: the output error (mean over images of sum |p - p_float|) of "
              "the file with only this layer int8, against the file with every layer float. **rmse/scale** (TFLite, QuantizationDebugger): RMS error of the int8 op against the "
              "float op on the same input, in quantization steps of its output; rounding alone gives about "
              "0.29, above 0.7 is suspect. **added noise** (ONNX, qdq_loss_debug): the relative noise power "
              "(against the float model) at the layer's output minus the largest at its inputs.", ""]
    if plot:
        lines += [f"![quantization error per layer]({plot})", ""]
    elif plot_note:
        lines += [f"_{plot_note}_", ""]
    for f in expl.formats:
        lines += [f"## {f.format}", "", "| rank | layer | ops | " + f.layers.metric + " |", "|---|---|---|---|"]
        for i, x in enumerate(f.layers.layers[:top], 1):
            lines.append(f"| {i} | {x.layer} | {', '.join(x.ops)} | {x.error:.4g} |")
        lines.append("")
    lines += ["To keep the most harmful layers float until a budget holds: "
              "`edgeclf export SOURCE --out DIR --precision int8 --min-agreement 0.99`.", ""]
    return "\n".join(lines)


def write_quant_report(expl: QuantExplanation, out_dir, *, top: int = 20) -> Path:
    """Write ``quant_report.md``, ``quant_layers.json`` and ``quant_layers.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / JSON_NAME, expl.to_dict())
    plot, note = None, ""
    try:
        plot_layers(expl, out / PLOT_NAME, top=top)
        plot = PLOT_NAME
    except MissingDependencyError as exc:
        note = f"plot left out: {exc}"
    return write_text(out / REPORT_NAME, render_markdown(expl, plot=plot, plot_note=note, top=top))
