"""The model zoo: a dict of plain builder functions, one flat Functional tf_keras model each.

Every model takes RGB values 0..255 as float32 NHWC and normalises inside (Rescaling), so
every exported file takes the same input. A MobileNet base is built on the model's own
(rescaled) input tensor with ``input_tensor=``, so its layers sit in the model's one graph —
tensorflow-model-optimization refuses a model nested inside a model.

Augmentation is returned beside the model, never inside it: the trainer wraps it around the
model for training, and the saved inference model has none.

Example:
    >>> from edgeclf.train.zoo import build_model
    >>> built = build_model("tutorial_cnn", image_size=180, num_classes=5)   # doctest: +SKIP
    >>> built.model.count_params()                                            # doctest: +SKIP
    3989285
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .._optional import import_keras
from ..errors import OptionError, UsageError
from ..runtime.preprocess import image_size_arg
from ..runtime.spec import INPUT_NAME, OutputKind, check_label_count


@dataclass(frozen=True)
class BuiltModel:
    """A zoo model: the inference model, its training-only augmentation (or None), and the
    names of the pretrained base's layers (empty for the from-scratch CNNs) for freezing and
    fine-tuning. What it outputs is its registry entry's ``head``."""

    name: str
    model: object
    augmentation: object | None
    base_layers: tuple[str, ...] = field(default_factory=tuple)

    @property
    def output_kind(self) -> str:
        return MODELS[self.name].head.value


@dataclass(frozen=True)
class ModelEntry:
    """A zoo model as the registry knows it: declared once, beside its builder."""

    name: str
    builder: Callable[..., BuiltModel]
    size: int  # the size its tutorial used
    head: OutputKind  # what the model outputs
    description: str
    imagenet_alphas: tuple[float, ...] = ()  # widths Keras has ImageNet weights for (transfer models)

    @property
    def transfer(self) -> bool:
        return bool(self.imagenet_alphas)


MODELS: dict[str, ModelEntry] = {}


def register_model(*, size: int, description: str, head: OutputKind = OutputKind.LOGITS,
                   imagenet_alphas: tuple[float, ...] = ()):
    """Add the decorated builder to ``MODELS`` under its function name (timm's pattern):
    the CLI's choices and ``edgeclf models`` come from here."""

    def add(fn):
        MODELS[fn.__name__] = ModelEntry(fn.__name__, fn, size, OutputKind(head), description,
                                         tuple(imagenet_alphas))
        return fn

    return add


def _head(keras, x, num_classes: int, name: str = "logits"):
    # float32 logits even under mixed precision: softmax/loss in float16 loses too much.
    return keras.layers.Dense(num_classes, name=name, dtype="float32")(x)


def _input(keras, image_size):
    h, w = image_size_arg(image_size)
    return keras.Input(shape=(h, w, 3), dtype="float32", name=INPUT_NAME)


def tutorial_augmentation(keras, *, seed: int | None = None):
    """RandomFlip / RandomRotation(0.1) / RandomZoom(0.1), as the flowers tutorial; training only."""
    return keras.Sequential([
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomRotation(0.1, seed=seed),
        keras.layers.RandomZoom(0.1, seed=seed),
    ], name="augmentation")


def _tutorial_body(keras, inp, num_classes, dropout: float):
    L = keras.layers
    x = L.Rescaling(1.0 / 255, name="rescaling")(inp)
    for i, filters in enumerate((16, 32, 64), start=1):
        x = L.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = L.MaxPooling2D(name=f"pool{i}")(x)
    if dropout:
        x = L.Dropout(dropout, name="dropout")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(128, activation="relu", name="dense")(x)
    return _head(keras, x, num_classes)


@register_model(size=180, description="TF tutorial CNN: Conv 16/32/64, Dense 128, logits")
def tutorial_cnn(image_size=180, num_classes=5, *, weights=None, seed=None, **_) -> BuiltModel:
    """The TensorFlow image classification tutorial's CNN: Rescaling 1/255, Conv 16/32/64 each
    followed by MaxPool, Dense 128, Dense N logits (3,989,285 parameters at 180px, 5 classes)."""
    keras = import_keras()
    inp = _input(keras, image_size)
    model = keras.Model(inp, _tutorial_body(keras, inp, num_classes, 0.0), name="tutorial_cnn")
    _load_weights(model, weights)
    return BuiltModel("tutorial_cnn", model, None)


@register_model(size=180, description="tutorial_cnn + flip/rotate/zoom augmentation (training only) + Dropout")
def tutorial_cnn_aug(image_size=180, num_classes=5, *, weights=None, seed=None, **_) -> BuiltModel:
    """``tutorial_cnn`` with Dropout 0.2 and flip/rotation/zoom augmentation during training
    (same parameter count; the augmentation is not part of the saved model)."""
    keras = import_keras()
    inp = _input(keras, image_size)
    model = keras.Model(inp, _tutorial_body(keras, inp, num_classes, 0.2), name="tutorial_cnn_aug")
    _load_weights(model, weights)
    return BuiltModel("tutorial_cnn_aug", model, tutorial_augmentation(keras, seed=seed))


