"""Lazy package attributes (PEP 562), so ``import edgeclf.runtime`` loads no engine and
``import edgeclf.export`` no TensorFlow until a name is used. Standard library only."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, names: dict[str, str], namespace: dict):
    """Return ``(__getattr__, __dir__)`` for a package whose ``names`` map to submodules."""

    def __getattr__(name):
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            namespace[name] = value  # cache: later look-ups skip __getattr__
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
