"""The op allowlist for SavedModels, checked on ``saved_model.pb`` as a protobuf before
TensorFlow loads anything.

``tf.saved_model.load`` runs more than the serving signature: resource initializers (a
``TrackableResource._initialize``), variable restores and whatever those call. So every node
of every graph and every function of the library is checked, reached or not. Each op must be
one of ``ALLOWED_OPS``: the math, NN, image, array, control-flow, variable and random ops a
feed-forward image classifier and Keras' saving produce (the lists were taken from real
SavedModels of tf_keras, Keras 3 ``model.export()``, ``tf.saved_model.save`` and MobileNetV2,
and from a model holding every layer class ``keras_config`` allows).

The checkpoint ops (``SaveV2``, ``RestoreV2``, ``MergeV2Checkpoints``) are in every SavedModel:
TensorFlow writes a ``__inference__traced_save_N`` and a ``__inference__traced_restore_N``
function, called from the two top-level nodes the MetaGraph's ``saver_def`` names, with the
``saver_filename`` placeholder as their first input (TF1-style savers feed it; TF2's loader
restores variables from Python and runs neither). Those ops, and the string plumbing that
builds the shard names, are allowed only inside those two functions, only when nothing else
calls them, and only when every path they read or write starts with the fed prefix (string
joins append to it; no appended piece holds ``..``). Anything else is refused by name, with
the function and node where it is.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import ModelFileError

_MATH = {"Add", "AddV2", "AddN", "Sub", "Mul", "MulNoNan", "RealDiv", "Div", "DivNoNan", "FloorDiv", "FloorMod",
         "Mod", "TruncateDiv", "Neg", "Abs", "Sign", "Sqrt", "Rsqrt", "Square", "SquaredDifference", "Exp", "Expm1",
         "Log", "Log1p", "Pow", "Reciprocal", "Inv", "Floor", "Ceil", "Round", "Rint", "Maximum", "Minimum",
         "ClipByValue", "Erf", "Erfc", "Tanh", "Sigmoid", "Sin", "Cos", "Tan", "Atan", "Atan2", "Asin", "Acos",
         "Sinh", "Cosh", "Softplus", "Softsign", "Xdivy", "Xlogy", "Sum", "Prod", "Max", "Min", "Mean", "ArgMax",
         "ArgMin", "All", "Any", "Cumsum", "Cumprod", "Equal", "NotEqual", "Less", "LessEqual", "Greater",
         "GreaterEqual", "LogicalAnd", "LogicalOr", "LogicalNot", "IsFinite", "IsNan", "IsInf", "Select",
         "SelectV2", "Cast", "Bitcast", "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum"}
_NN = {"BiasAdd", "Conv2D", "Conv3D", "Conv2DBackpropInput", "Conv3DBackpropInputV2", "DepthwiseConv2dNative",
       "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "Relu", "Relu6", "Elu", "Selu", "LeakyRelu",
       "Softmax", "LogSoftmax", "MaxPool", "MaxPoolV2", "MaxPool3D", "AvgPool", "AvgPool3D"}
_IMAGE = {"ResizeBilinear", "ResizeNearestNeighbor", "ResizeBicubic", "ResizeArea", "ScaleAndTranslate",
          "CropAndResize", "ImageProjectiveTransformV2", "ImageProjectiveTransformV3", "AdjustContrastv2",
          "AdjustHue", "AdjustSaturation", "RGBToHSV", "HSVToRGB"}
_ARRAY = {"Const", "Identity", "IdentityN", "Snapshot", "Reshape", "Transpose", "ExpandDims", "Squeeze", "Pad",
          "PadV2", "MirrorPad", "Tile", "Slice", "StridedSlice", "Pack", "Unpack", "ConcatV2", "Concat", "Split",
          "SplitV", "Gather", "GatherV2", "GatherNd", "Fill", "ZerosLike", "OnesLike", "Range", "Shape", "ShapeN",
          "Size", "Rank", "BroadcastTo", "BroadcastArgs", "ReverseV2", "OneHot", "EnsureShape", "StopGradient",
          "PreventGradient", "CheckNumerics", "Assert", "Placeholder", "PlaceholderWithDefault", "Where",
          "SpaceToBatchND", "BatchToSpaceND", "DepthToSpace", "SpaceToDepth"}
_CONTROL = {"NoOp", "PartitionedCall", "StatefulPartitionedCall", "If", "StatelessIf", "While", "StatelessWhile",
            "Case", "StatelessCase"}
_VARIABLES = {"VarHandleOp", "ReadVariableOp", "AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp",
              "VarIsInitializedOp", "DestroyResourceOp", "DisableCopyOnRead", "ResourceGather"}
# Augmentation layers' randomness (switched off for export; harmless to load).
_RANDOM = {"RandomUniform", "RandomUniformInt", "RandomStandardNormal", "TruncatedNormal", "StatelessRandomUniform",
           "StatelessRandomNormal", "StatelessRandomUniformInt", "StatelessTruncatedNormal",
           "StatelessRandomUniformV2", "StatelessRandomNormalV2", "StatelessRandomUniformIntV2",
           "StatelessRandomUniformFullIntV2", "StatelessTruncatedNormalV2", "StatelessRandomGetKeyCounter",
           "StatelessRandomGetKeyCounterAlg", "StatelessRandomGetAlg", "RngReadAndSkip", "RngSkip",
           "StatefulUniform", "StatefulStandardNormalV2", "StatefulUniformFullInt", "StatefulUniformInt",
           "StatefulTruncatedNormal"}
ALLOWED_OPS = frozenset(_MATH | _NN | _IMAGE | _ARRAY | _CONTROL | _VARIABLES | _RANDOM)

# Only inside the saver's own two functions (see the module docstring).
CHECKPOINT_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints"})
_SAVER_STRING_OPS = frozenset({"ShardedFilename", "StringJoin", "StaticRegexFullMatch"})
SAVER_OPS = CHECKPOINT_OPS | _SAVER_STRING_OPS

# Why some refused ops are refused, for the message (every op not allowed is refused).
_REASONS = {
    "WriteFile": "writes a file", "ReadFile": "reads a file", "MatchingFiles": "lists files",
    "DeleteFile": "deletes a file", "PrintV2": "prints, possibly to a file", "Print": "prints",
    "PyFunc": "runs Python code", "PyFuncStateless": "runs Python code", "EagerPyFunc": "runs Python code",
    "InitializeTableFromTextFile": "reads a table from a file",
    "InitializeTableFromTextFileV2": "reads a table from a file", "ImmutableConst": "maps a file into memory",
    "LoadAndRemapMatrix": "reads a checkpoint file", "DatasetToTFRecord": "writes a TFRecord file",
    "TFRecordDataset": "reads files", "TFRecordDatasetV2": "reads files", "FixedLengthRecordDataset": "reads files",
    "TextLineDataset": "reads files", "CreateSummaryFileWriter": "writes summary files",
    "WriteSummary": "writes summary files", "SaveV2": "writes a checkpoint", "RestoreV2": "reads a checkpoint",
    "MergeV2Checkpoints": "writes and deletes checkpoint files", "Save": "writes a checkpoint",
    "Restore": "reads a checkpoint", "RestoreSlice": "reads a checkpoint", "SaveSlices": "writes a checkpoint",
}

# TensorFlow's own registered classes an image classifier's SavedModel holds (a captured
# constant, e.g. Normalization's mean); every other registered class or saver would run
# Python registered under that name, and is refused.
REGISTERED_CLASSES = frozenset({"tf.TrackableConstant"})

_PREFIX_KEEPERS = {"Identity": (0,), "StringJoin": (0,), "ShardedFilename": (0,)}


def _refuse(path: Path, where: str, node, what: str = "") -> None:
    reason = _REASONS.get(node.op) or ("reads or writes data" if "Dataset" in node.op else "")
    why = f" ({reason})" if reason else ""
    raise ModelFileError(f"{path}: {where}, node {node.name!r}, runs the op {node.op}{why}{what}; it is not "
                         "among the ops edgeclf allows in an image classifier's SavedModel (docs/safety.md), "
                         "so the SavedModel is not loaded")


def _func_refs(attr_map):
    """Names of the functions a node's attributes call (nested in function-valued attributes too)."""
    for a in attr_map.values():
        if a.HasField("func"):
            yield a.func.name
            yield from _func_refs(a.func.attr)
        for fn in a.list.func:
            yield fn.name
            yield from _func_refs(fn.attr)