@register_model(size=160, description="cats-vs-dogs CNN: Conv 32/32/64, Dropout, Dense 64, logits")
def cats_dogs_cnn(image_size=160, num_classes=2, *, weights=None, seed=None, **_) -> BuiltModel:
    """The cats-vs-dogs blog's first model: Conv 32/32/64 (valid padding), Flatten, Dropout,
    Dense 64, Dense N logits (5,337,250 parameters at 160px, 2 classes)."""
    keras = import_keras()
    L = keras.layers
    inp = _input(keras, image_size)
    x = L.Rescaling(1.0 / 255, name="rescaling")(inp)
    x = L.Conv2D(32, 3, activation="relu", name="conv1")(x)
    x = L.MaxPooling2D(name="pool1")(x)
    x = L.Conv2D(32, 3, activation="relu", name="conv2")(x)
    x = L.MaxPooling2D(name="pool2")(x)
    x = L.Conv2D(64, 3, activation="relu", name="conv3")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dropout(0.2, name="dropout")(x)
    x = L.Dense(64, activation="relu", name="dense")(x)
    model = keras.Model(inp, _head(keras, x, num_classes), name="cats_dogs_cnn")
    _load_weights(model, weights)
    return BuiltModel("cats_dogs_cnn", model, None)


@register_model(size=150, head=OutputKind.SIGMOID,
                description="horse-or-human CNN: Conv 16/32/64, Dense 512, one sigmoid unit (2 classes)")
def horse_human_cnn(image_size=150, num_classes=2, *, weights=None, seed=None, **_) -> BuiltModel:
    """The horse-or-human binary CNN: Conv 16/32/64 + MaxPool (valid padding), Dense 512, one
    sigmoid unit = P(label index 1) (9,494,561 parameters at 150px). Two classes only."""
    if num_classes != 2:
        raise UsageError(f"horse_human_cnn is a binary (one sigmoid unit) model and needs exactly 2 classes; "
                         f"got {num_classes}. Use tutorial_cnn or mobilenet_v2 for more classes")
    keras = import_keras()
    L = keras.layers
    inp = _input(keras, image_size)
    x = L.Rescaling(1.0 / 255, name="rescaling")(inp)
    for i, filters in enumerate((16, 32, 64), start=1):
        x = L.Conv2D(filters, 3, activation="relu", name=f"conv{i}")(x)
        x = L.MaxPooling2D(name=f"pool{i}")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(512, activation="relu", name="dense")(x)
    out = L.Dense(1, activation="sigmoid", name="sigmoid", dtype="float32")(x)
    model = keras.Model(inp, out, name="horse_human_cnn")
    _load_weights(model, weights)
    return BuiltModel("horse_human_cnn", model, None)


def _app_weights(weights):
    if weights in (None, "none"):
        return None
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UsageError(f"--weights {weights}: no such file; use none, imagenet or the path of a weights file")
    return str(path)


FROM_SCRATCH_BN_MOMENTUM = 0.9


def _transfer(name, app, image_size, num_classes, weights, extra) -> BuiltModel:
    keras = import_keras()
    L = keras.layers
    h, w = image_size_arg(image_size)
    if min(h, w) < 32:
        raise UsageError(f"{name} needs an image size of at least 32 pixels; got {h}x{w}")
    inp = _input(keras, (h, w))
    # MobileNets expect [-1, 1]; the scaling lives in the model, input stays 0..255.
    x = L.Rescaling(1.0 / 127.5, offset=-1.0, name="rescaling")(inp)
    before = {id(layer) for layer in keras.Model(inp, x).layers}
    from .._quiet import native_stderr_silenced

    try:
        with native_stderr_silenced():
            base = app(input_tensor=x, include_top=False, weights=_app_weights(weights), **extra)
    except (ValueError, KeyError) as exc:
        raise UsageError(f"{name} cannot be built with --weights {weights or 'none'} and --alpha "
                         f"{extra.get('alpha')}: {exc}") from None
    except Exception as exc:  # Keras' get_file raises a bare Exception("URL fetch failure ...")
        if "URL fetch failure" in str(exc) or isinstance(exc, OSError):
            raise UsageError("cannot download the imagenet weights (no network?); use --weights none or a "
                             "local weights file") from None
        raise
    base_layers = tuple(layer.name for layer in base.layers if id(layer) not in before)
    if _app_weights(weights) is None:
        # Keras' MobileNets use BatchNorm momentum 0.999, tuned for ImageNet-length runs. From
        # scratch on a few thousand images the moving statistics lag so far behind the weights
        # that inference predicts one class for everything (measured: 20% on 5 classes, 84%
        # training accuracy); 0.9 lets them keep up.
        for layer in base.layers:
            if isinstance(layer, L.BatchNormalization):
                layer.momentum = FROM_SCRATCH_BN_MOMENTUM
    y = L.GlobalAveragePooling2D(name="pool")(base.output)
    y = L.Dropout(0.2, name="dropout")(y)
    model = keras.Model(inp, _head(keras, y, num_classes), name=name)
    return BuiltModel(name, model, None, base_layers)


