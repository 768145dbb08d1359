"""Nothing of the user's is lost: no output folder may be, hold or lie inside an input (for export
also the data the run was trained on), and a folder without edgeclf's marker is never replaced.
Every case runs the CLI and proves the user's files are still there, unchanged."""

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeclf._io import MARKER
from edgeclf.cli import main


def _invoke(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in res.output and "internal error" not in res.output, res.output
    return res


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def shapes(tmp_path):
    """A dataset edgeclf made (it carries the marker, so --overwrite alone would replace it)."""
    from edgeclf.data.synth import generate

    data = tmp_path / "d" / "shapes"
    generate(data, classes=2, per_class=2, size=16)
    assert (data / MARKER).is_file()
    return data


def _fake_run(tmp_path, data, *, record="split") -> Path:
    """A run directory that records ``data`` as its training data (the checks run before any load)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"not loaded: the output is refused first")
    (run / MARKER).write_text("{}")
    if record == "split":
        (run / "split.json").write_text(json.dumps({"root": str(data), "train": [], "val": [], "test": []}))
    else:
        (run / "config.json").write_text(json.dumps({"data": str(data)}))
    return run


@pytest.mark.parametrize("record", ["split", "config"])
@pytest.mark.parametrize("where", ["is", "inside", "around"])
def test_export_never_replaces_the_runs_training_data(tmp_path, shapes, record, where):
    run = _fake_run(tmp_path, shapes, record=record)
    before = _snapshot(shapes)
    out = {"is": shapes, "inside": shapes / "circles" / "export", "around": shapes.parent}[where]
    res = _invoke("export", run, "--out", out, "--overwrite")
    assert res.exit_code == 2, res.output
    assert f"the input {shapes}" in res.output, res.output
    assert _snapshot(shapes) == before and not (shapes / "circles" / "export").exists()


def test_train_and_run_keep_the_data(tmp_path, shapes):
    before = _snapshot(shapes)
    for argv in (["train", shapes, "--out", shapes, "--overwrite"],
                 ["train", shapes, "--out", shapes / "squares" / "run"],
                 ["run", shapes, "--out", shapes / "job"],
                 ["run", shapes, "--out", shapes, "--overwrite"]):
        res = _invoke(*argv)
        assert res.exit_code == 2 and "the input" in res.output, (argv, res.output)
    assert _snapshot(shapes) == before
    assert sorted(os.listdir(shapes)) == sorted(["circles", "squares", MARKER, ".edgeclf-synth.json"])


def test_explain_quant_report_keeps_a_users_folder(tmp_path, shapes):
    run = _fake_run(tmp_path, shapes)
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "quant_report.md").write_text("mine")
    for extra in ([], ["--overwrite"]):
        res = _invoke("explain-quant", run, "--report", mine, *extra)
        assert res.exit_code == 2, res.output
    res = _invoke("explain-quant", run, "--report", shapes / "q", "--overwrite")
    assert res.exit_code == 2 and "the input" in res.output, res.output
    assert os.listdir(mine) == ["quant_report.md"] and (mine / "quant_report.md").read_text() == "mine"


def test_the_root_folder_is_refused_with_a_clear_error(tmp_path):
    res = _invoke("data", "synth", "/", "--overwrite")
    assert res.exit_code == 2 and "root of the file system" in res.output, res.output
