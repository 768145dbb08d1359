"""Content checks of a model file, before TensorFlow, h5py or Keras deserialize anything.

``inspect_model(path)`` decides what a model is by its *content*, never by its suffix:

- a zip holding ``config.json`` is a ``.keras`` file, of Keras 3 or of tf_keras (Keras 2),
  told apart by ``metadata.json``'s ``keras_version``;
- a file with the HDF5 signature is an ``.h5`` model of Keras 3 or Keras 2 (its
  ``keras_version`` attribute), and must hold a ``model_config``;
- a folder with ``saved_model.pb`` is a tf_keras SavedModel when it has
  ``keras_metadata.pb``, else a plain SavedModel (Keras 3 ``model.export()``,
  ``tf.saved_model.save``) used through its serving signature.

The stored configuration is parsed (JSON, not byte patterns) and walked at every nesting
level: a layer that carries Python code (``Lambda``, a ``__lambda__`` object, a function
stored as bytecode), a class that is neither built into Keras nor registered in this
process, a ``TFOpLambda`` naming a TensorFlow function outside the pure-math namespaces, or
a serving graph with file or Python ops is refused with the reason. Only regular files under
a size cap are read, so a FIFO or a link to ``/dev/zero`` is refused instead of hanging or
filling memory.
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Optional

from ..errors import ModelFileError, UsageError

MAX_MODEL_BYTES = 4 << 30  # a whole model file or SavedModel folder

MAX_CONFIG_BYTES = 64 << 20  # a config.json / model_config / keras_metadata.pb

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

def check_regular(path: Path, *, what: str = "model file") -> int:
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

def read_capped(path: Path, limit: int = MAX_CONFIG_BYTES) -> bytes:
    size = check_regular(path)
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
    size = check_regular(path)
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

def is_keras3(version: str) -> bool:
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
    fmt = SourceFormat.KERAS3_ZIP if is_keras3(version) else SourceFormat.KERAS2_ZIP
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
    fmt = SourceFormat.KERAS3_H5 if is_keras3(version) else SourceFormat.KERAS2_H5
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
            total += check_regular(p, what="SavedModel file")
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
        meta.ParseFromString(read_capped(meta_pb))
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
        sm.ParseFromString(read_capped(path / "saved_model.pb", MAX_MODEL_BYTES))
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
