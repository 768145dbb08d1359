"""``export_model``: one Keras classifier in, a folder of checked, self-describing files out."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from .. import __version__
from .._io import atomic_dir, check_out_dir, write_bytes, write_json
from .._term import format_table, human_bytes, info
from ..errors import EdgeclfError, ExportError, OptionError, UsageError
from ..runtime import metrics
from ..runtime.layout import ExportDir
from ..runtime.metadata import file_sha256
from ..runtime.spec import (DEFAULT_CALIBRATION_SIZE, FLOAT32_MAX_ABS_DIFF, GOLDEN_ATOL, GOLDEN_IMAGES,
                            DEFAULT_FORMATS, NEEDS_CALIBRATION, SUPPORTED_PRECISIONS, Format, IOType, ModelSpec,
                            OutputKind, Precision, parse_enum)
from .calibration import ImageBank, ImageSet, calibration_set, load_images
from .golden import write_golden

FORMATS = tuple(f.value for f in Format)


@dataclass(frozen=True)
class ExportedFile:
    """One written file and how it compares with the Keras model on the validation images."""

    file: str
    format: str
    precision: str
    size_bytes: int
    sha256: str
    agreement: Optional[float]  # top-1 agreement with Keras
    accuracy: Optional[float]  # None when the validation images have no labels
    max_abs_diff: Optional[float]  # max |p_file - p_keras| over images and classes
    golden_atol: float
    size_vs_float32: Optional[float] = None
    seconds: float = 0.0
    mobile: Optional[dict] = None  # ONNX/ORT: ORT's mobile usability verdicts (NNAPI, CoreML)
    budget: Optional[dict] = None  # int8 with an accuracy budget: export.budget.BudgetResult.to_dict()

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ExportReport:
    """What ``export_model`` wrote and measured (also written as ``export.json``)."""

    out: str
    source: str
    source_sha256: str
    model_name: str
    labels: tuple[str, ...]
    image_size: tuple[int, int]
    output_kind: str
    calibration: dict
    validation: dict
    keras_accuracy: Optional[float]
    files: tuple[ExportedFile, ...]
    qat: Optional[dict] = None
    not_exported: tuple = ()  # (format, precision, reason): in the default list but not possible here
    edgeclf_version: str = __version__
    # What the source model itself takes and gives (the files may add scaling and a head):
    # what ``compare`` needs to run the source as the reference.
    input_range: str = "0,255"
    source_output_kind: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["image_size"] = list(self.image_size)
        d["files"] = [f.to_dict() for f in self.files]
        d["not_exported"] = [list(x) for x in self.not_exported]
        return d

    def file(self, name: str) -> ExportedFile:
        for f in self.files:
            if f.file == name:
                return f
        raise KeyError(name)

    def mobile_table(self) -> str:
        """ORT's mobile usability verdicts of the ONNX and ORT files ('' when there are none)."""
        from .ort_mobile import MobileUsability, mobile_table

        found = [MobileUsability(**{k: v for k, v in f.mobile.items() if k != "providers"})
                 for f in self.files if f.mobile is not None]
        return mobile_table(found) if found else ""

    def table(self) -> str:
        """The terminal summary: file, precision, size, size vs float32, agreement, accuracy."""
        rows = []
        for f in self.files:
            rows.append([
                f.file, f.precision + (f" ({len(f.budget['float_layers'])} layers float)"
                                       if f.budget and f.budget["float_layers"] else ""), human_bytes(f.size_bytes),
                "" if f.size_vs_float32 is None else f"{100 * f.size_vs_float32:.0f}%",
                "" if f.agreement is None else f"{100 * f.agreement:.1f}%",
                "n/a" if f.accuracy is None else f"{100 * f.accuracy:.1f}%",
            ])
        if self.keras_accuracy is not None:
            rows.append(["(keras model)", "float32", "", "", "100.0%", f"{100 * self.keras_accuracy:.1f}%"])
        return format_table(["file", "precision", "size", "vs float32", "agreement", "accuracy"], rows)


def _parse_all(enum, values, *, name: str) -> Optional[tuple]:
    if not values:
        return None
    out = []
    for v in values:
        m = parse_enum(enum, v, name=name)
        if m not in out:
            out.append(m)
    return tuple(out)


