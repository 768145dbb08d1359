"""Accuracy budget for int8 files: the per-layer quantization error, and a mixed file that
keeps just enough layers float to meet a budget.

Both engines rank the layers of one model by how much error their int8 version adds, on the
calibration images, and name them after the Keras layers:

- TFLite: ``tf.lite.experimental.QuantizationDebugger``'s NumericVerify statistics; a layer's
  error is its ``rmse/scale``: the RMS difference between the int8 op and the float op fed
  the same quantized input, in quantization steps of its output (pure rounding gives about
  0.29; the LiteRT guide calls layers above 0.7 suspect). A layer is kept float with
  ``denylisted_nodes`` when the calibrated model is quantized (the calibration runs once).
- ONNX: ``onnxruntime.quantization.qdq_loss_debug``'s activations of the float and the QDQ
  model; a layer's error is the noise it adds: its output's relative noise power
  (``10^(-SQNR/10)`` against the float model) minus the largest of its inputs'. A layer is
  kept float with ``quantize_static(nodes_to_exclude=...)``.

The export's budget re-ranks the layers by measured sensitivity (``rank_by_sensitivity``:
the output error of the file with only that layer int8), since on deep models the local
figures are about one rounding step everywhere. ``meet_budget`` then keeps the ranked layers
float, a growing prefix of the ranking (1, 2, 4, ... then bisection), until the file meets the budget on the validation images or
nothing is left to try; it returns the best file it found and a ``BudgetResult`` that says
which layers stayed float, why, and what it cost.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .._quiet import native_stderr_silenced
from .._term import format_table, human_bytes, info
from ..errors import ExportError, UsageError, first_line
from ..runtime import metrics
from ..runtime.spec import Format, INPUT_NAME, IOType
from .layer_names import as_tf_keras, keras_layer_names, match_layer

# Layers ranked on at most this many calibration images: the ranking settles long before.
RANKING_IMAGES = 64


@dataclass(frozen=True)
class Budget:
    """What a quantized file must keep against the Keras model on the validation images:
    accuracy at most ``max_accuracy_drop`` points below it and/or top-1 agreement of at least
    ``min_agreement`` (the gates ``edgeclf compare`` spells the same way)."""

    max_accuracy_drop: Optional[float] = None
    min_agreement: Optional[float] = None

    def __post_init__(self):
        metrics.validate_thresholds(self.max_accuracy_drop, self.min_agreement)
        if self.max_accuracy_drop is None and self.min_agreement is None:
            raise UsageError("an accuracy budget needs max_accuracy_drop and/or min_agreement")

    @classmethod
    def from_options(cls, max_accuracy_drop: Optional[float], min_agreement: Optional[float]) -> Optional["Budget"]:
        """The budget the options ask for, or None when they ask for none."""
        if max_accuracy_drop is None and min_agreement is None:
            return None
        return cls(max_accuracy_drop, min_agreement)

    def describe(self) -> str:
        parts = []
        if self.max_accuracy_drop is not None:
            parts.append(f"accuracy drop <= {self.max_accuracy_drop:g} points")
        if self.min_agreement is not None:
            parts.append(f"agreement >= {self.min_agreement:g}")
        return " and ".join(parts)

    def failures(self, probs: np.ndarray, keras_probs: np.ndarray, y: Optional[np.ndarray]) -> tuple[str, ...]:
        """Why ``probs`` misses the budget (empty when it meets it)."""
        if y is None:
            if self.max_accuracy_drop is not None:
                raise UsageError("--max-accuracy-drop needs labelled validation images (a run directory or --data "
                                 "DATA); use --min-agreement, which needs no labels")
            y = np.zeros(len(probs), np.int64)
        r = metrics.check_parity(probs, keras_probs, y, max_accuracy_drop=self.max_accuracy_drop,
                                 min_agreement=self.min_agreement)
        return r.failures


@dataclass(frozen=True)
class LayerError:
    """One Keras layer's quantization error, as one engine measured it."""

    layer: str  # the Keras layer name (the engine's name when no layer matches)
    ops: tuple[str, ...]  # the engine's op types for this layer
    error: float  # the ranking metric (higher is worse); see LayerErrors.metric
    nodes: tuple[str, ...]  # what the engine keeps float: TFLite tensor names, ONNX node names
    stats: dict = field(default_factory=dict)  # the engine's own figures

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ops"], d["nodes"] = list(self.ops), list(self.nodes)
        return d


