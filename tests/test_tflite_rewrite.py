"""Dynamic-range files keep depthwise weights in float32, so XNNPACK runs the whole graph
(issue 15): one XNNPACK partition instead of one per depthwise layer, the same answers."""

import collections

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _model():
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(128, 1, activation="relu")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)  # 3x3x128 = 1152 weights: quantized
    x = keras.layers.Conv2D(64, 1, activation="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)  # 576 weights: below the quantizer's threshold
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(4)(x))


def _run(data, x):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data, num_threads=1)
    it.allocate_tensors()
    ops = collections.Counter(o["op_name"] for o in it._get_ops_details())
    outs = []
    for row in x:
        it.set_tensor(it.get_input_details()[0]["index"], row[None])
        it.invoke()
        outs.append(it.get_tensor(it.get_output_details()[0]["index"])[0].copy())
    return np.array(outs), ops


def _depthwise_weight_types(data):
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(data, 0)
    g = m.subgraphs[0]
    dw = [i for i, oc in enumerate(m.operatorCodes)
          if max(oc.builtinCode, oc.deprecatedBuiltinCode) == schema.BuiltinOperator.DEPTHWISE_CONV_2D]
    return [g.tensors[op.inputs[1]].type for op in g.operators if op.opcodeIndex in dw]


def test_dynamic_range_depthwise_weights_become_float_and_answers_stay():
    import tensorflow as tf

    from edgeclf.export.tflite import convert_tflite
    from edgeclf.export.tflite_rewrite import float_depthwise_weights
    from edgeclf.runtime.spec import Precision

    model = _model()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    plain = bytes(conv.convert())  # what the converter gives: int8 depthwise weights
    fixed = convert_tflite(model, Precision.DYNAMIC)
    from ai_edge_litert import schema_py_generated as schema

    assert _depthwise_weight_types(plain) == [schema.TensorType.INT8, schema.TensorType.FLOAT32], \
        "the converter no longer quantizes the big depthwise kernel: the test model needs a bigger one"
    assert _depthwise_weight_types(fixed) == [schema.TensorType.FLOAT32, schema.TensorType.FLOAT32]
    assert float_depthwise_weights(fixed) == fixed, "a second pass must change nothing"

    x = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype(np.float32)
    ref = model.predict(x, verbose=0)
    y_plain, ops_plain = _run(plain, x)
    y_fixed, ops_fixed = _run(fixed, x)
    assert ops_fixed["DELEGATE"] == 1, f"XNNPACK should run the whole graph; ops: {dict(ops_fixed)}"
    assert ops_plain["DELEGATE"] > 1, f"expected the hybrid depthwise to split the graph; ops: {dict(ops_plain)}"
    # The float depthwise multiplies the same dequantized weights without quantizing its input:
    # at least as close to Keras as the hybrid kernel.
    err_plain, err_fixed = np.abs(y_plain - ref).max(), np.abs(y_fixed - ref).max()
    assert err_fixed <= err_plain * 1.01 + 1e-6, f"float depthwise error {err_fixed} > hybrid {err_plain}"
    assert np.array_equal(y_fixed.argmax(1), ref.argmax(1)) or err_fixed < 1e-2 * np.abs(ref).max()


def test_files_without_hybrid_depthwise_are_returned_as_they_are():
    from pathlib import Path

    from edgeclf.export.tflite_rewrite import float_depthwise_weights

    for name in ("colour_float32.tflite", "colour_int8.tflite", "colour_dynamic.tflite"):
        data = (Path(__file__).parent / "fixtures" / name).read_bytes()
        assert float_depthwise_weights(data) is data, name
