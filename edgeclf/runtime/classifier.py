"""``load_classifier`` and ``Classifier``: a model file in, labels and probabilities out.

The classifier owns what is the same for every engine: labels and input spec from the file's
metadata (or ``labels=``), preprocessing with ``preprocess.load_image``, and turning the raw
output into probabilities (softmax of logits, probabilities as they are, ``[1 - p, p]`` for a
one-unit sigmoid). The backend owns the engine and the quantized tensors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional, Sequence, Union

import numpy as np

from ..errors import ModelFileError, UsageError
from .backend import MAX_THREADS, check_rows, load_backend, threads_arg
from .cpu import physical_cores
from .metadata import metadata_for_labels, read_labels_file
from .spec import ModelSpec, OutputKind, check_label_count

if TYPE_CHECKING:
    from .preprocess import ImageSource
    from .stream import FrameStream

# Images preprocessed and run together in ``predict``; bounds memory for long lists.
CHUNK = 32


@dataclass(frozen=True)
class Prediction:
    """One image's result: the best label, its confidence, every probability, the top k.

    The scores are the file's own, as phone clients show them: a quantized (uint8) output
    gives its 1/256 steps, not renormalised (so its row may sum to 1 within a few steps), and
    exact ties go to the lower label index, as MediaPipe's ImageClassifier lists them.
    """

    label: str
    index: int
    confidence: float
    probabilities: tuple[float, ...]
    source: Optional[str] = None  # the file path, when the image came from one
    top_k: tuple[tuple[str, float], ...] = ()  # (label, confidence), best first

    def sentence(self) -> str:
        """The tutorials' words: 'This image most likely belongs to X with a 99.45 percent confidence.'"""
        return (f"This image most likely belongs to {self.label} "
                f"with a {100 * self.confidence:.2f} percent confidence.")

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "label": self.label,
            "index": self.index,
            "confidence": self.confidence,
            "top_k": [{"label": lab, "confidence": c} for lab, c in self.top_k],
            "probabilities": list(self.probabilities),
        }


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits (the row maximum is subtracted first)."""
    z = np.subtract(logits, np.max(logits, axis=-1, keepdims=True), dtype=np.float32)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def to_scores(raw: np.ndarray, kind: OutputKind) -> np.ndarray:
    """A model's raw output as float32 ``(N, classes)`` scores, as phone clients show them.

    ``logits``: softmax. ``sigmoid``: one unit p becomes ``[1 - p, p]``. ``probabilities``:
    clipped to 0..1 and otherwise as the file gives them (MediaPipe shows a uint8 softmax
    output in its own 1/256 steps, which need not sum to 1).
    """
    kind = OutputKind(kind)
    raw = np.asarray(raw)
    if kind is OutputKind.PROBABILITIES:
        return np.clip(raw.astype(np.float32, copy=False), 0.0, 1.0)
    return to_probabilities(raw, kind)


def to_probabilities(raw: np.ndarray, kind: OutputKind) -> np.ndarray:
    """A model's raw output as float32 ``(N, classes)`` probabilities, each row summing to 1.

    ``logits``: softmax. ``sigmoid``: one unit, the probability of label 1, becomes
    ``[1 - p, p]``. ``probabilities``: clipped and renormalised (a quantized softmax output,
    in steps of 1/256, need not sum to 1). The one conversion for the runtime, the export
    checks and the Keras reference alike.
    """
    kind = OutputKind(kind)
    raw = np.asarray(raw)
    if kind is OutputKind.LOGITS:
        return softmax(raw)
    if kind is OutputKind.SIGMOID:
        p = np.clip(raw.reshape(len(raw), -1)[:, :1], 0.0, 1.0).astype(np.float32)
        return np.concatenate([1.0 - p, p], axis=1)
    p = np.clip(raw.astype(np.float32, copy=False), 0.0, None)
    total = p.sum(axis=1, keepdims=True)
    return np.divide(p, total, out=np.full_like(p, 1.0 / max(p.shape[1], 1)), where=total > 0)


def _threads_arg(threads) -> int:
    if threads is None:
        return min(physical_cores(), MAX_THREADS)
    return threads_arg(threads)


def _labels_arg(labels) -> tuple[str, ...]:
    if isinstance(labels, (str, os.PathLike)):
        return read_labels_file(labels)
    labels = tuple(str(x) for x in labels)
    if not labels:
        raise UsageError("labels is empty; give one class name per model output")
    if len(set(labels)) != len(labels):
        raise UsageError("labels repeat a name; each class name must be unique")
    return labels


class Classifier:
    """A loaded model file. Use ``load_classifier`` to make one."""

    def __init__(self, backend, metadata: ModelSpec, *, labels_from: str):
        self._backend = backend
        self.metadata = metadata
        self.path: Path = backend.path
        self.format: str = backend.format
        self.threads: int = backend.threads
        self.labels: tuple[str, ...] = metadata.labels
        self.input_size: tuple[int, int] = metadata.input_size
        self.precision: str = metadata.precision
        self._labels_from = labels_from
        self._check()

    def _check(self):
        meta, be = self.metadata, self._backend
        if meta.num_outputs != be.num_outputs:
            if meta.output_kind is OutputKind.SIGMOID:
                what = "a sigmoid model needs 1 output and 2 labels"
            else:
                what = f"{len(meta.labels)} labels need {len(meta.labels)} outputs"
            raise ModelFileError(
                f"{self.path}: the model has {be.num_outputs} outputs but {len(meta.labels)} labels "
                f"came from {self._labels_from} ({what}); give the labels this model was trained with")
        h, w = meta.input_size
        mh, mw = be.input_shape[1:3]
        if (mh is not None and mh != h) or (mw is not None and mw != w):
            raise ModelFileError(
                f"{self.path}: metadata says input {h}x{w} but the model takes {mh}x{mw}; "
                "the metadata belongs to another model; export the file again")

    def __repr__(self):
        return (f"Classifier({str(self.path)!r}, format={self.format!r}, precision={self.precision!r}, "
                f"labels={len(self.labels)}, input_size={self.input_size}, threads={self.threads})")

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for a preprocessed batch.

        Args:
            batch: uint8 ``(N, H, W, 3)`` RGB pixels at ``input_size`` (one ``(H, W, 3)``
                image is taken as a batch of one).

        Returns:
            float32 ``(N, len(labels))``; each row sums to 1.
        """
        return to_probabilities(self._raw(batch), self.metadata.output_kind)

    def predict_scores(self, batch: np.ndarray) -> np.ndarray:
        """Scores for a preprocessed batch, as phone clients show them (see ``to_scores``): the
        same order and ties as ``predict_proba``; a quantized file's rows are its own 1/256
        steps, not renormalised to sum to 1."""
        return to_scores(self._raw(batch), self.metadata.output_kind)

    def _raw(self, batch: np.ndarray) -> np.ndarray:
        x = np.asarray(batch)
        if x.ndim == 3:
            x = x[None]
        h, w = self.input_size
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (h, w, 3):
            raise UsageError(
                f"predict_proba takes uint8 pixels shaped (N, {h}, {w}, 3); got {x.dtype} {x.shape}. "
                "Use predict() for files or images of other sizes")
        if x.shape[0] == 0:
            return np.zeros((0, self._backend.num_outputs), np.float32)
        return check_rows(self.path, self._backend.predict(np.ascontiguousarray(x)), x.shape[0],
                          self._backend.num_outputs)

    def preprocess(self, image: "ImageSource") -> np.ndarray:
        """One image as this model takes it: uint8 ``(H, W, 3)`` at ``input_size``."""
        # Imported here: callers that feed predict_proba ready pixels never load Pillow.
        from .preprocess import load_image

        return load_image(image, self.input_size, resize_method=self.metadata.resize_method)

    def predict(self, images, *, top_k: Optional[int] = None) -> list[Prediction]:
        """Label, confidence and probabilities for each image.

        Args:
            images: a file path, a PIL image, a uint8 array (``HxWx3``, or ``NxHxWx3`` for many),
                or a list of these.
            top_k: also list the ``k`` most likely labels in ``Prediction.top_k`` (default 1).

        Returns:
            One ``Prediction`` per image, in order.

        Raises:
            ImageError: an image cannot be read (the message names the file).

        Example:
            >>> clf = load_classifier("model_int8.tflite")             # doctest: +SKIP
            >>> clf.predict("tulip.jpg")[0].sentence()                   # doctest: +SKIP
            'This image most likely belongs to tulips with a 97.12 percent confidence.'
        """
        k = 1 if top_k is None else top_k
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise UsageError(f"top_k must be a whole number of at least 1; got {top_k!r}")
        k = min(int(k), len(self.labels))
        items = _as_list(images)
        results: list[Prediction] = []
        for start in range(0, len(items), CHUNK):
            chunk = items[start:start + CHUNK]
            batch = np.stack([self.preprocess(item) for item in chunk])
            probs = self.predict_scores(batch)
            for item, row in zip(chunk, probs):
                source = os.fspath(item) if isinstance(item, (str, os.PathLike)) else None
                results.append(self.to_prediction(row, top_k=k, source=source))
        return results

    def stream(self, frames, *, top_k: int = 1, every: int = 1, max_fps: Optional[float] = None,
               max_frames: Optional[int] = None) -> "FrameStream":
        """Classify frames as they come: a camera, a video, a folder that fills up, or your own.

        Args:
            frames: a source from ``open_source`` (camera index, video file, URL, folder), or any
                iterable of images ``predict`` takes (RGB uint8 arrays of any size, PIL images,
                paths), e.g. a generator over your own camera's frames.
            top_k: list the ``k`` most likely labels in each prediction.
            every: classify every Nth frame; the others are counted as skipped.
            max_fps: classify at most this many frames per second (of video time for a file,
                of wall time otherwise); the others are counted as skipped.
            max_frames: stop after reading this many frames.

        Returns:
            A ``FrameStream``: iterate it for one ``FrameResult`` per frame read (``prediction``
            is set on the classified ones); ``summary()`` gives counts, frames per second,
            per-stage latency and peak memory. A frame that cannot be decoded is a
            ``failed`` result, never an exception.

        Example:
            >>> from edgeclf.runtime import open_source                  # doctest: +SKIP
            >>> run = clf.stream(open_source("clip.mp4"), max_fps=5)       # doctest: +SKIP
            >>> labels = [r.prediction.label for r in run if r.prediction]  # doctest: +SKIP
            >>> run.summary().classified                                   # doctest: +SKIP
        """
        from .stream import FrameStream

        return FrameStream(self, frames, top_k=top_k, every=every, max_fps=max_fps, max_frames=max_frames)

    def to_prediction(self, row: np.ndarray, *, top_k: int = 1, source: Optional[str] = None) -> Prediction:
        """A ``Prediction`` from one row of ``predict_scores`` (or ``predict_proba``)."""
        # Stable: an exact tie goes to the lower index, the label MediaPipe's ImageClassifier
        # puts first (its default max_results=-1 and max_results=1; tested with the real client).
        order = np.argsort(-row, kind="stable")[:max(1, min(top_k, len(self.labels)))]
        best = int(order[0])
        return Prediction(
            label=self.labels[best],
            index=best,
            confidence=float(row[best]),
            probabilities=tuple(float(v) for v in row),
            source=source,
            top_k=tuple((self.labels[int(i)], float(row[int(i)])) for i in order),
        )


