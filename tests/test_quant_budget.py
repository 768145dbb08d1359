"""The int8 accuracy budget (export --min-agreement / --max-accuracy-drop) and the per-layer
quantization error it ranks layers by, for TFLite and ONNX, on tiny models.

The tiny CNN is trained briefly, then its second convolution gets one huge weight per output
channel on an input channel that is always zero: the float model does not change, but int8's
per-channel weight scale grows 60x, so that layer's other weights round to a few levels and
full int8 flips predictions. A second model ties two logits once its uint8 output is quantized: no choice of float
layers can fix that, so its budget fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _export_helpers import fit, make_images, tiny_cnn, write_run_dir  # noqa: E402

from edgeclf.errors import UsageError  # noqa: E402

pytestmark = pytest.mark.slow

SABOTAGED = "conv2d_1"


@pytest.fixture(scope="module")
def keras():
    from edgeclf._optional import import_keras

    return import_keras()


# Factors at which full int8 flips some of the 12 validation images of this tiny model without
# collapsing it, per format (ONNX int8 stores 7-bit weights, so its window differs). Both
# engines' int8 arithmetic is exact integer maths, the same on every CPU.
FACTOR = {"tflite": 60.0, "onnx": 80.0}


def _sabotage(model, factor: float):
    c1, c2 = model.get_layer("conv2d"), model.get_layer(SABOTAGED)
    k, b = c1.get_weights()
    k[..., 0], b[0] = 0.0, -1.0  # channel 0 is always 0 after the ReLU
    c1.set_weights([k, b])
    k, b = c2.get_weights()
    k[0, 0, 0, :] = factor * np.abs(k).max()  # multiplies that dead channel: float output unchanged
    c2.set_weights([k, b])
    return model


@pytest.fixture(scope="module")
def trained(tmp_path_factory, keras):
    root = tmp_path_factory.mktemp("budget")
    samples = make_images(root / "data")
    keras.backend.clear_session()  # layer names from 'conv2d' on, whatever ran before in this process
    keras.utils.set_random_seed(0)
    return root, samples, fit(keras, tiny_cnn(keras), samples, epochs=3)


def _sabotaged_run(trained, keras, fmt):
    root, samples, model = trained
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return write_run_dir(root / f"run_{fmt}", _sabotage(clone, FACTOR[fmt]), samples)


@pytest.fixture(scope="module")
def runs(trained, keras):
    return {fmt: _sabotaged_run(trained, keras, fmt) for fmt in FACTOR}


@pytest.fixture(scope="module")
def run_dir(runs):
    return runs["tflite"]


@pytest.fixture(scope="module")
def tied_run(trained, keras):
    """Mean colour -> logits: blue is 400 * (B - 0.45), so the uint8 output step is ~0.9, while
    red and green differ by only 0.2 * (R - G), about 0.1: after output quantization they
    tie on every red and green image, and green images flip to red in any int8 file."""
    root, samples, _ = trained
    inp = keras.Input((32, 32, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3)(x)
    model = keras.Model(inp, out)
    k = np.array([[0.2, -0.2, 0.0], [-0.2, 0.2, 0.0], [0.0, 0.0, 400.0]], np.float32)
    model.layers[-1].set_weights([k, np.array([0.0, 0.0, -180.0], np.float32)])
    return write_run_dir(root / "tied", model, samples)


@pytest.fixture(scope="module")
def unbudgeted(runs):
    """{format: the int8 file of that format's sabotaged run, exported without a budget}"""
    from edgeclf.export.exporter import export_model

    return {fmt: export_model(run, run.parent / f"plain_{fmt}", precisions=["int8"], formats=[fmt]).files[0]
            for fmt, run in runs.items()}


def _full_int8_agreement(f) -> float:
    """The full-int8 file's agreement: the file's own, or, when the check's default gate sent it
    to the budget policy, the figure the budget recorded for it before keeping layers float."""
    return f.budget["full_int8"]["agreement"] if f.budget is not None else f.agreement


def _export(run_dir, name, **kw):
    from edgeclf.export.exporter import export_model

    out = run_dir.parent / name
    return out, export_model(run_dir, out, precisions=["int8"], **kw)


def _calibration(run_dir, n=24):
    from edgeclf.export.calibration import load_images

    split = json.loads((run_dir / "split.json").read_text())
    return load_images([tuple(s) for s in split["train"][:n]], (32, 32)).images


def test_full_int8_misses_on_the_sabotaged_model(unbudgeted):
    from edgeclf.runtime.spec import DEFAULT_GATES, Precision

    gate = DEFAULT_GATES[Precision.INT8].min_agreement
    for f in unbudgeted.values():
        full = _full_int8_agreement(f)
        assert full < 1.0, f"{f.file}: the test model must flip some images in full int8"
        if full < gate:  # below the default gate: delivered only after the budget kept layers float
            assert f.budget["met"] and f.budget["float_layers"] and f.agreement >= gate, f.budget
        else:
            assert f.budget is None


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_layer_table_names_the_models_layers(runs, keras, fmt):
    from edgeclf.export.budget import OnnxSelective, TFLiteSelective
    from edgeclf.export.layer_names import keras_layer_names
    from edgeclf.export.onnx_export import convert_onnx
    from edgeclf.export.source import load_keras_model

    run_dir = runs[fmt]
    model = load_keras_model(run_dir / "model.keras")
    cal = _calibration(run_dir)
    names, containers = keras_layer_names(model)
    if fmt == "tflite":
        sel = TFLiteSelective(model, cal)
    else:
        sel = OnnxSelective(convert_onnx(model, output_kind="logits").SerializeToString(), cal,
                            layer_names=names, containers=containers)
    table = sel.layer_errors()
    got = [x.layer for x in table.layers]
    assert got, "no layers ranked"
    assert set(got) <= set(names), f"{fmt}: layers not in the model: {sorted(set(got) - set(names))}"
    assert {"conv2d", SABOTAGED, "dense"} <= set(got), f"{fmt}: ranked {got}"
    assert got[0] == SABOTAGED, f"{fmt}: the sabotaged layer must rank first, got {got}"
    errors = [x.error for x in table.layers]
    assert errors == sorted(errors, reverse=True), "not ranked most harmful first"
    assert all(x.nodes for x in table.layers if x.layer == SABOTAGED)
    assert SABOTAGED in table.table() and table.metric in table.table()
    json.dumps(table.to_dict())  # serialisable for --json


def extra_reasons_ok(extra: dict, why) -> bool:
    """The file's spec gives each float layer the reason export.json gives it."""
    return extra.get("float_layer_reasons") == {w["layer"]: w["reason"] for w in why}


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_a_budget_full_int8_meets_changes_nothing(runs, unbudgeted, fmt):
    from edgeclf.runtime import load_classifier

    out, report = _export(runs[fmt], f"loose_{fmt}", formats=[fmt], min_agreement=0.1)
    for f in report.files:
        b = f.budget
        assert b is not None and b["met"], f.file
        # (a TFLite int8 file may keep layers float for speed on some CPU: those are not the budget's)
        assert [w for w in b["why"] if w["reason"] != "speed"] == [] and len(b["tried"]) == 1, f"{f.file}: {b}"
        assert b["final"] == b["full_int8"], f.file
        assert "no layer kept float" in b["message"]
        # (not the bytes: tensor names carry per-process Keras name counters in both converters)
        assert f.agreement == _full_int8_agreement(unbudgeted[fmt]), f.file
        extra = load_classifier(out / f.file).metadata.extra
        assert "accuracy" not in extra.get("float_layer_reasons", {}).values(), f.file


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_a_budget_that_needs_float_layers(runs, unbudgeted, fmt):
    from edgeclf.runtime import load_classifier

    name = f"model_int8.{fmt}"
    out, report = _export(runs[fmt], f"strict_{fmt}", formats=[fmt], min_agreement=1.0)
    f = report.file(name)
    b = f.budget
    assert b["met"], b["message"]
    assert SABOTAGED in b["float_layers"], b["float_layers"]
    assert b["final"]["flips"] < b["full_int8"]["flips"], b
    assert f.agreement == 1.0 and b["full_int8"]["agreement"] == _full_int8_agreement(unbudgeted[fmt])
    assert [w["layer"] for w in b["why"]] == b["float_layers"]
    assert all(w["rank"] >= 1 for w in b["why"] if w["reason"] == "accuracy")
    assert extra_reasons_ok(load_classifier(out / name).metadata.extra, b["why"])
    assert "kept" in b["message"] and SABOTAGED in b["message"]
    assert f"int8 ({len(b['float_layers'])} layers float)" in report.table()
    doc = json.loads((out / "export.json").read_text())
    assert doc["files"][0]["budget"]["float_layers"] == b["float_layers"]
    clf = load_classifier(out / name)  # the mixed file carries its spec and the float layers
    assert clf.metadata.extra["float_layers"] == b["float_layers"]
    assert clf.metadata.precision == "int8"


def test_a_budget_that_cannot_be_met_says_so_and_fails_only_when_asked(tied_run):
    from click.testing import CliRunner

    from edgeclf.cli import main

    out = tied_run.parent / "tied_out"
    # --keep-logits: the tie is in the quantized logits output (a softmax head would hide it)
    args = ["export", str(tied_run), "--out", str(out), "--format", "tflite", "--keep-logits"]
    # Not asked for by name: the int8 file misses the default gate even with every layer float,
    # so it is kept out and said so, and the export (float32 and the rest) exits 0.
    plain = CliRunner().invoke(main, args + ["--precision", "float32", "--precision", "dynamic"])
    assert plain.exit_code == 0, plain.output
    default = CliRunner().invoke(main, args + ["--overwrite"])
    assert default.exit_code == 0, default.output
    doc = json.loads((out / "export.json").read_text())
    kept_out = {x["file"]: x for x in doc["not_exported"]}
    assert "model_int8.tflite" in kept_out and not (out / "model_int8.tflite").exists()

    res = CliRunner().invoke(main, args + ["--overwrite", "--precision", "int8", "--min-agreement", "1.0"])
    assert res.exit_code == 1, res.output
    assert "cannot be met" in res.output and "--io float32" in res.output, res.output
    assert "FAIL model_int8.tflite was not delivered" in res.output
    assert "Traceback" not in res.output
    doc = json.loads((out / "export.json").read_text())
    assert doc["files"] == [] and not (out / "model_int8.tflite").exists(), "a file that misses its gate is kept out"
    b = doc["not_exported"][0]["budget"]
    assert not b["met"]
    assert b["tried"][-1]["float_layers"] == b["layers_ranked"], "every layer float must have been tried"
    assert b["final"]["agreement"] == max(t["agreement"] for t in b["tried"])


def test_budget_options_that_make_no_sense(run_dir, tmp_path):
    from edgeclf.export.exporter import export_model

    with pytest.raises(UsageError, match="fraction"):
        export_model(run_dir, tmp_path / "a", precisions=["int8"], min_agreement=99)
    with pytest.raises(UsageError, match=">= 0"):
        export_model(run_dir, tmp_path / "b", precisions=["int8"], max_accuracy_drop=-1)
    with pytest.raises(UsageError, match="quantized files"):
        export_model(run_dir, tmp_path / "c", precisions=["float32"], min_agreement=0.9)
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_explain_quant_command_ranks_layers_with_a_report(run_dir, tmp_path):
    from click.testing import CliRunner

    from edgeclf.cli import main

    report, js = tmp_path / "report", tmp_path / "quant.json"
    res = CliRunner().invoke(main, ["explain-quant", str(run_dir), "--top", "5", "--report", str(report),
                                    "--json", str(js)])
    assert res.exit_code == 0, res.output
    assert "rmse/scale" in res.output and "added noise" in res.output and SABOTAGED in res.output
    doc = json.loads(js.read_text())
    assert [f["format"] for f in doc["formats"]] == ["tflite", "onnx"]
    for f in doc["formats"]:
        assert f["layers"][0]["layer"] == SABOTAGED, f["format"]
    # this run is sabotaged at TFLite's factor: its full int8 file flips images (FACTOR)
    assert doc["formats"][0]["agreement"] < 1.0
    md = (report / "quant_report.md").read_text()
    assert "quant_layers.png" in md and SABOTAGED in md
    assert (report / "quant_layers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_explain_quant_refuses_a_bad_top(run_dir):
    from click.testing import CliRunner

    from edgeclf.cli import main

    res = CliRunner().invoke(main, ["explain-quant", str(run_dir), "--top", "0"])
    assert res.exit_code == 2 and "--top must be at least 1" in res.output, res.output


def test_explain_quant_sensitivity_ranks_by_the_output(run_dir, tmp_path):
    from edgeclf.evaluate.quant_debug import explain_quantization

    expl = explain_quantization(run_dir, formats=["tflite"], sensitivity=True)
    (f,) = expl.formats
    assert f.layers.metric == "sensitivity"
    assert f.layers.layers[0].layer == SABOTAGED, [x.layer for x in f.layers.layers]
    assert all("rmse/scale" in x.stats for x in f.layers.layers), "the engine's own figure must be kept"
    assert f.layers.layers[0].error > 10 * f.layers.layers[-1].error


def test_an_accuracy_budget_needs_labelled_validation_images(run_dir, tmp_path):
    from edgeclf.export.exporter import export_model

    data_root = Path(json.loads((run_dir / "split.json").read_text())["root"])
    out = tmp_path / "unlabelled"
    # A model file with --calibration only: validation falls back to unlabelled calibration images.
    with pytest.raises(UsageError, match="--max-accuracy-drop needs labelled validation images"):
        export_model(run_dir / "model.keras", out, labels=run_dir / "labels.txt", calibration=data_root,
                     precisions=["int8"], max_accuracy_drop=1.0)
    assert not out.exists()


def test_engine_names_map_to_keras_layers():
    from edgeclf.export.layer_names import match_layer

    names = ["expanded_conv_1/depthwise", "expanded_conv_1/depthwise/BatchNorm", "conv2d", "conv2d_1",
             "MobilenetV3small"]
    containers = {"MobilenetV3small"}
    # TFLite fuses ops and joins their names with ';'; the layer furthest along the path wins.
    assert match_layer("model/conv2d_1/Relu;model/conv2d_1/BiasAdd;model/conv2d_1/Conv2D1", names) == "conv2d_1"
    assert match_layer("model/expanded_conv_1/depthwise/BatchNorm/FusedBatchNormV3;"
                       "model/expanded_conv_1/depthwise/depthwise", names) == "expanded_conv_1/depthwise/BatchNorm"
    assert match_layer("model/MobilenetV3small/conv2d/Conv2D", names, containers) == "conv2d"
    assert match_layer("model/MobilenetV3small/Identity", names, containers) == "MobilenetV3small"
    assert match_layer("StatefulPartitionedCall:0", names) is None
    assert match_layer("model/conv2d_10/Conv2D", names) is None, "conv2d must not match conv2d_10"
