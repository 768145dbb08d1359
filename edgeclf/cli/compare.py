"""CLI commands: compare, bench, run. Heavy imports stay inside the command functions."""

from __future__ import annotations

import os
from pathlib import Path

import click

COMMANDS: list[click.Command] = []

MODEL_SUFFIXES = (".tflite", ".onnx")


def _positive_threads(values) -> None:
    from ..errors import UsageError

    for t in values:
        if t is not None and t < 1:
            raise UsageError(f"--threads must be at least 1; got {t}")


PRECISION_ORDER = ("float32", "float16", "int16x8", "dynamic", "int8", "qat")


def _model_order(p: Path):
    """Export-directory order: TFLite before ONNX, float32 first, then by how much is quantized."""
    stem = p.stem.lower()
    rank = next((i for i, name in enumerate(PRECISION_ORDER) if stem.endswith(name)), len(PRECISION_ORDER))
    return (MODEL_SUFFIXES.index(p.suffix.lower()), rank, p.name)


def expand_models(models) -> list[Path]:
    """Model files from the arguments; a directory stands for the model files in it."""
    from ..errors import UsageError

    out: list[Path] = []
    for m in models:
        p = Path(m)
        if p.is_dir():
            found = sorted((q for q in p.iterdir()
                            if q.suffix.lower() in MODEL_SUFFIXES and not q.name.startswith(".")),
                           key=_model_order)
            if not found:
                raise UsageError(f"{p} is a directory with no .tflite or .onnx files; give model files "
                                 "or an export directory")
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise UsageError(f"model file {p} does not exist")
    seen, unique = set(), []
    for p in out:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None or v != v else format(v, spec)


# --------------------------------------------------------------------------------------------
# the evaluation data


class EvalData:
    """Labelled images for compare: a class-folder directory or a run directory's validation split."""

    def __init__(self, root: Path, kind: str, labels: tuple, sources: list, y: list, ignored=()):
        self.root, self.kind, self.labels, self.sources, self.y = root, kind, labels, sources, y
        self.ignored = list(ignored)


def load_eval_data(path) -> EvalData:
    """Read ``--data``: a run directory (split.json present) or class folders."""
    import json

    from ..errors import DataError

    root = Path(path).expanduser()
    split = root / "split.json"
    if split.is_file():
        try:
            d = json.loads(split.read_text(encoding="utf-8"))
            names = tuple(str(x) for x in d["class_names"])
            val = [(str(p), int(i)) for p, i in d.get("val") or []]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{split} is not a readable split file ({exc}); train the run again") from None
        if not val:
            raise DataError(f"run directory {root} has no validation images in split.json (trained with "
                            "--val-split 0?); pass a class-folder directory with --data instead")
        if any(not 0 <= i < len(names) for _, i in val):
            raise DataError(f"{split} holds a label index outside its {len(names)} classes; train the run again")
        return EvalData(root, "run", names, [p for p, _ in val], [i for _, i in val])
    from ..data.folders import scan_folder

    folder = scan_folder(root, what="--data directory")
    return EvalData(folder.root, "folders", folder.class_names, folder.paths, folder.labels, folder.ignored)


def _keras_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "tf_keras"))


