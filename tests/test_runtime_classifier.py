"""Classifier.predict on every kind of image input, labels, top-k and Prediction."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeclf.errors import ImageError, ModelFileError, UsageError
from edgeclf.runtime import Prediction, load_classifier, load_image
from edgeclf.runtime.spec import OutputKind

FIXTURES = Path(__file__).parent / "fixtures"
RED = FIXTURES / "images" / "red.png"


@pytest.fixture(scope="module")
def clf():
    return load_classifier(FIXTURES / "colour_int8.tflite", threads=1)


def _red_array(h=40, w=30):
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = 220
    a[..., 1:] = 30
    return a


@pytest.mark.parametrize("make", [
    lambda tmp: str(RED),
    lambda tmp: RED,
    lambda tmp: Image.open(RED),
    lambda tmp: Image.fromarray(_red_array()),
    lambda tmp: Image.fromarray(_red_array()).convert("RGBA"),
    lambda tmp: Image.fromarray(_red_array()).convert("P"),
    lambda tmp: Image.fromarray(_red_array()).convert("CMYK"),
    lambda tmp: _red_array(),
    lambda tmp: _red_array(32, 32),
    lambda tmp: np.dstack([_red_array(), np.full((40, 30), 255, np.uint8)]),
    lambda tmp: (Image.fromarray(_red_array()).save(tmp / "r.webp"), tmp / "r.webp")[1],
    lambda tmp: (Image.fromarray(_red_array()).save(tmp / "r.bmp"), str(tmp / "r.bmp"))[1],
], ids=["str", "Path", "PIL-file", "PIL-RGB", "PIL-RGBA", "PIL-P", "PIL-CMYK", "array-HxWx3",
        "array-at-size", "array-HxWx4", "webp", "bmp"])
def test_every_colour_image_mode_is_predicted_red(clf, make, tmp_path):
    [p] = clf.predict(make(tmp_path))
    assert isinstance(p, Prediction)
    assert p.label == "red", f"got {p.label} ({p.probabilities})"
    assert p.index == 0
    assert len(p.probabilities) == 3 and abs(sum(p.probabilities) - 1) < 1e-5


@pytest.mark.parametrize("make", [
    lambda: Image.new("L", (20, 20), 40),
    lambda: Image.new("LA", (20, 20), (40, 255)),
    lambda: Image.new("I;16", (20, 20), 40 * 257),
    lambda: np.full((20, 20), 40, np.uint8),
    lambda: np.full((20, 20, 1), 40, np.uint8),
], ids=["L", "LA", "I;16", "array-HxW", "array-HxWx1"])
def test_grey_modes_reach_the_model_as_rgb(make):
    binary = load_classifier(FIXTURES / "binary_float32.tflite", threads=1)
    [p] = binary.predict(make())
    assert p.label == "dark", f"got {p.label} ({p.probabilities})"


def test_predict_matches_load_image_plus_predict_proba(clf):
    x = load_image(RED, clf.input_size)
    [p] = clf.predict(RED)
    np.testing.assert_array_equal(np.array(p.probabilities, np.float32), clf.predict_proba(x[None])[0])


def test_many_images_keep_their_order_and_sources(clf, monkeypatch):
    import edgeclf.runtime.classifier as classifier

    monkeypatch.setattr(classifier, "CHUNK", 2)  # several chunks
    files = sorted((FIXTURES / "images").iterdir())
    preds = clf.predict(files + [str(files[0])])
    assert [p.source for p in preds] == [str(f) for f in files] + [str(files[0])]
    assert [p.label for p in preds] == ["blue", "green", "blue", "red", "blue"]


def test_a_batch_array_gives_one_prediction_per_image(clf):
    batch = np.stack([_red_array(32, 32)] * 3)
    preds = clf.predict(batch)
    assert len(preds) == 3 and all(p.label == "red" and p.source is None for p in preds)


def test_top_k_lists_the_best_first(clf):
    [p] = clf.predict(FIXTURES / "images" / "light_gray.png", top_k=3)
    assert [lab for lab, _ in p.top_k] == ["blue", "green", "red"]
    confidences = [c for _, c in p.top_k]
    assert confidences == sorted(confidences, reverse=True)
    assert p.top_k[0] == (p.label, p.confidence)
    [p] = clf.predict(RED, top_k=10)  # more than there are labels: all of them
    assert len(p.top_k) == 3
    with pytest.raises(UsageError, match="top_k"):
        clf.predict(RED, top_k=0)


def test_prediction_sentence_and_dict():
    p = Prediction(label="sunflowers", index=3, confidence=0.99454, probabilities=(0.0, 0.0, 0.0, 0.99454),
                   source="a.jpg", top_k=(("sunflowers", 0.99454),))
    assert p.sentence() == "This image most likely belongs to sunflowers with a 99.45 percent confidence."
    d = json.loads(json.dumps(p.to_dict()))
    assert d["label"] == "sunflowers" and d["top_k"] == [{"label": "sunflowers", "confidence": 0.99454}]


def test_predict_proba_refuses_wrong_shape_or_dtype(clf):
    with pytest.raises(UsageError, match=r"\(N, 32, 32, 3\)"):
        clf.predict_proba(np.zeros((1, 31, 32, 3), np.uint8))
    with pytest.raises(UsageError, match="uint8"):
        clf.predict_proba(np.zeros((1, 32, 32, 3), np.float32))
    assert clf.predict_proba(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, 3)
    assert clf.predict_proba(np.zeros((32, 32, 3), np.uint8)).shape == (1, 3)


def test_a_bad_image_raises_image_error_naming_it(clf, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("<html>not an image</html>")
    with pytest.raises(ImageError, match="bad.jpg"):
        clf.predict(bad)


@pytest.mark.parametrize("name", ["colour_nometa.tflite", "colour_nometa.onnx"])
def test_file_without_metadata_works_with_labels(name, tmp_path):
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("red\ngreen\nblue\n")
    for labels in (["red", "green", "blue"], labels_file, str(labels_file)):
        clf = load_classifier(FIXTURES / name, threads=1, labels=labels)
        assert clf.labels == ("red", "green", "blue")
        assert clf.input_size == (32, 32), "input size not taken from the model's input shape"
        assert clf.metadata.output_kind is OutputKind.LOGITS
        assert clf.predict(RED)[0].label == "red"


def test_labels_replace_the_files_own(clf):
    renamed = load_classifier(FIXTURES / "colour_int8.tflite", threads=1, labels=["rot", "gruen", "blau"])
    assert renamed.predict(RED)[0].label == "rot"
    assert renamed.metadata.input_size == clf.metadata.input_size


@pytest.mark.parametrize("name,labels", [
    ("colour_int8.tflite", ["a", "b"]),
    ("colour_nometa.onnx", ["a", "b", "c", "d"]),
    ("binary_float32.tflite", ["a", "b", "c"]),
])
def test_labels_count_that_differs_from_outputs_is_refused(name, labels):
    with pytest.raises(ModelFileError) as err:
        load_classifier(FIXTURES / name, threads=1, labels=labels)
    msg = str(err.value)
    assert name in msg and "label" in msg, msg


@pytest.mark.parametrize("threads", [0, -1, 1.5, "2", True])
def test_bad_thread_counts_are_refused(threads):
    with pytest.raises(UsageError, match="threads"):
        load_classifier(FIXTURES / "colour_int8.tflite", threads=threads)


def test_repeated_or_empty_labels_are_refused():
    with pytest.raises(UsageError, match="repeat"):
        load_classifier(FIXTURES / "colour_nometa.tflite", labels=["a", "a", "b"])
    with pytest.raises(UsageError, match="empty"):
        load_classifier(FIXTURES / "colour_nometa.tflite", labels=[])


def test_classifier_attributes(clf):
    assert clf.path == FIXTURES / "colour_int8.tflite"
    assert (clf.format, clf.precision, clf.threads) == ("tflite", "int8", 1)
    assert "colour_int8.tflite" in repr(clf)


def test_output_kind_of_a_file_without_metadata_is_read_off_the_graph(monkeypatch):
    from edgeclf.runtime.litert import LiteRTBackend

    plain = load_classifier(FIXTURES / "colour_nometa.tflite", threads=1, labels=["r", "g", "b"])
    assert plain._backend.output_op == "FULLY_CONNECTED"
    assert plain.metadata.output_kind is OutputKind.LOGITS
    monkeypatch.setattr(LiteRTBackend, "_producer", lambda self, index: "SOFTMAX")
    softmaxed = load_classifier(FIXTURES / "colour_nometa.tflite", threads=1, labels=["r", "g", "b"])
    assert softmaxed.metadata.output_kind is OutputKind.PROBABILITIES
    x = load_image(RED, 32)[None]
    raw = np.clip(softmaxed._backend.predict(x), 0, None)
    # Taken as probabilities: no softmax, only renormalised so each row sums to 1.
    np.testing.assert_allclose(softmaxed.predict_proba(x), raw / raw.sum(axis=1, keepdims=True), rtol=1e-6,
                               err_msg="probabilities were put through a softmax")


def test_to_probabilities_for_every_output_kind():
    from edgeclf.runtime.classifier import to_probabilities

    p = to_probabilities(np.array([[1000.0, 0.0, -1000.0]]), OutputKind.LOGITS)
    np.testing.assert_allclose(p, [[1.0, 0.0, 0.0]], atol=1e-6, err_msg="softmax of large logits")
    p = to_probabilities(np.array([[0.25], [1.2]]), OutputKind.SIGMOID)
    np.testing.assert_allclose(p, [[0.75, 0.25], [0.0, 1.0]], err_msg="sigmoid to two columns, clipped")
    p = to_probabilities(np.array([[0.5, 0.49609375, 0.0], [0.0, 0.0, 0.0]]), OutputKind.PROBABILITIES)
    np.testing.assert_allclose(p.sum(axis=1), [1.0, 1.0], rtol=1e-6, err_msg="rows must sum to 1")
    np.testing.assert_allclose(p[1], [1 / 3] * 3, rtol=1e-6, err_msg="an all-zero row becomes uniform")
    for kind in OutputKind:
        assert to_probabilities(np.zeros((2, 1 if kind is OutputKind.SIGMOID else 3)), kind).dtype == np.float32