@register_model(size=224, imagenet_alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
                description="MobileNetV2 base (alpha) + pooling, Dropout, logits; --weights imagenet|PATH")
def mobilenet_v2(image_size=224, num_classes=5, *, weights=None, alpha: float = 1.0, seed=None, **_) -> BuiltModel:
    """MobileNetV2 (``alpha`` width) base, global average pooling, Dropout 0.2, Dense N logits.

    ``weights``: None/"none" (from scratch), "imagenet" (downloads Keras' weights) or a path.
    """
    keras = import_keras()
    return _transfer("mobilenet_v2", keras.applications.MobileNetV2, image_size, num_classes, weights,
                     {"alpha": alpha})


@register_model(size=224, imagenet_alphas=(0.75, 1.0),
                description="MobileNetV3-Small base (alpha) + pooling, Dropout, logits; --weights imagenet|PATH")
def mobilenet_v3_small(image_size=224, num_classes=5, *, weights=None, alpha: float = 1.0, seed=None,
                       **_) -> BuiltModel:
    """MobileNetV3-Small base (its own preprocessing switched off: the model's Rescaling to
    [-1, 1] does it), global average pooling, Dropout 0.2, Dense N logits."""
    keras = import_keras()
    return _transfer("mobilenet_v3_small", keras.applications.MobileNetV3Small, image_size, num_classes,
                     weights, {"alpha": alpha, "include_preprocessing": False})


def _load_weights(model, weights):
    if weights in (None, "none"):
        return
    if weights == "imagenet":
        raise UsageError(f"{model.name} is trained from scratch; --weights imagenet is for mobilenet_v2 "
                         "and mobilenet_v3_small. Use none or the path of a weights file of this model")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UsageError(f"--weights {weights}: no such file; use none or a weights file of {model.name}")
    try:
        model.load_weights(str(path))
    except (ValueError, OSError) as exc:
        raise UsageError(f"--weights {path} does not fit {model.name}: {exc}") from None


DEFAULT_MODEL = "tutorial_cnn_aug"  # what `edgeclf train` and `edgeclf run` train unless told
MAX_ALPHA = 2.0  # wider than any published MobileNet (1.4); far wider exhausts memory


def check_options(name: str, *, image_size=None, num_classes: int, weights=None, alpha: float = 1.0) -> None:
    """Everything ``build_model`` would refuse that can be known without TensorFlow: call it
    before slow work (decoding the images). Raises UsageError."""
    if name not in MODELS:
        raise UsageError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    if num_classes < 2:
        raise UsageError(f"--num-classes must be at least 2; got {num_classes}")
    entry = MODELS[name]
    size = image_size_arg(entry.size if image_size is None else image_size)
    if min(size) < 8:
        raise UsageError(f"image size {size[0]}x{size[1]} is too small for {name} (at least 8 pixels)")
    try:
        check_label_count(entry.head, num_classes, what="classes")
    except ValueError as exc:
        raise UsageError(f"{name}: {exc}") from None
    transfer = entry.transfer
    if transfer and min(size) < 32:
        raise UsageError(f"{name} needs an image size of at least 32 pixels; got {size[0]}x{size[1]}")
    if transfer and not 0 < alpha <= MAX_ALPHA:
        raise OptionError("alpha", f"must be a width multiplier in (0, {MAX_ALPHA:g}]; got {alpha}")
    if weights == "imagenet":
        if not transfer:
            raise UsageError(f"{name} is trained from scratch; --weights imagenet is for mobilenet_v2 "
                             "and mobilenet_v3_small. Use none or the path of a weights file of this model")
        if float(alpha) not in entry.imagenet_alphas:
            raise UsageError(f"--weights imagenet has {name} weights only for --alpha "
                             f"{', '.join(f'{a:g}' for a in entry.imagenet_alphas)}; got --alpha {alpha:g}")
    elif weights not in (None, "none") and not Path(weights).expanduser().is_file():
        raise UsageError(f"--weights {weights}: no such file; use none, imagenet or the path of a weights file")


def build_model(name: str, *, image_size=None, num_classes: int, weights=None, **options) -> BuiltModel:
    """Build zoo model ``name`` (see ``MODELS``).

    Raises:
        UsageError: an unknown name, a bad size or class count, weights that do not fit, an
            --alpha without ImageNet weights, or ImageNet weights that cannot be downloaded.
    """
    check_options(name, image_size=image_size, num_classes=num_classes, weights=weights,
                  alpha=options.get("alpha", 1.0))
    size = image_size_arg(MODELS[name].size if image_size is None else image_size)
    return MODELS[name].builder(size, num_classes, weights=weights, **options)
