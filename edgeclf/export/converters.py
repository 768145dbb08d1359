"""The converter registry: one small function per (format, precision), registered with what it
needs, the shape of ai-edge-quantizer's algorithm manager.

A converter takes the export's ``ConvertContext`` and a ``Job`` and returns the file's bytes,
metadata included. It may raise anything: the pipeline turns any failure into a skipped job
with the reason, so a converter never has to guard against the converters it calls. Adding a
precision is adding it to ``runtime.spec`` (``Precision``, ``SUPPORTED_PRECISIONS``,
``GOLDEN_ATOL``, ``DEFAULT_GATES``) and registering its converter here; a test checks that the
registry covers exactly what spec says each format holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Optional

from ..errors import UsageError
from ..runtime.layout import ExportDir
from ..runtime.spec import INTEGER_IO, SUPPORTED_PRECISIONS, Format, IOType, ModelSpec, Precision

CALIBRATION = "calibration"  # needs calibration images (representative data)
TRAINING = "training"  # needs labelled training images (QAT)


@dataclass(frozen=True)
class Converter:
    format: Format
    precision: Precision
    convert: Callable[["ConvertContext", "Job"], bytes]
    needs: frozenset = frozenset()
    # Made from the same precision's ONNX file as delivered (after its check and budget).
    from_onnx: bool = False


@dataclass(frozen=True)
class Job:
    """One file to make. ``deliver`` is False for an ONNX file made only to convert the .ort."""

    format: Format
    precision: Precision
    deliver: bool = True

    @property
    def name(self) -> str:
        return ExportDir.model_name(self.format.value, self.precision)

    @property
    def converter(self) -> Converter:
        return CONVERTERS[(self.format, self.precision)]


CONVERTERS: dict[tuple[Format, Precision], Converter] = {}


def register_converter(fmt: Format, *precisions: Precision, needs=(), from_onnx: bool = False):
    """Register the decorated function as the converter of ``fmt`` for each of ``precisions``."""
    def decorate(fn):
        for p in precisions:
            if (fmt, p) in CONVERTERS:
                raise RuntimeError(f"two converters for {fmt.value} {p.value}")
            CONVERTERS[(fmt, p)] = Converter(fmt, p, fn, frozenset(needs), from_onnx)
        return fn
    return decorate


@dataclass
class ConvertContext:
    """What the converters of one export share: the source, its images, the options, and the
    work done once for several files (the float ONNX graph, the QAT model, ORT's checks)."""

    model: object  # keras_load.LoadedModel, with the export's probability head
    meta: ModelSpec  # the spec every file carries; each converter sets its precision
    calibration: Optional[object] = None  # calibration.ImageSet
    qat: Optional[Callable[[], object]] = None  # runs QAT once; returns the fake-quant tf_keras model
    io: IOType = IOType.UINT8
    batch: Optional[int] = None
    card: object = None
    delivered_onnx: dict = field(default_factory=dict)  # Precision -> the ONNX bytes as delivered
    mobile: dict = field(default_factory=dict)  # Precision -> ORT's mobile usability verdict
    cache: dict = field(default_factory=dict)

    def calibration_images(self):
        if self.calibration is None or not len(self.calibration):
            raise UsageError("this precision needs calibration images (--calibration DATA or --data DATA)")
        return self.calibration.images

    def file_meta(self, job: Job) -> ModelSpec:
        extra = {"format": job.format.value}
        if job.format is Format.TFLITE and job.precision in INTEGER_IO:
            extra["io"] = self.io.value
        if CALIBRATION in job.converter.needs and self.calibration is not None:
            extra["calibration_images"] = len(self.calibration)
        return self.meta.with_(precision=job.precision.value, extra=extra)

    def float_onnx(self) -> bytes:
        """The float32 ONNX graph of the source, converted once (tf2onnx is slow)."""
        if "onnx_float32" not in self.cache:
            from .onnx_export import convert_onnx

            self.cache["onnx_float32"] = convert_onnx(self.model, output_kind=self.meta.output_kind).SerializeToString()
        return self.cache["onnx_float32"]


# ---- TFLite -----------------------------------------------------------------------------------

def _tflite_file(ctx: ConvertContext, job: Job, raw: bytes) -> bytes:
    from .metadata import embed_tflite_metadata

    return embed_tflite_metadata(raw, ctx.file_meta(job), card=ctx.card)


@register_converter(Format.TFLITE, Precision.FLOAT32, Precision.FLOAT16, Precision.DYNAMIC)
def tflite_float(ctx: ConvertContext, job: Job) -> bytes:
    from .tflite import convert_tflite

    return _tflite_file(ctx, job, convert_tflite(ctx.model, job.precision))


SPEED_KEY = "tflite_int8_speed"  # ctx.cache: (the TFLiteSelective, the speed.SpeedChoice) of the int8 file


@register_converter(Format.TFLITE, Precision.INT8, needs=(CALIBRATION,))
def tflite_int8_cpu(ctx: ConvertContext, job: Job) -> bytes:
    """The CPU int8 file: full-integer except the layers measured faster in float32 here
    (``speed.py``); the choice stays in ``ctx.cache[SPEED_KEY]`` for export.json and the budget."""
    from .._term import info
    from ..errors import first_line
    from .budget import TFLiteSelective, with_float_layers
    from .metadata import embed_tflite_metadata
    from .speed import SpeedChoice, convert_int8_cpu

    images = ctx.calibration_images()
    try:
        sel = TFLiteSelective(ctx.model, images, io=ctx.io)
    except Exception as exc:  # noqa: BLE001 - the choice needs the tf_keras rebuild; the plain converter may not
        why = f"int8: full-integer; the per-layer speed choice could not run ({first_line(exc)})"
        info(why)
        ctx.cache[SPEED_KEY] = (None, SpeedChoice((), (), threads=1, margin=0.0, message=why))
        return _tflite_file(ctx, job, _full_integer(ctx))
    raw, choice = convert_int8_cpu(ctx.model, images, io=ctx.io, selective=sel,
                                   full_integer=lambda: _full_integer(ctx))
    ctx.cache[SPEED_KEY] = (sel, choice)
    return embed_tflite_metadata(raw, with_float_layers(ctx.file_meta(job), choice.layer_errors()), card=ctx.card)


def _full_integer(ctx: ConvertContext) -> bytes:
    """The full-integer TFLite file, converted once for int8 (when it keeps no layer float) and int8-full."""
    from .tflite import convert_tflite

    if "tflite_int8_full" not in ctx.cache:
        ctx.cache["tflite_int8_full"] = convert_tflite(ctx.model, Precision.INT8_FULL,
                                                       calibration=ctx.calibration_images(), io=ctx.io)
    return ctx.cache["tflite_int8_full"]


@register_converter(Format.TFLITE, Precision.INT8_FULL, needs=(CALIBRATION,))
def tflite_int8_full(ctx: ConvertContext, job: Job) -> bytes:
    return _tflite_file(ctx, job, _full_integer(ctx))


@register_converter(Format.TFLITE, Precision.INT16X8, needs=(CALIBRATION,))
def tflite_calibrated(ctx: ConvertContext, job: Job) -> bytes:
    from .tflite import convert_tflite

    raw = convert_tflite(ctx.model, job.precision, calibration=ctx.calibration_images(), io=ctx.io)
    return _tflite_file(ctx, job, raw)


@register_converter(Format.TFLITE, Precision.QAT, needs=(CALIBRATION, TRAINING))
def tflite_qat(ctx: ConvertContext, job: Job) -> bytes:
    from .tflite import convert_tflite

    raw = convert_tflite(ctx.qat(), Precision.QAT, calibration=ctx.calibration_images(), io=ctx.io)
    return _tflite_file(ctx, job, raw)


# ---- ONNX and ORT -----------------------------------------------------------------------------

def _onnx_file(ctx: ConvertContext, job: Job, proto) -> bytes:
    from .metadata import embed_onnx_metadata
    from .ort_mobile import fix_batch

    if ctx.batch is not None:
        proto = fix_batch(proto, ctx.batch)
    embed_onnx_metadata(proto, ctx.file_meta(job))
    return proto.SerializeToString()


def _load_onnx(data: bytes):
    from .._optional import require

    return require("onnx").load_from_string(data)


@register_converter(Format.ONNX, Precision.FLOAT32)
def onnx_float(ctx: ConvertContext, job: Job) -> bytes:
    return _onnx_file(ctx, job, _load_onnx(ctx.float_onnx()))


@register_converter(Format.ONNX, Precision.DYNAMIC)
def onnx_dynamic(ctx: ConvertContext, job: Job) -> bytes:
    from .onnx_export import quantize_onnx

    return _onnx_file(ctx, job, quantize_onnx(_load_onnx(ctx.float_onnx()), Precision.DYNAMIC))


@register_converter(Format.ONNX, Precision.INT8, needs=(CALIBRATION,))
def onnx_int8(ctx: ConvertContext, job: Job) -> bytes:
    from .onnx_export import quantize_onnx

    proto = quantize_onnx(_load_onnx(ctx.float_onnx()), Precision.INT8, calibration=ctx.calibration_images())
    return _onnx_file(ctx, job, proto)


@register_converter(Format.ONNX, Precision.QAT, needs=(TRAINING,))
def onnx_qat(ctx: ConvertContext, job: Job) -> bytes:
    from .onnx_export import convert_onnx, store_qat_weights_as_int8

    return _onnx_file(ctx, job, store_qat_weights_as_int8(convert_onnx(ctx.qat(), output_kind=ctx.meta.output_kind)))


def _ort_needs(p: Precision) -> tuple:
    return tuple(CONVERTERS[(Format.ONNX, p)].needs)


def ort_from_onnx(ctx: ConvertContext, job: Job) -> bytes:
    """The ORT file of the ONNX file this export delivered for the same precision (budgeted
    or not), so the two compute the same thing; only the metadata says ``ort``."""
    from .ort_mobile import convert_to_ort

    onnx_bytes = ctx.delivered_onnx.get(job.precision)
    if onnx_bytes is None:
        raise UsageError(f"no checked ONNX {job.precision.value} file to convert (it failed or was skipped)")
    from .metadata import embed_onnx_metadata

    proto = _load_onnx(onnx_bytes)
    meta = ctx.file_meta(job)
    embed_onnx_metadata(proto, meta.with_(extra={**proto_extra(proto), **meta.extra}))
    return convert_to_ort(proto.SerializeToString())


def proto_extra(proto) -> dict:
    """The ``extra`` of the edgeclf metadata already in an ONNX proto (float layers of a budget)."""
    from ..runtime.metadata import read_onnx_metadata

    spec = read_onnx_metadata({p.key: p.value for p in proto.metadata_props})
    return dict(spec.extra) if spec is not None else {}


for _p in SUPPORTED_PRECISIONS[Format.ORT]:
    register_converter(Format.ORT, _p, needs=_ort_needs(_p), from_onnx=True)(ort_from_onnx)


def mobile_usability(ctx: ConvertContext, job: Job, data: bytes):
    """ORT's own verdict on NNAPI/CoreML for an ONNX or ORT file (once per precision: the two
    share one graph), or None for other formats."""
    if job.format not in (Format.ONNX, Format.ORT):
        return None
    if job.precision not in ctx.mobile:
        from .ort_mobile import check_mobile_usability

        onnx_bytes = data if job.format is Format.ONNX else ctx.delivered_onnx[job.precision]
        ctx.mobile[job.precision] = check_mobile_usability(onnx_bytes, name=job.name)
    return replace(ctx.mobile[job.precision], file=job.name)


# ---- planning ---------------------------------------------------------------------------------

def _parse_all(enum, values, *, name: str) -> Optional[tuple]:
    from ..runtime.spec import parse_enum

    if not values:
        return None
    out = []
    for v in values:
        m = parse_enum(enum, v, name=name)
        if m not in out:
            out.append(m)
    return tuple(out)


def _requested(formats, precisions) -> list[tuple[Format, Precision]]:
    """The (format, precision) pairs the options name; UsageError for a pair no format holds."""
    from ..runtime.spec import DEFAULT_FORMATS

    fmts = _parse_all(Format, formats, name="format") or DEFAULT_FORMATS
    precs = _parse_all(Precision, precisions, name="precision")
    if precs is None:
        return [(f, p) for f in fmts for p in SUPPORTED_PRECISIONS[f]]

    def supported(f):
        return ", ".join(p.value for p in SUPPORTED_PRECISIONS[f])

    pairs = []
    for p in precs:
        if formats:
            for f in fmts:
                if p not in SUPPORTED_PRECISIONS[f]:
                    raise UsageError(f"{f.value} does not support precision {p.value}; {f.value} supports: "
                                     f"{supported(f)}")
        here = [f for f in fmts if p in SUPPORTED_PRECISIONS[f]]
        if not here:
            raise UsageError(f"precision {p.value} is not supported by "
                             + "; ".join(f"{f.value} (supports {supported(f)})" for f in fmts))
        pairs += [(f, p) for f in here]
    return pairs


def _missing(needs: frozenset, precision: Precision, *, has_calibration: bool, has_training: bool) -> Optional[str]:
    if TRAINING in needs and not has_training:
        return f"{precision.value} needs labelled training images (a run directory, or --data DATA)"
    if CALIBRATION in needs and not has_calibration:
        return f"{precision.value} needs calibration images (--calibration DATA or --data DATA)"
    return None


def plan_jobs(formats=None, precisions=None, *, has_calibration: bool = True,
              has_training: bool = True) -> tuple[list[Job], list[tuple[str, str, str]]]:
    """The jobs to run, in order, and the default-list pairs left out with the reason.

    Every TFLite file comes first, then ONNX, then ORT; float32 first within each, so size
    ratios can be computed. An ``.ort`` file is converted from the ONNX file of its precision,
    so that ONNX job is planned (not delivered, when only ``ort`` was asked for). A pair that
    was asked for by name and cannot be made here raises UsageError.
    """
    explicit = bool(precisions)
    kept, left = [], []
    for fmt, p in _requested(formats, precisions):
        why = _missing(CONVERTERS[(fmt, p)].needs, p, has_calibration=has_calibration, has_training=has_training)
        if why is None:
            kept.append((fmt, p))
        elif explicit:
            raise UsageError(f"{fmt.value} {p.value}: {why}")
        else:
            left.append((fmt.value, p.value, why))
    order = {p: i for i, p in enumerate(Precision)}
    formats_order = list(Format)
    jobs = [Job(f, p) for f, p in kept]
    for f, p in kept:
        if CONVERTERS[(f, p)].from_onnx and (Format.ONNX, p) not in kept:
            jobs.append(Job(Format.ONNX, p, deliver=False))
    jobs.sort(key=lambda j: (formats_order.index(j.format), order[j.precision]))
    return jobs, left
