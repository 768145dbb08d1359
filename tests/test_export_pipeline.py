"""The export pipeline with what users bring: plain Keras 3 models built here (a softmax head, an
adapted Normalization, one sigmoid unit, a nested MobileNetV2 transfer model), exported with the
default precisions; and sabotaged converters, whose files must never be delivered.

Every delivered file is measured again here, independently of the export's own check: with the
user's Keras model on the export's held-out images, through the engines' own Python APIs
(ai_edge_litert's Interpreter, onnxruntime's InferenceSession), not edgeclf's runtime.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from _export_helpers import LABELS, SIZE, make_images

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    samples = make_images(root / "data", per_class=30)
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return root, samples


def _pixels(samples):
    from edgeclf.runtime.preprocess import load_batch

    return load_batch([p for p, _ in samples], SIZE).astype(np.float32), np.array([i for _, i in samples])


def _engine_probs(path: Path, images: np.ndarray) -> np.ndarray:
    """The file's output on uint8 images through its engine's own API, as 0..1 probabilities
    of every label (a one-unit sigmoid file's p becomes [1 - p, p])."""
    x = images.astype(np.uint8)
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(path))
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        it.resize_tensor_input(inp["index"], (1, *x.shape[1:]))
        it.allocate_tensors()
        rows = []
        for img in x:
            feed = img[None].astype(inp["dtype"]) if inp["dtype"] != np.float32 else img[None].astype(np.float32)
            if inp["dtype"] == np.int8:
                feed = (img[None].astype(np.int32) - 128).astype(np.int8)
            it.set_tensor(inp["index"], feed)
            it.invoke()
            y = it.get_tensor(out["index"]).astype(np.float32)
            scale, zero = out["quantization"]
            if scale:
                y = (y - zero) * scale
            rows.append(y[0])
        y = np.stack(rows)
    else:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        y = sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]
    return np.concatenate([1 - y, y], axis=1) if y.shape[1] == 1 else y


def _keras_probs(model, x: np.ndarray) -> np.ndarray:
    y = np.asarray(model.predict(x, verbose=0), np.float32)
    if y.shape[1] == 1:
        return np.concatenate([1 - y, y], axis=1)
    return y if np.allclose(y.sum(1), 1, atol=1e-3) else np.exp(y) / np.exp(y).sum(1, keepdims=True)


def _export(tmp: Path, model_file: Path, root: Path, *extra: str):
    from edgeclf.cli import main

    out = tmp / (model_file.stem + "_out")
    res = CliRunner().invoke(main, ["export", str(model_file), "--labels", str(root / "labels.txt"), "--data",
                                    str(root / "data"), "--out", str(out), *extra])
    return res, out


def _check_delivered(model, out: Path, root: Path):
    """Every delivered file agrees >= 0.90 with the user's model, mean |Δp| <= 0.05."""
    report = json.loads((out / "export.json").read_text())
    from edgeclf.data.folders import scan_folder
    from edgeclf.data.splits import split_folder

    split = split_folder(scan_folder(root / "data"), val_split=0.2, test_split=0.0, seed=123)
    x, _ = _pixels(split.val)
    want = _keras_probs(model, x)
    assert len(x) == report["validation"]["size"], "the export checked on another image set"
    for f in report["files"]:
        got = _engine_probs(out / f["file"], x)
        agree = float((got.argmax(1) == want.argmax(1)).mean())
        mean = float(np.abs(got - want).max(1).mean())
        assert agree >= 0.90, f"{f['file']}: agreement {agree:.3f} with the user's model"
        assert mean <= 0.05, f"{f['file']}: mean |Δp| {mean:.3f} against the user's model"
    return report


def _build(k3, kind: str, x: np.ndarray):
    k3.utils.set_random_seed(3)
    layers = [k3.Input((SIZE, SIZE, 3))]
    if kind == "normalization":
        norm = k3.layers.Normalization()
        norm.adapt(x)
        layers.append(norm)
    else:
        layers.append(k3.layers.Rescaling(1 / 255.0))
    layers += [k3.layers.Conv2D(8, 3, activation="relu"), k3.layers.MaxPooling2D(), k3.layers.Flatten()]
    units, act = (1, "sigmoid") if kind == "sigmoid" else (3, "softmax")
    layers.append(k3.layers.Dense(units, activation=act))
    return k3.Sequential(layers)