@dataclass(frozen=True)
class LayerErrors:
    """The per-layer quantization error of one int8 file, most harmful layer first."""

    format: str
    metric: str  # what ``LayerError.error`` measures
    images: int  # calibration images the errors were measured on
    layers: tuple[LayerError, ...]

    def to_dict(self) -> dict:
        return {"format": self.format, "metric": self.metric, "images": self.images,
                "layers": [x.to_dict() for x in self.layers]}

    def table(self, top: Optional[int] = None) -> str:
        rows = [[i, x.layer, ",".join(x.ops), f"{x.error:.4g}"]
                for i, x in enumerate(self.layers[:top] if top else self.layers, 1)]
        return format_table(["rank", "layer", "ops", self.metric], rows)


# ---- TFLite ------------------------------------------------------------------------------------

def _float_batches(images: np.ndarray):
    return lambda: ([images[i : i + 1].astype(np.float32)] for i in range(len(images)))


class TFLiteSelective:
    """A Keras model calibrated once for TFLite int8, quantized with any layers kept float."""

    def __init__(self, model, calibration: np.ndarray, *, io: IOType = IOType.UINT8):
        from .._optional import import_tensorflow
        from .tflite import int8_settings

        tf = import_tensorflow()
        self._tf = tf
        self.model = model = as_tf_keras(model)
        self.io = IOType(io)
        self.calibration = calibration
        with native_stderr_silenced():
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
        int8_settings(tf, converter, calibration)
        # Calibrate only: the quantization itself runs per denylist in quantize().
        converter.experimental_new_quantizer = True
        converter._experimental_calibrate_only = True  # the QuantizationDebugger's own way in
        try:
            with native_stderr_silenced():
                self._calibrated = converter.convert()
        except Exception as exc:  # the converter raises anything
            raise ExportError(f"TFLite int8 calibration failed: {first_line(exc)}") from None
        self._disable_per_channel = bool(converter._experimental_disable_per_channel)

    def _mlir_quantize(self, denylist: Sequence[str], *, debug: bool = False) -> bytes:
        from tensorflow.lite.python import convert  # the entry point the QuantizationDebugger uses

        from .tflite import io_dtype

        tf = self._tf
        dtype = io_dtype(tf, self.io)
        try:
            with native_stderr_silenced():
                return bytes(convert.mlir_quantize(
                    self._calibrated, disable_per_channel=self._disable_per_channel,
                    input_data_type=tf.float32 if debug else dtype, output_data_type=tf.float32 if debug else dtype,
                    enable_numeric_verify=debug, denylisted_nodes=list(denylist) or None))
        except Exception as exc:
            raise ExportError(f"TFLite int8 quantization with {len(denylist)} layers kept float failed: "
                              f"{first_line(exc)}") from None

    def quantize(self, float_nodes: Sequence[str] = ()) -> bytes:
        """The int8 file with ``float_nodes`` (tensor names from ``layer_errors``) kept float."""
        return self._mlir_quantize(float_nodes)

    def file(self, float_layers: Sequence[LayerError], meta) -> bytes:
        """The finished file: ``float_layers`` kept float, ``meta`` (a ModelSpec) embedded."""
        from .metadata import embed_tflite_metadata

        raw = self.quantize([n for x in float_layers for n in x.nodes])
        return embed_tflite_metadata(raw, with_float_layers(meta, float_layers))

    def layer_errors(self, images: Optional[np.ndarray] = None) -> LayerErrors:
        """Each layer's rmse/scale on ``images`` (default: the calibration images)."""
        tf = self._tf
        images = (self.calibration if images is None else images)[:RANKING_IMAGES]
        debug_model = self._mlir_quantize((), debug=True)
        try:
            with native_stderr_silenced():
                debugger = tf.lite.experimental.QuantizationDebugger(
                    quant_debug_model_content=debug_model, debug_dataset=_float_batches(images))
                debugger.run()
                dump = io.StringIO()
                debugger.layer_statistics_dump(dump)
        except Exception as exc:
            raise ExportError(f"the TFLite quantization debugger failed: {first_line(exc)}") from None
        names, containers = keras_layer_names(self.model)
        out_layer = self.model.layers[-1].name
        by_layer: dict[str, dict] = {}
        for row in csv.DictReader(io.StringIO(dump.getvalue())):
            tensor = row["tensor_name"]
            scale = float(row["scale"]) or 1.0
            rmse = math.sqrt(max(float(row["mean_squared_error"]), 0.0))
            stats = {"tensor": tensor, "op": row["op_name"], "rmse": rmse, "scale": scale,
                     "rmse/scale": rmse / scale, "range": 255.0 * scale,
                     "mean_error": float(row["mean_error"]), "max_abs_error": float(row["max_abs_error"])}
            layer = match_layer(tensor, names, containers)
            if layer is None:
                # The output tensor is named after the signature (StatefulPartitionedCall:0).
                layer = out_layer if "StatefulPartitionedCall" in tensor else tensor
            entry = by_layer.setdefault(layer, {"ops": [], "nodes": [], "stats": []})
            entry["ops"].append(row["op_name"])
            entry["nodes"].append(tensor)
            entry["stats"].append(stats)
        layers = [LayerError(layer=k, ops=tuple(dict.fromkeys(v["ops"])), nodes=tuple(v["nodes"]),
                             error=max(s["rmse/scale"] for s in v["stats"]),
                             stats={"tensors": v["stats"]})
                  for k, v in by_layer.items()]
        layers.sort(key=lambda x: -x.error)
        return LayerErrors(format=Format.TFLITE.value, metric="rmse/scale", images=len(images), layers=tuple(layers))


