"""Parity metrics on hand-made predictions, where every expected number is worked out by hand."""

import json

import numpy as np
import pytest

from edgeclf.errors import UsageError
from edgeclf.runtime.metrics import (abs_prob_diff, accuracy, check_parity, per_class_accuracy,
                                    top1_agreement)

LABELS = ("cat", "dog", "fox")
# 5 images; true classes:        cat  dog  fox  cat  dog
Y = np.array([0, 1, 2, 0, 1])
REF = np.array([
    [0.7, 0.2, 0.1],   # cat  right
    [0.1, 0.8, 0.1],   # dog  right
    [0.2, 0.2, 0.6],   # fox  right
    [0.3, 0.6, 0.1],   # dog  wrong
    [0.1, 0.7, 0.2],   # dog  right
], np.float32)
OUT = np.array([
    [0.6, 0.3, 0.1],   # cat  right   (same as ref)
    [0.5, 0.4, 0.1],   # cat  wrong   (flip: broke)
    [0.2, 0.2, 0.6],   # fox  right   (same)
    [0.6, 0.3, 0.1],   # cat  right   (flip: fixed)
    [0.1, 0.3, 0.6],   # fox  wrong   (flip: broke)
], np.float32)


def test_accuracy_and_agreement_by_hand():
    assert accuracy(REF, Y) == pytest.approx(4 / 5)
    assert accuracy(OUT, Y) == pytest.approx(3 / 5)
    assert top1_agreement(OUT, REF) == pytest.approx(2 / 5)
    assert top1_agreement(REF, REF) == 1.0


def test_abs_diff_by_hand():
    mx, mean = abs_prob_diff(OUT, REF)
    assert mx == pytest.approx(0.4, abs=1e-6)  # row 1 column 1 (0.8 vs 0.4) and row 4 column 1
    assert mean == pytest.approx(np.abs(OUT.astype(np.float64) - REF).mean())


def test_per_class_accuracy_nan_for_absent_class():
    acc = per_class_accuracy(OUT, np.array([0, 1, 0, 0, 1]), 3)
    assert acc[0] == pytest.approx(2 / 3) and acc[1] == pytest.approx(0.0)
    assert np.isnan(acc[2])


def test_check_parity_report():
    r = check_parity(OUT, REF, Y, labels=LABELS, sources=[f"img{i}.png" for i in range(5)])
    assert r.num_images == 5
    assert r.accuracy == pytest.approx(0.6) and r.reference_accuracy == pytest.approx(0.8)
    assert r.accuracy_delta == pytest.approx(-20.0), "delta is in percentage points, model minus reference"
    assert r.agreement == pytest.approx(0.4)
    assert [f.index for f in r.flips] == [1, 3, 4]
    assert [f.kind for f in r.flips] == ["broke", "fixed", "broke"]
    f = r.flips[0]
    assert (f.source, f.true_label, f.reference_label, f.label) == ("img1.png", "dog", "dog", "cat")
    assert f.confidence == pytest.approx(0.5) and f.reference_confidence == pytest.approx(0.8)
    by = {c.label: c for c in r.per_class}
    assert by["cat"].count == 2 and by["cat"].delta == pytest.approx(50.0)   # 1/2 -> 2/2
    assert by["dog"].count == 2 and by["dog"].delta == pytest.approx(-100.0)  # 2/2 -> 0/2
    assert by["fox"].delta == pytest.approx(0.0)
    assert r.passed and r.failures == ()


def test_gates_turn_into_passed():
    assert not check_parity(OUT, REF, Y, max_accuracy_drop=19.9).passed
    assert check_parity(OUT, REF, Y, max_accuracy_drop=20.0).passed
    r = check_parity(OUT, REF, Y, min_agreement=0.5)
    assert not r.passed and "agreement" in r.failures[0]
    assert check_parity(OUT, REF, Y, min_agreement=0.4).passed
    both = check_parity(OUT, REF, Y, max_accuracy_drop=1, min_agreement=0.99)
    assert len(both.failures) == 2


def test_identical_model_agrees_fully():
    r = check_parity(REF, REF, Y, max_accuracy_drop=0, min_agreement=1.0)
    assert r.passed and r.agreement == 1.0 and r.accuracy_delta == 0.0 and r.flips == ()
    assert r.max_abs_diff == 0.0


def test_to_dict_is_json():
    d = json.loads(json.dumps(check_parity(OUT, REF, Y, labels=LABELS).to_dict()))
    assert d["agreement"] == pytest.approx(0.4)
    assert d["flips"][1]["kind"] == "fixed"
    assert d["per_class"][2]["label"] == "fox"


@pytest.mark.parametrize("kwargs, match", [
    (dict(probs=OUT[:4]), "shape"),
    (dict(y=Y[:3]), "5 class indices"),
    (dict(y=np.array([0, 1, 2, 0, 3])), "0..2"),
    (dict(labels=("a", "b")), "2 labels"),
    (dict(max_accuracy_drop=-1), ">= 0"),
    (dict(min_agreement=99), "fraction"),
])
def test_bad_arguments_raise_usage_error(kwargs, match):
    args = dict(probs=OUT, reference_probs=REF, y=Y)
    args.update(kwargs)
    with pytest.raises(UsageError, match=match):
        check_parity(args.pop("probs"), args.pop("reference_probs"), args.pop("y"), **args)


def test_parity_latency_report_never_import_tensorflow():
    """The runtime modules of this feature, and compare/bench running, load no TensorFlow."""
    import subprocess
    import sys
    from pathlib import Path

    fixture = Path(__file__).parent / "fixtures" / "colour_int8.tflite"
    code = (
        "import sys\n"
        "import edgeclf.runtime.metrics, edgeclf.runtime.latency, edgeclf.evaluate.report, edgeclf.cli.compare\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib is imported only to draw'\n"
        "from click.testing import CliRunner\n"
        "from edgeclf.cli import main\n"
        f"r = CliRunner().invoke(main, ['bench', {str(fixture)!r}, '--runs', '2', '--warmup', '0'])\n"
        "assert r.exit_code == 0, r.output\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras', 'tf2onnx'))\n"
        "print('LOADED', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LOADED []" in out.stdout, out.stdout
