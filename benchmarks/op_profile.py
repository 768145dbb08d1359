"""Per-operator time of TFLite files on LiteRT, and which operators XNNPACK runs.

LiteRT's Python API has no op profiler, so this measures prefixes: for each operator k it
cuts the graph after k (same tensors and weights, the output of k as the graph's output)
and times the prefix with the same interpreter settings as ``edgeclf.runtime`` (XNNPACK, the
given threads). An operator's time is prefix(k) - prefix(k-1); the sum is the whole file's
time. Each prefix is timed in several sweeps (the minimum of a few invokes per sweep, then
the median over sweeps), sweeps alternate over all prefixes, so a noisy shared machine
moves every figure alike.

Per operator it also states what XNNPACK did with it ("xnnpack": its output comes out of
an XNNPACK partition; "builtin": LiteRT's own kernel ran it, outside XNNPACK), the operand
types, and for int8 weights per-channel or per-tensor scales. Then it sums the time per
operator type, so two precisions of one model can be laid side by side:

    python benchmarks/op_profile.py exports/model_float32.tflite exports/model_int8.tflite \\
        --threads 1 --sweeps 5 --json benchmarks/results/op_profile.json

Needs only ai-edge-litert and numpy (and the flatbuffers package it brings).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def op_table(data: bytes) -> list[dict]:
    """One dict per operator of subgraph 0: name, inputs, outputs, operand types, weight scales."""
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
            return types.get(tensor.type, str(tensor.type)), scales, [int(d) for d in (tensor.shape if tensor.shape is not None else [])]

        operand = [tdesc(t) for t in ins]
        weights = ""
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and len(operand) > 1:
            wtype, wscales, _ = operand[1]
            if wtype in ("int8", "uint8", "int4"):
                weights = f"{wtype} per-channel ({wscales} scales)" if wscales > 1 else f"{wtype} per-tensor"
            else:
                weights = wtype
        out.append({"index": i, "op": name, "inputs": ins, "outputs": outs,
                    "in_types": [d[0] for d in operand], "out_type": tdesc(outs[0])[0],
                    "out_shape": tdesc(outs[0])[2], "weights": weights})
    return out


def prefix_model(data: bytes, k: int) -> bytes:
    """The model cut after operator k (0-based): operators 0..k, operator k's first output as the output."""
    import flatbuffers

    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    g = model.subgraphs[0]
    g.operators = g.operators[:k + 1]
    g.outputs = [g.operators[k].outputs[0]]
    model.signatureDefs = None  # they name the old outputs
    b = flatbuffers.Builder(len(data) + 1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _interpreter(content: bytes, threads: int, xnnpack: bool):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgeclf._quiet import native_stderr_silenced

    kind = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with native_stderr_silenced():
        it = Interpreter(model_content=content, num_threads=threads, experimental_op_resolver_type=kind)
        it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    return it


def _delegated_outputs(it) -> set[int]:
    out = set()
    for o in it._get_ops_details():
        if o["op_name"] == "DELEGATE":
            out.update(int(t) for t in o["outputs"])
    return out


def _time(it, invokes: int) -> float:
    best = float("inf")
    for _ in range(invokes):
        t = time.perf_counter_ns()
        it.invoke()
        best = min(best, time.perf_counter_ns() - t)
    return best / 1e6


def profile(path: str, *, threads: int, sweeps: int, invokes: int, xnnpack: bool = True) -> dict:
    data = Path(path).read_bytes()
    ops = op_table(data)
    prefixes = [prefix_model(data, k) for k in range(len(ops))]
    for k, op in enumerate(ops):
        it = _interpreter(prefixes[k], threads, xnnpack)
        op["engine"] = "xnnpack" if op["outputs"][0] in _delegated_outputs(it) else "builtin"
        del it
    samples = [[] for _ in ops]
    whole = []
    full = _interpreter(data, threads, xnnpack)
    for _ in range(3):
        full.invoke()
    for s in range(sweeps):
        for k in range(len(ops)):
            it = _interpreter(prefixes[k], threads, xnnpack)
            it.invoke()  # first run: XNNPACK sets up its workspace
            samples[k].append(_time(it, invokes))
            del it
        whole.append(_time(full, invokes))
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
        key = op["op"]
        e = by_type.setdefault(key, {"op": key, "count": 0, "ms": 0.0, "builtin": 0})
        e["count"] += 1
        e["ms"] += op["ms"]
        e["builtin"] += op["engine"] == "builtin"
    return {"path": str(path), "threads": threads, "xnnpack": xnnpack, "sweeps": sweeps, "invokes": invokes,
            "whole_ms": statistics.median(whole), "sum_ms": cum[-1] if cum else 0.0, "ops": ops,
            "by_type": list(by_type.values())}


def op_rows(result: dict) -> list[list]:
    total = max(result["sum_ms"], 1e-9)
    rows = []
    for op in result["ops"]:
        rows.append([op["index"], op["op"], "x".join(map(str, op["out_shape"][1:])) or "-",
                     "/".join(dict.fromkeys(op["in_types"])) + "->" + op["out_type"], op["weights"] or "-",
                     op["engine"], f"{op['ms']:.3f}", f"{100 * op['ms'] / total:.1f}%"])
    return rows


def type_table(results: list[dict]) -> str:
    """Operator types down, files across: where each file spends its time."""
    from edgeclf._term import format_table

    types = list(OrderedDict.fromkeys(t["op"] for r in results for t in r["by_type"]))
    headers = ["op type"] + [f"{Path(r['path']).stem} ms (n, builtin)" for r in results]
    rows = []
    for t in types:
        row = [t]
        for r in results:
            e = next((x for x in r["by_type"] if x["op"] == t), None)
            row.append("-" if e is None else f"{e['ms']:.3f} ({e['count']}, {e['builtin']})")
        rows.append(row)
    rows.append(["total (sum of ops)"] + [f"{r['sum_ms']:.3f}" for r in results])
    rows.append(["whole file"] + [f"{r['whole_ms']:.3f}" for r in results])
    return format_table(headers, rows)


def first_op_note(results: list[dict]) -> list[str]:
    """Lines naming the single most expensive operator of each file, and its share."""
    out = []
    for r in results:
        if not r["ops"]:
            continue
        top = max(r["ops"], key=lambda o: o["ms"])
        out.append(f"{Path(r['path']).name}: most time in op {top['index']} {top['op']} "
                   f"({'x'.join(map(str, top['out_shape'][1:]))}, {top['weights'] or '-'}, {top['engine']}): "
                   f"{top['ms']:.3f} ms, {100 * top['ms'] / max(r['sum_ms'], 1e-9):.0f}% of the file")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help=".tflite files (e.g. the float32 and int8 files of one model)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sweeps", type=int, default=5, help="timed sweeps over all prefixes (median taken)")
    ap.add_argument("--invokes", type=int, default=5, help="invokes per prefix per sweep (minimum taken)")
    ap.add_argument("--no-xnnpack", action="store_true", help="LiteRT's builtin kernels only (the reference)")
    ap.add_argument("--per-op", action="store_true", help="print every operator, not only the sums per type")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from edgeclf._io import write_json
    from edgeclf._term import format_table
    from edgeclf.runtime.latency import system_info

    info = system_info()
    results = []
    for m in args.models:
        print(f"profiling {Path(m).name} ...", flush=True)
        results.append(profile(m, threads=args.threads, sweeps=args.sweeps, invokes=args.invokes,
                               xnnpack=not args.no_xnnpack))
    for r in results:
        print(f"\n## {Path(r['path']).name}: whole file {r['whole_ms']:.3f} ms, sum of operators {r['sum_ms']:.3f} ms "
              f"({r['threads']} thread(s), {'XNNPACK' if r['xnnpack'] else 'builtin kernels only'})")
        if args.per_op:
            print(format_table(["#", "op", "output", "types", "weights", "engine", "ms", "share"], op_rows(r)))
    print("\nper operator type: milliseconds (operators, of them run by LiteRT's builtin kernels, not XNNPACK)")
    print(type_table(results))
    for line in first_op_note(results):
        print(line)
    print(f"\nmachine: {info.summary()}; threads: {args.threads}; batch 1; each prefix: min of {args.invokes} "
          f"invokes, median of {args.sweeps} sweeps")
    if args.json:
        write_json(args.json, {"system": info.to_dict(), "results": results})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
