"""Rewrites of a converted TFLite flatbuffer that make files run faster on LiteRT's CPU path
(issue 15). The int8 file's float layers are chosen in ``speed.py``.

``float_depthwise_weights``: a dynamic-range file stores every weight tensor of 1024 or more
values as int8, depthwise convolutions' too. XNNPACK (LiteRT's CPU engine) runs dynamic-range
convolutions and fully connected layers, but not dynamic-range depthwise convolutions, so
each of those fell back to LiteRT's hybrid kernel, which quantizes its input on every call,
and split the graph into one XNNPACK partition per depthwise layer. On MobileNetV2 (224 px)
15 of 17 depthwise layers ran that way: 3.4 ms against 0.6 ms in float32, the whole file
1.6x slower than float32 on an AMX/VNNI Xeon and 2.1x on the non-VNNI EPYC of issue 15 (
``benchmarks/op_profile.py``). Depthwise kernels are tiny (3x3 per channel, 66 K values in
all of MobileNetV2), so storing them as float32 costs ~100 KB and lets XNNPACK run the whole
graph. The values are the int8 values times their scales, exactly what the hybrid kernel
multiplied by.
"""

from __future__ import annotations

import numpy as np


def float_depthwise_weights(model_bytes: bytes) -> bytes:
    """The TFLite model with every dynamic-range DEPTHWISE_CONV_2D's int8 weights stored as
    float32 (dequantized); the model unchanged when it has none."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(model_bytes, 0)
    depthwise = {i for i, oc in enumerate(model.operatorCodes or [])
                 if max(oc.builtinCode, oc.deprecatedBuiltinCode) == schema.BuiltinOperator.DEPTHWISE_CONV_2D}
    uses = {}
    for g in model.subgraphs or []:
        for t in g.tensors or []:
            uses[t.buffer] = uses.get(t.buffer, 0) + 1
    changed = False
    for g in model.subgraphs or []:
        for op in g.operators or []:
            if op.opcodeIndex not in depthwise or len(op.inputs) < 2:
                continue
            x, w = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]]
            if x.type != schema.TensorType.FLOAT32 or w.type != schema.TensorType.INT8:
                continue  # float, or full-integer: XNNPACK runs those
            q = w.quantization
            raw = model.buffers[w.buffer].data
            if q is None or q.scale is None or raw is None or uses.get(w.buffer, 0) != 1:
                continue
            shape = [int(d) for d in w.shape]
            values = np.asarray(raw, np.uint8).view(np.int8).reshape(shape).astype(np.float32)
            scale = np.asarray(q.scale, np.float32)
            zero = np.asarray(q.zeroPoint if q.zeroPoint is not None else [0], np.float32)
            if scale.size > 1:  # per channel along quantizedDimension
                bshape = [1] * len(shape)
                bshape[q.quantizedDimension] = scale.size
                scale, zero = scale.reshape(bshape), zero.reshape(bshape) if zero.size > 1 else zero
            real = ((values - zero) * scale).astype("<f4")
            model.buffers[w.buffer].data = np.frombuffer(real.tobytes(), np.uint8)
            w.type = schema.TensorType.FLOAT32
            w.quantization = None
            changed = True
    if not changed:
        return model_bytes
    builder = flatbuffers.Builder(len(model_bytes) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
