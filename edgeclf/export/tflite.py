"""Keras → TFLite at every precision edgeclf offers (post-training quantization and QAT)."""

from __future__ import annotations

import numpy as np

from .._quiet import native_stderr_silenced
from ..errors import ExportError, UsageError, first_line
from ..runtime.spec import IOType, Precision


def representative_dataset(images: np.ndarray):
    """Calibration batches of one image each, as float32 0..255.

    The first image gets one pixel at 0 and one at 255, so the calibrated input range is
    exactly 0..255 and a uint8 input quantizes with scale 1, zero point 0: the file then
    takes raw pixels, as its metadata says.
    """
    if len(images) == 0:
        raise UsageError("this precision needs calibration images; give --calibration DATA or --data DATA")

    def gen():
        for i in range(len(images)):
            x = images[i : i + 1].astype(np.float32)
            if i == 0:
                x = x.copy()
                x[0, 0, 0, 0] = 0.0
                x[0, 0, 0, 1] = 255.0
            yield [x]

    return gen


def convert_tflite(model, precision: Precision, *, calibration: np.ndarray | None = None,
                   io: IOType = IOType.UINT8) -> bytes:
    """Convert a model to TFLite bytes: a tf_keras model (a QAT model for ``Precision.QAT``)
    or a ``keras_load.LoadedModel`` (Keras 3, tf_keras or SavedModel; traced in inference
    mode, so augmentation and Dropout are not in the file).

    ``io`` applies to the full-integer precisions (int8, qat); int16x8 keeps float32 io,
    the float and dynamic-range files always take float32.
    """
    from .._optional import import_tensorflow

    tf = import_tensorflow()
    precision = Precision(precision)
    with native_stderr_silenced():
        converter = _converter(tf, model)
    if precision is Precision.FLOAT16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision is Precision.DYNAMIC:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision in (Precision.INT8, Precision.QAT):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(calibration if calibration is not None else np.zeros((0,)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtype = {IOType.UINT8: tf.uint8, IOType.INT8: tf.int8, IOType.FLOAT32: tf.float32}[IOType(io)]
        converter.inference_input_type = dtype
        converter.inference_output_type = dtype
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
        if model.is_tf_keras and not model.needs_wrap:
            return tf.lite.TFLiteConverter.from_keras_model(model.keras_model)
        # Frozen first: with variables left to the converter, a nested Keras 3 model's weights
        # came out as READ_VARIABLE ops that fail at run time.
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


def convert_int8_float_first_conv(model, calibration: np.ndarray) -> bytes:
    """An int8 TFLite file whose first convolution stays float32 (an experiment for issue 15).

    Why: int8 convolution kernels (XNNPACK on x86 and ARM) pad the input channels of each
    kernel tap up to their dot-product width (4 to 64 bytes), so a first layer over 3 colour
    channels wastes most of its arithmetic: on tutorial_cnn at 180 px it took 64% of the int8
    file's time and 3.6x the float32 layer's (``benchmarks/op_profile.py``). Keeping that one
    layer float32 (input dequantized, output quantized) made the file 0.45x float32 instead of
    0.81x on an AMX/VNNI Xeon. The file is no longer full-integer, so integer-only
    accelerators (Edge TPU, microcontrollers) cannot take it whole; that is why this is not
    what ``Precision.INT8`` exports. Its input and output are float32 (pixels 0..255 in,
    the model's output out), like the float files'.
    """
    from .._optional import import_tensorflow
    from .tflite_rewrite import first_conv_output_name

    tf = import_tensorflow()
    first = first_conv_output_name(convert_tflite(model, Precision.FLOAT32))
    if first is None:
        return convert_tflite(model, Precision.INT8, calibration=calibration)
    with native_stderr_silenced():
        converter = _converter(tf, model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset(calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    converter._experimental_calibrate_only = True  # float model + calibration ranges
    try:
        from tensorflow.lite.python import convert as tflite_convert  # the quantizer with a deny-list

        with native_stderr_silenced():
            calibrated = converter.convert()
            # Float input straight into the float convolution (no dequantize), float output.
            return bytes(tflite_convert.mlir_quantize(calibrated, fully_quantize=False, input_data_type=tf.float32,
                                                      output_data_type=tf.float32, denylisted_nodes=[first]))
    except Exception as exc:  # the converter raises anything
        raise ExportError(f"int8 conversion with a float first convolution failed: {first_line(exc)}") from None