# ---- ONNX ----------------------------------------------------------------------------------------

def _feeds(images: np.ndarray) -> list[dict]:

    return [{INPUT_NAME: images[i : i + 1].astype(np.float32)} for i in range(len(images))]


class OnnxSelective:
    """A float ONNX model quantized as ``onnx_export.quantize_onnx`` does (static QDQ,
    per-channel, uint8 activations, int8 weights, MinMax), with any layers kept float."""

    def __init__(self, float_model: bytes, calibration: np.ndarray, *, layer_names: Sequence[str] = (),
                 containers: set[str] = frozenset()):
        from .._optional import require

        self._onnx = require("onnx", purpose="ONNX export")
        self._q = require("onnxruntime.quantization", purpose="ONNX quantization")
        self.calibration = calibration
        self.layer_names = list(layer_names)
        self.containers = set(containers)
        self._tmp = tempfile.TemporaryDirectory(prefix="edgeclf-budget-")
        tmp = Path(self._tmp.name)
        self._float = tmp / "float.onnx"
        self._float.write_bytes(float_model)
        pre = tmp / "pre.onnx"
        try:  # as quantize_onnx: pre-processing only helps
            with native_stderr_silenced():
                self._q.shape_inference.quant_pre_process(str(self._float), str(pre), skip_symbolic_shape=True)
            self._float = pre
        except Exception:
            pass
        self._graph = self._onnx.load(str(self._float)).graph

    def _quantize_to(self, dst: Path, float_nodes: Sequence[str]) -> None:
        from .onnx_export import quantize_static_int8

        q = self._q
        try:
            with native_stderr_silenced():
                # the ranges depend on the float model and the images only: calibrate once
                quantize_static_int8(q, self._float, dst, self.calibration, nodes_to_exclude=list(float_nodes),
                                     calibration_cache_path=str(Path(self._tmp.name) / "calibration.json"))
        except Exception as exc:
            raise ExportError(f"ONNX int8 quantization with {len(float_nodes)} nodes kept float failed: "
                              f"{first_line(exc)}") from None

    def quantize(self, float_nodes: Sequence[str] = ()) -> bytes:
        """The int8 model (no edgeclf metadata yet) with ``float_nodes`` (node names) kept float."""
        dst = Path(self._tmp.name) / "mixed.onnx"
        self._quantize_to(dst, float_nodes)
        return dst.read_bytes()

    def file(self, float_layers: Sequence[LayerError], meta) -> bytes:
        """The finished file: ``float_layers`` kept float, ``meta`` (a ModelSpec) embedded."""
        from .metadata import embed_onnx_metadata

        proto = self._onnx.load_from_string(self.quantize([n for x in float_layers for n in x.nodes]))
        embed_onnx_metadata(proto, with_float_layers(meta, float_layers))
        return proto.SerializeToString()

    def _layer_of(self, node) -> str:
        return match_layer(node.name, self.layer_names, self.containers) or node.name

    def layer_errors(self, images: Optional[np.ndarray] = None) -> LayerErrors:
        """Each layer's added relative noise power on ``images`` (default: the calibration images)."""
        from onnxruntime.quantization import qdq_loss_debug as qd

        images = (self.calibration if images is None else images)[:RANKING_IMAGES]
        tmp = Path(self._tmp.name)
        full, fa, qa = tmp / "full.onnx", tmp / "float_aug.onnx", tmp / "quant_aug.onnx"
        self._quantize_to(full, ())
        try:
            with native_stderr_silenced():
                qd.modify_model_output_intermediate_tensors(str(self._float), str(fa))
                qd.modify_model_output_intermediate_tensors(str(full), str(qa))
                float_acts = qd.collect_activations(str(fa), _feeds(images))
                quant_acts = qd.collect_activations(str(qa), _feeds(images))
                match = qd.create_activation_matching(quant_acts, float_acts)
                errors = qd.compute_activation_error(match)
        except Exception as exc:
            raise ExportError(f"ONNX Runtime's qdq_loss_debug failed: {first_line(exc)}") from None
        sqnr = {k: v["xmodel_err"] for k, v in errors.items() if "xmodel_err" in v}
        noise = {k: 10.0 ** (-v / 10.0) for k, v in sqnr.items()}
        graph = self._graph
        producer = {o: n for n in graph.node for o in n.output}
        inits = {i.name for i in graph.initializer}
        memo: dict[str, float] = {}

        def noise_of(t: str, depth: int = 0) -> float:
            # The relative noise of tensor t, or of the nearest measured tensors it comes from.
            if t in noise:
                return noise[t]
            if t in memo:
                return memo[t]
            n = producer.get(t)
            v = 0.0
            if n is not None and depth < 50:
                v = max((noise_of(i, depth + 1) for i in n.input if i and i not in inits), default=0.0)
            memo[t] = v
            return v

        by_layer: dict[str, dict] = {}
        for node in graph.node:
            layer = self._layer_of(node)
            e = by_layer.setdefault(layer, {"ops": [], "nodes": [], "outs": [], "ins": []})
            e["ops"].append(node.op_type)
            e["nodes"].append(node.name)
            e["outs"] += list(node.output)
            e["ins"] += [i for i in node.input if i and i not in inits]
        layers = []
        for layer, e in by_layer.items():
            inside = set(e["outs"])
            ins = [noise_of(t) for t in e["ins"] if t not in inside]
            measured = [t for t in e["outs"] if t in noise]
            n_in = max(ins, default=0.0)
            n_out = max((noise[t] for t in measured), default=n_in)
            stats = {"input_noise": n_in, "output_noise": n_out,
                     "sqnr_db": {t: sqnr[t] for t in measured},
                     "qdq_sqnr_db": {t: errors[t]["qdq_err"] for t in measured}}
            layers.append(LayerError(layer=layer, ops=tuple(dict.fromkeys(e["ops"])), nodes=tuple(e["nodes"]),
                                     error=max(n_out - n_in, 0.0), stats=stats))
        layers.sort(key=lambda x: -x.error)
        return LayerErrors(format=Format.ONNX.value, metric="added noise", images=len(images), layers=tuple(layers))

    def close(self) -> None:
        self._tmp.cleanup()



