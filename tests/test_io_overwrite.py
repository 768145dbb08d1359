"""Issue 12, data loss: --overwrite replaces only what edgeclf made, a folder that fills up
during the work is never replaced, a kill between the renames of a replace is repaired by
the next run, and stale temp folders of killed runs are cleaned (never a live one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeclf import _io
from edgeclf._io import MARKER, atomic_dir, check_out_dir, clean_stale_temp, is_edgeclf_dir, temp_dir
from edgeclf.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]


def _user_folder(path: Path) -> Path:
    path.mkdir()
    (path / "thesis.txt").write_text("mine")
    return path


def _edgeclf_folder(path: Path, content: str = "old") -> Path:
    with atomic_dir(path) as tmp:
        (tmp / "result.txt").write_text(content)
    return path


def test_overwrite_refuses_a_folder_edgeclf_did_not_make(tmp_path):
    out = _user_folder(tmp_path / "mine")
    with pytest.raises(UsageError, match="did not write"):
        check_out_dir(out, True)
    with pytest.raises(UsageError, match="did not write"):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "x").write_text("new")
    assert sorted(os.listdir(out)) == ["thesis.txt"]
    assert sorted(os.listdir(tmp_path)) == ["mine"], "no temp folder may be left"


def test_overwrite_replaces_what_edgeclf_made(tmp_path):
    out = _edgeclf_folder(tmp_path / "run")
    assert is_edgeclf_dir(out) and (out / MARKER).is_file()
    check_out_dir(out, True)
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "result.txt").write_text("new")
    assert (out / "result.txt").read_text() == "new" and is_edgeclf_dir(out)
    assert sorted(os.listdir(tmp_path)) == ["run"]


@pytest.mark.parametrize("argv", [
    ["data", "synth", "{out}", "--classes", "2", "--per-class", "1", "--size", "16", "--overwrite"],
    ["run", "--out", "{out}", "--overwrite"],
    ["train", "{out}/../nosuch", "--out", "{out}", "--overwrite"],
    ["export", "{out}/../nosuch", "--out", "{out}", "--overwrite"],
])
def test_cli_overwrite_keeps_a_users_folder(tmp_path, argv):
    from edgeclf.cli import main

    out = _user_folder(tmp_path / "mine")
    res = CliRunner().invoke(main, [a.format(out=out) for a in argv])
    assert res.exit_code == 2, res.output
    assert "did not write" in res.output and "Traceback" not in res.output
    assert sorted(os.listdir(out)) == ["thesis.txt"]


def test_synth_overwrite_replaces_its_own_dataset(tmp_path):
    from edgeclf.data.synth import generate

    out = tmp_path / "d"
    generate(out, classes=2, per_class=1, size=16)
    assert is_edgeclf_dir(out)
    generate(out, classes=3, per_class=1, size=16, overwrite=True)
    assert len([p for p in out.iterdir() if p.is_dir()]) == 3


def test_a_folder_filled_during_the_work_is_never_replaced(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UsageError, match="filled by something else") as info:
        with atomic_dir(out) as tmp:
            (tmp / "result.txt").write_text("second")
            _edgeclf_folder(out, "first")  # another run to the same --out finishes first
    assert (out / "result.txt").read_text() == "first"
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("run.new-")]
    assert len(kept) == 1 and str(kept[0]) in str(info.value)
    assert (kept[0] / "result.txt").read_text() == "second"


def test_overwrite_still_refuses_a_users_folder_that_appeared_during_the_work(tmp_path):
    out = _edgeclf_folder(tmp_path / "run")
    with pytest.raises(UsageError, match="filled by something else"):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "result.txt").write_text("new")
            (out / MARKER).unlink()  # the user replaced it with a folder of their own
    assert (out / "result.txt").read_text() == "old"


_KILL_AT = textwrap.dedent("""
    import os, sys
    from edgeclf import _io
    calls = []
    real = os.replace
    def replace(a, b):
        calls.append(1)
        if len(calls) == int(sys.argv[2]):
            os._exit(9)  # as kill -9: no cleanup at all
        real(a, b)
    _io.os.replace = replace
    with _io.atomic_dir(sys.argv[1], overwrite=True) as tmp:
        (tmp / "result.txt").write_text("new")
