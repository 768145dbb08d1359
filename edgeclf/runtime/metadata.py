"""What every exported file says about itself, and how the runtime reads it back.

The metadata is one JSON document stored inside the model file:

- TFLite: a ``Metadata`` entry named ``edgeclf`` in the model flatbuffer, pointing at a
  buffer that holds the UTF-8 JSON (read with the flatbuffer schema ai-edge-litert ships).
- ONNX: the ``metadata_props`` key ``edgeclf`` (read through onnxruntime's model meta).

No TensorFlow and no ``onnx`` package is needed to read either.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Optional, Sequence

from ..errors import ModelFileError, UsageError

METADATA_KEY = "edgeclf"
_RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "area", "lanczos")  # preprocess.ResizeMethod
FORMAT_VERSION = 1
TFLITE_IDENTIFIER = b"TFL3"
ORT_IDENTIFIER = b"ORTM"


class OutputKind(str, Enum):
    """What the model's output tensor holds."""

    LOGITS = "logits"  # N scores; softmax gives probabilities
    PROBABILITIES = "probabilities"  # N probabilities already
    SIGMOID = "sigmoid"  # one probability of the second label (binary models)


class Precision(str, Enum):
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    DYNAMIC = "dynamic"
    INT8 = "int8"
    INT16X8 = "int16x8"
    QAT = "qat"


