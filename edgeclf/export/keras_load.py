"""The one door every Keras model and SavedModel comes in through.

``load_keras_model(path)`` first has ``safety.inspect_model`` decide the format by content and
refuse code-carrying files; then Keras 3 files load with Keras 3 itself, in safe mode, and
Keras 2 files with tf_keras, in safe mode; a plain SavedModel is used through its serving
signature. Whatever was loaded comes back as one ``LoadedModel``: input size, output width
and kind, the input value range the model expects, ``predict`` on raw 0..255 pixels, and a
``tf.function`` for the converters with training-only layers switched off.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelFileError, UsageError, first_line
from ..runtime.spec import InputRange, OutputKind
from .safety import LAMBDA_REFUSED, Inspected, SourceFormat, inspect_model
from .tf_graph import (fixed_size, freeze, frozen_graph, infer_output_kind, input_scaling_op, last_op, make_function,
                       refuse_random_ops, rgb_to_gray, signature_input_name, signature_input_spec)

@dataclass(frozen=True)
class LoadedModel:
    """A loaded classifier, whatever it came from.

    ``predict`` and ``function`` both take float32 NHWC RGB pixels 0..255 (the wrap to the
    model's own ``input_range``, and to luma for a one-channel model, is inside), with
    training-only layers off.
    """

    path: Path
    format: SourceFormat
    name: str
    input_size: tuple[int, int]
    output_width: int
    output_kind: OutputKind
    input_range: InputRange
    notes: tuple[str, ...]  # how input size, range and output kind were decided, for the user
    sigmoid_appended: bool = False  # one binary logit (stated): the files end in an added sigmoid
    softmax_appended: bool = False  # logits turned into probabilities for apps (export's default)
    two_units_appended: bool = False  # one sigmoid unit p turned into [1 - p, p] for apps (export's default)
    channels: int = 3  # the model's own input channels: 1 = grayscale, fed luma of the RGB input
    keras_model: object = None  # the Keras 3 or tf_keras model (None for a plain SavedModel)
    function: object = None  # tf.function(image: float32[None, H, W, 3]) -> raw outputs
    trackable: object = field(default=None, repr=False)  # owns the variables of ``function``
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_tf_keras(self) -> bool:
        return self.keras_model is not None and not self.format.keras3

    @property
    def needs_wrap(self) -> bool:
        """Whether the files compute more than the Keras model: input scaling or an added sigmoid."""
        return (self.input_range is not InputRange.PIXELS or self.sigmoid_appended or self.softmax_appended
                or self.two_units_appended or self.gray)

    @property
    def gray(self) -> bool:
        """Whether the model takes one (luma) channel: the files take RGB and convert it."""
        return self.channels == 1

    def frozen_graph(self):
        """(GraphDef, input name, output name): the inference graph with the weights as
        constants, calls inlined, and only what the output needs (no seed updates of
        augmentation layers, which Keras 3 leaves even in ``model.export()`` graphs)."""
        if "frozen" not in self._cache:
            self._cache["frozen"] = freeze(self.function)
        return self._cache["frozen"]

    def concrete_function(self):
        """The frozen inference graph as a concrete function (input ``image``), for TFLite."""
        if "cf" not in self._cache:
            from tensorflow.python.eager.wrap_function import function_from_graph_def

            gdef, inp, out = self.frozen_graph()
            self._cache["cf"] = function_from_graph_def(gdef, inputs=inp + ":0", outputs=out + ":0")
        return self._cache["cf"]

    def predict(self, x, batch_size: int = 32, verbose: int = 0) -> np.ndarray:
        """Raw model outputs for float32 NHWC pixels 0..255 (Keras' own inference path)."""
        x = np.asarray(x, dtype=np.float32)
        if self.gray:
            x = rgb_to_gray(x)
        scale, offset = self.input_range.scale_offset
        if self.input_range is not InputRange.PIXELS:
            x = x * np.float32(scale) + np.float32(offset)
        outs = []
        for i in range(0, len(x), batch_size):
            part = x[i:i + batch_size]
            if self.keras_model is not None:
                y = self.keras_model(part, training=False)
            else:
                y = self._serve_raw(part)
            outs.append(np.asarray(y, dtype=np.float32))
        if not outs:
            return np.zeros((0, self.output_width), np.float32)
        y = np.concatenate(outs, axis=0)
        if self.softmax_appended:
            e = np.exp(y - y.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        if self.sigmoid_appended:
            y = 1.0 / (1.0 + np.exp(-y))
        return np.concatenate([1.0 - y, y], axis=1) if self.two_units_appended else y

    def with_softmax(self) -> "LoadedModel":
        """This logits model ending in a softmax (every file gives probabilities)."""
        from dataclasses import replace

        from .._optional import import_tensorflow

        if self.output_kind is not OutputKind.LOGITS:
            return self
        tf = import_tensorflow()
        function = make_function(tf, self.keras_model, self.trackable, self.input_size, self.input_range,
                                  sigmoid=self.sigmoid_appended, softmax=True, gray=self.gray)
        return replace(self, output_kind=OutputKind.PROBABILITIES, softmax_appended=True, function=function,
                       _cache={})

    def with_two_units(self) -> "LoadedModel":
        """This one-sigmoid model ending in ``[1 - p, p]`` (two probabilities, both labels)."""
        from dataclasses import replace

        from .._optional import import_tensorflow

        if self.output_kind is not OutputKind.SIGMOID:
            return self
        tf = import_tensorflow()
        function = make_function(tf, self.keras_model, self.trackable, self.input_size, self.input_range,
                                  sigmoid=self.sigmoid_appended, two_units=True, gray=self.gray)
        return replace(self, output_kind=OutputKind.PROBABILITIES, two_units_appended=True, output_width=2,
                       function=function, _cache={})

    def _serve_raw(self, x):
        sig = self.trackable.signatures["serving_default"]
        name = signature_input_name(sig)
        out = sig(**{name: x})
        return next(iter(out.values()))

    def describe(self) -> str:
        h, w = self.input_size
        colour = "grayscale (the files take RGB and convert it)" if self.gray else "RGB"
        return (f"{self.format.value}; input {h}x{w} {colour}, expects {self.input_range.value.replace(',', '..')}; "
                f"output {self.output_width} {self.output_kind.value}")

def load_keras_model(path, *, input_range=None, output_kind=None) -> LoadedModel:
    """Load a ``.keras``/``.h5`` (Keras 3 or tf_keras) or SavedModel, safely.

    Args:
        path: the model file or SavedModel folder; its format is decided by content.
        input_range: the pixel values the model expects (``"0,255"``, ``"0,1"``, ``"-1,1"``);
            default: inferred (a model that scales its own input takes 0..255).
        output_kind: ``logits``, ``probabilities`` or ``sigmoid``; default: inferred from the
            model's last op.

    Returns:
        A ``LoadedModel``.

    Raises:
        ModelFileError: not a model, damaged, carries code, or what it expects cannot be told.
        UsageError: the path does not exist, or a stated option is unknown.

    Example:
        >>> m = load_keras_model("flowers.keras")          # doctest: +SKIP
        >>> m.input_size, m.output_kind, m.input_range      # doctest: +SKIP
    """
    path = Path(path)
    stated_range = InputRange.parse(input_range) if input_range is not None else None
    stated_kind = _parse_output_kind(output_kind) if output_kind is not None else None
    ins = inspect_model(path)
    from .._optional import import_tensorflow

    tf = import_tensorflow()
    notes: list[str] = []
    if ins.format is SourceFormat.SAVEDMODEL:
        obj = _load_savedmodel(path, tf)
        sig = obj.signatures["serving_default"]
        spec = signature_input_spec(sig, path)
        size = fixed_size(tuple(spec.shape), path, None)
        channels = int(spec.shape[-1])
        keras_model, trackable, name = None, obj, path.name
        out_spec = list(sig.structured_outputs.values())
        if len(out_spec) != 1:
            raise ModelFileError(f"{path}: the serving signature has {len(out_spec)} outputs; a classifier has one")
        width = int(out_spec[0].shape[-1])
    else:
        keras_model = _load_keras(ins)
        _check_has_graph(keras_model, path)
        if len(keras_model.inputs) != 1 or len(keras_model.outputs) != 1:
            raise ModelFileError(f"{path}: the model has {len(keras_model.inputs)} inputs and "
                                 f"{len(keras_model.outputs)} outputs; edgeclf exports classifiers with one of each")
        size = fixed_size(tuple(keras_model.inputs[0].shape), path, keras_model)
        channels = int(keras_model.inputs[0].shape[-1])
        width = int(keras_model.outputs[0].shape[-1])
        trackable, name = keras_model, str(keras_model.name)
        if size != tuple(keras_model.inputs[0].shape[1:3]):
            notes.append(f"input size {size[0]}x{size[1]} from the model's Resizing layer")
    rng = stated_range or InputRange.PIXELS
    gray = channels == 1
    if gray:
        notes.append("one input channel: the files take RGB and convert it to luma inside "
                     "(L = 0.299 R + 0.587 G + 0.114 B, Pillow's convert('L') weights)")
    function = make_function(tf, keras_model, trackable, size, rng, gray=gray)
    graph = frozen_graph(function)
    refuse_random_ops(graph[0], path, ins.format)
    sigmoid = False
    if stated_kind is None:
        kind, why = infer_output_kind(graph, width, path, function, size)
        notes.append(f"output: {width} {kind.value} ({why})")
    elif stated_kind is OutputKind.LOGITS and width == 1 and last_op(graph) != "Sigmoid":
        # One binary logit (the transfer-learning tutorial's Dense(1)): the files end in a
        # sigmoid, so they give the probability of the second label like any sigmoid model.
        kind, sigmoid = OutputKind.SIGMOID, True
        function = make_function(tf, keras_model, trackable, size, rng, sigmoid=True, gray=gray)
        notes.append("output: 1 logit (as stated); a sigmoid is added, so the files give the probability "
                     "of the second label")
    else:
        kind = stated_kind
        notes.append(f"output: {width} {kind.value} (as stated)")
    if stated_range is None:
        scaling = input_scaling_op(graph)
        if scaling is None:
            raise ModelFileError(
                f"{path}: cannot tell which pixel values the model expects: it does not scale its input itself "
                "(no Rescaling or preprocess_input inside); state it with --input-range 0,255|0,1|-1,1 "
                "(the values it was trained on)")
        notes.append(f"takes 0..255 pixels (it scales them itself: {scaling})")
    else:
        notes.append(f"expects {stated_range.value.replace(',', '..')} as stated (--input-range); the exported files "
                     "take 0..255 pixels and scale them")
    return LoadedModel(path=path, format=ins.format, name=name, input_size=size, output_width=width,
                       output_kind=kind, input_range=rng, notes=tuple(notes), sigmoid_appended=sigmoid,
                       channels=channels, keras_model=keras_model, function=function, trackable=trackable)

def _parse_output_kind(value) -> OutputKind:
    try:
        return OutputKind(str(getattr(value, "value", value)).lower())
    except ValueError:
        raise UsageError(f"unknown --output-kind {value!r}; choose from: "
                         f"{', '.join(k.value for k in OutputKind)}") from None

def _check_has_graph(model, path: Path) -> None:
    """Refuse a loaded object without a graph of layers: a subclassed model has no inputs, and
    tf_keras gives back a bare object for a SavedModel whose keras_metadata.pb is empty."""
    if not isinstance(getattr(model, "inputs", None), (list, tuple)) or \
            not isinstance(getattr(model, "outputs", None), (list, tuple)):
        raise ModelFileError(f"{path}: holds no Keras model with defined inputs and outputs (a subclassed model, or a "
                             "SavedModel whose keras_metadata.pb is empty or damaged); build the model from built-in "
                             "layers (Sequential or functional) and save it again, or save it with model.export(DIR)")


def _load_keras(ins: Inspected):
    """Deserialize an inspected Keras file with the Keras that wrote it, in safe mode."""
    from .._optional import import_keras, require
    from .._quiet import native_stderr_silenced

    path = ins.path
    if ins.format is SourceFormat.KERAS2_SAVEDMODEL:
        keras = import_keras()
        target = str(path)
        kwargs = {}
        tmp = None
    else:
        keras = require("keras", purpose="loading Keras 3 models") if ins.format.keras3 else import_keras()
        # The loaders pick their reader by suffix: give each the suffix its content has.
        suffix = ".keras" if ins.format in (SourceFormat.KERAS3_ZIP, SourceFormat.KERAS2_ZIP) else ".h5"
        tmp = tempfile.TemporaryDirectory(prefix="edgeclf-load-")
        target = os.path.join(tmp.name, "model" + suffix)
        os.symlink(os.path.abspath(path), target)
        kwargs = {"safe_mode": True}
    try:
        with native_stderr_silenced():
            return keras.models.load_model(target, compile=False, **kwargs)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        msg = str(exc)
        if "Lambda" in msg or "safe_mode" in msg or "safe mode" in msg:
            raise ModelFileError(f"{path}: {LAMBDA_REFUSED}") from None
        raise ModelFileError(f"{path}: cannot load this {ins.format.value} model "
                             f"({type(exc).__name__}: {first_line(exc)})") from None
    except (OSError, ImportError) as exc:
        raise ModelFileError(f"{path}: not a readable {ins.format.value} model ({type(exc).__name__}: "
                             f"{str(exc)[:300]})") from None
    except Exception as exc:  # h5py / protobuf raise many kinds on damaged files
        raise ModelFileError(f"{path}: damaged or not a Keras model ({type(exc).__name__}: {str(exc)[:300]})") from None
    finally:
        if tmp is not None:
            tmp.cleanup()

def _load_savedmodel(path: Path, tf):
    from .._quiet import native_stderr_silenced

    try:
        with native_stderr_silenced():
            return tf.saved_model.load(str(path))
    except Exception as exc:  # TF raises many kinds for damaged SavedModels
        raise ModelFileError(f"{path}: cannot load this SavedModel ({type(exc).__name__}: "
                             f"{first_line(exc)})") from None
