"""Per-operator time of a TFLite file on LiteRT, measured on the machine at hand.

LiteRT's Python API has no op profiler, so this measures prefixes: for each operator k it
cuts the graph after k (same tensors and weights, the output of k as the graph's output)
and times the prefix with the interpreter settings ``edgeclf.runtime`` uses (XNNPACK, the
given threads). An operator's time is prefix(k) - prefix(k-1). Prefixes are timed in
alternating rounds (the minimum of a few invokes per round), so a noisy shared machine
moves every figure alike.

``profile`` times every operator (``benchmarks/op_profile.py`` prints it); ``time_spans``
times only chosen runs of operators, e.g. one layer with the QUANTIZE/DEQUANTIZE ops around
it, which is what the export's speed choice needs (``edgeclf.export.speed``).

Needs ai-edge-litert and the flatbuffers package it brings; no TensorFlow, so it also runs
on the device. Not imported by ``edgeclf.runtime`` itself (the schema module costs ~10 ms).
"""

from __future__ import annotations

import statistics
import time
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def op_table(data: bytes) -> list[dict]:
    """One dict per operator of subgraph 0: index, op, inputs, outputs (tensor indices),
    in_types, out_type, out_shape, out_name (the output tensor's name) and weights (the
    weight type of a conv/dense op, with per-channel or per-tensor scales)."""
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    g = model.subgraphs[0]
    out = []
    for i, op in enumerate(g.operators):
        oc = model.operatorCodes[op.opcodeIndex]
        code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
        name = names.get(code, str(code))
        ins = [int(t) for t in op.inputs if t >= 0]
        outs = [int(t) for t in op.outputs]

        def tdesc(t):
            tensor = g.tensors[t]
            q = tensor.quantization
            scales = 0 if q is None or q.scale is None else len(q.scale)
            shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
            return types.get(tensor.type, str(tensor.type)), scales, shape

        operand = [tdesc(t) for t in ins]
        weights = ""
        if name in CONV_OPS and len(operand) > 1:
            wtype, wscales, _ = operand[1]
            if wtype in ("int8", "uint8", "int4"):
                weights = f"{wtype} per-channel ({wscales} scales)" if wscales > 1 else f"{wtype} per-tensor"
            else:
                weights = wtype
        tname = g.tensors[outs[0]].name
        out.append({"index": i, "op": name, "inputs": ins, "outputs": outs,
                    "in_types": [d[0] for d in operand], "out_type": tdesc(outs[0])[0],
                    "out_shape": tdesc(outs[0])[2], "weights": weights,
                    "out_name": tname.decode("utf-8", "replace") if isinstance(tname, bytes) else str(tname)})
    return out


def prefix_model(data: bytes, k: int) -> bytes:
    """The model cut after operator k (0-based): operators 0..k, operator k's first output as the output."""
    return prefix_models(data, [k])[k]


def prefix_models(data: bytes, ks: Sequence[int]) -> dict[int, bytes]:
    """``prefix_model`` for several cuts, unpacking the flatbuffer once."""
    import flatbuffers

    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    model.signatureDefs = None  # they name the old outputs
    g = model.subgraphs[0]
    ops, outputs = g.operators, g.outputs
    out = {}
    try:
        for k in ks:
            g.operators = ops[:k + 1]
            g.outputs = [ops[k].outputs[0]]
            b = flatbuffers.Builder(len(data) + 1024)
            b.Finish(model.Pack(b), file_identifier=b"TFL3")
            out[k] = bytes(b.Output())
    finally:
        g.operators, g.outputs = ops, outputs
    return out