""")


@pytest.mark.parametrize("kill_at, expect", [(1, "old"), (2, "new"), (3, "new")])
def test_a_kill_between_the_renames_is_repaired_by_the_next_run(tmp_path, kill_at, expect, edgeclf_log):
    caplog = edgeclf_log
    out = _edgeclf_folder(tmp_path / "run")
    r = subprocess.run([sys.executable, "-c", _KILL_AT, str(out), str(kill_at)], cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert r.returncode == 9, r.stderr
    if kill_at == 3:
        assert not out.exists(), "the kill must land between the two renames of the old and new folder"
    check_out_dir(out, True)  # the next run repairs before anything else
    assert (out / "result.txt").read_text() == expect
    if kill_at > 1:
        assert "stopped while replacing" in caplog.text
    # the killed run's temp folder is locked by nobody; once old it goes too
    for p in tmp_path.iterdir():
        if p.name.endswith(".tmp"):
            os.utime(p, (time.time() - 3600, time.time() - 3600))
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "result.txt").write_text("third")
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_stale_temp_folders_are_cleaned_but_never_a_live_or_foreign_one(tmp_path):
    old = time.time() - 3600

    def temp(name, *, locked=False, fresh=False, marker=True):
        d = tmp_path / name
        d.mkdir()
        fd = _io._hold_marker(d, "test") if marker else None
        if not locked and fd is not None:
            os.close(fd)
            fd = None
        if not fresh:
            os.utime(d, (old, old))
        return d, fd

    dead, _ = temp(".run.abcd1234.tmp")
    live, fd = temp(".run.live5678.tmp", locked=True)  # a concurrent run still writing
    young, _ = temp(".run.young123.tmp", fresh=True)    # just made; its writer may lock it next
    foreign, _ = temp(".run.backup.tmp")                # not a name edgeclf makes
    other, _ = temp(".other.abcd1234.tmp")              # another target's
    try:
        removed = clean_stale_temp(tmp_path, ".run.", ".tmp")
        assert removed == [dead]
        assert live.exists() and young.exists() and foreign.exists() and other.exists()
    finally:
        os.close(fd)


def test_temp_dir_cleans_what_a_killed_process_left(tmp_path, monkeypatch):
    monkeypatch.setattr(_io.tempfile, "gettempdir", lambda: str(tmp_path))
    stale = tmp_path / "edgeclf-test-abcd1234"
    stale.mkdir()
    os.close(_io._hold_marker(stale, "x"))
    os.utime(stale, (time.time() - 3600,) * 2)
    with temp_dir("edgeclf-test-") as d:
        assert d.exists() and not stale.exists()
    assert not d.exists()


def test_an_unwritable_out_is_refused_before_any_work(tmp_path, monkeypatch):
    # Tests may run as root, which writes anywhere; so the permission answer is simulated.
    monkeypatch.setattr(_io.os, "access", lambda p, mode: False)
    with pytest.raises(UsageError, match="cannot write in"):
        check_out_dir(tmp_path / "new" / "run", False)


def test_marker_is_json_naming_edgeclf(tmp_path):
    out = _edgeclf_folder(tmp_path / "run")
    assert json.loads((out / MARKER).read_text())["made_by"] == "edgeclf"


def test_library_temp_files_go_to_one_private_folder_removed_on_exit(tmp_path, monkeypatch):
    import tempfile

    from edgeclf._io import private_tempdir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    unmarked = tmp_path / "edgeclf-notours1"  # a name like ours but no marker: never touched
    unmarked.mkdir()
    os.utime(unmarked, (time.time() - 3 * 86400,) * 2)
    with private_tempdir() as d:
        assert d.parent == tmp_path and tempfile.gettempdir() == str(d) and os.environ["TMPDIR"] == str(d)
        inner = Path(tempfile.mkdtemp())  # as TensorFlow's converter makes its SavedModel
        assert inner.parent == d
    assert tempfile.gettempdir() == str(tmp_path) and not d.exists()
    assert unmarked.exists()


_KILLED_WITH_TEMP = textwrap.dedent("""
    import os, sys, tempfile
    tempfile.tempdir = sys.argv[1]
    from edgeclf._io import private_tempdir
    with private_tempdir() as d:
        open(os.path.join(tempfile.mkdtemp(), "saved_model.pb"), "w").write("x")
        print(d, flush=True)
        os._exit(9)  # kill -9
""")


def test_temp_files_of_a_killed_run_are_removed_by_the_next_run(tmp_path, monkeypatch):
    import tempfile

    from edgeclf._io import private_tempdir

    r = subprocess.run([sys.executable, "-c", _KILLED_WITH_TEMP, str(tmp_path)], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    left = Path(r.stdout.strip())
    assert r.returncode == 9 and left.exists(), r.stderr
    os.utime(left, (time.time() - 3600,) * 2)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with private_tempdir():
        assert not left.exists()


def test_a_fifo_labels_file_is_refused_without_hanging(tmp_path):
    from edgeclf.runtime.metadata import read_labels_file

    fifo = tmp_path / "labels.txt"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="not a regular file"):
        read_labels_file(fifo)


@pytest.mark.parametrize("names", [
    ("config.json", "model.keras", "split.json"), ("export.json", "golden.npz"), (".edgeclf-synth.json",),
    ("compare.json", "run/", "export/"), (".edgeclf-run-incomplete",),
])
def test_only_the_marker_makes_a_folder_edgeclfs(tmp_path, names):
    from edgeclf.cli import main

    out = _user_folder(tmp_path / "mine")  # the user's own file beside names edgeclf also writes
    for n in names:
        (out / n.rstrip("/")).mkdir() if n.endswith("/") else (out / n).write_text("x")
    before = sorted(os.listdir(out))
    assert not is_edgeclf_dir(out)
    with pytest.raises(UsageError, match="did not write"):
        check_out_dir(out, True)
    for argv in (["data", "synth", str(out), "--classes", "2", "--per-class", "1", "--size", "16", "--overwrite"],
                 ["run", "--out", str(out), "--overwrite"]):
        res = CliRunner().invoke(main, argv)
        assert res.exit_code in (1, 2) and "did not write" in res.output, res.output
    assert sorted(os.listdir(out)) == before and (out / "thesis.txt").read_text() == "mine"