# ---- sensitivity: what each layer's int8 costs at the output -------------------------------

SENSITIVITY = "sensitivity"


def rank_by_sensitivity(ranking: LayerErrors, *, make: Callable[[Sequence[LayerError]], bytes],
                        predict: Callable[[bytes], np.ndarray]) -> LayerErrors:
    """Re-rank ``ranking``'s layers by what each one's int8 version alone does to the output.

    For each layer, the file with only that layer int8 (every other layer float) is compared
    with the file with every layer float, on the images ``predict`` runs: the error is the
    mean over images of sum |p - p_float| (twice the total-variation distance). The engines'
    own per-layer figures measure a layer's local error, which on a deep model (MobileNetV3)
    is about one rounding step everywhere and says little about the output; this measures the
    output. One quantization per layer, so it costs about a second a layer.
    """
    layers = [x for x in ranking.layers if x.nodes]
    if not layers:
        return ranking
    reference = predict(make(layers))
    scored = []
    for x in layers:
        probs = predict(make([y for y in layers if y is not x]))
        sens = float(np.abs(probs.astype(np.float64) - reference).sum(axis=1).mean())
        scored.append(LayerError(layer=x.layer, ops=x.ops, error=sens, nodes=x.nodes,
                                 stats={**x.stats, ranking.metric: x.error}))
    scored.sort(key=lambda x: -x.error)
    return LayerErrors(format=ranking.format, metric=SENSITIVITY, images=len(reference), layers=tuple(scored))


