"""edgeclf.evaluate: host-side evaluation built on the runtime: compare many files on one
labelled dataset (against a float32 file or the Keras model), reports and plots, latency runs.

    >>> from edgeclf.evaluate import compare_files                              # doctest: +SKIP
    >>> cmp = compare_files(["export/a"], data="runs/a", min_agreement=0.98)     # doctest: +SKIP
    >>> cmp.passed                                                               # doctest: +SKIP

The device needs none of it: ``edgeclf.runtime`` never imports this package.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "compare_files": "edgeclf.evaluate.service",
    "compare_models": "edgeclf.evaluate.compare",
    "Comparison": "edgeclf.evaluate.compare",
    "ModelResult": "edgeclf.evaluate.compare",
    "ImageSet": "edgeclf.evaluate.compare",
    "load_eval_data": "edgeclf.evaluate.compare",
    "keras_reference": "edgeclf.evaluate.reference",
    "write_report": "edgeclf.evaluate.report",
    "bench_one": "edgeclf.evaluate.bench",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
