"""Embed edgeclf metadata into TFLite and ONNX files (the runtime reads it back).

TFLite: the flatbuffer is unpacked with the schema that ai-edge-litert ships, a buffer
holding the JSON and a ``Metadata`` entry named ``edgeclf`` are added (replacing an older
one), and the model is packed again with the ``TFL3`` identifier. Weight buffers stay numpy
arrays throughout, so this takes milliseconds even for a MobileNet.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelFileError
from ..runtime.metadata import METADATA_KEY, TFLITE_IDENTIFIER, ModelMetadata


def embed_tflite_metadata(model_bytes: bytes, meta: ModelMetadata) -> bytes:
    """Return ``model_bytes`` with ``meta`` stored as the ``edgeclf`` metadata entry."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    if model_bytes[4:8] != TFLITE_IDENTIFIER:
        raise ModelFileError("cannot add metadata: the bytes are not a TFLite model")
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    payload = np.frombuffer(meta.to_json().encode("utf-8"), dtype=np.uint8).copy()
    if model.buffers is None:
        model.buffers = []
    entries = [m for m in (model.metadata or []) if (m.name or b"") not in (METADATA_KEY, METADATA_KEY.encode())]
    for m in model.metadata or []:
        if (m.name or b"") in (METADATA_KEY, METADATA_KEY.encode()):
            # Empty the stale buffer rather than removing it: indices elsewhere point past it.
            model.buffers[m.buffer].data = None
    buf = schema.BufferT()
    buf.data = payload
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = METADATA_KEY
    entry.buffer = len(model.buffers) - 1
    entries.append(entry)
    model.metadata = entries
    builder = flatbuffers.Builder(len(model_bytes) + len(payload) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def embed_onnx_metadata(model_proto, meta: ModelMetadata):
    """Set ``metadata_props['edgeclf']`` (and a readable ``labels`` entry) on an ONNX ModelProto."""
    keep = [p for p in model_proto.metadata_props if p.key not in (METADATA_KEY, "labels")]
    del model_proto.metadata_props[:]
    model_proto.metadata_props.extend(keep)
    entry = model_proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = meta.to_json()
    labels = model_proto.metadata_props.add()
    labels.key = "labels"
    labels.value = ",".join(meta.labels)
    return model_proto
