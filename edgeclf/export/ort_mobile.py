"""ONNX files for ONNX Runtime Mobile: a fixed batch, ORT-format files, and ORT's own
verdict on which mobile execution providers can run them.

NNAPI (Android) and CoreML (iOS) run only nodes whose shapes are fixed, so a file with a
symbolic batch runs entirely on the CPU there; ``fix_batch`` pins it (1 for a phone).
``convert_to_ort`` and ``check_mobile_usability`` call onnxruntime's own tools
(``onnxruntime.tools.convert_onnx_models_to_ort``, ``check_onnx_model_mobile_usability``),
so the answers are the ones a user of those tools gets.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

from .._quiet import native_stderr_silenced
from ..errors import ExportError, UsageError, first_line

ORT_SUFFIX = ".ort"


class OrtStyle(str, Enum):
    """ORT-format optimization style: ``fixed`` applies every optimization for the CPU
    provider at conversion; ``runtime`` saves the optimizations to replay when the session's
    providers are known (the style for NNAPI/CoreML)."""

    FIXED = "fixed"
    RUNTIME = "runtime"


@dataclass(frozen=True)
class MobileUsability:
    """ORT's mobile usability check of one ONNX file, per execution provider.

    Each verdict is ``yes``, ``maybe`` or ``no``, as the checker reports it for the file as
    it is (a symbolic batch counts against it); ``*_nodes`` say how many of the file's nodes
    that provider could run.
    """

    file: str
    fixed_shapes: bool
    nodes: int
    nnapi: str
    nnapi_nodes: int
    coreml: str  # CoreML ML Program (the current CoreML format)
    coreml_nodes: int
    coreml_neuralnetwork: str
    coreml_neuralnetwork_nodes: int

    @property
    def providers(self) -> tuple[str, ...]:
        """Mobile providers worth trying on this file (verdict yes or maybe)."""
        return tuple(name for name, v in (("NNAPI", self.nnapi), ("CoreML", self.coreml)) if v != "no")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["providers"] = list(self.providers)
        return d


def _onnx():
    from .._optional import require

    return require("onnx", purpose="ONNX export")


def fix_batch(proto, batch: int = 1):
    """``proto`` (an ONNX ModelProto, changed in place and returned) with its input and
    output batch dimension fixed to ``batch``, and shapes inferred again inside."""
    onnx = _onnx()
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise UsageError(f"--batch must be a whole number of 1 or more, not {batch!r}")
    graph = proto.graph
    params = set()
    for v in list(graph.input) + list(graph.output):
        dims = v.type.tensor_type.shape.dim
        if not dims:
            continue
        if dims[0].HasField("dim_param"):
            params.add(dims[0].dim_param)
        elif dims[0].HasField("dim_value") and dims[0].dim_value not in (0, batch):
            raise UsageError(f"the ONNX file's batch is fixed at {dims[0].dim_value}; it cannot be set to {batch}")
        dims[0].Clear()
        dims[0].dim_value = batch
    for v in graph.value_info:  # the same symbol anywhere inside is the same batch
        for d in v.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param in params:
                d.Clear()
                d.dim_value = batch
    inferred = onnx.shape_inference.infer_shapes(proto)
    del graph.value_info[:]
    graph.value_info.extend(inferred.graph.value_info)
    onnx.checker.check_model(proto)
    return proto


def onnx_batch(proto):
    """The fixed batch size of an ONNX ModelProto's input, or None when it is symbolic."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return int(dims[0].dim_value) if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None


def convert_to_ort(onnx_bytes: bytes, *, style: OrtStyle = OrtStyle.FIXED) -> bytes:
    """An ONNX model as ORT-format bytes, converted by ``convert_onnx_models_to_ort``
    (optimization level ``all`` without the x86-only NCHWc layout, as the tool does for
    phones). The edgeclf metadata in ``metadata_props`` survives the conversion."""
    from .._optional import require

    require("onnxruntime", purpose="ORT-format conversion")
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    style = OrtStyle(style)
    with tempfile.TemporaryDirectory(prefix="edgeclf-ort-") as tmp:
        src = Path(tmp) / "in" / "model.onnx"
        src.parent.mkdir()
        src.write_bytes(onnx_bytes)
        out = Path(tmp) / "out"
        try:
            with native_stderr_silenced(), contextlib.redirect_stdout(io.StringIO()):
                convert_onnx_models_to_ort(
                    src, output_dir=out,
                    optimization_styles=[OptimizationStyle.Runtime if style is OrtStyle.RUNTIME
                                         else OptimizationStyle.Fixed])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            first = first_line(exc)
            raise ExportError(f"ORT-format conversion ({style.value} optimizations) failed: {first}") from None
        made = sorted(out.glob("*.ort"))
        if len(made) != 1:
            raise ExportError(f"ORT-format conversion wrote {len(made)} .ort files, expected 1")
        return made[0].read_bytes()


def check_mobile_usability(onnx_bytes: bytes, *, name: str = "model.onnx") -> MobileUsability:
    """Which mobile execution providers can run an ONNX model, from ORT's own usability
    checker (``onnxruntime.tools.check_onnx_model_mobile_usability``): the model is
    optimized to the basic level first, as that tool does."""
    from .._optional import require

    require("onnxruntime", purpose="the ORT mobile usability check")
    from onnxruntime.tools.mobile_helpers import usability_checker as uc
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, is_fixed_size_tensor, optimize_model

    with tempfile.TemporaryDirectory(prefix="edgeclf-ortcheck-") as tmp:
        src, opt = Path(tmp) / "model.onnx", Path(tmp) / "optimized.onnx"
        src.write_bytes(onnx_bytes)
        try:
            with native_stderr_silenced(), contextlib.redirect_stdout(io.StringIO()):
                optimize_model(src, opt, use_external_initializers=True)
                model = ModelProtoWithShapeInfo(opt.resolve()).model_with_shape_info
                fixed = all(is_fixed_size_tensor(v) for v in list(model.graph.input) + list(model.graph.output))
                nnapi = uc.check_nnapi_partitions(model, require_fixed_input_sizes=True)
                ml = uc.check_coreml_partitions(model, True, "coreml_supported_mlprogram_ops.md")
                nn = uc.check_coreml_partitions(model, True, "coreml_supported_neuralnetwork_ops.md")
        except Exception as exc:
            first = first_line(exc)
            raise ExportError(f"{name}: ORT's mobile usability check failed: {first}") from None

    def verdict(info) -> str:
        return info.suitability().name.lower()

    return MobileUsability(
        file=name, fixed_shapes=fixed, nodes=int(nnapi.num_nodes),
        nnapi=verdict(nnapi), nnapi_nodes=int(nnapi.num_supported_nodes),
        coreml=verdict(ml), coreml_nodes=int(ml.num_supported_nodes),
        coreml_neuralnetwork=verdict(nn), coreml_neuralnetwork_nodes=int(nn.num_supported_nodes),
    )


def mobile_table(results) -> str:
    """The terminal table of ``MobileUsability`` results: verdict and nodes covered per provider."""
    from .._term import format_table

    rows = [[u.file, "yes" if u.fixed_shapes else "no", f"{u.nnapi} ({u.nnapi_nodes}/{u.nodes})",
             f"{u.coreml} ({u.coreml_nodes}/{u.nodes})"] for u in results]
    return format_table(["file", "fixed shapes", "NNAPI", "CoreML"], rows)