@pytest.mark.parametrize("kind", ["softmax", "normalization", "sigmoid"])
def test_plain_keras3_models_export_with_every_default_file_proven(k3, data, tmp_path, kind):
    root, samples = data
    if kind == "sigmoid":  # two classes: red and green
        samples = [s for s in samples if s[1] < 2]
        root = tmp_path / "binary"
        (root / "data").mkdir(parents=True)
        for name in LABELS[:2]:
            (root / "data" / name).symlink_to(data[0] / "data" / name)
        (root / "labels.txt").write_text("\n".join(LABELS[:2]) + "\n")
    x, y = _pixels(samples)
    model = _build(k3, kind, x)
    loss = "binary_crossentropy" if kind == "sigmoid" else "sparse_categorical_crossentropy"
    model.compile(k3.optimizers.Adam(3e-3), loss)
    model.fit(x, y.astype(np.float32) if kind == "sigmoid" else y, epochs=8, batch_size=16, verbose=0)
    model.save(tmp_path / f"{kind}.keras")
    res, out = _export(tmp_path, tmp_path / f"{kind}.keras", root)
    assert res.exit_code == 0, res.output
    report = _check_delivered(model, out, root)
    names = {f["file"] for f in report["files"]}
    assert {"model_qat.tflite", "model_qat.onnx"} <= names, (
        f"the QAT files must be delivered: {report['not_exported']}")
    for f in report["files"]:
        assert f["check"]["passed"], f