def keras_reference(run: Path, images, labels, *, threads=None, latency_runs=50, latency_seconds=1.0):
    """The run's Keras model as the reference ModelOutput (imports TensorFlow; only then)."""
    import json
    import time

    import numpy as np

    from .._optional import import_keras
    from .._quiet import native_stderr_silenced
    from .._term import info
    from ..errors import ModelFileError
    from ..runtime.latency import measure_latency
    from ..runtime.metadata import read_labels_file
    from ..runtime.classifier import to_probabilities
    from ..runtime.parity import ModelOutput, align_columns, predict_all

    model_path = run / "model.keras"
    info(f"reference: the Keras model {model_path} (loading TensorFlow)")
    try:
        config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{run / 'config.json'} cannot be read ({exc}); train the run again") from None
    size = tuple(config.get("image_size") or ())
    kind = config.get("output_kind", "logits")
    model_labels = read_labels_file(run / "labels.txt") if (run / "labels.txt").exists() else labels
    keras = import_keras()  # before the clock: load time is the model's, not TensorFlow's import
    if threads is not None:
        import tensorflow as tf

        try:  # the same thread count as the files get; impossible once TensorFlow has run an op
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            threads = None
    t0 = time.perf_counter_ns()
    with native_stderr_silenced():
        try:
            model = keras.models.load_model(model_path, compile=False)
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"{model_path} cannot be loaded ({exc})") from None
    load_ms = (time.perf_counter_ns() - t0) / 1e6
    if len(size) != 2:
        size = tuple(int(v) for v in model.input_shape[1:3])
    batch = images.batch(size, config.get("resize_method", "bilinear"))

    def proba(x):
        return to_probabilities(np.asarray(model(x.astype(np.float32), training=False)), kind)

    probs = align_columns(predict_all(proba, batch, label=f"{'model.keras':<24}"), model_labels, labels,
                          name=str(model_path))
    latency = None
    if len(batch) and latency_runs:
        one = batch[:1]
        latency = measure_latency(lambda: proba(one), warmup=3, runs=latency_runs, seconds=latency_seconds)
    return ModelOutput(path=str(model_path), format="keras", precision="float32",
                       size_bytes=model_path.stat().st_size if model_path.exists() else None, threads=threads,
                       input_size=size, load_ms=load_ms, latency=latency, probs=probs)


# --------------------------------------------------------------------------------------------
# edgeclf compare


def comparison_table(cmp) -> str:
    from .._term import format_table, human_bytes
    from ..runtime.report import result_rows

    rows = []
    for m in result_rows(cmp):
        p, lat = m.parity, m.latency
        rows.append([
            m.name + (" (ref)" if m.is_reference else ""), m.format, m.precision,
            human_bytes(m.size_bytes) if m.size_bytes is not None else "-",
            _fmt(p.accuracy * 100, ".2f") + "%", _fmt(p.accuracy_delta, "+.2f"), _fmt(p.agreement * 100, ".2f") + "%",
            _fmt(p.max_abs_diff, ".4f"), str(len(p.flips)), _fmt(m.load_ms, ".0f"),
            _fmt(getattr(lat, "p50_ms", None), ".2f"), _fmt(getattr(lat, "p90_ms", None), ".2f"),
            _fmt(getattr(lat, "p99_ms", None), ".2f"), "-" if m.threads is None else str(m.threads),
            "ref" if m is cmp.reference else ("ok" if m.passed else "FAIL"),
        ])
    headers = ["file", "format", "precision", "size", "accuracy", "Δ pts", "agree", "max|Δp|", "flips",
               "load ms", "p50 ms", "p90 ms", "p99 ms", "threads", "gate"]
    return format_table(headers, rows, align="lllrrrrrrrrrrrl")


def per_class_table(cmp) -> str:
    """Classes down, files across: each file's accuracy difference from the reference, in points."""
    from .._term import format_table

    models = [m for m in cmp.models if not m.is_reference]
    headers = ["class", "n", "ref acc"] + [f"{m.precision}/{m.format}" for m in models]
    rows = []
    for ci, label in enumerate(cmp.labels):
        rc = cmp.reference.parity.per_class[ci]
        rows.append([label, str(rc.count), _fmt(None if rc.accuracy is None else rc.accuracy * 100, ".1f") + "%"]
                    + [_fmt(m.parity.per_class[ci].delta, "+.1f") for m in models])
    return format_table(headers, rows)


def _describe_gates(max_drop, min_agree) -> str:
    parts = []
    if max_drop is not None:
        parts.append(f"accuracy drop <= {max_drop:g} points")
    if min_agree is not None:
        parts.append(f"agreement >= {min_agree:g}")
    return " and ".join(parts) if parts else "none (pass --max-accuracy-drop / --min-agreement to gate)"


