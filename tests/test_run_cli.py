"""`edgeclf run`: refuses what it must before doing any work (the README's `edgeclf run` block runs it end to end, in test_docs)."""

import pytest
from click.testing import CliRunner

from edgeclf._io import MARKER
from edgeclf.cli import main


@pytest.mark.parametrize("args, message", [
    (["--threads", "0"], "--threads must be at least 1"),
    (["--epochs", "0"], "--epochs must be from 1 to 10000"),
    (["--epochs", "1000000000000"], "--epochs must be from 1 to 10000"),
])
def test_run_refuses_bad_options(tmp_path, args, message):
    res = CliRunner().invoke(main, ["run", "--out", str(tmp_path / "r"), *args])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not (tmp_path / "r").exists(), "nothing is created before the options are checked"


def test_run_never_overwrites_silently(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = CliRunner().invoke(main, ["run", "--out", str(out)])
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert (out / "keep.txt").read_text() == "mine"


def test_an_unfinished_run_is_picked_up_again_without_overwrite(tmp_path):
    from edgeclf.runtime.layout import JobDir

    out = tmp_path / "r"
    (out / "data" / "circles").mkdir(parents=True)  # what an interrupted run left
    (out / JobDir.INCOMPLETE).write_text("")
    (out / MARKER).write_text("{}")  # run marks its folder as edgeclf's before anything else
    res = CliRunner().invoke(main, ["run", str(tmp_path / "missing"), "--out", str(out)])
    assert "did not finish" in res.output and "--overwrite" not in res.output, res.output
    # It went on to the next step, which fails on the missing DATA, and the folder stays marked.
    assert res.exit_code == 1 and "does not exist" in res.output, res.output
    assert (out / JobDir.INCOMPLETE).exists()
    (out / MARKER).unlink()  # without edgeclf's marker the same folder is a user's: never resumed
    res = CliRunner().invoke(main, ["run", str(tmp_path / "missing"), "--out", str(out)])
    assert res.exit_code == 2 and "not empty" in res.output and "did not finish" not in res.output, res.output


def test_a_misspelt_model_fails_before_anything_is_made(tmp_path):
    out = tmp_path / "r"
    res = CliRunner().invoke(main, ["run", "--out", str(out), "--model", "tutorial_cnn_agu"])
    assert res.exit_code == 2 and "'tutorial_cnn_agu' is not a model edgeclf knows" in res.output, res.output
    assert "tutorial_cnn_aug" in res.output  # the valid names are listed
    assert not out.exists(), "nothing may be written for options that make no sense"
