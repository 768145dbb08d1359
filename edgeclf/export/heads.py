"""The model head exported files end in: probabilities of every label, so every client shows
0..1 scores with the right names.

MediaPipe Tasks, the Task Library and ML Model Binding show a model's output as the score:
a logits model would show 15.24 as "confidence" and make score thresholds meaningless. So
a logits model gets a ``Softmax`` layer appended before export.

A one-sigmoid (binary) model gives one number, the probability of its second label. Phone
clients read that as one category: MediaPipe lists the second label alone, with score p,
and an app taking ``categories[0]`` names it on every image, also at p = 0. So such a model
ends in ``[1 - p, p]``: two probabilities, both labels in the labels file, and the top
category is the right class. Where the logit z before the sigmoid can be reached (a Dense or
Conv layer with a sigmoid activation, an ``Activation("sigmoid")``, a sigmoid op in the
traced graph), the head is ``softmax([-z / 2, z / 2])``, which is ``[1 - p, p]`` exactly and
ends in a softmax: quantized, its output range is fixed at 0..1 (1/256 steps in TFLite, 1/255 in
ONNX Runtime's int8 files). Otherwise it is ``Concatenate([1 - p, p])`` (with
``Rescaling(-1, offset=1)``), whose quantized range is calibrated and may stop short of 1.

Heads are appended to the model's own functional graph (same layers, same weights), not
wrapped around a nested copy, because tensorflow-model-optimization refuses nested models
for QAT. A quantized softmax comes out of the TFLite converter with scale 1/256 (uint8 zero
point 0), the usual scale for probabilities.
"""

from __future__ import annotations

from ..runtime.spec import INPUT_NAME, OutputKind

PROBABILITIES_LAYER = "probabilities"
ONE_MINUS_LAYER = "one_minus_p"
BINARY_LOGITS_LAYER = "binary_logits"


def export_head(model, output_kind: OutputKind, *, keep_logits: bool = False, keep_sigmoid: bool = False):
    """``(model, output_kind)`` as the exported files end: the head apps need appended.

    A logits model gets a softmax (unless ``keep_logits``); a one-sigmoid model gets
    ``[1 - p, p]`` (unless ``keep_sigmoid``); both come back with ``OutputKind.PROBABILITIES``.
    ``model`` is a Keras model or a ``keras_load.LoadedModel``.
    """
    kind = OutputKind(output_kind)
    if kind is OutputKind.LOGITS and not keep_logits:
        return with_probability_head(model, kind)
    if kind is OutputKind.SIGMOID and not keep_sigmoid:
        return with_two_unit_head(model, kind)
    return model, kind


def with_probability_head(model, output_kind: OutputKind):
    """``(model, output_kind)`` for export: a logits model gets a Softmax appended and is
    returned with ``OutputKind.PROBABILITIES``; a probabilities or sigmoid model is
    returned as it is.

    Example:
        >>> export_model, kind = with_probability_head(keras_model, OutputKind.LOGITS)  # doctest: +SKIP
        >>> kind
        <OutputKind.PROBABILITIES: 'probabilities'>
    """
    kind = OutputKind(output_kind)
    if kind is not OutputKind.LOGITS:
        return model, kind
    return _appended(model, kind, "softmax")


def with_two_unit_head(model, output_kind: OutputKind):
    """``(model, output_kind)`` for export: a one-sigmoid model ends in ``[1 - p, p]`` and is
    returned with ``OutputKind.PROBABILITIES``; any other model is returned as it is."""
    kind = OutputKind(output_kind)
    if kind is not OutputKind.SIGMOID:
        return model, kind
    return _appended(model, kind, "two_units")


