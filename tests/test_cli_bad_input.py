"""Issue 6, one case per line: what users feed edgeclf from phones and flaky links.

Each case runs the real command and asserts the message (what, which file, what to do) and
the exit code; none may print a traceback. Cases that need TensorFlow to build a model live
beside the code they exercise and are named here so the map stays whole:

- Keras file with a Lambda layer refused by safe mode: test_export.py::test_lambda_layer_is_refused_by_safe_mode
- QAT asked for a model it cannot handle (names the layer): test_export.py::test_qat_names_a_layer_it_cannot_handle
- labels whose count differs from the model's outputs (export): test_export.py::test_labels_that_do_not_fit_the_model
- an export killed part-way leaves no half-written model: test_export.py::test_interrupted_export_leaves_no_half_written_model
- a failed training run leaves nothing behind: test_train.py::test_failed_run_leaves_nothing_behind
- the data cache notices changed, added and removed images: test_data_cache.py::test_changed_added_and_removed_files_are_noticed
- random bytes / random images / damaged metadata (property-based): test_readers_fuzz.py
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgeclf.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
MODEL = FIXTURES / "colour_float32.tflite"  # 32x32, labels red/green/blue


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"edgeclf {' '.join(map(str, args))} raised {result.exception!r}\n{result.output}")
    assert "Traceback" not in result.output, result.output
    return result


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


def _png(path, mode="RGB", size=(40, 30), color=(200, 30, 30)):
    img = Image.new("RGB", size, color).convert(mode) if mode != "I;16" else Image.fromarray(
        np.full(size[::-1], 40000, np.uint16))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _jpeg_bytes(size=(64, 48)):
    buf = io.BytesIO()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


# --------------------------------------------------------------------------- images

BAD_IMAGES = {
    "zero bytes": ("empty.jpg", lambda p: p.write_bytes(b""), "empty file"),
    "truncated JPEG": ("cut.jpg", lambda p: p.write_bytes(_jpeg_bytes()[:300]), "truncated|corrupt"),
    "truncated PNG": ("cut.png", lambda p: p.write_bytes(_png(p).read_bytes()[:60]), "truncated|corrupt"),
    "text named .jpg": ("notes.jpg", lambda p: p.write_text("shopping list\n" * 20), "not an image"),
    "HTML named .jpg": ("page.jpg", lambda p: p.write_text("<!doctype html><title>404</title>"), "not an image"),
    "decompression bomb": ("bomb.png", lambda p: Image.new("1", (20000, 20000)).save(p), "refused"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_image_in_predict_is_reported_and_the_others_predicted(tmp_path, monkeypatch, case):
    monkeypatch.setattr("edgeclf.runtime.preprocess.MAX_PIXELS", 100_000_000)
    name, make, reason = BAD_IMAGES[case]
    bad = tmp_path / name
    make(bad)
    good = _png(tmp_path / "good.png")
    r = cli("predict", MODEL, bad, good)
    assert r.exit_code == 1, f"{case}: exit {r.exit_code}"
    errs = error_lines(r)
    assert len(errs) == 1 and str(bad) in errs[0], f"{case}: {r.stderr}"
    import re

    assert re.search(reason, errs[0]), f"{case}: message {errs[0]!r} lacks {reason!r}"
    assert "good.png: This image most likely belongs to red" in r.stdout, f"{case}: good image not predicted"


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16"])
def test_odd_modes_predict_like_rgb(tmp_path, mode):
    fmt_name = "x.jpg" if mode == "CMYK" else "x.png"
    p = _png(tmp_path / fmt_name, mode=mode, color=(20, 200, 20))
    r = cli("predict", MODEL, p)
    assert r.exit_code == 0 and r.stderr == "", r.output
    expected = "green" if mode not in ("L", "LA", "I;16") else None
    if expected:
        assert f"belongs to {expected}" in r.stdout, f"{mode}: {r.stdout}"


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (32, 32), c) for c in [(0, 0, 220), (220, 0, 0)]]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=40, loop=0)
    r = cli("predict", MODEL, p)
    assert r.exit_code == 0 and "belongs to blue" in r.stdout, r.output


def test_exif_rotated_photo_is_turned_upright(tmp_path):
    # Stored: red left half, blue right half, EXIF says rotate 90 degrees clockwise on display
    # (orientation 6), so upright it is red on top. Predicting the upright top crop must say red.
    arr = np.zeros((32, 64, 3), np.uint8)
    arr[:, :32] = (220, 0, 0)
    arr[:, 32:] = (0, 0, 220)
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "rotated.jpg"
    Image.fromarray(arr).save(p, exif=exif, quality=95)
    from edgeclf.runtime.preprocess import open_image

    upright = np.asarray(open_image(p))
    assert upright.shape[:2] == (64, 32), "orientation not applied"
    top = tmp_path / "top.png"
    Image.fromarray(upright[:32]).save(top)
    r = cli("predict", MODEL, top)
    assert "belongs to red" in r.stdout, r.output


def test_huge_legal_photo_is_decoded_with_bounded_memory(tmp_path):
    p = tmp_path / "huge.jpg"
    Image.new("RGB", (6000, 4500), (0, 180, 0)).save(p, quality=70)  # 27 megapixels
    # VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec.
    code = (
        "from edgeclf.runtime.preprocess import load_image; "
        f"x = load_image({str(p)!r}, 32); "
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]; "
        "print(int(hwm) // 1024, int(x[..., 1].mean()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    peak_mb, green = int(out[0]), int(out[1])
    # A full decode alone would need 6000*4500*3 = 81 MB for the pixels; drafted, far less.
    assert peak_mb < 120, f"peak RSS {peak_mb} MB: the photo was decoded at full size"
    assert abs(green - 180) < 6


def test_unicode_spaces_hidden_files_and_symlink_loops_in_a_folder(tmp_path):
    d = tmp_path / "fotos del viaje ☀"
    _png(d / "rojo – 1.png")
    (d / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (d / "._rojo – 1.png").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork
    os.symlink(d, d / "loop")
    r = cli("predict", MODEL, d)
    assert r.exit_code == 0, r.output
    assert r.stdout.count("This image") == 1 and "rojo – 1.png" in r.stdout, r.stdout


def test_data_inspect_lists_bad_files_with_reasons(tmp_path):
    data = tmp_path / "data"
    for cls in ("cats", "dogs"):
        _png(data / cls / "ok.png")
    (data / "cats" / "zero.jpg").write_bytes(b"")
    (data / "dogs" / "fake.jpg").write_text("<html>")
    r = cli("data", "inspect", data)
    assert r.exit_code == 0, r.output
    out = r.output
    assert "zero.jpg" in out and "empty file" in out, out
    assert "fake.jpg" in out and "not an image" in out, out


# --------------------------------------------------------------------------- datasets


def _dataset(tmp_path, layout):
    root = tmp_path / "data"
    root.mkdir()
    for rel in layout:
        if rel.endswith("/"):
            (root / rel).mkdir(parents=True, exist_ok=True)
        else:
            _png(root / rel)
    return root


DATASETS = {
    "missing directory": (None, "does not exist"),
    "empty directory": ([], "is empty"),
    "one class only": (["a/1.png", "a/2.png"], "one class"),
    "empty class folder": (["a/1.png", "b/"], "'b'.*no images"),
    "images at the root": (["1.png", "2.png"], "likely mistake"),
}


@pytest.mark.parametrize("case", sorted(DATASETS))
def test_unusable_datasets_stop_training_before_any_work(tmp_path, case):
    layout, message = DATASETS[case]
    data = tmp_path / "nowhere" if layout is None else _dataset(tmp_path, layout)
    r = cli("train", data, "--out", tmp_path / "run", "--epochs", "1")
    assert r.exit_code == 1, f"{case}: exit {r.exit_code}: {r.output}"
    import re

    assert re.search(message, r.stderr), f"{case}: {r.stderr!r}"
    assert len(error_lines(r)) == 1
    assert not (tmp_path / "run").exists(), f"{case}: a run directory was left behind"


def test_val_dir_with_other_classes(tmp_path):
    data = _dataset(tmp_path, ["a/1.png", "a/2.png", "b/1.png", "b/2.png"])
    val = tmp_path / "val"
    _png(val / "a" / "1.png")
    _png(val / "c" / "1.png")
    r = cli("train", data, "--val-dir", val, "--out", tmp_path / "run")
    assert r.exit_code == 1, r.output
    assert "only in the training data: b" in r.stderr and "only in --val-dir: c" in r.stderr, r.stderr


# --------------------------------------------------------------------------- model files


def _onnx_bytes():
    return (FIXTURES / "colour_float32.onnx").read_bytes()


MODEL_FILES = {
    "empty": ("m.tflite", lambda: b"", "empty"),
    "truncated": ("m.tflite", lambda: MODEL.read_bytes()[:700], "damaged|truncated"),
    "random bytes": ("m.tflite", lambda: np.random.default_rng(3).bytes(4096), "not a TFLite"),
    "ONNX renamed .tflite": ("m.tflite", _onnx_bytes, r"ONNX.*\.onnx"),
    "TFLite renamed .onnx": ("m.onnx", lambda: MODEL.read_bytes(), r"TFLite.*\.tflite"),
    "random bytes .onnx": ("m.onnx", lambda: np.random.default_rng(4).bytes(4096), "not an ONNX|damaged|cannot"),
}


@pytest.mark.parametrize("case", sorted(MODEL_FILES))
def test_bad_model_files(tmp_path, case):
    name, content, message = MODEL_FILES[case]
    p = tmp_path / name
    p.write_bytes(content())
    for command in (["predict", p, _png(tmp_path / "x.png")], ["bench", p, "--runs", "1"]):
        r = cli(*command)
        assert r.exit_code == 1, f"{case} / {command[0]}: exit {r.exit_code}: {r.output}"
        errs = error_lines(r)
        assert len(errs) == 1 and str(p) in errs[0], f"{case} / {command[0]}: {r.stderr!r}"
        import re

        assert re.search(message, errs[0]), f"{case} / {command[0]}: {errs[0]!r} lacks {message!r}"


def test_file_without_metadata_needs_labels(tmp_path):
    img = _png(tmp_path / "x.png")
    r = cli("predict", FIXTURES / "colour_nometa.tflite", img)
    assert r.exit_code == 1 and "--labels" in r.stderr, r.stderr
    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    r = cli("predict", FIXTURES / "colour_nometa.tflite", img, "--labels", labels)
    assert r.exit_code == 0 and "belongs to red" in r.stdout, r.output


def test_labels_count_differs_from_outputs(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    r = cli("predict", FIXTURES / "colour_nometa.tflite", _png(tmp_path / "x.png"), "--labels", labels)
    assert r.exit_code == 1
    assert "2 labels" in r.stderr and "3" in r.stderr, r.stderr


# --------------------------------------------------------------------------- options

OPTIONS = {
    "precision that does not exist": (["export", "RUN", "--out", "OUT", "--precision", "int4"], 2, "int4"),
    "format that does not exist": (["export", "RUN", "--out", "OUT", "--format", "coreml"], 2, "coreml"),
    "thread count of 0 (predict)": (["predict", str(MODEL), "IMG", "--threads", "0"], 2, "threads"),
    "thread count of 0 (bench)": (["bench", str(MODEL), "--threads", "0"], 2, "threads"),
    "thread count of 0 (compare)": (["compare", str(MODEL), "--data", "DATA", "--threads", "0"], 2, "threads"),
    "image size 0": (["train", "DATA", "--out", "OUT", "--image-size", "0"], 2, "image size"),
    "negative epochs": (["train", "DATA", "--out", "OUT", "--epochs", "-1"], 2, "epochs"),
}


@pytest.mark.parametrize("case", sorted(OPTIONS))
def test_nonsense_options(tmp_path, case):
    argv, code, word = OPTIONS[case]
    data = _dataset(tmp_path, ["a/1.png", "b/1.png"])
    (tmp_path / "run").mkdir()
    subst = {"RUN": str(tmp_path / "run"), "OUT": str(tmp_path / "out"), "IMG": str(_png(tmp_path / "i.png")),
             "DATA": str(data)}
    r = cli(*[subst.get(a, a) for a in argv])
    assert r.exit_code == code, f"{case}: exit {r.exit_code}: {r.output}"
    assert word in r.output, f"{case}: {r.output!r}"
    assert not (tmp_path / "out").exists(), f"{case}: output written despite the bad option"


# --------------------------------------------------------------------------- missing packages


def test_missing_tensorflow_names_the_extra(tmp_path):
    # Hide TensorFlow the way a runtime-only install lacks it.
    blocker = tmp_path / "block"
    (blocker / "tensorflow").mkdir(parents=True)
    (blocker / "tensorflow" / "__init__.py").write_text("raise ImportError(\"No module named 'tensorflow'\")\n")
    data = _dataset(tmp_path, ["a/1.png", "a/2.png", "b/1.png", "b/2.png"])
    # A SavedModel folder: reading its graph needs TensorFlow (a damaged .keras file would be
    # refused by the content check first, before any import).
    (tmp_path / "user_model").mkdir()
    (tmp_path / "user_model" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "labels.txt").write_text("a\nb\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")]))
    for argv in (["train", str(data), "--out", str(tmp_path / "run"), "--epochs", "1"],
                 ["export", str(tmp_path / "user_model"), "--labels", str(tmp_path / "labels.txt"),
                  "--out", str(tmp_path / "exp")],
                 ["models", "tutorial_cnn"]):
        p = subprocess.run([sys.executable, "-m", "edgeclf.cli", *argv], capture_output=True, text=True, env=env)
        assert p.returncode == 1, f"{argv[0]}: exit {p.returncode}: {p.stderr}"
        assert 'pip install "edgeclf[train]"' in p.stderr, f"{argv[0]}: {p.stderr!r}"
        assert "Traceback" not in p.stderr
        assert not (tmp_path / "run").exists() and not (tmp_path / "exp").exists()


# --------------------------------------------------------------------------- nothing lost


def test_existing_outputs_are_never_silently_overwritten(tmp_path):
    data = _dataset(tmp_path, ["a/1.png", "b/1.png"])
    for argv in (["data", "synth", "{out}", "--per-class", "2", "--size", "16"],
                 ["train", str(data), "--out", "{out}"],
                 ["export", str(tmp_path), "--out", "{out}"],
                 ["run", "--out", "{out}"]):
        out = tmp_path / f"existing_{argv[0]}"
        out.mkdir()
        (out / "precious.txt").write_text("mine")
        r = cli(*[a.format(out=out) for a in argv])
        assert r.exit_code != 0, f"{argv[0]} overwrote {out}: {r.output}"
        assert "--overwrite" in r.stderr, f"{argv[0]}: {r.stderr!r}"
        assert (out / "precious.txt").read_text() == "mine"
        assert sorted(os.listdir(out)) == ["precious.txt"], f"{argv[0]} wrote into {out}"


def test_missing_tensorflow_is_said_before_any_work(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] == "tensorflow" else real(name, *a))
    data = _dataset(tmp_path, ["a/1.png", "a/2.png", "b/1.png", "b/2.png"])
    r = cli("train", data, "--out", tmp_path / "run")
    assert r.exit_code == 1 and 'pip install "edgeclf[train]"' in r.stderr, r.output
    assert "split" not in r.output and "images in" not in r.output, f"work started first: {r.output}"
    assert not (tmp_path / "run").exists()


def test_compare_on_a_folder_with_no_readable_image(tmp_path):
    data = tmp_path / "data"
    for cls in ("red", "green", "blue"):
        (data / cls).mkdir(parents=True)
        (data / cls / "1.png").write_text("x")
    r = cli("compare", MODEL, FIXTURES / "colour_int8.tflite", "--data", data)
    assert r.exit_code == 1, r.output
    errs = error_lines(r)
    assert len(errs) == 1 and "none of the 3 images could be read" in errs[0], r.stderr


def test_onnx_with_an_int8_image_input_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("ReduceMean", ["f"], ["m"], axes=[1, 2], keepdims=0),
         helper.make_node("Slice", ["m", "s", "e", "a"], ["y"])],
        "g", [helper.make_tensor_value_info("image", TensorProto.INT8, [None, 4, 4, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        initializer=[helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("s", 0), ("e", 2), ("a", 1))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "int8_input.onnx"
    onnx.save(model, str(path))
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    r = cli("predict", path, _png(tmp_path / "x.png"), "--labels", labels)
    assert r.exit_code == 1 and "int8 without a scale" in r.stderr, r.output


def test_an_output_path_that_cannot_be_written_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    r = cli("bench", MODEL, "--runs", "2", "--warmup", "0", "--json", blocker / "bench.json")
    assert r.exit_code == 1, r.output
    errs = error_lines(r)
    assert len(errs) == 1 and "cannot write" in errs[0] and "a_file" in errs[0], r.stderr
    assert "internal error" not in r.stderr
    assert ".tmp" not in errs[0], "the message must name the user's file, not a temporary one"


def test_export_overwrite_never_replaces_what_it_reads(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"PK\x03\x04 stand-in")
    (run / "labels.txt").write_text("a\nb\n")
    for out in (run, run / "export", tmp_path):
        r = cli("export", run, "--out", out, "--overwrite")
        assert r.exit_code == 2 and "outside every input" in r.stderr, f"--out {out}: {r.output}"
        assert (run / "model.keras").read_bytes() == b"PK\x03\x04 stand-in"
