"""Latency ratios of TFLite files to the first one, robust to a shared, noisy machine.

All files are loaded once (LiteRT, XNNPACK, the given threads), then timed in rounds: each
round gives every file the minimum of a few invokes, one file after the other, so a burst of
load from elsewhere hits every file of that round alike. Per file: the median over rounds of
its minimum, and the median over rounds of its ratio to the first file of the same round.

    python benchmarks/alternating_latency.py exports/model_float32.tflite exports/model_*.tflite \\
        --threads 1 --rounds 30 --json benchmarks/results/alternating_latency.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help=".tflite files; ratios are to the first")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--invokes", type=int, default=5, help="invokes per file per round (minimum taken)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from ai_edge_litert.interpreter import Interpreter

    from edgeclf._io import write_json
    from edgeclf._quiet import native_stderr_silenced
    from edgeclf._term import format_table
    from edgeclf.runtime.latency import system_info

    its = []
    for m in args.models:
        with native_stderr_silenced():
            it = Interpreter(model_path=m, num_threads=args.threads)
            it.allocate_tensors()
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        for _ in range(5):
            it.invoke()
        its.append(it)
    best = [[] for _ in its]
    for _ in range(args.rounds):
        for i, it in enumerate(its):
            b = float("inf")
            for _ in range(args.invokes):
                t = time.perf_counter_ns()
                it.invoke()
                b = min(b, time.perf_counter_ns() - t)
            best[i].append(b / 1e6)
    rows, out = [], []
    for m, s in zip(args.models, best):
        ratio = statistics.median(a / b for a, b in zip(s, best[0]))
        out.append({"path": m, "median_min_ms": statistics.median(s), "ratio_to_first": ratio, "samples_ms": s})
        rows.append([f"{Path(m).parent.name}/{Path(m).name}", f"{statistics.median(s):.3f}", f"{ratio:.2f}x"])
    info = system_info()
    print(format_table(["file", "ms (median of per-round minimum)", f"vs {Path(args.models[0]).name}"], rows))
    print(f"machine: {info.summary()}; threads: {args.threads}; batch 1; {args.rounds} alternating rounds of "
          f"{args.invokes} invokes per file")
    if args.json:
        write_json(args.json, {"system": info.to_dict(), "threads": args.threads, "rounds": args.rounds,
                               "invokes": args.invokes, "results": out})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
