"""edgeclf.runtime: run exported classifiers without TensorFlow.

Imports only the standard library, numpy and Pillow; the engine for a file
(``ai_edge_litert`` for ``.tflite``, ``onnxruntime`` for ``.onnx``) is imported when a file
of that kind is loaded.

    >>> from edgeclf.runtime import load_classifier          # doctest: +SKIP
    >>> clf = load_classifier("model_int8.tflite")           # doctest: +SKIP
    >>> clf.predict("tulip.jpg")[0].sentence()                # doctest: +SKIP
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "load_classifier": "edgeclf.runtime.classifier",
    "Classifier": "edgeclf.runtime.classifier",
    "Prediction": "edgeclf.runtime.classifier",
    "ModelSpec": "edgeclf.runtime.spec",
    "OutputKind": "edgeclf.runtime.spec",
    "load_image": "edgeclf.runtime.preprocess",
    "verify_golden": "edgeclf.runtime.verify",
    "open_source": "edgeclf.runtime.frames",
    "Frame": "edgeclf.runtime.frames",
    "FolderSource": "edgeclf.runtime.frames",
    "VideoSource": "edgeclf.runtime.frames",
    "FrameStream": "edgeclf.runtime.stream",
    "FrameResult": "edgeclf.runtime.stream",
    "StreamSummary": "edgeclf.runtime.stream",
    "GoldenReport": "edgeclf.runtime.verify",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
