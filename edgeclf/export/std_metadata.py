"""The standard TFLite Model Metadata (``TFLITE_METADATA``) that phone clients read.

MediaPipe Tasks, the TFLite Task Library and Android Studio's ML Model Binding find a
model's labels, input normalisation and score range in a flatbuffer of the metadata schema
(``metadata_schema.fbs``, file identifier ``M001``) stored in the model's ``TFLITE_METADATA``
metadata entry, with the label file zipped (stored, not deflated) onto the end of the model.

The flatbuffer is written here with the ``flatbuffers`` package (which ai-edge-litert already
needs) from the schema's field order, not with a metadata-writer package: MediaPipe 1.2's
writer fails to import (its ``_pywrap_metadata_version`` extension is not in the wheel),
MediaPipe 0.10.x pins protobuf < 5 and tflite-support pins older still, and TensorFlow 2.21
needs a newer protobuf. Only the tables an image classifier needs are written; every one of
them is in schema version 1.0.0, hence ``min_parser_version``.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .._term import printable
from ..runtime.spec import INPUT_NAME, ModelSpec, OutputKind
from ..runtime.layout import RunDir

STANDARD_METADATA_KEY = "TFLITE_METADATA"
METADATA_FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = RunDir.LABELS  # the same one-label-per-line file, by the same convention

# Enum values of metadata_schema.fbs.
_RGB = 1  # ColorSpaceType.RGB
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType.TENSOR_AXIS_LABELS
_FEATURE_PROPERTIES = 1  # ContentProperties.FeatureProperties
_IMAGE_PROPERTIES = 2  # ContentProperties.ImageProperties
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions.NormalizationOptions


@dataclass(frozen=True)
class ModelCard:
    """What the standard metadata says about the model for people (all optional).

    ``name`` defaults to the model's name, ``description`` to one made from the labels and
    precision, ``version`` to the first 12 hex digits of the source model's sha256.
    """

    name: Optional[str] = None
    description: Optional[str] = None
    version: Optional[str] = None
    author: str = ""
    license: str = ""


def _description(meta: ModelSpec) -> str:
    shown = ", ".join(meta.labels[:10]) + (", ..." if len(meta.labels) > 10 else "")
    return (f"Image classifier ({meta.num_classes} classes: {shown}), {meta.precision}, "
            f"exported by edgeclf {meta.edgeclf_version}. Input: RGB pixels 0..255, "
            f"{meta.input_size[1]}x{meta.input_size[0]}, resized {meta.resize_method}; "
            "normalisation is inside the model.")


def labels_file_text(meta: ModelSpec) -> str:
    """The TENSOR_AXIS_LABELS file: one label per output unit, in output order.

    A sigmoid model has one output unit, the probability of the second label, so its file
    holds that label only.
    """
    labels = meta.labels[1:] if meta.output_kind is OutputKind.SIGMOID else meta.labels
    return "".join(f"{printable(label)}\n" for label in labels)  # a label never splits a line


def build_standard_metadata(meta: ModelSpec, card: Optional[ModelCard] = None) -> bytes:
    """The ``M001`` metadata flatbuffer for an edgeclf image classifier.

    Input: RGB image properties with the model's size, normalisation mean 0 / std 1 (every
    edgeclf file takes raw 0..255 pixels, float or uint8; a client that applies
    ``(x - mean) / std`` then passes them unchanged) and stats 0..255. Output: stats 0..1
    (none for a logits model) and the labels as the associated file ``labels.txt``.
    """
    import flatbuffers

    card = card or ModelCard()
    b = flatbuffers.Builder(1024)
    h, w = meta.input_size

    def string(s: str) -> int:
        return b.CreateString(s)

    def floats(values) -> int:
        return b.CreateNumpyVector(np.asarray(values, dtype=np.float32))

    def offsets(items) -> int:
        b.StartVector(4, len(items), 4)
        for off in reversed(items):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    def table(fields) -> int:
        """fields: (slot, kind, value) with kind 'off', 'u8' or 'u32'."""
        b.StartObject(max(slot for slot, _, _ in fields) + 1)
        for slot, kind, value in fields:
            if kind == "off":
                b.PrependUOffsetTRelativeSlot(slot, value, 0)
            elif kind == "u8":
                b.PrependUint8Slot(slot, value, 0)
            else:
                b.PrependUint32Slot(slot, value, 0)
        return b.EndObject()

    def stats(low, high) -> int:  # Stats: max(0), min(1)
        mx, mn = floats(high), floats(low)
        return table([(0, "off", mx), (1, "off", mn)])

    # --- input tensor ---
    size = table([(0, "u32", w), (1, "u32", h)])  # ImageSize: width(0), height(1)
    image_props = table([(0, "u8", _RGB), (1, "off", size)])  # ImageProperties
    in_content = table([(0, "u8", _IMAGE_PROPERTIES), (1, "off", image_props)])  # Content
    mean, std = floats([0.0, 0.0, 0.0]), floats([1.0, 1.0, 1.0])
    norm = table([(0, "off", mean), (1, "off", std)])  # NormalizationOptions
    unit = table([(0, "u8", _NORMALIZATION_OPTIONS), (1, "off", norm)])  # ProcessUnit
    units = offsets([unit])
    in_stats = stats([0.0], [255.0])
    in_name = string(INPUT_NAME)
    in_desc = string(f"RGB image, {h}x{w} (height x width), pixel values 0..255")
    # TensorMetadata: name(0) description(1) dimension_names(2) content(3) process_units(4)
    # stats(5) associated_files(6)
    in_tensor = table([(0, "off", in_name), (1, "off", in_desc), (3, "off", in_content),
                       (4, "off", units), (5, "off", in_stats)])

    # --- output tensor ---
    sigmoid = meta.output_kind is OutputKind.SIGMOID
    file_name, file_desc = string(LABELS_FILE), string("Labels of the output units, one per line")
    # AssociatedFile: name(0) description(1) type(2) locale(3)
    label_file = table([(0, "off", file_name), (1, "off", file_desc), (2, "u8", _TENSOR_AXIS_LABELS)])
    files = offsets([label_file])
    b.StartObject(0)
    features = b.EndObject()  # FeatureProperties: an empty table
    out_content = table([(0, "u8", _FEATURE_PROPERTIES), (1, "off", features)])
    if meta.output_kind is OutputKind.LOGITS:  # exported with keep_logits: no 0..1 range to promise
        out_name = string("logits")
        out_desc = string(f"Logits of the {meta.num_classes} labels (softmax gives probabilities)")
        out_tensor = table([(0, "off", out_name), (1, "off", out_desc), (3, "off", out_content),
                            (6, "off", files)])
    else:
        out_stats = stats([0.0], [1.0])
        out_name = string("probability")
        out_desc = string(f"Probability of '{meta.labels[1]}' (else '{meta.labels[0]}')" if sigmoid
                          else f"Probabilities of the {meta.num_classes} labels")
        out_tensor = table([(0, "off", out_name), (1, "off", out_desc), (3, "off", out_content),
                            (5, "off", out_stats), (6, "off", files)])

    # --- subgraph and model ---
    inputs, outputs = offsets([in_tensor]), offsets([out_tensor])
    sg_name = string(meta.model_name or "image_classifier")
    # SubGraphMetadata: name(0) description(1) input_tensor_metadata(2) output_tensor_metadata(3)
    subgraph = table([(0, "off", sg_name), (2, "off", inputs), (3, "off", outputs)])
    subgraphs = offsets([subgraph])
    name = string(card.name or meta.model_name or "edgeclf image classifier")
    desc = string(card.description or _description(meta))
    version = string(card.version or (meta.source_sha256[:12] if meta.source_sha256 else "1"))
    fields = [(0, "off", name), (1, "off", desc), (2, "off", version), (3, "off", subgraphs)]
    if card.author:
        fields.append((4, "off", string(card.author)))
    if card.license:
        fields.append((5, "off", string(card.license)))
    fields.append((7, "off", string(MIN_PARSER_VERSION)))
    # ModelMetadata (the standard schema table): name(0) description(1) version(2) subgraph_metadata(3) author(4)
    # license(5) associated_files(6) min_parser_version(7)
    root = table(fields)
    b.Finish(root, file_identifier=METADATA_FILE_IDENTIFIER)
    return bytes(b.Output())


def append_associated_files(model_bytes: bytes, files: dict[str, bytes]) -> bytes:
    """``model_bytes`` with ``files`` zipped onto its end, byte for byte as the metadata
    populator does it (stored, not deflated; offsets counted from the start of the model).

    Mode ``"w"`` from the end of the model, not the populator's ``"a"``: ``"a"`` first looks
    for a zip directory in the last 64 KB, and weights can hold bytes that look like one.
    """
    buf = io.BytesIO()
    buf.write(model_bytes)
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data, compress_type=zipfile.ZIP_STORED)
    return buf.getvalue()


def associated_files(model_bytes: bytes) -> dict[str, bytes]:
    """The files zipped onto a TFLite model ({} when none)."""
    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as zf:
            return {n: zf.read(n) for n in zf.namelist()}
    except zipfile.BadZipFile:
        return {}
