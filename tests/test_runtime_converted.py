"""Runtime behaviour on files converted in the test (TensorFlow needed to make them)."""

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_int8_file_without_metadata_ending_in_softmax_is_read_as_probabilities(tmp_path):
    """A full-integer file ends in QUANTIZE after SOFTMAX; the runtime must look through it
    rather than apply a second softmax that flattens every confidence."""
    from edgeclf._optional import import_keras, import_tensorflow
    from edgeclf.runtime import load_classifier
    from edgeclf.runtime.spec import OutputKind

    tf, keras = import_tensorflow(), import_keras()
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inp))
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))
    model.layers[-1].set_weights([np.random.default_rng(0).normal(0, 3, (192, 3)).astype("float32"),
                                  np.zeros(3, "float32")])
    rng = np.random.default_rng(1)
    calib = rng.integers(0, 256, (16, 8, 8, 3)).astype("float32")
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([c[None]] for c in calib)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.uint8
    path = tmp_path / "softmax_int8.tflite"
    path.write_bytes(conv.convert())

    clf = load_classifier(path, labels=("a", "b", "c"))
    assert clf.metadata.output_kind is OutputKind.PROBABILITIES
    x = calib[:4].astype(np.uint8)
    got = clf.predict_proba(x)
    want = model.predict(x.astype("float32"), verbose=0)
    # int8 error of this random model is about 0.06; a second softmax would be off by ~0.4.
    assert np.abs(got - want).max() < 0.1, f"probabilities changed: {got} vs {want}"
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6, err_msg="rows must sum to 1")