@click.command("compare")
@click.argument("models", nargs=-1, required=True)
@click.option("--data", "data", required=True, metavar="DIR",
              help="Class-folder directory, or a run directory (its validation split is used).")
@click.option("--reference", metavar="REF", default=None,
              help="Model file to measure against, or 'keras' for the run's Keras model. "
                   "Default: the Keras model when --data is a run directory and the train extra "
                   "is installed, else the float32 file among MODELS.")
@click.option("--threads", type=int, default=None, help="Engine threads for every model (default: physical cores).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, metavar="OUT",
              help="Write the results as JSON.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write a Markdown report with plots and the flipped images.")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Labels (one class per line) for model files without edgeclf metadata (they replace embedded ones).")
@click.option("--max-accuracy-drop", type=float, default=None, metavar="PTS",
              help="Fail a model whose accuracy is more than PTS percentage points below the reference's.")
@click.option("--min-agreement", type=float, default=None, metavar="FRAC",
              help="Fail a model whose top-1 agreement with the reference is below FRAC (e.g. 0.99).")
def compare_cmd(models, data, reference, threads, json_out, report_dir, labels_file, max_accuracy_drop,
                min_agreement):
    """Measure every MODEL (files or export directories) against a reference on the same images.

    Prints one row per file: size, accuracy, accuracy delta vs the reference (percentage
    points), top-1 agreement, max probability difference, flipped images, load time and
    batch-1 latency percentiles. Exits 0 when every model passes the gates, 1 otherwise.

    \b
    Example:
      edgeclf compare exports/ --data runs/flowers --max-accuracy-drop 1 --min-agreement 0.98 \\
          --json compare.json --report report/
    """
    cmp = run_compare(models, data=data, reference=reference, threads=threads,
                      max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement,
                      json_out=json_out, report_dir=report_dir, labels_file=labels_file)
    if not cmp.passed:
        raise SystemExit(1)


def run_compare(models, *, data, reference=None, threads=None, max_accuracy_drop=None, min_agreement=None,
                json_out=None, report_dir=None, labels_file=None):
    """What ``edgeclf compare`` does; returns the Comparison (also used by ``edgeclf run``)."""
    from .._io import write_json
    from .._term import info
    from ..errors import UsageError
    from ..runtime.parity import ImageSet, compare_models, validate_thresholds

    _positive_threads([threads])
    validate_thresholds(max_accuracy_drop, min_agreement)
    paths = expand_models(models)
    model_labels = None
    if labels_file is not None:
        from ..runtime.metadata import read_labels_file

        model_labels = read_labels_file(labels_file)
    ev = load_eval_data(data)
    for path, reason in ev.ignored:
        info(f"skipped {path}: {reason}")
    images = ImageSet(ev.sources, ev.y)
    ref = reference
    if reference == "keras" or (reference is None and ev.kind == "run" and (ev.root / "model.keras").exists()
                                and _keras_available()):
        if ev.kind != "run":
            raise UsageError("--reference keras needs --data to be a run directory (with model.keras)")
        if not (ev.root / "model.keras").exists():
            raise UsageError(f"--reference keras: {ev.root / 'model.keras'} does not exist")
        ref = keras_reference(ev.root, images, ev.labels, threads=threads)
    elif reference is not None and not Path(reference).exists():
        raise UsageError(f"reference model {reference} does not exist; give a model file or 'keras'")
    cmp = compare_models(paths, images, ev.labels, reference=ref, threads=threads,
                         max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement, data=str(ev.root),
                         model_labels=model_labels)
    for path, reason in cmp.skipped:
        info(f"skipped {path}: {reason}")
    if not cmp.sources:
        raise UsageError(f"no readable images in {ev.root}")
    click.echo(comparison_table(cmp))
    click.echo("\naccuracy per class: the reference's, and each file's difference from it (points)")
    click.echo(per_class_table(cmp))
    n_threads = sorted({m.threads for m in cmp.models if m.threads is not None})
    click.echo(f"\n{len(cmp.sources)} images ({ev.kind}: {ev.root}); reference: {cmp.reference.name} "
               f"(accuracy {cmp.reference.parity.accuracy * 100:.2f}%); latency at batch 1 with "
               f"{'/'.join(map(str, n_threads)) or 'default'} thread(s); gates: "
               f"{_describe_gates(max_accuracy_drop, min_agreement)}")
    if cmp.system is not None:
        click.echo(f"machine: {cmp.system.summary()}")
    for m in cmp.models:
        for f in m.parity.failures:
            click.echo(f"FAIL {m.name}: {f}")
    if json_out:
        write_json(json_out, cmp.to_dict())
        info(f"wrote {json_out}")
    if report_dir:
        from ..runtime.report import write_report

        md = write_report(cmp, report_dir)
        info(f"wrote {md}")
    return cmp


