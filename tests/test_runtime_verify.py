"""The golden check (verify_golden) on the committed fixtures and on doctored golden files."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeclf.errors import DataError
from edgeclf.runtime import load_classifier
from edgeclf.runtime.verify import GoldenReport, verify_golden

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "golden.npz"
# ties_*.tflite have no golden entry: they are made to tie, for test_phone_clients' tie test.
MODELS = sorted(p.name for p in FIXTURES.iterdir() if p.suffix in (".tflite", ".onnx") and "nometa" not in p.name
                and not p.name.startswith("ties_"))


def _doctored(tmp_path, **changes) -> Path:
    with np.load(GOLDEN) as z:
        arrays = {k: z[k] for k in z.files}
    for k, v in changes.items():
        if v is None:
            arrays.pop(k.replace("__", "::"))
        else:
            arrays[k.replace("__", "::")] = v
    out = tmp_path / "golden.npz"
    np.savez(out, **arrays)
    return out


@pytest.mark.parametrize("name", MODELS)
def test_every_fixture_passes_its_golden_record(name):
    report = verify_golden(FIXTURES / name, GOLDEN, threads=1)
    assert isinstance(report, GoldenReport)
    assert report.passed, f"{name}: max |diff| {report.max_abs_diff} over {report.atol}"
    assert report.images == 8 and report.entry == name
    assert report.top1_agreement == 1.0
    json.dumps(report.to_dict())  # JSON-ready


def test_a_drifted_model_fails_with_its_worst_deviations(tmp_path):
    with np.load(GOLDEN) as z:
        probs = z["probs::colour_int8.tflite"].copy()
    probs[5] = probs[5][[1, 0, 2]]  # image 5: swap red and green
    probs[6, 0] -= 0.1  # image 6: a small drift
    golden = _doctored(tmp_path, **{"probs__colour_int8.tflite": probs})
    report = verify_golden(load_classifier(FIXTURES / "colour_int8.tflite", threads=1), golden, worst=3)
    assert not report.passed
    assert report.max_abs_diff > 0.5
    assert [d.image for d in report.worst[:2]] == [5, 6], report.worst
    assert report.worst[1].label == "red" and abs(report.worst[1].abs_diff - 0.1) < 1e-3
    assert report.top1_agreement == 7 / 8
    assert len(report.worst) == 3 and report.worst[0].abs_diff >= report.worst[1].abs_diff >= report.worst[2].abs_diff


def test_tolerance_is_the_recorded_one(tmp_path):
    with np.load(GOLDEN) as z:
        probs = z["probs::colour_float16.tflite"] + np.float32(0.01)
    loose = _doctored(tmp_path, **{"probs__colour_float16.tflite": probs, "atol__colour_float16.tflite": np.float64(0.02)})
    assert verify_golden(FIXTURES / "colour_float16.tflite", loose, threads=1).passed
    tight = _doctored(tmp_path, **{"probs__colour_float16.tflite": probs, "atol__colour_float16.tflite": np.float64(0.005)})
    assert not verify_golden(FIXTURES / "colour_float16.tflite", tight, threads=1).passed


def test_no_entry_for_the_model_lists_the_ones_there(tmp_path):
    renamed = tmp_path / "mine.tflite"
    shutil.copy(FIXTURES / "colour_int8.tflite", renamed)
    assert verify_golden(renamed, GOLDEN, threads=1).entry == "colour_int8.tflite"  # found by its content
    golden = _doctored(tmp_path, **{f"{k}__colour_int8.tflite": None for k in ("probs", "atol", "sha256")})
    with pytest.raises(DataError) as err:
        verify_golden(renamed, golden, threads=1)
    msg = str(err.value)
    assert "no golden entry for mine.tflite" in msg and "colour_int8_int8io.tflite" in msg and "binary_float32.onnx" in msg


def test_bad_golden_files(tmp_path):
    with pytest.raises(DataError, match="golden file not found"):
        verify_golden(FIXTURES / "colour_int8.tflite", tmp_path / "nope.npz", threads=1)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable golden"):
        verify_golden(FIXTURES / "colour_int8.tflite", junk, threads=1)
    no_images = _doctored(tmp_path, images=None)
    with pytest.raises(DataError, match="no 'images' array"):
        verify_golden(FIXTURES / "colour_int8.tflite", no_images, threads=1)
    small = _doctored(tmp_path, images=np.zeros((2, 16, 16, 3), np.uint8))
    with pytest.raises(DataError, match="written for another model"):
        verify_golden(FIXTURES / "colour_int8.tflite", small, threads=1)
