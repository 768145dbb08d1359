"""The one door every Keras model and SavedModel comes in through.

``load_keras_model(path)`` decides what a model is by its *content*, never by its suffix:

- a zip holding ``config.json`` is a ``.keras`` file, of Keras 3 or of tf_keras (Keras 2),
  told apart by ``metadata.json``'s ``keras_version``;
- a file with the HDF5 signature is an ``.h5`` model of Keras 3 or Keras 2 (its
  ``keras_version`` attribute), and must hold a ``model_config``;
- a folder with ``saved_model.pb`` is a tf_keras SavedModel when it has
  ``keras_metadata.pb``, else a plain SavedModel (Keras 3 ``model.export()``,
  ``tf.saved_model.save``) used through its serving signature.

Before anything is deserialized, the stored configuration is parsed (JSON, not byte
patterns) and walked at every nesting level: a layer that carries Python code (``Lambda``,
a ``__lambda__`` object, a function stored as bytecode), a class that is neither built into
Keras nor registered in this process, a ``TFOpLambda`` naming a TensorFlow function outside
the pure-math namespaces, or a serving graph with file or Python ops is refused with the
reason. Only regular files under a size cap are read, so a FIFO or a link to ``/dev/zero``
is refused instead of hanging or filling memory. Keras 3 files load with Keras 3 itself, in
safe mode; Keras 2 files with tf_keras, in safe mode.

Whatever was loaded comes back as one ``LoadedModel``: input size, output width and kind,
the input value range the model expects, ``predict`` on raw 0..255 pixels, and a
``tf.function`` for the converters with training-only layers switched off.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import ModelFileError, UsageError
from ..runtime.spec import InputRange, OutputKind

MAX_MODEL_BYTES = 4 << 30  # a whole model file or SavedModel folder
MAX_CONFIG_BYTES = 64 << 20  # a config.json / model_config / keras_metadata.pb
INPUT_NAME = "image"

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")

LAMBDA_REFUSED = ("the model contains a Lambda layer, whose Python code safe mode refuses to run from a "
                  "file (it could execute anything); replace the Lambda with a built-in layer or a "
                  "registered custom layer and save the model again")


class SourceFormat(str, Enum):
    """What a model file is, decided by its content."""

    KERAS3_ZIP = "Keras 3 .keras"
    KERAS2_ZIP = "tf_keras .keras"
    KERAS3_H5 = "Keras 3 .h5"
    KERAS2_H5 = "tf_keras .h5"
    KERAS2_SAVEDMODEL = "tf_keras SavedModel"
    SAVEDMODEL = "SavedModel (serving signature)"

    @property
    def keras3(self) -> bool:
        return self in (SourceFormat.KERAS3_ZIP, SourceFormat.KERAS3_H5)


@dataclass(frozen=True)
class Inspected:
    """What the content check found, before anything was deserialized."""

    path: Path
    format: SourceFormat
    keras_version: str
    config: Optional[dict]  # the model config (None for a plain SavedModel)


@dataclass(frozen=True)
class LoadedModel:
    """A loaded classifier, whatever it came from.

    ``predict`` and ``function`` both take float32 NHWC pixels 0..255 (the wrap to the
    model's own ``input_range`` is inside), with training-only layers off.
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
        return self.input_range is not InputRange.PIXELS or self.sigmoid_appended or self.softmax_appended

    def frozen_graph(self):
        """(GraphDef, input name, output name): the inference graph with the weights as
        constants, calls inlined, and only what the output needs (no seed updates of
        augmentation layers, which Keras 3 leaves even in ``model.export()`` graphs)."""
        if "frozen" not in self._cache:
            self._cache["frozen"] = _freeze(self.function)
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
        return 1.0 / (1.0 + np.exp(-y)) if self.sigmoid_appended else y

    def with_softmax(self) -> "LoadedModel":
        """This logits model ending in a softmax (every file gives probabilities)."""
        from dataclasses import replace

        from .._optional import import_tensorflow

        if self.output_kind is not OutputKind.LOGITS:
            return self
        tf = import_tensorflow()
        function = _make_function(tf, self.keras_model, self.trackable, self.input_size, self.input_range,
                                  sigmoid=self.sigmoid_appended, softmax=True)
        return replace(self, output_kind=OutputKind.PROBABILITIES, softmax_appended=True, function=function,
                       _cache={})

    def _serve_raw(self, x):
        sig = self.trackable.signatures["serving_default"]
        name = _signature_input_name(sig)
        out = sig(**{name: x})
        return next(iter(out.values()))

    def tf_keras_for_qat(self):
        """A tf_keras model taking 0..255 pixels, for tensorflow-model-optimization.

        A tf_keras source is used as it is; a Keras 3 model is rebuilt layer by layer with the
        same weights (``qat.rebuild_as_tf_keras``). Raises UsageError naming what cannot be.
        """
        from .qat import rebuild_as_tf_keras, with_wrapping

        if "tf_keras" in self._cache:  # QAT and the accuracy budget share one rebuild
            return self._cache["tf_keras"]
        if self.keras_model is None:
            raise UsageError(f"{self.path}: QAT needs the model's layers, and a SavedModel without Keras "
                             "metadata holds only a traced graph; export the Keras model (.keras) for QAT")
        model = self.keras_model if self.is_tf_keras else rebuild_as_tf_keras(self.keras_model)
        if self.input_range is not InputRange.PIXELS or self.sigmoid_appended:
            model = with_wrapping(model, *self.input_range.scale_offset, sigmoid=self.sigmoid_appended)
        if self.softmax_appended:  # appended to the graph, flat, so tfmot can annotate it
            from .heads import with_probability_head

            model, _ = with_probability_head(model, OutputKind.LOGITS)
        self._cache["tf_keras"] = model
        return model

    def describe(self) -> str:
        h, w = self.input_size
        return (f"{self.format.value}; input {h}x{w} RGB, expects {self.input_range.value.replace(',', '..')}; "
                f"output {self.output_width} {self.output_kind.value}")


# --------------------------------------------------------------------------------------------
# Content checks: they parse files and never deserialize a Keras object (TensorFlow is only
# imported to read a SavedModel's graph and to list Keras' built-in class names).


def _check_regular(path: Path, *, what: str = "model file") -> int:
    """Size of ``path`` if it is a regular file under the cap (links followed); else refuse."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or
                stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise ModelFileError(f"{path}: the {what} is {kind}; give a regular .keras/.h5 file or a SavedModel folder")
    if st.st_size > MAX_MODEL_BYTES:
        raise ModelFileError(f"{path}: the {what} is {st.st_size} bytes, over edgeclf's limit of "
                             f"{MAX_MODEL_BYTES} bytes")
    return st.st_size


def _read_capped(path: Path, limit: int = MAX_CONFIG_BYTES) -> bytes:
    size = _check_regular(path)
    if size > limit:
        raise ModelFileError(f"{path}: {size} bytes, over the {limit}-byte limit for this part of a model")
    with open(path, "rb") as f:
        return f.read(limit + 1)


def inspect_model(path) -> Inspected:
    """Decide the format of ``path`` by content and refuse code-carrying configs.

    Reads only regular files under the size cap; deserializes nothing.
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise UsageError(f"model not found: {path}")
    if path.is_dir():
        return _inspect_savedmodel(path)
    size = _check_regular(path)
    if size == 0:
        raise ModelFileError(f"{path}: the file is empty; export it again from the training script")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] in _ZIP_SIGNATURES:
        return _inspect_zip(path)
    if head == _HDF5_SIGNATURE:
        return _inspect_h5(path)
    raise ModelFileError(f"{path}: neither a .keras zip nor an HDF5 model (the content is something else); "
                         "give a .keras or .h5 file saved by Keras, or a SavedModel folder")


