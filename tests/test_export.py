"""Export end to end on a tiny model: every precision, metadata, checks, safe loading, QAT.

One tiny CNN is trained once per module and exported once at every precision; the tests
read that export. TensorFlow-heavy, so marked slow (still run by .ci/run).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _export_helpers import LABELS, SIZE, copy_run, fit, make_images, tiny_cnn, write_run_dir  # noqa: E402

from edgeclf._io import MARKER  # noqa: E402
from edgeclf.errors import ExportError, ModelFileError, UsageError  # noqa: E402
from edgeclf.runtime.metadata import file_sha256  # noqa: E402

pytestmark = pytest.mark.slow

ALL_FILES = ["model_float32.tflite", "model_float16.tflite", "model_dynamic.tflite", "model_int8.tflite",
             "model_int8-full.tflite", "model_int16x8.tflite", "model_qat.tflite", "model_float32.onnx",
             "model_dynamic.onnx", "model_int8.onnx", "model_qat.onnx"]
# Ops that would mean training-time behaviour leaked into a deployable file.
BANNED_OP_WORDS = ("random", "dropout", "multinomial", "stateless")


@pytest.fixture(scope="module")
def keras():
    from edgeclf._optional import import_keras

    return import_keras()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, keras):
    root = tmp_path_factory.mktemp("export")
    samples = make_images(root / "data")
    keras.utils.set_random_seed(0)
    model = fit(keras, tiny_cnn(keras), samples, epochs=4)
    return write_run_dir(root / "run", model, samples)


@pytest.fixture(scope="module")
def exported(run_dir):
    from edgeclf.export.exporter import export_model

    out = run_dir.parent / "out"
    report = export_model(run_dir, out)
    return out, report


def test_every_file_is_written_and_listed(exported):
    out, report = exported
    assert sorted(p.name for p in out.iterdir()) == sorted(ALL_FILES + [MARKER, "export.json", "golden.npz"])
    doc = json.loads((out / "export.json").read_text())
    assert [f["file"] for f in doc["files"]] == [f.file for f in report.files]
    assert sorted(f["file"] for f in doc["files"]) == sorted(ALL_FILES)
    for f in doc["files"]:
        path = out / f["file"]
        assert f["size_bytes"] == path.stat().st_size, f["file"]
        assert f["sha256"] == file_sha256(path), f["file"]
        assert 0.0 <= f["agreement"] <= 1.0 and 0.0 <= f["accuracy"] <= 1.0, f["file"]
    assert doc["labels"] == list(LABELS) and doc["image_size"] == [SIZE, SIZE]
    assert doc["source_sha256"] == file_sha256(Path(doc["source"]) / "model.keras")


def test_calibration_and_validation_are_recorded(exported):
    _, report = exported
    cal = report.calibration
    # 48 training images exist; the default asks for 200: all 48 are used and recorded.
    assert cal["size"] == 48 and cal["requested"] == 200 and cal["seed"] == 123
    assert "split.json" in cal["source"]
    assert report.validation["size"] == 12 and report.validation["labelled"]
    assert report.keras_accuracy is not None


def test_float_files_match_keras_and_quantized_ones_are_close(exported):
    _, report = exported
    for f in report.files:
        if f.precision == "float32":
            assert f.agreement == 1.0 and f.max_abs_diff < 1e-4, f
        else:
            assert f.agreement >= 0.75, f


def test_qat_is_reported_beside_ptq(exported):
    _, report = exported
    assert report.qat["epochs"] == 1 and report.qat["train_images"] == 48
    assert any(name.startswith("rescaling") for name in report.qat["float_layers"]), report.qat["float_layers"]
    assert report.file("model_qat.tflite").accuracy is not None
    assert report.file("model_int8.tflite").accuracy is not None


def test_metadata_round_trips_through_the_runtime(exported, run_dir):
    from edgeclf.runtime import load_classifier

    out, _ = exported
    sha = file_sha256(run_dir / "model.keras")
    for name in ALL_FILES:
        clf = load_classifier(out / name)
        m = clf.metadata
        assert m.labels == LABELS, name
        assert m.input_size == (SIZE, SIZE), name
        assert m.precision == name.split("_")[1].split(".")[0], name
        assert (m.layout, m.color_order, m.value_range, m.resize_method) == ("NHWC", "RGB", (0.0, 255.0), "bilinear")
        assert m.output_kind.value == "probabilities", name
        assert m.source_sha256 == sha, name
        assert m.edgeclf_version, name


def test_golden_holds_what_the_runtime_computes(exported):
    from edgeclf.runtime import load_classifier

    out, _ = exported
    g = np.load(out / "golden.npz")
    images = g["images"]
    assert images.dtype == np.uint8 and images.shape[1:] == (SIZE, SIZE, 3) and len(images) == 8
    for name in ALL_FILES:
        probs = load_classifier(out / name).predict_proba(images)
        np.testing.assert_allclose(probs, g[f"probs::{name}"], atol=1e-6, err_msg=name)
        assert float(g[f"atol::{name}"]) in (1e-4, 1e-2, 2e-2, 5e-2), name
        assert str(g[f"sha256::{name}"]) == file_sha256(out / name), f"{name}: verify matches by content"


def test_full_integer_tflite_takes_raw_pixels(exported):
    from edgeclf.export.tflite import tflite_input_quantization

    out, _ = exported
    for name in ("model_int8.tflite", "model_qat.tflite"):
        assert tflite_input_quantization((out / name).read_bytes()) == ("uint8", 1.0, 0), name


def test_onnx_files_have_the_edgeclf_signature(exported):
    import onnx

    out, _ = exported
    for name in [n for n in ALL_FILES if n.endswith(".onnx")]:
        proto = onnx.load(str(out / name))
        onnx.checker.check_model(proto)
        (inp,) = proto.graph.input
        assert inp.name == "image", name
        dims = inp.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [SIZE, SIZE, 3], name
        assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT, name
        assert [o.name for o in proto.graph.output] == ["probabilities"], name
        assert 13 <= max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) <= 21
    qat = onnx.load(str(out / "model_qat.onnx"))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in qat.graph.node}
    int8_weights = [i.name for i in qat.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2]
    assert len(int8_weights) == 3, "QAT weights (2 conv, 1 dense) should be stored as int8"
    ops = {n.op_type for n in onnx.load(str(out / "model_int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def _op_names(path: Path) -> list[str]:
    if path.suffix == ".tflite":
        from edgeclf.export.tflite import tflite_op_names

        return tflite_op_names(path.read_bytes())
    import onnx

    return sorted({n.op_type for n in onnx.load(str(path)).graph.node})


def test_no_augmentation_or_dropout_op_in_any_file(exported):
    out, _ = exported
    for name in ALL_FILES:
        ops = _op_names(out / name)
        assert ops, name
        bad = [op for op in ops if any(w in op.lower() for w in BANNED_OP_WORDS)]
        assert not bad, f"{name} has {bad}"


def test_size_of_full_integer_file(exported):
    # On a model this tiny the flatbuffer overhead dominates; the <=30% figure is measured on
    # real models in the report. Here: int8 is smaller than float32.
    _, report = exported
    assert report.file("model_int8.tflite").size_bytes < report.file("model_float32.tflite").size_bytes


def test_existing_out_is_refused_unless_overwrite(exported, run_dir):
    from edgeclf.export.exporter import export_model

    out, _ = exported
    before = (out / "export.json").read_text()
    with pytest.raises(UsageError, match="already exists"):
        export_model(run_dir, out, formats=["tflite"], precisions=["float32"])
    assert (out / "export.json").read_text() == before
    copy = run_dir.parent / "out_copy"
    shutil.copytree(out, copy)
    report = export_model(run_dir, copy, formats=["tflite"], precisions=["float32"], overwrite=True)
    assert sorted(p.name for p in copy.iterdir()) == sorted([MARKER, "export.json", "golden.npz",
                                                             "model_float32.tflite"])
    assert [f.file for f in report.files] == ["model_float32.tflite"]


@pytest.mark.parametrize("io,expect", [("int8", ("int8", 1.0, -128)), ("float32", ("float32", 0.0, 0))])
def test_io_type_of_full_integer_tflite(run_dir, tmp_path, io, expect):
    from edgeclf.export.exporter import export_model
    from edgeclf.export.tflite import tflite_input_quantization

    report = export_model(run_dir, tmp_path / "o", formats=["tflite"], precisions=["int8"], io=io)
    assert tflite_input_quantization((tmp_path / "o" / "model_int8.tflite").read_bytes()) == expect
    assert report.files[0].agreement >= 0.75


def test_a_float32_file_that_differs_is_not_delivered(run_dir, tmp_path, monkeypatch):
    from edgeclf.export import budget, exporter

    real = budget.predict_bytes
    monkeypatch.setattr(budget, "predict_bytes", lambda d, s, x: real(d, s, x) + np.float32(1e-3))
    report = exporter.export_model(run_dir, tmp_path / "o", formats=["onnx"], precisions=["float32"])
    assert [x.file for x in report.failed] == ["model_float32.onnx"]
    assert "max |Δp| 0.001 > 0.0001" in report.failed[0].reason, report.failed[0].reason
    assert report.failed[0].check["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)
    assert not (tmp_path / "o" / "model_float32.onnx").exists() and report.files == ()
    assert [p.name for p in tmp_path.iterdir()] == ["o"], "temporary folder left behind"


def test_quantization_collapse_is_caught(run_dir, tmp_path, monkeypatch):
    from edgeclf.export import budget, exporter

    real = budget.predict_bytes
    calls = []

    def collapsed(data, suffix, images):  # the float32 file first, then every int8 candidate
        calls.append(suffix)
        p = real(data, suffix, images)
        if len(calls) > 1:
            p = np.zeros_like(p)
            p[:, 0] = 1.0
        return p

    monkeypatch.setattr(budget, "predict_bytes", collapsed)
    report = exporter.export_model(run_dir, tmp_path / "o", formats=["tflite"], precisions=["float32", "int8"])
    assert [f.file for f in report.files] == ["model_float32.tflite"]
    assert [x.file for x in report.failed] == ["model_int8.tflite"]
    assert "collapsed: it predicts '0' for all 12" in report.failed[0].reason, report.failed[0].reason
    assert not (tmp_path / "o" / "model_int8.tflite").exists()


def test_user_keras_file_with_labels_via_cli(keras, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from edgeclf.cli import main

    monkeypatch.setenv("EDGECLF_CACHE_DIR", str(tmp_path / "cache"))
    samples = make_images(tmp_path / "data", per_class=12, labels=("cat", "dog"))
    keras.utils.set_random_seed(1)
    model = fit(keras, tiny_cnn(keras, 2, head="sigmoid", augment=True), samples, head="sigmoid", epochs=3)
    model.save(tmp_path / "user.keras")
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    runner = CliRunner()
    no_labels = runner.invoke(main, ["export", str(tmp_path / "user.keras"), "--out", str(tmp_path / "x")])
    assert no_labels.exit_code == 2 and "--labels FILE is required" in no_labels.output
    res = runner.invoke(main, ["export", str(tmp_path / "user.keras"), "--labels", str(tmp_path / "labels.txt"),
                               "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                               "--precision", "float32", "--precision", "int8"])
    assert res.exit_code == 0, res.output
    assert "model_int8.tflite" in res.output and "agreement" in res.output
    doc = json.loads((tmp_path / "out" / "export.json").read_text())
    assert sorted(f["file"] for f in doc["files"]) == ["model_float32.onnx", "model_float32.tflite",
                                                         "model_int8.onnx", "model_int8.tflite"]
    # One sigmoid unit in, [1 - p, p] out: apps show both labels (--keep-sigmoid keeps the unit).
    assert (doc["output_kind"], doc["source_output_kind"], doc["labels"]) == ("probabilities", "sigmoid", ["cat", "dog"])
    for name in ("model_float32.tflite", "model_int8.tflite"):  # the head: softmax([-z/2, z/2]) on the logit
        assert "SOFTMAX" in _op_names(tmp_path / "out" / name) and "LOGISTIC" not in _op_names(tmp_path / "out" / name)
    for f in doc["files"]:
        ops = _op_names(tmp_path / "out" / f["file"])
        assert not [op for op in ops if any(w in op.lower() for w in BANNED_OP_WORDS)], (f["file"], ops)


def test_h5_and_savedmodel_sources(keras, run_dir, tmp_path):
    from edgeclf.export.exporter import export_model

    model = keras.models.load_model(run_dir / "model.keras")
    model.save(tmp_path / "m.h5")
    model.save(tmp_path / "saved", save_format="tf")
    (tmp_path / "labels.txt").write_text("\n".join(LABELS))
    for src in (tmp_path / "m.h5", tmp_path / "saved"):
        r = export_model(src, tmp_path / f"o_{src.name}", formats=["tflite"], precisions=["float32"],
                         labels=tmp_path / "labels.txt")
        assert r.files[0].agreement == 1.0, src
        assert "random images" in r.validation["source"]


def test_lambda_layer_is_refused_by_safe_mode(keras, tmp_path):
    from edgeclf.export.source import load_source

    inp = keras.Input((SIZE, SIZE, 3))
    out = keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Lambda(lambda t: t / 255.0)(inp)))
    model = keras.Model(inp, out)
    model.save(tmp_path / "lam.keras")
    # safe mode in Keras guards only .keras; .h5 and SavedModel would run the stored bytecode
    model.save(tmp_path / "lam.h5")
    model.save(tmp_path / "lam_saved", save_format="tf")
    (tmp_path / "labels.txt").write_text("a\nb\n")
    for name in ("lam.keras", "lam.h5", "lam_saved"):
        with pytest.raises(ModelFileError, match="Lambda layer.*safe mode"):
            load_source(tmp_path / name, labels_file=tmp_path / "labels.txt")


def test_labels_that_do_not_fit_the_model(run_dir, tmp_path):
    from edgeclf.export.source import load_source

    (tmp_path / "labels.txt").write_text("a\nb\n")
    with pytest.raises(UsageError, match="2 labels but the model has 3 outputs"):
        load_source(run_dir, labels_file=tmp_path / "labels.txt")


def test_qat_names_a_layer_it_cannot_handle(keras):
    from edgeclf.export.qat import build_qat_model

    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 255.0)(inp))
    x = keras.layers.LayerNormalization(name="odd_norm")(x)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    with pytest.raises(UsageError, match="QAT cannot handle layer 'odd_norm' \\(LayerNormalization\\)"):
        build_qat_model(keras.Model(inp, out))


def test_qat_on_a_nested_mobilenetv2(keras, tmp_path):
    """A transfer model (MobileNetV2 nested inside, Rescaling in front) quantizes and converts."""
    from edgeclf.export.qat import build_qat_model
    from edgeclf.export.tflite import convert_tflite, tflite_input_quantization
    from edgeclf.runtime import load_classifier

    base = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), include_top=False, weights=None, alpha=0.35)
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3)(keras.layers.Dropout(0.2)(x))
    model = keras.Model(inp, out)
    qmodel, annotated, left = build_qat_model(model)
    assert len(annotated) > 100, annotated
    assert any(name.startswith("rescaling") for name in left) and any(name.startswith("dropout") for name in left)
    images = np.random.default_rng(0).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
    data = convert_tflite(qmodel, "qat", calibration=images)
    assert tflite_input_quantization(data) == ("uint8", 1.0, 0)
    from edgeclf.export.metadata import embed_tflite_metadata
    from edgeclf.runtime.spec import ModelSpec

    (tmp_path / "m.tflite").write_bytes(embed_tflite_metadata(data, ModelSpec(LABELS, (SIZE, SIZE))))
    probs = load_classifier(tmp_path / "m.tflite").predict_proba(images)
    assert probs.shape == (6, 3) and np.allclose(probs.sum(1), 1, atol=1e-3)


def test_qat_checkpoint_reloads_from_h5(keras, run_dir, tmp_path):
    from edgeclf.export.qat import build_qat_model, load_qat_checkpoint, save_qat_checkpoint

    qmodel, _, _ = build_qat_model(keras.models.load_model(run_dir / "model.keras"))
    images = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3)).astype(np.float32)
    save_qat_checkpoint(qmodel, tmp_path / "qat.h5")
    reloaded = load_qat_checkpoint(tmp_path / "qat.h5")
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), qmodel.predict(images, verbose=0), atol=1e-5)


# The export, stopped inside its second conversion until the test has sent its signal: the
# test synchronises on the line printed there, never on the clock (a fast machine finished
# the whole export between the progress line and the signal).
_PAUSED_EXPORT = """
import sys
from dataclasses import replace
from edgeclf.export import converters
calls = []
def pausing(real):
    def convert(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            print("test: paused in the second conversion", file=sys.stderr, flush=True)
            sys.stdin.read()  # the test never writes: blocks until the signal
        return real(*args, **kwargs)
    return convert
for key, conv in list(converters.CONVERTERS.items()):
    converters.CONVERTERS[key] = replace(conv, convert=pausing(conv.convert))
from edgeclf.cli import main
main(sys.argv[1:], prog_name="edgeclf")
"""


def _start_paused_export(args, env):
    return subprocess.Popen([sys.executable, "-c", _PAUSED_EXPORT, *args], stdin=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True)


def _wait_for(proc, needle, timeout=120):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if needle in line:
            return
    proc.kill()
    raise AssertionError(f"never saw {needle!r}; stderr: {''.join(seen)[-2000:]}")


def test_interrupted_export_leaves_no_half_written_model(run_dir, exported, tmp_path):
    """Kill an export part-way. Ctrl-C on a new DIR: no DIR and no temp folder. A hard kill
    while replacing an old DIR (--overwrite): the old DIR is intact, only hidden temp left."""
    out, _ = exported
    old = tmp_path / "old"
    shutil.copytree(out, old)
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    for target, sig, extra in ((tmp_path / "new", signal.SIGINT, []), (old, signal.SIGKILL, ["--overwrite"])):
        proc = _start_paused_export(["export", str(run_dir), "--out", str(target), "--format", "tflite",
                                     "--precision", "float32", "--precision", "int8", "--precision", "int16x8",
                                     *extra], dict(os.environ))
        _wait_for(proc, "test: paused in the second conversion")
        proc.send_signal(sig)
        proc.wait(timeout=60)
        proc.stdin.close()
        assert proc.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL), target
        if sig == signal.SIGINT:
            assert not target.exists()
            assert [p.name for p in tmp_path.iterdir()] == ["old"], "Ctrl-C left a temporary folder"
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "old"]
    assert all(name.startswith(".") for name in leftovers), leftovers


def test_calibration_folder_for_a_model_without_data(run_dir, tmp_path):
    from PIL import Image

    from edgeclf.export.exporter import export_model

    loose = tmp_path / "cal"
    loose.mkdir()
    split = json.loads((run_dir / "split.json").read_text())
    for i, (p, _) in enumerate(split["train"][:10]):
        Image.open(p).save(loose / f"{i}.png")
    (tmp_path / "labels.txt").write_text("\n".join(LABELS))
    report = export_model(run_dir / "model.keras", tmp_path / "o", formats=["tflite"], precisions=["int8"],
                          labels=tmp_path / "labels.txt", calibration=loose, calibration_size=50)
    assert report.calibration["size"] == 10 and report.calibration["source"] == str(loose.resolve())
    assert report.validation["source"].startswith("calibration images") and not report.validation["labelled"]
    assert report.files[0].accuracy is None and report.keras_accuracy is None


def _real(items) -> set:
    return {os.path.realpath(p) for p, _ in items}


def test_calibration_folder_never_holds_validation_or_test_images(run_dir, tmp_path, monkeypatch):
    """--calibration DATA given relative, as ./DATA or through a symlink still leaves out the
    run's validation and test images (split.json holds them as absolute real paths)."""
    from edgeclf.export.source import load_source

    split = copy_run(run_dir, tmp_path / "run", test_split=0.2)
    data = Path(split["root"])
    held = _real(split["val"]) | _real(split["test"])
    assert split["test"] and split["val"]
    (tmp_path / "link").symlink_to(data, target_is_directory=True)
    monkeypatch.chdir(data.parent)
    for given in (data.name, f"./{data.name}", str(tmp_path / "link")):
        src = load_source(tmp_path / "run", calibration=given)
        assert src.calibration and not (_real(src.calibration) & held), given
        assert len(src.calibration) == len(split["train"]), given


def test_data_is_split_as_the_run_was_with_the_runs_seed(run_dir, tmp_path, monkeypatch):
    """export --data on the run's own data reproduces the run's split (seed from config.json),
    so no training image ends up validating the export."""
    from edgeclf.errors import DataError
    from edgeclf.export.source import load_source

    monkeypatch.setenv("EDGECLF_CACHE_DIR", str(tmp_path / "cache"))
    split = copy_run(run_dir, tmp_path / "run", seed=7)
    data = Path(split["root"])
    monkeypatch.chdir(data.parent)
    src = load_source(tmp_path / "run", data=data.name)
    assert sorted(src.val) == sorted(tuple(x) for x in split["val"])
    assert sorted(src.train) == sorted(tuple(x) for x in split["train"])
    assert src.seed == 7
    # --seed reseeds the calibration sample, never the run's split.
    again = load_source(tmp_path / "run", data=data.name, seed=8)
    assert again.seed == 8 and sorted(again.val) == sorted(src.val)
    # A folder whose classes are not the model's labels is refused by name.
    other = tmp_path / "other"
    make_images(other, per_class=2, labels=("red", "purple"))
    with pytest.raises(DataError, match="purple is not among the model's labels"):
        load_source(tmp_path / "run", data=other)


def test_one_logit_binary_model_is_refused_clearly(keras, tmp_path):
    from edgeclf.export.source import load_source

    inp = keras.Input((SIZE, SIZE, 3))
    keras.Model(inp, keras.layers.Dense(1)(keras.layers.Flatten()(inp))).save(tmp_path / "logit.keras")
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    with pytest.raises(ModelFileError, match=r"ends in one unit without a sigmoid; edgeclf needs a binary model "
                                             r"to end in Dense\(1, activation='sigmoid'\) \(or N logits\)"):
        load_source(tmp_path / "logit.keras", labels_file=tmp_path / "labels.txt")


def test_unreadable_validation_images_are_named_not_called_no_data(run_dir, tmp_path):
    from edgeclf.export.exporter import export_model

    split = copy_run(run_dir, tmp_path / "run")
    bad = tmp_path / "bad"
    bad.mkdir()
    for i, (p, y) in enumerate(split["val"]):
        (bad / f"{i}.png").write_bytes(b"not a png")
    split["val"] = [[str(bad / f"{i}.png"), y] for i, (_, y) in enumerate(split["val"])]
    (tmp_path / "run" / "split.json").write_text(json.dumps(split))
    report = export_model(tmp_path / "run", tmp_path / "o", formats=["tflite"], precisions=["float32"])
    assert f"none of the {len(split['val'])} validation images could be read" in report.validation["source"]
    assert "no data given" not in report.validation["source"]


def test_each_image_is_decoded_once_per_export(run_dir, tmp_path, monkeypatch):
    from edgeclf.export import calibration
    from edgeclf.export.exporter import export_model

    seen: list = []
    real = calibration.load_image

    def counting(path, *a, **kw):
        seen.append(os.path.realpath(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(calibration, "load_image", counting)
    report = export_model(run_dir, tmp_path / "o", formats=["tflite"], precisions=["int8", "qat"], qat_epochs=0)
    assert report.calibration["size"] == 48 and report.qat["train_images"] == 48
    assert len(seen) == 60 and len(set(seen)) == 60, "an image was decoded twice"


def test_qat_ranges_start_from_the_float_activations_not_tfmot_defaults(keras):
    """tfmot starts every activation range at [-6, 6]; logits beyond that would clip to ties
    (0.50/0.50 on confident images) after a short fine-tune. The ranges must cover what the
    float model produces before QAT starts."""
    from edgeclf.export.qat import init_activation_ranges, train_qat
    from edgeclf.runtime.spec import OutputKind

    keras.utils.set_random_seed(1)
    model = tiny_cnn(keras)
    head = model.layers[-1]
    w, b = head.get_weights()
    head.set_weights([w * 400.0, b])  # logits far outside [-6, 6]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (48, SIZE, SIZE, 3), dtype=np.uint8)
    logits = model.predict(x.astype(np.float32), verbose=0)
    assert logits.max() > 12 or logits.min() < -12, "test model's logits are not large enough to test clipping"

    result = train_qat(model, x, rng.integers(0, 3, 48), output_kind=OutputKind.LOGITS, epochs=0)
    ranges = {v.name.split("/")[-1].split(":")[0]: float(v.numpy())
              for v in result.model.get_layer(f"quant_{head.name}").weights
              if v.name.endswith(("post_activation_min:0", "post_activation_max:0"))}
    assert ranges, "no activation range variables found on the logits layer"
    assert ranges["post_activation_max"] >= logits.max() - 1e-3, f"max {ranges} vs logits {logits.max()}"
    assert ranges["post_activation_min"] <= logits.min() + 1e-3, f"min {ranges} vs logits {logits.min()}"
    q_logits = result.model.predict(x.astype(np.float32), verbose=0)
    assert np.abs(q_logits - logits).max() < 0.05 * np.abs(logits).max(), "fake-quant logits clipped"
    assert init_activation_ranges(result.model, model, x[:0]) == {}
