"""Every model shape in the phone's own clients: a one-sigmoid (binary) model and a one-channel
(grayscale) model, made with plain Keras 3 here, exported with the default precisions and run
through MediaPipe's ImageClassifier (the clients venv, see test_phone_clients), ONNX Runtime and
``edgeclf compare`` against their own Keras files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_phone_clients import mediapipe_classify  # noqa: E402

SIZE = 16
LABELS = ("dark", "light")

pytestmark = pytest.mark.slow


def _images(root: Path, per_class: int = 20) -> list[tuple[Path, int]]:
    """Dark and light tinted noise at the model's size (MediaPipe resizes its own way)."""
    from PIL import Image

    rng = np.random.default_rng(3)
    out = []
    for k, name in enumerate(LABELS):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            low, high = (0, 110) if k == 0 else (140, 256)
            img = rng.integers(low, high, (SIZE, SIZE, 3))
            img[..., rng.integers(0, 3)] //= 2  # a tint, so RGB and its luma differ
            path = root / name / f"{i:02d}.png"
            Image.fromarray(img.astype(np.uint8)).save(path)
            out.append((path, k))
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(root, samples): a class-folder dataset, a labels file, and the two Keras 3 models."""
    import keras
    from PIL import Image

    root = tmp_path_factory.mktemp("shapes")
    samples = _images(root / "data")
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    rgb = np.stack([np.asarray(Image.open(p).convert("RGB")) for p, _ in samples]).astype(np.float32)
    gray = np.stack([np.asarray(Image.open(p).convert("L")) for p, _ in samples]).astype(np.float32)[..., None]
    y = np.array([k for _, k in samples])
    keras.utils.set_random_seed(0)

    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    binary = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(x))
    binary.compile(keras.optimizers.Adam(0.05), "binary_crossentropy")
    binary.fit(rgb, y.astype(np.float32), epochs=2, batch_size=4, verbose=0)
    binary.save(root / "binary.keras")

    # MNIST-style: one channel, trained on Pillow's convert("L") / 255, no scaling inside.
    inp = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    mono = keras.Model(inp, keras.layers.Dense(2)(x))
    mono.compile(keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    mono.fit(gray / 255.0, y, epochs=2, batch_size=4, verbose=0)
    mono.save(root / "gray.keras")
    return root, samples


@pytest.fixture(scope="module")
def binary_export(made):
    from edgeclf.export.exporter import export_model

    root, _ = made
    report = export_model(root / "binary.keras", root / "binary_out", labels=root / "labels.txt", data=root / "data")
    return root / "binary_out", report


@pytest.fixture(scope="module")
def gray_export(made):
    from edgeclf.export.exporter import export_model

    root, _ = made
    report = export_model(root / "gray.keras", root / "gray_out", labels=root / "labels.txt", data=root / "data",
                          input_range="0,1")
    return root / "gray_out", report


def _agreement_with_mediapipe(out: Path, names, images) -> dict:
    """{file: (images where MediaPipe's top category is edgeclf predict's, MediaPipe's answers)}"""
    from edgeclf.runtime import load_classifier

    answers = mediapipe_classify([out / n for n in names], images)
    found = {}
    for name in names:
        got = answers[name]
        assert "error" not in got, f"{name}: MediaPipe refused it: {got.get('error')}"
        ours = load_classifier(out / name).predict([str(p) for p in images])
        same = sum(cats[0][1] == pred.label for cats, pred in zip(got["results"], ours))
        found[name] = (same, got)
    return found


def test_binary_files_give_both_labels_and_mediapipe_names_the_right_class(made, binary_export):
    from edgeclf.export.std_metadata import associated_files
    from edgeclf.export.tflite import tflite_op_names
    from edgeclf.runtime import load_classifier
    from edgeclf.runtime.verify import verify_golden

    root, samples = made
    out, report = binary_export
    assert (report.output_kind, report.source_output_kind) == ("probabilities", "sigmoid")
    assert report.not_exported == (), report.not_exported
    assert report.keras_accuracy is not None and report.keras_accuracy >= 0.9, "the model did not learn"
    for f in report.files:
        clf = load_classifier(out / f.file)
        assert clf._backend.num_outputs == 2, f"{f.file}: {clf._backend.num_outputs} outputs (QAT head twice?)"
        assert clf.labels == LABELS and clf.metadata.output_kind.value == "probabilities", f.file
        assert f.agreement >= 0.9, f"{f.file}: agreement {f.agreement}"
        assert verify_golden(out / f.file, out / "golden.npz").passed, f.file
        if f.format == "tflite":
            assert associated_files((out / f.file).read_bytes())["labels.txt"] == b"dark\nlight\n", f.file
            # softmax([-z/2, z/2]) on the logit: a softmax's fixed 0..1 output range once quantized
            assert "SOFTMAX" in tflite_op_names((out / f.file).read_bytes()), f.file
        if f.file in ("model_int8.tflite", "model_int8-full.tflite", "model_qat.tflite"):  # 0..1 in 1/256 steps, not capped where
            from ai_edge_litert.interpreter import Interpreter  # the calibration images stopped

            det = Interpreter(model_path=str(out / f.file)).get_output_details()[0]
            assert det["quantization"] == (1 / 256, 0), f"{f.file}: output quantization {det['quantization']}"
    images = [p for p, _ in samples[::2]][:20]
    truth = [k for _, k in samples[::2]][:20]
    found = _agreement_with_mediapipe(out, ["model_float32.tflite", "model_int8.tflite"], images)
    for name, (same, got) in found.items():
        assert same >= 19, f"{name}: MediaPipe's top-1 is edgeclf predict's on {same}/20 images"
        assert all(sorted(c[1] for c in cats) == sorted(LABELS) for cats in got["results"]), name
        right = sum(cats[0][1] == LABELS[k] for cats, k in zip(got["results"], truth))
        assert right >= 18, f"{name}: MediaPipe names the right class on {right}/20 images"
        dark = [cats for cats, k in zip(got["results"], truth) if k == 0]
        assert all(cats[0][1] == "dark" for cats in dark), f"{name}: a dark image shown as light: {dark}"
        scores = [sum(c[2] for c in cats) for cats in got["results"]]
        assert max(abs(s - 1) for s in scores) < 0.01, f"{name}: scores sum to {scores}"


def test_keep_sigmoid_keeps_the_one_unit(made, binary_export):
    from edgeclf.export.exporter import export_model
    from edgeclf.export.std_metadata import associated_files
    from edgeclf.runtime import load_classifier

    root, samples = made
    out = root / "kept"
    report = export_model(root / "binary.keras", out, labels=root / "labels.txt", data=root / "data",
                          formats=["tflite"], precisions=["float32"], keep_sigmoid=True)
    assert report.output_kind == "sigmoid"
    clf = load_classifier(out / "model_float32.tflite")
    assert clf._backend.num_outputs == 1 and clf.labels == LABELS
    assert associated_files((out / "model_float32.tflite").read_bytes())["labels.txt"] == b"light\n"
    two = load_classifier(binary_export[0] / "model_float32.tflite")
    x = np.stack([clf.preprocess(p) for p, _ in samples[:8]])
    np.testing.assert_allclose(clf.predict_proba(x), two.predict_proba(x), atol=1e-5,
                               err_msg="[1 - p, p] in the graph is not the runtime's [1 - p, p]")


def test_grayscale_model_exports_and_its_rgb_files_agree_in_mediapipe(made, gray_export):
    from PIL import Image

    from edgeclf.export.tf_graph import LUMA
    from edgeclf.runtime import load_classifier
    from edgeclf.runtime.layout import ExportDir
    from edgeclf.runtime.spec import SUPPORTED_PRECISIONS, Format

    root, samples = made
    out, report = gray_export
    assert report.not_exported == (), f"a default precision was left out: {report.not_exported}"
    assert report.input_range == "0,1"
    assert report.keras_accuracy is not None and report.keras_accuracy >= 0.9, "the model did not learn"
    names = [f.file for f in report.files if f.format == "tflite"]
    assert sorted(names) == sorted(ExportDir.model_name(Format.TFLITE, p) for p in SUPPORTED_PRECISIONS[Format.TFLITE])
    images = [p for p, _ in samples[1::2]][:20]
    for name, (same, _) in _agreement_with_mediapipe(out, names, images).items():
        assert same >= 19, f"{name}: MediaPipe's top-1 is edgeclf predict's on {same}/20 RGB images"
    # The file on RGB is the Keras model on Pillow's convert("L") up to Pillow's integer rounding.
    import keras

    model = keras.saving.load_model(root / "gray.keras")
    gray = np.stack([np.asarray(Image.open(p).convert("L")) for p in images]).astype(np.float32)[..., None] / 255
    logits = np.asarray(model(gray))
    want = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    got = load_classifier(out / "model_float32.tflite").predict_proba(
        np.stack([np.asarray(Image.open(p).convert("RGB")) for p in images]))
    assert np.abs(got - want).max() < 0.02, f"max difference {np.abs(got - want).max()}"
    assert LUMA == (0.299, 0.587, 0.114)


def test_compare_takes_an_export_made_with_input_range_against_its_own_keras_file(made, gray_export):
    from click.testing import CliRunner

    from edgeclf.cli import main

    root, _ = made
    out, _ = gray_export
    data = str(root / "data")
    # The export directory's export.json says what the Keras file expects.
    r = CliRunner().invoke(main, ["compare", str(out), "--data", data, "--reference", str(root / "gray.keras"),
                                  "--min-agreement", "0.9", "--json", "-"])
    assert r.exit_code == 0, r.output
    cmp = json.loads(r.stdout)
    assert cmp["reference"]["format"] == "keras" and cmp["reference"]["accuracy"] >= 0.9, cmp["reference"]
    # A lone file has no export.json beside it on the command line: the option says it.
    one = str(out / "model_int8.onnx")
    r = CliRunner().invoke(main, ["compare", one, "--data", data, "--reference", str(root / "gray.keras")])
    assert r.exit_code == 1 and "--input-range" in r.output, r.output
    r = CliRunner().invoke(main, ["compare", one, "--data", data, "--reference", str(root / "gray.keras"),
                                  "--input-range", "0,1", "--min-agreement", "0.9"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["compare", one, "--data", data, "--input-range", "0,1"])
    assert r.exit_code == 2 and "describe a Keras model given as --reference" in r.output, r.output
