"""edgeclf.export: post-training quantization, QAT, TFLite and ONNX conversion, metadata, golden files.

    >>> from edgeclf.export import export_model                          # doctest: +SKIP
    >>> report = export_model("runs/cnn", "export/cnn")                   # doctest: +SKIP
    >>> print(report.table())                                             # doctest: +SKIP

TensorFlow is imported only when a conversion runs, never by importing this package.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "export_model": "edgeclf.export.exporter",
    "ExportReport": "edgeclf.export.exporter",
    "ExportedFile": "edgeclf.export.exporter",
    "load_keras_model": "edgeclf.export.keras_load",
    "LoadedModel": "edgeclf.export.keras_load",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
