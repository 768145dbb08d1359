"""Train a zoo model on a class-per-folder dataset and write a run directory.

The run directory (see docs/contracts.md) is written into a temporary folder beside ``out``
and renamed into place at the end, so an interrupted or failed run leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from .. import __version__
from .._io import atomic_dir, check_out_dir, write_json, write_text
from .._term import info, printable
from ..errors import OptionError, UsageError
from ..runtime.metrics import accuracy, confusion_matrix, majority_class, mean_log_loss
from ..runtime.layout import RunDir
from ..runtime.preprocess import image_size_arg
from ..runtime.spec import (DEFAULT_RESIZE, DEFAULT_SEED, DEFAULT_TEST_SPLIT, DEFAULT_VAL_SPLIT, INPUT_NAME, MAX_EPOCHS,
                            MAX_SEED, MixedPrecision, ModelSpec, Optimizer, ResizeMethod, parse_enum)
from . import zoo
from .distribute import DEFAULT_WORKER_TIMEOUT_S, cluster_from_env, lost_worker, make_strategy, parse_workers


DEFAULT_LEARNING_RATES = {Optimizer.ADAM: 1e-3, Optimizer.RMSPROP: 1e-3, Optimizer.SGD: 1e-2}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (written to ``config.json``).

    ``image_size`` None: the size every image of the data shares, else the model's tutorial
    size. ``learning_rate`` None: 1e-3 for adam and rmsprop, 1e-2 for sgd (momentum 0.9).
    ``fine_tune`` N > 0: after the first phase, unfreeze the top N layers of the pretrained
    base (BatchNorm stays frozen) and train ``epochs`` more at a tenth of the learning rate.
    ``stop_at_accuracy`` X: stop once training accuracy reaches X (the tutorials' callback).
    """

    model: str = zoo.DEFAULT_MODEL
    image_size: tuple[int, int] | None = None
    epochs: int = 20
    batch_size: int = 32
    optimizer: Optimizer = Optimizer.ADAM
    learning_rate: float | None = None
    val_split: float = DEFAULT_VAL_SPLIT
    val_dir: str | None = None
    test_split: float = DEFAULT_TEST_SPLIT
    seed: int = DEFAULT_SEED
    weights: str | None = None
    alpha: float = 1.0
    fine_tune: int = 0
    early_stopping: int | None = None
    stop_at_accuracy: float | None = None
    mixed_precision: MixedPrecision = MixedPrecision.AUTO
    resize_method: ResizeMethod = DEFAULT_RESIZE
    cache: bool = True
    decode_workers: int | None = None  # image-decoding processes (default: one per CPU)
    workers: str | None = None  # "HOST:PORT,HOST:PORT,...": a multi-worker cluster (else TF_CONFIG, else one)
    worker_index: int | None = None  # this process's place in ``workers`` (0 is the chief)
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT_S  # seconds to wait for the cluster or a collective

    def validated(self) -> "TrainConfig":
        if self.model not in zoo.MODELS:
            raise OptionError("model", f"{self.model!r} is unknown; choose one of: {', '.join(zoo.MODELS)}")
        opt = parse_enum(Optimizer, self.optimizer, name="optimizer")
        mp = parse_enum(MixedPrecision, self.mixed_precision, name="mixed precision mode")
        rm = parse_enum(ResizeMethod, self.resize_method, name="resize method")
        size = None if self.image_size is None else image_size_arg(self.image_size)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise OptionError("seed", f"must be a whole number from 0 to {MAX_SEED}; got {self.seed!r}")
        if not 1 <= self.epochs <= MAX_EPOCHS:
            raise OptionError("epochs", f"must be from 1 to {MAX_EPOCHS}; got {self.epochs}")
        if self.batch_size < 1:
            raise OptionError("batch_size", f"must be at least 1; got {self.batch_size}")
        if self.learning_rate is not None and not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise OptionError("learning_rate", f"must be a positive number; got {self.learning_rate}")
        if self.val_dir is None and not (0 < self.val_split < 1):
            raise OptionError("val_split", f"must be between 0 and 1 (exclusive) unless a validation folder is "
                                           f"given; got {self.val_split}")
        if not (0 <= self.test_split < 1):
            raise OptionError("test_split", f"must be in [0, 1); got {self.test_split}")
        if self.early_stopping is not None and self.early_stopping < 1:
            raise OptionError("early_stopping", f"is a patience in epochs, at least 1; got {self.early_stopping}")
        if self.stop_at_accuracy is not None and not (0 < self.stop_at_accuracy <= 1):
            raise OptionError("stop_at_accuracy", f"must be a fraction in (0, 1]; got {self.stop_at_accuracy}")
        if self.fine_tune < 0:
            raise OptionError("fine_tune", f"must be 0 or a number of layers; got {self.fine_tune}")
        if self.fine_tune and self.model not in ("mobilenet_v2", "mobilenet_v3_small"):
            raise UsageError(f"--fine-tune applies to the pretrained bases (mobilenet_v2, mobilenet_v3_small), "
                             f"not {self.model}")
        if self.fine_tune and self.weights in (None, "none"):
            raise UsageError("--fine-tune needs pretrained --weights (imagenet or a file); "
                             "with --weights none the whole model trains from the start")
        if self.decode_workers is not None and self.decode_workers < 1:
            raise OptionError("decode_workers", f"must be at least 1; got {self.decode_workers}")
        if self.workers is not None:
            parse_workers(self.workers, self.worker_index)
        elif self.worker_index is not None:
            raise OptionError("worker_index", "needs workers (the HOST:PORT list of the cluster)")
        if not 1 <= self.worker_timeout <= 86400:
            raise OptionError("worker_timeout", f"must be 1..86400 seconds; got {self.worker_timeout}")
        return dataclasses.replace(self, optimizer=opt, mixed_precision=mp, resize_method=rm, image_size=size)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, Enum):
                d[k] = v.value
        if d["image_size"] is not None:
            d["image_size"] = list(d["image_size"])
        return d


