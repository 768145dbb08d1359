"""Export options, calibration sampling and golden files: fast, no TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest

from edgeclf.errors import UsageError
from edgeclf.export.calibration import stratified_sample
from edgeclf.export.converters import CONVERTERS, plan_jobs
from edgeclf.runtime.metrics import collapse_reason
from edgeclf.export.golden import write_golden
from edgeclf.runtime.spec import GOLDEN_ATOL
from edgeclf.runtime.spec import DEFAULT_FORMATS, SUPPORTED_PRECISIONS, Format, Precision


def test_default_plan_is_every_supported_pair():
    jobs, left = plan_jobs()
    want = [(f, p) for f in DEFAULT_FORMATS for p in SUPPORTED_PRECISIONS[f]]
    assert [(j.format, j.precision) for j in jobs] == want
    assert all(j.deliver for j in jobs) and left == []


def test_registry_covers_exactly_what_each_format_holds():
    assert set(CONVERTERS) == {(f, p) for f in Format for p in SUPPORTED_PRECISIONS[f]}


def test_an_ort_file_is_planned_after_the_onnx_file_it_is_made_from():
    jobs, _ = plan_jobs(["ort"], ["int8"])
    assert [(j.format, j.precision, j.deliver) for j in jobs] == [
        (Format.ONNX, Precision.INT8, False), (Format.ORT, Precision.INT8, True)]
    jobs, _ = plan_jobs(["onnx", "ort"], ["int8"])
    assert [(j.format, j.deliver) for j in jobs] == [(Format.ONNX, True), (Format.ORT, True)]


def test_precision_goes_to_the_formats_that_support_it():
    jobs, _ = plan_jobs(precisions=["float16"])
    assert [(j.format, j.precision) for j in jobs] == [(Format.TFLITE, Precision.FLOAT16)]


@pytest.mark.parametrize("fmt,prec", [("onnx", "float16"), ("onnx", "int16x8")])
def test_unsupported_combination_lists_the_supported_ones(fmt, prec):
    with pytest.raises(UsageError) as e:
        plan_jobs([fmt], [prec])
    assert f"onnx does not support precision {prec}" in str(e.value)
    assert "float32, dynamic, int8, qat" in str(e.value)


@pytest.mark.parametrize("kw,needle", [({"formats": ["coreml"]}, "unknown format 'coreml'"),
                                       ({"precisions": ["int4"]}, "unknown precision 'int4'")])
def test_unknown_names_are_refused(kw, needle):
    with pytest.raises(UsageError, match=needle):
        plan_jobs(**kw)


def test_without_data_the_defaults_say_what_is_left_out():
    jobs, left = plan_jobs(has_calibration=False, has_training=False)
    assert {j.precision for j in jobs} == {Precision.FLOAT32, Precision.FLOAT16, Precision.DYNAMIC}
    assert ("tflite", "int8", "int8 needs calibration images (--calibration DATA or --data DATA)") in left
    assert any(p == "qat" and "training images" in why for _, p, why in left)


def test_asking_for_int8_without_data_is_an_error():
    with pytest.raises(UsageError, match="calibration images"):
        plan_jobs(["tflite"], ["int8"], has_calibration=False)


def test_stratified_sample_is_seeded_and_balanced():
    samples = [(f"a{i}", 0) for i in range(50)] + [(f"b{i}", 1) for i in range(5)] + [(f"c{i}", 2) for i in range(50)]
    one = stratified_sample(samples, 12, seed=1)
    assert one == stratified_sample(samples, 12, seed=1)
    assert one != stratified_sample(samples, 12, seed=2)
    counts = np.bincount([i for _, i in one], minlength=3)
    assert counts.tolist() == [4, 4, 4]
    # more than there are: every image, once
    everything = stratified_sample(samples, 1000, seed=1)
    assert sorted(everything) == sorted(samples)


def test_collapse_detection():
    ref = np.eye(3)[np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])]
    assert "predicts '1' for all 12" in collapse_reason(np.eye(3)[np.ones(12, int)], ref)
    assert "agrees with the reference on only" in collapse_reason(np.roll(ref, 1, axis=0), ref)
    assert collapse_reason(ref.copy(), ref) is None


def test_golden_file_layout(tmp_path):
    images = np.zeros((2, 4, 4, 3), np.uint8)
    probs = np.full((2, 3), 1 / 3, np.float32)
    write_golden(tmp_path / "golden.npz", images, {"model_int8.tflite": (probs, GOLDEN_ATOL[Precision.INT8])})
    g = np.load(tmp_path / "golden.npz")
    assert g["images"].dtype == np.uint8 and g["images"].shape == (2, 4, 4, 3)
    assert g["probs::model_int8.tflite"].dtype == np.float32
    assert float(g["atol::model_int8.tflite"]) == 5e-2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp file left behind"


def test_export_imports_neither_tensorflow_nor_the_trainer_until_it_converts():
    import subprocess
    import sys

    code = ("import sys; from edgeclf.export import export_model; import edgeclf.cli.export; "
            "import edgeclf.export.source, edgeclf.export.tflite, edgeclf.export.qat, edgeclf.export.onnx_export; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'tf2onnx') "
            "or m.startswith('edgeclf.train.trainer')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_data_split_drops_unreadable_images_first_as_training_does(tmp_path, monkeypatch):
    """Training drops unreadable files and then splits; --data must too, or one bad file
    reshuffles its class and training images land in the export's validation set."""
    from _export_helpers import make_images

    from edgeclf.data.folders import drop_bad, scan_folder
    from edgeclf.data.splits import split_folder
    from edgeclf.export.calibration import ImageBank
    from edgeclf.export.source import _split_data

    monkeypatch.setenv("EDGECLF_CACHE_DIR", str(tmp_path / "cache"))
    labels = ("red", "green")
    make_images(tmp_path / "d", per_class=9, labels=labels)
    bad = tmp_path / "d" / "green" / "img_004b.png"
    bad.write_bytes(b"not a png")
    folder = drop_bad(scan_folder(tmp_path / "d"), {str(bad): "corrupt"})
    want = split_folder(folder, val_split=0.2, seed=5)
    to_label = [labels.index(n) for n in want.class_names]
    bank = ImageBank((32, 32))
    train, val, test = _split_data(tmp_path / "d", labels, (32, 32), "bilinear", seed=5, val_split=0.2,
                                   test_split=0.0, bank=bank)
    assert val == [(p, to_label[y]) for p, y in want.val]
    assert train == [(p, to_label[y]) for p, y in want.train] and test == []
    assert bank.get(train[0][0]).shape == (32, 32, 3) and bank.decoded == 0  # decoded once, in the split


def test_collapse_is_not_judged_on_rows_the_reference_cannot_decide():
    undecided = np.tile([[0.5002, 0.4998]], (12, 1))
    assert collapse_reason(np.tile([[0.4999, 0.5001]], (12, 1)), undecided) is None
