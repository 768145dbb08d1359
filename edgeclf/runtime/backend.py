"""The one small protocol every engine implements, the table that picks one by file suffix,
and the quantization arithmetic they share.

A backend loads one model file, says what input it takes (``input_shape``, ``num_outputs``)
and what the file says about itself (``metadata``), and runs ``predict(batch)`` on a uint8
NHWC batch, returning the model's raw output as float32: quantized inputs and outputs are
converted here, so nothing above this layer ever sees an integer tensor.
"""

from __future__ import annotations

import importlib
import os
import stat
from pathlib import Path
from typing import Optional, Protocol

import numpy as np

from ..errors import ModelFileError, UsageError
from .metadata import sniff_format
from .spec import ModelSpec

# suffix -> (format name, "module:class"). The engine module is imported only when a file
# of its kind is loaded, so importing edgeclf.runtime never loads an engine.
BACKENDS: dict[str, tuple[str, str]] = {
    ".tflite": ("tflite", "edgeclf.runtime.litert:LiteRTBackend"),
    ".onnx": ("onnx", "edgeclf.runtime.onnxrt:OnnxRuntimeBackend"),
    ".ort": ("ort", "edgeclf.runtime.onnxrt:OnnxRuntimeBackend"),  # ORT format (ONNX Runtime Mobile)
}

_SUFFIX_OF = {fmt: suffix for suffix, (fmt, _) in BACKENDS.items()}
_ENGINE_MODULES = {".tflite": "ai_edge_litert.interpreter", ".onnx": "onnxruntime", ".ort": "onnxruntime"}


def import_engine(path) -> None:
    """Import the engine for ``path``'s suffix now, so that a timed load that follows
    measures loading the file, not importing the engine (a one-off of 100+ ms)."""
    module = _ENGINE_MODULES.get(Path(path).suffix.lower())
    if module is not None:
        try:
            importlib.import_module(module)
        except ImportError:
            pass  # the load that follows says which package to install
_FORMAT_NAME = {"tflite": "a TFLite", "onnx": "an ONNX", "ort": "an ORT-format"}


