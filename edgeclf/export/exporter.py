"""``export_model``: one classifier in, a folder of proven, self-describing files out.

The pipeline: load the source (content checks first) → plan jobs from the converter registry
→ for each job: convert → check against the source on held-out images → deliver, or keep the
file out with the reason and its figures. A converter that fails is a skipped job, never a
crash; a file that fails its check is never written to the export folder.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from .. import __version__
from .._io import atomic_dir, check_out_dir, write_bytes, write_json
from .._term import human_bytes, info
from ..errors import EdgeclfError, UsageError, first_line
from ..runtime import metrics
from ..runtime.layout import ExportDir
from ..runtime.metadata import file_sha256
from ..runtime.spec import GOLDEN_ATOL, GOLDEN_IMAGES, INTEGER_IO, Format, ModelSpec, OutputKind, Precision
from .calibration import ImageBank, ImageSet, calibration_set, load_images
from .check import CheckStage, source_probabilities
from .converters import CALIBRATION, ConvertContext, Job, mobile_usability, plan_jobs
from .golden import write_golden
from .options import ExportOptions
from .results import ExportedFile, ExportReport, NotExported

__all__ = ["ExportOptions", "ExportReport", "ExportedFile", "NotExported", "export_model", "plan_jobs"]


def export_model(source, out, options: Optional[ExportOptions] = None, **changes) -> ExportReport:
    """Export a classifier to TFLite/ONNX/ORT files in ``out``, each delivered only after it
    passed its check against the source model on held-out images.

    Args:
        source: a run directory from ``edgeclf train``, or a ``.keras`` / ``.h5`` file or
            SavedModel folder (then ``labels`` is required).
        out: the export folder; built in a temporary folder and renamed into place at the end.
        options: an ``ExportOptions``; keyword arguments change single fields of it
            (``export_model(src, out, precisions=["int8"])``).

    Returns:
        An ``ExportReport``: ``files`` delivered, ``not_exported`` kept out (with reasons and
        figures); ``report.failed`` lists those asked for by name (the CLI exits 1 for them).

    Raises:
        UsageError: bad options, or ``out`` exists without ``overwrite``.
        ModelFileError: the source cannot be loaded safely.

    Example:
        >>> report = export_model("runs/cnn", "export/cnn", precisions=["float32", "int8"])  # doctest: +SKIP
        >>> print(report.table())                                                          # doctest: +SKIP
    """
    opts = ExportOptions.of(options, **changes)
    t_start = time.monotonic()
    out = Path(out)
    _check_request(out, source, opts)
    src, source_kind = _load(source, opts)
    images = _Images(src, opts)
    if opts.max_accuracy_drop is not None and not images.check.has_labels:
        raise UsageError("--max-accuracy-drop needs labelled validation images (a run directory or --data DATA); "
                         "--min-agreement needs none")
    jobs, left = plan_jobs(opts.formats, opts.precisions, has_calibration=bool(images.pool),
                           has_training=images.has_training)
    for fmt, p, why in left:
        info(f"Not exporting {fmt} {p}: {why}")
    cal = images.calibration(opts) if any(CALIBRATION in j.converter.needs for j in jobs) else None
    check = images.check
    reference = source_probabilities(src.model, check.images, src.output_kind)
    y = check.indices if check.has_labels else None
    meta = ModelSpec(labels=src.labels, input_size=src.input_size, output_kind=src.output_kind, precision="float32",
                     resize_method=src.resize_method, edgeclf_version=__version__, source_sha256=src.sha256,
                     model_name=src.name)
    qat = _QAT(src, opts, images.bank)
    ctx = ConvertContext(model=src.model, meta=meta, calibration=cal, qat=qat, io=opts.io_type, batch=opts.batch,
                         card=opts.card)
    stage = CheckStage(images=check.images, reference=reference, y=y, options=opts, model=src.model,
                       calibration=cal.images if cal is not None else None)
    explicit = opts.explicit_precisions
    not_exported = [NotExported(ExportDir.model_name(f, p), f, p, why, "plan") for f, p, why in left]
    files: list[ExportedFile] = []
    golden: dict = {}
    golden_n = min(GOLDEN_IMAGES, len(check))
    try:
        with atomic_dir(out, overwrite=opts.overwrite) as tmp:
            for k, job in enumerate(jobs, 1):
                # Exit 1 for a file asked for by name, for float32 (the baseline: its failure is a bug)
                # and for a quantized file that misses a budget the user stated.
                must = (explicit or job.precision is Precision.FLOAT32
                        or (opts.has_budget and job.precision is not Precision.FLOAT16))
                done = _run_job(job, ctx, stage, tmp, files, step=f"[{k}/{len(jobs)}]", explicit=must)
                if isinstance(done, NotExported):
                    not_exported.append(done)
                elif done is not None:
                    files.append(done[0])
                    golden[done[0].file] = (done[1][:golden_n], done[0].golden_atol)
            write_golden(tmp / ExportDir.GOLDEN, check.images[:golden_n], golden)
            report = ExportReport(
                out=str(out.resolve()), source=str(src.path.resolve()), source_sha256=src.sha256,
                model_name=src.name, labels=src.labels, image_size=src.input_size,
                output_kind=src.output_kind.value, calibration=images.calibration_record(cal, opts),
                validation={"source": images.check_source, "size": len(check), "labelled": check.has_labels,
                            "golden_images": golden_n},
                keras_accuracy=metrics.accuracy(reference, y) if y is not None and len(check) else None,
                files=tuple(files), qat=qat.record, not_exported=tuple(not_exported),
                input_range=src.model.input_range.value, source_output_kind=source_kind.value)
            write_json(tmp / ExportDir.REPORT, report.to_dict())
    except FileExistsError:
        raise UsageError(f"{out} already exists; choose another --out or pass --overwrite to replace it") from None
    if qat.record is not None:
        _say_qat_vs_ptq(files)
    info(f"Exported {len(files)} files to {out} in {time.monotonic() - t_start:.0f}s"
         + (f"; {len(not_exported)} not delivered" if not_exported else ""))
    return report


def _check_request(out: Path, source, opts: ExportOptions) -> None:
    """Everything about the request that can be refused before the (slow) model load."""
    if opts.io_type.value == "int8":
        info("Note: --io int8 files do not load in MediaPipe Tasks or the TFLite Task Library (they take "
             "uint8 or float32 input and output); keep the default --io uint8 for files meant for apps")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is a file; choose a folder name")
    if out.exists() and not opts.overwrite:
        raise UsageError(f"{out} already exists; choose another --out or pass --overwrite to replace it")
    # --overwrite must never replace what the export reads (the run, its model file, the data it
    # was trained on, --data, --calibration).
    from .source import source_inputs

    check_out_dir(out, True, inside=source_inputs(source, opts.data, opts.calibration))
    wanted, _ = plan_jobs(opts.formats, opts.precisions)
    full_integer = [j for j in wanted if j.format is Format.TFLITE and j.precision in INTEGER_IO]
    if opts.io is not None and not full_integer:
        raise UsageError("--io applies to the integer TFLite files (int8, int8-full, qat), and none is being exported")
    if opts.has_budget and not any(j.precision not in (Precision.FLOAT32, Precision.FLOAT16) for j in wanted):
        raise UsageError("--max-accuracy-drop / --min-agreement apply to the quantized files, and none is being "
                         "exported")


def _load(source, opts: ExportOptions):
    from .source import load_source

    info(f"Loading {source} ...")
    src = load_source(source, labels_file=opts.labels, data=opts.data, calibration=opts.calibration, seed=opts.seed,
                      input_range=opts.input_range, output_kind=opts.output_kind)
    # What the source gives, as stated or found (one stated logit: "logits"), for export.json.
    source_kind = OutputKind.LOGITS if src.model.sigmoid_appended else src.output_kind
    from .heads import export_head  # files end in probabilities of every label: what apps show

    head_model, head_kind = export_head(src.model, src.output_kind, keep_logits=opts.keep_logits,
                                        keep_sigmoid=opts.keep_sigmoid)
    return replace(src, model=head_model, output_kind=head_kind), source_kind


class _Images:
    """The source's images for the export: the check set (held-out), the calibration pool."""

    def __init__(self, src, opts: ExportOptions):
        self.src = src
        self.bank = src.images if src.images is not None else ImageBank(src.input_size, src.resize_method)
        self.has_training = bool(src.train) and all(i >= 0 for _, i in src.train)
        self.pool = src.calibration or src.train
        self.check, self.check_source = self._check_set(opts)

    def _load(self, samples, what):
        s = self.src
        return load_images(samples, s.input_size, resize_method=s.resize_method, what=what, bank=self.bank)

    def _check_set(self, opts: ExportOptions) -> tuple[ImageSet, str]:
        s = self.src
        val = self._load(s.val, "validation")
        if len(val):
            info(f"Check images: {len(val)} held-out validation images")
            if len(val) < 50:
                info(f"Note: {len(val)} check images is few: each image is {100 / len(val):.1f} points of "
                     "agreement; more validation images (--data with more per class) make the check sharper")
            return val, s.data_source or "validation split"
        why = (f"none of the {len(s.val)} validation images could be read" if s.val
               else "no validation images available" if self.pool else "no data given")
        if self.pool:
            cal = calibration_set(self.pool, s.input_size, n=opts.calibration_size, seed=s.seed,
                                  resize_method=s.resize_method, bank=self.bank)
            if len(cal):
                info(f"Check images: calibration images ({why}; parity only, no accuracy)")
                return ImageSet(cal.images, np.full(len(cal), -1), cal.paths), \
                    f"calibration images ({why}; parity only, no accuracy)"
        rng = np.random.default_rng(s.seed)
        info(f"Check images: 16 random images ({why}; parity only, no accuracy)")
        return ImageSet(rng.integers(0, 256, (16, *s.input_size, 3), dtype=np.uint8), np.full(16, -1), ()), \
            f"16 random images ({why}; parity only, no accuracy)"

    def calibration(self, opts: ExportOptions) -> ImageSet:
        s = self.src
        cal = calibration_set(self.pool, s.input_size, n=opts.calibration_size, seed=s.seed,
                              resize_method=s.resize_method, bank=self.bank)
        if len(cal) == 0:
            raise UsageError("none of the calibration images could be read; see the skipped files above")
        where = f"--calibration {opts.calibration}" if s.calibration else "the training images"
        info(f"Calibration: {len(cal)} images, class-stratified (seed {s.seed}) from {where}")
        return cal

    def calibration_record(self, cal: Optional[ImageSet], opts: ExportOptions) -> dict:
        if cal is None:
            return {}
        s = self.src
        return {"source": (str(Path(opts.calibration).resolve()) if s.calibration
                           else "training images: " + (s.data_source or "given")), "size": len(cal),
                "requested": opts.calibration_size, "seed": s.seed, "stratified": True,
                "skipped": [list(x) for x in cal.skipped]}