COMMANDS.append(compare_cmd)


# --------------------------------------------------------------------------------------------
# edgeclf bench


@click.command("bench")
@click.argument("models", nargs=-1, required=True)
@click.option("--threads", "threads", type=int, multiple=True,
              help="Engine threads; repeat to measure several (default: physical cores).")
@click.option("--batch-size", type=int, default=None, metavar="B",
              help="Also measure a batch of B images (batch 1 is always measured).")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed runs first.")
@click.option("--runs", type=int, default=None, help="Timed runs per measurement.")
@click.option("--seconds", type=float, default=None,
              help="Time budget per measurement instead of a run count (default 2 s).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, metavar="OUT",
              help="Write the results as JSON.")
def bench_cmd(models, threads, batch_size, warmup, runs, seconds, json_out):
    """Latency of each MODEL through the runtime: cold start, p50/p90/p99, memory.

    Inputs are random pixels at the model's input size (latency does not depend on their
    values). Warm-up runs come first, then timed runs bounded by --runs or --seconds.

    \b
    Example:
      edgeclf bench exports/model_int8.tflite exports/model_float32.onnx --threads 1 --threads 2
    """
    from .._io import write_json
    from .._term import info
    from ..errors import UsageError
    from ..runtime.latency import system_info

    _positive_threads(threads)
    if runs is not None and seconds is not None:
        raise UsageError("give --runs or --seconds, not both")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1; got {batch_size}")
    if warmup < 0:
        raise UsageError(f"--warmup must be >= 0; got {warmup}")
    if runs is not None and runs < 1:
        raise UsageError(f"--runs must be at least 1; got {runs}")
    if seconds is not None and not seconds > 0:
        raise UsageError(f"--seconds must be > 0; got {seconds}")
    paths = expand_models(models)
    sysinfo = system_info()
    results = []
    for path in paths:
        for t in threads or (None,):
            info(f"bench {path.name} threads={t or 'default'}")
            results.append(bench_one(path, threads=t, batch_size=batch_size, warmup=warmup, runs=runs,
                                     seconds=seconds))
    click.echo(bench_table(results))
    click.echo("\nlatency in ms at batch 1 on random pixels; cold = load + first inference (the first file of "
               "each format also pays for importing its engine); peak RSS is the process's high-water mark, "
               "RSS + what loading and running the file added")
    click.echo(f"machine: {sysinfo.summary()}")
    if json_out:
        write_json(json_out, {"system": sysinfo.to_dict(), "warmup": warmup, "runs": runs, "seconds": seconds,
                              "results": [r.to_dict() for r in results]})
        info(f"wrote {json_out}")