def _calls(node, library) -> list[str]:
    names = list(_func_refs(node.attr))
    if node.op in library:
        names.append(node.op)
    return names


def check_savedmodel(path: Path, raw: bytes) -> None:
    """Refuse a SavedModel (``raw``: its saved_model.pb) holding anything not allowlisted."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    try:
        sm.ParseFromString(raw)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelFileError(f"{path / 'saved_model.pb'}: cannot be parsed ({type(exc).__name__})") from None
    if not sm.meta_graphs:
        raise ModelFileError(f"{path}: the SavedModel holds no graph; save it again")
    for mg in sm.meta_graphs:
        _check_meta_graph(path, mg)


def _check_meta_graph(path: Path, mg) -> None:
    if not mg.object_graph_def.nodes:
        raise ModelFileError(f"{path}: a TensorFlow 1 SavedModel (no object graph); edgeclf loads TensorFlow 2 "
                             "SavedModels: load it in TensorFlow 2 and save it with tf.saved_model.save")
    for asset in mg.asset_file_def:
        raise ModelFileError(f"{path}: the SavedModel carries the asset file {asset.filename!r} (a vocabulary or "
                             "table); an image classifier needs none, so it is refused")
    for i, obj in enumerate(mg.object_graph_def.nodes):
        kind = obj.WhichOneof("kind")
        if kind == "asset":
            raise ModelFileError(f"{path}: the SavedModel's object {i} is an asset file; an image classifier needs "
                                 "none, so it is refused")
        if (obj.registered_name and obj.registered_name not in REGISTERED_CLASSES) or obj.registered_saver:
            raise ModelFileError(f"{path}: the SavedModel's object {i} needs the registered Python class or saver "
                                 f"{obj.registered_name or obj.registered_saver!r}; edgeclf runs no such code")
    library = {f.signature.name: f for f in mg.graph_def.library.function}
    top = {n.name: n for n in mg.graph_def.node}
    saver_nodes, saver_fns = _saver_functions(path, mg, top, library)
    for node in mg.graph_def.node:
        if node.op not in ALLOWED_OPS and node.op not in library:
            _refuse(path, "the SavedModel's graph", node)
        for name in _calls(node, library):
            _check_call(path, "the SavedModel's graph", node, name, library, saver_fns,
                        from_saver_node=node.name in saver_nodes)
    for fname, func in library.items():
        where = f"function {fname}"
        in_saver = fname in saver_fns
        for node in func.node_def:
            if node.op in ALLOWED_OPS or (in_saver and node.op in SAVER_OPS):
                pass
            elif node.op in library and not in_saver:
                pass
            else:
                _refuse(path, where, node, " outside the two functions TensorFlow's saver writes"
                        if node.op in SAVER_OPS else "")
            calls = _calls(node, library)
            if in_saver and calls:
                _refuse(path, where, node, ", a call from inside the saver's own function")
            for name in calls:
                _check_call(path, where, node, name, library, saver_fns, from_saver_node=False)
        if in_saver:
            _check_checkpoint_paths(path, func)


def _check_call(path, where, node, name, library, saver_fns, *, from_saver_node: bool) -> None:
    if name not in library:
        raise ModelFileError(f"{path}: {where}, node {node.name!r}, calls {name!r}, which is not a function of the "
                             "SavedModel (TensorFlow would run the op of that name); refused")
    if name in saver_fns and not from_saver_node:
        raise ModelFileError(f"{path}: {where}, node {node.name!r}, calls the saver's function {name}, which only "
                             "the saver may call (with the checkpoint prefix); refused")


def _saver_functions(path: Path, mg, top: dict, library: dict) -> tuple[set, set]:
    """The top-level save/restore nodes ``saver_def`` names and the functions they call."""
    sd = mg.saver_def
    names = {t.split(":")[0] for t in (sd.save_tensor_name, sd.restore_op_name) if t}
    if not names:
        return set(), set()
    prefix = sd.filename_tensor_name.split(":")[0]
    if top.get(prefix) is None or top[prefix].op != "Placeholder":
        raise ModelFileError(f"{path}: the SavedModel's saver reads its file name from {prefix!r}, which is not a "
                             "placeholder; refused")
    fns = set()
    for name in names:
        node = top.get(name)
        if node is None or node.op not in ("StatefulPartitionedCall", "PartitionedCall"):
            raise ModelFileError(f"{path}: the SavedModel's saver names {name!r}, which is not a function call; "
                                 "refused")
        if not node.input or node.input[0].split(":")[0] != prefix:
            raise ModelFileError(f"{path}: the saver call {name!r} does not take the checkpoint prefix "
                                 f"{prefix!r} as its first input; refused")
        fns.add(node.attr["f"].func.name)
    return names, fns


def _check_checkpoint_paths(path: Path, func) -> None:
    """In a saver function, every checkpoint path must begin with the fed prefix (arg 0)."""
    if not func.signature.input_arg:
        raise ModelFileError(f"{path}: the saver function {func.signature.name} takes no checkpoint prefix; refused")
    prefix_arg = func.signature.input_arg[0].name
    nodes = {n.name: n for n in func.node_def}

    def source(ref: str):
        return nodes.get(ref.lstrip("^").split(":")[0])

    def from_prefix(ref: str, depth: int = 0) -> bool:
        if ref.split(":")[0] == prefix_arg:
            return True
        node = source(ref)
        if node is None or depth > 20:
            return False
        if node.op == "Pack":
            return all(from_prefix(i, depth + 1) for i in node.input if not i.startswith("^"))
        keep = _PREFIX_KEEPERS.get(node.op)
        if keep is None:
            return False
        data = [i for i in node.input if not i.startswith("^")]
        if node.op == "StringJoin" and not all(safe_suffix(i, depth + 1) for i in data[1:]):
            return False
        return bool(data) and from_prefix(data[0], depth + 1)

    def safe_suffix(ref: str, depth: int) -> bool:
        node = source(ref)
        if node is None or depth > 20:
            return False
        if node.op == "Const":
            return all(b".." not in s for s in node.attr["value"].tensor.string_val)
        if node.op == "Select":
            data = [i for i in node.input if not i.startswith("^")]
            return len(data) == 3 and safe_suffix(data[1], depth + 1) and safe_suffix(data[2], depth + 1)
        if node.op == "Identity":
            return safe_suffix(node.input[0], depth + 1)
        return False

    for node in func.node_def:
        if node.op in CHECKPOINT_OPS:
            data = [i for i in node.input if not i.startswith("^")]
            paths = data[:2] if node.op == "MergeV2Checkpoints" else data[:1]
            if not paths or not all(from_prefix(p) for p in paths):
                _refuse(path, f"function {func.signature.name}", node,
                        " with a path that does not start with the checkpoint prefix")