def _needs_calibration(fmt: Format, p: Precision) -> bool:
    return p in NEEDS_CALIBRATION[fmt]


def plan_jobs(formats=None, precisions=None, *, has_calibration: bool = True,
              has_training: bool = True) -> tuple[list[tuple[str, Precision]], list[tuple[str, str, str]]]:
    """The (format, precision) pairs to write, and those left out of the default list with the reason.

    Explicitly asked-for pairs that cannot be made raise UsageError naming the supported ones.
    """
    fmts = _parse_all(Format, formats, name="format") or DEFAULT_FORMATS
    precs = _parse_all(Precision, precisions, name="precision")
    explicit_formats = bool(formats)
    jobs = []

    def supported_list(fmt):
        return ", ".join(p.value for p in SUPPORTED_PRECISIONS[fmt])

    if precs is None:
        jobs = [(fmt, p) for fmt in fmts for p in SUPPORTED_PRECISIONS[fmt]]
    else:
        for p in precs:
            fmts_for_p = [f for f in fmts if p in SUPPORTED_PRECISIONS[f]]
            if explicit_formats:
                for f in fmts:
                    if p not in SUPPORTED_PRECISIONS[f]:
                        raise UsageError(f"{f.value} does not support precision {p.value}; {f.value} supports: "
                                         f"{supported_list(f)}")
            if not fmts_for_p:
                raise UsageError(f"precision {p.value} is not supported by "
                                 + "; ".join(f"{f.value} (supports {supported_list(f)})" for f in fmts))
            jobs += [(f, p) for f in fmts_for_p]
    kept, left = [], []
    for fmt, p in jobs:
        reason = None
        if p is Precision.QAT and not has_training:
            reason = "QAT needs labelled training images (a run directory, or --data DATA)"
        elif _needs_calibration(fmt, p) and not has_calibration:
            reason = f"{p.value} needs calibration images (--calibration DATA or --data DATA)"
        if reason:
            if precs is not None:
                raise UsageError(f"{fmt.value} {p.value}: {reason}")
            left.append((fmt.value, p.value, reason))
        else:
            kept.append((fmt.value, p))
    # Order: every TFLite file, then ONNX; float32 first within each so ratios can be computed.
    order = {p: i for i, p in enumerate(Precision)}
    kept.sort(key=lambda j: (FORMATS.index(j[0]), order[j[1]]))
    return kept, left


def _keras_probabilities(model, images: np.ndarray, kind: OutputKind) -> np.ndarray:
    from ..runtime.classifier import to_probabilities

    return to_probabilities(model.predict(images.astype(np.float32), batch_size=32, verbose=0), kind)