def _parse_json(raw, where: str) -> dict:
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else str(raw)
        doc = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{where}: the stored model configuration is not valid JSON ({exc}); "
                             "save the model again") from None
    if not isinstance(doc, dict):
        raise ModelFileError(f"{where}: the stored model configuration is not a JSON object; save the model again")
    return doc


def _is_keras3(version: str) -> bool:
    return version.split(".")[0] == "3"


def _inspect_zip(path: Path) -> Inspected:
    try:
        with zipfile.ZipFile(path) as z:
            infos = {i.filename: i for i in z.infolist()}
            if "config.json" not in infos:
                raise ModelFileError(f"{path}: a zip without config.json is not a .keras model; save it with "
                                     "model.save('model.keras')")

            def read(name):
                info = infos[name]
                if info.file_size > MAX_CONFIG_BYTES:
                    raise ModelFileError(f"{path}: {name} is {info.file_size} bytes, over the limit")
                with z.open(info) as f:
                    data = f.read(MAX_CONFIG_BYTES + 1)
                if len(data) > MAX_CONFIG_BYTES:
                    raise ModelFileError(f"{path}: {name} is over the size limit")
                return data

            config = _parse_json(read("config.json"), str(path))
            meta = _parse_json(read("metadata.json"), str(path)) if "metadata.json" in infos else {}
    except zipfile.BadZipFile as exc:
        raise ModelFileError(f"{path}: damaged .keras zip ({exc}); save the model again") from None
    version = str(meta.get("keras_version", ""))
    fmt = SourceFormat.KERAS3_ZIP if _is_keras3(version) else SourceFormat.KERAS2_ZIP
    check_config(config, str(path))
    return Inspected(path, fmt, version, config)


