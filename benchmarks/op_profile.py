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

The measuring lives in ``edgeclf.runtime.op_profile`` (the export's speed choice uses it
too); this script prints it. Needs only ai-edge-litert and numpy (and the flatbuffers package
it brings).
"""

from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edgeclf.runtime.op_profile import profile  # noqa: E402


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
