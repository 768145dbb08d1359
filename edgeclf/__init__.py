"""edgeclf: from a folder of photos to a classifier on a phone or a Raspberry Pi.

``import edgeclf`` is cheap and never imports TensorFlow; the runtime API is reached lazily:

    >>> from edgeclf import load_classifier           # doctest: +SKIP
    >>> clf = load_classifier("model_int8.tflite")    # doctest: +SKIP
    >>> clf.predict("tulip.jpg")[0].label             # doctest: +SKIP
"""

from __future__ import annotations

from ._lazy import lazy_exports

__version__ = "0.1.0"

_LAZY = {
    "load_classifier": "edgeclf.runtime",
    "Classifier": "edgeclf.runtime",
    "load_image": "edgeclf.runtime.preprocess",
    "EdgeclfError": "edgeclf.errors",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
