"""Full int8 vs budgeted (mixed) int8 vs float32: agreement, accuracy, size and p50 latency.

For each model (default: MobileNetV3-Small alpha 0.75 and MobileNetV2 alpha 0.35, 64x64,
trained from scratch for a few epochs on the built-in synthetic dataset, weights None) this
trains a run with ``edgeclf.train``, exports float32 and full int8 (TFLite and ONNX) with
``edgeclf.export``, exports int8 again with an accuracy budget (``--min-agreement``), and
measures every file through ``edgeclf.runtime`` on the run's validation images (agreement
and accuracy against the Keras model) and on one image (batch-1 latency: rounds of every
file in turn, the median of each file's per-round p50, so a neighbour's load hits all files
alike), and checks agreement again on a synthetic set made with another seed (the budget
chooses its layers on the validation images, so agreement there is optimistic). Ratios are
computed from figures of this same run.

    python benchmarks/quant_budget.py --threads 1 --epochs 4 --min-agreement 0.99
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = {"mobilenet_v3_small": 0.75, "mobilenet_v2": 0.35}


def train_run(name: str, alpha: float, data: Path, work: Path, *, size: int, epochs: int) -> Path:
    from edgeclf.train.trainer import TrainConfig, train_model

    run = work / f"run_{name}"
    if (run / "model.keras").exists():
        print(f"{name}: reusing {run}", flush=True)
        return run
    print(f"{name}: training {epochs} epochs at {size}x{size}, alpha {alpha} ...", flush=True)
    res = train_model(data, out=run, config=TrainConfig(model=name, image_size=(size, size), epochs=epochs,
                                                         alpha=alpha, seed=0), overwrite=True, verbose=False)
    print(f"{name}: validation accuracy {100 * res.val_accuracy:.1f}% after {res.seconds:.0f}s", flush=True)
    return run


def p50s(paths: list[Path], x: np.ndarray, *, threads: int, rounds: int, seconds: float) -> dict[str, float]:
    from edgeclf.runtime import load_classifier
    from edgeclf.runtime.latency import measure_latency

    clfs = {str(p): load_classifier(p, threads=threads) for p in paths}
    per: dict[str, list[float]] = {k: [] for k in clfs}
    for _ in range(rounds):
        for k, clf in clfs.items():
            per[k].append(measure_latency(lambda: clf.predict_proba(x), warmup=5, seconds=seconds).p50_ms)
    return {k: statistics.median(v) for k, v in per.items()}


def fresh_agreement(run: Path, paths: list[Path], fresh: Path) -> dict[str, float]:
    """Each file's top-1 agreement with the Keras model on images the budget never saw (a
    synthetic set made with another seed): the budget picks its layers on the validation
    images, so agreement there is optimistic."""
    from edgeclf.export.calibration import load_images
    from edgeclf.export.exporter import _keras_probabilities
    from edgeclf.export.source import load_source
    from edgeclf.runtime import load_classifier, metrics

    src = load_source(run)
    samples = [(str(p), src.labels.index(p.parent.name)) for p in sorted(fresh.rglob("*.png"))]
    images = load_images(samples, src.input_size).images
    keras_probs = _keras_probabilities(src.model, images, src.output_kind)
    out = {}
    for path in paths:
        clf = load_classifier(path)
        probs = np.concatenate([clf.predict_proba(images[i : i + 64]) for i in range(0, len(images), 64)])
        out[str(path)] = metrics.top1_agreement(probs, keras_probs)
    return out


def bench_model(name: str, alpha: float, data: Path, work: Path, args) -> dict:
    from edgeclf.export.exporter import export_model

    run = train_run(name, alpha, data, work, size=args.size, epochs=args.epochs)
    t = time.monotonic()
    plain = export_model(run, work / f"plain_{name}", precisions=["float32", "int8"], overwrite=True)
    t_plain = time.monotonic() - t
    t = time.monotonic()
    budgeted = export_model(run, work / f"budget_{name}", precisions=["int8"], overwrite=True,
                            min_agreement=args.min_agreement, max_accuracy_drop=args.max_accuracy_drop)
    t_budget = time.monotonic() - t
    files = []
    for f in plain.files:
        files.append({"kind": f"{f.precision}" if f.precision == "float32" else "int8 full",
                      "path": Path(plain.out) / f.file, "file": f})
    for f in budgeted.files:
        files.append({"kind": "int8 budget", "path": Path(budgeted.out) / f.file, "file": f})
    from edgeclf.export.calibration import load_images

    split = json.loads((run / "split.json").read_text())
    x = load_images([tuple(s) for s in split["val"][:1]], (args.size, args.size)).images
    lat = p50s([r["path"] for r in files], x, threads=args.threads, rounds=args.rounds, seconds=args.seconds)
    fresh = fresh_agreement(run, [r["path"] for r in files], work / "fresh")
    rows = []
    for r in files:
        f = r["file"]
        rows.append({"model": name, "alpha": alpha, "format": f.format, "kind": r["kind"], "file": f.file,
                     "size_bytes": f.size_bytes, "agreement": f.agreement, "accuracy": f.accuracy,
                     "p50_ms": lat[str(r["path"])], "fresh_agreement": fresh[str(r["path"])],
                     "float_layers": (f.budget or {}).get("float_layers"),
                     "budget_met": (f.budget or {}).get("met"), "budget": f.budget})
    order = {"float32": 0, "int8 full": 1, "int8 budget": 2}
    rows.sort(key=lambda r: (r["format"] != "tflite", order[r["kind"]]))
    for fmt in ("tflite", "onnx"):
        by = {r["kind"]: r for r in rows if r["format"] == fmt}
        full, flt = by.get("int8 full"), by.get("float32")
        for r in by.values():
            r["latency_vs_int8_full"] = r["p50_ms"] / full["p50_ms"] if full else None
            r["size_vs_int8_full"] = r["size_bytes"] / full["size_bytes"] if full else None
            r["latency_vs_float32"] = r["p50_ms"] / flt["p50_ms"] if flt else None
    return {"model": name, "alpha": alpha, "run": str(run), "keras_accuracy": plain.keras_accuracy,
            "fresh_images": args.fresh_per_class * 5,
            "validation_images": plain.validation["size"], "export_seconds": {"plain": t_plain, "budget": t_budget},
            "rows": rows}


def tradeoff_curve(run: Path, fmt: str, order: list[str], work: Path, args) -> list[dict]:
    """Agreement, size and p50 against the number of layers kept float (``order``: the budget
    export's ranking; prefixes 0, 1, 2, 4, ... all): what any budget can buy on this model."""
    from edgeclf._io import write_bytes
    from edgeclf.export.budget import OnnxSelective, TFLiteSelective, predict_bytes
    from edgeclf.export.layer_names import keras_layer_names
    from edgeclf.export.calibration import ImageBank, calibration_set, load_images
    from edgeclf.export.exporter import _keras_probabilities
    from edgeclf.export.source import load_source
    from edgeclf.runtime import metrics
    from edgeclf.runtime.spec import DEFAULT_CALIBRATION_SIZE, ModelSpec

    src = load_source(run)
    bank = ImageBank(src.input_size, src.resize_method)
    cal = calibration_set(src.train, src.input_size, n=DEFAULT_CALIBRATION_SIZE, seed=src.seed, bank=bank)
    val = load_images(src.val, src.input_size, bank=bank)
    keras_probs = _keras_probabilities(src.model, val.images, src.output_kind)
    meta = ModelSpec(labels=src.labels, input_size=src.input_size, output_kind=src.output_kind, precision="int8")
    if fmt == "tflite":
        sel = TFLiteSelective(src.model, cal.images)
    else:
        from edgeclf.export.onnx_export import convert_onnx

        names, containers = keras_layer_names(src.model)
        sel = OnnxSelective(convert_onnx(src.model, output_kind=src.output_kind).SerializeToString(), cal.images,
                            layer_names=names, containers=containers)
    by_name = {x.layer: x for x in sel.layer_errors().layers if x.nodes}
    ranking = [by_name[name] for name in order if name in by_name]
    n = len(ranking)
    ks = sorted({0, n} | {2 ** i for i in range(n.bit_length()) if 2 ** i < n})
    out_dir = work / f"curve_{src.name}_{fmt}"
    points = []
    for k in ks:
        data = sel.file(ranking[:k], meta)
        path = write_bytes(out_dir / f"float{k:03d}.{fmt}", data)
        probs = predict_bytes(data, "." + fmt, val.images)
        points.append({"float_layers": k, "of": n, "path": path, "size_bytes": len(data),
                       "agreement": metrics.top1_agreement(probs, keras_probs),
                       "accuracy": metrics.accuracy(probs, val.indices)})
        print(f"  curve {fmt} {k}/{n} float: agreement {100 * points[-1]['agreement']:.1f}%", flush=True)
    lat = p50s([p["path"] for p in points], val.images[:1], threads=args.threads, rounds=args.rounds,
               seconds=args.seconds)
    for p in points:
        p["p50_ms"] = lat[str(p["path"])]
        p["path"] = str(p["path"])
    base = points[0]
    for p in points:
        p["latency_vs_int8_full"] = p["p50_ms"] / base["p50_ms"]
        p["size_vs_int8_full"] = p["size_bytes"] / base["size_bytes"]
    if isinstance(sel, OnnxSelective):
        sel.close()
    return points


def curve_table(results: list[dict]) -> str:
    from edgeclf._term import format_table, human_bytes

    rows = []
    for res in results:
        for fmt, points in res.get("curves", {}).items():
            for p in points:
                rows.append([f"{res['model']} a{res['alpha']:g}", fmt, f"{p['float_layers']}/{p['of']}",
                             f"{100 * p['agreement']:.1f}%", f"{100 * p['accuracy']:.1f}%",
                             human_bytes(p["size_bytes"]), f"{p['p50_ms']:.2f}",
                             f"{p['latency_vs_int8_full']:.2f}x", f"{p['size_vs_int8_full']:.2f}x"])
    return format_table(["model", "format", "float layers", "agreement", "accuracy", "size", "p50 ms",
                         "lat/int8", "size/int8"], rows)


def table(results: list[dict]) -> str:
    from edgeclf._term import format_table, human_bytes

    out = []
    for res in results:
        for r in res["rows"]:
            out.append([
                f"{r['model']} a{r['alpha']:g}", r["format"], r["kind"],
                f"{100 * r['agreement']:.1f}%", f"{100 * r['fresh_agreement']:.1f}%", "n/a" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}%",
                human_bytes(r["size_bytes"]), f"{r['p50_ms']:.2f}",
                f"{r['latency_vs_int8_full']:.2f}x", f"{r['size_vs_int8_full']:.2f}x",
                "" if r["float_layers"] is None else str(len(r["float_layers"])),
            ])
    return format_table(["model", "format", "file", "agreement", "fresh agr.", "accuracy", "size", "p50 ms", "lat/int8",
                         "size/int8", "float layers"], out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo names")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--per-class", type=int, default=120, help="synthetic images per class (5 classes)")
    ap.add_argument("--fresh-per-class", type=int, default=100,
                    help="images per class of the unseen set (another seed) that checks the budgeted files")
    ap.add_argument("--min-agreement", type=float, default=0.99)
    ap.add_argument("--max-accuracy-drop", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.5, help="timing budget per file per round")
    ap.add_argument("--curve", action="store_true",
                    help="also measure agreement/size/latency for 0, 1, 2, 4, ... all layers kept float")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgeclf-quant-budget"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "quant_budget.json")
    args = ap.parse_args(argv)

    from edgeclf._io import write_json
    from edgeclf._optional import import_tensorflow
    from edgeclf._term import show_progress_on_stderr
    from edgeclf.data.synth import generate
    from edgeclf.runtime.latency import system_info

    tf = import_tensorflow()
    show_progress_on_stderr()  # the export's progress and its one-line budget verdicts
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / "data"
    if not data.exists():
        generate(data, classes=5, per_class=args.per_class, size=args.size, seed=0)
    if not (args.work / "fresh").exists():
        generate(args.work / "fresh", classes=5, per_class=args.fresh_per_class, size=args.size, seed=1)
    results = []
    t0 = time.monotonic()
    for name in args.models.split(","):
        res = bench_model(name, MODELS.get(name, 1.0), data, args.work, args)
        if args.curve:
            res["curves"] = {}
            for r in res["rows"]:
                if r["kind"] == "int8 budget" and r["budget"] and r["budget"]["ranking"]:
                    order = [x["layer"] for x in r["budget"]["ranking"]]
                    res["curves"][r["format"]] = tradeoff_curve(Path(res["run"]), r["format"], order, args.work, args)
        results.append(res)
    sysinfo = system_info()
    doc = {"system": sysinfo.to_dict(), "tensorflow": tf.__version__, "threads": args.threads,
           "rounds": args.rounds, "seconds_per_round": args.seconds, "image_size": args.size, "epochs": args.epochs,
           "per_class": args.per_class, "min_agreement": args.min_agreement,
           "max_accuracy_drop": args.max_accuracy_drop, "total_seconds": time.monotonic() - t0, "results": results}
    write_json(args.out, doc)
    print(table(results))
    if args.curve:
        print("\ntrade-off: the budget's ranking, the N most harmful layers kept float")
        print(curve_table(results))
    print(f"\nagreement/accuracy vs the Keras model on {results[0]['validation_images']} validation images (the "
          f"budget chose its layers on them); fresh agr.: on {results[0]['fresh_images']} unseen images (seed 1); "
          f"p50 at batch 1, {args.threads} thread(s), median of {args.rounds} interleaved rounds; "
          f"budget: agreement >= {args.min_agreement:g}"
          + (f", accuracy drop <= {args.max_accuracy_drop:g} pts" if args.max_accuracy_drop is not None else ""))
    print(f"machine: {sysinfo.summary()}; tensorflow {tf.__version__}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
