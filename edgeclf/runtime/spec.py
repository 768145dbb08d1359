"""The contract between the stages: every fact that crosses from training to export to the
device has its one definition here, and every other module imports it.

- the enums (``Format``, ``Precision``, ``OutputKind``, ``ResizeMethod``, ``IOType``); CLI
  choices are derived from them;
- ``ModelSpec``: what a model takes and gives (labels, input size, resize method, colour
  order, value range, output kind, precision). Training writes it into the run directory,
  export reads it and embeds it into every file, the runtime reads it back from the file;
- the defaults (seed, split fractions, calibration size, parity tolerances).

Standard library only (plus ``edgeclf.errors``), so the device and the host share it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from typing import Optional, Sequence

from ..errors import ModelFileError


class Format(str, Enum):
    """A deployable file format (the file suffix without the dot)."""

    TFLITE = "tflite"
    ONNX = "onnx"
    ORT = "ort"  # ONNX Runtime's own format, for ORT Mobile (made from the ONNX file)


# What `edgeclf export` writes when no --format is given.
DEFAULT_FORMATS = (Format.TFLITE, Format.ONNX)


class Precision(str, Enum):
    """How an exported file stores weights and computes activations. The order is the export
    order within a format: float32 first (the others are measured against it), then by how
    much is quantized."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    DYNAMIC = "dynamic"
    # int8 for CPUs: full-integer, except the layers that ran faster in float32 on the export
    # machine (measured per layer; export/speed.py). Loads wherever int8 does (uint8 in/out).
    INT8 = "int8"
    # Every op int8 (Edge TPU, NPU/NNAPI/Core ML delegates, microcontrollers take it whole).
    INT8_FULL = "int8-full"
    INT16X8 = "int16x8"
    QAT = "qat"


class OutputKind(str, Enum):
    """What the model's output tensor holds."""

    LOGITS = "logits"  # N scores; softmax gives probabilities
    PROBABILITIES = "probabilities"  # N probabilities already
    SIGMOID = "sigmoid"  # one probability of the second label (binary models)


class ResizeMethod(str, Enum):
    """How an image is resized to the model's input size (Pillow filters)."""

    BILINEAR = "bilinear"
    NEAREST = "nearest"
    BICUBIC = "bicubic"
    AREA = "area"
    LANCZOS = "lanczos"


class IOType(str, Enum):
    """The input/output tensor type of a full-integer TFLite model."""

    UINT8 = "uint8"
    INT8 = "int8"
    FLOAT32 = "float32"


class InputRange(str, Enum):
    """The pixel values a model expects; every exported file still takes 0..255."""

    PIXELS = "0,255"
    UNIT = "0,1"
    SIGNED = "-1,1"

    @property
    def scale_offset(self) -> tuple[float, float]:
        """(scale, offset) taking 0..255 pixels to this range."""
        return {InputRange.PIXELS: (1.0, 0.0), InputRange.UNIT: (1 / 255.0, 0.0),
                InputRange.SIGNED: (1 / 127.5, -1.0)}[self]

    @classmethod
    def parse(cls, value) -> "InputRange":
        if isinstance(value, cls):
            return value
        text = str(value).replace(" ", "").replace("..", ",")
        for r in cls:
            lo, hi = r.value.split(",")
            if text in (r.value, f"{float(lo):g},{float(hi):g}", f"{float(lo)},{float(hi)}"):
                return r
        from ..errors import UsageError

        raise UsageError(f"unknown --input-range {value!r}; choose from: {', '.join(r.value for r in cls)} "
                         "(the values the model was trained on)")


class Optimizer(str, Enum):
    """The optimizer training uses."""

    ADAM = "adam"
    RMSPROP = "rmsprop"
    SGD = "sgd"


