"""Latency ratios of model files to the first one, robust to a shared, noisy machine.

All files are loaded once (.tflite: a LiteRT interpreter with XNNPACK; .onnx: the runtime's
ONNX Runtime session, with its settings; the given threads), then timed in rounds: each
round gives every file the minimum of a few invokes, one file after the other, so a burst of
load from elsewhere hits every file of that round alike. Per file: the median over rounds of
its minimum, and the median over rounds of its ratio to the first file of the same round.

    python benchmarks/alternating_latency.py exports/model_float32.tflite exports/model_*.tflite \\
        --threads 1 --rounds 30 --json benchmarks/results/alternating_latency.json

Compare files of one format with each other (the first being that format's float32 file).
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
    ap.add_argument("models", nargs="+", help=".tflite or .onnx files; ratios are to the first")
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

    calls = []
    for m in args.models:
        if m.endswith(".onnx"):
            import onnxruntime as ort

            opts = ort.SessionOptions()  # as edgeclf.runtime.onnxrt sets them
            opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = args.threads, 1, 3
            opts.add_session_config_entry("session.x64quantprecision", "1")
            sess = ort.InferenceSession(m, sess_options=opts, providers=["CPUExecutionProvider"])
            inp = sess.get_inputs()[0]
            dtype = np.uint8 if inp.type == "tensor(uint8)" else np.float32
            shape = [1 if not isinstance(d, int) else d for d in inp.shape]
            feed = {inp.name: np.zeros(shape, dtype)}
            calls.append(lambda s=sess, f=feed: s.run(None, f))
        else:
            with native_stderr_silenced():
                it = Interpreter(model_path=m, num_threads=args.threads)
                it.allocate_tensors()
            d = it.get_input_details()[0]
            it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
            calls.append(it.invoke)
        for _ in range(5):
            calls[-1]()
    best = [[] for _ in calls]
    for _ in range(args.rounds):
        for i, call in enumerate(calls):
            b = float("inf")
            for _ in range(args.invokes):
                t = time.perf_counter_ns()
                call()
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
