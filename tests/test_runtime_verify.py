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
    assert "this file is not the one golden.npz was made for" in str(err.value)  # the golden file records hashes
    with pytest.raises(DataError) as err:
        verify_golden(renamed, golden, threads=1, by_name=True)
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


def _labels_swapped(tmp_path, name="colour_float32.tflite") -> Path:
    """The fixture with two labels swapped inside its metadata: same weights, another file."""
    import dataclasses

    from edgeclf.export.metadata import embed_tflite_metadata

    meta = load_classifier(FIXTURES / name, threads=1).metadata
    red, green, blue = meta.labels
    out = tmp_path / name  # the same name as the golden entry
    out.write_bytes(embed_tflite_metadata((FIXTURES / name).read_bytes(),
                                          dataclasses.replace(meta, labels=(green, red, blue))))
    assert load_classifier(out, threads=1).labels == (green, red, blue)
    return out


def test_a_changed_file_under_the_recorded_name_is_refused(tmp_path):
    changed = _labels_swapped(tmp_path)
    with pytest.raises(DataError) as err:
        verify_golden(changed, GOLDEN, threads=1)
    msg = str(err.value)
    assert "this file is not the one golden.npz was made for" in msg, msg
    assert "its name matches the entry for colour_float32.tflite" in msg and "--by-name" in msg, msg
    # --by-name is the explicit way; the report says how it was matched
    report = verify_golden(changed, GOLDEN, threads=1, by_name=True)
    assert report.entry == "colour_float32.tflite" and report.matched_by == "name"
    assert verify_golden(FIXTURES / "colour_float32.tflite", GOLDEN, threads=1).matched_by == "sha256"
    assert verify_golden(FIXTURES / "colour_float32.tflite", GOLDEN, threads=1, by_name=True).matched_by == "sha256"


def test_a_golden_file_without_hashes_matches_by_name(tmp_path):
    golden = _doctored(tmp_path, **{k.replace("::", "__"): None for k in np.load(GOLDEN).files
                                    if k.startswith("sha256::")})
    report = verify_golden(FIXTURES / "colour_int8.tflite", golden, threads=1)
    assert report.passed and report.matched_by == "name"
    renamed = tmp_path / "mine.tflite"
    shutil.copy(FIXTURES / "colour_int8.tflite", renamed)
    with pytest.raises(DataError, match="no golden entry for mine.tflite"):
        verify_golden(renamed, golden, threads=1)
    with pytest.raises(DataError, match=r"no golden entry for mine.tflite \(by name"):
        verify_golden(renamed, GOLDEN, threads=1, by_name=True)
