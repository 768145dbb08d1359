"""What edgeclf's runtime costs on top of the bare engine: cold start and steady-state latency.

For every committed test model (tests/fixtures, 32x32) and for a 224x224 MobileNetV2-size
model built here (weights=None: latency does not depend on the weights' values; float32 and
int8 TFLite, float32 ONNX), it measures:

- cold start: a whole fresh process that imports edgeclf.runtime, loads the file and
  predicts one image file (decode + resize included), timed from outside, median of
  ``--cold-repeats``; beside it the same for the bare engine (import, create, one invoke on
  a prepared tensor);
- steady state, batch 1, same input, same thread count, same process:
  ``Classifier.predict_proba(x)`` (uint8 in, probabilities out: input conversion,
  quantization, softmax, checks) against the bare engine call on the already converted
  tensor (LiteRT ``set_tensor`` + ``invoke`` + ``get_tensor``; ONNX Runtime ``session.run``).
  The two are timed in alternating rounds, so load from other processes hits both alike;
  the overhead is the median over rounds of (runtime / bare) - 1.

TensorFlow is used only to build the MobileNetV2 files, in a child process; the measuring
process never imports it. It prints a table and writes JSON with the machine, thread count
and engine versions.

    /work/venv/bin/python benchmarks/runtime_overhead.py                 # all, default threads
    /work/venv/bin/python benchmarks/runtime_overhead.py --threads 2 --seconds 4 --workdir /tmp/rt-bench
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIXTURES = ROOT / "tests" / "fixtures"
IMAGE = FIXTURES / "images" / "red.png"
LABELS = ("daisy", "dandelion", "roses", "sunflowers", "tulips")
MOBILENET_FILES = ("mobilenet_v2_224_float32.tflite", "mobilenet_v2_224_int8.tflite", "mobilenet_v2_224_float32.onnx")


# ---- building the 224x224 model (child process, the only place TensorFlow is imported) ----

def build_mobilenet(workdir: Path) -> None:
    from edgeclf._optional import import_keras, import_tensorflow
    from edgeclf._quiet import native_stderr_silenced
    from edgeclf.export.metadata import embed_onnx_metadata, embed_tflite_metadata
    from edgeclf.runtime.spec import ModelSpec

    tf = import_tensorflow()
    keras = import_keras()
    inp = keras.Input((224, 224, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)  # MobileNet's [-1, 1] inside the model
    base = keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None, classes=len(LABELS),
                                          classifier_activation=None)
    model = keras.Model(inp, base(x), name="mobilenet_v2_224")

    def meta(precision):
        return ModelSpec(labels=LABELS, input_size=(224, 224), precision=precision, model_name=model.name,
                             extra={"note": "benchmark model, weights=None"})

    rng = np.random.default_rng(0)

    def representative():
        for _ in range(8):
            yield [rng.integers(0, 256, (1, 224, 224, 3)).astype(np.float32)]

    for precision in ("float32", "int8"):
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if precision == "int8":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = representative
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.uint8
            conv.inference_output_type = tf.uint8
        with native_stderr_silenced():
            data = conv.convert()
        (workdir / f"mobilenet_v2_224_{precision}.tflite").write_bytes(embed_tflite_metadata(data, meta(precision)))

    import tf2onnx

    spec = [tf.TensorSpec((None, 224, 224, 3), tf.float32, name="image")]
    with native_stderr_silenced():
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    embed_onnx_metadata(proto, meta("float32"))
    (workdir / "mobilenet_v2_224_float32.onnx").write_bytes(proto.SerializeToString())


# ---- cold start (child processes) -----------------------------------------------------------

_RUNTIME_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from edgeclf.runtime import load_classifier
t1 = time.perf_counter()
clf = load_classifier(sys.argv[1], threads=int(sys.argv[2]))
t2 = time.perf_counter()
clf.predict(sys.argv[3])
t3 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "load_ms": (t2 - t1) * 1e3, "first_prediction_ms": (t3 - t2) * 1e3}))
"""

_BARE_CHILD = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
path, threads = sys.argv[1], int(sys.argv[2])
if path.endswith(".tflite"):
    from ai_edge_litert.interpreter import Interpreter
    t1 = time.perf_counter()
    it = Interpreter(model_path=path, num_threads=threads)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    t2 = time.perf_counter()
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    it.invoke()
    it.get_tensor(it.get_output_details()[0]["index"])
