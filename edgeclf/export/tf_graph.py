"""TensorFlow graph utilities for a loaded classifier: the inference ``tf.function`` on
0..255 pixels, freezing and pruning it, and what the frozen graph tells about the model (the
op that scales the input, the op that makes the output, random ops left in)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import ModelFileError
from ..runtime.spec import INPUT_NAME, InputRange, OutputKind
from .safety import SourceFormat


def signature_input_name(sig) -> str:
    return next(iter(sig.structured_input_signature[1]))

def signature_input_spec(sig, path):
    args, kwargs = sig.structured_input_signature
    if len(kwargs) != 1 or args:
        raise ModelFileError(f"{path}: the serving signature takes {len(kwargs) + len(args)} inputs; a classifier "
                             "takes one image batch")
    spec = next(iter(kwargs.values()))
    if spec.dtype.name not in ("float32", "uint8"):
        raise ModelFileError(f"{path}: the serving signature takes {spec.dtype.name}; edgeclf needs float32 images")
    return spec

def _resizing_target(model):
    """(height, width) of a Resizing layer met before any weighted layer, or None."""
    for layer in _layers_in_order(model):
        kind = type(layer).__name__
        if kind == "Resizing":
            return int(layer.height), int(layer.width)
        if layer.weights and kind not in ("Normalization",):
            return None
    return None

def _layers_in_order(model):
    for layer in getattr(model, "layers", []):
        if hasattr(layer, "layers") and layer.layers:
            yield from _layers_in_order(layer)
        else:
            yield layer

# Pillow's convert("L") weights (ITU-R 601-2 luma): what a grayscale model was most likely
# trained on. Pillow computes them in 16-bit fixed point and rounds to an integer; the files
# keep the float value, at most 0.501 (of 255) from Pillow's on any colour.
LUMA = (0.299, 0.587, 0.114)
GRAY_LAYER = "rgb_to_gray"


def fixed_size(shape, path, model) -> tuple[int, int]:
    if len(shape) != 4 or shape[-1] not in (1, 3):
        raise ModelFileError(f"{path}: the model's input shape is {tuple(shape)}; edgeclf exports image "
                             "classifiers with a (batch, height, width, 3) RGB or (batch, height, width, 1) "
                             "grayscale input")
    if shape[1] is None or shape[2] is None:
        target = _resizing_target(model) if model is not None else None
        if target is None:
            raise ModelFileError(f"{path}: the model's input shape {tuple(shape)} has no fixed height and width; "
                                 "give the Input a size, or put a Resizing layer first")
        return target
    return int(shape[1]), int(shape[2])


def rgb_to_gray(pixels: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) RGB → (N, H, W, 1) float32 luma, as the exported files compute it."""
    return (np.asarray(pixels, np.float32) @ np.asarray(LUMA, np.float32)[:, None]).astype(np.float32)


def gray_kernel() -> np.ndarray:
    """The 1x1 convolution kernel (1, 1, 3, 1) that turns RGB into luma."""
    return np.asarray(LUMA, np.float32).reshape(1, 1, 3, 1)


def make_function(tf, keras_model, trackable, size, rng: InputRange, *, sigmoid: bool = False,
                   softmax: bool = False, two_units: bool = False, gray: bool = False):
    """tf.function(image) on 0..255 RGB pixels → raw outputs, inference mode.

    ``gray``: the model takes one channel; RGB becomes luma first (a 1x1 convolution, one op in
    every format). ``two_units``: a one-probability output p becomes ``[1 - p, p]``.
    """
    h, w = size
    scale, offset = rng.scale_offset
    spec = tf.TensorSpec((None, h, w, 3), tf.float32, name=INPUT_NAME)
    if keras_model is not None and keras_model.__class__.__module__.startswith("keras."):
        def call(x):
            return keras3_inference(keras_model, x)
    elif keras_model is not None:
        def call(x):
            return keras_model(x, training=False)
    else:
        sig = trackable.signatures["serving_default"]
        in_name = signature_input_name(sig)
        in_dtype = sig.structured_input_signature[1][in_name].dtype

        def call(x):
            out = sig(**{in_name: tf.cast(x, in_dtype)})
            return next(iter(out.values()))

    @tf.function(input_signature=[spec], autograph=False)
    def serve(image):
        x = image
        if gray:
            x = tf.nn.conv2d(x, tf.constant(gray_kernel()), strides=1, padding="VALID")
        if rng is not InputRange.PIXELS:
            x = x * scale + offset
        y = call(x)
        if isinstance(y, (list, tuple)):
            y = y[0]
        y = tf.cast(y, tf.float32)
        logit = y if sigmoid else _sigmoid_input(y) if two_units else None
        if sigmoid:
            y = tf.math.sigmoid(y)
        if softmax:
            y = tf.nn.softmax(y)
        if two_units:
            # softmax([-z/2, z/2]) is [1 - p, p] and ends in a softmax (a fixed 0..1 output
            # range once quantized); without the logit, [1 - p, p] itself.
            y = (tf.nn.softmax(tf.concat([-0.5 * logit, 0.5 * logit], axis=-1)) if logit is not None
                 else tf.concat([1.0 - y, y], axis=-1))
        return tf.identity(y, name="output")

    return serve

