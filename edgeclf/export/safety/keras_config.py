"""The allowlist for stored Keras configurations (Keras 3 and tf_keras; ``.keras``, ``.h5`` and
a SavedModel's ``keras_metadata.pb``).

Every object in a configuration (every dict with a ``class_name``, at any depth) must be of a
class listed here: the layers an image classifier is built from, their initializers,
regularizers, constraints and dtype policies, the pure-math Keras 3 ops ``preprocess_input``
turns into, tf_keras ``TFOpLambda`` layers naming pure tensor math, and Keras' own optimizers,
losses and metrics (inert: models load with ``compile=False``). Nothing else is deserialized:
not ``Lambda`` (Python code), not layers that read files (``StringLookup``, ``IntegerLookup``,
``TextVectorization``, ``Hashing`` vocabularies, ``TFSMLayer``), not custom classes, even
registered ones (registration shows the user trusts the code, not that a file's arguments to
it are harmless). Fields: no field that names a file (``vocabulary``, ``filepath``, ``assets``,
...) and no path- or URL-like string outside name fields, in any class.
"""

from __future__ import annotations

import importlib
from typing import Optional

from ...errors import ModelFileError

LAMBDA_REFUSED = ("the model contains a Lambda layer, whose Python code safe mode refuses to run from a "
                  "file (it could execute anything); replace the Lambda with a built-in layer or a "
                  "registered custom layer and save the model again")

CUSTOM_REFUSED = ("edgeclf loads no custom code from a model file. Rebuild the model from built-in layers, or "
                  "load it in your own script and save it with model.export(DIR) (a SavedModel)")

# --- layer classes, both Keras generations (tf_keras spells a few by alias) --------------------
_MODELS = {"Functional", "Sequential", "Model", "InputLayer"}
_CORE = {"Dense", "EinsumDense", "Activation", "Identity", "Flatten", "Reshape", "Permute", "RepeatVector"}
_CONV = {"Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", "SeparableConv1D",
         "SeparableConv2D", "DepthwiseConv1D", "DepthwiseConv2D", "Convolution1D", "Convolution2D", "Convolution3D",
         "Convolution2DTranspose", "SeparableConvolution2D"}
_POOLING = {f"{kind}{dim}D" for kind in ("MaxPooling", "AveragePooling", "GlobalMaxPooling", "GlobalAveragePooling",
                                         "MaxPool", "AvgPool", "GlobalMaxPool", "GlobalAvgPool") for dim in (1, 2, 3)}
_NORMALIZATION = {"BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization",
                  "RMSNormalization", "Normalization"}
_ACTIVATION_LAYERS = {"ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "ThresholdedReLU"}
_RESHAPING = {f"{kind}{dim}D" for kind in ("Cropping", "ZeroPadding", "UpSampling") for dim in (1, 2, 3)}
_MERGING = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot"}
_REGULARIZATION = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout",
                   "GaussianNoise", "AlphaDropout", "ActivityRegularization"}
_ATTENTION = {"MultiHeadAttention"}  # ViT-style classifiers: einsums and a softmax
# Image preprocessing and augmentation (augmentation is switched off for export, see tf_graph).
_IMAGE_PREPROCESSING = {"Rescaling", "Resizing", "CenterCrop", "RandomFlip", "RandomRotation", "RandomZoom",
                        "RandomContrast", "RandomTranslation", "RandomBrightness", "RandomCrop", "RandomHeight",
                        "RandomWidth", "RandomSaturation", "RandomHue", "RandomSharpness", "RandomShear",
                        "RandomColorJitter", "RandomGrayscale", "RandomPerspective", "RandomErasing",
                        "RandomGaussianBlur", "RandomInvert", "RandomPosterization", "RandomElasticTransform",
                        "RandomColorDegeneration", "RandAugment", "AugMix", "CutMix", "MixUp", "Solarization",
                        "AutoContrast", "Equalization"}
LAYER_CLASSES = frozenset(_MODELS | _CORE | _CONV | _POOLING | _NORMALIZATION | _ACTIVATION_LAYERS | _RESHAPING
                          | _MERGING | _REGULARIZATION | _ATTENTION | _IMAGE_PREPROCESSING)