def _appended(model, kind: OutputKind, head: str):
    from .keras_load import LoadedModel

    if isinstance(model, LoadedModel):
        if model.is_tf_keras and not model.needs_wrap:
            # Our own runs and tf_keras files: extend the Keras graph itself (the converters then
            # take the Keras model as before, and QAT sees one flat model).
            from dataclasses import replace

            from .._optional import import_tensorflow
            from .tf_graph import make_function

            extended = _appended(model.keras_model, kind, head)[0]
            tf = import_tensorflow()
            function = make_function(tf, extended, extended, model.input_size, model.input_range)
            return replace(model, keras_model=extended, trackable=extended, function=function,
                           output_kind=OutputKind.PROBABILITIES, output_width=int(extended.outputs[0].shape[-1]),
                           _cache={}), OutputKind.PROBABILITIES
        made = model.with_softmax() if head == "softmax" else model.with_two_units()
        return made, OutputKind.PROBABILITIES
    from .._optional import import_keras

    keras = import_keras()
    taken = {layer.name for layer in model.layers}

    def free(name):
        while name in taken:
            name += "_"
        taken.add(name)
        return name

    def add_head(y):
        if head == "softmax":
            return keras.layers.Softmax(name=free(PROBABILITIES_LAYER))(y)
        z = _logit_of(keras, y, free)
        if z is not None:
            halves = [keras.layers.Rescaling(-0.5, name=free("minus_half_logit"))(z),
                      keras.layers.Rescaling(0.5, name=free("half_logit"))(z)]
            both = keras.layers.Concatenate(axis=-1, name=free(BINARY_LOGITS_LAYER))(halves)
            return keras.layers.Softmax(name=free(PROBABILITIES_LAYER))(both)
        q = keras.layers.Rescaling(-1.0, offset=1.0, name=free(ONE_MINUS_LAYER))(y)
        return keras.layers.Concatenate(axis=-1, name=free(PROBABILITIES_LAYER))([q, y])

    try:
        inputs, outputs = model.inputs, model.outputs
    except AttributeError:
        inputs = outputs = None
    if inputs and outputs and len(outputs) == 1:
        # Functional or built Sequential: extend the same graph (flat, QAT can annotate it).
        return keras.Model(inputs if len(inputs) > 1 else inputs[0], add_head(outputs[0]), name=model.name), \
            OutputKind.PROBABILITIES
    # A subclassed model has no graph to extend: call it inside a new one.
    try:
        shape = tuple(model.input_shape[1:])
    except (AttributeError, TypeError, ValueError):
        from ..errors import ExportError

        what, keep = ("softmax", "--keep-logits") if head == "softmax" else ("[1 - p, p]", "--keep-sigmoid")
        raise ExportError(f"cannot append the {what} head to the model {getattr(model, 'name', '')!r} (its input "
                          f"shape is unknown); export it with {keep}") from None
    inp = keras.Input(shape=shape, name=INPUT_NAME)
    return keras.Model(inp, add_head(model(inp)), name=model.name), OutputKind.PROBABILITIES


def _logit_of(keras, p, free):
    """The logit z with sigmoid(z) = ``p`` in the same graph, or None when it cannot be reached:
    the input of an ``Activation("sigmoid")``, or a copy of the Dense/Conv layer that makes
    ``p`` with its activation switched off (same weights)."""
    history = getattr(p, "_keras_history", None)
    layer = getattr(history, "layer", None) or getattr(history, "operation", None)
    activation = getattr(getattr(layer, "activation", None), "__name__", "")
    if layer is None or activation != "sigmoid" or len(getattr(layer, "_inbound_nodes", [])) != 1:
        return None
    try:
        if type(layer).__name__ == "Activation":
            return layer.input
        if type(layer).__name__ not in ("Dense", "Conv1D", "Conv2D", "Conv3D", "EinsumDense"):
            return None
        config = dict(layer.get_config(), activation="linear", name=free(layer.name + "_logit"))
        linear = type(layer).from_config(config)
        z = linear(layer.input)
        linear.set_weights(layer.get_weights())
        return z
    except (AttributeError, TypeError, ValueError):
        return None
