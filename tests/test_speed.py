"""int8 for CPUs (issue 21): the per-layer speed choice on canned timings (any machine), its
composition with the accuracy budget, dynamic-range ONNX that quantizes only dense layers,
peak memory per file, and (slow) the CPU int8 file itself: converts, loads, agrees, and
MediaPipe takes a file with a float first convolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeclf.export.speed import (LayerTiming, SpeedChoice, candidate_spans, choose_float_layers,
                                  float_layer_reasons, layer_timings)

HERE = Path(__file__).parent


def _op(i, op, ins, outs, shape=(1, 8, 8, 4), name=None):
    return {"index": i, "op": op, "inputs": list(ins), "outputs": list(outs), "out_shape": list(shape),
            "out_name": name or f"net/{op.lower()}_{i}/out"}


# A full-integer file and the same file with its candidates (first conv, depthwise) float:
# uint8 input, QUANTIZE, conv1, pool, dw, conv2, QUANTIZE out; the float file converts around them.
FULL = [_op(0, "QUANTIZE", [0], [1]), _op(1, "CONV_2D", [1, 90, 91], [2], name="net/conv1/Relu"),
        _op(2, "MAX_POOL_2D", [2], [3]), _op(3, "DEPTHWISE_CONV_2D", [3, 92, 93], [4], name="net/dw/Relu"),
        _op(4, "CONV_2D", [4, 94, 95], [5], name="net/conv2/Relu"), _op(5, "QUANTIZE", [5], [6])]
MIXED = [_op(0, "DEQUANTIZE", [0], [1]), _op(1, "CONV_2D", [1, 90, 91], [2], name="net/conv1/Relu"),
         _op(2, "QUANTIZE", [2], [3]), _op(3, "MAX_POOL_2D", [3], [4]), _op(4, "DEQUANTIZE", [4], [5]),
         _op(5, "DEPTHWISE_CONV_2D", [5, 92, 93], [6], name="net/dw/Relu"), _op(6, "QUANTIZE", [6], [7]),
         _op(7, "CONV_2D", [7, 94, 95], [8], name="net/conv2/Relu"), _op(8, "QUANTIZE", [8], [9])]


def _layer(name: str) -> str:
    return name.split("/")[1]


def _choice_from_op_times(full_ms, mixed_ms):
    spans = candidate_spans(FULL, MIXED)
    t8 = [sum(full_ms[a:b + 1]) for _, (a, b), _ in spans]
    tf = [sum(mixed_ms[a:b + 1]) for _, _, (a, b) in spans]
    return choose_float_layers(layer_timings(FULL, spans, t8, tf, _layer))


def test_spans_take_the_conversions_a_float_layer_needs():
    spans = candidate_spans(FULL, MIXED)
    assert [(FULL[i]["out_name"], a, b) for i, a, b in spans] == [
        ("net/conv1/Relu", (0, 1), (0, 2)),  # int8: QUANTIZE + conv; float: DEQUANTIZE + conv + QUANTIZE
        ("net/dw/Relu", (3, 3), (4, 6)),
    ], "the second CONV_2D is no candidate; the depthwise one is"
    assert candidate_spans(FULL, MIXED[:-2]) == [], "files that do not line up: nothing is compared"


def test_a_layer_stays_float_where_float_is_faster_and_int8_where_int8_is():
    # conv1: int8 0.05 + 1.05 ms against float 0.01 + 0.30 + 0.03; dw: int8 0.10 against float 0.02+0.12+0.02
    keep, rest = _choice_from_op_times(full_ms=[0.05, 1.05, 0.07, 0.10, 0.40, 0.01],
                                       mixed_ms=[0.01, 0.30, 0.03, 0.07, 0.02, 0.12, 0.02, 0.40, 0.01])
    assert [(t.layer, t.op) for t in keep] == [("conv1", "CONV_2D")]
    assert keep[0].int8_ms == pytest.approx(1.10) and keep[0].float_ms == pytest.approx(0.34)
    assert keep[0].nodes == ("net/conv1/Relu",), "what the quantizer's deny-list takes"
    assert [t.layer for t in rest] == ["dw"], "the depthwise layer is faster int8 (conversions included)"
    # The same file on a CPU whose int8 first conv is quick and whose int8 depthwise is slow: the other way round.
    keep, rest = _choice_from_op_times(full_ms=[0.05, 0.20, 0.07, 0.60, 0.40, 0.01],
                                       mixed_ms=[0.01, 0.30, 0.03, 0.07, 0.02, 0.20, 0.02, 0.40, 0.01])
    assert [t.layer for t in keep] == ["dw"] and [t.layer for t in rest] == ["conv1"]


def test_the_choice_needs_a_margin_and_ignores_noise():
    timings = [LayerTiming("a", "CONV_2D", ("a",), int8_ms=1.0, float_ms=0.95),  # 5%: within noise, int8
               LayerTiming("b", "DEPTHWISE_CONV_2D", ("b",), int8_ms=0.5, float_ms=0.2),
               LayerTiming("c", "DEPTHWISE_CONV_2D", ("c",), int8_ms=0.05, float_ms=-0.2),  # a negative time: noise
               LayerTiming("d", "DEPTHWISE_CONV_2D", ("d",), int8_ms=2.0, float_ms=1.0)]
    keep, rest = choose_float_layers(timings)
    assert [t.layer for t in keep] == ["d", "b"], "largest saving first"
    assert [t.layer for t in rest] == ["a", "c"]
    assert [t.layer for t in choose_float_layers(timings, margin=0.0)[0]] == ["d", "b", "a"]
    with pytest.raises(ValueError):
        choose_float_layers(timings, margin=1.0)


def test_speed_record_and_the_budget_compose_into_one_list_with_reasons():
    from edgeclf.export.budget import Budget, enforce_budget, with_float_layers
    from edgeclf.runtime.spec import ModelSpec

    conv1 = LayerTiming("conv1", "CONV_2D", ("net/conv1/Relu",), int8_ms=1.1, float_ms=0.34)
    choice = SpeedChoice((conv1,), (), threads=1, margin=0.1, whole={"ratio": 0.6}, message="m")
    d = choice.to_dict()
    assert d["float_layers"] == [{"layer": "conv1", "op": "CONV_2D", "int8_ms": 1.1, "float_ms": 0.34,
                                  "nodes": ["net/conv1/Relu"], "reason": "speed"}]
    assert float_layer_reasons(choice, ["dense", "conv1"]) == [{"layer": "conv1", "reason": "speed"},
                                                                {"layer": "dense", "reason": "accuracy"}]
    # A speed file that already meets the budget: the budget keeps it and lists the speed layer.
    probs = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    data, _, res = enforce_budget(Budget(min_agreement=0.9), "tflite", "model_int8.tflite", full_file=b"speed file",
                                  full_probs=probs, keras_probs=probs, images=np.zeros((4, 2, 2, 3), np.uint8),
                                  y=None, model=None, calibration=np.zeros((0,)), io="uint8", meta=None,
                                  keep_float=choice.layer_errors())
    assert data == b"speed file" and res.met
    assert res.float_layers == ("conv1",) and res.why[0]["reason"] == "speed" and res.why[0]["int8_ms"] == 1.1
    meta = with_float_layers(ModelSpec(labels=("a", "b"), input_size=(8, 8)), choice.layer_errors())
    assert meta.extra == {"float_layers": ["conv1"], "float_layer_reasons": {"conv1": "speed"}}


def _onnx_conv_dense(path: Path, *, dense_units: int, width: int = 16, meta: bool = True):
    """image (N, 16, 16, 3) -> Conv 3x3 (8) -> Relu -> Flatten -> MatMul (dense_units) -> MatMul (3) -> Softmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    feat = 8 * (width - 2) ** 2
    inits = [numpy_helper.from_array(rng.normal(0, 0.1, (8, 3, 3, 3)).astype(np.float32), "w_conv"),
             numpy_helper.from_array(rng.normal(0, 0.02, (feat, dense_units)).astype(np.float32), "w_dense"),
             numpy_helper.from_array(rng.normal(0, 0.1, (dense_units, 3)).astype(np.float32), "w_out"),
             numpy_helper.from_array(np.array([-1, feat], np.int64), "flat")]
    nodes = [helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "w_conv"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Reshape", ["r", "flat"], ["f"]), helper.make_node("MatMul", ["f", "w_dense"], ["d"]),
             helper.make_node("MatMul", ["d", "w_out"], ["o"]), helper.make_node("Softmax", ["o"], ["probabilities"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                         ["batch", width, width, 3])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
                              initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    if meta:
        from edgeclf.export.metadata import embed_onnx_metadata
        from edgeclf.runtime.spec import ModelSpec, OutputKind

        embed_onnx_metadata(proto, ModelSpec(labels=("red", "green", "blue"), input_size=(width, width),
                                             output_kind=OutputKind.PROBABILITIES))
    path.write_bytes(proto.SerializeToString())
    return proto


def test_dynamic_onnx_quantizes_only_the_dense_layers(tmp_path):
    from edgeclf.export.onnx_export import quantize_onnx
    from edgeclf.runtime.spec import Precision

    proto = _onnx_conv_dense(tmp_path / "f.onnx", dense_units=64, meta=False)
    ops = {n.op_type for n in quantize_onnx(proto, Precision.DYNAMIC).graph.node}
    assert "Conv" in ops and "ConvInteger" not in ops, f"convolutions stay float: {sorted(ops)}"
    assert "MatMulInteger" in ops and "MatMul" not in ops, f"every dense layer is quantized: {sorted(ops)}"
    every = {n.op_type for n in quantize_onnx(proto, Precision.DYNAMIC, dynamic_op_types=None).graph.node}
    assert "ConvInteger" in every, "without the op list ONNX Runtime quantizes convolutions too"


def test_peak_memory_grows_with_the_model(tmp_path):
    from edgeclf.runtime.memory import measure_memory

    small, large = tmp_path / "small.onnx", tmp_path / "large.onnx"
    _onnx_conv_dense(small, dense_units=4)  # 6 KB of weights
    _onnx_conv_dense(large, dense_units=8192)  # 1568 x 8192 float32: 51 MB of weights
    a, b = measure_memory(small, threads=1), measure_memory(large, threads=1)
    assert a.batch == b.batch == 1 and a.threads == 1 and "fresh process" in a.method
    assert 0 < a.added_bytes < 30e6, f"a 20 KB file took {a.added_bytes / 1e6:.1f} MB"
    assert b.added_bytes > 51e6, f"a 51 MB file must take at least its weights: {b.added_bytes / 1e6:.1f} MB"
    assert b.added_bytes > a.added_bytes + 40e6
    assert b.peak_rss_bytes >= b.baseline_rss_bytes + b.added_bytes - 4096


def test_memory_of_a_file_that_does_not_load_is_one_clear_error(tmp_path):
    from edgeclf.errors import ModelFileError
    from edgeclf.runtime.memory import measure_memory

    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="bad.tflite: could not measure its memory"):
        measure_memory(bad)


# ---- slow: the real converter ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    from edgeclf.train.zoo import build_model

    built = build_model("tutorial_cnn", image_size=32, num_classes=3, weights=None, seed=0)
    cal = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3)).astype(np.uint8)
    return built, cal


