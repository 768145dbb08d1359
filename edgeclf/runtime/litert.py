"""TFLite files on LiteRT (``ai_edge_litert.interpreter``), the TensorFlow-free interpreter.

Batches: a file converted with batch 1 is resized to the batch at hand when the graph allows
it (``resize_tensor_input`` + ``allocate_tensors``, checked by the output shape); a graph that
does not (a Reshape to a constant [1, K], say) is run image by image. Either way the caller
gets one row per image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._optional import require
from .._quiet import native_stderr_silenced
from ..errors import ModelFileError, first_line
from .backend import check_image_io, input_converter, output_converter
from .metadata import read_tflite_metadata


class LiteRTBackend:
    format = "tflite"

    def __init__(self, path: Path, data: bytes, *, threads: int):
        self.path = Path(path)
        self.threads = threads
        interpreter_mod = require("ai_edge_litert.interpreter", purpose="running TFLite files")
        try:
            # XNNPACK announces itself on fd 2 when the interpreter is created.
            with native_stderr_silenced():
                self._interp = interpreter_mod.Interpreter(model_content=data, num_threads=threads)
                self._interp.allocate_tensors()
        except (ValueError, RuntimeError, TypeError, OSError) as exc:
            raise ModelFileError(
                f"{self.path}: LiteRT cannot load this TFLite file ({first_line(exc)}); "
                "the file is damaged or truncated, or uses ops this LiteRT lacks; copy or export it again") from None
        self._data = data  # the interpreter reads from this buffer; keep it alive
        # Read only now: the interpreter has verified the flatbuffer the reader walks.
        self.metadata = read_tflite_metadata(data, source=str(self.path))
        inputs = self._interp.get_input_details()
        outputs = self._interp.get_output_details()
        check_image_io(self.path, len(inputs), len(outputs),
                       tuple(inputs[0]["shape"]) if inputs else (), tuple(outputs[0]["shape"]) if outputs else ())
        inp, out = inputs[0], outputs[0]
        sig = tuple(int(v) for v in inp.get("shape_signature", inp["shape"]))
        shape = tuple(int(v) for v in inp["shape"])
        out_shape = tuple(int(v) for v in out["shape"])
        self.input_shape = (None if sig[0] == -1 else sig[0],) + tuple(
            None if s == -1 else d for s, d in zip(sig[1:3], shape[1:3])) + (3,)
        self.input_dtype = np.dtype(inp["dtype"])
        self.num_outputs = out_shape[1]
        self.input_quantization = tuple(inp["quantization"])  # (scale, zero_point)
        self.output_quantization = tuple(out["quantization"])
        try:
            self._to_input = input_converter(self.input_dtype, *self.input_quantization)
            self._from_output = output_converter(out["dtype"], *self.output_quantization)
        except ValueError as exc:
            raise ModelFileError(f"{self.path}: {exc}") from None
        self._in_index = inp["index"]
        self._out_index = out["index"]
        self.output_op = self._producer(out["index"])
        self._hw = shape[1:3]
        self._batch = shape[0]
        self._resizable = True
        # A damaged file can pass the flatbuffer check and fail only when run ("Input tensor
        # lacks data"); one run on zeros here keeps that a load error, not a predict error.
        try:
            with native_stderr_silenced():
                self._run(np.zeros(shape, self.input_dtype))
        except (RuntimeError, ValueError) as exc:
            raise ModelFileError(f"{self.path}: LiteRT loads this TFLite file but cannot run it "
                                 f"({first_line(exc)}); the file is damaged; copy or export it again") from None

    def _producer(self, tensor_index: int):
        """Name of the op computing the output ('SOFTMAX', 'FULLY_CONNECTED', ...), or None.

        A full-integer file ends in QUANTIZE (or DEQUANTIZE with float I/O) after the real
        op; those only change the number format, so look through them."""
        try:
            ops = list(self._interp._get_ops_details())
            for _ in range(len(ops)):
                op = next((o for o in ops if tensor_index in list(o["outputs"])), None)
                if op is None:
                    return None
                if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE") or len(op["inputs"]) != 1:
                    return op["op_name"]
                tensor_index = int(op["inputs"][0])
        except (AttributeError, KeyError, RuntimeError, ValueError, TypeError):  # private API: best effort
            pass
        return None

    def _resize(self, n: int) -> bool:
        """Make the interpreter take a batch of ``n``; False when the graph refuses."""
        if n == self._batch:
            return True
        try:
            # A graph that cannot take the batch logs its failing op on fd 2 before raising.
            with native_stderr_silenced():
                self._interp.resize_tensor_input(self._in_index, [n, *self._hw, 3])
                self._interp.allocate_tensors()
            ok = int(self._interp.get_output_details()[0]["shape"][0]) == n
        except (RuntimeError, ValueError):
            ok = False
        if ok:
            self._batch = n
            return True
        self._interp.resize_tensor_input(self._in_index, [1, *self._hw, 3])
        self._interp.allocate_tensors()
        self._batch = 1
        return False

    def _run(self, x: np.ndarray) -> np.ndarray:
        self._interp.set_tensor(self._in_index, x)
        self._interp.invoke()
        return self._interp.get_tensor(self._out_index)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self._predict(batch)
        except (RuntimeError, ValueError) as exc:
            raise ModelFileError(f"{self.path}: LiteRT failed to run this file on {batch.shape[0]} image"
                                 f"{'' if batch.shape[0] == 1 else 's'} ({first_line(exc)}); export it again") from None

    def _predict(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        x = self._to_input(batch)
        if n == self._batch or (self._resizable and self._resize(n)):
            return self._from_output(self._run(x))
        self._resizable = False
        if self._batch != 1:
            self._resize(1)
        return self._from_output(np.concatenate([self._run(x[i:i + 1]) for i in range(n)]))

