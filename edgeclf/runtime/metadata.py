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
import struct
import unicodedata
from pathlib import Path
from typing import Optional, Sequence

from ..errors import ModelFileError, UsageError
from .spec import ModelSpec, OutputKind

METADATA_KEY = "edgeclf"
TFLITE_IDENTIFIER = b"TFL3"
ORT_IDENTIFIER = b"ORTM"

# The model spec is defined in spec.py; a file's metadata is that spec, so both names work.


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


def read_tflite_metadata(data: bytes, *, source: str = "model") -> Optional[ModelSpec]:
    """The edgeclf metadata in a TFLite flatbuffer, or None when it carries none."""
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise ModelFileError(f"{source}: not a TFLite file (no TFL3 identifier)")
    from ._tflite_reader import read_metadata_entry  # not the generated schema: 10 ms of cold start

    try:
        raw = read_metadata_entry(data, METADATA_KEY)
    except (ValueError, struct.error) as exc:
        raise ModelFileError(f"{source}: TFLite file is damaged ({exc})") from None
    return None if raw is None else ModelSpec.from_json(raw, source=source)


def read_onnx_metadata(custom_map: dict, *, source: str = "model") -> Optional[ModelSpec]:
    """The edgeclf metadata from an ONNX model's ``metadata_props`` (as a dict), or None."""
    text = custom_map.get(METADATA_KEY)
    if text is None:
        return None
    return ModelSpec.from_json(text, source=source)


def read_labels_file(path) -> tuple[str, ...]:
    """Labels from a text file, one per line (blank lines ignored), or a JSON list."""
    p = Path(path)
    if p.exists() and not p.is_file():  # a FIFO would hang the read, /dev/zero never end
        raise UsageError(f"labels file {p} is not a regular file; give a text file, one label per line")
    try:
        if p.stat().st_size > 16 << 20:
            raise UsageError(f"labels file {p} is over 16 MB; give a text file, one label per line")
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
    bad = next((label for label in labels if any(unicodedata.category(ch) == "Cc" for ch in label)), None)
    if bad is not None:
        raise UsageError(f"labels file {p}: the label {bad!r} holds a control character (a newline, an escape, "
                         "...); write plain labels")
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
                        **kw) -> ModelSpec:
    """Metadata for a model with no edgeclf metadata, from ``--labels`` and its input shape."""
    return ModelSpec(labels=tuple(labels), input_size=tuple(input_size), output_kind=output_kind, **kw)