@dataclass(frozen=True)
class ModelMetadata:
    """Labels and input spec carried inside every exported model file."""

    labels: tuple[str, ...]
    input_size: tuple[int, int]  # (height, width)
    output_kind: OutputKind = OutputKind.LOGITS
    precision: str = "float32"
    layout: str = "NHWC"
    color_order: str = "RGB"
    value_range: tuple[float, float] = (0.0, 255.0)
    resize_method: str = "bilinear"
    edgeclf_version: str = ""
    source_sha256: str = ""
    model_name: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "value_range", tuple(float(v) for v in self.value_range))
        object.__setattr__(self, "output_kind", OutputKind(self.output_kind))

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def num_outputs(self) -> int:
        """Width of the output tensor: 1 for a sigmoid binary model, else one per label."""
        return 1 if self.output_kind is OutputKind.SIGMOID else len(self.labels)

    def with_(self, **changes) -> "ModelMetadata":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["output_kind"] = self.output_kind.value
        d["labels"] = list(self.labels)
        d["input_size"] = list(self.input_size)
        d["value_range"] = list(self.value_range)
        d["format_version"] = FORMAT_VERSION
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "metadata") -> "ModelMetadata":
        if not isinstance(d, dict):
            raise ModelFileError(f"{source}: edgeclf metadata is not a JSON object")
        try:
            labels = d["labels"]
            size = d["input_size"]
            if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
                raise ValueError("labels must be a non-empty list of strings")
            if not isinstance(size, list) or len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
                raise ValueError("input_size must be [height, width], positive integers")
            kind = OutputKind(d.get("output_kind", "logits"))
            vr = d.get("value_range", [0.0, 255.0])
            if not isinstance(vr, list) or len(vr) != 2 or not all(isinstance(v, (int, float)) for v in vr):
                raise ValueError("value_range must be [low, high]")
            if kind is OutputKind.SIGMOID and len(labels) != 2:
                raise ValueError("a sigmoid model needs exactly 2 labels")
            # The runtime feeds NHWC RGB 0..255 and knows these resize methods; a file that
            # asks for anything else would silently get the wrong pixels.
            if d.get("layout", "NHWC") != "NHWC":
                raise ValueError(f"layout {d.get('layout')!r} is not supported (only NHWC)")
            if d.get("color_order", "RGB") != "RGB":
                raise ValueError(f"color_order {d.get('color_order')!r} is not supported (only RGB)")
            if [float(v) for v in vr] != [0.0, 255.0]:
                raise ValueError(f"value_range {vr} is not supported (only [0, 255]: normalisation lives in the model)")
            if d.get("resize_method", "bilinear") not in _RESIZE_METHODS:
                raise ValueError(f"resize_method {d.get('resize_method')!r} is not one of {', '.join(_RESIZE_METHODS)}")
            extra = d.get("extra", {})
            return cls(
                labels=tuple(labels),
                input_size=tuple(size),
                output_kind=kind,
                precision=str(d.get("precision", "float32")),
                layout=str(d.get("layout", "NHWC")),
                color_order=str(d.get("color_order", "RGB")),
                value_range=tuple(vr),
                resize_method=str(d.get("resize_method", "bilinear")),
                edgeclf_version=str(d.get("edgeclf_version", "")),
                source_sha256=str(d.get("source_sha256", "")),
                model_name=str(d.get("model_name", "")),
                extra=extra if isinstance(extra, dict) else {},
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelFileError(f"{source}: edgeclf metadata is malformed ({exc})") from None

    @classmethod
    def from_json(cls, text, *, source: str = "metadata") -> "ModelMetadata":
        try:
            if isinstance(text, (bytes, bytearray, memoryview)):
                text = bytes(text).decode("utf-8")
            d = json.loads(text)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ModelFileError(f"{source}: edgeclf metadata is not valid JSON ({exc})") from None
        return cls.from_dict(d, source=source)


def sniff_format(data: bytes) -> Optional[str]:
    """'tflite', 'onnx' or 'ort' judged by content, not by name; None when none of them."""
    if len(data) >= 8 and data[4:8] == TFLITE_IDENTIFIER:
        return "tflite"
    if len(data) >= 8 and data[4:8] == ORT_IDENTIFIER:  # ORT format: a flatbuffer too
        return "ort"
    # An ONNX ModelProto starts with field 1 (ir_version, varint) = tag 0x08, or rarely
    # another low field; protobuf has no magic, so check the ir_version tag and range.
    if len(data) >= 2 and data[0] == 0x08 and 1 <= data[1] <= 20:
        return "onnx"
    return None


def _tflite_schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        from .._optional import require

        require("ai_edge_litert", purpose="reading TFLite files")
        raise
    return schema


def read_tflite_metadata(data: bytes, *, source: str = "model") -> Optional[ModelMetadata]:
    """The edgeclf metadata in a TFLite flatbuffer, or None when it carries none."""
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise ModelFileError(f"{source}: not a TFLite file (no TFL3 identifier)")
    schema = _tflite_schema()
    try:
        model = schema.Model.GetRootAs(data, 0)
        count = model.MetadataLength()
        if count > 4096:  # a real model has a handful; a huge count is a damaged header
            raise ModelFileError(f"{source}: TFLite file is damaged (claims {count} metadata entries)")
        for i in range(count):
            entry = model.Metadata(i)
            name = entry.Name()
            if name is None or name.decode("utf-8", "replace") != METADATA_KEY:
                continue
            buf = model.Buffers(entry.Buffer())
            if buf is None:
                raise ModelFileError(f"{source}: edgeclf metadata points at a missing buffer")
            if buf.DataLength() == 0 and buf.Size() > 0:
                raw = data[buf.Offset(): buf.Offset() + buf.Size()]
            else:
                raw = buf.DataAsNumpy().tobytes()
            return ModelMetadata.from_json(raw, source=source)
    except ModelFileError:
        raise
    except Exception as exc:  # a damaged flatbuffer raises anything from struct to IndexError
        raise ModelFileError(f"{source}: TFLite file is damaged ({type(exc).__name__}: {exc})") from None
    return None


def read_onnx_metadata(custom_map: dict, *, source: str = "model") -> Optional[ModelMetadata]:
    """The edgeclf metadata from an ONNX model's ``metadata_props`` (as a dict), or None."""
    text = custom_map.get(METADATA_KEY)
    if text is None:
        return None
    return ModelMetadata.from_json(text, source=source)


def read_labels_file(path) -> tuple[str, ...]:
    """Labels from a text file, one per line (blank lines ignored), or a JSON list."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"labels file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read labels file {p}: {exc}") from None
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            labels = json.loads(stripped)
        except ValueError as exc:
            raise UsageError(f"labels file {p} looks like JSON but is not valid ({exc})") from None
        labels = [str(x) for x in labels]
    else:
        labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise UsageError(f"labels file {p} holds no labels; write one label per line")
    if len(set(labels)) != len(labels):
        raise UsageError(f"labels file {p} repeats a label; each line must be unique")
    return tuple(labels)


def file_sha256(path: os.PathLike | str, chunk: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def metadata_for_labels(labels: Sequence[str], input_size, *, output_kind=OutputKind.LOGITS,
                        **kw) -> ModelMetadata:
    """Metadata for a model with no edgeclf metadata, from ``--labels`` and its input shape."""
    return ModelMetadata(labels=tuple(labels), input_size=tuple(input_size), output_kind=output_kind, **kw)
