"""Export the models users bring: Keras 3 files and SavedModels in the tutorials' shapes.

Tiny Keras 3 models (32 px, a few filters) built as the TensorFlow tutorials build them,
saved as ``.keras``, ``.h5`` and ``model.export()`` SavedModels, exported through
``export_model``, which itself enforces float32 parity (< 1e-4) and the int8 collapse check
on every file. TensorFlow-heavy, so marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _export_helpers import LABELS, SIZE, make_images  # noqa: E402

from edgeclf.errors import ModelFileError  # noqa: E402

pytestmark = pytest.mark.slow

ALL_FILES = ["model_float32.tflite", "model_float16.tflite", "model_dynamic.tflite", "model_int8.tflite",
             "model_int8-full.tflite", "model_int16x8.tflite", "model_qat.tflite", "model_float32.onnx",
             "model_dynamic.onnx", "model_int8.onnx", "model_qat.onnx"]
BANNED_OP_WORDS = ("random", "dropout", "multinomial", "stateless")


def _ops(path: Path) -> list[str]:
    if path.suffix == ".tflite":
        from edgeclf.export.tflite import tflite_op_names

        return tflite_op_names(path.read_bytes())
    import onnx

    return [n.op_type for n in onnx.load(str(path)).graph.node]


def _no_training_ops(out: Path, names) -> None:
    for name in names:
        ops = _ops(out / name)
        assert not [op for op in ops if any(w in op.lower() for w in BANNED_OP_WORDS)], (name, ops)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("k3data")
    samples = make_images(root / "data", per_class=14)
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return root, samples


def _augmentation(k3):
    # as the tutorials write it: a Sequential without an Input, used inside the model
    return k3.Sequential([k3.layers.RandomFlip("horizontal"), k3.layers.RandomRotation(0.1),
                          k3.layers.RandomZoom(0.1)], name="data_augmentation")


def _fit(k3, model, samples, *, from_logits=True, epochs=3):
    from edgeclf.runtime.preprocess import load_batch

    x = load_batch([p for p, _ in samples], SIZE).astype(np.float32)
    y = np.array([i for _, i in samples])
    model.compile(k3.optimizers.Adam(3e-3), k3.losses.SparseCategoricalCrossentropy(from_logits=from_logits))
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0)
    return model


@pytest.fixture(scope="module")
def tutorial_cnn(k3, data):
    """The image-classification tutorial's model: augmentation, Rescaling, convs, Dropout, logits."""
    root, samples = data
    k3.utils.set_random_seed(0)
    model = k3.Sequential([
        k3.Input((SIZE, SIZE, 3)), _augmentation(k3), k3.layers.Rescaling(1 / 255.0),
        k3.layers.Conv2D(8, 3, padding="same", activation="relu"), k3.layers.MaxPooling2D(),
        k3.layers.Conv2D(8, 3, padding="same", activation="relu"), k3.layers.MaxPooling2D(),
        k3.layers.Dropout(0.2), k3.layers.Flatten(), k3.layers.Dense(16, activation="relu"),
        k3.layers.Dense(len(LABELS)),
    ], name="tutorial_cnn")
    _fit(k3, model, samples)
    model.save(root / "cnn.keras")
    model.save(root / "cnn.h5")
    model.export(str(root / "cnn_saved"))
    return model


def test_keras3_tutorial_cnn_exports_every_precision(tutorial_cnn, data):
    from edgeclf.export.exporter import export_model

    root, _ = data
    report = export_model(root / "cnn.keras", root / "out_cnn", labels=root / "labels.txt", data=root / "data",
                          qat_epochs=1)
    out = root / "out_cnn"
    assert sorted(f.file for f in report.files) == sorted(ALL_FILES)
    assert report.output_kind == "probabilities" and report.image_size == (SIZE, SIZE)  # logits + softmax head
    assert report.qat is not None and report.qat["annotated_layers"], report.qat
    for f in report.files:  # export_model already failed on parity >= 1e-4 or a collapsed int8 file
        if f.precision == "float32":
            assert f.max_abs_diff < 1e-4 and f.agreement == 1.0, f
    doc = json.loads((out / "export.json").read_text())
    assert doc["labels"] == list(LABELS)
    assert (out / "golden.npz").is_file()
    _no_training_ops(out, ALL_FILES)


