"""`edgeclf predict` and `edgeclf verify` on the committed fixtures."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeclf.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
IMAGES = FIXTURES / "images"
MODEL = str(FIXTURES / "colour_int8.tflite")
SENTENCE = "This image most likely belongs to {} with a "


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.mark.parametrize("model", ["colour_int8.tflite", "colour_float32.onnx", "colour_int16x8.tflite"])
def test_predict_one_sentence_per_image(model):
    r = run("predict", FIXTURES / model, IMAGES / "red.png", IMAGES / "green.jpg")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert len(lines) == 2, r.stdout
    assert lines[0].startswith(f"{IMAGES / 'red.png'}: {SENTENCE.format('red')}")
    assert lines[0].endswith(" percent confidence.")
    assert lines[1].startswith(f"{IMAGES / 'green.jpg'}: {SENTENCE.format('green')}")
    assert r.stderr == ""


def test_predict_walks_directories_and_skips_hidden_files(tmp_path):
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    shutil.copy(IMAGES / "red.png", d / "sub" / "a red one.png")
    shutil.copy(IMAGES / "blue.png", d / "b.png")
    (d / ".DS_Store").write_bytes(b"\0\1junk")
    (d / "notes.txt").write_text("not an image")
    (d / ".hidden").mkdir()
    shutil.copy(IMAGES / "red.png", d / ".hidden" / "x.png")
    r = run("predict", MODEL, d)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [
        f"{d / 'b.png'}: This image most likely belongs to blue with a 100.00 percent confidence.",
        f"{d / 'sub' / 'a red one.png'}: This image most likely belongs to red with a 100.00 percent confidence.",
    ]


def test_a_bad_image_is_reported_and_the_others_predicted(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"")
    fake = tmp_path / "page.png"
    fake.write_text("<html></html>")
    r = run("predict", MODEL, IMAGES / "red.png", bad, tmp_path / "missing.png", fake, IMAGES / "blue.png")
    assert r.exit_code == 1
    out = r.stdout.splitlines()
    assert len(out) == 2 and "red.png: " in out[0] and "blue.png: " in out[1], r.stdout
    err = r.stderr.splitlines()
    assert len(err) == 3, r.stderr
    assert any("broken.jpg" in e and "empty file" in e for e in err), r.stderr
    assert any("missing.png" in e and "no such file" in e for e in err), r.stderr
    assert any("page.png" in e and "not an image" in e for e in err), r.stderr
    assert all(e.startswith("Error: ") for e in err)


def test_predict_json(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n")
    r = run("predict", MODEL, IMAGES / "light_gray.png", bad, "--json", "-", "--top-k", "2")
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    assert [d["source"] for d in data] == [str(IMAGES / "light_gray.png"), str(bad)]
    assert data[0]["label"] == "blue" and len(data[0]["top_k"]) == 2 and len(data[0]["probabilities"]) == 3
    assert abs(sum(data[0]["probabilities"]) - 1) < 1e-5
    assert "error" in data[1]


def test_top_k_adds_the_next_labels():
    r = run("predict", MODEL, IMAGES / "light_gray.png", "--top-k", "3")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"{IMAGES / 'light_gray.png'}: {SENTENCE.format('blue')}")
    assert lines[1].startswith("    2. green ") and lines[1].endswith(" percent")
    assert lines[2].startswith("    3. red ")


def test_labels_option_for_a_file_without_metadata(tmp_path):
    r = run("predict", FIXTURES / "colour_nometa.tflite", IMAGES / "red.png")
    assert r.exit_code == 1
    assert "no edgeclf metadata" in r.stderr and "--labels" in r.stderr
    labels = tmp_path / "labels.txt"
    labels.write_text("rouge\nvert\nbleu\n")
    r = run("predict", FIXTURES / "colour_nometa.onnx", IMAGES / "red.png", "--labels", labels)
    assert r.exit_code == 0, r.output
    assert SENTENCE.format("rouge") in r.stdout
    labels.write_text("a\nb\n")
    r = run("predict", FIXTURES / "colour_nometa.onnx", IMAGES / "red.png", "--labels", labels)
    assert r.exit_code == 1 and "3 outputs but 2 labels" in r.stderr


@pytest.mark.parametrize("args,code,words", [
    (["--threads", "0"], 2, "--threads must be at least 1"),
    (["--top-k", "0"], 2, "0 is not in the range"),
])
def test_bad_options(args, code, words):
    r = run("predict", MODEL, IMAGES / "red.png", *args)
    assert r.exit_code == code and words in r.stderr


def test_bad_model_file_is_one_error_line(tmp_path):
    renamed = tmp_path / "model.tflite"
    shutil.copy(FIXTURES / "colour_float32.onnx", renamed)
    r = run("predict", renamed, IMAGES / "red.png")
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines() == [f"Error: {renamed}: this is an ONNX model named .tflite; "
                                            "rename it to model.onnx"]


def test_empty_directory(tmp_path):
    r = run("predict", MODEL, tmp_path)
    assert r.exit_code == 1 and "no image files in this directory" in r.stderr


# ---- verify -------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["colour_int8.tflite", "colour_int8.onnx", "binary_int8.tflite"])
def test_verify_passes(model):
    r = run("verify", FIXTURES / model, FIXTURES / "golden.npz", "--threads", "1")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"OK: {model} ")
    assert "8 golden images" in r.stdout


def test_verify_fails_with_worst_deviations(tmp_path):
    with np.load(FIXTURES / "golden.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["probs::colour_int8.tflite"][4] = np.roll(arrays["probs::colour_int8.tflite"][4], 1)
    golden = tmp_path / "golden.npz"
    np.savez(golden, **arrays)
    r = run("verify", MODEL, golden)
    assert r.exit_code == 1
    assert r.stdout.startswith("FAILED: colour_int8.tflite")
    assert "worst deviations:" in r.stdout
    table = r.stdout.split("worst deviations:\n")[1].splitlines()
    assert table[0].split()[:5] == ["image", "label", "recorded", "now", "|diff|"]
    assert table[2].split()[0] == "4" and table[2].split()[-1] == "over"


def test_verify_json_and_missing_entry(tmp_path):
    r = run("verify", MODEL, FIXTURES / "golden.npz", "--json", "-")
    assert r.exit_code == 0
    d = json.loads(r.stdout)
    assert d["passed"] is True and d["entry"] == "colour_int8.tflite"
    other = tmp_path / "other.tflite"
    shutil.copy(MODEL, other)
    r = run("verify", other, FIXTURES / "golden.npz")  # a renamed file is found by its content
    assert r.exit_code == 0 and r.stdout.startswith("OK: other.tflite"), r.stderr
    with np.load(FIXTURES / "golden.npz") as z:
        np.savez(tmp_path / "g.npz", **{k: z[k] for k in z.files if not k.endswith("::colour_int8.tflite")})
    r = run("verify", other, tmp_path / "g.npz")
    assert r.exit_code == 1 and "this file is not the one golden.npz was made for" in r.stderr, r.stderr
    r = run("verify", other, tmp_path / "g.npz", "--by-name")
    assert r.exit_code == 1
    assert "no golden entry for other.tflite" in r.stderr and "colour_int8_int8io.tflite" in r.stderr


def test_a_reader_that_leaves_early_stops_predict_quietly(tmp_path):
    import subprocess
    import sys

    # More output than a pipe buffers (64 KB), so the writer must meet the closed pipe.
    for i in range(700):
        shutil.copy(IMAGES / "red.png", tmp_path / f"r{i:03}.png")
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from edgeclf.cli import main; main(sys.argv[1:])",
                             "predict", MODEL, str(tmp_path), "--top-k", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert b"This image most likely belongs to red" in first
    assert proc.returncode == 141, (proc.returncode, err)
    assert err == "", err


def test_unicode_and_spaces_in_paths_and_labels(tmp_path):
    d = tmp_path / "fotos del jardín"
    d.mkdir()
    shutil.copy(IMAGES / "red.png", d / "tulipán rojo 🌷.png")
    labels = tmp_path / "labels.txt"
    labels.write_text("rosa roja\nhoja verde\ncielo azul\n", encoding="utf-8")
    r = run("predict", FIXTURES / "colour_nometa.tflite", d, "--labels", labels)
    assert r.exit_code == 0, r.output
    assert r.stdout == (f"{d / 'tulipán rojo 🌷.png'}: This image most likely belongs to rosa roja "
                        "with a 100.00 percent confidence.\n")
    data = json.loads(run("predict", FIXTURES / "colour_nometa.tflite", d, "--labels", labels, "--json", "-").stdout)
    assert data[0]["label"] == "rosa roja" and data[0]["source"].endswith("tulipán rojo 🌷.png")


def test_verify_refuses_a_changed_file_with_its_name_unless_by_name(tmp_path):
    import dataclasses

    from edgeclf.export.metadata import embed_tflite_metadata
    from edgeclf.runtime import load_classifier

    model = Path(MODEL)
    meta = load_classifier(model, threads=1).metadata
    a, b, *rest = meta.labels
    changed = tmp_path / model.name
    changed.write_bytes(embed_tflite_metadata(model.read_bytes(), dataclasses.replace(meta, labels=(b, a, *rest))))
    r = run("verify", changed, FIXTURES / "golden.npz")
    assert r.exit_code == 1 and r.stdout == "", r.output
    assert "this file is not the one golden.npz was made for" in r.stderr and "--by-name" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = run("verify", changed, FIXTURES / "golden.npz", "--by-name")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"OK: {model.name}") and "matched by name" in r.stdout, r.stdout
    r = run("verify", MODEL, FIXTURES / "golden.npz", "--by-name")
    assert r.exit_code == 0 and "matched by name" not in r.stdout, r.stdout
