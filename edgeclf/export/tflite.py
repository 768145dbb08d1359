"""Keras → TFLite at every precision edgeclf offers (post-training quantization and QAT)."""

from __future__ import annotations

import numpy as np

from .._quiet import native_stderr_silenced
from ..errors import ExportError, first_line
from ..runtime.spec import IOType, Precision
from .calibration import representative_dataset


def convert_tflite(model, precision: Precision, *, calibration: np.ndarray | None = None,
                   io: IOType = IOType.UINT8) -> bytes:
    """Convert a model to TFLite bytes: a tf_keras model (a QAT model for ``Precision.QAT``)
    or a ``keras_load.LoadedModel`` (Keras 3, tf_keras or SavedModel; traced in inference
    mode, so augmentation and Dropout are not in the file).

    ``io`` applies to the integer-io precisions (int8, int8-full, qat); int16x8 keeps
    float32 io, the float and dynamic-range files always take float32.

    ``Precision.INT8_FULL`` is every op int8. ``Precision.INT8``, the CPU file, is not one
    conversion but a measured choice: ``speed.convert_int8_cpu`` makes it (from this
    function's full-integer file when no layer is faster in float32).
    """
    from .._optional import import_tensorflow

    precision = Precision(precision)
    if precision is Precision.INT8:
        raise ValueError("the int8 file for CPUs is made by export.speed.convert_int8_cpu; "
                         "convert_tflite makes int8-full (every op int8)")
    tf = import_tensorflow()
    with native_stderr_silenced():
        converter = _converter(tf, model)
    if precision is Precision.FLOAT16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision is Precision.DYNAMIC:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision in (Precision.INT8_FULL, Precision.QAT):
        int8_settings(tf, converter, calibration if calibration is not None else np.zeros((0,)))
        converter.inference_input_type = converter.inference_output_type = io_dtype(tf, io)
    elif precision is Precision.INT16X8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(calibration if calibration is not None else np.zeros((0,)))
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    try:
        with native_stderr_silenced():
            data = bytes(converter.convert())
    except Exception as exc:  # the converter raises ConverterError, RuntimeError, ValueError...
        first = first_line(exc, 400)
        raise ExportError(f"TFLite conversion to {precision.value} failed: {first}") from None
    if precision is Precision.DYNAMIC:  # issue 15: XNNPACK runs no int8-weight depthwise conv; keep those float
        from .tflite_rewrite import float_depthwise_weights

        data = float_depthwise_weights(data)
    return data


def _converter(tf, model):
    from .keras_load import LoadedModel

    if isinstance(model, LoadedModel):
        # The frozen inference graph the loader made once: with variables left to the converter,
        # a nested Keras 3 model's weights came out as READ_VARIABLE ops that fail at run time,
        # and from_keras_model traces the model again for every file (11 s against 1 s per
        # conversion of a MobileNetV3 here).
        return tf.lite.TFLiteConverter.from_concrete_functions([model.concrete_function()])
    return tf.lite.TFLiteConverter.from_keras_model(model)


def tflite_op_names(model_bytes: bytes) -> list[str]:
    """The operator names in a TFLite flatbuffer (builtins by name, custom ops by code)."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(model_bytes, 0)
    out = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        if code == schema.BuiltinOperator.CUSTOM and oc.CustomCode():
            out.append(oc.CustomCode().decode("utf-8", "replace"))
        else:
            out.append(names.get(code, str(code)))
    return out


def tflite_input_quantization(model_bytes: bytes) -> tuple[str, float, int]:
    """(dtype name, scale, zero point) of the first input tensor."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(model_bytes, 0)
    g = model.Subgraphs(0)
    t = g.Tensors(g.Inputs(0))
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    q = t.Quantization()
    scale = float(q.Scale(0)) if q is not None and q.ScaleLength() else 0.0
    zp = int(q.ZeroPoint(0)) if q is not None and q.ZeroPointLength() else 0
    return types.get(t.Type(), str(t.Type())).lower(), scale, zp


def int8_settings(tf, converter, calibration: np.ndarray) -> None:
    """What every int8 TFLite conversion sets: the default optimizations, the calibration
    images as representative data, int8 builtins only."""
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset(calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]


def io_dtype(tf, io):
    """The TensorFlow dtype of a full-integer file's input and output."""
    return {IOType.UINT8: tf.uint8, IOType.INT8: tf.int8, IOType.FLOAT32: tf.float32}[IOType(io)]