def test_keras3_h5_and_a_disguised_keras_file(tutorial_cnn, data):
    """The .h5 of Keras 3 exports; a .keras zip renamed .h5 loads by its content."""
    from edgeclf.export.exporter import export_model
    from edgeclf.export.keras_load import SourceFormat, load_keras_model

    root, _ = data
    (root / "renamed.h5").write_bytes((root / "cnn.keras").read_bytes())
    assert load_keras_model(root / "renamed.h5").format is SourceFormat.KERAS3_ZIP
    r = export_model(root / "cnn.h5", root / "out_h5", labels=root / "labels.txt", data=root / "data",
                     precisions=["float32", "int8"])
    assert sorted(f.file for f in r.files) == ["model_float32.onnx", "model_float32.tflite",
                                               "model_int8.onnx", "model_int8.tflite"]


def test_savedmodel_that_augments_at_inference_is_refused_clearly(tutorial_cnn, data):
    """Keras 3's model.export() keeps a nested augmentation Sequential active in the serving
    graph (its predictions change from call to call): refused, with what to do."""
    from edgeclf.export.keras_load import load_keras_model

    root, _ = data
    with pytest.raises(ModelFileError, match="still draws random numbers.*export the .keras file instead"):
        load_keras_model(root / "cnn_saved")


def test_savedmodel_with_resizing_and_softmax(k3, data):
    """model.export() of a model with a Resizing layer that ends in softmax: probabilities,
    input size from the model, every file takes 0..255."""
    from edgeclf.export.exporter import export_model
    from edgeclf.export.keras_load import SourceFormat, load_keras_model

    root, samples = data
    k3.utils.set_random_seed(2)
    model = k3.Sequential([
        k3.Input((SIZE, SIZE, 3)), k3.layers.Resizing(24, 24), k3.layers.Rescaling(1 / 127.5, offset=-1),
        k3.layers.Conv2D(8, 3, activation="relu"), k3.layers.GlobalAveragePooling2D(),
        k3.layers.Dense(len(LABELS), activation="softmax"),
    ])
    _fit(k3, model, samples, from_logits=False)
    model.export(str(root / "soft_saved"))
    loaded = load_keras_model(root / "soft_saved")
    assert loaded.format is SourceFormat.SAVEDMODEL and loaded.output_kind.value == "probabilities"
    assert loaded.input_size == (SIZE, SIZE)
    report = export_model(root / "soft_saved", root / "out_soft", labels=root / "labels.txt", data=root / "data",
                          precisions=["float32", "dynamic", "int8", "int16x8"])
    assert report.output_kind == "probabilities" and len(report.files) == 7  # no int16x8 in ONNX
    import tensorflow as tf

    tf.saved_model.save(model, str(root / "tf_saved"))  # the other way to a plain SavedModel
    assert load_keras_model(root / "tf_saved").format is SourceFormat.SAVEDMODEL
    # a free-size input takes its size from the Resizing layer
    free = k3.Sequential([k3.Input((None, None, 3)), k3.layers.Resizing(20, 20), k3.layers.Rescaling(1 / 255.0),
                          k3.layers.Flatten(), k3.layers.Dense(3, activation="softmax")])
    free.save(root / "free.keras")
    assert load_keras_model(root / "free.keras").input_size == (20, 20)