def export_model(source, out, *, formats: Optional[Sequence[str]] = None,
                 precisions: Optional[Sequence[str]] = None, io: Optional[str] = None,
                 labels=None, data=None, calibration=None,
                 calibration_size: int = DEFAULT_CALIBRATION_SIZE, qat_epochs: int = 1,
                 seed: Optional[int] = None, overwrite: bool = False, keep_logits: bool = False,
                 batch: Optional[int] = None, card=None, input_range: Optional[str] = None,
                 output_kind: Optional[str] = None, max_accuracy_drop: Optional[float] = None,
                 min_agreement: Optional[float] = None, keep_sigmoid: bool = False) -> ExportReport:
    """Export a Keras classifier to TFLite and ONNX files in ``out``, each checked against
    the Keras model with the TensorFlow-free runtime.

    Args:
        source: a run directory from ``edgeclf train``, or a ``.keras`` / ``.h5`` file or
            SavedModel folder (then ``labels`` is required).
        out: the export folder; built in a temporary folder and renamed into place at the end.
        formats: ``"tflite"`` and/or ``"onnx"`` (default both).
        precisions: any of float32, float16, dynamic, int8, int16x8, qat (default: every one
            the formats support and the data allows).
        io: input/output type of the full-integer TFLite files: uint8 (default), int8, float32.
        labels: a labels file (one class per line).
        data: a class-folder dataset, split as ``edgeclf train`` splits it (the run's seed and
            fractions; else 80/20, seed 123) into calibration/QAT and validation images;
            replaces a run's split.
        calibration: a folder of images used only for calibration.
        calibration_size: images in the calibration sample (fewer if fewer exist).
        qat_epochs: fine-tuning epochs for QAT.
        seed: seed of the calibration sample and splits (default: the run's seed, else 123).
        overwrite: replace an existing ``out``.
        keep_logits: export a logits model as it is; by default a Softmax is appended, so
            the files give probabilities (phone clients show the output as 0..1 scores).
        keep_sigmoid: export a one-sigmoid model's single unit as it is; by default the files
            give ``[1 - p, p]`` with both labels (phone clients then name the right class).
        batch: a fixed batch size for the ONNX and ORT files (1 for a phone: NNAPI and CoreML
            need fixed shapes); default: any batch.
        card: an ``std_metadata.ModelCard`` (name, description, version, author, licence)
            for the standard TFLite metadata.
        input_range: the pixel values the model expects ("0,255", "0,1", "-1,1"); default:
            inferred. Every file still takes 0..255 pixels (the scaling is put in front).
        output_kind: "logits", "probabilities" or "sigmoid"; default: inferred.
        max_accuracy_drop, min_agreement: an accuracy budget for the int8 files against the
            Keras model on the validation images; a file that misses it keeps its most harmful
            layers float until it holds (``export.budget``); ``files[i].budget`` says how.

    Returns:
        An ``ExportReport``.

    Raises:
        UsageError: bad options, or ``out`` exists without ``overwrite``.
        ExportError: a file fails its check (float32 parity, quantization collapse).

    Example:
        >>> report = export_model("runs/cnn", "export/cnn", precisions=["float32", "int8"])  # doctest: +SKIP
        >>> print(report.table())                                                          # doctest: +SKIP
    """
    from .source import load_source

    t_start = time.monotonic()
    out = Path(out)
    if calibration_size < 1:
        raise OptionError("calibration_size", f"must be at least 1, not {calibration_size}")
    if qat_epochs < 0:
        raise OptionError("qat_epochs", f"must be 0 or more, not {qat_epochs}")
    if batch is not None and not 1 <= batch <= 4096:
        raise OptionError("batch", f"must be a batch size from 1 to 4096; got {batch}")
    io_type = IOType.UINT8 if io is None else parse_enum(IOType, io, name="--io type")
    if io_type is IOType.INT8:
        info("Note: --io int8 files do not load in MediaPipe Tasks or the TFLite Task Library (they take "
             "uint8 or float32 input and output); keep the default --io uint8 for files meant for apps")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is a file; choose a folder name")
    if out.exists() and not overwrite:
        raise UsageError(f"{out} already exists; choose another --out or pass --overwrite to replace it")
    # --overwrite must never replace what the export reads (the run, its model file, the data).
    check_out_dir(out, True, inside=(source, data, calibration))
    # Bad names and combinations fail before the (slow) model load.
    wanted, _ = plan_jobs(formats, precisions)
    if io is not None and not any(p in (Precision.INT8, Precision.QAT) and f == "tflite" for f, p in wanted):
        raise UsageError("--io applies to the full-integer TFLite files (int8, qat), and none is being exported")
    from .budget import Budget

    budget = Budget.from_options(max_accuracy_drop, min_agreement)
    if budget is not None and not any(p is Precision.INT8 for _, p in wanted):
        raise UsageError("--max-accuracy-drop / --min-agreement apply to the int8 files, and none is being exported")

    info(f"Loading {source} ...")
    src = load_source(source, labels_file=labels, data=data, calibration=calibration, seed=seed,
                      input_range=input_range, output_kind=output_kind)
    # What the source gives as export was told or found it (one stated logit: "logits").
    source_kind = OutputKind.LOGITS if src.model.sigmoid_appended else src.output_kind
    from .heads import export_head  # files end in probabilities of every label: what apps show

    head_model, head_kind = export_head(src.model, src.output_kind, keep_logits=keep_logits, keep_sigmoid=keep_sigmoid)
    src = replace(src, model=head_model, output_kind=head_kind)
    seed = src.seed
    bank = src.images if src.images is not None else ImageBank(src.input_size, src.resize_method)
    has_train_labels = bool(src.train) and all(i >= 0 for _, i in src.train)
    cal_pool = src.calibration or src.train
    jobs, left = plan_jobs(formats, precisions, has_calibration=bool(cal_pool), has_training=has_train_labels)
    for fmt, p, why in left:
        info(f"Not exporting {fmt} {p}: {why}")
    size = src.input_size

    # Images: validation for parity/accuracy, calibration for PTQ, the training split for QAT.
    val = load_images(src.val, size, resize_method=src.resize_method, what="validation", bank=bank)
    val_source = src.data_source or "none"
    cal = None
    if any(_needs_calibration(Format(f), p) for f, p in jobs):
        cal = calibration_set(cal_pool, size, n=calibration_size, seed=seed, resize_method=src.resize_method,
                              bank=bank)
        if len(cal) == 0:
            raise UsageError("none of the calibration images could be read; see the skipped files above")
        where = f"--calibration {calibration}" if src.calibration else "the training images"
        info(f"Calibration: {len(cal)} images, class-stratified (seed {seed}) from {where}")
    if len(val) == 0:
        why = (f"none of the {len(src.val)} validation images could be read" if src.val
               else "no validation images available" if src.train or src.calibration else "no data given")
        if cal is not None and len(cal):
            check = ImageSet(cal.images, np.full(len(cal), -1), cal.paths)
            val_source = f"calibration images ({why}; parity only, no accuracy)"
        else:
            rng = np.random.default_rng(seed)
            check = ImageSet(rng.integers(0, 256, (16, *size, 3), dtype=np.uint8), np.full(16, -1), ())
            val_source = f"16 random images ({why}; parity only, no accuracy)"
        info(f"Validation: {val_source}")
    else:
        check = val
        info(f"Validation: {len(val)} held-out images")

    model = src.model
    keras_probs = _keras_probabilities(model, check.images, src.output_kind)
    labelled = check.has_labels
    keras_acc = metrics.accuracy(keras_probs, check.indices) if labelled and len(check) else None
    if budget is not None and budget.max_accuracy_drop is not None and not labelled:
        raise UsageError("--max-accuracy-drop needs labelled validation images (a run directory or --data DATA); "
                         "--min-agreement needs none")
    explicit = bool(precisions)

    meta = ModelSpec(
        labels=src.labels, input_size=size, output_kind=src.output_kind, precision="float32",
        resize_method=src.resize_method, edgeclf_version=__version__, source_sha256=src.sha256,
        model_name=src.name,
    )

    qat_info = None
    qat_model = None
    files: list[ExportedFile] = []
    golden: dict = {}
    golden_n = min(GOLDEN_IMAGES, len(check))
    float32_size: dict[str, int] = {}
    cache: dict = {}
    try:
        with atomic_dir(out, overwrite=overwrite) as tmp:
            for k, (fmt, prec) in enumerate(jobs, 1):
                name = ExportDir.model_name(fmt, prec)
                t0 = time.monotonic()
                info(f"[{k}/{len(jobs)}] {name}: converting ...")
                path = tmp / name
                try:
                    if prec is Precision.QAT and qat_model is None:
                        if qat_info is not None:  # QAT already failed for the other format
                            raise ExportError(qat_info["failed"])
                        try:
                            qat_model, qat_info = _run_qat(src, seed=seed, epochs=qat_epochs, bank=bank)
                        except EdgeclfError as exc:
                            qat_info = {"failed": str(exc)}
                            raise
                    extra = {"format": fmt}
                    if fmt == Format.TFLITE.value and prec in (Precision.INT8, Precision.QAT):
                        extra["io"] = io_type.value
                    if cal is not None and _needs_calibration(Format(fmt), prec):
                        extra["calibration_images"] = len(cal)
                    file_meta = meta.with_(precision=prec.value, extra=extra)
                    data_bytes, mobile = _convert(fmt, prec, model, qat_model, src.output_kind, cal, io_type,
                                                  file_meta, cache, batch=batch, card=card, name=name)
                    write_bytes(path, data_bytes)
                    probs = _runtime_probabilities(path, check.images)
                    budget_info = None
                    if budget is not None and prec is Precision.INT8 and fmt != Format.ORT.value:
                        from .budget import enforce_budget

                        data_bytes, probs, res = enforce_budget(
                            budget, fmt, name, full_file=data_bytes, full_probs=probs, keras_probs=keras_probs,
                            images=check.images, y=check.indices if labelled else None, model=model,
                            calibration=cal.images, io=io_type, meta=file_meta, float_onnx=cache.get("onnx_float32"))
                        write_bytes(path, data_bytes)
                        budget_info = res.to_dict()
                        info(res.message)
                    _check_file(name, prec, probs, keras_probs)
                except EdgeclfError as exc:
                    # A precision the converter or engine cannot do for this model (int16x8 on
                    # HARD_SWISH, QAT on an unsupported layer) must not throw away the others,
                    # unless the user asked for it by name. float32 is the baseline: never skipped.
                    if explicit or prec is Precision.FLOAT32:
                        raise
                    if path.exists():
                        path.unlink()
                    reason = str(exc)
                    left.append((fmt, prec.value, reason))
                    info(f"[{k}/{len(jobs)}] {name}: skipped: {reason}")
                    continue
                agreement = metrics.top1_agreement(probs, keras_probs) if len(probs) else float("nan")
                max_diff = metrics.abs_prob_diff(probs, keras_probs)[0] if len(probs) else float("nan")
                acc = metrics.accuracy(probs, check.indices) if labelled and len(probs) else None
                size_b = path.stat().st_size
                if prec is Precision.FLOAT32:
                    float32_size[fmt] = size_b
                ratio = size_b / float32_size[fmt] if fmt in float32_size else None
                atol = GOLDEN_ATOL[prec]
                golden[name] = (probs[:golden_n], atol)
                secs = time.monotonic() - t0
                files.append(ExportedFile(
                    file=name, format=fmt, precision=prec.value, size_bytes=size_b, sha256=file_sha256(path),
                    agreement=agreement, accuracy=acc, max_abs_diff=max_diff, golden_atol=atol,
                    size_vs_float32=ratio, seconds=round(secs, 2),
                    mobile=None if mobile is None else mobile.to_dict(), budget=budget_info))
                acc_txt = f", accuracy {100 * acc:.1f}%" if acc is not None else ""
                info(f"[{k}/{len(jobs)}] {name}: {human_bytes(size_b)}, agreement {100 * agreement:.1f}%{acc_txt} "
                     f"({secs:.1f}s)")
            write_golden(tmp / ExportDir.GOLDEN, check.images[:golden_n], golden)
            report = ExportReport(
                out=str(out.resolve()), source=str(src.path.resolve()), source_sha256=src.sha256,
                model_name=src.name, labels=src.labels, image_size=size, output_kind=src.output_kind.value,
                calibration=({"source": (str(Path(calibration).resolve()) if src.calibration
                                         else "training images: " + (src.data_source or "given")), "size": len(cal),
                              "requested": calibration_size, "seed": seed, "stratified": True,
                              "skipped": [list(s) for s in cal.skipped]} if cal is not None else {}),
                validation={"source": val_source, "size": len(check), "labelled": labelled,
                            "golden_images": golden_n},
                keras_accuracy=keras_acc, files=tuple(files),
                qat=None if qat_info is None or "failed" in qat_info else qat_info, not_exported=tuple(left),
                input_range=src.model.input_range.value, source_output_kind=source_kind.value,
            )
            write_json(tmp / ExportDir.REPORT, report.to_dict())
    except FileExistsError:
        raise UsageError(f"{out} already exists; choose another --out or pass --overwrite to replace it") from None
    if qat_info is not None:
        _say_qat_vs_ptq(files)
    info(f"Exported {len(files)} files to {out} in {time.monotonic() - t_start:.0f}s")
    return report


