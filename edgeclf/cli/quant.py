"""CLI command: explain-quant. Thin: parse, call ``edgeclf.evaluate.quant_debug``, print."""

from __future__ import annotations

import click

from ..runtime.spec import DEFAULT_CALIBRATION_SIZE, MAX_SEED, Format, IOType, choices
from ._options import emit_json, json_option, json_to_stdout


@click.command("explain-quant")
@click.argument("source", type=click.Path(path_type=str))
@click.option("--format", "formats", multiple=True, metavar=f"{Format.TFLITE.value}|{Format.ONNX.value}",
              help="Format of the int8 file to explain; repeat for both (default: tflite and onnx).")
@click.option("--data", type=click.Path(path_type=str), default=None,
              help="Class-folder dataset, split as export splits it: calibration images and validation images.")
@click.option("--calibration", type=click.Path(path_type=str), default=None,
              help="Folder of images for calibration (default: the run's training split).")
@click.option("--calibration-size", type=int, default=DEFAULT_CALIBRATION_SIZE, show_default=True,
              help="Images in the class-stratified calibration sample.")
@click.option("--labels", type=click.Path(path_type=str), default=None,
              help="Labels file; required for a model file that is not a run directory.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=None,
              help="Seed of the calibration sample (default: the run's).")
@click.option("--io", "io", default=None, metavar="|".join(choices(IOType)),
              help="Input/output type of the TFLite int8 file (default uint8).")
@click.option("--sensitivity", is_flag=True,
              help="Rank by each layer's measured effect on the output (only that layer int8), as export's "
                   "--min-agreement does; one quantization per layer.")
@click.option("--top", type=int, default=20, show_default=True, help="Layers to show in the table and plot.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write a Markdown report with the ranked tables and a bar plot into DIR (a new or empty folder).")
@click.option("--overwrite", is_flag=True,
              help="Replace the --report folder if it exists (only a folder edgeclf made).")
@json_option
def explain_quant_cmd(source, formats, data, calibration, calibration_size, labels, seed, io, sensitivity, top,
                      report_dir, overwrite, json_out):
    """Show which layers int8 quantization hurts: the per-layer error of SOURCE's full-int8
    TFLite file (LiteRT QuantizationDebugger, rmse/scale) and ONNX file (ONNX Runtime
    qdq_loss_debug, added noise) against the float model, most harmful first, named after
    the Keras layers. With --sensitivity, ranked as `edgeclf export --min-agreement FRAC`
    ranks them before keeping the most harmful float.

    \b
    Example:
      edgeclf explain-quant runs/mnv3 --report quant/ --json quant.json
    """
    from .._optional import ensure_installed
    from ..errors import UsageError
    from ..evaluate.quant_debug import explain_quantization, write_quant_report

    if top < 1:
        raise UsageError(f"--top must be at least 1; got {top}")
    if report_dir:
        from .compare import check_report_dir

        check_report_dir(report_dir, overwrite, inputs=(source, data, calibration, labels))
    wants_onnx = not formats or any(f.lower() == Format.ONNX.value for f in formats)
    ensure_installed("tensorflow", "tf_keras", *(("tf2onnx", "onnx") if wants_onnx else ()), purpose="explain-quant")
    expl = explain_quantization(source, formats=list(formats) or None, labels=labels, data=data,
                                calibration=calibration, calibration_size=calibration_size, seed=seed, io=io,
                                sensitivity=sensitivity)
    emit_json(json_out, expl.to_dict())
    if report_dir:
        from .._term import info

        from .._io import write_into_dir

        written = write_into_dir(report_dir, lambda d: write_quant_report(expl, d, top=top), overwrite=overwrite,
                                 what="quantization report")
        info(f"wrote {written}")
    if not json_to_stdout(json_out):
        click.echo(expl.table(top))
        click.echo("")
        click.echo(expl.summary())


COMMANDS: list[click.Command] = [explain_quant_cmd]
