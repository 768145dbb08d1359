"""Bad model files: each gives one clear ModelFileError (what, which file, what to do), never an
engine's own exception, and nothing from the engines on the terminal."""

import random
from pathlib import Path

import pytest

from edgeclf.errors import ModelFileError
from edgeclf.runtime import load_classifier

FIXTURES = Path(__file__).parent / "fixtures"
TFLITE = (FIXTURES / "colour_int8.tflite").read_bytes()
ONNX = (FIXTURES / "colour_float32.onnx").read_bytes()

# name -> (content, words the message must hold)
CASES = {
    "empty.tflite": (b"", ["empty file (0 bytes)", "export"]),
    "empty.onnx": (b"", ["empty file (0 bytes)", "export"]),
    "truncated_half.tflite": (TFLITE[: len(TFLITE) // 2], ["LiteRT cannot load", "damaged or truncated"]),
    "truncated_head.tflite": (TFLITE[:200], ["damaged or truncated"]),
    "truncated_tail.tflite": (TFLITE[:-64], ["damaged or truncated"]),
    "truncated_half.onnx": (ONNX[: len(ONNX) // 2], ["ONNX Runtime cannot load", "damaged or truncated"]),
    "truncated_tail.onnx": (ONNX[:-10], ["damaged or truncated"]),
    "random.tflite": (bytes(range(256)) * 12, ["not a TFLite model", "copy or export"]),
    "random.onnx": (random.Random(0).randbytes(3000), ["ONNX Runtime cannot load", "not ONNX"]),
    "looks_like_onnx.onnx": (b"\x08\x07" + bytes(range(256)) * 8, ["ONNX Runtime cannot load"]),
    "picture.tflite": ((FIXTURES / "images" / "red.png").read_bytes(), ["not a TFLite model"]),
    "text.onnx": (b"hello\n" * 100, ["ONNX Runtime cannot load"]),
    # A name that is not UTF-8: ORT's loader fails in Python and prints a banner on stdout.
    "bad_utf8_name.onnx": (ONNX.replace(b"image", b"\xe3\x28age", 1), ["ONNX Runtime cannot load"]),
    "onnx_renamed.tflite": (ONNX, ["this is an ONNX model named .tflite", "rename it to onnx_renamed.onnx"]),
    "tflite_renamed.onnx": (TFLITE, ["this is a TFLite model named .onnx", "rename it to tflite_renamed.tflite"]),
    "model.pb": (TFLITE, ["unknown model file type '.pb'", ".onnx, .ort, .tflite"]),
    "model": (TFLITE, ["unknown model file type", ".onnx, .ort, .tflite"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_model_file_gives_one_clear_line(name, tmp_path, capfd):
    content, words = CASES[name]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as err:
        load_classifier(path, threads=1)
    msg = str(err.value)
    assert "\n" not in msg, f"more than one line: {msg!r}"
    assert str(path) in msg, f"the message does not name the file: {msg}"
    for w in words:
        assert w in msg, f"{w!r} missing from: {msg}"
    out, errout = capfd.readouterr()
    assert out == "" and errout == "", f"the engine wrote to the terminal: {out!r} {errout!r}"


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ModelFileError, match="model file not found: .*missing.tflite"):
        load_classifier(tmp_path / "missing.tflite")
    with pytest.raises(ModelFileError, match="is a directory"):
        load_classifier(tmp_path)
    (tmp_path / "dir.tflite").mkdir()
    with pytest.raises(ModelFileError, match="is a directory"):
        load_classifier(tmp_path / "dir.tflite")


@pytest.mark.parametrize("name", ["colour_nometa.tflite", "colour_nometa.onnx"])
def test_missing_metadata_without_labels_says_what_to_do(name):
    with pytest.raises(ModelFileError) as err:
        load_classifier(FIXTURES / name, threads=1)
    msg = str(err.value)
    assert name in msg and "no edgeclf metadata" in msg and "--labels" in msg, msg


def test_malformed_metadata_is_a_model_file_error(tmp_path):
    from edgeclf.export.metadata import embed_tflite_metadata  # test-only use of the writer
    from edgeclf.runtime.spec import ModelSpec

    meta = ModelSpec(labels=("a", "b", "c"), input_size=(32, 32))
    good = embed_tflite_metadata((FIXTURES / "colour_nometa.tflite").read_bytes(), meta)
    bad = good.replace(b'"labels": ["a", "b", "c"]', b'"labels": 7              ')
    assert bad != good
    path = tmp_path / "bad_meta.tflite"
    path.write_bytes(bad)
    with pytest.raises(ModelFileError, match="bad_meta.tflite.*metadata is malformed"):
        load_classifier(path, threads=1)


def test_metadata_for_another_input_size_is_refused(tmp_path):
    from edgeclf.export.metadata import embed_tflite_metadata
    from edgeclf.runtime.spec import ModelSpec

    meta = ModelSpec(labels=("a", "b", "c"), input_size=(64, 64))
    path = tmp_path / "wrong_size.tflite"
    path.write_bytes(embed_tflite_metadata((FIXTURES / "colour_nometa.tflite").read_bytes(), meta))
    with pytest.raises(ModelFileError, match="metadata says input 64x64 but the model takes 32x32"):
        load_classifier(path, threads=1)


@pytest.mark.parametrize("name", ["colour_int8.tflite", "colour_int16x8.tflite", "colour_float32.onnx",
                                  "colour_int8.onnx"])
def test_mutated_model_files_load_or_give_a_model_file_error(name, tmp_path, capfd):
    """Bit flips, truncations and zeroed runs (seeded): each file either still loads and runs, or
    gives a ModelFileError; no engine exception, no crash, nothing on the terminal."""
    import numpy as np

    rng = random.Random(name)
    original = (FIXTURES / name).read_bytes()
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(40):
        data = bytearray(original)
        kind = i % 3
        if kind == 0:
            for _ in range(rng.randint(1, 8)):
                j = rng.randrange(len(data))
                data[j] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data = data[: rng.randrange(len(data))]
        else:
            j = rng.randrange(len(data))
            n = min(rng.randint(1, 64), len(data) - j)
            data[j:j + n] = bytes(n)
        path = tmp_path / name
        path.write_bytes(bytes(data))
        try:
            clf = load_classifier(path, threads=1)
            clf.predict_proba(np.zeros((2, *clf.input_size, 3), np.uint8))
            outcomes["loaded"] += 1
        except ModelFileError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0, outcomes
    out, err = capfd.readouterr()
    assert out == "" and err == "", f"engine output reached the terminal: {out[:300]!r} {err[:300]!r}"