def bench_one(path, *, threads=None, batch_size=None, warmup=5, runs=None, seconds=None):
    """Benchmark one model file; returns a BenchResult."""
    import numpy as np

    from ..runtime import load_classifier
    from ..runtime.latency import (BenchResult, current_rss_bytes, measure_cold_start, measure_latency,
                                   peak_rss_bytes)

    rss0 = current_rss_bytes()
    holder = {}

    def load():
        return load_classifier(path, threads=threads)

    def first(clf):
        h, w = clf.input_size
        holder["x"] = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
        clf.predict_proba(holder["x"])

    cold, clf = measure_cold_start(load, first)
    x1 = holder["x"]
    lat1 = measure_latency(lambda: clf.predict_proba(x1), warmup=warmup, runs=runs, seconds=seconds)
    latb = None
    if batch_size and batch_size > 1:
        h, w = clf.input_size
        xb = np.random.default_rng(1).integers(0, 256, (batch_size, h, w, 3), dtype=np.uint8)
        latb = measure_latency(lambda: clf.predict_proba(xb), warmup=warmup, runs=runs, seconds=seconds)
    rss1 = current_rss_bytes()
    return BenchResult(path=str(path), format=clf.format, precision=clf.precision,
                       size_bytes=os.path.getsize(path), input_size=tuple(clf.input_size), threads=clf.threads,
                       cold_start=cold, latency=lat1, batch_size=batch_size if latb is not None else None,
                       batch_latency=latb, peak_rss_bytes=peak_rss_bytes(),
                       rss_growth_bytes=None if rss0 is None or rss1 is None else rss1 - rss0)


def bench_table(results) -> str:
    from .._term import format_table, human_bytes

    with_batch = any(r.batch_latency is not None for r in results)
    headers = ["file", "format", "precision", "size", "threads", "cold ms", "p50 ms", "p90 ms", "p99 ms",
               "mean±std ms", "runs"]
    if with_batch:
        headers += ["batch", "batch p50 ms", "ms/image"]
    headers += ["peak RSS", "RSS +"]
    rows = []
    for r in results:
        lat = r.latency
        row = [Path(r.path).name, r.format, r.precision, human_bytes(r.size_bytes), str(r.threads),
               f"{r.cold_start.total_ms:.1f}", f"{lat.p50_ms:.3f}", f"{lat.p90_ms:.3f}", f"{lat.p99_ms:.3f}",
               f"{lat.mean_ms:.3f}±{lat.std_ms:.3f}", str(lat.runs)]
        if with_batch:
            b = r.batch_latency
            row += ["-", "-", "-"] if b is None else [str(r.batch_size), f"{b.p50_ms:.2f}",
                                                      f"{b.p50_ms / r.batch_size:.3f}"]
        row += [human_bytes(r.peak_rss_bytes) if r.peak_rss_bytes else "-",
                human_bytes(max(r.rss_growth_bytes, 0)) if r.rss_growth_bytes is not None else "-"]
        rows.append(row)
    return format_table(headers, rows)


COMMANDS.append(bench_cmd)


# --------------------------------------------------------------------------------------------
# edgeclf run

# Defaults chosen so that the whole job fits in 10 minutes on 2 CPU cores (measured; see README).
RUN_DEFAULTS = {"classes": 5, "per_class": 600, "image_size": 64, "epochs": 20, "model": "tutorial_cnn_aug"}


RUN_INCOMPLETE_MARKER = ".edgeclf-run-incomplete"


@click.command("run")
@click.argument("data", required=False, type=click.Path())
@click.option("--model", default=RUN_DEFAULTS["model"], show_default=True,
              help="Model variant to train (see `edgeclf models`).")
@click.option("--out", "out", default="edgeclf-run", show_default=True, type=click.Path(file_okay=False),
              help="Directory for everything: data/, run/, export/, report/, compare.json.")
@click.option("--epochs", type=int, default=RUN_DEFAULTS["epochs"], show_default=True)
@click.option("--image-size", default=None,
              help=f"S or HxW. Default: {RUN_DEFAULTS['image_size']} for the built-in dataset, else the "
                   "train command's default.")
@click.option("--per-class", type=int, default=RUN_DEFAULTS["per_class"], show_default=True,
              help="Images per class of the built-in dataset (without DATA).")
