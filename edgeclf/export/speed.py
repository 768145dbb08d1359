"""The int8 TFLite file for CPUs: full-integer, except the layers int8 makes slower here.

Why: XNNPACK's int8 kernels are not faster than its float32 ones for every layer. On an
AMX/VNNI Xeon the int8 first convolution over 3 colour channels cost 3.5x its float32
version (its int8 kernel pads each tap's channels to the dot-product width), and int8
depthwise convolutions were slower than float32 ones (``docs/speed.md``). Which layers lose
depends on the CPU and the engine, so this measures instead of guessing by name:

1. ``candidate_ops``: the first convolution and every depthwise convolution of the
   full-integer file.
2. ``measure_layer_times``: each candidate is timed twice on this machine with LiteRT's
   per-operator prefix timing (``runtime.op_profile.time_spans``): in the full-integer file
   (with the QUANTIZE in front of it, if any) and in a file where every candidate is float32
   (with the DEQUANTIZE/QUANTIZE it then needs: a float layer pays for them).
3. ``choose_float_layers`` (pure, machine-independent): a layer stays float where its float
   span is faster by ``margin``; every other layer is int8.
4. ``choose_for_cpu`` then times the whole chosen file against the full-integer one
   (alternating rounds); if it is not faster the choice is dropped and the file is
   full-integer. So the CPU int8 file is never slower than the full-integer one here.

The file keeps uint8 input and output (MediaPipe and the Task Library load it). Kept layers
and the measured times go to ``export.json`` (``SpeedChoice.to_dict``); the accuracy budget
starts from this list (``SpeedChoice.layer_errors``), so a file's float layers are one list,
each with its reason: ``speed`` or ``accuracy``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from .._term import info
from ..runtime.spec import IOType, Precision

SPEED, ACCURACY = "speed", "accuracy"
# A layer stays float only when float is at least this much faster (its span's time): less
# is within what a shared machine's noise moves.
DEFAULT_MARGIN = 0.10
# ... and saves at least this much: below it the choice would follow noise from export to
# export (tiny models are then always full-integer, and their files reproducible).
MIN_SAVING_MS = 0.02
# The chosen file must beat the full-integer one by this much as a whole, else full-integer.
WHOLE_FILE_MARGIN = 0.03
DEFAULT_ROUNDS = 9
# Invokes per prefix per round; the minimum is taken (the run least disturbed by other load).
DEFAULT_INVOKES = 10
CANDIDATE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
_CONVERT_OPS = ("QUANTIZE", "DEQUANTIZE")


@dataclass(frozen=True)
class LayerTiming:
    """One candidate layer's time on this machine, int8 and float32 (spans, see the module doc)."""

    layer: str  # the Keras layer name (the engine's tensor name when none matches)
    op: str  # CONV_2D, DEPTHWISE_CONV_2D
    nodes: tuple[str, ...]  # what the quantizer keeps float (TFLite tensor names)
    int8_ms: float
    float_ms: float

    @property
    def saving_ms(self) -> float:
        return self.int8_ms - self.float_ms

    def to_dict(self) -> dict:
        return {"layer": self.layer, "op": self.op, "int8_ms": round(self.int8_ms, 4),
                "float_ms": round(self.float_ms, 4), "nodes": list(self.nodes)}


def choose_float_layers(timings: Sequence[LayerTiming], *, margin: float = DEFAULT_MARGIN,
                        min_saving_ms: float = MIN_SAVING_MS) -> tuple[list[LayerTiming], list[LayerTiming]]:
    """``(kept float, left int8)``: a layer is kept float where its float time is below
    ``(1 - margin)`` x its int8 time and saves at least ``min_saving_ms``; a time at or below
    zero is noise (a prefix difference), so that layer stays int8. Kept layers come largest
    saving first; the others keep their order. Pure: the same timings give the same choice
    on any machine."""
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be in [0, 1); got {margin}")
    keep, rest = [], []
    for t in timings:
        measured = t.float_ms > 0 and t.int8_ms > 0
        faster = measured and t.float_ms < (1.0 - margin) * t.int8_ms and t.saving_ms >= min_saving_ms
        (keep if faster else rest).append(t)
    keep.sort(key=lambda t: -t.saving_ms)
    return keep, rest


@dataclass(frozen=True)
class SpeedChoice:
    """Which layers of the CPU int8 file stay float32 for speed, and the figures behind it."""

    float_layers: tuple[LayerTiming, ...]
    int8_layers: tuple[LayerTiming, ...]  # the candidates measured faster (or no slower) in int8
    threads: int
    margin: float
    whole: dict = field(default_factory=dict)  # full_int8_ms, chosen_ms, ratio, rounds; {} when not timed
    message: str = ""

    @property
    def nodes(self) -> list[str]:
        return [n for t in self.float_layers for n in t.nodes]

    def to_dict(self) -> dict:
        return {"float_layers": [{**t.to_dict(), "reason": SPEED} for t in self.float_layers],
                "int8_layers": [t.to_dict() for t in self.int8_layers], "threads": self.threads,
                "margin": self.margin, "whole": dict(self.whole), "message": self.message}

    def layer_errors(self) -> tuple:
        """The kept layers in the accuracy budget's terms (``budget.LayerError``), so that the
        budget starts from them (``enforce_budget(..., keep_float=...)``)."""
        from .budget import LayerError

        return tuple(LayerError(layer=t.layer, ops=(t.op,), error=0.0, nodes=t.nodes,
                                stats={"reason": SPEED, "int8_ms": t.int8_ms, "float_ms": t.float_ms})
                     for t in self.float_layers)