# ---- the search ----------------------------------------------------------------------------

@dataclass(frozen=True)
class BudgetResult:
    """How an int8 file was brought within a budget (or how close it came)."""

    file: str
    budget: dict
    met: bool
    float_layers: tuple[str, ...]  # Keras layers kept float, most harmful first
    why: tuple[dict, ...]  # per float layer: its rank and error in the ranking
    metric: str
    full_int8: dict  # agreement, accuracy, flips, size_bytes of the full-int8 file
    final: dict  # the same for the written file
    tried: tuple[dict, ...]  # every candidate: float layers, agreement, accuracy, met
    layers_ranked: int
    message: str
    ranking: tuple[dict, ...] = ()  # every ranked layer, most harmful first, with its error


    def to_dict(self) -> dict:
        d = asdict(self)
        d["float_layers"] = list(self.float_layers)
        d["why"] = [dict(x) for x in self.why]
        d["tried"] = [dict(x) for x in self.tried]
        d["ranking"] = [dict(x) for x in self.ranking]
        return d


def _figures(probs: np.ndarray, keras_probs: np.ndarray, y: Optional[np.ndarray], size: int) -> dict:
    return {"agreement": metrics.top1_agreement(probs, keras_probs),
            "accuracy": metrics.accuracy(probs, y) if y is not None else None,
            "flips": metrics.top1_flips(probs, keras_probs), "size_bytes": int(size)}


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def meet_budget(name: str, budget: Budget, ranking: LayerErrors, *, full_file: bytes, full_probs: np.ndarray,
                keras_probs: np.ndarray, y: Optional[np.ndarray], make: Callable[[Sequence[LayerError]], bytes],
                predict: Callable[[bytes], np.ndarray]) -> tuple[bytes, np.ndarray, BudgetResult]:
    """Keep the most harmful layers of ``ranking`` float until the file meets ``budget``.

    Args:
        name: the file name, for messages.
        budget: what the file must keep against the Keras model.
        ranking: the layers, most harmful first (``TFLiteSelective/OnnxSelective.layer_errors``).
        full_file, full_probs: the full-int8 file and its probabilities on the validation images.
        keras_probs, y: the Keras model's probabilities and the true labels (None: unlabelled).
        make: the finished file (metadata embedded) with the given layers kept float.
        predict: a file's probabilities on the validation images.

    Returns:
        ``(file bytes, probabilities, BudgetResult)``: the first prefix of the ranking that
        meets the budget; when none does, the candidate with the best agreement (then
        accuracy, then fewest float layers).
    """
    layers = [x for x in ranking.layers if x.nodes]
    tried: dict[int, tuple] = {}  # prefix length -> (bytes, probs, failures)
    tried[0] = (full_file, full_probs, budget.failures(full_probs, keras_probs, y))

    def attempt(k: int) -> bool:
        if k not in tried:
            data = make(layers[:k])
            probs = predict(data)
            tried[k] = (data, probs, budget.failures(probs, keras_probs, y))
            info(f"  budget: {k} layer(s) float: agreement {_pct(metrics.top1_agreement(probs, keras_probs))}"
                 + ("" if y is None else f", accuracy {_pct(metrics.accuracy(probs, y))}")
                 + (" (meets the budget)" if not tried[k][2] else ""))
        return not tried[k][2]

    n = len(layers)
    chosen = 0 if attempt(0) else None
    if chosen is None and n:
        lo, hi, k = 0, None, 1
        while k < n:  # grow the prefix: 1, 2, 4, ...
            if attempt(k):
                hi = k
                break
            lo, k = k, 2 * k
        if hi is None and attempt(n):
            hi = n
        if hi is not None:
            while hi - lo > 1:  # then the shortest passing prefix between the last miss and the first hit
                mid = (lo + hi) // 2
                if attempt(mid):
                    hi = mid
                else:
                    lo = mid
            chosen = hi
    met = chosen is not None
    if not met:
        def score(k):
            p = tried[k][1]
            acc = metrics.accuracy(p, y) if y is not None else 0.0
            return (metrics.top1_agreement(p, keras_probs), acc, -k)
        chosen = max(tried, key=score)
    data, probs, failures = tried[chosen]
    kept = layers[:chosen]
    full = _figures(full_probs, keras_probs, y, len(full_file))
    final = _figures(probs, keras_probs, y, len(data))
    size_ratio = len(data) / len(full_file) if full_file else float("nan")
    if chosen == 0 and met:
        msg = f"{name}: full int8 meets the budget ({budget.describe()}): agreement {_pct(full['agreement'])}; no layer kept float"
    elif met:
        msg = (f"{name}: full int8 missed the budget ({budget.describe()}; agreement {_pct(full['agreement'])}, "
               f"accuracy {_pct(full['accuracy'])}); kept {chosen} of {len(layers)} layers float "
               f"({', '.join(x.layer for x in kept[:6])}{', ...' if chosen > 6 else ''}): agreement "
               f"{_pct(final['agreement'])}, accuracy {_pct(final['accuracy'])}, {human_bytes(len(data))} "
               f"({size_ratio:.2f}x the full-int8 size)")
    else:
        hint = ""
        if n and n in tried and tried[n][2]:
            hint = ("; even with every layer float it misses, so the int8 input/output or the calibration is the "
                    "limit: try --io float32, more --calibration images, or qat")
        msg = (f"{name}: the budget ({budget.describe()}) cannot be met: {'; '.join(failures)} with the best file "
               f"found ({chosen} of {len(layers)} layers float, agreement {_pct(final['agreement'])}, accuracy "
               f"{_pct(final['accuracy'])}); the file is not delivered{hint}")
    rank = {x.layer: i for i, x in enumerate(ranking.layers, 1)}
    result = BudgetResult(
        file=name, budget={"max_accuracy_drop": budget.max_accuracy_drop, "min_agreement": budget.min_agreement},
        met=met, float_layers=tuple(x.layer for x in kept),
        why=tuple({"layer": x.layer, "reason": "accuracy", "rank": rank[x.layer], ranking.metric: x.error,
                   "ops": list(x.ops),
                   "nodes": list(x.nodes)} for x in kept),
        metric=ranking.metric, full_int8=full, final=final,
        tried=tuple({"float_layers": k, "agreement": metrics.top1_agreement(v[1], keras_probs),
                     "accuracy": metrics.accuracy(v[1], y) if y is not None else None,
                     "size_bytes": len(v[0]), "met": not v[2]} for k, v in sorted(tried.items())),
        layers_ranked=len(layers), message=msg,
        ranking=tuple({"layer": x.layer, ranking.metric: x.error} for x in layers))
    return data, probs, result


