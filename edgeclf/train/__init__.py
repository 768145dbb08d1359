"""edgeclf.train: the model zoo, the trainer and its plots.

``train_model`` and ``build_model`` import TensorFlow only when called; the names below are
imported on first use, so ``edgeclf.train.zoo`` (the CLI reads its model names) stays light.
"""

from __future__ import annotations

import importlib

_WHERE = {"TrainConfig": "trainer", "TrainResult": "trainer", "train_model": "trainer",
          "MODELS": "zoo", "BuiltModel": "zoo", "build_model": "zoo"}

__all__ = ["MODELS", "BuiltModel", "TrainConfig", "TrainResult", "build_model", "train_model"]


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
