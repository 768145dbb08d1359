"""``compare_files``: the whole comparison a user asks for, from paths to a ``Comparison``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

from ..errors import UsageError
from ..runtime.layout import RunDir
from ..runtime.metrics import validate_thresholds
from .compare import Comparison, ImageSet, compare_models, expand_models, load_eval_data

log = logging.getLogger(__name__)

KERAS_REFERENCE = "keras"


def compare_files(models: Sequence, *, data, reference=None, threads: Optional[int] = None,
                  max_accuracy_drop: Optional[float] = None, min_agreement: Optional[float] = None,
                  labels: Optional[Sequence[str]] = None, latency_runs: Optional[int] = 50,
                  latency_seconds: Optional[float] = 1.0, input_range=None, output_kind=None) -> Comparison:
    """Measure every model file against one reference on the same labelled images.

    Args:
        models: model files (.tflite/.onnx) or export directories.
        data: a class-folder directory, or a run directory (its validation split).
        reference: a model file, a Keras model (file or SavedModel), ``"keras"`` for the run's
            Keras model, or None: the run's Keras model when ``data`` is a run and TensorFlow is
            installed, else the float32 file among ``models``.
        threads: engine threads for every file (and for TensorFlow's reference).
        max_accuracy_drop, min_agreement: the gates (points; fraction).
        labels: labels for files without edgeclf metadata (they replace embedded ones).
        input_range, output_kind: what a Keras reference takes and gives, as ``edgeclf export``
            was told; default: what the export.json of an export directory among ``models``
            says when the reference is that export's source (same sha256), else inferred.

    Returns:
        A frozen ``Comparison``; ``passed`` is False when a file failed a gate.
    """
    from .reference import keras_available, keras_reference

    if threads is not None and threads < 1:
        from ..errors import OptionError

        raise OptionError("threads", f"must be at least 1; got {threads}")
    validate_thresholds(max_accuracy_drop, min_agreement)
    if (input_range is not None or output_kind is not None) and not _is_keras_file(reference):
        raise UsageError("--input-range and --output-kind describe a Keras model given as --reference FILE "
                         "(.keras, .h5 or a SavedModel folder); give one, or leave them out")
    paths = expand_models(models)
    ev = load_eval_data(data)
    for path, reason in ev.ignored:
        log.info(f"skipped {path}: {reason}")
    images = ImageSet(ev.sources, ev.y)
    ref = reference
    run_has_model = ev.kind == "run" and RunDir.is_run(ev.root)
    if reference == KERAS_REFERENCE or (reference is None and run_has_model and keras_available()):
        if not run_has_model:
            raise UsageError(f"reference 'keras' needs the data to be a run directory with {RunDir.MODEL}")
        ref = keras_reference(ev.root, images, ev.labels, threads=threads)
    elif reference is not None:
        rp = Path(reference)
        if not rp.exists():
            raise UsageError(f"reference model {reference} does not exist; give a model file or 'keras'")
        if rp.is_dir() or rp.suffix.lower() not in (".tflite", ".onnx"):
            # a Keras model or SavedModel: the same loader (and safety checks) as export
            stated = source_options(rp, models)
            if input_range is not None:
                stated["input_range"] = input_range
            if output_kind is not None:
                stated["output_kind"] = output_kind
            ref = keras_reference(rp, images, ev.labels, threads=threads, **stated)
    cmp = compare_models(paths, images, ev.labels, reference=ref, threads=threads,
                         max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement, data=str(ev.root),
                         model_labels=None if labels is None else tuple(labels), latency_runs=latency_runs,
                         latency_seconds=latency_seconds)
    for path, reason in cmp.skipped:
        log.info(f"skipped {path}: {reason}")
    if not cmp.sources:
        raise UsageError(f"no readable images in {ev.root}")
    return cmp


def _is_keras_file(reference) -> bool:
    if reference is None or reference == KERAS_REFERENCE:
        return False
    p = Path(reference)
    return p.is_dir() or p.suffix.lower() not in (".tflite", ".onnx", ".ort")


def source_options(reference: Path, models: Sequence) -> dict:
    """``input_range`` / ``output_kind`` of ``reference`` as an export of it recorded them:
    from the export.json of an export directory among ``models`` whose source has the
    reference's sha256 ({} when none does)."""
    import json

    from ..runtime.layout import ExportDir
    from ..runtime.metadata import file_sha256

    if not reference.is_file():
        return {}
    sha = None
    for m in models:
        report = Path(m) / ExportDir.REPORT
        if not report.is_file():
            continue
        try:
            d = json.loads(report.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(d, dict) or not d.get("source_sha256"):
            continue
        sha = sha or file_sha256(reference)
        if d["source_sha256"] == sha:
            found = {}
            if isinstance(d.get("input_range"), str):
                found["input_range"] = d["input_range"]
            if isinstance(d.get("source_output_kind"), str) and d["source_output_kind"]:
                found["output_kind"] = d["source_output_kind"]
            if found:
                log.info(f"reference {reference.name}: {', '.join(f'{k} {v}' for k, v in found.items())} "
                         f"(from {report})")
            return found
    return {}
