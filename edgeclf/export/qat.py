"""Quantization-aware training with tensorflow-model-optimization.

``tfmot.quantization.keras.quantize_model`` refuses a model with a ``Rescaling`` layer or a
nested model (every edgeclf model has one or the other), so the model is first flattened
into one Functional graph, then every layer tfmot can quantize is annotated, the layers it
cannot take but that hold no weights (input scaling, augmentation, plain TF ops) are left
in float and calibrated at conversion, and ``quantize_apply`` builds the fake-quant model.
A layer with weights that tfmot cannot quantize is an error naming that layer.

A QAT model saves and reloads only as ``.h5`` inside ``quantize_scope()``
(see ``save_qat_checkpoint`` / ``load_qat_checkpoint``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._quiet import native_stderr_silenced
from ..errors import UsageError, first_line
from ..runtime.spec import INPUT_NAME, InputRange, OutputKind

# Layers that are float preprocessing or training-only noise; never annotated.
_SKIP = ("InputLayer", "Rescaling", "Normalization", "Resizing", "CenterCrop", "Dropout",
         "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout")


@dataclass(frozen=True)
class QATResult:
    model: object  # the fine-tuned fake-quant tf_keras model
    annotated: tuple[str, ...]
    left_float: tuple[str, ...]
    epochs: int
    history: dict


def _tfmot():
    from .._optional import import_tensorflow, require

    import_tensorflow()
    with native_stderr_silenced():
        return require("tensorflow_model_optimization", purpose="quantization-aware training")


def flatten_model(model, *, layer_outputs: dict | None = None):
    """One Functional graph with nested models inlined (same layer objects, same weights).

    ``layer_outputs``, when given, is filled with {layer name: its output tensor in the flat
    graph} (a layer's own ``.output`` is its first call's, inside the nested model)."""
    keras = _keras()
    if not any(isinstance(l, keras.Model) for l in model.layers):
        if layer_outputs is not None:
            layer_outputs.update({l.name: l.output for l in model.layers})
        return model
    inputs = [keras.Input(shape=t.shape[1:], dtype=t.dtype, name=t.name.split(":")[0].split("/")[0])
              for t in model.inputs]
    if layer_outputs is not None:
        for x in inputs:
            layer_outputs[x.node.layer.name] = x
    outputs = _inline(model, inputs, record=layer_outputs)
    return keras.Model(inputs if len(inputs) > 1 else inputs[0],
                       outputs if len(outputs) > 1 else outputs[0], name=model.name)


def _keras():
    from .._optional import import_keras

    return import_keras()


# Keras 3 operations (not layers) that a functional graph may hold, as the TF functions
# tf_keras turns into TFOpLambda layers: what ``preprocess_input`` and ``x / 127.5`` become.
_K3_OPS = {"TrueDivide": "math.truediv", "Divide": "math.truediv", "Subtract": "math.subtract",
           "Add": "math.add", "Multiply": "math.multiply", "Negative": "math.negative"}


def _tf_keras_config(layer, cls) -> dict:
    """A Keras 3 layer's config as ``cls`` (its tf_keras twin) takes it; weights come later."""
    import inspect

    cfg = dict(layer.get_config())
    dtype = cfg.get("dtype")
    if isinstance(dtype, dict):
        cfg["dtype"] = (dtype.get("config") or {}).get("name", "float32")
    for key, value in list(cfg.items()):
        if key.endswith(("_initializer", "_regularizer", "_constraint")):
            del cfg[key]
        elif isinstance(value, dict) and value.get("class_name") == "function":
            cfg[key] = value.get("config")
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in cfg.items() if k in params or k in ("name", "dtype", "trainable")}