# --- what layers are configured with --------------------------------------------------------
_INITIALIZERS = {"Zeros", "Ones", "Constant", "RandomNormal", "RandomUniform", "TruncatedNormal", "VarianceScaling",
                 "GlorotNormal", "GlorotUniform", "HeNormal", "HeUniform", "LecunNormal", "LecunUniform",
                 "Orthogonal", "OrthogonalInitializer", "Identity", "IdentityInitializer", "STFTInitializer"}
_REGULARIZERS = {"L1", "L2", "L1L2", "OrthogonalRegularizer"}
_CONSTRAINTS = {"MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm", "RadialConstraint"}
_DTYPE_POLICIES = {"DTypePolicy", "FloatDTypePolicy", "Policy", "DTypePolicyMap", "QuantizedDTypePolicy",
                   "QuantizedFloat8DTypePolicy", "GPTQDTypePolicy"}
CONFIG_CLASSES = frozenset(_INITIALIZERS | _REGULARIZERS | _CONSTRAINTS | _DTYPE_POLICIES)

# Keras 3 serialization markers for plain values (no code in them).
VALUE_MARKERS = frozenset({"__tuple__", "__list__", "__numpy__", "__tensor__", "__bytes__", "__ellipsis__",
                           "__slice__", "__keras_tensor__", "__typespec__", "__dtype__", "TypeSpec", "TensorShape",
                           "InputSpec", "TensorSpec"})

# A built-in activation stored as {"class_name": "function", "config": NAME}.
ACTIVATIONS = frozenset({"relu", "relu6", "sigmoid", "softmax", "softplus", "softsign", "tanh", "selu", "elu",
                         "exponential", "leaky_relu", "log_softmax", "gelu", "silu", "swish", "hard_sigmoid",
                         "hard_silu", "hard_swish", "linear", "mish", "celu", "glu", "sparse_plus", "squareplus",
                         "tanh_shrink", "hard_tanh", "soft_shrink", "hard_shrink", "sparsemax", "log_sigmoid",
                         "threshold", "sparse_sigmoid"})

# Keras 3 ops (what preprocess_input and x / 127.5 become): the classes of these modules, all
# pure tensor math. keras.src.ops.core is left out: its ops take Python callables.
_OP_MODULES = ("keras.src.ops.numpy", "keras.src.ops.nn", "keras.src.ops.math", "keras.src.ops.image",
               "keras.src.ops.linalg")

# tf_keras TFOpLambda names a TensorFlow function; only pure tensor math may be named.
_TFOP_PREFIXES = ("math.", "nn.", "image.", "linalg.", "__operators__.", "compat.v1.math.", "compat.v1.nn.")
_TFOP_NAMES = {"reshape", "transpose", "concat", "stack", "unstack", "cast", "clip_by_value", "identity",
               "expand_dims", "squeeze", "split", "gather", "pad", "tile", "where", "maximum", "minimum",
               "reduce_mean", "reduce_sum", "reduce_max", "reduce_min", "ones_like", "zeros_like", "shape",
               "broadcast_to", "abs", "sqrt", "square", "exp", "nest.flatten", "convert_to_tensor",
               "compat.v1.transpose", "compat.v1.squeeze", "strided_slice", "slice", "range"}
_TFOP_IO = ("io.", "image.decode", "image.encode", "image.write", "debugging.", "print", "summary.", "py_function",
            "numpy_function", "compat.v1.py_func", "data.", "saved_model.", "train.", "lookup.", "strings.")

# Where a built-in class may live (the "module" field of Keras 3 and tf_keras configs).
_MODULE_PARTS = ("layers", "initializers", "regularizers", "constraints", "activations", "models", "ops",
                 "dtype_policies", "engine", "mixed_precision", "losses", "metrics", "optimizers")

# Fields that name files or hold file-backed state: refused in every class.
FILE_FIELDS = frozenset({"vocabulary", "vocabulary_path", "vocabulary_file", "idf_weights", "filepath", "file_path",
                         "path", "assets", "asset", "table", "table_path", "filename", "file", "url", "uri",
                         "call_endpoint", "module_handle", "handle"})

