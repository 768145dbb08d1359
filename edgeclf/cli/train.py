"""CLI commands: train, models. Heavy imports stay inside the command functions (the model
registry, ``edgeclf.train.zoo``, imports no TensorFlow)."""

from __future__ import annotations

import click

from ..runtime.spec import DEFAULT_SEED, DEFAULT_TEST_SPLIT, DEFAULT_VAL_SPLIT, MixedPrecision, Optimizer, choices
from ..train.zoo import DEFAULT_MODEL, MODELS
from ._options import emit_json, json_option, json_to_stdout

COMMANDS: list[click.Command] = []


def parse_image_size(value):
    """``--image-size`` as (height, width): ``S`` or ``HxW``; None stays None (the default)."""
    from ..runtime.preprocess import image_size_arg

    if value is None:
        return None
    try:
        if "x" in str(value):
            h, w = str(value).lower().split("x")
            return image_size_arg((int(h), int(w)))
        return image_size_arg(int(value))
    except ValueError:
        from ..errors import UsageError

        raise UsageError(f"--image-size must be S or HxW (e.g. 180 or 120x160); got {value!r}") from None


@click.command("train")
@click.argument("data", type=click.Path())
@click.option("--model", "model", type=click.Choice(list(MODELS)), default=DEFAULT_MODEL, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@click.option("--image-size", default=None,
              help="S or HxW. Default: the size all images share, else the model's tutorial size.")
@click.option("--epochs", default=20, show_default=True, type=int)
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--optimizer", type=click.Choice(choices(Optimizer)), default=Optimizer.ADAM.value, show_default=True)
@click.option("--learning-rate", type=float, default=None,
              help="Default 1e-3 (adam, rmsprop) or 1e-2 (sgd, momentum 0.9).")
@click.option("--val-split", default=DEFAULT_VAL_SPLIT, show_default=True, type=float,
              help="Fraction of every class held out for validation (seeded, stratified).")
@click.option("--val-dir", type=click.Path(), default=None,
              help="A separate class-per-folder validation set (then all of DATA trains).")
@click.option("--test-split", default=DEFAULT_TEST_SPLIT, show_default=True, type=float,
              help="Fraction carved off as a test set (from --val-dir when given).")
@click.option("--seed", default=DEFAULT_SEED, show_default=True, type=click.IntRange(0, 2**32 - 1))
@click.option("--weights", default="none", show_default=True,
              help="none, imagenet (mobilenets; needs network) or a weights file.")
@click.option("--alpha", default=1.0, show_default=True, type=float, help="MobileNet width multiplier.")
@click.option("--fine-tune", default=0, show_default=True, type=int,
              help="After training the head, unfreeze this many top base layers and train again.")
@click.option("--early-stopping", type=int, default=None, metavar="PATIENCE",
              help="Stop when val loss has not improved for PATIENCE epochs (best weights kept).")
@click.option("--stop-at-accuracy", type=float, default=None, metavar="X",
              help="Stop once training accuracy reaches X (e.g. 0.95).")
@click.option("--mixed-precision", type=click.Choice(choices(MixedPrecision)), default=MixedPrecision.AUTO.value, show_default=True,
              help="auto: on for GPUs with compute capability 7.0 or newer.")
@click.option("--no-cache", is_flag=True, help="Decode into memory without the disk cache.")
@click.option("--decode-workers", type=int, default=None, help="Image-decoding processes (default: one per CPU).")
@click.option("--workers", default=None, metavar="HOST:PORT,...",
              help="Train on several machines: every worker's address, the same list on each (worker 0 is the "
                   "chief and writes the run). Default: TF_CONFIG when set, else this process alone.")
@click.option("--worker-index", type=int, default=None, metavar="I", help="This machine's place in --workers.")
@click.option("--worker-timeout", type=float, default=300.0, show_default=True, metavar="SECONDS",
              help="How long to wait for the other workers to start, or for a step they must join.")
@click.option("--overwrite", is_flag=True, help="Replace an existing, non-empty run directory.")
@json_option
def train_command(data, model, out, image_size, epochs, batch_size, optimizer, learning_rate, val_split, val_dir,
                  test_split, seed, weights, alpha, fine_tune, early_stopping, stop_at_accuracy, mixed_precision,
                  no_cache, decode_workers, workers, worker_index, worker_timeout, overwrite, json_out):
    """Train MODEL on DATA (one subfolder per class) and write the run to OUT.

    OUT gets model.keras (the inference model), labels.txt, config.json, split.json,
    history.json, metrics.json, curves.png, confusion.png and mistakes.png. The cache of
    decoded images lives in ~/.cache/edgeclf (EDGECLF_CACHE_DIR to move it)."""
    from .._optional import ensure_installed
    from ..train.trainer import TrainConfig, train_model

    ensure_installed("tensorflow", "tf_keras", purpose="training")
    cfg = TrainConfig(model=model, image_size=parse_image_size(image_size), epochs=epochs, batch_size=batch_size,
                      optimizer=optimizer, learning_rate=learning_rate, val_split=val_split, val_dir=val_dir,
                      test_split=test_split, seed=seed, weights=None if weights == "none" else weights,
                      alpha=alpha, fine_tune=fine_tune, early_stopping=early_stopping,
                      stop_at_accuracy=stop_at_accuracy, mixed_precision=mixed_precision, cache=not no_cache,
                      decode_workers=decode_workers, workers=workers, worker_index=worker_index,
                      worker_timeout=worker_timeout)
    result = train_model(data, out=out, config=cfg, overwrite=overwrite)
    emit_json(json_out, result.to_dict())
    if not json_to_stdout(json_out):
        m = result.metrics
        line = f"val_accuracy {m['val_accuracy']:.4f}"
        if "test_accuracy" in m:
            line += f"  test_accuracy {m['test_accuracy']:.4f}"
        click.echo(f"{line}  baseline {m['majority_baseline']['accuracy']:.4f}  run {result.out}")


@click.command("models")
@click.argument("name", required=False)
@click.option("--image-size", default=None, help="S or HxW (default: the model's tutorial size).")
@click.option("--num-classes", default=5, show_default=True, type=int)
@click.option("--alpha", default=1.0, show_default=True, type=float, help="MobileNet width multiplier.")
@json_option
def models_command(name, image_size, num_classes, alpha, json_out):
    """List the model variants, or show NAME's layers and parameter counts."""
    from .._term import format_table
    from ..errors import UsageError

    if name is None:
        emit_json(json_out, [{"name": e.name, "default_size": e.size, "output_kind": e.head.value,
                              "description": e.description} for e in MODELS.values()])
        if not json_to_stdout(json_out):
            click.echo(format_table(["model", "size", "output", "description"],
                                    [(e.name, e.size, e.head.value, e.description) for e in MODELS.values()],
                                    align="lrll"))
        return
    from ..train.zoo import build_model

    if name not in MODELS:
        raise UsageError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    built = build_model(name, image_size=parse_image_size(image_size), num_classes=num_classes, alpha=alpha)
    m = built.model
    trainable = int(sum(int(w.shape.num_elements()) for w in m.trainable_weights))
    total = int(m.count_params())
    info = {"name": name, "image_size": list(m.input_shape[1:3]), "num_classes": num_classes,
            "output_kind": built.output_kind, "params": total, "trainable_params": trainable,
            "non_trainable_params": total - trainable, "layers": len(m.layers),
            "augmentation": [layer.name for layer in built.augmentation.layers] if built.augmentation else []}
    emit_json(json_out, info)
    if json_to_stdout(json_out):
        return
    lines: list[str] = []
    m.summary(print_fn=lambda s, **_: lines.append(s), line_length=90)
    click.echo("\n".join(lines))
    if built.augmentation is not None:
        click.echo(f"training-only augmentation (not saved): {', '.join(info['augmentation'])}")
    click.echo(f"params: {total:,}  output: {built.output_kind}")


COMMANDS.extend([train_command, models_command])