def _inspect_h5(path: Path) -> Inspected:
    from .._optional import require

    h5py = require("h5py", purpose="reading .h5 models")
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            version = f.attrs.get("keras_version", "")
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError on damaged files
        raise ModelFileError(f"{path}: damaged HDF5 file ({type(exc).__name__}: {str(exc)[:200]})") from None
    if raw is None:
        raise ModelFileError(f"{path}: this HDF5 file holds no model configuration (weights only?); save the "
                             "whole model with model.save(...)")
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    raw_len = len(raw) if isinstance(raw, (bytes, str)) else 0
    if raw_len > MAX_CONFIG_BYTES:
        raise ModelFileError(f"{path}: the model configuration is over the size limit")
    config = _parse_json(raw, str(path))
    version = str(version)
    fmt = SourceFormat.KERAS3_H5 if _is_keras3(version) else SourceFormat.KERAS2_H5
    check_config(config, str(path))
    return Inspected(path, fmt, version, config)


def _inspect_savedmodel(path: Path) -> Inspected:
    if not (path / "saved_model.pb").exists():
        raise UsageError(f"{path} is a folder without saved_model.pb, so not a SavedModel; give a .keras/.h5 "
                         "file, a SavedModel folder or a run directory")
    total = 0
    for root, dirs, files in os.walk(path):  # links are followed by stat: a link to a device is refused
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            p = Path(root) / name
            if p.is_dir():
                raise ModelFileError(f"{p}: a SavedModel may not link to folders outside it")
            total += _check_regular(p, what="SavedModel file")
    if total > MAX_MODEL_BYTES:
        raise ModelFileError(f"{path}: the SavedModel is {total} bytes, over edgeclf's limit of {MAX_MODEL_BYTES}")
    meta_pb = path / "keras_metadata.pb"
    if not meta_pb.exists():
        _check_serving_graph(path)
        return Inspected(path, SourceFormat.SAVEDMODEL, "", None)
    from .._optional import require

    pb2 = require("tf_keras.protobuf.saved_metadata_pb2", purpose="reading Keras SavedModels")
    meta = pb2.SavedMetadata()
    try:
        meta.ParseFromString(_read_capped(meta_pb))
    except Exception as exc:  # protobuf's DecodeError
        raise ModelFileError(f"{meta_pb}: cannot be parsed ({type(exc).__name__}); save the model again") from None
    root_config = None
    version = ""
    for node in meta.nodes:
        doc = _parse_json(node.metadata, str(meta_pb)) if node.metadata else {}
        check_config(doc, str(path))
        if node.node_path == "root":
            root_config = doc
            version = str(getattr(node.version, "producer", "") or "")
    return Inspected(path, SourceFormat.KERAS2_SAVEDMODEL, version, root_config)


