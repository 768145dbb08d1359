"""edgeclf.train: the model zoo (a registry), the trainer and its plots.

Importing this package (or ``edgeclf.train.zoo``, the registry) loads no TensorFlow;
``train_model`` and ``build_model`` import it when called.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "MODELS": "edgeclf.train.zoo",
    "BuiltModel": "edgeclf.train.zoo",
    "build_model": "edgeclf.train.zoo",
    "register_model": "edgeclf.train.zoo",
    "TrainConfig": "edgeclf.train.trainer",
    "TrainResult": "edgeclf.train.trainer",
    "train_model": "edgeclf.train.trainer",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