class _QAT:
    """Runs quantization-aware training once, on first use, for every QAT file (and remembers
    a failure, so the second format gets the same reason without a second try)."""

    def __init__(self, src, opts: ExportOptions, bank: ImageBank):
        self.src, self.opts, self.bank = src, opts, bank
        self.model = None
        self.record: Optional[dict] = None
        self.error: Optional[BaseException] = None

    def __call__(self):
        if self.error is not None:
            raise self.error
        if self.model is None:
            try:
                self.model, self.record = self._train()
            except Exception as exc:  # noqa: BLE001 - the job reports it; the other format re-raises it
                self.error = exc
                raise
        return self.model

    def _train(self):
        from .qat import train_qat

        src, epochs = self.src, self.opts.qat_epochs
        train = load_images(src.train, src.input_size, resize_method=src.resize_method, what="QAT training",
                            bank=self.bank)
        info(f"QAT: fine-tuning a quantization-aware copy for {epochs} epoch(s) on {len(train)} training images ...")
        res = train_qat(src.model, train.images, train.indices, output_kind=src.output_kind, epochs=epochs,
                        seed=src.seed)
        info(f"QAT: {len(res.annotated)} layers quantization-aware; left in float: {', '.join(res.left_float) or 'none'}")
        return res.model, {"epochs": epochs, "train_images": len(train), "annotated_layers": list(res.annotated),
                           "float_layers": list(res.left_float), "history": res.history}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, EdgeclfError):
        return str(exc)
    return f"{type(exc).__name__}: {first_line(exc)} (a converter failed; please report it)"


