"""ONNX and ORT-format files on ONNX Runtime (CPU execution provider).

A file whose batch dimension is symbolic runs the whole batch in one call; a file fixed at
batch 1 runs image by image, and so does a dynamically quantized file: its
DynamicQuantizeLinear picks one activation scale for the whole input tensor, so an image's
probabilities would otherwise depend on which other images share its batch. QDQ and dynamically quantized files take float input and give
float output, so they need no conversion here; integer inputs or outputs would be converted
the same way as in LiteRT if a file declared them.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from .._optional import require
from .._quiet import native_stderr_silenced
from ..errors import ModelFileError, first_line
from .backend import check_image_io, input_converter, output_converter
from .metadata import read_onnx_metadata

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
}


def _engine_errors(ort) -> tuple[type[BaseException], ...]:
    """ONNX Runtime's load failures are its own exception types (InvalidProtobuf, Fail, ...)."""
    state = getattr(getattr(ort, "capi", None), "onnxruntime_pybind11_state", None)
    own = tuple(v for v in vars(state).values()
                if isinstance(v, type) and issubclass(v, Exception)) if state else ()
    return own + (RuntimeError, ValueError, TypeError, OSError)


def _dim(d):
    return d if isinstance(d, int) and d > 0 else None


class OnnxRuntimeBackend:
    format = "onnx"

    def __init__(self, path: Path, data: bytes, *, threads: int):
        self.path = Path(path)
        self.threads = threads
        self.format = "ort" if data[4:8] == b"ORTM" else "onnx"  # ORT format loads the same way
        ort = require("onnxruntime", purpose="running ONNX files")
        self._errors = _engine_errors(ort)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only; ORT's warnings would reach the user's terminal
        # x86 CPUs without VNNI multiply uint8 x int8 with a saturating 16-bit instruction
        # (PMADDUBSW), so a quantized file's results would depend on the CPU. This makes ORT use
        # its exact uint8 x uint8 kernels there; it changes nothing on VNNI or ARM CPUs.
        opts.add_session_config_entry("session.x64quantprecision", "1")
        try:
            # On a failed load ORT's Python layer prints an "EP Error ... retrying" banner on
            # stdout, where it would corrupt `predict --json`; the error itself still comes here.
            with native_stderr_silenced(), contextlib.redirect_stdout(io.StringIO()):
                self._session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
            custom = dict(self._session.get_modelmeta().custom_metadata_map or {})
        except _engine_errors(ort) as exc:
            raise ModelFileError(
                f"{self.path}: ONNX Runtime cannot load this file ({first_line(exc)}); "
                "the file is damaged or truncated, not ONNX, or uses ops this runtime lacks; copy or export it again") from None
        self.metadata = read_onnx_metadata(custom, source=str(self.path))
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        check_image_io(self.path, len(inputs), len(outputs),
                       list(inputs[0].shape) if inputs else [], list(outputs[0].shape) if outputs else [])
        inp, out = inputs[0], outputs[0]
        shape = list(inp.shape)
        out_shape = list(out.shape)
        if _dim(out_shape[1]) is None:
            raise ModelFileError(f"{self.path}: output shape {out_shape} is not (N, classes)")
        if inp.type not in _ORT_TYPES or out.type not in _ORT_TYPES:
            raise ModelFileError(f"{self.path}: input type {inp.type} / output type {out.type} is not supported")
        self.input_shape = (_dim(shape[0]), _dim(shape[1]), _dim(shape[2]), 3)
        self.input_dtype = np.dtype(_ORT_TYPES[inp.type])
        if self.input_dtype == np.int8:
            # ONNX keeps no scale or zero point on a graph input: pixels 128..255 would clip.
            raise ModelFileError(f"{self.path}: the image input is int8 without a scale, which cannot hold "
                                 "pixels 0..255; export it with a float32 or uint8 input")
        self.num_outputs = int(out_shape[1])
        try:
            # An integer input without a recorded scale takes raw pixels (scale 1, zero point 0).
            self._to_input = input_converter(self.input_dtype, 1.0, 0)
            self._from_output = output_converter(_ORT_TYPES[out.type], 1.0, 0)
        except ValueError as exc:
            raise ModelFileError(f"{self.path}: {exc}") from None
        self._in_name = inp.name
        self._out_names = [out.name]
        self._one_by_one = self.input_shape[0] == 1 or b"DynamicQuantizeLinear" in data
        # One run on zeros: a file that loads but cannot run fails here, as a load error.
        if None not in self.input_shape[1:3]:
            try:
                with native_stderr_silenced():
                    self._run(np.zeros((1, *self.input_shape[1:]), self.input_dtype))
            except _engine_errors(ort) as exc:
                raise ModelFileError(f"{self.path}: ONNX Runtime loads this file but cannot run it "
                                     f"({first_line(exc)}); the file is damaged; copy or export it again") from None

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self._session.run(self._out_names, {self._in_name: x})[0]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        x = self._to_input(batch)
        try:
            if self._one_by_one and x.shape[0] != 1:
                return self._from_output(np.concatenate([self._run(x[i:i + 1]) for i in range(x.shape[0])]))
            return self._from_output(self._run(x))
        except self._errors as exc:
            raise ModelFileError(f"{self.path}: ONNX Runtime failed to run this file on {x.shape[0]} image"
                                 f"{'' if x.shape[0] == 1 else 's'} of shape {list(x.shape[1:])} "
                                 f"({first_line(exc)}); the file does not take what it declares; export it "
                                 "again") from None

