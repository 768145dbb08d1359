"""The Keras config allowlist on hand-written configs: classes, modules, file fields, paths."""

from __future__ import annotations

import pytest

from edgeclf.errors import ModelFileError
from edgeclf.export.safety import check_config
from edgeclf.export.safety.keras_config import LAYER_CLASSES, class_allowed, looks_like_path


def _layer(cls, name, config=None, **extra):
    return {"class_name": cls, "config": {"name": name, **(config or {})}, **extra}


def _model(*layers):
    return {"class_name": "Functional", "config": {"name": "m", "layers": list(layers)}}


def test_file_backed_layers_and_fields_are_refused_with_the_layer_name():
    for cls in ("StringLookup", "IntegerLookup", "TextVectorization", "Hashing"):
        with pytest.raises(ModelFileError, match=f"layer 'voc' is a {cls}, a lookup layer"):
            check_config(_model(_layer(cls, "voc", {"vocabulary": "/etc/passwd"}, module="keras.layers")), "x.keras")
    with pytest.raises(ModelFileError, match=r"layer 'd' \(Dense\) has a 'vocabulary' field"):
        check_config(_model(_layer("Dense", "d", {"units": 2, "vocabulary": ["a"]})), "x.h5")
    for path in ("/etc/passwd", "~/secret", "C:\\x", "file:///tmp/x", "https://example.com/v.txt", "a/b"):
        with pytest.raises(ModelFileError, match="which looks like a path or URL"):
            check_config(_model(_layer("Rescaling", "r", {"scale": 1.0, "note": [{"deep": path}]})), "x.keras")
    # names may hold anything: they are never opened
    check_config(_model(_layer("Dense", "block/dense", {"units": 2})), "ok.keras")


def test_custom_classes_are_refused_even_when_registered():
    with pytest.raises(ModelFileError, match="mypkg>Block, a custom class registered outside Keras"):
        check_config(_model(_layer("Block", "b", module=None, registered_name="mypkg>Block")), "x.keras")
    with pytest.raises(ModelFileError, match="os.system, which is not built into Keras"):
        check_config(_model(_layer("system", "b", module="os")), "x.keras")
    # a Keras module that exists but is not where layers live
    with pytest.raises(ModelFileError, match="keras.src.utils.file_utils.Dense, which is not built into Keras"):
        check_config(_model(_layer("Dense", "d", module="keras.src.utils.file_utils")), "x.keras")
    with pytest.raises(ModelFileError, match="names the function 'os.system', which is not a built-in activation"):
        check_config(_model(_layer("Dense", "d", {"activation": {"class_name": "function", "config": "os.system",
                                                                  "module": "keras.activations"}})), "x.keras")
    for fn in ("image.decode_png", "io.read_file", "strings.format", "py_function"):
        with pytest.raises(ModelFileError, match=f"calls the TensorFlow function '{fn}'"):
            check_config(_model(_layer("TFOpLambda", "t", {"function": fn})), "x.h5")


def test_what_image_classifiers_are_made_of_is_allowed():
    assert {"Conv2D", "DepthwiseConv2D", "BatchNormalization", "Normalization", "Rescaling", "Resizing",
            "RandomFlip", "GlobalAveragePooling2D", "Dense", "Functional", "Sequential"} <= LAYER_CLASSES
    assert class_allowed("TrueDivide", "keras.src.ops.numpy") and class_allowed("GetItem", "keras.src.ops.numpy")
    assert not class_allowed("Lambda") and not class_allowed("StringLookup")
    config = _model(
        _layer("InputLayer", "i", {"batch_shape": [None, 8, 8, 3]}, module="keras.layers"),
        _layer("TrueDivide", "t", module="keras.src.ops.numpy", registered_name="TrueDivide"),
        _layer("Conv2D", "c", {"filters": 4, "kernel_size": [3, 3], "padding": "same", "activation": "relu",
                               "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform",
                                                      "config": {"seed": None}},
                               "dtype": {"module": "keras", "class_name": "DTypePolicy",
                                         "config": {"name": "float32"}}}, module="keras.layers"),
        _layer("TFOpLambda", "tf", {"function": "math.truediv"}, module="tf_keras.src.layers"),
        _layer("Dense", "d", {"units": 3, "activation": {"module": "keras.activations", "class_name": "function",
                                                         "config": "softmax", "registered_name": "softmax"}}))
    check_config(config, "ok.keras")
    assert looks_like_path("/x") and not looks_like_path("channels_last") and not looks_like_path("math.truediv")