# Fields whose strings are layer names or node references, never paths.
_NAME_FIELDS = frozenset({"name", "inbound_nodes", "input_layers", "output_layers", "keras_history", "layer_names",
                          "registered_name", "module", "class_name"})

# Named so the refusal says why (they are refused like every class not listed above).
_LOADER_CLASSES = {"TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"}  # run code from elsewhere
_FILE_CLASSES = {"StringLookup", "IntegerLookup", "TextVectorization", "Hashing", "CategoryEncoding",
                 "Discretization", "HashedCrossing"}  # text/table layers: vocabularies, often from files

_TRAINING_MODULES = ("keras.optimizers", "keras.losses", "keras.metrics", "tf_keras.optimizers", "tf_keras.losses",
                     "tf_keras.metrics")

_dynamic: dict[str, frozenset] = {}


def _classes_of(modules) -> frozenset:
    names = set()
    for name in modules:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        names |= {n for n, v in vars(mod).items() if isinstance(v, type)}
    return frozenset(names)


def _op_classes() -> frozenset:
    if "ops" not in _dynamic:
        _dynamic["ops"] = _classes_of(_OP_MODULES)
    return _dynamic["ops"]


def _training_classes() -> frozenset:
    """Keras' own optimizers, losses and metrics (in compile configs and tf_keras metric nodes)."""
    if "training" not in _dynamic:
        from ..._optional import import_tensorflow

        import_tensorflow()
        _dynamic["training"] = _classes_of(_TRAINING_MODULES)
    return _dynamic["training"]


def _module_ok(module: str) -> bool:
    for top in ("keras", "tf_keras"):
        if module == top:
            return True
        for part in _MODULE_PARTS:
            for prefix in (f"{top}.{part}", f"{top}.src.{part}"):
                if module == prefix or module.startswith(prefix + "."):
                    return True
    return False


def looks_like_path(text: str) -> bool:
    """A string a loader could take for a file or URL."""
    return ("/" in text or "\\" in text or text.startswith("~") or "://" in text
            or (len(text) > 2 and text[1] == ":" and text[0].isalpha()))


def _allowed_class(cls: str, module) -> bool:
    if cls in LAYER_CLASSES or cls in CONFIG_CLASSES or cls in ("TFOpLambda", "SlicingOpLambda"):
        return True
    if isinstance(module, str) and module.startswith("keras.src.ops.") and module in _OP_MODULES:
        return cls in _op_classes()
    if module is None and cls in _op_classes():
        return True
    if cls.startswith("Custom>"):
        # tf_keras registers its own optimizers as "Custom>Adam" and so on, and a compiled
        # tf_keras SavedModel stores its optimizer under that name in keras_metadata.pb.
        return cls[len("Custom>"):] in _tf_keras_optimizers()
    return cls in _training_classes()


def _tf_keras_optimizers() -> frozenset:
    if "tf_keras_optimizers" not in _dynamic:
        _training_classes()  # imports TensorFlow quietly first
        _dynamic["tf_keras_optimizers"] = _classes_of(("tf_keras.optimizers",))
    return _dynamic["tf_keras_optimizers"]


def _refuse(where: str, name, text: str):
    raise ModelFileError(f"{where}: layer {name!r} {text}")


