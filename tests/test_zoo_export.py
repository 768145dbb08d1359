"""Every zoo model exports with the default precision list: what a converter cannot do for a
model (int16x8 on MobileNetV3's HARD_SWISH, ...) is skipped with its reason, never the rest."""

import json

import pytest

from edgeclf.train.zoo import MODELS

SIZE = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from edgeclf.data.synth import generate

    root = tmp_path_factory.mktemp("zoo") / "data"
    generate(root, classes=2, per_class=8, size=SIZE, seed=1)
    return root


@pytest.mark.slow
# mobilenet_v2 is left out here for the suite's time (90 s): its export is covered nested, with
# QAT, in test_export.py (tf_keras) and test_export_pipeline.py (Keras 3, every default file).
@pytest.mark.parametrize("name", sorted(set(MODELS) - {"mobilenet_v2"}))
def test_every_zoo_model_exports_with_the_default_precisions(name, data, tmp_path):
    from edgeclf.export import export_model
    from edgeclf.runtime.layout import ExportDir
    from edgeclf.runtime.spec import DEFAULT_FORMATS, SUPPORTED_PRECISIONS
    from edgeclf.train import train_model

    extra = {"alpha": 0.35} if MODELS[name].transfer else {}
    run = train_model(data, out=tmp_path / "run", model=name, epochs=1, batch_size=8, image_size=SIZE,
                      verbose=False, **extra)
    report = export_model(run.out, tmp_path / "export", qat_epochs=0, calibration_size=8)
    wanted = {ExportDir.model_name(f, p) for f in DEFAULT_FORMATS for p in SUPPORTED_PRECISIONS[f]}
    written = {f.file for f in report.files}
    skipped = {x.file: x.reason for x in report.not_exported}
    assert written | set(skipped) == wanted and not written & set(skipped)
    assert "model_float32.tflite" in written and "model_float32.onnx" in written
    assert all(why for why in skipped.values()), skipped
    recorded = json.loads((tmp_path / "export" / ExportDir.REPORT).read_text())["not_exported"]
    assert {x["file"] for x in recorded} == set(skipped)
    if name == "mobilenet_v3_small":
        assert "model_int16x8.tflite" in skipped, "the issue's case: int16x8 cannot do HARD_SWISH"
