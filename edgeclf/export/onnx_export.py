"""Keras → ONNX (tf2onnx), and ONNX Runtime quantization of the float file.

Every ONNX file takes ``image``: float32 NHWC values 0..255 with a dynamic batch, and names
its output after what it holds (``logits``, ``probabilities`` or ``sigmoid``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .._quiet import native_stderr_silenced
from ..errors import ExportError
from ..runtime.metadata import OutputKind, Precision

OPSET = 17
INPUT_NAME = "image"
ONNX_PRECISIONS = (Precision.FLOAT32, Precision.INT8, Precision.DYNAMIC, Precision.QAT)


def _onnx():
    from .._optional import require

    return require("onnx", purpose="ONNX export")


def _rename_value(graph, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
    for coll in (graph.input, graph.output, graph.value_info):
        for v in coll:
            if v.name == old:
                v.name = new


def convert_onnx(model, *, output_kind: OutputKind, opset: int = OPSET):
    """A tf_keras model (float or QAT) or a ``keras_load.LoadedModel`` as an ONNX ModelProto
    with the edgeclf input/output names (input ``image``, output named after its kind)."""
    from .._optional import import_tensorflow, require

    tf = import_tensorflow()
    onnx = _onnx()
    with native_stderr_silenced():
        tf2onnx = require("tf2onnx", purpose="ONNX export")
    from .keras_load import LoadedModel

    if isinstance(model, LoadedModel) and model.is_tf_keras and not model.needs_wrap:
        model = model.keras_model
    if isinstance(model, LoadedModel):  # Keras 3 / SavedModel / wrapped input: the traced function
        h, w = model.input_size
    else:
        h, w = int(model.inputs[0].shape[1]), int(model.inputs[0].shape[2])
    spec = (tf.TensorSpec((None, h, w, 3), tf.float32, name=INPUT_NAME),)
    try:
        with native_stderr_silenced():
            if isinstance(model, LoadedModel):  # the frozen, pruned inference graph
                gdef, inp, out = model.frozen_graph()
                proto, _ = tf2onnx.convert.from_graph_def(gdef, input_names=[inp + ":0"], output_names=[out + ":0"],
                                                          opset=opset)
            else:
                proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    except Exception as exc:  # tf2onnx raises anything from ValueError to KeyError
        raise ExportError(f"ONNX conversion failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}") from None
    graph = proto.graph
    if len(graph.output) != 1:
        raise ExportError(f"ONNX conversion gave {len(graph.output)} outputs; a classifier has one")
    _rename_value(graph, graph.output[0].name, OutputKind(output_kind).value)
    if len(graph.input) == 1 and graph.input[0].name != INPUT_NAME:
        _rename_value(graph, graph.input[0].name, INPUT_NAME)
    for v in list(graph.input) + list(graph.output):
        dim0 = v.type.tensor_type.shape.dim[0]
        dim0.ClearField("dim_value")
        dim0.dim_param = "batch"
    proto.producer_name = "edgeclf"
    onnx.checker.check_model(proto)
    return proto


def store_qat_weights_as_int8(proto):
    """Store a QAT model's weights as int8 initializers with a DequantizeLinear each.

    tf2onnx folds tfmot's weight fake-quant into float32 constants that already lie on the
    8-bit grid (symmetric, per output channel, -127..127), so the file is as large as the
    float one. Each such weight is rewritten as int8 values plus per-channel scales, checked
    to reproduce the float values; a weight that does not is left as it is.
    """
    onnx = _onnx()
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    new_nodes = []
    for node in graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm") or len(node.input) < 2:
            continue
        wname = node.input[1]
        if wname not in inits or "quant" not in wname.lower() or len(consumers.get(wname, [])) != 1:
            continue
        w = numpy_helper.to_array(inits[wname]).astype(np.float32)
        if w.ndim < 2:
            continue
        axis = 0 if node.op_type == "Conv" else w.ndim - 1
        grid = _int8_grid(w, axis)
        if grid is None:
            continue  # not on a symmetric 8-bit grid: keep the float weight
        qw, scale, per_channel = grid
        graph.initializer.remove(inits[wname])
        graph.initializer.extend([
            numpy_helper.from_array(qw, wname + "_int8"),
            numpy_helper.from_array(scale, wname + "_scale"),
            numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), wname + "_zero_point"),
        ])
        attrs = {"axis": axis} if per_channel else {}
        new_nodes.append(helper.make_node("DequantizeLinear", [wname + "_int8", wname + "_scale", wname + "_zero_point"],
                                          [wname], name=wname + "_dequantize", **attrs))
    if new_nodes:
        nodes = new_nodes + list(graph.node)  # weights first keeps the graph topologically sorted
        del graph.node[:]
        graph.node.extend(nodes)
    onnx.checker.check_model(proto)
    return proto


def _int8_grid(w: np.ndarray, axis: int):
    """(int8 values, scale, per_channel) when ``w`` is exactly symmetric 8-bit, per channel
    along ``axis`` or per tensor; else None."""
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    for per_channel in (True, False):
        if per_channel:
            scale = np.abs(moved).max(axis=1) / 127.0
        else:
            scale = np.full(1, np.abs(moved).max() / 127.0)
        scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
        s = scale[:, None] if per_channel else scale[0]
        steps = moved / s
        q = np.round(steps)
        # within a thousandth of a step: float rounding in tf2onnx's folding, not a real value
        if np.abs(steps - q).max() <= 1e-3 and np.abs(q).max() <= 127:
            qw = np.moveaxis(q.reshape(np.moveaxis(w, axis, 0).shape), 0, axis).astype(np.int8)
            return qw, (scale if per_channel else np.float32(scale[0])), per_channel
    return None


class _Reader:
    """ORT calibration reader over uint8 images, fed as float32 one at a time."""

    def __init__(self, images: np.ndarray):
        self._it = iter([{INPUT_NAME: images[i : i + 1].astype(np.float32)} for i in range(len(images))])

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # newer ORT versions may call it
        pass


def quantize_onnx(float_proto, precision: Precision, *, calibration: np.ndarray | None = None):
    """int8: static QDQ, per-channel, uint8 activations / int8 weights, calibrated on
    ``calibration``; dynamic: weights to 8 bits, activations quantized at run time."""
    onnx = _onnx()
    from .._optional import require

    q = require("onnxruntime.quantization", purpose="ONNX quantization")
    precision = Precision(precision)
    with tempfile.TemporaryDirectory(prefix="edgeclf-onnxq-") as tmp:
        src = Path(tmp) / "float.onnx"
        dst = Path(tmp) / "quant.onnx"
        onnx.save(float_proto, str(src))
        try:
            with native_stderr_silenced():
                if precision is Precision.INT8:
                    if calibration is None or len(calibration) == 0:
                        from ..errors import UsageError

                        raise UsageError("ONNX int8 needs calibration images; give --calibration DATA or --data DATA")
                    pre = Path(tmp) / "pre.onnx"
                    try:
                        q.shape_inference.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
                        src = pre
                    except Exception:  # pre-processing only helps; quantize the plain file without it
                        pass
                    q.quantize_static(
                        str(src), str(dst), _Reader(calibration),
                        quant_format=q.QuantFormat.QDQ, per_channel=True,
                        activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                        calibrate_method=q.CalibrationMethod.MinMax,
                    )
                elif precision is Precision.DYNAMIC:
                    # ConvInteger has only a uint8-weight kernel in ONNX Runtime's CPU provider.
                    q.quantize_dynamic(str(src), str(dst), weight_type=q.QuantType.QUInt8)
                else:
                    raise ValueError(f"not an ONNX Runtime quantization: {precision.value}")
        except ExportError:
            raise
        except Exception as exc:
            from ..errors import EdgeclfError

            if isinstance(exc, EdgeclfError):
                raise
            raise ExportError(f"ONNX {precision.value} quantization failed: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:300] if str(exc) else ''}") from None
        proto = onnx.load(str(dst))
    onnx.checker.check_model(proto)
    return proto

