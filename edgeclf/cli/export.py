"""CLI commands: export. Heavy imports stay inside the command functions."""

from __future__ import annotations

import click

_PRECISIONS = ("float32", "float16", "dynamic", "int8", "int16x8", "qat")


@click.command("export")
@click.argument("source", type=click.Path(path_type=str))
@click.option("--out", "out", required=True, type=click.Path(path_type=str),
              help="Folder to write (model_<precision>.tflite/.onnx, export.json, golden.npz).")
@click.option("--format", "formats", multiple=True, metavar="tflite|onnx",
              help="Output format; repeat for both (default: both).")
@click.option("--precision", "precisions", multiple=True, metavar="P",
              help=f"One of {', '.join(_PRECISIONS)}; repeat for several (default: every supported one).")
@click.option("--io", "io", default=None, metavar="uint8|int8|float32",
              help="Input/output type of the full-integer TFLite files (int8, qat). Default uint8.")
@click.option("--calibration", type=click.Path(path_type=str), default=None,
              help="Folder of training images for calibration (default: the run's training split).")
@click.option("--calibration-size", type=int, default=200, show_default=True,
              help="Images in the class-stratified calibration sample.")
@click.option("--data", type=click.Path(path_type=str), default=None,
              help="Class-folder dataset, split as training splits it (a run's own fractions and seed; "
                   "else 80/20, seed 123): the training part for calibration and QAT, the rest for validation.")
@click.option("--qat-epochs", type=int, default=1, show_default=True, help="QAT fine-tuning epochs.")
@click.option("--labels", type=click.Path(path_type=str), default=None,
              help="Labels file (one class per line); required for a model file that is not a run directory.")
@click.option("--input-range", "input_range", default=None, metavar="0,255|0,1|-1,1",
              help="Pixel values the model expects, when it does not scale its input itself "
                   "(default: inferred); the exported files still take 0..255.")
@click.option("--output-kind", "output_kind", default=None, metavar="logits|probabilities|sigmoid",
              help="What the model outputs (default: inferred from its last op).")
@click.option("--seed", type=int, default=None, help="Seed of the calibration sample (default: the run's).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--json", "json_path", type=click.Path(path_type=str), default=None,
              help="Also write the report as JSON to this file.")
def export_cmd(source, out, formats, precisions, io, calibration, calibration_size, data, qat_epochs,
               labels, seed, overwrite, json_path, input_range, output_kind):
    """Convert a trained classifier (a run directory, or a Keras 3 / tf_keras .keras/.h5 or a
    SavedModel folder with --labels) to TFLite and ONNX files, each carrying its labels and
    input spec, each checked against the Keras model with the TensorFlow-free runtime.

    \b
    Examples:
      edgeclf export runs/cnn --out export/cnn
      edgeclf export runs/cnn --out export/cnn --format tflite --precision int8 --io int8
      edgeclf export my_model.keras --labels labels.txt --data photos/ --out export/mine
    """
    from .._io import write_json
    from .._optional import ensure_installed
    from ..export.exporter import export_model

    ensure_installed("tensorflow", "tf_keras", "tf2onnx", "onnx", purpose="export")
    report = export_model(
        source, out, formats=list(formats) or None, precisions=list(precisions) or None, io=io,
        labels=labels, data=data, calibration=calibration, calibration_size=calibration_size,
        qat_epochs=qat_epochs, seed=seed, overwrite=overwrite, input_range=input_range, output_kind=output_kind,
    )
    click.echo(report.table())
    if json_path:
        write_json(json_path, report.to_dict())


COMMANDS: list[click.Command] = [export_cmd]