@dataclass(frozen=True)
class TrainResult:
    """What a run produced; ``metrics`` is the content of ``metrics.json``."""

    out: Path
    model_path: Path
    class_names: tuple[str, ...]
    val_accuracy: float
    epochs_run: int
    seconds: float
    metrics: dict = field(repr=False)
    history: dict = field(repr=False)

    def to_dict(self) -> dict:
        return {"out": str(self.out), "model": str(self.model_path), "class_names": list(self.class_names),
                "val_accuracy": self.val_accuracy, "epochs_run": self.epochs_run, "seconds": self.seconds,
                "metrics": self.metrics}


# The largest "common size" of the data the trainer adopts on its own: a folder of phone photos
# all 3024x4032 would otherwise train at 12 megapixels (37 MB per cached image).
MAX_AUTO_SIDE = 512


def _common_size(paths) -> tuple[int, int] | None:
    """The (h, w) every readable image of ``paths`` shares, else None.

    Reads the header sizes only (cheap), so an EXIF rotation is not applied: a folder of
    rotated photos can share a size here that ``load_image`` would see transposed. That only
    decides the training size (the images are resized to it either way), never the pixels.
    """
    from PIL import Image

    sizes = set()
    for p in paths:
        try:
            with Image.open(p) as im:
                sizes.add((im.size[1], im.size[0]))
        except Exception:
            continue
        if len(sizes) > 1:
            return None
    return sizes.pop() if len(sizes) == 1 else None


def _auto_image_size(paths, model: str) -> tuple[tuple[int, int], str]:
    """The training size when no --image-size is given, and why (for the log line)."""
    default = image_size_arg(zoo.MODELS[model].size)
    common = _common_size(paths)
    if common is None:
        return default, f"{model}'s default"
    if max(common) > MAX_AUTO_SIDE:
        return default, (f"{model}'s default: the images share {common[0]}x{common[1]}, larger than "
                         f"{MAX_AUTO_SIDE} px, too big to train at")
    return common, "the size every image in the data shares"