def _probs(data: bytes, path: Path, images):
    from edgeclf.export.metadata import embed_tflite_metadata
    from edgeclf.runtime import load_classifier
    from edgeclf.runtime.spec import ModelSpec

    meta = ModelSpec(labels=("red", "green", "blue"), input_size=(32, 32), precision="int8")
    path.write_bytes(embed_tflite_metadata(data, meta))
    return load_classifier(path, threads=1).predict_proba(images)


@pytest.mark.slow
def test_cpu_int8_file_converts_loads_and_agrees_with_the_float_file(tiny, tmp_path):
    from edgeclf.export.speed import convert_int8_cpu
    from edgeclf.export.tflite import convert_tflite, tflite_input_quantization
    from edgeclf.runtime.spec import Precision

    built, cal = tiny
    data, choice = convert_int8_cpu(built.model, cal, rounds=3)
    assert tflite_input_quantization(data) == ("uint8", 1.0, 0), "raw pixels in, as MediaPipe feeds them"
    measured = choice.float_layers + choice.int8_layers
    assert [t.layer for t in measured] == ["conv1"] or {t.layer for t in measured} == {"conv1"}, measured
    assert all(t.int8_ms != 0 and t.float_ms != 0 for t in measured)
    assert choice.message and choice.to_dict()["threads"] == 1
    p = _probs(data, tmp_path / "cpu.tflite", cal)
    ref = _probs(convert_tflite(built.model, Precision.FLOAT32), tmp_path / "f32.tflite", cal)
    assert np.abs(p - ref).max() < 0.05, f"probabilities differ by {np.abs(p - ref).max()}"