# Ops that touch files or run Python: never in a classifier's serving graph.
_BANNED_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc", "WriteFile", "ReadFile", "MatchingFiles",
               "Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice", "MergeV2Checkpoints",
               "ImmutableConst", "LoadAndRemapMatrix", "DeleteFile", "ShardedFilename", "WriteSummary",
               "WriteScalarSummary", "WriteImageSummary", "CreateSummaryFileWriter", "DebugIdentityV2",
               "DebugIdentityV3", "ExecuteTPUEmbeddingPartitioner"}


def _check_serving_graph(path: Path) -> None:
    """Refuse a SavedModel whose serving signature reaches an op that reads/writes files or
    runs Python (checked on the stored graph, before TensorFlow loads it)."""
    from .._optional import import_tensorflow

    import_tensorflow()
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    try:
        sm.ParseFromString(_read_capped(path / "saved_model.pb", MAX_MODEL_BYTES))
    except Exception as exc:
        raise ModelFileError(f"{path / 'saved_model.pb'}: cannot be parsed ({type(exc).__name__})") from None
    graph = None
    sig = None
    for mg in sm.meta_graphs:
        if "serving_default" in mg.signature_def:
            graph, sig = mg, mg.signature_def["serving_default"]
            break
    if sig is None:
        raise ModelFileError(f"{path}: this SavedModel has no 'serving_default' signature; save it with "
                             "Keras 3 model.export(path) or tf.saved_model.save(model, path, signatures=...)")
    funcs = {f.signature.name: f for f in graph.graph_def.library.function}
    nodes = {n.name: n for n in graph.graph_def.node}
    todo = [t.name.split(":")[0].lstrip("^") for t in sig.outputs.values()]
    seen_nodes, seen_funcs = set(), set()

    def refs(attr_map):
        for a in attr_map.values():
            if a.HasField("func"):
                yield a.func.name
            for fn in a.list.func:
                yield fn.name

    def visit_func(name):
        if name in seen_funcs or name not in funcs:
            return
        seen_funcs.add(name)
        for nd in funcs[name].node_def:
            check_op(nd)
            for fname in refs(nd.attr):
                visit_func(fname)
            if nd.op in funcs:
                visit_func(nd.op)

    def check_op(nd):
        if nd.op in _BANNED_OPS:
            raise ModelFileError(f"{path}: the serving graph holds a {nd.op} op ({nd.name}), which reads or "
                                 "writes files or runs Python; edgeclf does not run such a SavedModel")

    while todo:
        name = todo.pop()
        if name in seen_nodes or name not in nodes:
            continue
        seen_nodes.add(name)
        nd = nodes[name]
        check_op(nd)
        for fname in refs(nd.attr):
            visit_func(fname)
        if nd.op in funcs:
            visit_func(nd.op)
        todo += [i.split(":")[0].lstrip("^") for i in nd.input]