def _report_bad(bad: dict, what: str) -> None:
    if not bad:
        return
    info(f"skipped {len(bad)} unreadable file(s) in {what}:")
    for i, (p, reason) in enumerate(sorted(bad.items())):
        if i == 20:
            info(f"  ... and {len(bad) - 20} more (all listed in {RunDir.SPLIT})")
            break
        info(f"  {p}: {reason}")


def _use_mixed_precision(tf, mode: MixedPrecision) -> bool:
    if mode is MixedPrecision.OFF:
        return False
    gpus = tf.config.list_physical_devices("GPU")
    capable = False
    for g in gpus:
        try:
            cc = tf.config.experimental.get_device_details(g).get("compute_capability")
        except Exception:
            cc = None
        if cc and tuple(cc) >= (7, 0):
            capable = True
    if mode is MixedPrecision.ON:
        if not gpus:
            info("note: --mixed-precision on without a GPU; float16 on a CPU is slow")
        return True
    return capable


class _EpochLine:
    """Keras callback factory: one line per epoch on stderr."""

    @staticmethod
    def make(keras, total: int, offset: int = 0, label: str = ""):
        class EpochLine(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.monotonic()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                parts = [f"{label}epoch {epoch + 1 - offset}/{total}"]
                for key, name in (("loss", "loss"), ("accuracy", "acc"), ("val_loss", "val_loss"),
                                  ("val_accuracy", "val_acc")):
                    if key in logs:
                        parts.append(f"{name} {logs[key]:.4f}")
                parts.append(f"{time.monotonic() - self._t:.1f}s")
                info("  ".join(parts))

        return EpochLine()


def _stop_at_accuracy(keras, target: float):
    class StopAtAccuracy(keras.callbacks.Callback):
        """Stop training once the training accuracy reaches ``target``."""

        def on_epoch_end(self, epoch, logs=None):
            acc = (logs or {}).get("accuracy")
            if acc is not None and acc >= target:
                info(f"training accuracy {acc:.4f} reached --stop-at-accuracy {target}; stopping")
                self.model.stop_training = True

    return StopAtAccuracy()


def _optimizer(keras, kind: Optimizer, lr: float):
    if kind is Optimizer.ADAM:
        return keras.optimizers.Adam(learning_rate=lr)
    if kind is Optimizer.RMSPROP:
        return keras.optimizers.RMSprop(learning_rate=lr)
    return keras.optimizers.SGD(learning_rate=lr, momentum=0.9)


def _compile(keras, model, output_kind, opt):
    if output_kind == "sigmoid":
        loss = keras.losses.BinaryCrossentropy()
        metric = keras.metrics.BinaryAccuracy(name="accuracy")
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    model.compile(optimizer=opt, loss=loss, metrics=[metric])


def evaluate_predictions(probs: np.ndarray, labels, class_names, train_labels=None) -> dict:
    """Accuracy, loss, per-class accuracy, confusion matrix and the majority-class baseline."""
    labels = np.asarray(labels, dtype=np.int64)
    n = len(class_names)
    probs = np.asarray(probs).reshape(len(labels), n) if len(labels) else np.zeros((0, n))
    cm = confusion_matrix(probs, labels, n)
    per_class = {}
    for i, name in enumerate(class_names):
        total = int(cm[i].sum())
        per_class[name] = float(cm[i, i] / total) if total else None
    majority = majority_class(train_labels if train_labels is not None else labels, n)
    count = int(len(labels))
    return {
        "accuracy": accuracy(probs, labels) if count else None,
        "loss": mean_log_loss(probs, labels) if count else None,
        "count": count,
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
        "majority_baseline": {"class": class_names[majority],
                              "accuracy": float((labels == majority).mean()) if count else None},
    }


def train_model(data, *, out, config: TrainConfig | None = None, overwrite: bool = False,
                verbose: bool = True, **options) -> TrainResult:
    """Train ``config.model`` on the class-per-folder directory ``data`` and write the run to ``out``.

    Args:
        data: ``root/<class>/*.jpg|png|...``.
        out: the run directory to create (refused when it exists and is not empty, unless
            ``overwrite``, and always when it is, holds or lies inside ``data`` or ``val_dir``).
        config: a TrainConfig; ``options`` override its fields (``model="mobilenet_v2"``, ...).
        overwrite: replace an existing run directory.
        verbose: print progress (decoding, one line per epoch) to stderr.

    Returns:
        TrainResult with the validation accuracy and the path of ``model.keras``.

    Raises:
        UsageError: a bad option. DataError: a dataset that cannot be used.

    Example:
        >>> r = train_model("shapes", out="runs/a", model="tutorial_cnn_aug", epochs=5)  # doctest: +SKIP
        >>> round(r.val_accuracy, 2)
        0.86
    """
    try:
        cfg = dataclasses.replace(config or TrainConfig(), **options)
    except TypeError as exc:
        raise UsageError(f"unknown training option: {exc}") from None
    cfg = cfg.validated()
    say = info if verbose else (lambda msg: None)
    cluster = parse_workers(cfg.workers, cfg.worker_index) if cfg.workers else cluster_from_env()
    chief = cluster is None or cluster.is_chief
    # Only the chief writes the run; a worker's --out (on its own machine) is never touched.
    out = check_out_dir(out, overwrite, inside=(data, cfg.val_dir)) if chief else Path(out)
    started = time.monotonic()
    d, cfg = _load_data(data, cfg, say, verbose)
    fitted = _fit(d, cfg, cluster, say, verbose)
    va_probs, metrics = _measure(d, fitted, cfg)
    seconds = time.monotonic() - started
    metrics["seconds"] = round(seconds, 2)
    if not chief:
        say(f"val accuracy {metrics['val_accuracy']:.4f}; worker {cluster.index} done (the chief, "
            f"{cluster.workers[0]}, writes the run)")
    else:
        _write_run(out, overwrite, d, fitted, cfg, va_probs, metrics)
        say(f"val accuracy {metrics['val_accuracy']:.4f} (majority-class baseline "
            f"{metrics['majority_baseline']['accuracy']:.4f}); wrote {out} in {seconds:.0f}s")
    return TrainResult(out=out, model_path=RunDir(out).model_path, class_names=tuple(d.class_names),
                       val_accuracy=float(metrics["val_accuracy"]), epochs_run=fitted.epochs_run,
                       seconds=time.monotonic() - started, metrics=metrics, history=fitted.history)


@dataclass(frozen=True)
class _Data:
    """The decoded, split dataset: pixel sources and the rows of each split in them."""

    folder: object
    split: object
    size: tuple[int, int]
    decoded: object  # the training folder's decoded pixels
    vsource: object  # where the validation and test rows are (--val-dir's pixels, else decoded)
    bad: dict
    rows: dict  # "train"/"val"/"test" -> (rows, labels)

    @property
    def class_names(self):
        return self.split.class_names


def _load_data(data, cfg: TrainConfig, say, verbose: bool) -> tuple[_Data, TrainConfig]:
    """Scan, size, decode (through the cache) and split the dataset; refuse a model that
    cannot be built before spending minutes decoding."""
    from ..data.cache import decode_images
    from ..data.folders import drop_bad, scan_folder
    from ..data.splits import check_val_folder, split_folder

    folder = scan_folder(data)
    val_folder = scan_folder(cfg.val_dir, what="--val-dir") if cfg.val_dir else None
    if val_folder is not None:
        check_val_folder(folder, val_folder)  # before decoding; split_folder repeats it (cheap) for other callers
    size = cfg.image_size
    if size is None:
        size, why = _auto_image_size(folder.paths, cfg.model)
        say(f"image size {size[0]}x{size[1]} ({why}; set --image-size to change)")
        cfg = dataclasses.replace(cfg, image_size=size)
    zoo.check_options(cfg.model, image_size=size, num_classes=len(folder.class_names), weights=cfg.weights,
                      alpha=cfg.alpha)
    say(f"{len(folder.files)} images in {len(folder.class_names)} classes: {', '.join(folder.class_names)}")

    def decode(f):
        out = decode_images(f.paths, size, resize_method=cfg.resize_method, root=f.root, cache=cfg.cache,
                            workers=cfg.decode_workers, show_progress=verbose)
        if verbose:
            _report_bad(out.bad, str(f.root))
        return out

    decoded = decode(folder)
    bad = dict(decoded.bad)
    folder = drop_bad(folder, decoded.bad)
    vdecoded = None
    if val_folder is not None:
        vdecoded = decode(val_folder)
        bad.update(vdecoded.bad)
        val_folder = drop_bad(val_folder, vdecoded.bad, what="--val-dir")
    split = split_folder(folder, val_split=cfg.val_split, test_split=cfg.test_split, seed=cfg.seed,
                         val_folder=val_folder, skipped=sorted(bad.items()))
    say(f"split: {len(split.train)} train, {len(split.val)} val, {len(split.test)} test (seed {cfg.seed})")
    vsource = vdecoded if vdecoded is not None else decoded

    def arrays(items, source):
        return source.rows([p for p, _ in items]), np.asarray([y for _, y in items], np.int64)

    rows = {"train": arrays(split.train, decoded), "val": arrays(split.val, vsource),
            "test": arrays(split.test, vsource)}
    return _Data(folder, split, size, decoded, vsource, bad, rows), cfg


@dataclass(frozen=True)
class _Fitted:
    """The trained inference model (float32, outside any distribution strategy) and its history."""

    infer: object
    output_kind: str
    history: dict
    epochs_run: int
    mixed: bool
    device: str
    batch_size: int
    tensorflow_version: str


def _fit(d: _Data, cfg: TrainConfig, cluster, say, verbose: bool) -> _Fitted:
    """Build the model under the distribution strategy, fit it (and fine-tune a pretrained
    base), and return a float32 twin for saving and export."""
    from .._optional import import_keras, import_tensorflow
    from ..data.tfdata import make_dataset

    tf = import_tensorflow()
    keras = import_keras()
    keras.utils.set_random_seed(cfg.seed)
    mixed = _use_mixed_precision(tf, cfg.mixed_precision)
    gpus = tf.config.list_physical_devices("GPU")
    strategy = make_strategy(tf, cluster, timeout=cfg.worker_timeout, say=say)
    device = f"{len(gpus)} GPU{'s' if len(gpus) != 1 else ''}" if gpus else "CPU"
    if cluster is not None:
        device += f" x {cluster.size} workers"
    say(f"training {cfg.model} on {device}{' with mixed precision' if mixed else ''}")
    if strategy.num_replicas_in_sync > 1:
        say(f"batch size {cfg.batch_size} is global: about {cfg.batch_size // strategy.num_replicas_in_sync} "
            f"images per replica on {strategy.num_replicas_in_sync} replicas")
    num_classes = len(d.class_names)
    previous_policy = keras.mixed_precision.global_policy()
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope():
            built, train_net, base, lr = _build_for_training(keras, cfg, d.size, num_classes)
        binary = built.output_kind == "sigmoid"
        shard = cluster is not None
        (tr_rows, tr_y), (va_rows, va_y) = d.rows["train"], d.rows["val"]
        train_ds = make_dataset(d.decoded.pixels, tr_y, rows=tr_rows, batch_size=cfg.batch_size, shuffle=True,
                                seed=cfg.seed, binary=binary, shard_by_data=shard)
        val_ds = make_dataset(d.vsource.pixels, va_y, rows=va_rows, batch_size=cfg.batch_size, binary=binary,
                              shard_by_data=shard)

        def fit(total, offset=0, label=""):
            cbs = [_EpochLine.make(keras, total, offset, label)] if verbose else []
            if cfg.early_stopping:
                cbs.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.early_stopping,
                                                         restore_best_weights=True))
            if cfg.stop_at_accuracy:
                cbs.append(_stop_at_accuracy(keras, cfg.stop_at_accuracy))
            try:
                return train_net.fit(train_ds, validation_data=val_ds, verbose=0, epochs=offset + total,
                                     initial_epoch=offset, callbacks=cbs)
            except Exception as exc:  # a peer that died surfaces as one of several TensorFlow errors
                lost = lost_worker(exc, cluster)
                if lost is None:
                    raise
                raise lost from None

        history = {k: [float(v) for v in vals] for k, vals in fit(cfg.epochs).history.items()}
        epochs_run = len(history.get("loss", []))
        if cfg.fine_tune:
            with strategy.scope():
                base_in_model = [layer for layer in built.model.layers if layer.name in base]
                for layer in base_in_model[-cfg.fine_tune:]:
                    if not isinstance(layer, keras.layers.BatchNormalization):
                        layer.trainable = True
                _compile(keras, train_net, built.output_kind, _optimizer(keras, cfg.optimizer, lr / 10))
            say(f"fine-tuning the top {min(cfg.fine_tune, len(base_in_model))} base layers at "
                f"learning rate {lr / 10:g}")
            hist2 = fit(cfg.epochs, epochs_run, "fine-tune ")
            history["fine_tune_start"] = epochs_run
            for k, vals in hist2.history.items():
                history.setdefault(k, []).extend(float(v) for v in vals)
            epochs_run = len(history["loss"])
        infer = built.model
        if mixed or cluster is not None:
            # A plain float32 twin outside the strategy: exporters and the runtime expect a float32
            # graph, and after a multi-worker fit each worker predicts and saves on its own.
            keras.mixed_precision.set_global_policy(previous_policy)
            twin = zoo.build_model(cfg.model, image_size=d.size, num_classes=num_classes, weights=None,
                                   alpha=cfg.alpha, seed=cfg.seed).model
            twin.set_weights(infer.get_weights())
            infer = twin
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    return _Fitted(infer, built.output_kind, history, epochs_run, mixed, device, cfg.batch_size, tf.__version__)