def predict_bytes(data: bytes, suffix: str, images: np.ndarray) -> np.ndarray:
    from ..runtime import load_classifier

    fd, tmp = tempfile.mkstemp(prefix="edgeclf-budget-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        clf = load_classifier(tmp)
        return np.concatenate([clf.predict_proba(images[i : i + 64]) for i in range(0, len(images), 64)], axis=0)
    finally:
        os.unlink(tmp)


def enforce_budget(budget: Budget, fmt: str, name: str, *, full_file: bytes, full_probs: np.ndarray,
                   keras_probs: np.ndarray, images: np.ndarray, y: Optional[np.ndarray], model,
                   calibration: np.ndarray, io: IOType, meta, float_onnx: Optional[bytes] = None,
                   keep_float: Sequence[LayerError] = (), selective=None) -> tuple[bytes, np.ndarray, BudgetResult]:
    """The exporter's int8 step: ``full_file`` unchanged when it meets ``budget``, else the mixed
    file from ``meet_budget`` (metadata ``meta`` embedded, with ``extra["float_layers"]``).

    ``keep_float``: layers ``full_file`` already keeps float (the speed choice:
    ``speed.SpeedChoice.layer_errors()``); every candidate keeps them, the ranking leaves them
    out, and the result lists them first, each ``why`` with its reason. ``selective``: the
    ``TFLiteSelective`` that made ``full_file`` (saves calibrating again).
    """
    fmt = Format(fmt)
    keep = list(keep_float)
    if not budget.failures(full_probs, keras_probs, y):
        empty = LayerErrors(fmt.value, "", 0, ())
        return _starting_from(keep, *meet_budget(
            name, budget, empty, full_file=full_file, full_probs=full_probs, keras_probs=keras_probs, y=y,
            make=lambda _: full_file, predict=lambda _: full_probs))
    info(f"{name}: misses the budget ({budget.describe()}); ranking its layers by quantization error ...")
    names, containers = keras_layer_names(model)
    if fmt is Format.TFLITE:
        sel = selective if selective is not None else TFLiteSelective(model, calibration, io=io)
    else:
        if float_onnx is None:
            raise ExportError("the float ONNX model is needed for an ONNX int8 budget")
        sel = OnnxSelective(float_onnx, calibration, layer_names=names, containers=containers)

    def make(layers):
        return sel.file(keep + list(layers), meta)
    ranking = sel.layer_errors()
    kept = {x.layer for x in keep}
    ranking = replace(ranking, layers=tuple(x for x in ranking.layers if x.layer not in kept))
    info(f"{name}: measuring each of {len(ranking.layers)} layers' effect on the output (one quantization each) ...")
    ranking = rank_by_sensitivity(ranking, make=make, predict=lambda data: predict_bytes(
        data, "." + fmt.value, calibration[:RANKING_IMAGES]))
    info(f"{name}: most harmful layers ({ranking.metric}): "
         + ", ".join(f"{x.layer} {x.error:.3g}" for x in ranking.layers[:5]))
    try:
        return _starting_from(keep, *meet_budget(name, budget, ranking, full_file=full_file, full_probs=full_probs,
                                                 keras_probs=keras_probs, y=y, make=make,
                                                 predict=lambda data: predict_bytes(data, "." + fmt.value, images)))
    finally:
        if isinstance(sel, OnnxSelective):
            sel.close()


def _starting_from(keep, data, probs, result):
    """The budget's result with the layers it started from (the speed choice) listed first."""
    if not keep:
        return data, probs, result
    why = tuple({"layer": x.layer, "reason": x.stats.get("reason", "speed"), "ops": list(x.ops),
                 "nodes": list(x.nodes), **{k: v for k, v in x.stats.items() if k.endswith("_ms")}} for x in keep)
    return data, probs, replace(result, float_layers=tuple(x.layer for x in keep) + result.float_layers,
                                why=why + result.why)


def with_float_layers(meta, layers):
    """``meta`` (a ModelSpec) saying which layers stay float: ``extra["float_layers"]`` (names)
    and ``extra["float_layer_reasons"]`` (name -> "speed" or "accuracy")."""
    if not layers:
        return meta
    return meta.with_(extra={**meta.extra, "float_layers": [x.layer for x in layers],
                             "float_layer_reasons": {x.layer: x.stats.get("reason", "accuracy") for x in layers}})
