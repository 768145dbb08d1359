"""Issue 12, data side: pixel limits, size/seed/alpha bounds, links in class folders, a full
disk under the decode cache, SIGTERM. No TensorFlow."""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from _data_helpers import make_folder  # noqa: E402

from edgeclf.cli import main  # noqa: E402
from edgeclf.errors import DataError, ImageError, UsageError  # noqa: E402
from edgeclf.runtime.preprocess import MAX_IMAGE_SIDE, image_size_arg, load_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that claims ``width`` x ``height`` and holds no pixels (bytes, not memory)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))
    return path


def test_max_pixels_env_that_is_not_a_number_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECLF_MAX_PIXELS", "abc")
    with pytest.raises(UsageError, match="EDGECLF_MAX_PIXELS must be a whole number"):
        load_image(FIXTURES / "images" / "red.png", 8)
    res = CliRunner().invoke(main, ["predict", str(FIXTURES / "colour_float32.onnx"), str(FIXTURES / "images" / "red.png")])
    assert res.exit_code == 2 and "EDGECLF_MAX_PIXELS" in res.output and "internal" not in res.output, res.output


def test_images_between_pillows_limit_and_ours_are_not_called_bombs(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGECLF_MAX_PIXELS", raising=False)
    p = _png_header(tmp_path / "big.png", 14000, 13000)  # 182 MP: over Pillow's 179 MP, under our 200 MP
    with pytest.raises(ImageError) as info:
        load_image(p, 8)
    assert "refused" not in str(info.value), "a 182 MP image is under the 200 MP limit"
    monkeypatch.setenv("EDGECLF_MAX_PIXELS", "100000000")
    with pytest.raises(ImageError, match=r"14000x13000 is 182,000,000 pixels, over the limit of 100,000,000"):
        load_image(p, 8)


def test_max_pixels_env_can_raise_the_limit(tmp_path, monkeypatch):
    p = _png_header(tmp_path / "huge.png", 20000, 15000)  # 300 MP
    monkeypatch.delenv("EDGECLF_MAX_PIXELS", raising=False)
    with pytest.raises(ImageError, match="over the limit of 200,000,000"):
        load_image(p, 8)
    monkeypatch.setenv("EDGECLF_MAX_PIXELS", "400000000")
    with pytest.raises(ImageError) as info:
        load_image(p, 8)  # no pixels in the file: now it fails on decoding, not on its size
    assert "refused" not in str(info.value)


def test_image_size_has_an_upper_bound():
    assert image_size_arg(MAX_IMAGE_SIDE) == (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE)
    with pytest.raises(UsageError, match=f"over {MAX_IMAGE_SIDE} pixels a side"):
        image_size_arg(100000)


@pytest.mark.parametrize("argv, word", [
    (["data", "synth", "{tmp}/d", "--seed", "-1"], "--seed"),
    (["train", "{tmp}/data", "--out", "{tmp}/r", "--seed", "-1"], "--seed"),
    (["train", "{tmp}/data", "--out", "{tmp}/r", "--image-size", "100000"], "pixels a side"),
])
def test_cli_bounds_are_one_line_usage_errors(tmp_path, argv, word):
    make_folder(tmp_path / "data", {"a": 2, "b": 2})
    res = CliRunner().invoke(main, [a.format(tmp=tmp_path) for a in argv])
    assert res.exit_code == 2, res.output
    assert word in res.output and "internal" not in res.output
    assert not (tmp_path / "d").exists() and not (tmp_path / "r").exists()


def test_synth_seed_bounds_through_the_api(tmp_path):
    from edgeclf.data.synth import generate

    with pytest.raises(UsageError, match="--seed"):
        generate(tmp_path / "d", classes=2, per_class=1, size=16, seed=-1)
    with pytest.raises(UsageError, match="--per-class must be between 1 and 100,000"):
        generate(tmp_path / "d", classes=2, per_class=10**9, size=16)
    assert not (tmp_path / "d").exists()


def test_alpha_is_bounded():
    from edgeclf.train.zoo import MAX_ALPHA, check_options

    for alpha in (0, -1, float("nan"), MAX_ALPHA * 2, 1e6):
        with pytest.raises(UsageError, match="^alpha must be"):
            check_options("mobilenet_v2", num_classes=2, alpha=alpha)
    check_options("mobilenet_v2", num_classes=2, alpha=1.4)


def test_links_out_of_a_class_folder_are_not_followed(tmp_path):
    from edgeclf.data.folders import scan_folder

    root = make_folder(tmp_path / "data", {"cats": 2, "dogs": 3})
    (root / "cats" / "up").symlink_to(root, target_is_directory=True)        # up the tree: every image again
    (root / "cats" / "usr").symlink_to("/usr", target_is_directory=True)     # thousands of foreign files
    (root / "cats" / "dog0.png").symlink_to(root / "dogs" / "dogs_000.png")  # one file, two labels
    outside = make_folder(tmp_path / "elsewhere", {"x": 1, "y": 1})
    (root / "cats" / "foreign.png").symlink_to(next((outside / "x").iterdir()))  # a file from outside
    (root / "cats" / "inner").mkdir()
    (root / "cats" / "inner_link").symlink_to(root / "cats" / "inner", target_is_directory=True)
    folder = scan_folder(root)
    assert folder.counts() == {"cats": 2, "dogs": 3}
    reasons = {Path(p).name: r for p, r in folder.ignored}
    assert "outside its class folder" in reasons["up"] and "outside its class folder" in reasons["usr"]
    assert "symlink to a file outside its class folder" in reasons["foreign.png"]
    labels = {}
    for p, y in folder.files:
        labels.setdefault(os.path.realpath(p), set()).add(y)
    assert all(len(v) == 1 for v in labels.values()), "a file got two labels"


def test_a_full_disk_under_the_cache_is_one_clear_error_and_leaves_no_temp(tmp_path, monkeypatch):
    from edgeclf.data import cache

    monkeypatch.setenv("EDGECLF_CACHE_DIR", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "data", {"a": 3, "b": 3})
    paths = sorted(str(p) for p in root.rglob("*.png"))

    class Full:
        def __init__(self, path, mode):
            self.f = open(path, mode)
            self.n = 0

        def write(self, b):
            self.n += len(b)
            if self.n > 300:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(b)

        def flush(self):
            self.f.flush()

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    monkeypatch.setattr(cache, "_open_for_write", Full)
    with pytest.raises(DataError, match=r"no space left on the device for the decoded-image cache in .*cache"):
        cache.decode_images(paths, 8, root=root, show_progress=False)
    left = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert left == [], left

    monkeypatch.setattr(cache, "_open_for_write", open)
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda p: type("U", (), {"free": 10})())
    with pytest.raises(DataError, match="no space left"):
        cache.decode_images(paths, 8, root=root, show_progress=False)


