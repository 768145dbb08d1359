"""The model head exported files end in: probabilities, so every client shows 0..1 scores.

MediaPipe Tasks, the Task Library and ML Model Binding show a model's output as the score:
a logits model would show 15.24 as "confidence" and make score thresholds meaningless. So
a logits model gets a ``Softmax`` layer appended before export. It is appended to the
model's own functional graph (same layers, same weights), not wrapped around a nested copy,
because tensorflow-model-optimization refuses nested models for QAT. A quantized softmax
output comes out of the TFLite converter with scale 1/256 (uint8 zero point 0), the usual
scale for probabilities.
"""

from __future__ import annotations

from ..runtime.spec import INPUT_NAME, OutputKind

PROBABILITIES_LAYER = "probabilities"


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
    from .keras_load import LoadedModel

    if isinstance(model, LoadedModel):
        if model.is_tf_keras and not model.needs_wrap:
            # Our own runs and tf_keras files: extend the Keras graph itself (the converters then
            # take the Keras model as before, and QAT sees one flat model).
            from dataclasses import replace

            from .._optional import import_tensorflow
            from .tf_graph import make_function

            head, _ = with_probability_head(model.keras_model, kind)
            tf = import_tensorflow()
            function = make_function(tf, head, head, model.input_size, model.input_range)
            return replace(model, keras_model=head, trackable=head, function=function,
                           output_kind=OutputKind.PROBABILITIES, _cache={}), OutputKind.PROBABILITIES
        return model.with_softmax(), OutputKind.PROBABILITIES
    from .._optional import import_keras

    keras = import_keras()
    name = PROBABILITIES_LAYER
    taken = {layer.name for layer in model.layers}
    while name in taken:
        name += "_"
    try:
        inputs, outputs = model.inputs, model.outputs
    except AttributeError:
        inputs = outputs = None
    if inputs and outputs and len(outputs) == 1:
        # Functional or built Sequential: extend the same graph (flat, QAT can annotate it).
        probs = keras.layers.Softmax(name=name)(outputs[0])
        return keras.Model(inputs if len(inputs) > 1 else inputs[0], probs, name=model.name), \
            OutputKind.PROBABILITIES
    # A subclassed model has no graph to extend: call it inside a new one.
    try:
        shape = tuple(model.input_shape[1:])
    except (AttributeError, TypeError, ValueError):
        from ..errors import ExportError

        raise ExportError(f"cannot append a softmax to the model {getattr(model, 'name', '')!r} (its input shape "
                          "is unknown); export it with --keep-logits") from None
    inp = keras.Input(shape=shape, name=INPUT_NAME)
    probs = keras.layers.Softmax(name=name)(model(inp))
    return keras.Model(inp, probs, name=model.name), OutputKind.PROBABILITIES