class MixedPrecision(str, Enum):
    """Mixed float16 training: on a GPU that has it (auto), always, or never."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


def choices(enum: type[Enum]) -> list[str]:
    """The values of ``enum``, in declaration order: what a CLI option offers."""
    return [m.value for m in enum]


def parse_enum(enum: type[Enum], value, *, name: str):
    """``value`` as a member of ``enum``; a UsageError naming the valid values otherwise."""
    from ..errors import UsageError

    try:
        return enum(str(getattr(value, "value", value)).lower())
    except ValueError:
        raise UsageError(f"unknown {name} {value!r}; choose from: {', '.join(choices(enum))}") from None


# The TFLite precisions whose input and output are integer (``--io``: uint8 by default).
INTEGER_IO: frozenset[Precision] = frozenset({Precision.INT8, Precision.INT8_FULL, Precision.QAT})

# Which precisions each format can hold, in export order.
SUPPORTED_PRECISIONS: dict[Format, tuple[Precision, ...]] = {
    Format.TFLITE: (Precision.FLOAT32, Precision.FLOAT16, Precision.DYNAMIC, Precision.INT8,
                    Precision.INT8_FULL, Precision.INT16X8, Precision.QAT),
    Format.ONNX: (Precision.FLOAT32, Precision.DYNAMIC, Precision.INT8, Precision.QAT),
    Format.ORT: (Precision.FLOAT32, Precision.DYNAMIC, Precision.INT8, Precision.QAT),
}


# ---- defaults, declared once -----------------------------------------------------------------

DEFAULT_SEED = 123
MAX_SEED = 2**32 - 1  # numpy's and TensorFlow's seeds are 32-bit
MAX_EPOCHS = 10_000  # a bound, so that a typo (1000000000000) is refused, not trained until killed
# The name of every exported file's input tensor (Keras Input, ONNX graph input, TFLite metadata).
INPUT_NAME = "image"
DEFAULT_VAL_SPLIT = 0.2
DEFAULT_TEST_SPLIT = 0.0
DEFAULT_CALIBRATION_SIZE = 200
DEFAULT_RESIZE = ResizeMethod.BILINEAR

# ---- the export's check stage: what a file must show against its source before delivery ------


@dataclass(frozen=True)
class CheckGate:
    """What an exported file must show against its source model on held-out images to be
    delivered. ``None`` leaves a figure unchecked.

    - ``min_agreement``: top-1 agreement (rows where the source's best two classes are within
      ``tie_margin`` of each other are left out: either answer is right there);
    - ``max_abs_diff``: the largest |p_file - p_source| over every image and class;
    - ``max_mean_abs_diff``: each image's largest |p_file - p_source|, averaged over images (a
      softmax applied twice keeps top-1 but moves this by 0.3-0.5);
    - ``max_top1_shift``: |mean top-1 probability of the file - the source's| (a file that is
      right but far less or more sure than the source);
    - ``max_accuracy_drop``: accuracy points below the source (labelled images only);
    - the collapse check (one class for everything, or agreement at chance) always applies.
    """

    min_agreement: Optional[float] = None
    max_abs_diff: Optional[float] = None
    max_mean_abs_diff: Optional[float] = None
    max_top1_shift: Optional[float] = None
    max_accuracy_drop: Optional[float] = None
    tie_margin: float = 1e-5

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


_QUANTIZED_GATE = CheckGate(min_agreement=0.90, max_mean_abs_diff=0.05, max_top1_shift=0.10, tie_margin=1e-3)
# The defaults per precision: float32 is the source itself (a tie may break either way, nothing
# else may move); float16 rounds weights and, on some engines, activations; every other
# precision quantizes, and must keep at least 90% of top-1 answers and most of the confidence.
DEFAULT_GATES: dict[Precision, CheckGate] = {
    Precision.FLOAT32: CheckGate(min_agreement=0.999, max_abs_diff=1e-4, max_top1_shift=1e-4),
    Precision.FLOAT16: CheckGate(min_agreement=0.99, max_abs_diff=2e-2, max_mean_abs_diff=5e-3,
                                 max_top1_shift=5e-3, tie_margin=1e-3),
    Precision.DYNAMIC: _QUANTIZED_GATE,
    Precision.INT8: _QUANTIZED_GATE,
    Precision.INT8_FULL: _QUANTIZED_GATE,
    Precision.INT16X8: _QUANTIZED_GATE,
    Precision.QAT: _QUANTIZED_GATE,
}

# golden.npz: how many validation images, and the tolerance (max abs probability difference) per
# precision. Deliberately looser than one machine shows, so that another CPU (ARM vs x86,
# XNNPACK vs reference kernels, VNNI vs AVX2) still passes; the same for TFLite and ONNX.
GOLDEN_IMAGES = 8
GOLDEN_ATOL: dict[Precision, float] = {
    Precision.FLOAT32: 1e-4,  # float kernels differ only in summation order
    Precision.FLOAT16: 1e-2,  # an engine may compute in half precision
    Precision.DYNAMIC: 2e-2,  # activations quantized at run time by CPU-specific kernels
    Precision.INT16X8: 2e-2,  # 16-bit activations; rounding differs by a unit at most
    Precision.INT8: 5e-2,  # one quantization step of a logit moves a probability by about this
    Precision.INT8_FULL: 5e-2,
    Precision.QAT: 5e-2,
}

SPEC_VERSION = 1
_LAYOUTS = ("NHWC",)
_COLOR_ORDERS = ("RGB",)
_VALUE_RANGES = ((0.0, 255.0),)


@dataclass(frozen=True)
class ModelSpec:
    """What a classifier takes and gives: written by training, embedded by export in every
    file, read back by the runtime.

    Every edgeclf model takes RGB values 0..255 as NHWC (normalisation lives inside the model),
    so ``layout``, ``color_order`` and ``value_range`` are checked rather than chosen.
    """

    labels: tuple[str, ...]
    input_size: tuple[int, int]  # (height, width)
    output_kind: OutputKind = OutputKind.LOGITS
    precision: str = Precision.FLOAT32.value
    layout: str = "NHWC"
    color_order: str = "RGB"
    value_range: tuple[float, float] = (0.0, 255.0)
    resize_method: str = DEFAULT_RESIZE.value
    edgeclf_version: str = ""
    source_sha256: str = ""
    model_name: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "value_range", tuple(float(v) for v in self.value_range))
        object.__setattr__(self, "output_kind", OutputKind(self.output_kind))
        object.__setattr__(self, "precision", str(getattr(self.precision, "value", self.precision)))
        object.__setattr__(self, "resize_method", str(getattr(self.resize_method, "value", self.resize_method)))

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def num_outputs(self) -> int:
        """Width of the output tensor: 1 for a sigmoid binary model, else one per label."""
        return 1 if self.output_kind is OutputKind.SIGMOID else len(self.labels)

    def with_(self, **changes) -> "ModelSpec":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["output_kind"] = self.output_kind.value
        d["labels"] = list(self.labels)
        d["input_size"] = list(self.input_size)
        d["value_range"] = list(self.value_range)
        d["format_version"] = SPEC_VERSION
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "metadata") -> "ModelSpec":
        """Validate and build; a ModelFileError naming ``source`` when anything is off."""
        if not isinstance(d, dict):
            raise ModelFileError(f"{source}: edgeclf metadata is not a JSON object")
        try:
            labels = d["labels"]
            size = d["input_size"]
            if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
                raise ValueError("labels must be a non-empty list of strings")
            check_labels(labels)
            if not isinstance(size, list) or len(size) != 2 or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
                raise ValueError("input_size must be [height, width], positive integers")
            kind = OutputKind(d.get("output_kind", OutputKind.LOGITS.value))
            vr = d.get("value_range", [0.0, 255.0])
            if not isinstance(vr, list) or len(vr) != 2 or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in vr):
                raise ValueError("value_range must be [low, high]")
            check_label_count(kind, len(labels))
            # The runtime feeds NHWC RGB 0..255 and knows these resize methods; a file that
            # asks for anything else would silently get the wrong pixels.
            if d.get("layout", "NHWC") not in _LAYOUTS:
                raise ValueError(f"layout {d.get('layout')!r} is not supported (only NHWC)")
            if d.get("color_order", "RGB") not in _COLOR_ORDERS:
                raise ValueError(f"color_order {d.get('color_order')!r} is not supported (only RGB)")
            if tuple(float(v) for v in vr) not in _VALUE_RANGES:
                raise ValueError(f"value_range {vr} is not supported (only [0, 255]: normalisation lives in the model)")
            resize = d.get("resize_method", DEFAULT_RESIZE.value)
            if resize not in choices(ResizeMethod):
                raise ValueError(f"resize_method {resize!r} is not one of {', '.join(choices(ResizeMethod))}")
            extra = d.get("extra", {})
            return cls(
                labels=tuple(labels), input_size=tuple(size), output_kind=kind,
                precision=str(d.get("precision", Precision.FLOAT32.value)), layout=str(d.get("layout", "NHWC")),
                color_order=str(d.get("color_order", "RGB")), value_range=tuple(vr), resize_method=str(resize),
                edgeclf_version=str(d.get("edgeclf_version", "")), source_sha256=str(d.get("source_sha256", "")),
                model_name=str(d.get("model_name", "")), extra=extra if isinstance(extra, dict) else {},
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelFileError(f"{source}: edgeclf metadata is malformed ({exc})") from None

    @classmethod
    def from_json(cls, text, *, source: str = "metadata") -> "ModelSpec":
        try:
            if isinstance(text, (bytes, bytearray, memoryview)):
                text = bytes(text).decode("utf-8")
            d = json.loads(text)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise ModelFileError(f"{source}: edgeclf metadata is not valid JSON ({why})") from None
        return cls.from_dict(d, source=source)


def check_labels(labels: Sequence[str]) -> None:
    """Raise ValueError for labels no classifier can have: empty, blank or repeated."""
    if not labels:
        raise ValueError("there are no labels")
    if any(not str(x).strip() for x in labels):
        raise ValueError("a label is empty")
    if len(set(labels)) != len(labels):
        dup = sorted({x for x in labels if list(labels).count(x) > 1})
        raise ValueError(f"label{'s' if len(dup) > 1 else ''} {', '.join(map(repr, dup))} repeated")


def check_label_count(kind: OutputKind, num_labels: int, what: str = "labels") -> None:
    """Raise ValueError unless ``num_labels`` suits an output of ``kind``: the one statement of
    the rule "a sigmoid model (one unit, the probability of the second label) has exactly two
    labels; any other model at least two"."""
    if OutputKind(kind) is OutputKind.SIGMOID and num_labels != 2:
        raise ValueError(f"a sigmoid (binary) model needs exactly 2 {what}, not {num_labels}")


def check_output_width(kind: OutputKind, num_labels: int, width: int) -> None:
    """Raise ValueError when an output of ``width`` cannot hold ``num_labels`` labels of ``kind``:
    a sigmoid output has one unit (and two labels); any other model one output per label."""
    kind = OutputKind(kind)
    if kind is OutputKind.SIGMOID:
        if width != 1:
            raise ValueError(f"a sigmoid output has one unit, this one has {width}")
        check_label_count(kind, num_labels)
    elif width != num_labels:
        raise ValueError(f"{num_labels} labels but the model has {width} outputs")
