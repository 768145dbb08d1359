"""edgeclf: from a folder of photos to a classifier on a phone or a Raspberry Pi.

``import edgeclf`` is cheap and never imports TensorFlow; the runtime API is reached lazily:

    >>> from edgeclf import load_classifier           # doctest: +SKIP
    >>> clf = load_classifier("model_int8.tflite")    # doctest: +SKIP
    >>> clf.predict("tulip.jpg")[0].label             # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "load_classifier": "edgeclf.runtime",
    "Classifier": "edgeclf.runtime",
    "load_image": "edgeclf.runtime.preprocess",
    "EdgeclfError": "edgeclf.errors",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgeclf' has no attribute {name!r}")
