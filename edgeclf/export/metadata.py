"""Embed edgeclf metadata into TFLite and ONNX files (the runtime reads it back).

TFLite: the flatbuffer is unpacked with the schema that ai-edge-litert ships, buffers
holding the JSON (``edgeclf`` entry) and the standard metadata flatbuffer
(``TFLITE_METADATA`` entry, see ``std_metadata``) are added (replacing older ones), the
model is packed again with the ``TFL3`` identifier and the labels file is zipped onto it.
Weight buffers stay numpy arrays throughout, so this takes milliseconds even for a MobileNet.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import ModelFileError
from ..runtime.metadata import METADATA_KEY, TFLITE_IDENTIFIER
from ..runtime.spec import ModelSpec
from .std_metadata import (LABELS_FILE, STANDARD_METADATA_KEY, ModelCard, append_associated_files,
                           build_standard_metadata, labels_file_text)


def embed_tflite_metadata(model_bytes: bytes, meta: ModelSpec, *, card: Optional[ModelCard] = None) -> bytes:
    """Return ``model_bytes`` carrying ``meta`` twice: as edgeclf's own ``edgeclf`` entry
    (the JSON the runtime reads) and as the standard ``TFLITE_METADATA`` entry that
    MediaPipe Tasks, the Task Library and Android Studio read, with the labels zipped onto
    the end of the file as its ``labels.txt``.

    Both entries go in with one repack, and the zip is appended last: repacking a model
    that already carries a zip drops it, so any zip ``model_bytes`` carries is replaced.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    if model_bytes[4:8] != TFLITE_IDENTIFIER:
        raise ModelFileError("cannot add metadata: the bytes are not a TFLite model")
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    if model.buffers is None:
        model.buffers = []
    payloads = {
        METADATA_KEY: meta.to_json().encode("utf-8"),
        STANDARD_METADATA_KEY: build_standard_metadata(meta, card),
    }
    ours = {k.encode() for k in payloads} | set(payloads)
    entries = [m for m in (model.metadata or []) if (m.name or b"") not in ours]
    for m in model.metadata or []:
        if (m.name or b"") in ours:
            # Empty the stale buffer rather than removing it: indices elsewhere point past it.
            model.buffers[m.buffer].data = None
    for key, payload in payloads.items():
        buf = schema.BufferT()
        buf.data = np.frombuffer(payload, dtype=np.uint8).copy()
        model.buffers.append(buf)
        entry = schema.MetadataT()
        entry.name = key
        entry.buffer = len(model.buffers) - 1
        entries.append(entry)
    model.metadata = entries
    for b in model.buffers:
        if b.data is not None and len(b.data):
            b.__class__ = _aligned_buffer_class(schema)
    extra = sum(len(p) for p in payloads.values())
    builder = flatbuffers.Builder(len(model_bytes) + extra + 4096)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    packed = bytes(builder.Output())
    return append_associated_files(packed, {LABELS_FILE: labels_file_text(meta).encode("utf-8")})


_ALIGNED: dict = {}
BUFFER_ALIGNMENT = 16  # schema.fbs: Buffer.data (force_align: 16)


def _aligned_buffer_class(schema):
    """BufferT whose data vector is 16-byte aligned, as the TFLite converter writes it.

    The generated ``BufferT.Pack`` aligns the bytes to 1, and an interpreter then copies
    every misaligned weight to the heap at load ("unaligned buffer ... copying") instead of
    using the memory-mapped file: more memory and a slower start on a phone.
    """
    if "cls" not in _ALIGNED:
        class AlignedBufferT(schema.BufferT):
            def Pack(self, builder):
                raw = np.ascontiguousarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(raw), BUFFER_ALIGNMENT)
                builder.head -= len(raw)
                builder.Bytes[builder.head: builder.head + len(raw)] = raw
                data = builder.EndVector()
                schema.BufferStart(builder)
                schema.BufferAddData(builder, data)
                schema.BufferAddOffset(builder, self.offset)
                schema.BufferAddSize(builder, self.size)
                return schema.BufferEnd(builder)

        _ALIGNED["cls"] = AlignedBufferT
    return _ALIGNED["cls"]


ONNX_LABELS_JSON_KEY = "labels_json"  # a JSON list: labels may hold commas
ONNX_LABELS_KEY = "labels"  # comma-joined, for readers written before labels_json


def embed_onnx_metadata(model_proto, meta: ModelSpec):
    """Set ``metadata_props['edgeclf']`` (the spec the runtime reads) and, for apps that read
    one key with ONNX Runtime alone, ``labels_json`` (the labels as a JSON list, in
    index order) and ``labels`` (comma-joined, kept for older readers) on an ONNX ModelProto."""
    import json

    keep = [p for p in model_proto.metadata_props
            if p.key not in (METADATA_KEY, ONNX_LABELS_KEY, ONNX_LABELS_JSON_KEY)]
    del model_proto.metadata_props[:]
    model_proto.metadata_props.extend(keep)
    entry = model_proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = meta.to_json()
    as_json = model_proto.metadata_props.add()
    as_json.key = ONNX_LABELS_JSON_KEY
    as_json.value = json.dumps(list(meta.labels), ensure_ascii=False)
    labels = model_proto.metadata_props.add()
    labels.key = ONNX_LABELS_KEY
    labels.value = ",".join(meta.labels)
    return model_proto
