"""The Keras model as the reference of a comparison (imports TensorFlow; only when used).

The model is loaded through ``edgeclf.export.source.load_keras_model``: the same loader, with
the same safety checks, as the export itself.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..runtime.layout import RunDir
from ..runtime.spec import InputRange, ModelSpec, OutputKind
from .compare import ImageSet, ModelOutput, align_columns, predict_all

log = logging.getLogger(__name__)


def keras_available() -> bool:
    """True when the train extra (TensorFlow and tf_keras) is installed; nothing is imported."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "tf_keras"))


def keras_reference(model_path, images: ImageSet, labels: Sequence[str], *, spec: Optional[ModelSpec] = None,
                    threads: Optional[int] = None, latency_runs: int = 50, latency_seconds: float = 1.0,
                    input_range=None, output_kind=None) -> ModelOutput:
    """A Keras model's probabilities on ``images`` as a comparison's reference.

    Args:
        model_path: a run directory (its ``model.keras`` and spec are used) or a Keras model
            file / SavedModel folder (its labels are taken to be ``labels``, in that order).
        images, labels: the comparison's images and class names.
        spec: the model's spec when known (a run's); else read from the run or inferred.
        threads: TensorFlow's intra-op threads, the same count the files get (ignored once
            TensorFlow has run an op in this process).
        input_range, output_kind: what a model that is not a run takes and gives, as
            ``edgeclf export`` was told (``--input-range``, ``--output-kind``); default: inferred.
    """
    from .._optional import import_tensorflow
    from ..export.source import load_keras_model
    from ..runtime.classifier import to_probabilities
    from ..runtime.latency import measure_latency

    path = Path(model_path)
    if RunDir.is_run(path):
        run = RunDir(path)
        spec = spec or run.spec()
        path = run.model_path
    log.info(f"reference: the Keras model {path} (loading TensorFlow)")
    tf = import_tensorflow()  # before the clock: load time is the model's, not TensorFlow's import
    if threads is not None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            threads = None
    t0 = time.perf_counter_ns()
    # A run's model takes 0..255 pixels and its spec says what it outputs; any other model is
    # inspected by the loader (which also refuses code hidden in the file).
    stated = {} if spec is None else {"input_range": InputRange.PIXELS, "output_kind": spec.output_kind}
    if input_range is not None:
        stated["input_range"] = input_range
    if output_kind is not None:
        stated["output_kind"] = output_kind
    model = load_keras_model(path, **stated)
    load_ms = (time.perf_counter_ns() - t0) / 1e6
    if spec is None:
        spec = ModelSpec(labels=tuple(labels), input_size=model.input_size, output_kind=model.output_kind)
    kind = OutputKind(model.output_kind)
    batch = images.batch(spec.input_size, spec.resize_method)

    def proba(x):
        return to_probabilities(model.predict(x.astype(np.float32)), kind)

    probs = align_columns(predict_all(proba, batch, label=f"{path.name:<24}"), spec.labels, labels, name=str(path))
    latency = None
    if len(batch) and latency_runs:
        one = batch[:1]
        latency = measure_latency(lambda: proba(one), warmup=3, runs=latency_runs, seconds=latency_seconds)
    size = path.stat().st_size if path.is_file() else None
    return ModelOutput(path=str(path), format="keras", precision="float32", size_bytes=size, threads=threads,
                       input_size=tuple(spec.input_size), load_ms=load_ms, latency=latency, memory=None, probs=probs)