def _check_object(node: dict, cfg: dict, where: str) -> None:
    """One configured object (a dict with a class_name): its class, module and fields."""
    cls = node.get("class_name")
    name = cfg.get("name") or node.get("name") or "?"
    if not isinstance(cls, str):
        raise ModelFileError(f"{where}: an object with class_name {cls!r} (not a name); refused")
    if cls in ("Lambda", "__lambda__") or cfg.get("function_type") == "lambda":
        _refuse(where, name, f": {LAMBDA_REFUSED}")
    if cls in VALUE_MARKERS:
        return
    module = node.get("module")
    registered = node.get("registered_name")
    if isinstance(registered, str) and ">" in registered:
        _refuse(where, name, f"is of class {registered}, a custom class registered outside Keras; {CUSTOM_REFUSED}")
    if module is not None and (not isinstance(module, str) or not _module_ok(module)):
        _refuse(where, name, f"is of class {module}.{cls}, which is not built into Keras; {CUSTOM_REFUSED}")
    if cls == "function":
        fn = node.get("config")
        if not (isinstance(fn, str) and (fn in ACTIVATIONS or (isinstance(module, str) and
                                                                module.startswith(_TRAINING_MODULES)))):
            _refuse(where, name, f"names the function {fn!r}, which is not a built-in activation")
        return
    fn = cfg.get("function")
    if cls in ("TFOpLambda", "SlicingOpLambda"):
        if (not isinstance(fn, str) or fn.startswith(_TFOP_IO)
                or not (fn.startswith(_TFOP_PREFIXES) or fn in _TFOP_NAMES)):
            _refuse(where, name, f"calls the TensorFlow function {fn!r}, which edgeclf does not run from a file "
                    "(only tensor math is allowed)")
    elif fn is not None and not isinstance(fn, str):
        _refuse(where, name, f"({cls}) stores a function as code; refused, as safe mode refuses it")
    if cls in _LOADER_CLASSES:
        _refuse(where, name, f"is a {cls}, which loads or runs code from outside the model file; edgeclf does not "
                "load it. Save the model without it")
    if cls in _FILE_CLASSES:
        _refuse(where, name, f"is a {cls}, a lookup layer whose vocabulary or table may come from a file; an image "
                "classifier needs none, so edgeclf refuses it. Save the model without it")
    if not _allowed_class(cls, module):
        _refuse(where, name, f"is a {cls}, which is not among the layer classes edgeclf allows in an image "
                f"classifier (docs/safety.md lists them); {CUSTOM_REFUSED}")
    for key in cfg:
        if key in FILE_FIELDS:
            _refuse(where, name, f"({cls}) has a {key!r} field, which names a file or file-backed table; "
                    "an image classifier needs none, so it is refused")


def _check_strings(value, where: str, name, key: str, depth: int = 0) -> None:
    """No path- or URL-like string in a field's value (objects nested in it are walked apart)."""
    if depth > 50:
        raise ModelFileError(f"{where}: the model configuration is nested too deeply; refused")
    if isinstance(value, str):
        if looks_like_path(value):
            _refuse(where, name, f"has the field {key!r} = {value[:120]!r}, which looks like a path or URL; a "
                    "model file may not point at other files")
    elif isinstance(value, list):
        for v in value:
            _check_strings(v, where, name, key, depth + 1)
    elif isinstance(value, dict) and "class_name" not in value:
        for k, v in value.items():
            if k not in _NAME_FIELDS:
                _check_strings(v, where, name, key, depth + 1)


def check_config(config, where: str, *, _max_depth: int = 200) -> None:
    """Walk a stored Keras config at every nesting level; raise ModelFileError on anything not
    allowlisted (see the module docstring): a class, a module, a file field or a path."""
    stack = [(config, 0, None)]
    while stack:
        node, depth, owner = stack.pop()
        if depth > _max_depth:
            raise ModelFileError(f"{where}: the model configuration is nested over {_max_depth} levels deep; "
                                 "refused")
        if isinstance(node, list):
            stack += [(v, depth + 1, owner) for v in node]
            continue
        if not isinstance(node, dict):
            continue
        if "class_name" in node:
            cfg = node.get("config") if isinstance(node.get("config"), dict) else {}
            _check_object(node, cfg, where)
            owner = cfg.get("name") or node.get("name") or node.get("class_name")
            for key, value in cfg.items():
                if key not in _NAME_FIELDS:
                    _check_strings(value, where, owner, key)
        stack += [(v, depth + 1, owner) for k, v in node.items() if k not in ("module", "registered_name")]


def class_allowed(cls: str, module: Optional[str] = None) -> bool:
    """Whether a class (as a config names it) is on the allowlist; for docs and tests."""
    return _allowed_class(cls, module)