def test_a_model_that_does_not_scale_its_input_needs_input_range(k3, data):
    from edgeclf.export.exporter import export_model
    from edgeclf.export.keras_load import load_keras_model

    root, _ = data
    k3.utils.set_random_seed(3)
    model = k3.Sequential([k3.Input((SIZE, SIZE, 3)), k3.layers.Conv2D(4, 3, activation="relu"),
                           k3.layers.GlobalAveragePooling2D(), k3.layers.Dense(len(LABELS))])
    model.save(root / "raw.keras")
    with pytest.raises(ModelFileError, match="cannot tell which pixel values.*--input-range"):
        load_keras_model(root / "raw.keras")
    loaded = load_keras_model(root / "raw.keras", input_range="0,1")
    x = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x), np.asarray(model(x / 255.0)), rtol=1e-5, atol=1e-6)
    r = export_model(root / "raw.keras", root / "out_raw", labels=root / "labels.txt", data=root / "data",
                     precisions=["float32"], input_range="0,1")
    assert r.files[0].max_abs_diff < 1e-4 and r.files[0].agreement == 1.0
    from click.testing import CliRunner

    from edgeclf.cli import main

    args = ["export", str(root / "raw.keras"), "--labels", str(root / "labels.txt"), "--data", str(root / "data"),
            "--format", "tflite", "--precision", "float32"]
    refused = CliRunner().invoke(main, args + ["--out", str(root / "cli_no")])
    assert refused.exit_code == 1 and "--input-range" in refused.output and not (root / "cli_no").exists()
    bad = CliRunner().invoke(main, args + ["--out", str(root / "cli_bad"), "--input-range", "0,100"])
    assert bad.exit_code == 2 and "unknown --input-range '0,100'" in bad.output, bad.output
    ok = CliRunner().invoke(main, args + ["--out", str(root / "cli_ok"), "--input-range", "0,1"])
    assert ok.exit_code == 0 and "as stated (--input-range)" in ok.output, ok.output


def test_one_binary_logit_as_the_transfer_tutorial_ends(k3, tmp_path):
    """Dense(1) trained with from_logits=True: refused by default (one unit could be anything);
    with --output-kind logits the files end in an added sigmoid, QAT included."""
    from edgeclf.export.exporter import export_model
    from edgeclf.export.keras_load import load_keras_model
    from edgeclf.export.qat import tf_keras_model

    make_images(tmp_path / "data", per_class=10, labels=("cat", "dog"))
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    k3.utils.set_random_seed(4)
    model = k3.Sequential([k3.Input((SIZE, SIZE, 3)), k3.layers.Rescaling(1 / 127.5, offset=-1),
                           k3.layers.Conv2D(4, 3, activation="relu"), k3.layers.GlobalAveragePooling2D(),
                           k3.layers.Dropout(0.2), k3.layers.Dense(1)])
    model.save(tmp_path / "binary.keras")
    with pytest.raises(ModelFileError, match="pass --output-kind logits and edgeclf adds the sigmoid"):
        load_keras_model(tmp_path / "binary.keras")
    loaded = load_keras_model(tmp_path / "binary.keras", output_kind="logits")
    assert loaded.output_kind.value == "sigmoid" and loaded.sigmoid_appended
    x = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3)).astype(np.float32)
    logit = np.asarray(model(x, training=False))
    np.testing.assert_allclose(loaded.predict(x), 1 / (1 + np.exp(-logit)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(tf_keras_model(loaded)(x)), loaded.predict(x), rtol=1e-4, atol=1e-5)
    r = export_model(tmp_path / "binary.keras", tmp_path / "out", labels=tmp_path / "labels.txt",
                     data=tmp_path / "data", precisions=["float32", "int8", "qat"], formats=["tflite"],
                     output_kind="logits", qat_epochs=1)
    assert (r.output_kind, r.source_output_kind) == ("probabilities", "logits") and r.files[0].max_abs_diff < 1e-4
    assert [f.file for f in r.files] == ["model_float32.tflite", "model_int8.tflite", "model_qat.tflite"]
    # The stated logit goes straight into the two-unit head, softmax([-z/2, z/2]), in QAT too.
    assert "binary_logits" in r.qat["annotated_layers"] and "probabilities" in r.qat["annotated_layers"], r.qat