def _run_qat(src, *, seed: int, epochs: int, bank: ImageBank):
    from .qat import train_qat

    train = load_images(src.train, src.input_size, resize_method=src.resize_method, what="QAT training",
                        bank=bank)
    info(f"QAT: fine-tuning a quantization-aware copy for {epochs} epoch(s) on {len(train)} training images ...")
    res = train_qat(src.model, train.images, train.indices, output_kind=src.output_kind, epochs=epochs, seed=seed)
    info(f"QAT: {len(res.annotated)} layers quantization-aware; left in float: {', '.join(res.left_float) or 'none'}")
    return res.model, {"epochs": epochs, "train_images": len(train), "annotated_layers": list(res.annotated),
                       "float_layers": list(res.left_float), "history": res.history}


def _convert(fmt, prec, model, qat_model, kind, cal, io_type, meta, cache: dict, *, batch=None, card=None,
             name: str = ""):
    """The file's bytes, and for ONNX/ORT files ORT's mobile usability verdicts (else None)."""
    cal_images = cal.images if cal is not None else None
    if fmt == Format.TFLITE.value:
        from .metadata import embed_tflite_metadata
        from .tflite import convert_tflite

        keras_model = qat_model if prec is Precision.QAT else model
        raw = convert_tflite(keras_model, prec, calibration=cal_images, io=io_type)
        return embed_tflite_metadata(raw, meta, card=card), None
    from .metadata import embed_onnx_metadata
    from .onnx_export import convert_onnx, quantize_onnx
    from .ort_mobile import check_mobile_usability, convert_to_ort, fix_batch

    key = f"onnx_{prec.value}"
    if key not in cache:  # the .onnx and .ort files of a precision share one conversion
        if prec is Precision.QAT:
            from .onnx_export import store_qat_weights_as_int8

            proto = store_qat_weights_as_int8(convert_onnx(qat_model, output_kind=kind))
        else:
            if "onnx_float32" not in cache:  # tf2onnx once; the quantizers start from the float file
                cache["onnx_float32"] = convert_onnx(model, output_kind=kind).SerializeToString()
            from .._optional import require

            proto = require("onnx").load_from_string(cache["onnx_float32"])
            if prec in (Precision.INT8, Precision.DYNAMIC):
                proto = quantize_onnx(proto, prec, calibration=cal_images)
        cache[key] = proto.SerializeToString()
    from .._optional import require

    proto = require("onnx").load_from_string(cache[key])
    if batch is not None:
        proto = fix_batch(proto, batch)
    embed_onnx_metadata(proto, meta)
    onnx_bytes = proto.SerializeToString()
    # The .onnx and .ort files of a precision share one graph (only their metadata differ):
    # ORT's checker, which optimizes the model first, runs once for both.
    mkey = f"mobile_{prec.value}"
    if mkey not in cache:
        cache[mkey] = check_mobile_usability(onnx_bytes, name=name)
    mobile = replace(cache[mkey], file=name)
    if fmt == Format.ORT.value:
        return convert_to_ort(onnx_bytes), mobile
    return onnx_bytes, mobile