@pytest.mark.slow
def test_a_float_first_conv_file_keeps_uint8_io_and_mediapipe_runs_it(tiny, tmp_path):
    from ai_edge_litert import schema_py_generated as schema

    from edgeclf.export.budget import TFLiteSelective
    from edgeclf.export.metadata import embed_tflite_metadata
    from edgeclf.export.speed import candidate_ops
    from edgeclf.export.tflite import convert_tflite, tflite_input_quantization
    from edgeclf.runtime.op_profile import op_table
    from edgeclf.runtime.spec import ModelSpec, OutputKind, Precision

    built, cal = tiny
    sel = TFLiteSelective(built.model, cal)
    full_ops = op_table(sel.quantize([]))
    first = full_ops[candidate_ops(full_ops)[0]]["out_name"]
    data = sel.quantize([first])
    m = schema.ModelT.InitFromPackedBuf(data, 0)
    g = m.subgraphs[0]
    conv_weights = [g.tensors[op.inputs[1]].type for op in g.operators
                    if m.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.CONV_2D]
    assert conv_weights[0] == schema.TensorType.FLOAT32, "the first convolution stays float"
    assert all(t == schema.TensorType.INT8 for t in conv_weights[1:]), f"the others are int8: {conv_weights}"
    assert tflite_input_quantization(data)[0] == "uint8"
    p = _probs(data, tmp_path / "mixed.tflite", cal)
    ref = _probs(convert_tflite(built.model, Precision.FLOAT32), tmp_path / "f32.tflite", cal)
    assert np.abs(p - ref).max() < 0.05, f"probabilities differ by {np.abs(p - ref).max()}"

    from test_phone_clients import mediapipe_classify

    path = tmp_path / "model_int8.tflite"
    meta = ModelSpec(labels=("red", "green", "blue"), input_size=(32, 32), precision="int8",
                     output_kind=OutputKind.LOGITS)
    path.write_bytes(embed_tflite_metadata(data, meta))
    images = sorted((HERE / "fixtures" / "images").glob("*.png"))
    got = mediapipe_classify([path], images)[path.name]
    assert "error" not in got, f"MediaPipe refused it: {got.get('error')}"
    assert len(got["results"]) == len(images) and all(len(r) == 3 for r in got["results"])
