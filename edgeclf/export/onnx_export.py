"""Keras → ONNX (tf2onnx), and ONNX Runtime quantization of the float file.

Every ONNX file takes ``image``: float32 NHWC values 0..255 with a dynamic batch, and names
its output after what it holds (``logits``, ``probabilities`` or ``sigmoid``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._quiet import native_stderr_silenced
from ..errors import ExportError, first_line
from ..runtime.spec import INPUT_NAME, OutputKind, Precision

OPSET = 17


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
        raise ExportError(f"ONNX conversion failed: {type(exc).__name__}: {first_line(exc)}") from None
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
    # tf2onnx leaves a TensorFlow op it has no ONNX equivalent for in the graph (a fake-quant
    # op of a nested QAT model, say); name it rather than ONNX's checker error.
    known = _onnx_ops(onnx)
    foreign = sorted({n.op_type for n in graph.node if n.domain in ("", "ai.onnx") and n.op_type not in known})
    if foreign:
        raise ExportError(f"ONNX conversion left TensorFlow op(s) that ONNX has no equivalent for: "
                          f"{', '.join(foreign)}; this model cannot be written as this ONNX file")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the converted ONNX file is not valid ONNX: {first_line(exc)}") from None
    return proto


def _onnx_ops(onnx) -> frozenset:
    return frozenset(s.name for s in onnx.defs.get_all_schemas())


def store_qat_weights_as_int8(proto):
    """Store a QAT model's weights as int8 initializers with a DequantizeLinear each.

    tf2onnx folds tfmot's weight fake-quant into float32 constants that already lie on the
    8-bit grid (symmetric, per output channel, -127..127), so the file is as large as the
    float one. Each such weight is rewritten as int8 values plus per-channel scales, checked
    to reproduce the float values; a weight that does not is left as it is.

    The result is standard QDQ, so ONNX Runtime can save it as an ORT-format file with
    runtime optimizations: a Conv or Gemm whose activation input comes, through ops that keep
    the scale (MaxPool, Transpose, Reshape, ...), from a DequantizeLinear gets that
    DequantizeLinear directly on its input and an int32 bias (scale = input scale x weight
    scale, zero point 0, as TFLite stores it) with its own DequantizeLinear. Left with a
    float bias, ORT's BiasQuantization pass inserts ``<conv>_bias_q``/``_bias_dq`` nodes
    itself, and saving runtime optimizations fails on them ("The sum of input arg count is
    not equal to size of input defs in node (..._bias_dq)").
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
    _matmul_add_to_gemm(proto)
    _quantize_biases(graph)
    onnx.checker.check_model(proto)
    return proto


def _matmul_add_to_gemm(proto) -> None:
    """MatMul (2-D input, DequantizeLinear weight) + Add (constant bias) as one Gemm, as
    ORT's own quantizer leaves a Dense layer, so its bias can be quantized too."""
    onnx = _onnx()
    from onnx import helper, numpy_helper

    graph = proto.graph
    ranks = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
        for v in list(inferred.graph.value_info) + list(inferred.graph.input):
            if v.type.tensor_type.HasField("shape"):
                ranks[v.name] = len(v.type.tensor_type.shape.dim)
    except Exception:  # no shapes, no fusion: the file stays as it is
        return
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    users: dict[str, list] = {}
    for n in graph.node:
        for name in n.input:
            users.setdefault(name, []).append(n)
    drop, replace = set(), {}
    for add in graph.node:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        mm_out, bias = (add.input[0], add.input[1]) if add.input[1] in inits else (add.input[1], add.input[0])
        mm = producer.get(mm_out)
        if (mm is None or mm.op_type != "MatMul" or bias not in inits or len(users.get(mm_out, [])) != 1
                or ranks.get(mm.input[0]) != 2):
            continue
        wdq = producer.get(mm.input[1])
        b = numpy_helper.to_array(inits[bias])
        if wdq is None or wdq.op_type != "DequantizeLinear" or b.ndim != 1:
            continue
        drop.add(id(mm))
        replace[id(add)] = helper.make_node("Gemm", [mm.input[0], mm.input[1], bias], list(add.output),
                                            name=mm.name + "_gemm")
    if not replace:
        return
    nodes = [replace.get(id(n), n) for n in graph.node if id(n) not in drop]
    del graph.node[:]
    graph.node.extend(nodes)


_KEEPS_SCALE = ("MaxPool", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity")


def _quantize_biases(graph) -> None:
    """int32 biases behind DequantizeLinear for Conv/Gemm nodes with QDQ input and weight."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    users: dict[str, int] = {}
    for n in graph.node:
        for name in n.input:
            users[name] = users.get(name, 0) + 1

    def const(name):
        return numpy_helper.to_array(inits[name]) if name in inits else None

    out = []
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.input[2] not in inits:
            out.append(node)
            continue
        if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
            out.append(node)
            continue
        wdq = producer.get(node.input[1])
        src = producer.get(node.input[0])
        while src is not None and src.op_type in _KEEPS_SCALE:
            src = producer.get(src.input[0])
        bias = const(node.input[2])
        if (wdq is None or wdq.op_type != "DequantizeLinear" or src is None or src.op_type != "DequantizeLinear"
                or bias is None or users.get(node.input[2], 0) != 1):
            out.append(node)
            continue
        x_scale = const(src.input[1])
        w_scale = const(wdq.input[1])
        if x_scale is None or w_scale is None or x_scale.size != 1:
            out.append(node)
            continue
        b_scale = (np.float32(x_scale.reshape(())) * w_scale.astype(np.float32)).reshape(-1)
        b_scale = np.broadcast_to(b_scale, bias.shape).astype(np.float32)
        qb = np.round(bias.astype(np.float64) / b_scale)
        if np.abs(qb).max(initial=0) >= 2 ** 31 - 1 or not np.all(b_scale > 0):
            out.append(node)
            continue
        base = node.input[2]
        graph.initializer.remove(inits[base])
        graph.initializer.extend([
            numpy_helper.from_array(qb.astype(np.int32), base + "_int32"),
            numpy_helper.from_array(b_scale, base + "_scale"),
            numpy_helper.from_array(np.zeros(bias.shape, np.int32), base + "_zero_point"),
        ])
        out.append(helper.make_node("DequantizeLinear", [base + "_int32", base + "_scale", base + "_zero_point"],
                                    [base], name=base + "_dequantize", axis=0))
        if producer.get(node.input[0]) is not src:
            # Q/DQ with the same scale right before the op: values already lie on that grid
            # (the ops in between only move or pick them), so this changes no number.
            x = node.input[0]
            zp_name = src.input[2] if len(src.input) > 2 else None
            q_in = [x, src.input[1]] + ([zp_name] if zp_name else [])
            out.append(helper.make_node("QuantizeLinear", q_in, [x + "_q"], name=x + "_quantize"))
            out.append(helper.make_node("DequantizeLinear", [x + "_q"] + q_in[1:], [x + "_dq"],
                                        name=x + "_dequantize"))
            node.input[0] = x + "_dq"
        out.append(node)
    del graph.node[:]
    graph.node.extend(out)


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


class CalibrationReader:
    """ORT calibration reader over uint8 images, fed as float32 one at a time."""

    def __init__(self, images: np.ndarray):
        self._it = iter([{INPUT_NAME: images[i : i + 1].astype(np.float32)} for i in range(len(images))])

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # newer ORT versions may call it
        pass


def quantize_static_int8(q, src, dst, calibration: np.ndarray, **extra) -> None:
    """ONNX Runtime's static int8 quantization of the file ``src`` into ``dst``, with the settings
    of every static int8 ONNX file, full or budgeted (see ``quantize_onnx``: QDQ, per-channel
    int8 weights in 7 bits so no CPU saturates, uint8 activations). ``extra``: the budget's
    ``nodes_to_exclude`` and calibration cache."""
    q.quantize_static(str(src), str(dst), CalibrationReader(calibration), quant_format=q.QuantFormat.QDQ,
                      per_channel=True, activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                      calibrate_method=q.CalibrationMethod.MinMax, reduce_range=True, **extra)


# Dynamic-range ONNX quantizes only these: ONNX Runtime's MatMulInteger (dense layers) is
# faster than float, its ConvInteger slower than float Conv on every CPU measured (4.8x float32
# on MobileNetV2, 1.9x on tutorial_cnn; docs/speed.md), so convolutions stay float.
DYNAMIC_OP_TYPES = ("MatMul", "Gemm")


def quantize_onnx(float_proto, precision: Precision, *, calibration: np.ndarray | None = None,
                  dynamic_op_types: tuple[str, ...] | None = DYNAMIC_OP_TYPES):
    """int8: static QDQ, per-channel, uint8 activations / int8 weights in 7 bits, calibrated
    on ``calibration``; dynamic: uint8 weights, activations quantized at run time, for the op
    types in ``dynamic_op_types`` only (default: the dense layers; None: every op ONNX
    Runtime can quantize, which made conv models slower than float32).

    Both are chosen so that results do not depend on the CPU. x86 CPUs without VNNI (AVX2,
    AVX-512 before Cascade Lake) multiply uint8 by int8 with PMADDUBSW, which saturates the
    sum of two products at 16 bits (255 * 127 * 2 > 32767), while VNNI and ARM sum in 32 bits;
    ONNX Runtime's quantization guide names reduce_range and U8U8 as the remedies. Dynamic
    files use uint8 weights (U8U8: exact everywhere); int8 files keep int8 weights (ORT's
    CPU QLinearConv wants them) in 7 bits (reduce_range: 255 * 64 * 2 < 32767, never saturated).
    """
    onnx = _onnx()
    from .._io import temp_dir
    from .._optional import require

    q = require("onnxruntime.quantization", purpose="ONNX quantization")
    precision = Precision(precision)
    with temp_dir("edgeclf-onnxq-") as tmp:
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
                    quantize_static_int8(q, src, dst, calibration)
                elif precision is Precision.DYNAMIC:
                    # uint8 weights: ConvInteger has only that kernel in ORT's CPU provider, and
                    # uint8 x uint8 products never saturate on any CPU (see the docstring).
                    q.quantize_dynamic(str(src), str(dst), weight_type=q.QuantType.QUInt8,
                                       op_types_to_quantize=list(dynamic_op_types) if dynamic_op_types else None)
                else:
                    raise ValueError(f"not an ONNX Runtime quantization: {precision.value}")
        except ExportError:
            raise
        except Exception as exc:
            from ..errors import EdgeclfError

            if isinstance(exc, EdgeclfError):
                raise
            raise ExportError(f"ONNX {precision.value} quantization failed: {type(exc).__name__}: "
                              f"{first_line(exc)}") from None
        proto = onnx.load(str(dst))
    onnx.checker.check_model(proto)
    return proto

