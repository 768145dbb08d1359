"""Size and latency of every precision and format, against float32 TFLite and Keras, same run.

For each model (default: tutorial_cnn at 180x180 and mobilenet_v2 at 224x224, weights None —
latency does not depend on the weights' values) this builds the Keras model with edgeclf's
zoo, converts it with edgeclf's export functions to every post-training precision in TFLite
and ONNX (QAT is left out: its file has the int8 file's operators and speed, and making it
needs training), and times, on the same single image:

- every file through ``edgeclf.runtime`` (batch 1, warm-up, then a time budget; p50/p90),
- Keras ``model(x)`` and ``model.predict(x)`` with TensorFlow limited to the same threads,

and per file its peak memory (``edgeclf.runtime.memory``: a fresh process per file, batch 1)
and its top-1 agreement with the Keras model on 40 other synthetic images. New files stand
beside the old: TFLite ``int8`` is the CPU file (``export.speed``; its choice is printed) and
``int8-full`` the full-integer one; ONNX ``dynamic`` quantizes MatMul/Gemm only and
``dynamic-all`` is the old file (every op ONNX Runtime can quantize). On a shared machine
take ratios from ``benchmarks/alternating_latency.py`` on the files kept with ``--work``.

It prints one table per model and writes JSON. Ratios are p50 against p50: above 1 is slower.
Achieved GFLOP/s = 2 x multiply-accumulates of the conv/dense layers / p50; the peak is a
rough estimate: threads x clock (GHz, /proc/cpuinfo) x FP32 FLOP per cycle per core
(64 with AVX-512, 32 with AVX2+FMA or Zen 4's AVX-512, 16 with AVX, 8 otherwise; two FMA units
assumed).

    /work/venv/bin/python benchmarks/precision_latency.py --threads 2 --seconds 2 [--op-profile]

Below each table: the files not faster than float32 of their format here (``edgeclf.evaluate.report
.speed_notes``), and with --op-profile the time per operator type of the TFLite float32, dynamic
and int8 files (benchmarks/op_profile.py). The machine line names the CPU's int8 features.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # op_profile

MODELS = (("tutorial_cnn", 180), ("mobilenet_v2", 224))
LABELS = ("a", "b", "c", "d", "e")
# New files beside the old ones: TFLite int8 is now the CPU file (layers faster in float32 here stay
# float) and int8-full the full-integer one (what int8 was); ONNX dynamic quantizes MatMul/Gemm
# only and "dynamic-all" is the old file (convolutions as ConvInteger too).
PTQ = {"tflite": ("float32", "float16", "dynamic", "int8", "int8-full", "int16x8"),
       "onnx": ("float32", "dynamic", "dynamic-all", "int8")}


def peak_gflops(threads: int) -> tuple[float, str]:
    """A rough FP32 peak for ``threads`` cores and how it was estimated."""
    mhz, flags, vendor, family = None, set(), "", None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                k = k.strip()
                if k == "cpu MHz" and mhz is None:
                    mhz = float(v)
                elif k == "flags" and not flags:
                    flags = set(v.split())
                elif k == "vendor_id" and not vendor:
                    vendor = v.strip()
                elif k == "cpu family" and family is None:
                    family = int(v)
    except (OSError, ValueError):
        pass
    ghz = (mhz or 2000.0) / 1000.0
    if "avx512f" in flags and vendor == "AuthenticAMD" and family == 25:
        # Zen 4 runs 512-bit FMAs as two 256-bit halves: AVX2 throughput.
        per, isa = 32, "AVX-512 on Zen 4, executed as 2x256-bit (2 FMA x 8 lanes x 2)"
    elif "avx512f" in flags:
        per, isa = 64, "AVX-512 (2 FMA x 16 lanes x 2)"
    elif "avx2" in flags and "fma" in flags:
        per, isa = 32, "AVX2+FMA (2 FMA x 8 lanes x 2)"
    elif "avx" in flags:
        per, isa = 16, "AVX"
    else:
        per, isa = 8, "SSE"
    how = (f"{threads} core(s) x {ghz:.2f} GHz ({'cpu MHz in /proc/cpuinfo' if mhz else 'assumed'}) x {per} "
           f"FP32 FLOP/cycle ({isa})")
    return threads * ghz * per, how


def count_macs(model) -> int:
    """Multiply-accumulates of Conv2D, DepthwiseConv2D and Dense layers (nested models too)."""
    total = 0
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            total += count_macs(layer)
            continue
        kind = type(layer).__name__
        if kind not in ("Conv2D", "DepthwiseConv2D", "Dense"):
            continue
        try:
            out_shape = tuple(layer.output.shape)
            in_shape = tuple(layer.input.shape)
        except (AttributeError, ValueError):
            continue
        if kind == "Conv2D":
            kh, kw = layer.kernel_size
            groups = getattr(layer, "groups", 1) or 1
            total += out_shape[1] * out_shape[2] * out_shape[3] * kh * kw * in_shape[3] // groups
        elif kind == "DepthwiseConv2D":
            kh, kw = layer.kernel_size
            total += out_shape[1] * out_shape[2] * in_shape[3] * layer.depth_multiplier * kh * kw
        else:
            spatial = int(np.prod([d for d in out_shape[1:-1]])) if len(out_shape) > 2 else 1
            total += spatial * in_shape[-1] * out_shape[-1]
    return int(total)


def calibration_images(size: int, n_per_class: int, seed: int = 1) -> np.ndarray:
    from edgeclf.data.synth import generate
    from edgeclf.runtime.preprocess import load_batch

    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp) / "cal", classes=5, per_class=n_per_class, size=size, seed=seed)
        files = sorted(str(p) for p in (Path(tmp) / "cal").rglob("*.png"))
        return load_batch(files, size)


def convert_all(model, output_kind, size: int, out_dir: Path, cal: np.ndarray, formats, *,
                reuse: bool = False) -> list[dict]:
    from edgeclf._io import write_bytes
    from edgeclf.export.metadata import embed_onnx_metadata, embed_tflite_metadata
    from edgeclf.export.onnx_export import convert_onnx, quantize_onnx
    from edgeclf.export.speed import convert_int8_cpu
    from edgeclf.export.tflite import convert_tflite
    from edgeclf.runtime.spec import ModelSpec, Precision

    files = []
    onnx_float = None
    for fmt in formats:
        for prec in PTQ[fmt]:
            meta = ModelSpec(labels=LABELS, input_size=(size, size), output_kind=output_kind,
                             precision="dynamic" if prec == "dynamic-all" else prec)
            target = out_dir / f"model_{prec}.{fmt}"
            if reuse and target.exists():
                files.append({"path": str(target), "format": fmt, "precision": prec,
                              "size_bytes": target.stat().st_size, "convert_s": None})
                continue
            t = time.monotonic()
            speed = None
            if fmt == "tflite" and prec == "int8":
                raw, choice = convert_int8_cpu(model, cal)
                data, speed = embed_tflite_metadata(raw, meta), choice.to_dict()
            elif fmt == "tflite":
                data = embed_tflite_metadata(convert_tflite(model, Precision(prec), calibration=cal), meta)
            else:
                import onnx

                if onnx_float is None:
                    onnx_float = convert_onnx(model, output_kind=output_kind).SerializeToString()
                proto = onnx.load_from_string(onnx_float)
                if prec == "dynamic-all":  # the old file: every op ONNX Runtime can quantize
                    proto = quantize_onnx(proto, Precision.DYNAMIC, dynamic_op_types=None)
                elif prec != "float32":
                    proto = quantize_onnx(proto, Precision(prec), calibration=cal)
                embed_onnx_metadata(proto, meta)
                data = proto.SerializeToString()
            path = write_bytes(out_dir / f"model_{prec}.{fmt}", data)
            files.append({"path": str(path), "format": fmt, "precision": prec, "size_bytes": len(data),
                          "convert_s": time.monotonic() - t, "speed": speed})
            print(f"  converted {path.name} ({len(data) / 1e6:.2f} MB) in {time.monotonic() - t:.1f}s", flush=True)
    return files


def bench_model(name: str, size: int, *, threads: int, seconds: float, warmup: int, work: Path, formats,
                reuse: bool = False) -> dict:
    from edgeclf._optional import import_tensorflow
    from edgeclf.errors import EdgeclfError
    from edgeclf.runtime import load_classifier
    from edgeclf.runtime.latency import measure_latency
    from edgeclf.runtime.memory import measure_memory
    from edgeclf.runtime.metrics import top1_agreement
    from edgeclf.runtime.spec import OutputKind
    from edgeclf.train.zoo import build_model

    tf = import_tensorflow()
    print(f"{name} {size}x{size}: building and converting", flush=True)
    built = build_model(name, image_size=size, num_classes=len(LABELS), weights=None, seed=0)
    model = built.model
    macs = count_macs(model)
    cal = calibration_images(size, 8)
    out_dir = work / f"{name}_{size}"
    out_dir.mkdir(parents=True, exist_ok=True)
    files = convert_all(model, OutputKind(built.output_kind), size, out_dir, cal, formats, reuse=reuse)

    x = cal[:1]
    xf = x.astype(np.float32)
    # Agreement with the Keras model on 40 other synthetic images (untrained weights: it says
    # how far each file moves the outputs, not how accurate it is).
    evals = calibration_images(size, 8, seed=2)
    from edgeclf.runtime.classifier import to_probabilities

    keras_probs = to_probabilities(model.predict(evals.astype(np.float32), verbose=0), OutputKind(built.output_kind))
    rows = []
    failed = []
    for f in files:
        try:
            clf = load_classifier(f["path"], threads=threads)
        except EdgeclfError as exc:  # reported beside the table, not hidden as a row of zeros
            failed.append({**f, "error": str(exc)})
            print(f"  {Path(f['path']).name:<22} cannot run: {exc}", flush=True)
            continue
        stats = measure_latency(lambda: clf.predict_proba(x), warmup=warmup, seconds=seconds, runs=500)
        agreement = top1_agreement(clf.predict_proba(evals), keras_probs)
        mem = measure_memory(f["path"], threads=clf.threads)
        rows.append({**f, "threads": clf.threads, "latency": stats.to_dict(), "agreement": agreement,
                     "memory": mem.to_dict()})
        print(f"  {Path(f['path']).name:<22} p50 {stats.p50_ms:8.3f} ms ({stats.runs} runs)", flush=True)
    call = measure_latency(lambda: model(xf, training=False), warmup=warmup, seconds=seconds, runs=500)
    pred = measure_latency(lambda: model.predict(xf, verbose=0), warmup=warmup, seconds=seconds, runs=500)
    keras_size = None
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "m.keras"
        model.save(p)
        keras_size = p.stat().st_size
    ref = next(r for r in rows if r["format"] == "tflite" and r["precision"] == "float32")["latency"]["p50_ms"]
    own = {r["format"]: r["latency"]["p50_ms"] for r in rows if r["precision"] == "float32"}
    for r in rows:
        p50 = r["latency"]["p50_ms"]
        r["vs_format_float32"] = p50 / own[r["format"]] if r["format"] in own else None
        r["vs_tflite_float32"] = p50 / ref
        r["vs_keras_call"] = p50 / call.p50_ms
        r["vs_keras_predict"] = p50 / pred.p50_ms
        r["gflops"] = 2 * macs / (p50 / 1e3) / 1e9
    keras_rows = [
        {"path": "keras model(x)", "format": "keras", "precision": "float32", "size_bytes": keras_size,
         "threads": threads, "latency": call.to_dict(), "vs_tflite_float32": call.p50_ms / ref, "agreement": 1.0,
         "vs_keras_call": 1.0, "vs_keras_predict": call.p50_ms / pred.p50_ms,
         "gflops": 2 * macs / (call.p50_ms / 1e3) / 1e9},
        {"path": "keras model.predict(x)", "format": "keras", "precision": "float32", "size_bytes": keras_size,
         "threads": threads, "latency": pred.to_dict(), "vs_tflite_float32": pred.p50_ms / ref, "agreement": 1.0,
         "vs_keras_call": pred.p50_ms / call.p50_ms, "vs_keras_predict": 1.0,
         "gflops": 2 * macs / (pred.p50_ms / 1e3) / 1e9},
    ]
    del tf
    return {"model": name, "image_size": size, "macs": macs, "params": int(model.count_params()),
            "rows": rows + keras_rows, "failed": failed}


def table(result: dict, peak: float) -> str:
    from edgeclf._term import format_table, human_bytes

    rows = []
    for r in result["rows"]:
        lat = r["latency"]
        name = r["path"] if r["format"] == "keras" else f"{r['format']} {r['precision']}"
        of_format = r.get("vs_format_float32")
        mem = r.get("memory")
        rows.append([name, human_bytes(r["size_bytes"]) if r["size_bytes"] else "-",
                     human_bytes(mem["added_bytes"]) if mem else "-", f"{lat['p50_ms']:.3f}",
                     f"{lat['p90_ms']:.3f}", f"{r['vs_tflite_float32']:.2f}x",
                     "-" if of_format is None else f"{of_format:.2f}x", f"{r['vs_keras_call']:.2f}x",
                     f"{r['vs_keras_predict']:.2f}x", f"{100 * r['agreement']:.1f}%", f"{r['gflops']:.1f}",
                     f"{100 * r['gflops'] / peak:.1f}%"])
    return format_table(["file", "size", "memory", "p50 ms", "p90 ms", "vs TFLite f32", "vs own f32",
                         "vs Keras call", "vs Keras predict", "agree", "GFLOP/s", "of peak"], rows)


def _as_file(row: dict, result: dict):
    """A table row as what ``report.speed_notes`` reads."""
    from types import SimpleNamespace

    return SimpleNamespace(path=row["path"], format=row["format"], precision=row["precision"], threads=row["threads"],
                           input_size=(result["image_size"], result["image_size"]),
                           latency=SimpleNamespace(p50_ms=row["latency"]["p50_ms"]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(f"{n}:{s}" for n, s in MODELS),
                    help="name:size,... (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=None, help="engine and TensorFlow threads (default: physical cores)")
    ap.add_argument("--seconds", type=float, default=2.0, help="time budget per measurement")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--formats", default="tflite,onnx")
    ap.add_argument("--work", default=None, help="keep the converted files here (default: a temporary folder)")
    ap.add_argument("--reuse", action="store_true",
                    help="time the files already in --work instead of converting again (same seed, same model)")
    ap.add_argument("--op-profile", action="store_true",
                    help="also time every operator of the TFLite float32, dynamic and int8 files "
                         "(benchmarks/op_profile.py): where each precision spends its time")
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "precision_latency.json"))
    args = ap.parse_args(argv)

    from edgeclf._io import write_json
    from edgeclf._optional import import_tensorflow
    from edgeclf.evaluate.report import speed_lines, speed_notes
    from edgeclf.runtime.cpu import physical_cores
    from edgeclf.runtime.latency import system_info

    threads = args.threads or physical_cores()
    tf = import_tensorflow()
    # Keras gets the same number of threads as the engines: a like-for-like comparison.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    info = system_info()
    peak, how = peak_gflops(threads)
    work_ctx = tempfile.TemporaryDirectory() if args.work is None else None
    work = Path(args.work or work_ctx.name)
    t0 = time.monotonic()
    results = []
    for spec in args.models.split(","):
        name, size = spec.split(":")
        results.append(bench_model(name, int(size), threads=threads, seconds=args.seconds, warmup=args.warmup,
                                   work=work, formats=args.formats.split(","), reuse=args.reuse))
        if args.op_profile:
            from op_profile import profile

            files = [r["path"] for r in results[-1]["rows"] if r["format"] == "tflite"
                     and r["precision"] in ("float32", "dynamic", "int8", "int8-full")]
            print(f"  per-operator profile of {len(files)} TFLite files", flush=True)
            # One thread: prefix differences are stable only when no other thread shares the core.
            results[-1]["op_profile"] = [profile(f, threads=1, sweeps=5, invokes=5) for f in files]
    out = {"system": info.to_dict(), "tensorflow": tf.__version__, "threads": threads, "peak_gflops": peak,
           "peak_estimate": how, "seconds_per_measurement": args.seconds, "warmup": args.warmup,
           "wall_s": time.monotonic() - t0, "results": results}
    print()
    for r in results:
        print(f"## {r['model']} {r['image_size']}x{r['image_size']}: {r['params']:,} parameters, "
              f"{2 * r['macs'] / 1e9:.3f} GFLOP per image (conv + dense)")
        print(table(r, peak))
        for f in r["failed"]:
            print(f"not measured: {f['format']} {f['precision']}: {f['error']}")
        for row in r["rows"]:
            if row.get("speed"):
                print(f"tflite int8 (CPU): {row['speed']['message']}")
        for line in speed_lines(speed_notes([_as_file(row, r) for row in r["rows"] if row["format"] != "keras"],
                                            int8=info.int8)):
            print(line)
        if r.get("op_profile"):
            from op_profile import first_op_note, type_table

            print("\nwhere the time goes (per operator type, ms; 1 thread, benchmarks/op_profile.py):")
            print(type_table(r["op_profile"]))
            for line in first_op_note(r["op_profile"]):
                print(line)
        print()
    print(f"machine: {info.summary()}, TensorFlow {tf.__version__}")
    print(f"threads: {threads} (engines and TensorFlow); batch 1; {args.warmup} warm-up runs, then "
          f"{args.seconds:g} s per measurement; ratios are p50 / p50 (above 1 = slower)")
    print(f"peak: {peak:.0f} GFLOP/s FP32, estimated as {how}")
    write_json(args.json, out)
    print(f"wrote {args.json} in {time.monotonic() - t0:.0f}s")
    if work_ctx is not None:
        work_ctx.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