def _sigmoid_input(y):
    """The input of the Sigmoid op that makes ``y`` in a traced graph (through identities), or None."""
    t = y
    for _ in range(8):
        op = getattr(t, "op", None)
        if op is None:
            return None
        if op.type == "Sigmoid":
            return op.inputs[0]
        if op.type not in ("Identity", "Cast", "EnsureShape"):
            return None
        t = op.inputs[0]
    return None

# Augmentation layers that pass images through unchanged at inference. Keras 3 draws their
# random seeds even then (a variable update and random ops in the traced graph), so the
# traced inference graph skips them. RandomCrop center-crops at inference: it stays.
AUGMENTATION_LAYERS = ("RandomFlip", "RandomRotation", "RandomZoom", "RandomContrast", "RandomTranslation",
                       "RandomBrightness", "RandomHeight", "RandomWidth", "RandomSaturation", "RandomHue",
                       "RandomSharpness", "RandomShear", "RandomColorJitter", "RandomGrayscale",
                       "RandomPerspective", "RandomErasing", "RandomGaussianBlur", "RandomInvert",
                       "RandomPosterization", "RandomElasticTransform", "RandomColorDegeneration",
                       "RandAugment", "AugMix", "CutMix", "MixUp", "Solarization", "AutoContrast")

def _graph_of(model):
    """The Functional graph of a Keras 3 model (a Sequential's inner one), or None if subclassed."""
    import keras

    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    return model if hasattr(model, "_run_through_graph") else None

def keras3_inference(model, x):
    """Call a Keras 3 model in inference mode with augmentation layers left out, nested
    models included (what the exported files compute)."""
    import keras

    def fn(op):
        graph = _graph_of(op) if isinstance(op, keras.Model) else None
        if graph is not None:
            return lambda *args, **kwargs: graph._run_through_graph(args[0], operation_fn=fn)
        if isinstance(op, keras.Sequential):  # built without an Input: no inner graph, a plain chain
            def chain(y, *args, **kwargs):
                for layer in op.layers:
                    y = fn(layer)(y)
                return y

            return chain
        if type(op).__name__ in AUGMENTATION_LAYERS:
            return lambda y, *args, **kwargs: y

        def call(*args, **kwargs):
            if getattr(op, "_call_has_training_arg", False):
                kwargs["training"] = False
            return op(*args, **kwargs)

        return call

    if isinstance(model, keras.Sequential) or _graph_of(model) is not None:
        return fn(model)(x)
    return model(x, training=False)

def freeze(function):
    """(GraphDef, input node, output node) of ``function`` frozen and pruned to its output."""
    from tensorflow.python.framework import convert_to_constants as c2c

    from .._quiet import native_stderr_silenced

    cf = function.get_concrete_function()
    out_name = cf.outputs[0].name.split(":")[0]
    in_name = [t for t in cf.inputs if t.dtype.name != "resource"][0].name.split(":")[0]
    with native_stderr_silenced():
        # The public convert_variables_to_constants_v2 re-imports the graph before pruning, and
        # a variable that the graph also assigns (a Keras 3 seed) makes that import fail.
        data = c2c._FunctionConverterDataInEager(func=cf, lower_control_flow=False, aggressive_inlining=True)
        gdef, _ = c2c._replace_variables_by_constants(converter_data=data)
    return _prune(gdef, out_name, keep=in_name), in_name, out_name

def _prune(gdef, output: str, *, keep: str):
    """Only the nodes ``output`` needs through data edges (control edges to the rest dropped)."""
    nodes = {n.name: n for n in gdef.node}
    need, todo = set(), [output, keep]
    while todo:
        name = todo.pop()
        if name in need or name not in nodes:
            continue
        need.add(name)
        todo += [i.split(":")[0] for i in nodes[name].input if not i.startswith("^")]
    from tensorflow.core.framework import graph_pb2

    out = graph_pb2.GraphDef()
    out.versions.CopyFrom(gdef.versions)
    out.library.CopyFrom(gdef.library)
    for n in gdef.node:
        if n.name in need:
            m = out.node.add()
            m.CopyFrom(n)
            del m.input[:]
            m.input.extend(i for i in n.input if not i.startswith("^") or i[1:] in need)
    return out