# Classes that hold or name code.
_CODE_CLASSES = {"Lambda", "__lambda__"}
# Built-in classes that load or run code from elsewhere: another SavedModel from a path
# (TFSMLayer), a pickled torch module (TorchModuleWrapper), JAX/Flax callables.
_LOADER_CLASSES = {"TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"}
# Keras 3 serialization markers for plain values.
_VALUE_MARKERS = {"__tuple__", "__list__", "__numpy__", "__tensor__", "__bytes__", "__ellipsis__", "__slice__",
                  "__keras_tensor__", "__typespec__", "__dtype__", "TypeSpec", "TensorShape", "InputSpec",
                  "TensorSpec"}
# Where a built-in class may live (the "module" field of Keras 3 and tf_keras configs).
_MODULES = ("keras", "tf_keras")
_MODULE_PARTS = ("layers", "initializers", "regularizers", "constraints", "activations", "models", "ops",
                 "dtype_policies", "engine", "src.models", "src.ops", "src.layers", "src.engine",
                 "src.initializers", "src.regularizers", "src.constraints", "src.activations",
                 "src.dtype_policies", "src.mixed_precision", "mixed_precision", "losses", "metrics",
                 "optimizers", "src.losses", "src.metrics", "src.optimizers")
# TFOpLambda names a TensorFlow function; only pure tensor math may be named.
_TFOP_PREFIXES = ("math.", "nn.", "image.", "linalg.", "__operators__.", "compat.v1.math.", "compat.v1.nn.")
_TFOP_NAMES = {"reshape", "transpose", "concat", "stack", "unstack", "cast", "clip_by_value", "identity",
               "expand_dims", "squeeze", "split", "gather", "pad", "tile", "where", "maximum", "minimum",
               "reduce_mean", "reduce_sum", "reduce_max", "reduce_min", "ones_like", "zeros_like", "shape",
               "broadcast_to", "abs", "sqrt", "square", "exp", "nest.flatten", "convert_to_tensor",
               "compat.v1.transpose", "compat.v1.squeeze", "strided_slice", "slice", "range"}

_known_cache: Optional[frozenset] = None


def _known_class_names() -> frozenset:
    """Names of the classes Keras 3 and tf_keras build in (for configs without a module field)."""
    global _known_cache
    if _known_cache is not None:
        return _known_cache
    import importlib

    from .._optional import import_tensorflow

    import_tensorflow()
    names = {"Functional", "Sequential", "Model", "TFOpLambda", "SlicingOpLambda", "DTypePolicy", "Policy",
             "FloatDTypePolicy"}
    for pkg in ("keras", "tf_keras"):
        for sub in ("layers", "initializers", "regularizers", "constraints", "dtype_policies", "mixed_precision",
                    "losses", "metrics", "optimizers"):
            try:
                mod = importlib.import_module(f"{pkg}.{sub}")
            except ImportError:
                continue
            names |= {n for n, v in vars(mod).items() if isinstance(v, type)}
    for sub in ("numpy", "nn", "math", "core", "image", "linalg"):
        try:
            mod = importlib.import_module(f"keras.src.ops.{sub}")
        except ImportError:
            continue
        names |= {n for n, v in vars(mod).items() if isinstance(v, type)}
    names -= _CODE_CLASSES | _LOADER_CLASSES
    _known_cache = frozenset(names)
    return _known_cache


def _module_ok(module: str) -> bool:
    for top in _MODULES:
        if module == top:
            return True
        for part in _MODULE_PARTS:
            prefix = f"{top}.{part}"
            if module == prefix or module.startswith(prefix + "."):
                return True
    return False


def _registered(name: str) -> bool:
    try:
        import keras

        if keras.saving.get_registered_object(name) is not None:
            return True
    except Exception:  # noqa: BLE001 - no Keras 3: nothing registered there
        pass
    try:
        import tf_keras

        return tf_keras.saving.get_registered_object(name) is not None
    except Exception:  # noqa: BLE001
        return False


