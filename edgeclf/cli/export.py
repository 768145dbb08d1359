"""CLI commands: export. Heavy imports stay inside the command functions."""

from __future__ import annotations

import click

from ..runtime.spec import (DEFAULT_CALIBRATION_SIZE, DEFAULT_SEED, MAX_SEED, Format, InputRange, IOType, OutputKind,
                            Precision, choices)
from ._options import emit_json, json_option, json_to_stdout


@click.command("export")
@click.argument("source", type=click.Path(path_type=str))
@click.option("--out", "out", required=True, type=click.Path(path_type=str),
              help="Folder to write (model_<precision>.tflite/.onnx, export.json, golden.npz).")
@click.option("--format", "formats", multiple=True, metavar="|".join(choices(Format)),
              help="Output format; repeat for several (default: tflite and onnx; ort = ONNX Runtime's own "
                   "format for ORT Mobile).")
@click.option("--precision", "precisions", multiple=True, metavar="P",
              help=f"One of {', '.join(choices(Precision))}; repeat for several (default: every supported one).")
@click.option("--io", "io", default=None, metavar="|".join(choices(IOType)),
              help="Input/output type of the integer TFLite files (int8, int8-full, qat). Default uint8.")
@click.option("--calibration", type=click.Path(path_type=str), default=None,
              help="Folder of training images for calibration (default: the run's training split).")
@click.option("--calibration-size", type=int, default=DEFAULT_CALIBRATION_SIZE, show_default=True,
              help="Images in the class-stratified calibration sample.")
@click.option("--data", type=click.Path(path_type=str), default=None,
              help="Class-folder dataset, split as training splits it (a run's own fractions and seed; "
                   f"else 80/20, seed {DEFAULT_SEED}): the training part for calibration and QAT, the rest for "
                   "validation.")
@click.option("--qat-epochs", type=int, default=1, show_default=True, help="QAT fine-tuning epochs.")
@click.option("--labels", type=click.Path(path_type=str), default=None,
              help="Labels file (one class per line); required for a model file that is not a run directory.")
@click.option("--input-range", "input_range", default=None, metavar="|".join(choices(InputRange)),
              help="Pixel values the model expects, when it does not scale its input itself "
                   "(default: inferred); the exported files still take 0..255.")
@click.option("--output-kind", "output_kind", default=None, metavar="|".join(choices(OutputKind)),
              help="What the model outputs (default: inferred from its last op).")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=None,
              help="Seed of the calibration sample (default: the run's).")
@click.option("--batch", type=int, default=None, metavar="N",
              help="Fixed batch size of the ONNX/ORT files (1 for phones: NNAPI and CoreML need fixed shapes). "
                   "Default: any batch.")
@click.option("--keep-logits", is_flag=True,
              help="Keep a logits output as it is (default: append a softmax, so apps show 0..1 scores).")
@click.option("--keep-sigmoid", is_flag=True,
              help="Keep a one-sigmoid (binary) output as one unit (default: [1 - p, p], so apps show both labels "
                   "and the right class).")
@click.option("--author", default="", help="Author, in the standard TFLite metadata apps read.")
@click.option("--license", "license_", default="", help="Licence, in the standard TFLite metadata.")
@click.option("--description", default=None, help="Model description in the standard TFLite metadata "
                                                   "(default: made from the labels and precision).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists (only a folder edgeclf made).")
@click.option("--max-accuracy-drop", type=float, default=None, metavar="PTS",
              help="Gate for every quantized file: accuracy at most PTS points below the source model's on the "
                   "held-out images; an int8 file that misses it keeps its most harmful layers float until it holds.")
@click.option("--min-agreement", type=float, default=None, metavar="FRAC",
              help="Gate for every quantized file: top-1 agreement with the source of at least FRAC (default 0.90), "
                   "met the same way. A file that misses its gate is not delivered, and the export exits 1.")
@json_option
def export_cmd(source, out, formats, precisions, io, calibration, calibration_size, data, qat_epochs,
               labels, seed, batch, keep_logits, author, license_, description, overwrite, max_accuracy_drop,
               min_agreement, json_out, input_range, output_kind, keep_sigmoid):
    """Convert a trained classifier (a run directory, or a Keras 3 / tf_keras .keras/.h5 or a
    SavedModel folder with --labels) to TFLite and ONNX files, each carrying its labels and
    input spec, each checked against the Keras model with the TensorFlow-free runtime.

    \b
    Examples:
      edgeclf export runs/cnn --out export/cnn
      edgeclf export runs/cnn --out export/cnn --format tflite --precision int8 --io int8
      edgeclf export runs/cnn --out export/cnn --precision float32 --precision int8 --min-agreement 0.99
      edgeclf export my_model.keras --labels labels.txt --data photos/ --out export/mine
      edgeclf export runs/cnn --out export/phone --format tflite --format ort --batch 1
    """
    from .._optional import ensure_installed
    from ..export.exporter import export_model
    from ..export.options import ExportOptions
    from ..export.std_metadata import ModelCard

    ensure_installed("tensorflow", "tf_keras", "tf2onnx", "onnx", purpose="export")
    options = ExportOptions(
        formats=tuple(formats) or None, precisions=tuple(precisions) or None, io=io, labels=labels, data=data,
        calibration=calibration, calibration_size=calibration_size, qat_epochs=qat_epochs, seed=seed,
        overwrite=overwrite, keep_logits=keep_logits, keep_sigmoid=keep_sigmoid, batch=batch,
        card=ModelCard(description=description, author=author, license=license_), input_range=input_range,
        output_kind=output_kind, max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement)
    report = export_model(source, out, options)
    emit_json(json_out, report.to_dict())
    if not json_to_stdout(json_out):
        click.echo(report.table())
        mobile = report.mobile_table()
        if mobile:
            click.echo("\nORT Mobile: which execution providers can run each ONNX/ORT file (ORT's own check)")
            click.echo(mobile)
    for x in report.failed:
        click.echo(f"FAIL {x.file} was not delivered: {x.reason}", err=True)
    if report.failed:
        raise SystemExit(1)


COMMANDS: list[click.Command] = [export_cmd]