else:
    import onnxruntime as ort
    t1 = time.perf_counter()
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    t2 = time.perf_counter()
    shape = [1] + [d if isinstance(d, int) else 1 for d in i.shape[1:]]
    s.run(None, {i.name: np.zeros(shape, np.float32)})
t3 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "load_ms": (t2 - t1) * 1e3, "first_prediction_ms": (t3 - t2) * 1e3}))
"""


def cold_start(child: str, path: Path, threads: int, repeats: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    walls, parts = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", child, str(path), str(threads), str(IMAGE)],
                             capture_output=True, text=True, env=env, timeout=300)
        walls.append((time.perf_counter() - t0) * 1e3)
        if out.returncode != 0:
            raise RuntimeError(f"cold-start child failed for {path}: {out.stderr.strip()[-500:]}")
        parts.append(json.loads(out.stdout.strip().splitlines()[-1]))
    result = {"process_ms": statistics.median(walls), "runs": repeats}
    for key in parts[0]:
        result[key] = statistics.median(p[key] for p in parts)
    return result


# ---- steady state -----------------------------------------------------------------------------

def bare_call(path: Path, threads: int, x_uint8: np.ndarray):
    """The engine on its own, and the input already converted the way the engine takes it."""
    from edgeclf._quiet import native_stderr_silenced

    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        with native_stderr_silenced():
            it = Interpreter(model_path=str(path), num_threads=threads)
            it.allocate_tensors()
        d, o = it.get_input_details()[0], it.get_output_details()[0]
        scale, zp = d["quantization"]
        if np.dtype(d["dtype"]).kind == "f":
            xin = x_uint8.astype(d["dtype"])
        elif scale and (scale, zp) != (1.0, 0):
            info = np.iinfo(d["dtype"])
            xin = np.clip(np.round(x_uint8 / scale) + zp, info.min, info.max).astype(d["dtype"])
        else:
            xin = x_uint8
        i_idx, o_idx = d["index"], o["index"]

        def call():
            it.set_tensor(i_idx, xin)
            it.invoke()
            return it.get_tensor(o_idx)

        return call
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name, out = sess.get_inputs()[0].name, [sess.get_outputs()[0].name]
    xin = x_uint8.astype(np.float32)
    return lambda: sess.run(out, {name: xin})[0]


def paired(bare, runtime, *, seconds: float, warmup: int = 5) -> dict:
    """Alternate rounds of bare and runtime calls; per-call medians and the median ratio."""
    for _ in range(warmup):
        bare()
        runtime()
    t0 = time.perf_counter()
    for _ in range(3):
        bare()
    per_call = (time.perf_counter() - t0) / 3
    per_round = max(1, int(0.05 / max(per_call, 1e-7)))  # ~50 ms of calls per side per round
    b, r = [], []
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds or i < 6:
        for fn, acc in ((bare, b), (runtime, r)) if i % 2 == 0 else ((runtime, r), (bare, b)):
            t = time.perf_counter_ns()
            for _ in range(per_round):
                fn()
            acc.append((time.perf_counter_ns() - t) / per_round / 1e6)
        i += 1
    ratios = [rr / bb for rr, bb in zip(r, b)]
    return {
        "bare_ms": statistics.median(b), "runtime_ms": statistics.median(r),
        "ratio": statistics.median(ratios), "overhead_pct": 100 * (statistics.median(ratios) - 1),
        "ratio_p25": float(np.percentile(ratios, 25)), "ratio_p75": float(np.percentile(ratios, 75)),
        # Interference from other processes only ever adds time: the fastest rounds are the
        # least disturbed, so their ratio is the steadier figure on a busy machine.
        "bare_min_ms": min(b), "runtime_min_ms": min(r), "min_ratio": min(r) / min(b),
        "rounds": len(ratios), "calls_per_round": per_round,
    }


def runtime_work_us(clf, x: np.ndarray, *, seconds: float = 0.5) -> float:
    """What predict_proba costs besides the engine: its own work per call, in microseconds,
    with the engine call replaced by handing back its (cached) output."""
    backend = clf._backend
    cached = backend._run(backend._to_input(x))
    engine = backend._run
    backend._run = lambda _x: cached
    try:
        best = float("inf")
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter_ns()
            for _ in range(50):
                clf.predict_proba(x)
            best = min(best, (time.perf_counter_ns() - t) / 50 / 1e3)
    finally:
        backend._run = engine
    return best


def measure(path: Path, threads: int, seconds: float, cold_repeats: int) -> dict:
    from edgeclf.runtime import load_classifier

    clf = load_classifier(path, threads=threads)
    h, w = clf.input_size
    x = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    bare = bare_call(path, threads, x)
    row = {"model": path.name, "format": clf.format, "precision": clf.precision, "input": f"{h}x{w}",
           "size_bytes": path.stat().st_size, "threads": threads}
    row["steady"] = paired(bare, lambda: clf.predict_proba(x), seconds=seconds)
    work = runtime_work_us(clf, x)
    row["runtime_work_us"] = work
    row["runtime_work_pct_of_bare"] = 100 * work / 1e3 / row["steady"]["bare_min_ms"]
    row["cold_start"] = cold_start(_RUNTIME_CHILD, path, threads, cold_repeats)
    row["cold_start_bare"] = cold_start(_BARE_CHILD, path, threads, cold_repeats)
    return row


def main(argv=None):
    from edgeclf.runtime.cpu import physical_cores
    from edgeclf.runtime.latency import system_info

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=physical_cores(), help="engine threads (default: physical cores)")
    ap.add_argument("--seconds", type=float, default=3.0, help="steady-state time budget per model")
    ap.add_argument("--cold-repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep the built 224x224 models here (reused when present; default: a temp dir)")
    ap.add_argument("--no-mobilenet", action="store_true", help="only the committed fixtures")
    ap.add_argument("--only", nargs="*", default=None, help="model file names to run (default: all)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "runtime_overhead.json")
    ap.add_argument("--build-mobilenet", type=Path, help=argparse.SUPPRESS)  # child process entry
    args = ap.parse_args(argv)
    if args.build_mobilenet:
        build_mobilenet(args.build_mobilenet)
        return

    models = sorted(p for p in FIXTURES.iterdir() if p.suffix in (".tflite", ".onnx") and "nometa" not in p.name)
    tmp = None
    if not args.no_mobilenet:
        workdir = args.workdir
        if workdir is None:
            tmp = tempfile.TemporaryDirectory(prefix="edgeclf-bench-")
            workdir = Path(tmp.name)
        workdir.mkdir(parents=True, exist_ok=True)
        if not all((workdir / f).exists() for f in MOBILENET_FILES):
            print(f"building MobileNetV2 224x224 files in {workdir} (TensorFlow, in a child process)...",
                  file=sys.stderr, flush=True)
            subprocess.run([sys.executable, __file__, "--build-mobilenet", str(workdir)], check=True)
        models += [workdir / f for f in MOBILENET_FILES]
    if args.only:
        models = [m for m in models if m.name in args.only]

    info = system_info()
    print(f"machine: {info.summary()}; threads: {args.threads}; load average: "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}", file=sys.stderr, flush=True)
    rows = []
    for path in models:
        print(f"  {path.name}...", file=sys.stderr, flush=True)
        rows.append(measure(path, args.threads, args.seconds, args.cold_repeats))

    from edgeclf._term import format_table

    table = format_table(
        ["model", "input", "bare ms", "runtime ms", "ratio", "IQR", "best-round ratio", "own work us",
         "own/bare", "cold ms", "bare cold ms"],
        [(r["model"], r["input"], f"{r['steady']['bare_ms']:.3f}", f"{r['steady']['runtime_ms']:.3f}",
          f"{r['steady']['ratio']:.3f}", f"{r['steady']['ratio_p25']:.2f}-{r['steady']['ratio_p75']:.2f}",
          f"{r['steady']['min_ratio']:.3f}", f"{r['runtime_work_us']:.1f}", f"{r['runtime_work_pct_of_bare']:.1f}%",
          f"{r['cold_start']['process_ms']:.0f}", f"{r['cold_start_bare']['process_ms']:.0f}") for r in rows])
    print(table)
    print(f"\nmachine: {info.summary()}\nthreads: {args.threads}; batch 1. ratio: median over alternating "
          "rounds of runtime/bare (IQR beside it); best-round ratio: fastest runtime round / fastest bare round; "
          "own work: predict_proba with the engine call stubbed out (input conversion, checks, dequantize, "
          f"softmax), as a share of the fastest bare call. cold: whole process, median of {args.cold_repeats}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load:
        print(f"load average at the end (other processes share these CPUs): {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    doc = {"system": info.to_dict(), "threads": args.threads, "seconds_per_model": args.seconds,
           "load_average_at_end": load,
           "cold_repeats": args.cold_repeats, "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from edgeclf._io import write_json

    write_json(args.out, doc)
    print(f"wrote {args.out}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