_BLOCK = textwrap.dedent("""
    import sys
    import click
    from edgeclf.cli import main
    from edgeclf._io import atomic_dir

    @main.command("block")
    @click.argument("out")
    def block(out):
        with atomic_dir(out) as tmp:
            (tmp / "partial").write_text("x")
            print("ready", flush=True)
            sys.stdin.read()  # until the test signals; never a sleep

    main(["block", sys.argv[1]])
""")


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _BLOCK, str(out)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "Terminated; nothing half-written" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == [], "SIGTERM left a temporary folder"


def test_half_written_cache_arrays_of_killed_runs_are_removed(tmp_path, monkeypatch):
    import time

    from edgeclf.data import cache

    monkeypatch.setenv("EDGECLF_CACHE_DIR", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "data", {"a": 2, "b": 2})
    paths = sorted(str(p) for p in root.rglob("*.png"))
    first = cache.decode_images(paths, 8, root=root, show_progress=False)
    stale = first.cache_dir / ".pixels-0123456789ab.npy.k2j4h5g6.tmp.npy"
    live = first.cache_dir / ".pixels-ba9876543210.npy.a1b2c3d4.tmp.npy"
    for f in (stale, live):
        f.write_bytes(b"\x00" * 64)
    os.utime(stale, (time.time() - 7200,) * 2)
    make_folder(root, {"c": 1})  # a change, so the cache is written again
    cache.decode_images(sorted(str(p) for p in root.rglob("*.png")), 8, root=root, show_progress=False)
    assert not stale.exists() and live.exists()


@pytest.mark.parametrize("name, shown", [
    ("two\nlines", "two\\x0alines"), ("red\x1b[31m", "red\\x1b[31m"), ("nel\x85x", "nel\\x85x"),
    ("del\x7f", "del\\x7f"), ("bell\x07", "bell\\x07"),
])
def test_a_class_folder_named_with_a_control_character_is_refused_by_name(tmp_path, name, shown):
    from click.testing import CliRunner

    from edgeclf.cli import main
    from edgeclf.data.folders import scan_folder
    from edgeclf.errors import DataError

    root = make_folder(tmp_path / "data", {"plain": 1, name: 1})
    with pytest.raises(DataError) as err:
        scan_folder(root)
    msg = str(err.value)
    assert f"the class folder name '{shown}' holds a control character" in msg, msg
    assert msg.isprintable(), "the error itself must not carry the raw character"
    res = CliRunner().invoke(main, ["train", str(root), "--out", str(tmp_path / "run"), "--epochs", "1"])
    assert res.exit_code == 1 and shown in res.output and res.output.count("\n") == 1, res.output


def test_progress_lines_escape_what_names_carry(capsys):
    from edgeclf._term import LOGGER, info, show_progress_on_stderr

    show_progress_on_stderr()
    level = LOGGER.level
    LOGGER.setLevel("INFO")
    try:
        info("classes: a\u202eb, c\x1b[2J\nnext line")
    finally:
        LOGGER.setLevel(level)
    assert capsys.readouterr().err == "classes: a\\u202eb, c\\x1b[2J\nnext line\n"


def test_label_files_keep_one_label_a_line(tmp_path):
    from edgeclf.errors import UsageError
    from edgeclf.export.std_metadata import labels_file_text
    from edgeclf.runtime.metadata import read_labels_file
    from edgeclf.runtime.spec import ModelSpec

    spec = ModelSpec(labels=("a\u2028b", "c\u202ed"), input_size=(8, 8))
    assert labels_file_text(spec).splitlines() == ["a\\u2028b", "c\\u202ed"]
    bad = tmp_path / "labels.json"
    bad.write_text(json.dumps(["cat", "two\nlines"]))
    with pytest.raises(UsageError, match="holds a control character"):
        read_labels_file(bad)