def _build_for_training(keras, cfg: TrainConfig, size, num_classes: int):
    """(the built zoo model, the network that trains: augmentation in front when the model has
    it, the base layer names, the learning rate); a pretrained base starts frozen."""
    built = zoo.build_model(cfg.model, image_size=size, num_classes=num_classes, weights=cfg.weights,
                            alpha=cfg.alpha, seed=cfg.seed)
    infer = built.model
    if built.augmentation is not None:
        inp = keras.Input(shape=infer.input_shape[1:], name=INPUT_NAME)
        train_net = keras.Model(inp, infer(built.augmentation(inp)), name=f"{cfg.model}_training")
    else:
        train_net = infer
    base = set(built.base_layers)
    if cfg.weights not in (None, "none") and base:
        for layer in infer.layers:
            if layer.name in base:
                layer.trainable = False
    lr = cfg.learning_rate or DEFAULT_LEARNING_RATES[cfg.optimizer]
    _compile(keras, train_net, built.output_kind, _optimizer(keras, cfg.optimizer, lr))
    return built, train_net, base, lr


def _measure(d: _Data, fitted: _Fitted, cfg: TrainConfig) -> tuple[np.ndarray, dict]:
    """The validation probabilities and metrics.json's content (test split too, when there is one)."""
    from ..data.tfdata import make_dataset
    from ..runtime.classifier import to_probabilities

    def predict(rows):
        if len(rows) == 0:
            return np.zeros((0, len(d.class_names)))
        ds = make_dataset(d.vsource.pixels, np.zeros(len(rows)), rows=rows,
                          batch_size=max(fitted.batch_size, 64)).map(lambda x, y: x)
        return to_probabilities(np.asarray(fitted.infer.predict(ds, verbose=0)), fitted.output_kind)

    (_, tr_y), (va_rows, va_y), (te_rows, te_y) = d.rows["train"], d.rows["val"], d.rows["test"]
    va_probs = predict(va_rows)
    val = evaluate_predictions(va_probs, va_y, d.class_names, tr_y)
    metrics = {
        "val_accuracy": val["accuracy"], "val_loss": val["loss"], "val_count": val["count"],
        "per_class_accuracy": val["per_class_accuracy"], "confusion_matrix": val["confusion_matrix"],
        "majority_baseline": val["majority_baseline"], "train_accuracy": fitted.history.get("accuracy", [None])[-1],
        "train_count": int(len(tr_y)), "epochs_run": fitted.epochs_run, "skipped_files": len(d.bad),
    }
    if len(te_rows):
        te = evaluate_predictions(predict(te_rows), te_y, d.class_names, tr_y)
        metrics.update({"test_accuracy": te["accuracy"], "test_loss": te["loss"], "test_count": te["count"],
                        "test_confusion_matrix": te["confusion_matrix"]})
    return va_probs, metrics


