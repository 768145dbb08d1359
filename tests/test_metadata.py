"""Model metadata: round trips through TFLite flatbuffers and ONNX props, and damaged input."""

import json

import numpy as np
import pytest

from edgeclf.errors import ModelFileError, UsageError
from edgeclf.export.metadata import embed_onnx_metadata, embed_tflite_metadata
from edgeclf.runtime.metadata import read_labels_file, read_onnx_metadata, read_tflite_metadata, sniff_format
from edgeclf.runtime.spec import ModelSpec, OutputKind


def minimal_tflite() -> bytes:
    """A structurally valid TFLite flatbuffer with one weight buffer, built without TensorFlow."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT()
    model.version = 3
    model.description = "test"
    empty, weights = schema.BufferT(), schema.BufferT()
    weights.data = np.arange(64, dtype=np.uint8)
    model.buffers = [empty, weights]
    model.subgraphs = [schema.SubGraphT()]
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


META = ModelSpec(labels=("daisy", "rosé", "tulip 2"), input_size=(96, 128), precision="int8",
                     output_kind=OutputKind.LOGITS, source_sha256="ab" * 32, edgeclf_version="0.1.0")


def test_json_round_trip_keeps_every_field():
    back = ModelSpec.from_json(META.to_json())
    assert back == META
    d = json.loads(META.to_json())
    for key in ("labels", "input_size", "layout", "color_order", "value_range", "resize_method",
                "output_kind", "precision", "edgeclf_version", "source_sha256"):
        assert key in d, f"metadata JSON lacks {key}"


def test_tflite_round_trip_and_replacement():
    raw = minimal_tflite()
    assert read_tflite_metadata(raw) is None
    with_meta = embed_tflite_metadata(raw, META)
    assert sniff_format(with_meta) == "tflite"
    assert read_tflite_metadata(with_meta) == META
    again = embed_tflite_metadata(with_meta, META.with_(precision="float16"))
    assert read_tflite_metadata(again).precision == "float16"

    from ai_edge_litert import schema_py_generated as schema

    m = schema.Model.GetRootAs(again, 0)
    names = [m.Metadata(i).Name() for i in range(m.MetadataLength())]
    assert names.count(b"edgeclf") == 1, f"stale entries left: {names}"
    np.testing.assert_array_equal(m.Buffers(1).DataAsNumpy(), np.arange(64, dtype=np.uint8),
                                  err_msg="weights changed by embedding metadata")


def test_onnx_round_trip():
    import onnx
    proto = onnx.ModelProto()
    embed_onnx_metadata(proto, META)
    embed_onnx_metadata(proto, META)
    props = {p.key: p.value for p in proto.metadata_props}
    assert len(proto.metadata_props) == 3, "re-embedding replaces every entry"
    assert read_onnx_metadata(props) == META
    assert props["labels"] == "daisy,rosé,tulip 2"
    assert json.loads(props["labels_json"]) == ["daisy", "rosé", "tulip 2"]
    assert read_onnx_metadata({}) is None


@pytest.mark.parametrize(
    "doc,match",
    [
        ("{", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"labels": [], "input_size": [8, 8]}', "labels"),
        ('{"labels": ["a"], "input_size": [8]}', "input_size"),
        ('{"labels": ["a", "b", "c"], "input_size": [8, 8], "output_kind": "sigmoid"}', "2 labels"),
        ('{"labels": ["a"], "input_size": [8, 8], "output_kind": "banana"}', "malformed"),
        ('{"input_size": [8, 8]}', "malformed"),
        ('{"labels": ["a"], "input_size": [8, 8], "layout": "NCHW"}', "layout"),
        ('{"labels": ["a"], "input_size": [8, 8], "color_order": "BGR"}', "color_order"),
        ('{"labels": ["a"], "input_size": [8, 8], "value_range": [-1, 1]}', "value_range"),
        ('{"labels": ["a"], "input_size": [8, 8], "resize_method": "magic"}', "resize_method"),
    ],
)
def test_malformed_metadata_is_a_model_file_error(doc, match):
    with pytest.raises(ModelFileError, match=match):
        ModelSpec.from_json(doc, source="m.tflite")


def test_not_tflite_and_sniffing():
    with pytest.raises(ModelFileError, match="not a TFLite file"):
        read_tflite_metadata(b"\x08\x07" + b"\x00" * 30)
    assert sniff_format(b"\x08\x08\x12\x07tf2onnx") == "onnx"
    assert sniff_format(b"") is None
    assert sniff_format(b"random bytes here") is None


def test_labels_file(tmp_path):
    p = tmp_path / "labels.txt"
    p.write_text("cat\n\ndog\n", encoding="utf-8")
    assert read_labels_file(p) == ("cat", "dog")
    p.write_text('["a", "b"]', encoding="utf-8")
    assert read_labels_file(p) == ("a", "b")
    p.write_text("a\na\n", encoding="utf-8")
    with pytest.raises(UsageError, match="repeats"):
        read_labels_file(p)
    p.write_text("\n", encoding="utf-8")
    with pytest.raises(UsageError, match="no labels"):
        read_labels_file(p)
    with pytest.raises(UsageError, match="not found"):
        read_labels_file(tmp_path / "missing.txt")