class Backend(Protocol):
    format: str
    path: Path
    threads: int
    metadata: Optional[ModelSpec]  # None when the file carries no edgeclf metadata
    input_shape: tuple  # (batch or None, height or None, width or None, 3)
    input_dtype: np.dtype
    num_outputs: int

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Raw model output for a uint8 (N, H, W, 3) batch, as float32 (N, num_outputs)."""
        ...


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """Real values to a quantized integer tensor: round to nearest (halves away from zero,
    as TFLite's own Quantize kernel does), then clip to the dtype's range."""
    info = np.iinfo(dtype)
    v = np.asarray(x, np.float32) / np.float32(scale)
    q = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """A quantized tensor back to float32 real values."""
    return ((q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32, copy=False)


def input_converter(dtype, scale: float, zero_point: int):
    """A function turning a uint8 pixel batch into what the model's input tensor takes
    (given anything but uint8, the integer path would index out of its table)."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8 and (scale == 0.0 or (scale == 1.0 and zero_point == 0)):
        return lambda x: x  # raw pixels already are the tensor: no copy at all
    if dtype.kind == "f":
        return lambda x: x.astype(dtype)
    if dtype.kind in "iu":
        if scale == 0.0:
            raise ValueError(f"integer input of type {dtype} without quantization parameters")
        # Pixels take only 256 values: quantize those once and look them up, ~15x faster
        # than the arithmetic on a 224x224 image.
        table = quantize(np.arange(256), scale, zero_point, dtype)
        return lambda x: np.take(table, x)
    raise ValueError(f"input tensor of type {dtype} is not an image input")


def output_converter(dtype, scale: float, zero_point: int):
    """A function turning the model's output tensor into float32 values."""
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return lambda y: y
    if dtype.kind == "f":
        return lambda y: y.astype(np.float32)
    if dtype.kind in "iu":
        if scale == 0.0:
            raise ValueError(f"integer output of type {dtype} without quantization parameters")
        return lambda y: dequantize(y, scale, zero_point)
    raise ValueError(f"output tensor of type {dtype} is not a score output")


def check_image_io(path, n_inputs: int, n_outputs: int, in_shape, out_shape) -> None:
    """The one shape every edgeclf backend runs: one NHWC RGB input, one (N, classes) output."""
    if n_inputs != 1 or n_outputs < 1:
        raise ModelFileError(f"{path}: expected one image input and one output; the file has "
                             f"{n_inputs} inputs and {n_outputs} outputs")
    if len(in_shape) != 4 or in_shape[3] != 3:
        raise ModelFileError(f"{path}: input shape {list(in_shape)} is not NHWC with 3 colour channels; "
                             "edgeclf runs image classifiers that take (N, H, W, 3)")
    if len(out_shape) != 2:
        raise ModelFileError(f"{path}: output shape {list(out_shape)} is not (N, classes)")


# No valid single .tflite (flatbuffer) or .onnx (protobuf) file exceeds 2 GiB; reading stops there,
# so a link to /dev/zero or a huge wrong file cannot exhaust memory.
MAX_MODEL_BYTES = 2 << 30
# More engine threads than this only oversubscribes; far more crashes or hangs the engines.
MAX_THREADS = 256


def threads_arg(threads) -> int:
    """A thread count checked for the engines: a whole number from 1 to ``MAX_THREADS``."""
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or not 1 <= threads <= MAX_THREADS:
        raise UsageError(f"threads must be a whole number from 1 to {MAX_THREADS}; got {threads!r}")
    return int(threads)


def read_model_bytes(path: Path, *, limit: int = MAX_MODEL_BYTES) -> bytes:
    """The bytes of a model file: a regular file only (never a FIFO, device or socket, which
    could block or never end), at most ``limit`` bytes."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; the type is checked on the open file.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ModelFileError(f"model file not found: {path}") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path} is a directory; give the model file inside it") from None
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path} ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ModelFileError(f"{path} is a directory; give the model file inside it")
        if not stat.S_ISREG(st.st_mode):
            raise ModelFileError(f"{path} is not a regular file (a pipe, device or socket); "
                                 "give the model file itself")
        if st.st_size > limit:
            raise ModelFileError(f"{path}: {st.st_size:,} bytes is over the {limit:,}-byte limit of a model "
                                 "file; this is not a .tflite or .onnx model")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path} ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(data) > limit:  # it grew while being read
        raise ModelFileError(f"{path}: over the {limit:,}-byte limit of a model file; this is not a model")
    if not data:
        raise ModelFileError(f"{path}: empty file (0 bytes); copy or export the model again")
    return data


def check_rows(path, raw: np.ndarray, n: int, num_outputs: int) -> np.ndarray:
    """The engine's output must hold one row of ``num_outputs`` scores per input image; a file
    whose graph says otherwise would hand one image another image's scores."""
    raw = np.asarray(raw)
    if raw.ndim != 2 or raw.shape[0] != n or raw.shape[1] != num_outputs:
        raise ModelFileError(f"{path}: the model returned output of shape {list(raw.shape)} for {n} image"
                             f"{'' if n == 1 else 's'} (expected [{n}, {num_outputs}]); its graph does not keep "
                             "one row per image; export it again with edgeclf export")
    return raw


def load_backend(path, *, threads: int) -> Backend:
    """Open ``path`` with the engine its suffix names, after checking that the content
    really is that format."""
    path = Path(path)
    threads = threads_arg(threads)
    if path.is_dir():
        raise ModelFileError(f"{path} is a directory; give the .tflite or .onnx file inside it")
    suffix = path.suffix.lower()
    if suffix not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise ModelFileError(f"{path}: unknown model file type {suffix or '(no suffix)'!r}; "
                             f"edgeclf runs: {known}")
    fmt, target = BACKENDS[suffix]
    data = read_model_bytes(path)
    actual = sniff_format(data)
    if actual is not None and actual != fmt:
        raise ModelFileError(
            f"{path}: this is {_FORMAT_NAME[actual]} model named {suffix}; "
            f"rename it to {path.with_suffix(_SUFFIX_OF[actual]).name}")
    if actual is None and fmt == "tflite":
        raise ModelFileError(f"{path}: not a TFLite model (no TFL3 identifier at byte 4); the file is "
                             "damaged or is something else; copy or export it again")
    module_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(path, data, threads=threads)