def test_nested_mobilenet_transfer_model(k3, data, tmp_path):
    """The transfer-learning tutorial's shape: augmentation (a Sequential without an Input),
    Resizing, preprocess_input, a nested MobileNetV2 base, pooling, dropout, one Dense. Exits 0;
    what is delivered is proven and holds no training-only op; what is not has a reason."""
    from edgeclf.export.keras_load import load_keras_model
    from edgeclf.export.qat import flatten_model, tf_keras_model
    from edgeclf.export.tflite import tflite_op_names

    root, samples = data
    x, y = _pixels(samples)
    k3.utils.set_random_seed(5)
    augment = k3.Sequential([k3.layers.RandomFlip("horizontal"), k3.layers.RandomRotation(0.1),
                             k3.layers.RandomZoom(0.1)], name="data_augmentation")
    base = k3.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=0.35, include_top=False, weights=None)
    inp = k3.Input((SIZE, SIZE, 3))
    h = k3.layers.Resizing(SIZE, SIZE)(augment(inp))  # the tutorial resizes; the smallest size keeps the test quick
    h = k3.applications.mobilenet_v2.preprocess_input(h)
    h = base(h, training=False)
    h = k3.layers.GlobalAveragePooling2D()(h)
    h = k3.layers.Dropout(0.2)(h)
    model = k3.Model(inp, k3.layers.Dense(3)(h))
    model.compile(k3.optimizers.Adam(1e-3), k3.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    model.save(tmp_path / "transfer.keras")
    res, out = _export(tmp_path, tmp_path / "transfer.keras", root, "--qat-epochs", "0")
    assert res.exit_code == 0, res.output
    assert "internal error" not in res.output
    report = _check_delivered(model, out, root)
    assert {"model_float32.tflite", "model_float32.onnx"} <= {f["file"] for f in report["files"]}
    for x_ in report["not_exported"]:
        assert x_["reason"] and x_["stage"] in ("plan", "convert", "check"), x_
    banned = ("random", "dropout", "multinomial", "stateless")
    import onnx

    for f in report["files"]:
        path = out / f["file"]
        ops = tflite_op_names(path.read_bytes()) if path.suffix == ".tflite" else \
            [n.op_type for n in onnx.load(str(path)).graph.node]
        assert not [op for op in ops if any(w in op.lower() for w in banned)], (f["file"], ops)
    # QAT starts from a tf_keras rebuild: same outputs (it raises if not), augmentation left out
    rebuilt = tf_keras_model(load_keras_model(tmp_path / "transfer.keras"))
    assert type(rebuilt).__module__.startswith("tf_keras")
    kinds = {type(layer).__name__ for layer in flatten_model(rebuilt).layers}
    assert {"DepthwiseConv2D", "BatchNormalization", "TFOpLambda"} <= kinds and "RandomFlip" not in kinds, kinds


def _softmax_cnn(k3, samples, path: Path):
    """The softmax-head CNN, trained and saved to ``path``."""
    x, y = _pixels(samples)
    model = _build(k3, "softmax", x)
    model.compile(k3.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=8, batch_size=16, verbose=0)
    model.save(path)
    return model


def _sabotage(monkeypatch):
    """float16 TFLite converted from a model with shuffled weights; dynamic ONNX raising."""
    from edgeclf.export import converters
    from edgeclf.runtime.spec import Format, Precision

    real = converters.CONVERTERS[(Format.TFLITE, Precision.FLOAT16)]

    def wrong_weights(ctx, job):
        from dataclasses import replace

        model = ctx.model.keras_model
        saved = model.get_weights()
        rng = np.random.default_rng(0)
        model.set_weights([rng.permutation(w.ravel()).reshape(w.shape) for w in saved])
        try:
            ctx.model._cache.clear()
            return real.convert(replace(ctx, cache={}), job)
        finally:
            model.set_weights(saved)
            ctx.model._cache.clear()

    def raising(ctx, job):
        raise KeyError("a converter bug")

    monkeypatch.setitem(converters.CONVERTERS, (Format.TFLITE, Precision.FLOAT16), replace_fn(real, wrong_weights))
    monkeypatch.setitem(converters.CONVERTERS, (Format.ONNX, Precision.DYNAMIC),
                        replace_fn(converters.CONVERTERS[(Format.ONNX, Precision.DYNAMIC)], raising))


def replace_fn(conv, fn):
    from dataclasses import replace

    return replace(conv, convert=fn)


def test_sabotaged_converters_deliver_nothing(k3, data, tmp_path, monkeypatch):
    root, samples = data
    _softmax_cnn(k3, samples, tmp_path / "cnn.keras")
    _sabotage(monkeypatch)
    # The default list: both kept out and reported; the others delivered; exit 0.
    res, out = _export(tmp_path, tmp_path / "cnn.keras", root, "--precision", "float32", "--precision", "float16",
                       "--precision", "dynamic")
    assert res.exit_code == 1, res.output  # asked for by name: exit 1
    report = json.loads((out / "export.json").read_text())
    kept_out = {x["file"]: x for x in report["not_exported"]}
    assert set(kept_out) == {"model_float16.tflite", "model_dynamic.onnx"}, kept_out
    assert kept_out["model_float16.tflite"]["stage"] == "check"
    assert "agreement" in kept_out["model_float16.tflite"]["reason"] or "|Δp|" in kept_out["model_float16.tflite"]["reason"]
    assert kept_out["model_dynamic.onnx"]["stage"] == "convert"
    assert "KeyError" in kept_out["model_dynamic.onnx"]["reason"]
    assert not (out / "model_float16.tflite").exists() and not (out / "model_dynamic.onnx").exists()
    assert (out / "model_float32.tflite").exists() and (out / "model_dynamic.tflite").exists()
    assert "FAIL model_float16.tflite was not delivered" in res.output
    assert "Traceback" not in res.output
    # Not asked for by name: the same files are kept out, and the export exits 0.
    res2, out2 = _export(tmp_path / "again", tmp_path / "cnn.keras", root, "--format", "tflite", "--format", "onnx")
    assert res2.exit_code == 0, res2.output
    report2 = json.loads((out2 / "export.json").read_text())
    assert {"model_float16.tflite", "model_dynamic.onnx"} <= {x["file"] for x in report2["not_exported"]}
    assert "Not delivered:" in res2.output


def test_the_ort_file_is_the_delivered_onnx_file(k3, data, tmp_path):
    root, samples = data
    _softmax_cnn(k3, samples, tmp_path / "cnn.keras")
    res, out = _export(tmp_path, tmp_path / "cnn.keras", root, "--format", "onnx", "--format", "ort",
                       "--precision", "int8", "--min-agreement", "0.999")
    report = json.loads((out / "export.json").read_text())
    names = {f["file"]: f for f in report["files"]}
    assert set(names) == {"model_int8.onnx", "model_int8.ort"}, (res.output, report["not_exported"])
    x, _ = _pixels(samples[:16])
    onnx_probs = _engine_probs(out / "model_int8.onnx", x)
    ort_probs = _engine_probs(out / "model_int8.ort", x)
    np.testing.assert_allclose(ort_probs, onnx_probs, atol=1e-6, err_msg="the .ort file computes another model")
    assert names["model_int8.ort"]["budget"] is None  # the budget ran once, on the ONNX file
