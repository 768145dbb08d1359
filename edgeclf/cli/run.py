"""CLI command: run, the main job (data, train, export, compare) through the library calls."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..runtime.layout import JobDir
from ..train.zoo import MODELS
from ._options import threads_option

COMMANDS: list[click.Command] = []

# Defaults chosen so that the whole job fits in 10 minutes on 2 CPU cores (measured 2 min 33 s and
# 6 min on two shared 2-core machines; docs/figures.md, "The main job").
RUN_DEFAULTS = {"classes": 5, "per_class": 600, "image_size": 64, "epochs": 20, "model": "tutorial_cnn_aug"}
RUN_INCOMPLETE_MARKER = JobDir.INCOMPLETE
DATA, RUN, EXPORT, REPORT, COMPARE_JSON = JobDir.DATA, JobDir.RUN, JobDir.EXPORT, JobDir.REPORT, JobDir.COMPARE


@click.command("run")
@click.argument("data", required=False, type=click.Path())
@click.option("--model", type=click.Choice(list(MODELS)), default=RUN_DEFAULTS["model"], show_default=True,
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
      edgeclf run                      # built-in data: 2.5 to 6 minutes on 2 CPU cores
      edgeclf run photos/ --model mobilenet_v2 --image-size 160 --out flowers-run
    """
    from .._io import is_edgeclf_dir, mark_dir, write_text
    from .._optional import ensure_installed
    from .._term import info
    from ..errors import UsageError
    from .compare import show_comparison
    from .train import parse_image_size

    ensure_installed("tensorflow", "tf_keras", "tf2onnx", "onnx", purpose="the main job (training and export)")
    # Every option is checked before the first folder is made: a typo must not cost a
    # generated dataset, nor leave a half-made --out behind.
    if epochs < 1:
        raise UsageError(f"--epochs must be at least 1; got {epochs}")
    size = parse_image_size(image_size)
    if data is None:
        from ..data.synth import MAX_PER_CLASS

        if not 1 <= per_class <= MAX_PER_CLASS:
            raise UsageError(f"--per-class must be between 1 and {MAX_PER_CLASS:,}; got {per_class}")
    elif not Path(data).is_dir():
        raise UsageError(f"DATA {data} is not a folder; give a folder with one subfolder per class, "
                         "or leave DATA out for the built-in dataset")
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
    timings = []
    t_all = time.monotonic()

    def step(name, fn):
        info(f"== {name}")
        t = time.monotonic()
        result = fn()
        timings.append((name, time.monotonic() - t))
        return result

    if data is None:
        from ..data.synth import generate

        data_dir = root / DATA
        step("data: built-in synthetic dataset",
             lambda: generate(data_dir, classes=RUN_DEFAULTS["classes"], per_class=per_class,
                              size=RUN_DEFAULTS["image_size"], overwrite=overwrite))
        if size is None:
            size = (RUN_DEFAULTS["image_size"],) * 2
    else:
        data_dir = Path(data)
    run_dir, export_dir, report_dir = root / RUN, root / EXPORT, root / REPORT

    def train():
        from ..train import train_model

        return train_model(data_dir, out=run_dir, model=model, epochs=epochs, image_size=size, overwrite=overwrite)

    def export():
        from ..export import export_model

        report = export_model(run_dir, export_dir, overwrite=overwrite)
        click.echo(report.table())
        return report

    def compare():
        from ..evaluate import compare_files

        cmp = compare_files([export_dir], data=run_dir, threads=threads)
        show_comparison(cmp, json_out=str(root / COMPARE_JSON), report_dir=str(report_dir))
        return cmp

    step(f"train: {model}", train)
    step("export: every precision, TFLite and ONNX", export)
    cmp = step("compare: every file against the Keras model", compare)
    marker.unlink()
    total = time.monotonic() - t_all
    info("\n" + "; ".join(f"{name.split(':')[0]} {sec:.0f}s" for name, sec in timings) + f"; total {total:.0f}s")
    files = sum(1 for m in cmp.models if not m.is_reference)
    click.echo(f"\nEverything is in {root}/: {DATA}/ (images), {RUN}/ (model.keras, curves), {EXPORT}/ (the "
               f"{files} deployable files), {REPORT}/report.md, {COMPARE_JSON}")
    if not cmp.passed:
        raise SystemExit(1)


COMMANDS.append(run_cmd)