def frozen_graph(function):
    gdef, _, out = freeze(function)
    return gdef, out

def refuse_random_ops(graph, path, fmt) -> None:
    """A random op left in the inference graph means augmentation runs at inference."""
    random = [n for n in graph.node if "Random" in n.op or n.op in ("Multinomial", "RandomShuffle")]
    if not random:
        return
    where = random[0].name.replace("StatefulPartitionedCall/", "").rsplit("/", 2)[0]
    hint = ("Keras 3's model.export() keeps augmentation layers of a nested Sequential active; export the "
            ".keras file instead (model.save('model.keras'))" if fmt is SourceFormat.SAVEDMODEL else
            "remove the augmentation layers from the model you export")
    raise ModelFileError(f"{path}: the inference graph still draws random numbers ({random[0].op} in {where}), "
                         f"so its predictions change from call to call; {hint}")

_PASS = {"Identity", "IdentityN", "Cast", "ResizeBilinear", "ResizeNearestNeighbor", "ResizeBicubic",
         "ResizeArea", "CheckNumerics", "StopGradient", "Reshape", "EnsureShape"}

_SCALE_OPS = {"Mul", "RealDiv", "Div", "Sub", "AddV2", "Add", "BiasAdd", "Maximum", "Minimum", "Neg"}

def _consumers(graph):
    out: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i.split(":")[0].lstrip("^"), []).append(n)
    return out

def input_scaling_op(graph) -> Optional[str]:
    """The op by which the model scales its input before any convolution, or None.

    Follows the image through identities, casts, reshapes and resizes; any arithmetic with a
    constant there (Rescaling, Normalization, preprocess_input, ``x / 255``) counts.
    """
    graph = graph[0]
    consumers = _consumers(graph)
    nodes = {n.name: n for n in graph.node}
    start = [n.name for n in graph.node if n.op == "Placeholder"]
    todo, seen = list(start), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for c in consumers.get(name, []):
            if c.op in _SCALE_OPS:
                others = [i.split(":")[0] for i in c.input if i.split(":")[0] != name]
                if c.op == "Neg" or any(nodes.get(o) is not None and nodes[o].op == "Const" for o in others):
                    return f"{c.op} {c.name.split('/')[-2] if '/' in c.name else c.name}".strip()
            if c.op in _PASS or c.op in _SCALE_OPS:
                todo.append(c.name)
    return None

def last_op(graph) -> Optional[str]:
    """The op that makes the output, looking through identities and casts."""
    graph, out_name = graph
    nodes = {n.name: n for n in graph.node}
    node = nodes.get(out_name)
    while node is not None:
        if node.op in ("Identity", "IdentityN", "Cast", "Reshape", "EnsureShape", "StopGradient"):
            node = nodes.get(node.input[0].split(":")[0].lstrip("^"))
            continue
        return node.op
    return None

def infer_output_kind(graph, width: int, path, function, size) -> tuple[OutputKind, str]:
    op = last_op(graph)
    if op == "Softmax":
        return OutputKind.PROBABILITIES, "the model ends in softmax"
    if op == "Sigmoid":
        if width == 1:
            return OutputKind.SIGMOID, "the model ends in one sigmoid unit"
        raise ModelFileError(f"{path}: the model ends in {width} sigmoid units (multi-label); edgeclf exports "
                             "single-label classifiers; if it is one, state --output-kind")
    # Not a softmax op: a hand-made softmax (exp / sum) would still give rows summing to 1.
    x = np.random.default_rng(0).uniform(0, 255, (4, *size, 3)).astype(np.float32)
    y = np.asarray(function(x))
    if width > 1 and np.all(y >= 0) and np.allclose(y.sum(axis=1), 1.0, atol=1e-5):
        raise ModelFileError(f"{path}: the outputs look like probabilities but the model does not end in a softmax "
                             "op; state --output-kind probabilities or logits")
    if width == 1:
        raise ModelFileError(f"{path}: the model ends in one unit without a sigmoid; edgeclf needs a binary model "
                             "to end in Dense(1, activation='sigmoid') (or N logits); if that unit is a binary logit "
                             "(trained with from_logits=True), pass --output-kind logits and edgeclf adds the sigmoid")
    return OutputKind.LOGITS, f"the last op is {op}, not softmax"
