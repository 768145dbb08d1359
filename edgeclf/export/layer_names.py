"""Engine names to Keras layer names: which Keras layer a TFLite tensor or an ONNX node belongs
to, so the accuracy budget, the speed choice and explain-quant name what the user built."""

from __future__ import annotations

from typing import Optional, Sequence


def as_tf_keras(model):
    """The tf_keras model behind ``model`` (a ``keras_load.LoadedModel`` or a tf_keras model):
    the layers the budget ranks and keeps float, as the converter sees them."""
    from .qat import tf_keras_model

    return tf_keras_model(model)


def keras_layer_names(model) -> tuple[list[str], set[str]]:
    """Every layer name in ``model`` (nested models included) and the names of the containers."""
    model = as_tf_keras(model)
    names, containers = [], set()

    def walk(m):
        for layer in m.layers:
            names.append(layer.name)
            if hasattr(layer, "layers"):
                containers.add(layer.name)
                walk(layer)

    walk(model)
    return names, containers


def match_layer(engine_name: str, names: Sequence[str], containers: set[str] = frozenset()) -> Optional[str]:
    """The Keras layer an engine's op or tensor name belongs to: the layer name that appears
    as whole path components furthest along the name (a nested model's own name loses to
    the layers inside it); None when none appears."""
    best, best_key = None, None
    for piece in engine_name.split(";"):
        path = "/" + piece.split(":")[0] + "/"
        for name in names:
            pos = path.rfind("/" + name + "/")
            if pos < 0:
                continue
            key = (name not in containers, pos + len(name), len(name))
            if best_key is None or key > best_key:
                best, best_key = name, key
    return best
