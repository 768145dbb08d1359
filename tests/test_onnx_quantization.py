"""Issue 12: quantized ONNX files must give the same results on every CPU.

ONNX Runtime multiplies uint8 activations by int8 weights on x86 CPUs without VNNI with
PMADDUBSW, which saturates the sum of two products at 16 bits; VNNI and ARM do not. So the
files are made to avoid the saturating case (dynamic: uint8 weights; int8: 7-bit weights), the
runtime turns on ORT's exact path for other files, and these tests compare ONNX Runtime on
this CPU with the ONNX reference evaluator (numpy integer arithmetic, the same on any CPU).
No TensorFlow: the committed fixtures, and ``quantize_onnx`` run on the committed float file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from edgeclf.runtime.spec import GOLDEN_ATOL
from edgeclf.runtime import load_classifier
from edgeclf.runtime.classifier import softmax
from edgeclf.runtime.spec import Precision
from edgeclf.runtime.verify import load_golden

FIXTURES = Path(__file__).parent / "fixtures"
IMAGES = load_golden(FIXTURES / "golden.npz")["images"]
# uint8 x int8 pairs never exceed int16 when |weight| <= 64: 2 * 255 * 64 = 32640 <= 32767.
SAFE_INT8 = 64


def _weights(model, ops):
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ops:
            for name in node.input:
                w = inits.get(name)
                if w is not None and w.dtype in (np.int8, np.uint8) and w.size > 1:
                    yield node.op_type, name, w


def _check_cpu_independent(model) -> None:
    weights = list(_weights(model, ("MatMulInteger", "ConvInteger", "DequantizeLinear",
                                    "QLinearConv", "QLinearMatMul", "DynamicQuantizeMatMul")))
    assert weights, "no quantized weights found"
    for op, name, w in weights:
        if op in ("MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul"):
            assert w.dtype == np.uint8, f"{op} {name}: {w.dtype} weights (u8s8 saturates on CPUs without VNNI)"
        elif w.dtype == np.int8:
            assert int(np.abs(w.astype(np.int32)).max()) <= SAFE_INT8, \
                f"{op} {name}: int8 weights up to {np.abs(w.astype(np.int32)).max()} (not reduce_range)"


def _reference_probs(path: Path) -> np.ndarray:
    model = onnx.load(str(path))
    for o in model.opset_import:  # the reference evaluator implements (De)QuantizeLinear from opset 19
        if o.domain in ("", "ai.onnx") and o.version < 19:
            o.version = 19
    ref = ReferenceEvaluator(model)
    out = np.concatenate([ref.run(None, {"image": IMAGES[i:i + 1].astype(np.float32)})[0]
                          for i in range(len(IMAGES))])
    return softmax(out)


@pytest.mark.parametrize("name", ["colour_dynamic.onnx", "colour_int8.onnx"])
def test_committed_quantized_onnx_avoid_the_saturating_products(name):
    _check_cpu_independent(onnx.load(str(FIXTURES / name)))


@pytest.mark.parametrize("name, precision, bound", [
    # dynamic: uint8 x uint8 integer products are exact everywhere; only float rounding is left
    ("colour_dynamic.onnx", Precision.DYNAMIC, 1e-3),
    ("colour_int8.onnx", Precision.INT8, GOLDEN_ATOL[Precision.INT8]),
])
def test_onnx_runtime_here_matches_the_cpu_independent_reference(name, precision, bound):
    assert bound <= GOLDEN_ATOL[precision]
    got = load_classifier(FIXTURES / name, threads=1).predict_proba(IMAGES)
    want = _reference_probs(FIXTURES / name)
    diff = float(np.abs(got - want).max())
    assert diff <= bound, f"{name}: ONNX Runtime on this CPU is {diff:.4f} from the reference (bound {bound})"


@pytest.mark.parametrize("precision", [Precision.DYNAMIC, Precision.INT8])
def test_quantize_onnx_makes_cpu_independent_files(precision):
    from edgeclf.export.onnx_export import quantize_onnx

    float_model = onnx.load(str(FIXTURES / "colour_nometa.onnx"))
    calibration = IMAGES if precision is Precision.INT8 else None
    _check_cpu_independent(quantize_onnx(float_model, precision, calibration=calibration))
