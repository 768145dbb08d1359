"""CLI commands: predict, verify. Runtime only: no TensorFlow, and the engine is imported
only when the model file is loaded."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ._options import emit_json, json_option, json_to_stdout, threads_option

COMMANDS: list[click.Command] = []

_THREADS = threads_option


def _collect(args) -> tuple[list[str], list[tuple[str, str]]]:
    """Image paths from files and directories (walked, sorted), and (path, reason) for the
    arguments that give none."""
    from ..runtime.preprocess import IMAGE_SUFFIXES, is_image_file

    found, problems = [], []
    for arg in args:
        if os.path.isdir(arg):
            inside = []
            # followlinks=False: a symlink loop in a scraped folder cannot hang the walk.
            for root, dirs, files in os.walk(arg, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                inside += [os.path.join(root, f) for f in sorted(files) if is_image_file(f)]
            if not inside:
                problems.append((arg, f"no image files in this directory (looked for {', '.join(IMAGE_SUFFIXES)})"))
            found += inside
        elif os.path.lexists(arg):
            found.append(arg)  # the loader says what is wrong with it, if anything
        else:
            problems.append((arg, "no such file or directory"))
    return found, problems


@click.command("predict")
@click.argument("model", type=click.Path(dir_okay=True, readable=False, path_type=Path))
# readable=False: click would stop the whole command at an unreadable image; the loader reports
# it on its own line and the other images are still predicted.
@click.argument("images", nargs=-1, required=True, type=click.Path(readable=False), metavar="IMAGE_OR_DIR...")
@click.option("--top-k", "top_k", type=click.IntRange(min=1), default=1, show_default=True,
              help="Also show the next most likely labels.")
@json_option
@click.option("--labels", "labels_file", type=click.Path(path_type=Path), default=None,
              help="Labels file (one class name per line, in output order), for a model without edgeclf "
                   "metadata; it replaces the labels a file carries.")
@_THREADS
@click.pass_context
def predict_cmd(ctx, model, images, top_k, json_out, labels_file, threads):
    """Classify images (files or directories of them) with a .tflite or .onnx model.

    One line per image, e.g. "tulip.jpg: This image most likely belongs to tulips with a
    97.12 percent confidence." An image that cannot be read is reported on stderr and the
    others are still predicted; the exit code is then 1.
    """
    from ..runtime.classifier import load_classifier

    _predict(ctx, load_classifier(model, threads=threads, labels=labels_file), images, top_k, json_out)


def _predict(ctx, clf, images, top_k, json_out):
    import numpy as np

    from .._term import printable
    from ..errors import ImageError
    from ..runtime.classifier import CHUNK

    paths, problems = _collect(images)
    failed = False
    records = []
    for arg, reason in problems:
        click.echo(f"Error: {printable(arg)}: {reason}", err=True)
        records.append({"source": arg, "error": reason})
        failed = True
    for start in range(0, len(paths), CHUNK):
        chunk = paths[start:start + CHUNK]
        arrays: dict[int, np.ndarray] = {}
        errors: dict[int, str] = {}
        for i, path in enumerate(chunk):
            try:
                arrays[i] = clf.preprocess(path)
            except ImageError as exc:
                click.echo(f"Error: {printable(exc)}", err=True)
                errors[i] = exc.reason
                failed = True
        probs = iter(clf.predict_scores(np.stack(list(arrays.values())))) if arrays else iter(())
        for i, path in enumerate(chunk):
            if i in errors:
                records.append({"source": path, "error": errors[i]})
                continue
            p = clf.to_prediction(next(probs), top_k=top_k, source=path)
            records.append(p.to_dict())
            if json_to_stdout(json_out):
                continue
            # Labels come from the model file and paths from the disk: neither may forge a line.
            click.echo(f"{printable(path)}: {printable(p.sentence())}")
            for rank, (label, conf) in enumerate(p.top_k[1:], start=2):
                click.echo(f"    {rank}. {printable(label)} {100 * conf:.2f} percent")
    emit_json(json_out, records)
    if failed:
        ctx.exit(1)


@click.command("verify")
@click.argument("model", type=click.Path(readable=False, path_type=Path))
@click.argument("golden", type=click.Path(readable=False, path_type=Path), metavar="GOLDEN.npz")
@click.option("--by-name", is_flag=True,
              help="Check MODEL against the golden entry of its file name even though its content is not the "
                   "file golden.npz was made for (a re-exported file).")
@_THREADS
@json_option
@click.pass_context
def verify_cmd(ctx, model, golden, by_name, threads, json_out):
    """Check MODEL against the golden outputs recorded at export time (GOLDEN.npz).

    Runs the recorded images through the model and compares its probabilities with the
    recorded ones within the recorded tolerance. Exit 0 when they hold; 1, with the worst
    deviations, when not. Needs neither TensorFlow nor the dataset.

    MODEL is matched to its golden entry by content (sha256): a renamed file still verifies,
    and a changed one (even under the same name) is refused. --by-name checks a re-exported
    file against the entry of its name instead, and says so.
    """
    from .._term import format_table, printable
    from ..runtime.classifier import load_classifier
    from ..runtime.verify import verify_golden

    clf = load_classifier(model, threads=threads)
    report = verify_golden(clf, golden, by_name=by_name)
    emit_json(json_out, report.to_dict())
    if not json_to_stdout(json_out):
        verdict = "OK" if report.passed else "FAILED"
        click.echo(f"{verdict}: {clf.path.name} ({clf.format}, {clf.precision}, {clf.threads} thread{'' if clf.threads == 1 else 's'}) on "
                   f"{report.images} golden images: max |difference| {report.max_abs_diff:.6f}, "
                   f"tolerance {report.atol:g}, top-1 agreement {100 * report.top1_agreement:.1f}%")
        if report.matched_by == "name":
            click.echo(f"matched by name to the golden entry {printable(report.entry)}: this is not the file the "
                       "golden record was made for (its sha256 differs or is not recorded)")
        if not report.passed:
            rows = [(d.image, d.label, f"{d.expected:.6f}", f"{d.got:.6f}", f"{d.abs_diff:.6f}",
                     "over" if d.abs_diff > report.atol else "")
                    for d in report.worst]
            click.echo("worst deviations:")
            click.echo(format_table(["image", "label", "recorded", "now", "|diff|", ""], rows))
    if not report.passed:
        ctx.exit(1)


COMMANDS += [predict_cmd, verify_cmd]
