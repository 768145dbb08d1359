"""``run_job``: the main job (data, train, export, compare) as one library call.

It sits above ``data``, ``train``, ``export`` and ``evaluate`` and calls each through its public
function; ``edgeclf run`` only parses options, calls it and prints what it returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ._term import info
from .errors import OptionError
from .runtime.layout import JobDir
from .runtime.spec import MAX_EPOCHS

# Chosen so that the whole job fits in a few minutes on 2 CPU cores (measured 2 min 33 s to 8 min
# on shared 2-core machines: docs/figures.md, "The main job").
RUN_DEFAULTS = {"classes": 5, "per_class": 600, "image_size": 64, "epochs": 20}


@dataclass(frozen=True)
class JobReport:
    """What ``run_job`` made: where, the export and comparison results, and how long each step took."""

    root: Path
    export: object  # export.results.ExportReport
    comparison: object  # evaluate.compare.Comparison
    timings: tuple[tuple[str, float], ...]

    @property
    def passed(self) -> bool:
        return bool(self.comparison.passed) and not self.export.failed

    def timing_line(self) -> str:
        total = sum(sec for _, sec in self.timings)
        return "; ".join(f"{name} {sec:.0f}s" for name, sec in self.timings) + f"; total {total:.0f}s"


def check_job_options(*, model: str, epochs: int, per_class: int) -> None:
    """Refuse options that make no sense before anything is generated or written."""
    from .train.zoo import MODELS  # the registry only: no TensorFlow

    if model not in MODELS:
        raise OptionError("model", f"{model!r} is not a model edgeclf knows; choose from: {', '.join(MODELS)}")
    if not 1 <= epochs <= MAX_EPOCHS:
        raise OptionError("epochs", f"must be from 1 to {MAX_EPOCHS}; got {epochs}")
    if not 2 <= per_class <= 100_000:
        raise OptionError("per_class", f"must be from 2 to 100000; got {per_class}")


def _claim(root: Path, overwrite: bool, data) -> bool:
    """Take ``root`` for the job; True when it resumes a job that did not finish."""
    from ._io import check_out_dir, is_edgeclf_dir, mark_dir, write_text

    marker = root / JobDir.INCOMPLETE
    # Only a folder edgeclf made is resumed: a user's folder that happens to hold that name is not.
    resuming = marker.exists() and is_edgeclf_dir(root)
    # As every --out: not the data, around it or in it; a non-empty folder only with --overwrite
    # (or to resume), and only one edgeclf made.
    check_out_dir(root, overwrite or resuming, inside=(data,))
    if resuming and not overwrite:
        info(f"{root} holds a run that did not finish; starting it again")
    root.mkdir(parents=True, exist_ok=True)
    # A marker while the job is unfinished: after Ctrl-C or a crash, running it again picks
    # the folder up without --overwrite, while a finished job is never replaced silently.
    write_text(marker, "edgeclf run has not finished writing this folder\n")
    mark_dir(root, "edgeclf run")
    return resuming


def run_job(out, *, data=None, model: Optional[str] = None, epochs: int = RUN_DEFAULTS["epochs"],
            image_size: Optional[tuple[int, int]] = None, per_class: int = RUN_DEFAULTS["per_class"],
            threads: Optional[int] = None, overwrite: bool = False) -> JobReport:
    """Generate the built-in dataset (unless ``data`` is given), train ``model``, export every
    precision to TFLite and ONNX, and compare every file with the Keras model, all under ``out``.

    Returns a ``JobReport``; ``report.passed`` is False when a file failed a gate.

    Example:
        >>> report = run_job("edgeclf-run")            # doctest: +SKIP
        >>> print(report.export.table())              # doctest: +SKIP
    """
    from .train.zoo import DEFAULT_MODEL

    model = model or DEFAULT_MODEL
    check_job_options(model=model, epochs=epochs, per_class=per_class)
    root = Path(out)
    overwrite = _claim(root, overwrite, data) or overwrite
    timings: list[tuple[str, float]] = []

    def step(name, fn):
        info(f"== {name}")
        t = time.monotonic()
        result = fn()
        timings.append((name.split(":")[0], time.monotonic() - t))
        return result

    if data is None:
        from .data.synth import generate

        data_dir = root / JobDir.DATA
        step("data: built-in synthetic dataset",
             lambda: generate(data_dir, classes=RUN_DEFAULTS["classes"], per_class=per_class,
                              size=RUN_DEFAULTS["image_size"], overwrite=overwrite))
        image_size = image_size or (RUN_DEFAULTS["image_size"],) * 2
    else:
        data_dir = Path(data)
    run_dir, export_dir = root / JobDir.RUN, root / JobDir.EXPORT

    def train():
        from .train import train_model

        return train_model(data_dir, out=run_dir, model=model, epochs=epochs, image_size=image_size,
                           overwrite=overwrite)

    def export():
        from .export import export_model

        return export_model(run_dir, export_dir, overwrite=overwrite)

    def compare():
        from ._io import write_into_dir, write_json
        from .evaluate import compare_files
        from .evaluate.report import comparison_json, write_report

        cmp = compare_files([export_dir], data=run_dir, threads=threads)
        write_json(root / JobDir.COMPARE, comparison_json(cmp))
        written = write_into_dir(root / JobDir.REPORT, lambda d: write_report(cmp, d), overwrite=overwrite,
                                 what="comparison report")
        info(f"wrote {written}")
        return cmp

    step(f"train: {model}", train)
    exported = step("export: every precision, TFLite and ONNX", export)
    cmp = step("compare: every file against the Keras model", compare)
    (root / JobDir.INCOMPLETE).unlink()
    return JobReport(root, exported, cmp, tuple(timings))
