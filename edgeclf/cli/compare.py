"""CLI commands: compare, bench. Thin: parse, call ``edgeclf.evaluate``, print."""

from __future__ import annotations

import click

from ._options import emit_json, json_option, json_to_stdout, threads_option

COMMANDS: list[click.Command] = []


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
@threads_option
@json_option
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write a Markdown report with plots and the flipped images into DIR (a new or empty folder).")
@click.option("--overwrite", is_flag=True,
              help="Replace the --report folder if it exists (only a folder edgeclf made).")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Labels (one class per line) for model files without edgeclf metadata (they replace embedded ones).")
@click.option("--max-accuracy-drop", type=float, default=None, metavar="PTS",
              help="Fail a model whose accuracy is more than PTS percentage points below the reference's.")
@click.option("--min-agreement", type=float, default=None, metavar="FRAC",
              help="Fail a model whose top-1 agreement with the reference is below FRAC (e.g. 0.99).")
@click.option("--input-range", "input_range", default=None, metavar="0,255|0,1|-1,1",
              help="Pixel values a Keras --reference model expects, as given to edgeclf export (default: what "
                   "the export.json of an export directory among MODELS says for that model, else inferred).")
@click.option("--output-kind", "output_kind", default=None, metavar="logits|probabilities|sigmoid",
              help="What a Keras --reference model outputs, as given to edgeclf export (default: as --input-range).")
def compare_cmd(models, data, reference, threads, json_out, report_dir, overwrite, labels_file,
                max_accuracy_drop, min_agreement, input_range, output_kind):
    """Measure every MODEL (files or export directories) against a reference on the same images.

    Prints one row per file: size, accuracy, accuracy delta vs the reference (percentage
    points), top-1 agreement, max probability difference, flipped images, load time and
    batch-1 latency percentiles. Exits 0 when every model passes the gates, 1 otherwise.

    \b
    Example:
      edgeclf compare exports/ --data runs/flowers --max-accuracy-drop 1 --min-agreement 0.98 \\
          --json compare.json --report report/
    """
    from ..evaluate import compare_files
    from ..runtime.metadata import read_labels_file

    if report_dir:
        check_report_dir(report_dir, overwrite, inputs=(*models, data, reference, labels_file))
    labels = None if labels_file is None else read_labels_file(labels_file)
    cmp = compare_files(models, data=data, reference=reference, threads=threads,
                        max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement, labels=labels,
                        input_range=input_range, output_kind=output_kind)
    show_comparison(cmp, json_out=json_out, report_dir=report_dir, max_accuracy_drop=max_accuracy_drop,
                    min_agreement=min_agreement, overwrite=overwrite)
    if not cmp.passed:
        raise SystemExit(1)


def check_report_dir(report_dir, overwrite: bool, *, inputs=()) -> None:
    """Refuse a --report folder before any work, by the rules of --out: a new or empty folder,
    or with --overwrite one that edgeclf made; never one of the inputs or a folder around or
    inside one (a run directory given as --data counts with the data it was trained on)."""
    import os

    from .._io import check_out_dir
    from ..runtime.layout import RunDir

    given = [p for p in inputs if p and os.path.lexists(p)]
    roots = [r for p in given if RunDir.is_run(p) for r in RunDir(p).data_roots()]
    check_out_dir(report_dir, overwrite, inside=(*given, *roots), what="--report")


def show_comparison(cmp, *, json_out=None, report_dir=None, max_accuracy_drop=None, min_agreement=None,
                    overwrite: bool = False) -> None:
    """Print the comparison's tables and write its JSON and report (also used by ``edgeclf run``)."""
    from .._term import info
    from ..evaluate.report import (MEMORY_NOTE, comparison_json, comparison_table, per_class_table, speed_lines,
                                   speed_notes)

    notes = speed_notes(cmp.models, int8=getattr(cmp.system, "int8", None))  # files not faster than float32 here
    if not json_to_stdout(json_out):
        click.echo(comparison_table(cmp))
        click.echo("\naccuracy per class: the reference's, and each file's difference from it (points)")
        click.echo(per_class_table(cmp))
        n_threads = sorted({m.threads for m in cmp.models if m.threads is not None})
        click.echo(f"\n{len(cmp.sources)} images ({cmp.data}); reference: {cmp.reference.name} "
                   f"(accuracy {cmp.reference.parity.accuracy * 100:.2f}%); latency at batch 1 with "
                   f"{'/'.join(map(str, n_threads)) or 'default'} thread(s); gates: "
                   f"{_describe_gates(max_accuracy_drop, min_agreement)}")
        click.echo(f"memory: {MEMORY_NOTE}")
        if cmp.system is not None:
            click.echo(f"machine: {cmp.system.summary()}")
        for line in speed_lines(notes):
            click.echo(line)
    for m in cmp.models:
        for f in m.parity.failures:
            click.echo(f"FAIL {m.name}: {f}", err=json_to_stdout(json_out))
    emit_json(json_out, comparison_json(cmp))
    if report_dir:
        from .._io import write_into_dir
        from ..evaluate.report import write_report

        written = write_into_dir(report_dir, lambda d: write_report(cmp, d), overwrite=overwrite,
                                 what="comparison report")
        info(f"wrote {written}")


COMMANDS.append(compare_cmd)


@click.command("bench")
@click.argument("models", nargs=-1, required=True)
@threads_option(multiple=True, help="Engine threads; repeat to measure several (default: physical cores).")
@click.option("--batch-size", type=int, default=None, metavar="B",
              help="Also measure a batch of B images (batch 1 is always measured).")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed runs first.")
@click.option("--runs", type=int, default=None, help="Timed runs per measurement.")
@click.option("--seconds", type=float, default=None,
              help="Time budget per measurement instead of a run count (default 2 s).")
@json_option
def bench_cmd(models, threads, batch_size, warmup, runs, seconds, json_out):
    """Latency of each MODEL through the runtime: cold start, p50/p90/p99, memory.

    Inputs are random pixels at the model's input size (latency does not depend on their
    values). Warm-up runs come first, then timed runs bounded by --runs or --seconds.

    \b
    Example:
      edgeclf bench exports/model_int8.tflite exports/model_float32.onnx --threads 1 --threads 2
    """
    from .._term import info
    from ..errors import UsageError
    from ..evaluate.bench import bench_one, bench_speed_lines, bench_speed_notes, bench_table
    from ..evaluate.report import MEMORY_NOTE
    from ..evaluate.compare import expand_models
    from ..runtime.latency import system_info

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
    emit_json(json_out, {"system": sysinfo.to_dict(), "warmup": warmup, "runs": runs, "seconds": seconds,
                         "results": [r.to_dict() for r in results],
                         "speed_notes": bench_speed_notes(results, sysinfo)})
    if json_to_stdout(json_out):
        return
    click.echo(bench_table(results))
    click.echo("\nlatency in ms at batch 1 on random pixels; cold = load + first inference (the first file of "
               f"each format also pays for importing its engine); memory: {MEMORY_NOTE}")
    click.echo(f"machine: {sysinfo.summary()}")
    for line in bench_speed_lines(results, sysinfo):
        click.echo(line)


COMMANDS.append(bench_cmd)