def rebuild_as_tf_keras(model, *, check_images: int = 4):
    """A Keras 3 functional/sequential model rebuilt as a flat tf_keras model, same weights.

    Every layer is rebuilt from its config as the tf_keras layer of the same class and given
    the same weights; nested models are inlined; augmentation (``Random*``) layers are left
    out (they do nothing at inference and QAT fine-tunes without them); Keras 3 math ops
    become tf_keras TFOpLambda layers. The rebuilt model is checked against the original on
    random images. Raises UsageError naming the first layer that has no tf_keras twin.
    """
    import keras as k3

    from .._optional import import_tensorflow
    from .tf_graph import AUGMENTATION_LAYERS

    tf = import_tensorflow()
    tfk = _keras()
    made: dict[int, object] = {}  # id(keras 3 layer) -> tf_keras layer (shared layers stay shared)
    pairs: list = []

    def graph_of(m):
        if isinstance(m, k3.Sequential):
            if getattr(m, "_functional", None) is None:
                raise UsageError(f"QAT cannot rebuild the Sequential {m.name!r}: it has no input shape")
            return m._functional
        if not hasattr(m, "_run_through_graph"):
            raise UsageError(f"QAT cannot rebuild the subclassed model {m.name!r}; build it with the Functional API")
        return m

    def translate(op):
        if isinstance(op, k3.Model):
            inner = graph_of(op)
            return lambda *args, **kwargs: inner._run_through_graph(args[0], operation_fn=translate)
        kind = type(op).__name__
        if not isinstance(op, k3.layers.Layer):
            fn_name = _K3_OPS.get(kind)
            if fn_name is None:
                raise UsageError(f"QAT cannot rebuild operation {op.name!r} ({kind}) as a tf_keras layer; "
                                 "export the other precisions without qat")
            fn = tf.math.__dict__[fn_name.split(".")[1]]
            return lambda *args, **kwargs: fn(*args)
        if kind in AUGMENTATION_LAYERS or kind == "InputLayer":
            return lambda x, *args, **kwargs: x
        cls = getattr(tfk.layers, kind, None)
        if cls is None:
            raise UsageError(f"QAT cannot rebuild layer {op.name!r} ({kind}): tf_keras has no such layer; "
                             "export the other precisions without qat")
        if id(op) not in made:
            try:
                made[id(op)] = cls(**_tf_keras_config(op, cls))
            except (TypeError, ValueError) as exc:
                raise UsageError(f"QAT cannot rebuild layer {op.name!r} ({kind}) as a tf_keras layer "
                                 f"({first_line(exc, 200)})") from None
            if op.weights:
                pairs.append((op, made[id(op)]))
        layer = made[id(op)]

        def call(*args, **kwargs):
            kwargs.pop("training", None)
            return layer(*args, **kwargs)

        return call

    graph = graph_of(model)
    shape = tuple(model.inputs[0].shape[1:])
    inp = tfk.Input(shape=shape, name=INPUT_NAME)
    with native_stderr_silenced():
        out = graph._run_through_graph(inp, operation_fn=translate)
        out = tf.nest.flatten(out)[0]
        rebuilt = tfk.Model(inp, out, name=model.name)
    for k3_layer, tfk_layer in pairs:
        try:
            tfk_layer.set_weights(k3_layer.get_weights())
            tfk_layer.finalize_state()
        except ValueError as exc:
            raise UsageError(f"QAT cannot copy the weights of layer {k3_layer.name!r} ({type(k3_layer).__name__}) "
                             f"into tf_keras ({first_line(exc, 200)})") from None
    if check_images and all(d is not None for d in shape):
        x = np.random.default_rng(0).uniform(0, 255, (check_images, *shape)).astype(np.float32)
        want = np.asarray(model(x, training=False))
        got = np.asarray(rebuilt(x, training=False))
        if not np.allclose(got, want, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(want).max()))):
            raise UsageError(f"QAT: the tf_keras rebuild of {model.name!r} differs from the Keras 3 model "
                             f"(max difference {float(np.abs(got - want).max()):.3g}); export without qat")
    return rebuilt


def tf_keras_model(model):
    """The tf_keras model tensorflow-model-optimization works on, taking 0..255 pixels.

    ``model`` is a tf_keras model (returned as it is) or a ``keras_load.LoadedModel``: a
    tf_keras source is used as it is; a Keras 3 model is rebuilt layer by layer with the same
    weights (``rebuild_as_tf_keras``). Raises UsageError naming what cannot be.
    """
    from .keras_load import LoadedModel

    if not isinstance(model, LoadedModel):
        return model
    if "tf_keras" in model._cache:  # QAT and the accuracy budget share one rebuild
        return model._cache["tf_keras"]
    if model.keras_model is None:
        raise UsageError(f"{model.path}: QAT needs the model's layers, and a SavedModel without Keras "
                         "metadata holds only a traced graph; export the Keras model (.keras) for QAT")
    tfk_model = model.keras_model if model.is_tf_keras else rebuild_as_tf_keras(model.keras_model)
    if model.input_range is not InputRange.PIXELS or model.sigmoid_appended or model.gray:
        tfk_model = with_wrapping(tfk_model, *model.input_range.scale_offset, sigmoid=model.sigmoid_appended,
                                  gray=model.gray)
    # Heads go on the graph once, flat, so tfmot can annotate them. A tf_keras source that
    # needed no wrap had its head put into keras_model itself (heads._appended) and carries
    # no *_appended flag, so nothing is applied twice.
    if model.softmax_appended:
        from .heads import with_probability_head

        tfk_model, _ = with_probability_head(tfk_model, OutputKind.LOGITS)
    if model.two_units_appended:
        from .heads import with_two_unit_head

        tfk_model, _ = with_two_unit_head(tfk_model, OutputKind.SIGMOID)
    model._cache["tf_keras"] = tfk_model
    return tfk_model