def _run_job(job: Job, ctx: ConvertContext, stage: CheckStage, tmp: Path, files: list, *, step: str,
             explicit: bool):
    """Convert, check, deliver one file: (ExportedFile, its probabilities), a NotExported, or
    None for an ONNX file made only for its .ort."""
    name, t0 = job.name, time.monotonic()
    info(f"{step} {name}: converting ...")

    def kept_out(stage_name: str, reason: str, verdict=None, budget=None) -> NotExported:
        word = "FAILED its check" if stage_name == "check" else "skipped"
        info(f"{step} {name}: {word}: {reason}")
        return NotExported(name, job.format.value, job.precision.value, reason, stage_name,
                           explicit=explicit and job.deliver, check=None if verdict is None else verdict.to_dict(),
                           budget=budget)

    try:
        data = job.converter.convert(ctx, job)
    except Exception as exc:  # noqa: BLE001 - any converter failure is a skipped job with its reason
        return kept_out("convert", _reason(exc))
    try:
        data, probs, verdict, budget = stage.run(job, data, ctx)
        mobile = mobile_usability(ctx, job, data)
    except Exception as exc:  # noqa: BLE001 - a file its own engine cannot run is not delivered
        return kept_out("check", f"the runtime could not run it: {_reason(exc)}")
    if not verdict.passed:
        why = verdict.reason + (f"; {budget['message']}" if budget else "")
        return kept_out("check", why, verdict, budget)
    if job.format is Format.ONNX:
        ctx.delivered_onnx[job.precision] = data
    if not job.deliver:
        info(f"{step} {name}: checked (made for the .ort file only)")
        return None
    path = tmp / name
    write_bytes(path, data)
    f32 = next((f.size_bytes for f in files if f.format == job.format.value and f.precision == "float32"), None)
    fig = verdict.figures
    secs = time.monotonic() - t0
    exported = ExportedFile(
        file=name, format=job.format.value, precision=job.precision.value, size_bytes=len(data),
        sha256=file_sha256(path), agreement=fig.agreement, accuracy=fig.accuracy, max_abs_diff=fig.max_abs_diff,
        golden_atol=GOLDEN_ATOL[job.precision],
        size_vs_float32=1.0 if job.precision is Precision.FLOAT32 else (len(data) / f32 if f32 else None),
        seconds=round(secs, 2), mobile=None if mobile is None else mobile.to_dict(), budget=budget,
        check=verdict.to_dict(), speed=_speed_record(ctx, job))
    acc = f", accuracy {100 * fig.accuracy:.1f}%" if fig.accuracy is not None else ""
    info(f"{step} {name}: {human_bytes(len(data))}, agreement {100 * fig.agreement:.1f}%, mean |Δp| "
         f"{fig.mean_abs_diff:.4f}{acc}: checked ({secs:.1f}s)")
    return exported, probs


def _speed_record(ctx: ConvertContext, job: Job) -> Optional[dict]:
    """The TFLite int8 file's speed choice for export.json (``speed.SpeedChoice.to_dict``)."""
    from .converters import SPEED_KEY

    if job.format is not Format.TFLITE or job.precision is not Precision.INT8 or SPEED_KEY not in ctx.cache:
        return None
    return ctx.cache[SPEED_KEY][1].to_dict()


def _say_qat_vs_ptq(files: Iterable[ExportedFile]) -> None:
    by = {(f.format, f.precision): f for f in files}
    for fmt in Format:
        q, p = by.get((fmt.value, Precision.QAT.value)), by.get((fmt.value, Precision.INT8.value))
        if q and p and q.accuracy is not None and p.accuracy is not None:
            info(f"{fmt.value}: QAT accuracy {100 * q.accuracy:.1f}% vs post-training int8 {100 * p.accuracy:.1f}% "
                 "on the same validation images")

