"""CLI command: run, the main job (data, train, export, compare): parse, call ``edgeclf.job.run_job``, print."""

from __future__ import annotations

import click

from ..job import RUN_DEFAULTS
from ..train.zoo import DEFAULT_MODEL
from ..runtime.layout import JobDir
from ._options import threads_option

COMMANDS: list[click.Command] = []
DATA, RUN, EXPORT, REPORT, COMPARE_JSON = JobDir.DATA, JobDir.RUN, JobDir.EXPORT, JobDir.REPORT, JobDir.COMPARE


@click.command("run")
@click.argument("data", required=False, type=click.Path())
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help="Model variant to train (see `edgeclf models`).")
@click.option("--out", "out", default="edgeclf-run", show_default=True, type=click.Path(file_okay=False),
              help=f"Directory for everything: {DATA}/, {RUN}/, {EXPORT}/, {REPORT}/, {COMPARE_JSON}.")
@click.option("--epochs", type=int, default=RUN_DEFAULTS["epochs"], show_default=True)
@click.option("--image-size", default=None,
              help=f"S or HxW. Default: {RUN_DEFAULTS['image_size']} for the built-in dataset, else the "
                   "train command's default.")
@click.option("--per-class", type=int, default=RUN_DEFAULTS["per_class"], show_default=True,
              help="Images per class of the built-in dataset (without DATA).")
@threads_option(help="Engine threads for the comparison.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out directory.")
def run_cmd(data, model, out, epochs, image_size, per_class, threads, overwrite):
    """The main job in one command: data, train, export, compare.

    Without DATA it generates the built-in synthetic dataset (5 classes of shapes,
    PER_CLASS images each, 64x64; 20 epochs of tutorial_cnn_aug reach 98.2% validation
    accuracy on it). It then trains MODEL, exports every supported precision to TFLite and
    ONNX, compares every file against the Keras model on the validation split, prints the
    export's table and the comparison's two (per file, per class) and writes a report, all
    under OUT.

    \b
    Example:
      edgeclf run                      # built-in data: 2.5 to 8 minutes on 2 CPU cores
      edgeclf run photos/ --model mobilenet_v2 --image-size 160 --out flowers-run
    """
    from .._optional import ensure_installed
    from .._term import info
    from ..job import run_job
    from .compare import show_comparison
    from .train import parse_image_size

    size = parse_image_size(image_size)
    ensure_installed("tensorflow", "tf_keras", "tf2onnx", "onnx", purpose="the main job (training and export)")
    report = run_job(out, data=data, model=model, epochs=epochs, image_size=size, per_class=per_class,
                     threads=threads, overwrite=overwrite)
    click.echo(report.export.table())
    click.echo("")
    show_comparison(report.comparison)
    info("\n" + report.timing_line())
    files = sum(1 for m in report.comparison.models if not m.is_reference)
    click.echo(f"\nEverything is in {report.root}/: {DATA}/ (images), {RUN}/ (model.keras, curves), {EXPORT}/ (the "
               f"{files} deployable files), {REPORT}/report.md, {COMPARE_JSON}")
    if not report.passed:
        raise SystemExit(1)


COMMANDS.append(run_cmd)