def float_layer_reasons(speed: Optional[SpeedChoice], accuracy_layers: Sequence[str] = ()) -> list[dict]:
    """One list of a file's float layers, each with its reason: speed first, then accuracy."""
    out = [{"layer": t.layer, "reason": SPEED} for t in (speed.float_layers if speed else ())]
    seen = {d["layer"] for d in out}
    out += [{"layer": name, "reason": ACCURACY} for name in accuracy_layers if name not in seen]
    return out


# ---- where the candidates are in a file ----------------------------------------------------

def candidate_ops(ops: Sequence[dict]) -> list[int]:
    """Indices (in an ``op_table``) of the first CONV_2D and of every DEPTHWISE_CONV_2D."""
    out, first = [], True
    for op in ops:
        if op["op"] == "CONV_2D" and first:
            out.append(op["index"])
            first = False
        elif op["op"] == "DEPTHWISE_CONV_2D":
            out.append(op["index"])
    return out


def op_span(ops: Sequence[dict], i: int) -> tuple[int, int]:
    """``(first, last)``: operator ``i`` with the QUANTIZE/DEQUANTIZE ops right before it that
    make its input, and right after it that convert its output (what keeping it float costs)."""
    a = b = i
    while a > 0 and ops[a - 1]["op"] in _CONVERT_OPS and ops[a - 1]["outputs"][0] == ops[a]["inputs"][0]:
        a -= 1
    while (b + 1 < len(ops) and ops[b + 1]["op"] in _CONVERT_OPS and ops[b + 1]["inputs"]
           and ops[b + 1]["inputs"][0] == ops[b]["outputs"][0]):
        b += 1
    return a, b


def matched_candidates(full_ops: Sequence[dict], mixed_ops: Sequence[dict]) -> list[tuple[int, int]]:
    """Pairs ``(index in full, index in mixed)`` of the same candidate layer, matched by the
    order of conv ops (quantization converts, never reorders) and checked by type and shape."""
    def convs(ops):
        return [op for op in ops if op["op"] in CANDIDATE_OPS]

    a, b = convs(full_ops), convs(mixed_ops)
    if [(o["op"], o["out_shape"]) for o in a] != [(o["op"], o["out_shape"]) for o in b]:
        return []
    wanted = set(candidate_ops(full_ops))
    return [(x["index"], y["index"]) for x, y in zip(a, b) if x["index"] in wanted]


def candidate_spans(full_ops: Sequence[dict], mixed_ops: Sequence[dict]) -> list[tuple[int, tuple, tuple]]:
    """``(index in full, span in full, span in mixed)`` per candidate; [] when the two files
    do not line up (then nothing can be compared and every layer stays int8)."""
    pairs = matched_candidates(full_ops, mixed_ops)
    if len(pairs) != len(candidate_ops(full_ops)):
        return []
    return [(i, op_span(full_ops, i), op_span(mixed_ops, j)) for i, j in pairs]


def layer_timings(full_ops: Sequence[dict], spans: Sequence[tuple[int, tuple, tuple]], int8_ms: Sequence[float],
                  float_ms: Sequence[float], layer_of: Callable[[str], str]) -> list[LayerTiming]:
    """The candidates' ``LayerTiming`` from their spans' measured times (pure)."""
    return [LayerTiming(layer=layer_of(full_ops[i]["out_name"]), op=full_ops[i]["op"],
                        nodes=(full_ops[i]["out_name"],), int8_ms=float(a), float_ms=float(b))
            for (i, _, _), a, b in zip(spans, int8_ms, float_ms)]


# ---- measuring -------------------------------------------------------------------------------

def measure_layer_times(sel, *, layer_of: Callable[[str], str], threads: int = 1, rounds: int = DEFAULT_ROUNDS,
                        invokes: int = DEFAULT_INVOKES) -> tuple[list[LayerTiming], bytes]:
    """Time every candidate layer of ``sel``'s (a ``budget.TFLiteSelective``) full-integer file
    in int8 and in float32 on this machine; also return the full-integer file."""
    from ..runtime.op_profile import op_table, time_spans

    full = sel.quantize([])
    full_ops = op_table(full)
    cands = candidate_ops(full_ops)
    if not cands:
        return [], full
    mixed = sel.quantize([full_ops[i]["out_name"] for i in cands])
    spans = candidate_spans(full_ops, op_table(mixed))
    if not spans:
        info("int8 for CPUs: the file with float candidates does not line up with the full-integer one; "
             "keeping every layer int8")
        return [], full
    t_int8, t_float = time_spans([(full, [s for _, s, _ in spans]), (mixed, [s for _, _, s in spans])],
                                 threads=threads, rounds=rounds, invokes=invokes)
    return layer_timings(full_ops, spans, t_int8, t_float, layer_of), full


