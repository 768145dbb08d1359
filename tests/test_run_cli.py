"""`edgeclf run`: refuses what it must before doing any work; end to end on a tiny setting (slow)."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeclf.cli import main


@pytest.mark.parametrize("args, message", [
    (["--threads", "0"], "--threads must be at least 1"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--model", "tutorial_cnn_agu"], "'tutorial_cnn_agu' is not one of"),
    (["--per-class", "0"], "--per-class must be between 1 and"),
    (["--image-size", "big"], "--image-size must be S or HxW"),
    (["no-such-folder"], "DATA no-such-folder is not a folder"),
])
def test_run_refuses_bad_options(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["run", "--out", "r", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert list(tmp_path.iterdir()) == [], "nothing is created before every option is checked"


def test_run_never_overwrites_silently(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = CliRunner().invoke(main, ["run", "--out", str(out)])
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert (out / "keep.txt").read_text() == "mine"


def test_an_unfinished_run_is_picked_up_again_without_overwrite(tmp_path):
    from edgeclf.cli.run import RUN_INCOMPLETE_MARKER

    out = tmp_path / "r"
    (out / "data" / "circles").mkdir(parents=True)  # what an interrupted run left
    (out / RUN_INCOMPLETE_MARKER).write_text("")
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(main, ["run", str(tmp_path / "empty"), "--out", str(out)])
    assert "did not finish" in res.output and "--overwrite" not in res.output, res.output
    # It went on to training, which fails on the folder with no classes, and the folder stays marked.
    assert res.exit_code == 1 and "is empty; it needs one subfolder" in res.output, res.output
    assert (out / RUN_INCOMPLETE_MARKER).exists()


@pytest.mark.slow
def test_run_end_to_end_tiny(tmp_path):
    out = tmp_path / "r"
    res = CliRunner().invoke(main, ["run", "--out", str(out), "--per-class", "12", "--epochs", "1",
                                    "--image-size", "32", "--threads", "1"])
    assert res.exit_code in (0, 1), res.output
    d = json.loads((out / "compare.json").read_text())
    assert d["reference"]["format"] == "keras"
    formats = {(m["format"], m["precision"]) for m in d["models"]}
    assert {("tflite", "float32"), ("onnx", "float32"), ("tflite", "int8")} <= formats
    for m in d["models"]:
        if m["precision"] == "float32":
            assert m["agreement"] == 1.0, f"{m['path']} must agree 100% with the Keras model"
    md = (out / "report" / "report.md").read_text()
    assert "## Results" in md and (out / "report" / "accuracy_latency_size.png").exists()
    assert "model_int8.tflite" in res.output
    assert not (out / ".edgeclf-run-incomplete").exists(), "a finished run must not look unfinished"
    assert "(the 10 deployable files)" in res.output