def _write_run(out, overwrite: bool, d: _Data, fitted: _Fitted, cfg: TrainConfig, va_probs: np.ndarray,
               metrics: dict) -> None:
    """Write the run directory, atomically: model, spec, labels, config, split, history, metrics, plots."""
    from . import plots

    class_names = list(d.class_names)
    # spec.json says what the model takes and gives; config.json only how it was trained.
    spec = ModelSpec(labels=tuple(class_names), input_size=d.size, output_kind=fitted.output_kind,
                     resize_method=cfg.resize_method, edgeclf_version=__version__, model_name=cfg.model)
    config = {
        **{k: v for k, v in cfg.to_dict().items() if k not in ("image_size", "resize_method")},
        "data": str(d.folder.root), "params": int(fitted.infer.count_params()),
        "mixed_precision_used": bool(fitted.mixed), "device": fitted.device, "edgeclf_version": __version__,
        "tensorflow_version": fitted.tensorflow_version,
    }
    va_rows, va_y = d.rows["val"]
    with atomic_dir(out, overwrite=overwrite, what="training run") as tmp:
        run = RunDir(tmp)
        fitted.infer.save(run.model_path)
        write_json(run.file(RunDir.SPEC), spec.to_dict())
        # for people and other tools, one per line: what could split a line or rewrite a screen is escaped
        write_text(run.file(RunDir.LABELS), "".join(f"{printable(n)}\n" for n in class_names))
        write_json(run.file(RunDir.CONFIG), config)
        write_json(run.file(RunDir.SPLIT), d.split.to_dict())
        write_json(run.file(RunDir.HISTORY), fitted.history)
        write_json(run.file(RunDir.METRICS), metrics)
        plots.plot_curves(fitted.history, run.file(RunDir.CURVES))
        plots.plot_confusion(np.asarray(metrics["confusion_matrix"]), class_names, run.file(RunDir.CONFUSION))
        pred = va_probs.argmax(axis=1)
        wrong_all = np.flatnonzero(pred != va_y)
        wrong = _round_robin(wrong_all, va_y, len(class_names), limit=16)
        plots.plot_mistakes([np.asarray(d.vsource.pixels[r]) for r in va_rows[wrong]], va_y[wrong], pred[wrong],
                            va_probs[wrong, pred[wrong]] if len(wrong) else [], class_names,
                            run.file(RunDir.MISTAKES), total=len(wrong_all))


def _round_robin(indices: np.ndarray, y: np.ndarray, num_classes: int, *, limit: int) -> np.ndarray:
    """Up to ``limit`` of ``indices``, taken in turn from each true class (so a grid of
    mistakes is not all one class)."""
    by_class = [list(indices[y[indices] == c]) for c in range(num_classes)]
    picked: list = []
    while len(picked) < min(limit, len(indices)):
        for group in by_class:
            if group and len(picked) < limit:
                picked.append(group.pop(0))
    return np.asarray(picked, dtype=np.int64)