def _as_list(images) -> list:
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, (str, os.PathLike)) or not isinstance(images, Iterable):
        return [images]
    try:
        from PIL import Image

        if isinstance(images, Image.Image):
            return [images]
    except ImportError:  # Pillow is a base dependency; keep the check cheap regardless
        pass
    return list(images)


def load_classifier(path: Union[str, os.PathLike], *, threads: Optional[int] = None,
                    labels: Union[Sequence[str], str, os.PathLike, None] = None) -> Classifier:
    """Load a ``.tflite`` or ``.onnx`` classifier with the engine its suffix names.

    Args:
        path: the model file. Its content must match its suffix.
        threads: engine threads (default: this machine's physical cores).
        labels: class names (a sequence, or a labels file: one per line or a JSON list).
            Needed for a file without edgeclf metadata; otherwise they replace the file's.
            Such a file's input size comes from its input shape, and its output is taken as
            logits (probabilities if a TFLite graph ends in SOFTMAX; a sigmoid for one output
            and two labels).

    Returns:
        A ``Classifier``.

    Raises:
        ModelFileError: the file is missing, empty, damaged, of another format than its
            suffix, carries no metadata and no labels were given, or its outputs do not match
            the labels.

    Example:
        >>> clf = load_classifier("flowers_int8.tflite", threads=2)   # doctest: +SKIP
        >>> clf.labels, clf.input_size                               # doctest: +SKIP
        (('daisy', 'dandelion', 'roses', 'sunflowers', 'tulips'), (180, 180))
    """
    n_threads = _threads_arg(threads)
    given = _labels_arg(labels) if labels is not None else None
    backend = load_backend(path, threads=n_threads)
    meta = backend.metadata
    if meta is None:
        if given is None:
            raise ModelFileError(
                f"{backend.path}: the file carries no edgeclf metadata (labels, input size); "
                "pass labels (--labels FILE, one class name per line) or export it with edgeclf export")
        h, w = backend.input_shape[1:3]
        if h is None or w is None:
            raise ModelFileError(f"{backend.path}: no metadata and the input size is not fixed in the model; "
                                 "export it with edgeclf export, which records the size")
        # Without metadata the output kind is read off the graph where it can be: a TFLite
        # file ending in SOFTMAX gives probabilities; otherwise scores are taken as logits.
        if backend.num_outputs == 1 and len(given) == 2:
            kind = OutputKind.SIGMOID
        elif getattr(backend, "output_op", None) == "SOFTMAX":
            kind = OutputKind.PROBABILITIES
        else:
            kind = OutputKind.LOGITS
        meta = metadata_for_labels(given, (h, w), output_kind=kind)
        source = "labels given" if not isinstance(labels, (str, os.PathLike)) else f"labels file {labels}"
    elif given is not None:
        kind = meta.output_kind
        try:
            check_label_count(kind, len(given))
        except ValueError as exc:
            raise ModelFileError(f"{backend.path}: {exc}") from None
        meta = meta.with_(labels=given)
        source = "labels given" if not isinstance(labels, (str, os.PathLike)) else f"labels file {labels}"
    else:
        source = "the file's metadata"
    return Classifier(backend, meta, labels_from=source)
