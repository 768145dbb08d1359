"""Cold start of a whole process: start Python, import, load a model, predict one image.

Compares edgeclf's runtime (``edgeclf.runtime.load_classifier`` → ``predict_proba``, LiteRT
underneath, no TensorFlow) with TensorFlow's own path (``import tensorflow`` →
``tf.lite.Interpreter`` → ``invoke``) on the same .tflite file, each in a fresh process, several
times alternately; reports the median wall time of each and their ratio. An empty Python
process (``python -c pass``) is measured too, as the floor both share.

    /work/venv/bin/python benchmarks/cold_start.py [MODEL.tflite] [--repeat 5] [--no-tensorflow]

edgeclf's bytecode is compiled first (``compileall``, into the checkout's gitignored
__pycache__), as ``pip install`` does: with PYTHONDONTWRITEBYTECODE set and no .pyc files,
every process would compile edgeclf's sources again (10-20 ms). ``--no-compile`` skips it.
The runtime's median is also stated as a multiple of ``python -c pass`` (the interpreter's own
start-up, which no library can remove), and the modules each path imported are counted.

Without MODEL it uses the float32 tutorial_cnn file that precision_latency.py left in
benchmarks/results/files (if kept with --work), else the committed test fixture.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUNTIME = r"""
import sys, numpy as np
from edgeclf.runtime import load_classifier
clf = load_classifier(sys.argv[1], threads=int(sys.argv[2]))
h, w = clf.input_size
p = clf.predict_proba(np.zeros((1, h, w, 3), np.uint8))
assert p.shape[0] == 1
if len(sys.argv) > 3:
    import json
    print(json.dumps(sorted(sys.modules)))
"""

TENSORFLOW = r"""
import os, sys, numpy as np
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf
it = tf.lite.Interpreter(model_path=sys.argv[1], num_threads=int(sys.argv[2]))
it.allocate_tensors()
d = it.get_input_details()[0]
it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
it.invoke()
out = it.get_tensor(it.get_output_details()[0]["index"])
assert out.shape[0] == 1
"""

EMPTY = "pass"


def run(code: str, *args: str) -> tuple[float, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"the measured process failed:\n{r.stderr[-2000:]}")
    return dt, r.stdout


def wall(code: str, *args: str) -> float:
    return run(code, *args)[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-compile", action="store_true", help="do not compile edgeclf's bytecode first")
    ap.add_argument("--no-tensorflow", action="store_true",
                    help="leave out TensorFlow's path (5-10 s a process on a small machine)")
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "cold_start.json"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from edgeclf._io import write_json
    from edgeclf._term import format_table
    from edgeclf.runtime.latency import system_info

    model = args.model
    if model is None:
        cand = Path(__file__).resolve().parent / "results" / "files" / "tutorial_cnn_180" / "model_float32.tflite"
        model = str(cand if cand.exists() else ROOT / "tests" / "fixtures" / "colour_float32.tflite")
    if not args.no_compile:
        import compileall

        compileall.compile_dir(str(ROOT / "edgeclf"), quiet=1)
    tf_key = "tensorflow tf.lite.Interpreter"
    runs = {"python -c pass": [], "edgeclf.runtime": []}
    if not args.no_tensorflow:
        runs[tf_key] = []
    # Fill the OS page cache first (every path gets it warm), and list what the runtime imports.
    modules = json.loads(run(RUNTIME, model, str(args.threads), "list-modules")[1].strip().splitlines()[-1])
    if not args.no_tensorflow:
        wall(TENSORFLOW, model, str(args.threads))
    for i in range(args.repeat):
        runs["python -c pass"].append(wall(EMPTY))
        runs["edgeclf.runtime"].append(wall(RUNTIME, model, str(args.threads)))
        if not args.no_tensorflow:
            runs[tf_key].append(wall(TENSORFLOW, model, str(args.threads)))
        print(f"  round {i + 1}/{args.repeat}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in runs.items()),
              flush=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    ratio = med[tf_key] / med["edgeclf.runtime"] if tf_key in med else None
    over_empty = med["edgeclf.runtime"] / med["python -c pass"]
    tops = sorted({m.split(".")[0] for m in modules if not m.startswith("_")})
    engines = [m for m in ("ai_edge_litert", "onnxruntime", "click", "PIL", "tensorflow") if m in tops]
    rows = [[k, f"{med[k]:.3f}", f"{min(v):.3f}", f"{max(v):.3f}",
             f"{med[k] / med['edgeclf.runtime']:.2f}x"] for k, v in runs.items()]
    info = system_info()
    print(format_table(["process (import, load, first prediction)", "median s", "min s", "max s",
                        "vs edgeclf.runtime"], rows))
    print(f"\nedgeclf's runtime: median {med['edgeclf.runtime']:.3f} s from process start to the first prediction, "
          f"{over_empty:.1f}x `python -c pass` ({med['python -c pass']:.3f} s); it imported "
          f"{len(modules)} modules, of the engines and CLI libraries only {', '.join(engines) or 'none'}")
    if ratio is not None:
        print(f"TensorFlow's path takes {ratio:.1f}x as long as edgeclf's runtime to a first prediction")
    print(f"(median of {args.repeat} fresh processes each, alternating; model {Path(model).name}, "
          f"{os.path.getsize(model) / 1e6:.2f} MB, {args.threads} thread(s); edgeclf bytecode "
          f"{'not compiled' if args.no_compile else 'compiled first, as pip install does'})")
    print(f"machine: {info.summary()}")
    write_json(args.json, {"system": info.to_dict(), "model": str(model), "threads": args.threads,
                           "repeat": args.repeat, "seconds": runs, "median_s": med, "ratio_tf_over_runtime": ratio,
                           "ratio_runtime_over_empty_python": over_empty,
                           "bytecode_compiled": not args.no_compile, "runtime_modules": len(modules),
                           "runtime_imports": engines})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
