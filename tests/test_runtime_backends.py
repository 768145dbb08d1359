"""Every backend and precision on the committed fixtures (made by tests/fixtures/make_fixtures.py),
the quantization arithmetic, and batches. No TensorFlow here."""

from pathlib import Path

import numpy as np
import pytest

from edgeclf.runtime import load_classifier
from edgeclf.runtime.backend import BACKENDS, dequantize, input_converter, output_converter, quantize
from edgeclf.runtime.classifier import softmax
from edgeclf.runtime.cpu import physical_cores

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = np.load(FIXTURES / "golden.npz")
IMAGES = GOLDEN["images"]

# file -> (format, precision, input dtype the engine sees, tolerance against the float32 file)
COLOUR = {
    "colour_float32.tflite": ("tflite", "float32", np.float32, 1e-6),
    "colour_float16.tflite": ("tflite", "float16", np.float32, 2e-3),
    "colour_dynamic.tflite": ("tflite", "dynamic", np.float32, 2e-2),
    "colour_int8.tflite": ("tflite", "int8", np.uint8, 5e-2),
    "colour_int8_int8io.tflite": ("tflite", "int8", np.int8, 5e-2),
    "colour_int16x8.tflite": ("tflite", "int16x8", np.int16, 2e-2),
    "colour_float32.onnx": ("onnx", "float32", np.float32, 1e-5),
    "colour_int8.onnx": ("onnx", "int8", np.float32, 5e-2),
    "colour_dynamic.onnx": ("onnx", "dynamic", np.float32, 2e-2),
}
BINARY = ["binary_float32.tflite", "binary_int8.tflite", "binary_float32.onnx"]
ALL = list(COLOUR) + BINARY + ["fixed_batch_float32.tflite"]


@pytest.fixture(scope="module")
def reference():
    return load_classifier(FIXTURES / "colour_float32.tflite", threads=1).predict_proba(IMAGES)


@pytest.mark.parametrize("name", list(COLOUR))
def test_every_precision_loads_and_agrees_with_float32(name, reference):
    fmt, precision, in_dtype, tol = COLOUR[name]
    clf = load_classifier(FIXTURES / name, threads=1)
    assert clf.format == fmt, f"{name}: format {clf.format!r}, expected {fmt!r}"
    assert clf.precision == precision, f"{name}: precision {clf.precision!r}, expected {precision!r}"
    assert clf._backend.input_dtype == in_dtype, f"{name}: engine input dtype {clf._backend.input_dtype}"
    assert clf.labels == ("red", "green", "blue"), f"{name}: labels {clf.labels}"
    assert clf.input_size == (32, 32), f"{name}: input size {clf.input_size}"
    probs = clf.predict_proba(IMAGES)
    assert probs.shape == (len(IMAGES), 3), f"{name}: shape {probs.shape}"
    assert probs.dtype == np.float32, f"{name}: dtype {probs.dtype}"
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5, err_msg=f"{name}: rows do not sum to 1")
    diff = np.abs(probs - reference).max()
    assert diff <= tol, f"{name}: max |diff| to float32 is {diff:.4g}, over {tol}"
    # The three colour images are unambiguous: every precision must get them right.
    assert list(probs[[0, 1, 3]].argmax(axis=1)) == [2, 1, 0], f"{name}: labels {probs.argmax(axis=1)}"


@pytest.mark.parametrize("name", ALL)
def test_matches_golden_record(name):
    clf = load_classifier(FIXTURES / name, threads=1)
    probs = clf.predict_proba(IMAGES)
    expected = GOLDEN[f"probs::{name}"]
    assert probs.shape == expected.shape, f"{name}: shape {probs.shape} vs recorded {expected.shape}"
    assert probs.dtype == expected.dtype, f"{name}: dtype {probs.dtype} vs recorded {expected.dtype}"
    diff = np.abs(probs - expected).max()
    assert diff <= GOLDEN[f"atol::{name}"], f"{name}: max |diff| {diff:.4g} to the golden record"


@pytest.mark.parametrize("name", BINARY)
def test_sigmoid_models_give_two_probabilities(name):
    clf = load_classifier(FIXTURES / name, threads=1)
    assert clf.metadata.output_kind.value == "sigmoid"
    raw = clf._backend.predict(IMAGES)
    assert raw.shape == (len(IMAGES), 1), f"{name}: raw output shape {raw.shape}"
    probs = clf.predict_proba(IMAGES)
    assert probs.shape == (len(IMAGES), 2), f"{name}: shape {probs.shape}"
    np.testing.assert_allclose(probs[:, 1], np.clip(raw[:, 0], 0, 1), atol=1e-6, err_msg=f"{name}: p column")
    np.testing.assert_allclose(probs[:, 0], 1 - probs[:, 1], atol=1e-6, err_msg=f"{name}: 1 - p column")
    assert probs[2].argmax() == 1 and probs[0].argmax() == 0, f"{name}: light/dark wrong: {probs}"


@pytest.mark.parametrize("name", ALL)
def test_batch_agrees_with_one_by_one(name):
    clf = load_classifier(FIXTURES / name, threads=1)
    batch = np.concatenate([IMAGES, IMAGES[::-1], IMAGES[:1]])  # an odd size
    together = clf.predict_proba(batch)
    alone = np.concatenate([clf.predict_proba(img[None]) for img in batch])
    assert together.shape == alone.shape == (len(batch), len(clf.labels)), f"{name}: {together.shape} vs {alone.shape}"
    np.testing.assert_allclose(together, alone, atol=1e-5, err_msg=f"{name}: batch differs from one by one")
    # ...and back to a batch after single images (the interpreter is resized both ways).
    np.testing.assert_allclose(clf.predict_proba(batch), together, atol=1e-6, err_msg=f"{name}: second batch")