def with_wrapping(model, scale: float, offset: float, *, sigmoid: bool = False, gray: bool = False):
    """``model`` behind a Rescaling(scale, offset), so it takes 0..255 pixels, and followed by
    a sigmoid when its one output is a logit. ``gray``: the model takes one channel, and RGB
    is turned into luma in front by a fixed, non-trainable 1x1 convolution (not a Lambda:
    tfmot and the safe loaders take it)."""
    tfk = _keras()
    shape = tuple(model.inputs[0].shape[1:])
    if gray:
        shape = (*shape[:2], 3)
    inp = tfk.Input(shape=shape)  # unnamed: the inner model's input may be INPUT_NAME
    x = inp
    if gray:
        from .tf_graph import GRAY_LAYER, gray_kernel

        conv = tfk.layers.Conv2D(1, 1, use_bias=False, trainable=False, name=GRAY_LAYER)
        x = conv(x)
        conv.set_weights([gray_kernel()])
    if (scale, offset) != (1.0, 0.0):
        x = tfk.layers.Rescaling(scale, offset=offset, name="input_scaling")(x)
    y = model(x)
    if sigmoid:
        y = tfk.layers.Activation("sigmoid", name="binary_sigmoid")(y)
    return tfk.Model(inp, y, name=model.name)


def _inline(model, inputs, record: dict | None = None):
    from .._optional import import_tensorflow

    tf = import_tensorflow()
    keras = _keras()
    if not hasattr(model, "_nodes_by_depth"):
        raise UsageError(f"QAT cannot take the subclassed model {model.name!r}; build it with the Functional API")
    usage = model._tensor_usage_count
    tensors = {}
    for x, y in zip(model.inputs, inputs):
        tensors[str(id(x))] = [y] * max(usage[str(id(x))], 1)
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input or any(t not in tensors for t in node.flat_input_ids):
                continue
            args, kwargs = node.map_arguments(tensors)
            if isinstance(node.layer, keras.Model):
                flat_in = tf.nest.flatten(args)
                outs = _inline(node.layer, flat_in, record)
            else:
                outs = tf.nest.flatten(node.layer(*args, **kwargs))
                if record is not None:
                    record[node.layer.name] = outs[0]
            for x_id, y in zip(node.flat_output_ids, outs):
                tensors[x_id] = [y] * max(usage.get(x_id, 1), 1)
    return [tensors[str(id(x))][0] for x in model.outputs]


def annotate(model):
    """(annotated model, names annotated, names left in float); raises on an unsupported layer."""
    tfmot = _tfmot()
    keras = _keras()
    registry = tfmot.quantization.keras.default_8bit.Default8BitQuantizeRegistry()
    flat = flatten_model(model)
    annotated, left = [], []
    from .heads import ONE_MINUS_LAYER, PROBABILITIES_LAYER
    from .tf_graph import GRAY_LAYER

    for layer in flat.layers:
        kind = type(layer).__name__
        # Fixed pre- and post-processing stays float and is calibrated at conversion: the
        # RGB-to-luma convolution, and the [1 - p, p] head (annotated, its range would be the
        # probabilities the float model reached, not 0..1, and cap every score there).
        fixed = layer.name == GRAY_LAYER or layer.name.startswith(ONE_MINUS_LAYER) or (
            kind == "Concatenate" and layer.name.startswith(PROBABILITIES_LAYER))
        if kind in _SKIP or kind.startswith("Random") or fixed:
            left.append(layer.name)
            continue
        # BatchNormalization is absent from the registry because quantize_apply folds it
        # into the convolution before it; tfmot's own quantize_model annotates it too.
        if registry.supports(layer) or kind == "BatchNormalization":
            annotated.append(layer.name)
            continue
        if layer.weights:
            raise UsageError(
                f"QAT cannot handle layer {layer.name!r} ({kind}): tensorflow-model-optimization has no "
                "quantization for it; export the other precisions (e.g. --precision int8) without qat"
            )
        left.append(layer.name)
    names = set(annotated)

    def clone_fn(layer):  # tfmot's documented pattern: quantize_apply copies the weights
        if layer.name in names:
            return tfmot.quantization.keras.quantize_annotate_layer(layer)
        return layer

    with native_stderr_silenced():
        clone = keras.models.clone_model(flat, clone_function=clone_fn)
    return clone, tuple(annotated), tuple(left)