def _check_file(name: str, prec: Precision, probs: np.ndarray, keras_probs: np.ndarray) -> None:
    """Raise ExportError when a float32 file is not the Keras model, or a quantized one collapsed."""
    if prec is Precision.FLOAT32:
        # A float file may break an exact tie differently; any other top-1 change is a bug.
        flips = metrics.top1_flips(probs, keras_probs, min_margin=1e-5)
        max_diff = metrics.abs_prob_diff(probs, keras_probs)[0] if len(probs) else 0.0
        if flips or max_diff >= FLOAT32_MAX_ABS_DIFF:
            raise ExportError(
                f"{name} does not match the Keras model: top-1 differs on {flips}"
                f"/{len(probs)} images (none may), max abs probability difference {max_diff:.2e} "
                f"(must be < {FLOAT32_MAX_ABS_DIFF:.0e}); the conversion is wrong, please report it")
        return
    why = metrics.collapse_reason(probs, keras_probs)
    if why:
        raise ExportError(f"{name}: quantization collapsed: {why}; "
                          "check the calibration images (--calibration) or export another precision")


def _runtime_probabilities(path: Path, images: np.ndarray) -> np.ndarray:
    from ..runtime import load_classifier

    clf = load_classifier(path)
    return np.concatenate([clf.predict_proba(images[i : i + 64]) for i in range(0, len(images), 64)], axis=0) \
        if len(images) else np.zeros((0, len(clf.labels)), np.float32)


def _say_qat_vs_ptq(files: Iterable[ExportedFile]) -> None:
    by = {(f.format, f.precision): f for f in files}
    for fmt in FORMATS:
        q, p = by.get((fmt, Precision.QAT.value)), by.get((fmt, Precision.INT8.value))
        if q and p and q.accuracy is not None and p.accuracy is not None:
            info(f"{fmt}: QAT accuracy {100 * q.accuracy:.1f}% vs post-training int8 {100 * p.accuracy:.1f}% "
                 "on the same validation images")