def whole_file_ratio(a: bytes, b: bytes, *, threads: int, rounds: int, invokes: int = DEFAULT_INVOKES) -> dict:
    """``b`` against ``a``, whole files, in alternating rounds: each file's median of per-round
    minima, and the median of the per-round ratios b/a."""
    from ..runtime.op_profile import interpreter, min_invoke_ms

    its = [interpreter(a, threads), interpreter(b, threads)]
    for it in its:
        for _ in range(3):
            it.invoke()
    ta, tb = [], []
    for _ in range(max(rounds, 1)):
        ta.append(min_invoke_ms(its[0], invokes))
        tb.append(min_invoke_ms(its[1], invokes))
    return {"full_int8_ms": round(statistics.median(ta), 4), "chosen_ms": round(statistics.median(tb), 4),
            "ratio": round(float(statistics.median(np.divide(tb, ta))), 4), "rounds": rounds, "threads": threads}


def choose_for_cpu(sel, *, threads: int = 1, rounds: int = DEFAULT_ROUNDS, margin: float = DEFAULT_MARGIN,
                   name: str = "int8") -> tuple[bytes, SpeedChoice]:
    """The CPU int8 file of ``sel`` (a ``budget.TFLiteSelective``) and why it is what it is."""
    from .layer_names import keras_layer_names, match_layer

    names, containers = keras_layer_names(sel.model)
    timings, full = measure_layer_times(sel, layer_of=lambda n: match_layer(n, names, containers) or n,
                                        threads=threads, rounds=rounds)
    keep, rest = choose_float_layers(timings, margin=margin)
    whole: dict = {}
    data = full
    if keep:
        chosen = sel.quantize([n for t in keep for n in t.nodes])
        whole = whole_file_ratio(full, chosen, threads=threads, rounds=rounds)
        if whole["ratio"] <= 1.0 - WHOLE_FILE_MARGIN:
            data = chosen
        else:
            msg = (f"{name}: {len(keep)} layer(s) ran faster float32 alone, but the file with them float was "
                   f"{whole['ratio']:.2f}x the full-integer file; full-integer it is")
            return full, SpeedChoice((), tuple(keep) + tuple(rest), threads, margin, whole, msg)
    if keep:
        msg = (f"{name}: kept {len(keep)} of {len(timings)} measured layer(s) float32, faster here than int8 "
               f"({', '.join(f'{t.layer} {t.float_ms:.3f} vs {t.int8_ms:.3f} ms' for t in keep[:4])}"
               f"{', ...' if len(keep) > 4 else ''}): the file is {whole['ratio']:.2f}x the full-integer one")
    elif timings:
        msg = (f"{name}: none of {len(timings)} measured layer(s) ran at least {margin:.0%} and {MIN_SAVING_MS} ms "
               "faster in float32 here: full-integer")
    else:
        msg = f"{name}: no first or depthwise convolution to measure: full-integer"
    return data, SpeedChoice(tuple(keep), tuple(rest), threads, margin, whole, msg)


def convert_int8_cpu(model, calibration: np.ndarray, *, io: IOType = IOType.UINT8, threads: int = 1,
                     rounds: int = DEFAULT_ROUNDS, selective=None,
                     full_integer: Optional[Callable[[], bytes]] = None) -> tuple[bytes, SpeedChoice]:
    """The int8 TFLite file for CPUs (``Precision.INT8``) and its ``SpeedChoice``.

    When no layer is faster in float32 here, the file is the full-integer one, exactly as
    ``Precision.INT8_FULL`` converts it (``full_integer()``, default ``tflite.convert_tflite``):
    then ``int8`` and ``int8-full`` compute the same numbers.

    Args:
        model: a tf_keras model or a ``keras_load.LoadedModel``.
        calibration: uint8 images (N, H, W, 3) for the int8 ranges.
        io: the input/output type (uint8: MediaPipe and the Task Library load it).
        threads: the LiteRT threads the layers are timed with.
        rounds: alternating timing rounds (more: steadier on a loaded machine).
        selective: a ``budget.TFLiteSelective`` already calibrated for ``model`` (reused, so
            the accuracy budget need not calibrate again).
        full_integer: makes the full-integer file (the exporter passes one that it caches for
            its int8-full file).

    Example:
        >>> data, choice = convert_int8_cpu(model, images)   # doctest: +SKIP
        >>> [t.layer for t in choice.float_layers]           # doctest: +SKIP
        ['conv1']
    """
    from .budget import TFLiteSelective

    sel = selective if selective is not None else TFLiteSelective(model, calibration, io=IOType(io))
    info("int8 for CPUs: timing the first and depthwise convolutions in int8 and float32 on this machine ...")
    data, choice = choose_for_cpu(sel, threads=threads, rounds=rounds)
    info(choice.message)
    if not choice.float_layers:
        if full_integer is None:
            from .tflite import convert_tflite

            return convert_tflite(model, Precision.INT8_FULL, calibration=calibration, io=io), choice
        return full_integer(), choice
    return data, choice