def build_qat_model(model):
    """The fake-quant model before fine-tuning: (model, annotated, left_float)."""
    tfmot = _tfmot()
    annotated_model, annotated, left = annotate(model)
    try:
        with tfmot.quantization.keras.quantize_scope(), native_stderr_silenced():
            qmodel = tfmot.quantization.keras.quantize_apply(annotated_model)
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"QAT cannot quantize this model: {first_line(exc)}") from None
    finalize_states(qmodel)
    return qmodel, annotated, left


def finalize_states(model) -> None:
    """Recompute what layers derive from their non-trainable statistics (an adapted
    ``Normalization``'s mean and variance) after their weights were set.

    tfmot's ``quantize_apply`` (and our tf_keras rebuild) make each layer anew and then set
    its weights; an adapted ``Normalization`` computed its mean and variance from the
    (still empty) adapt variables when it was built, so without this it normalizes with
    mean 0 and variance 1 and the QAT model collapses."""
    for layer in model.layers:
        inner = getattr(layer, "layer", None)  # a QuantizeWrapper's wrapped layer
        for l in (layer, inner):
            if l is not None and hasattr(l, "finalize_state") and getattr(l, "built", False):
                try:
                    l.finalize_state()
                except (AttributeError, TypeError, ValueError):  # layers with nothing to finalize
                    pass
        if hasattr(layer, "layers") and layer is not model:
            finalize_states(layer)


# The activations whose input tfmot quantizes (``QuantizeAwareActivation._PRE_QUANT_ACTIVATIONS``).
_PRE_QUANT_ACTIVATIONS = frozenset({"softmax", "sigmoid", "tanh", "gelu"})


def _activation_name(layer) -> str:
    fn = getattr(layer, "activation", None)
    return getattr(fn, "__name__", "") if callable(fn) else ""