def test_batch_one_graph_that_cannot_resize_runs_image_by_image():
    clf = load_classifier(FIXTURES / "fixed_batch_float32.tflite", threads=1)
    assert clf._backend.input_shape[0] == 1
    out = clf.predict_proba(IMAGES)
    assert out.shape == (len(IMAGES), 3)
    assert clf._backend._resizable is False, "the fixture graph resized; it no longer tests the fallback"
    single = np.concatenate([clf.predict_proba(img[None]) for img in IMAGES])
    np.testing.assert_allclose(out, single, atol=1e-6)


def test_onnx_dynamic_batch_runs_in_one_call():
    clf = load_classifier(FIXTURES / "colour_float32.onnx", threads=1)
    calls = []
    run = clf._backend._run
    clf._backend._run = lambda x: calls.append(x.shape[0]) or run(x)
    clf.predict_proba(IMAGES)
    assert calls == [len(IMAGES)], f"expected one call with the whole batch, got batch sizes {calls}"


def test_onnx_dynamic_quantization_runs_image_by_image():
    # One activation scale per input tensor: batched, an image's result would depend on its neighbours.
    clf = load_classifier(FIXTURES / "colour_dynamic.onnx", threads=1)
    calls = []
    run = clf._backend._run
    clf._backend._run = lambda x: calls.append(x.shape[0]) or run(x)
    clf.predict_proba(IMAGES)
    assert calls == [1] * len(IMAGES), f"batch sizes {calls}"


def test_tflite_batch_one_file_is_resized_not_looped():
    clf = load_classifier(FIXTURES / "colour_int8.tflite", threads=1)
    assert clf._backend.input_shape[0] is None  # converted with a dynamic batch, stored as 1
    clf.predict_proba(IMAGES)
    assert clf._backend._batch == len(IMAGES), "the interpreter was not resized to the batch"


@pytest.mark.parametrize("name", ["colour_float32.tflite", "colour_float32.onnx"])
def test_threads_reach_the_engine(name):
    clf = load_classifier(FIXTURES / name, threads=2)
    assert clf.threads == 2
    if clf.format == "onnx":
        assert clf._backend._session.get_session_options().intra_op_num_threads == 2
    default = load_classifier(FIXTURES / name)
    assert default.threads == physical_cores() >= 1


def test_backend_table_is_the_one_place_suffixes_live():
    assert set(BACKENDS) == {".tflite", ".onnx", ".ort"}


# ---- quantization arithmetic -------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16])
def test_quantize_clips_at_both_ends(dtype):
    info = np.iinfo(dtype)
    q = quantize(np.array([-1e9, 1e9, -1e5, 1e5], np.float32), 0.5, 3, dtype)
    assert q.dtype == dtype, f"dtype {q.dtype}"
    assert list(q) == [info.min, info.max, info.min, info.max], f"{dtype.__name__}: {q}"


def test_quantize_rounds_to_nearest_halves_away_from_zero():
    x = np.array([0.49, 0.5, 1.5, 2.5, -0.5, -1.5, 2.51], np.float32)
    assert list(quantize(x, 1.0, 0, np.int8)) == [0, 1, 2, 3, -1, -2, 3]
    # scale and zero point: 10 / 4 = 2.5 -> 3, + 7
    assert quantize(np.array([10.0], np.float32), 4.0, 7, np.uint8)[0] == 10


@pytest.mark.parametrize("dtype,scale,zp", [(np.uint8, 0.988, 0), (np.int8, 0.988, -128),
                                            (np.int16, 0.0077, 0), (np.uint8, 0.128, 145)])
def test_quantize_dequantize_round_trip(dtype, scale, zp):
    info = np.iinfo(dtype)
    q = np.arange(info.min, info.max + 1, dtype=np.int64).astype(dtype)
    real = dequantize(q, scale, zp)
    assert real.dtype == np.float32
    np.testing.assert_array_equal(quantize(real, scale, zp, dtype), q, err_msg="integers do not survive")
    pixels = np.arange(256, dtype=np.float32)
    back = dequantize(quantize(pixels, scale, zp, dtype), scale, zp)
    inside = (pixels >= real.min()) & (pixels <= real.max())
    assert np.abs(back - pixels)[inside].max() <= scale / 2 + 1e-4, "error over half a step"


@pytest.mark.parametrize("dtype,scale,zp", [(np.uint8, 0.988, 0), (np.int8, 0.988, -128), (np.int16, 0.0077, 0),
                                            (np.uint8, 2.0, 3)])
def test_input_lookup_table_equals_the_arithmetic(dtype, scale, zp):
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    converted = input_converter(dtype, scale, zp)(pixels)
    assert converted.dtype == dtype and converted.shape == pixels.shape
    np.testing.assert_array_equal(converted, quantize(pixels, scale, zp, dtype))


def test_uint8_input_with_unit_scale_is_passed_through_untouched():
    x = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    assert input_converter(np.uint8, 1.0, 0)(x) is x
    assert input_converter(np.float32, 0.0, 0)(x).dtype == np.float32
    assert output_converter(np.int8, 0.5, -2)(np.array([[-2, 0]], np.int8)).tolist() == [[0.0, 1.0]]


def test_softmax_is_stable_for_huge_logits():
    p = softmax(np.array([[1000.0, 999.0, -1000.0], [-1e30, 0.0, 1e30]], np.float32))
    assert np.all(np.isfinite(p)), p
    np.testing.assert_allclose(p[0], [0.7310586, 0.2689414, 0.0], atol=1e-6)
    np.testing.assert_allclose(p[1], [0.0, 0.0, 1.0], atol=1e-6)