def interpreter(content: bytes, threads: int, xnnpack: bool = True):
    """A LiteRT interpreter on ``content``, tensors allocated, input set to zeros."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from .._quiet import native_stderr_silenced

    kind = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with native_stderr_silenced():
        it = Interpreter(model_content=content, num_threads=threads, experimental_op_resolver_type=kind)
        it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    return it


def delegated_outputs(it) -> set[int]:
    """Tensor indices computed inside an XNNPACK partition."""
    out = set()
    for o in it._get_ops_details():  # the one place LiteRT lists delegate nodes
        if o["op_name"] == "DELEGATE":
            out.update(int(t) for t in o["outputs"])
    return out


def min_invoke_ms(it, invokes: int) -> float:
    """The fastest of ``invokes`` calls, in milliseconds."""
    best = float("inf")
    for _ in range(invokes):
        t = time.perf_counter_ns()
        it.invoke()
        best = min(best, time.perf_counter_ns() - t)
    return best / 1e6


def profile(path_or_data, *, threads: int = 1, sweeps: int = 5, invokes: int = 5, xnnpack: bool = True) -> dict:
    """Every operator's time in one TFLite file (see the module docstring), its engine
    ("xnnpack" or "builtin"), and the time per operator type."""
    data = path_or_data if isinstance(path_or_data, (bytes, bytearray)) else Path(path_or_data).read_bytes()
    path = "<bytes>" if isinstance(path_or_data, (bytes, bytearray)) else str(path_or_data)
    ops = op_table(bytes(data))
    cuts = prefix_models(bytes(data), range(len(ops)))
    prefixes = [cuts[k] for k in range(len(ops))]
    for k, op in enumerate(ops):
        it = interpreter(prefixes[k], threads, xnnpack)
        op["engine"] = "xnnpack" if op["outputs"][0] in delegated_outputs(it) else "builtin"
        del it
    samples = [[] for _ in ops]
    whole = []
    full = interpreter(bytes(data), threads, xnnpack)
    for _ in range(3):
        full.invoke()
    for _ in range(sweeps):
        for k in range(len(ops)):
            it = interpreter(prefixes[k], threads, xnnpack)
            it.invoke()  # first run: XNNPACK sets up its workspace
            samples[k].append(min_invoke_ms(it, invokes))
            del it
        whole.append(min_invoke_ms(full, invokes))
    cum = [statistics.median(v) for v in samples]
    prev = 0.0
    for k, op in enumerate(ops):
        op["prefix_ms"] = cum[k]
        op["ms"] = cum[k] - prev
        prev = cum[k]
    for op in ops:  # tensor indices only served to cut the graph; keep the JSON readable
        op.pop("inputs", None)
        op["output"] = op.pop("outputs")[0]
    by_type: "OrderedDict[str, dict]" = OrderedDict()
    for op in ops:
        e = by_type.setdefault(op["op"], {"op": op["op"], "count": 0, "ms": 0.0, "builtin": 0})
        e["count"] += 1
        e["ms"] += op["ms"]
        e["builtin"] += op["engine"] == "builtin"
    return {"path": path, "threads": threads, "xnnpack": xnnpack, "sweeps": sweeps, "invokes": invokes,
            "whole_ms": statistics.median(whole), "sum_ms": cum[-1] if cum else 0.0, "ops": ops,
            "by_type": list(by_type.values())}


def time_spans(jobs: Sequence[tuple[bytes, Sequence[tuple[int, int]]]], *, threads: int = 1,
               rounds: int = 9, invokes: int = 10) -> list[list[float]]:
    """For each ``(file bytes, spans)`` job, the time of each span ``(first, last)`` of
    operators (inclusive), in milliseconds: prefix(last) - prefix(first - 1), paired within
    each round, the median over rounds.

    Only the prefixes the spans need are built; their interpreters stay loaded across rounds,
    and every round times all of them, of every file, one after another, so load from
    elsewhere hits both ends of a span, and both files, alike. A span starting at operator 0
    is measured against nothing.
    """
    loaded = []
    for data, spans in jobs:
        ends = sorted({e for a, b in spans for e in (a - 1, b) if e >= 0})
        its = {}
        for k, cut in prefix_models(data, ends).items():
            its[k] = interpreter(cut, threads)
            its[k].invoke()  # XNNPACK sets up its workspace on the first run
        loaded.append(its)
    per_round: list[list[dict[int, float]]] = []
    for _ in range(max(rounds, 1)):
        per_round.append([{k: min_invoke_ms(it, invokes) for k, it in its.items()} for its in loaded])
    out = []
    for j, (_, spans) in enumerate(jobs):
        times = []
        for a, b in spans:
            diffs = [r[j][b] - (r[j][a - 1] if a > 0 else 0.0) for r in per_round]
            times.append(float(statistics.median(diffs)))
        out.append(times)
    return out