def _output_ranges(probe, names, x: np.ndarray, batch_size: int) -> dict:
    """{layer name: (min, max)} of ``probe``'s outputs over ``x``."""
    lo = {n: np.inf for n in names}
    hi = {n: -np.inf for n in names}
    for start in range(0, len(x), batch_size):
        outs = probe(x[start:start + batch_size], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for n, o in zip(names, outs):
            o = np.asarray(o)
            lo[n] = min(lo[n], float(o.min()))
            hi[n] = max(hi[n], float(o.max()))
    return {n: (lo[n], hi[n]) for n in names}


def init_activation_ranges(qmodel, float_model, images: np.ndarray, *, batch_size: int = 64) -> dict:
    """Start every activation fake-quant range at what the float model really produces.

    tfmot starts each range at [-6, 6] and moves it by an exponential moving average with
    decay 0.999, so a short fine-tune never reaches logits that span, say, [-85, 69]: they
    stay clipped near +-6.6, and confident images come out as 0.50/0.50 ties. Calibrating
    the ranges first (as post-training quantization does) and letting QAT refine them
    avoids that. Returns {variable name: (min, max)} for the ranges it set.
    """
    keras = _keras()
    if len(images) == 0:
        return {}
    layer_out: dict = {}
    flat = flatten_model(float_model, layer_outputs=layer_out)
    float_names = {l.name for l in flat.layers}
    targets = {}  # range-variable prefix -> float layer whose output it quantizes
    for layer in qmodel.layers:
        kind = type(layer).__name__
        if kind == "QuantizeWrapperV2" or kind == "QuantizeWrapper":
            inner = layer.layer.name
            if inner in float_names:
                targets[layer.name] = inner
        elif kind == "QuantizeLayer":
            inbound = [l.name for node in layer._inbound_nodes for l in node.inbound_layers]
            if len(inbound) == 1 and inbound[0] in float_names:
                targets[layer.name] = inbound[0]
            elif len(inbound) == 1:  # the model input itself
                targets[layer.name] = flat.layers[0].name
    if not targets:
        return {}
    names = sorted(set(targets.values()))
    probe = keras.Model(flat.inputs, [layer_out[n] for n in names])
    x = images.astype(np.float32)
    post = _output_ranges(probe, names, x, batch_size)
    # tfmot quantizes the *input* of a softmax/sigmoid/tanh/gelu activation ("pre_activation"):
    # those ranges must come from the values before the activation, not after it (a softmax
    # applied to logits clipped to its own output range [0, 1] is a softmax applied twice).
    squashing = {l.name: l for l in flat.layers if _activation_name(l) in _PRE_QUANT_ACTIVATIONS}
    pre = {}
    if squashing:
        saved = {n: l.activation for n, l in squashing.items()}
        try:
            for l in squashing.values():
                l.activation = keras.activations.linear
            pre = _output_ranges(probe, names, x, batch_size)
        finally:
            for n, l in squashing.items():
                l.activation = saved[n]
    done = {}
    for layer in qmodel.layers:
        src = targets.get(layer.name)
        if src is None:
            continue
        for v in layer.weights:
            short = v.name.split("/")[-1].split(":")[0]
            # Activation ranges only; weight ranges (kernel_min/max) follow the weights each step.
            if short.startswith("kernel") or short.startswith("depthwise") or not short.endswith(("_min", "_max")):
                continue
            ranges = pre if short.startswith("pre_activation") and src in squashing else post
            lo, hi = ranges[src]
            value = min(lo, 0.0) if short.endswith("_min") else max(hi, 0.0)
            if v.shape.rank == 0 or int(np.prod(v.shape)) == 1:
                v.assign(np.full(v.shape, value, dtype=v.dtype.as_numpy_dtype))
                done[v.name] = value
    return done


def _loss(keras, kind: OutputKind):
    if kind is OutputKind.SIGMOID:
        return keras.losses.BinaryCrossentropy()
    return keras.losses.SparseCategoricalCrossentropy(from_logits=kind is OutputKind.LOGITS)


def train_qat(model, images: np.ndarray, indices: np.ndarray, *, output_kind: OutputKind, epochs: int,
              batch_size: int = 32, learning_rate: float = 1e-4, seed: int = 123) -> QATResult:
    """Fine-tune a QAT copy of ``model`` on ``images`` (uint8 NHWC) for ``epochs``."""
    from .._optional import import_tensorflow

    tf = import_tensorflow()
    keras = _keras()
    model = tf_keras_model(model)
    if epochs < 0:
        raise UsageError(f"--qat-epochs must be 0 or more, not {epochs}")
    if len(images) == 0 or (indices < 0).any():
        raise UsageError("QAT needs labelled training images: a run directory or --data DATA with class folders")
    qmodel, annotated, left = build_qat_model(model)
    init_activation_ranges(qmodel, model, images[:256])
    tf.random.set_seed(seed)
    history: dict = {}
    if epochs > 0:
        y = indices.astype(np.float32 if output_kind is OutputKind.SIGMOID else np.int64)
        if output_kind is OutputKind.SIGMOID:
            y = y.reshape(-1, 1)
        ds = (tf.data.Dataset.from_tensor_slices((images, y))
              .shuffle(len(images), seed=seed)
              .map(lambda a, b: (tf.cast(a, tf.float32), b))
              .batch(batch_size))
        qmodel.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=_loss(keras, output_kind),
                       metrics=["accuracy"])
        with native_stderr_silenced():
            h = qmodel.fit(ds, epochs=epochs, verbose=0)
        history = {k: [float(v) for v in vals] for k, vals in h.history.items()}
    else:
        # No training step ran, so the weight quantizers still hold tfmot's [-6, 6]; one
        # forward pass in training mode makes them record the real weight ranges. That pass
        # would also move BatchNorm's moving statistics toward one batch: put them back.
        moving = [v for v in qmodel.variables if "moving_mean" in v.name or "moving_variance" in v.name]
        saved = [v.numpy() for v in moving]
        with native_stderr_silenced():
            qmodel(images[:batch_size].astype(np.float32), training=True)
        for v, value in zip(moving, saved):
            v.assign(value)
    return QATResult(qmodel, annotated, left, epochs, history)


def save_qat_checkpoint(qmodel, path) -> None:
    """Save a QAT model as ``.h5`` (the only format it reloads from), atomically."""
    from .._io import atomic_path

    with atomic_path(path, suffix=".h5") as tmp:
        qmodel.save(str(tmp), save_format="h5")


def load_qat_checkpoint(path):
    """Reload a QAT ``.h5`` checkpoint (inside ``quantize_scope()``, which it needs)."""
    tfmot = _tfmot()
    keras = _keras()
    with tfmot.quantization.keras.quantize_scope():
        return keras.models.load_model(str(path), compile=False)