def check_config(config, where: str) -> None:
    """Walk a stored Keras config at every nesting level; raise ModelFileError on code.

    Refused: ``Lambda`` layers and ``__lambda__`` objects, any object whose ``function`` is
    stored bytecode, classes outside Keras' own modules that are not registered in this
    process, and ``TFOpLambda`` layers naming anything but pure tensor math. Allowed:
    ``TFOpLambda``/``SlicingOpLambda`` naming pure math (what tf_keras makes of
    ``preprocess_input`` and ``x / 127.5``), and Keras 3 ops (``TrueDivide``...).
    """
    stack = [(config, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > 200:
            raise ModelFileError(f"{where}: the model configuration is nested over 200 levels deep; refused")
        if isinstance(node, list):
            stack += [(v, depth + 1) for v in node]
            continue
        if not isinstance(node, dict):
            continue
        stack += [(v, depth + 1) for v in node.values()]
        if "class_name" not in node:
            continue
        cls = node.get("class_name")
        cfg = node.get("config") if isinstance(node.get("config"), dict) else {}
        name = cfg.get("name") or node.get("name") or "?"
        if not isinstance(cls, str):
            raise ModelFileError(f"{where}: a layer with class_name {cls!r} (not a name); refused")
        if cls in _CODE_CLASSES or cfg.get("function_type") == "lambda":
            raise ModelFileError(f"{where}: layer {name!r}: {LAMBDA_REFUSED}")
        if cls in _LOADER_CLASSES:
            raise ModelFileError(f"{where}: layer {name!r} is a {cls}, which loads or runs code from outside the "
                                 "model file; edgeclf does not load it. Save the model without it")
        if cls in _VALUE_MARKERS:
            continue
        fn = cfg.get("function")
        if cls in ("TFOpLambda", "SlicingOpLambda"):
            if not isinstance(fn, str) or not (fn.startswith(_TFOP_PREFIXES) or fn in _TFOP_NAMES):
                raise ModelFileError(f"{where}: layer {name!r} calls the TensorFlow function {fn!r}, which "
                                     "edgeclf does not run from a file (only tensor math is allowed)")
            continue
        if fn is not None and not isinstance(fn, str) and cls != "function":
            raise ModelFileError(f"{where}: layer {name!r} ({cls}) stores a function as code; refused, as "
                                 "safe mode refuses it")
        module = node.get("module")
        registered = node.get("registered_name")
        custom = None
        if isinstance(registered, str) and registered not in (cls, "") and ">" in registered:
            custom = registered
        elif isinstance(module, str) and not _module_ok(module):
            custom = f"{module}.{cls}"
        elif module is None and cls not in _known_class_names():
            custom = cls
        if custom is not None and not _registered(registered if isinstance(registered, str) else cls):
            raise ModelFileError(
                f"{where}: layer {name!r} is of class {custom}, which is not built into Keras; edgeclf loads no "
                "custom code from a model file. Rebuild the model from built-in layers, or load it in your own "
                "script and save it with model.export(DIR) (a SavedModel)")


# --------------------------------------------------------------------------------------------
# Loading


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
        spec = _signature_input_spec(sig, path)
        size = _fixed_size(tuple(spec.shape), path, None)
        keras_model, trackable, name = None, obj, path.name
        out_spec = list(sig.structured_outputs.values())
        if len(out_spec) != 1:
            raise ModelFileError(f"{path}: the serving signature has {len(out_spec)} outputs; a classifier has one")
        width = int(out_spec[0].shape[-1])
    else:
        keras_model = _load_keras(ins)
        if len(keras_model.inputs) != 1 or len(keras_model.outputs) != 1:
            raise ModelFileError(f"{path}: the model has {len(keras_model.inputs)} inputs and "
                                 f"{len(keras_model.outputs)} outputs; edgeclf exports classifiers with one of each")
        size = _fixed_size(tuple(keras_model.inputs[0].shape), path, keras_model)
        width = int(keras_model.outputs[0].shape[-1])
        trackable, name = keras_model, str(keras_model.name)
        if size != tuple(keras_model.inputs[0].shape[1:3]):
            notes.append(f"input size {size[0]}x{size[1]} from the model's Resizing layer")
    rng = stated_range or InputRange.PIXELS
    function = _make_function(tf, keras_model, trackable, size, rng)
    graph = _frozen_graph(function)
    _refuse_random_ops(graph[0], path, ins.format)
    sigmoid = False
    if stated_kind is None:
        kind, why = _infer_output_kind(graph, width, path, function, size)
        notes.append(f"output: {width} {kind.value} ({why})")
    elif stated_kind is OutputKind.LOGITS and width == 1 and _last_op(graph) != "Sigmoid":
        # One binary logit (the transfer-learning tutorial's Dense(1)): the files end in a
        # sigmoid, so they give the probability of the second label like any sigmoid model.
        kind, sigmoid = OutputKind.SIGMOID, True
        function = _make_function(tf, keras_model, trackable, size, rng, sigmoid=True)
        notes.append("output: 1 logit (as stated); a sigmoid is added, so the files give the probability "
                     "of the second label")
    else:
        kind = stated_kind
        notes.append(f"output: {width} {kind.value} (as stated)")
    if stated_range is None:
        scaling = _input_scaling_op(graph)
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
                       keras_model=keras_model, function=function, trackable=trackable)


def _parse_output_kind(value) -> OutputKind:
    try:
        return OutputKind(str(getattr(value, "value", value)).lower())
    except ValueError:
        raise UsageError(f"unknown --output-kind {value!r}; choose from: "
                         f"{', '.join(k.value for k in OutputKind)}") from None


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
                             f"({type(exc).__name__}: {msg.splitlines()[0][:300] if msg else ''})") from None
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
                             f"{str(exc).splitlines()[0][:300] if str(exc) else ''})") from None


