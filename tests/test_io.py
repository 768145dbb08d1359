"""Atomic writes: a failure leaves the old file or none, never half of one."""

import os

import pytest

from edgeclf._io import MARKER, atomic_dir, atomic_path, write_bytes, write_json


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "model.tflite"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.suffix.endswith(".tflite"), "temp name must keep the suffix for format-sniffing writers"
            tmp.write_bytes(b"half-wri")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["model.tflite"], "temp file left behind"


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "sub" / "x.json"
    write_json(target, {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}\n'
    write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(target.parent) == ["x.json"]


def test_atomic_dir_refuses_existing_and_cleans_up(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep").write_text("1")
    (out / MARKER).write_text("{}")  # a folder edgeclf made: the only kind --overwrite replaces
    with pytest.raises(FileExistsError):
        with atomic_dir(out):
            pass
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "partial").write_text("x")
            raise KeyboardInterrupt
    assert sorted(os.listdir(out)) == [MARKER, "keep"], "old run must survive an interrupted overwrite"
    assert sorted(os.listdir(tmp_path)) == ["run"], "temp folder left behind"
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "new").write_text("y")
    assert sorted(os.listdir(out)) == [MARKER, "new"]
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_written_files_follow_the_umask_not_mkstemp(tmp_path):
    old = os.umask(0o022)
    try:
        f = write_bytes(tmp_path / "a.bin", b"x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(old)
    assert oct(f.stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path / "d").stat().st_mode & 0o777) == oct(0o755)


def test_atomic_dir_refuses_a_file_and_leaves_no_old_copy(tmp_path):
    from edgeclf.errors import UsageError

    f = tmp_path / "run"
    f.write_text("precious")
    with pytest.raises(UsageError, match="is a file"):
        with atomic_dir(f, overwrite=True) as tmp:
            (tmp / "x").write_text("y")
    assert f.read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_check_out_dir_refuses_the_data_folder_and_anything_inside_or_around_it(tmp_path):
    from edgeclf._io import check_out_dir
    from edgeclf.errors import UsageError

    data = tmp_path / "photos"
    (data / "cat").mkdir(parents=True)
    (data / "cat" / "a.png").write_bytes(b"x")
    for out, word in ((data, "is the input"), (data / "run1", "is inside"), (tmp_path, "contains")):
        with pytest.raises(UsageError, match=word):
            check_out_dir(out, True, inside=(data,))
    with pytest.raises(UsageError, match="not empty"):
        check_out_dir(data, False)
    (tmp_path / "empty").mkdir()
    assert check_out_dir(tmp_path / "empty", False, inside=(data, None)) == tmp_path / "empty"
    with atomic_dir(tmp_path / "empty") as tmp:  # an empty folder is replaced without overwrite
        (tmp / "f").write_text("y")
    assert sorted(os.listdir(tmp_path / "empty")) == [MARKER, "f"]