@click.option("--threads", type=int, default=None, help="Engine threads for the comparison.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out directory.")
@click.pass_context
def run_cmd(ctx, data, model, out, epochs, image_size, per_class, threads, overwrite):
    """The main job in one command: data, train, export, compare.

    Without DATA it generates the built-in synthetic dataset (5 classes of shapes,
    PER_CLASS images each, 64x64; 20 epochs of tutorial_cnn_aug reach about 95% on it).
    It then trains MODEL, exports every supported precision to TFLite and ONNX, compares
    every file against the Keras model on the validation split, prints the table and
    writes a report, all under OUT.

    \b
    Example:
      edgeclf run                      # built-in data, about 4 minutes on 2 CPU cores
      edgeclf run photos/ --model mobilenet_v2 --image-size 160 --out flowers-run
    """
    import time

    from .._io import is_edgeclf_dir, mark_dir, write_text
    from .._term import info
    from ..errors import UsageError

    _positive_threads([threads])
    if epochs < 1:
        raise UsageError(f"--epochs must be at least 1; got {epochs}")
    root = Path(out)
    # A marker while the run is unfinished: re-running after Ctrl-C or a crash picks the
    # folder up again without --overwrite, while a finished run (or anyone else's folder)
    # is still never replaced silently.
    marker = root / RUN_INCOMPLETE_MARKER
    resuming = marker.exists()
    if root.exists() and any(root.iterdir()) and not overwrite and not resuming:
        raise UsageError(f"{root} exists and is not empty; pass --overwrite to replace what is in it, "
                         "or choose another --out")
    if root.exists() and any(root.iterdir()) and overwrite and not resuming and not is_edgeclf_dir(root):
        raise UsageError(f"--out {root} holds files edgeclf did not write; --overwrite replaces only a folder "
                         "edgeclf made; choose another --out")
    if resuming and not overwrite:
        info(f"{root} holds a run that did not finish; starting it again")
        overwrite = True
    root.mkdir(parents=True, exist_ok=True)
    write_text(marker, "edgeclf run has not finished writing this folder\n")
    mark_dir(root, "edgeclf run")
    main = ctx.find_root().command
    timings = []
    t_all = time.monotonic()

    def step(name, fn):
        info(f"== {name}")
        t = time.monotonic()
        result = fn()
        timings.append((name, time.monotonic() - t))
        return result

    if data is None:
        data_dir = root / "data"
        synth = main.get_command(ctx, "data").get_command(ctx, "synth")
        step("data: built-in synthetic dataset",
             lambda: ctx.invoke(synth, out=str(data_dir), classes=RUN_DEFAULTS["classes"], per_class=per_class,
                                size=RUN_DEFAULTS["image_size"], overwrite=overwrite))
        if image_size is None:
            image_size = str(RUN_DEFAULTS["image_size"])
    else:
        data_dir = Path(data)
    run_dir, export_dir, report_dir = root / "run", root / "export", root / "report"
    step(f"train: {model}", lambda: ctx.invoke(main.get_command(ctx, "train"), data=str(data_dir), model=model,
                                               out=str(run_dir), epochs=epochs, image_size=image_size,
                                               overwrite=overwrite))
    step("export: every precision, TFLite and ONNX",
         lambda: ctx.invoke(main.get_command(ctx, "export"), source=str(run_dir), out=str(export_dir),
                                 overwrite=overwrite))
    cmp = step("compare: every file against the Keras model",
               lambda: run_compare([export_dir], data=str(run_dir), threads=threads,
                                   json_out=str(root / "compare.json"), report_dir=str(report_dir)))
    marker.unlink()
    total = time.monotonic() - t_all
    info("\n" + "; ".join(f"{name.split(':')[0]} {sec:.0f}s" for name, sec in timings) + f"; total {total:.0f}s")
    files = sum(1 for m in cmp.models if not m.is_reference)
    click.echo(f"\nEverything is in {root}/: data/ (images), run/ (model.keras, curves), export/ (the "
               f"{files} deployable files), report/report.md, compare.json")
    if not cmp.passed:
        raise SystemExit(1)


COMMANDS.append(run_cmd)