def _signature_input_name(sig) -> str:
    return next(iter(sig.structured_input_signature[1]))


def _signature_input_spec(sig, path):
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


def _fixed_size(shape, path, model) -> tuple[int, int]:
    if len(shape) != 4 or shape[-1] != 3:
        raise ModelFileError(f"{path}: the model's input shape is {tuple(shape)}; edgeclf exports image "
                             "classifiers with a (batch, height, width, 3) input")
    if shape[1] is None or shape[2] is None:
        target = _resizing_target(model) if model is not None else None
        if target is None:
            raise ModelFileError(f"{path}: the model's input shape {tuple(shape)} has no fixed height and width; "
                                 "give the Input a size, or put a Resizing layer first")
        return target
    return int(shape[1]), int(shape[2])


def _make_function(tf, keras_model, trackable, size, rng: InputRange, *, sigmoid: bool = False,
                   softmax: bool = False):
    """tf.function(image) on 0..255 pixels → raw outputs, inference mode."""
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
        in_name = _signature_input_name(sig)
        in_dtype = sig.structured_input_signature[1][in_name].dtype

        def call(x):
            out = sig(**{in_name: tf.cast(x, in_dtype)})
            return next(iter(out.values()))

    @tf.function(input_signature=[spec], autograph=False)
    def serve(image):
        x = image
        if rng is not InputRange.PIXELS:
            x = x * scale + offset
        y = call(x)
        if isinstance(y, (list, tuple)):
            y = y[0]
        y = tf.cast(y, tf.float32)
        if sigmoid:
            y = tf.math.sigmoid(y)
        if softmax:
            y = tf.nn.softmax(y)
        return tf.identity(y, name="output")

    return serve


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


def _freeze(function):
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


def _frozen_graph(function):
    gdef, _, out = _freeze(function)
    return gdef, out


def _refuse_random_ops(graph, path, fmt) -> None:
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


def _input_scaling_op(graph) -> Optional[str]:
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


def _last_op(graph) -> Optional[str]:
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


def _infer_output_kind(graph, width: int, path, function, size) -> tuple[OutputKind, str]:
    op = _last_op(graph)
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
