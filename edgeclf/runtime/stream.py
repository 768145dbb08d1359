"""The live loop: frames in, one result per frame out, and a summary of the run.

``Classifier.stream(frames)`` returns a ``FrameStream``. Each frame goes through
``Classifier.preprocess`` (``load_image``: RGB, the model's resize) and ``predict_scores``, the
code ``predict`` runs for a file, so a frame and the same pixels saved as a PNG get the same
probabilities. Standard library and numpy; frame sources are in ``frames``.

    >>> from edgeclf.runtime import load_classifier, open_source      # doctest: +SKIP
    >>> clf = load_classifier("model_int8.tflite")                     # doctest: +SKIP
    >>> run = clf.stream(open_source("0"), every=2)                    # doctest: +SKIP
    >>> for r in run:                                                  # doctest: +SKIP
    ...     if r.prediction: print(r.frame.number, r.prediction.label)
    >>> run.summary().fps                                              # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import enum
import os
import random
import time
from array import array
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

from ..errors import EdgeclfError, ImageError, UsageError
from .frames import Frame
from .latency import LatencyStats, peak_rss_bytes

# Timings kept per stage for the percentiles: all of them up to this many frames (an hour at
# 30 frames per second), then a uniform sample of the whole run, so a camera left running for
# days keeps a bounded memory.
MAX_SAMPLES = 100_000
PEAK_MEMORY_NOTE = "the whole process's peak resident memory (getrusage ru_maxrss), engine and model included"


class FrameStatus(str, enum.Enum):
    CLASSIFIED = "classified"
    SKIPPED = "skipped"  # left out by every / max_fps
    FAILED = "failed"  # could not be decoded or converted


class StopReason(str, enum.Enum):
    END = "end"  # the video ended, or the frames given ran out
    LIMIT = "limit"  # max_frames were read
    INTERRUPTED = "interrupted"  # Ctrl-C
    TERMINATED = "terminated"  # SIGTERM
    ERROR = "error"  # the source failed (dropped stream, vanished folder)
    RUNNING = "running"  # summary() asked for while frames are still coming


@dataclass(frozen=True)
class FrameResult:
    """What happened to one frame. ``prediction`` is set when it was classified."""

    frame: Frame
    status: FrameStatus
    prediction: Optional[object] = None  # a classifier.Prediction (not imported: classifier imports this module)
    error: Optional[str] = None
    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    time: float = 0.0  # wall clock (time.time()) when the result was ready

    @property
    def capture_ms(self) -> Optional[float]:
        return self.frame.capture_ms

    def to_dict(self) -> dict:
        """``predict --json``'s keys for one image, plus the frame, its time and timings."""
        head = self.prediction.to_dict() if self.prediction is not None else {"source": self.frame.source}
        if self.error is not None:
            head["error"] = self.error
        return {**head, "frame": self.frame.number, "status": self.status.value,
                "time": datetime.datetime.fromtimestamp(self.time).astimezone().isoformat(timespec="milliseconds"),
                "timestamp_s": self.frame.timestamp_s, "capture_ms": self.capture_ms,
                "preprocess_ms": self.preprocess_ms, "inference_ms": self.inference_ms}


@dataclass(frozen=True)
class StreamSummary:
    """A run of ``FrameStream``: counts, rates, per-stage latency and peak memory.

    ``frames_read == classified + skipped + failed``. ``fps`` is frames classified per second
    of the run (waiting for frames included); ``capture``, ``preprocess`` and ``inference`` are
    per-frame latencies in milliseconds (None when no frame reached that stage).
    """

    model: str
    source: Optional[str]
    threads: int
    frames_read: int
    classified: int
    skipped: int
    failed: int
    elapsed_s: float
    fps: float
    read_fps: float
    capture: Optional[LatencyStats]
    preprocess: Optional[LatencyStats]
    inference: Optional[LatencyStats]
    total: Optional[LatencyStats]  # capture + preprocess + inference of each classified frame
    # capture is None for a folder: decoding its files is pre-processing, as in predict.
    peak_memory_bytes: Optional[int]
    stopped_by: StopReason
    error: Optional[str] = None
    peak_memory_note: str = PEAK_MEMORY_NOTE

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("model", "source", "threads", "frames_read", "classified", "skipped",
                                           "failed", "elapsed_s", "fps", "read_fps")}
        for stage in ("capture", "preprocess", "inference", "total"):
            stats = getattr(self, stage)
            d[f"{stage}_ms"] = None if stats is None else {"p50": stats.p50_ms, "p90": stats.p90_ms,
                                                           "p99": stats.p99_ms, "mean": stats.mean_ms,
                                                           "max": stats.max_ms, "frames": stats.runs}
        d.update(peak_memory_bytes=self.peak_memory_bytes, peak_memory_note=self.peak_memory_note,
                 stopped_by=self.stopped_by.value, error=self.error)
        return d


class _Samples:
    """Timings in ms: every one up to ``cap``, then a uniform reservoir sample (Algorithm R)."""

    def __init__(self, cap: int = MAX_SAMPLES, seed: int = 0):
        self.cap = cap
        self.seen = 0
        self.values = array("d")
        self._rng = random.Random(seed)

    def add(self, ms: float) -> None:
        self.seen += 1
        if len(self.values) < self.cap:
            self.values.append(ms)
        else:
            j = self._rng.randrange(self.seen)
            if j < self.cap:
                self.values[j] = ms

    def stats(self) -> Optional[LatencyStats]:
        return LatencyStats.from_samples(self.values) if self.values else None


def _positive_int(name: str, value, *, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a whole number of at least 1; got {value!r}")
    return value


class FrameStream:
    """Frames in, a ``FrameResult`` per frame out (iterate it once); ``summary()`` at any time.

    Made by ``Classifier.stream``; see there for the arguments.
    """

    def __init__(self, classifier, frames: Iterable, *, top_k: int = 1, every: int = 1,
                 max_fps: Optional[float] = None, max_frames: Optional[int] = None):
        self._clf = classifier
        self._frames = frames
        self.top_k = min(_positive_int("top_k", top_k), len(classifier.labels))
        self.every = _positive_int("every", every)
        if max_fps is not None and not (isinstance(max_fps, (int, float)) and 0 < max_fps < 10_000):
            raise UsageError(f"max_fps must be a number of frames per second above 0; got {max_fps!r}")
        self._period = None if max_fps is None else 1.0 / float(max_fps)
        self.max_frames = _positive_int("max_frames", max_frames, allow_none=True)
        self._next_due: Optional[float] = None
        self._counts = {s: 0 for s in FrameStatus}
        self._stages = {name: _Samples() for name in ("capture", "preprocess", "inference", "total")}
        self._started: Optional[float] = None
        self._ended: Optional[float] = None
        self._stop = StopReason.RUNNING
        self._error: Optional[str] = None
        self._iter: Optional[Iterator[FrameResult]] = None

    def __iter__(self) -> Iterator[FrameResult]:
        return self

    def __next__(self) -> FrameResult:
        if self._iter is None:
            self._iter = self._run()
        return next(self._iter)

    def _due(self, read: int, frame: Frame) -> bool:
        if (read - 1) % self.every:
            return False
        if self._period is None:
            return True
        ts = frame.timestamp_s if frame.timestamp_s is not None else time.monotonic() - self._started
        if self._next_due is not None and ts < self._next_due:
            return False
        # A fixed grid keeps the average rate exact despite frame jitter; a run that fell a whole
        # period behind (a stall) starts a new grid instead of classifying a burst to catch up.
        behind = self._next_due is None or ts - self._next_due >= self._period
        self._next_due = (ts if behind else self._next_due) + self._period
        return True

    def _run(self) -> Iterator[FrameResult]:
        self._started = time.monotonic()
        it = iter(self._frames)
        read = 0
        try:
            while self.max_frames is None or read < self.max_frames:
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    self._finish(StopReason.END)
                    return
                waited_ms = (time.perf_counter() - t0) * 1e3
                read += 1
                if not isinstance(item, Frame):
                    # The caller's own frames: capture is the time their iterator took to give one.
                    source = os.fspath(item) if isinstance(item, (str, os.PathLike)) else None
                    item = Frame(read, item, source=source, capture_ms=waited_ms)
                yield self._one(read, item)
            self._finish(StopReason.LIMIT)
        except EdgeclfError as exc:
            self._finish(StopReason.ERROR, str(exc))
            raise
        except KeyboardInterrupt as exc:
            # The CLI turns SIGTERM into a KeyboardInterrupt subclass, so Ctrl-C is the exact type.
            self._finish(StopReason.INTERRUPTED if type(exc) is KeyboardInterrupt else StopReason.TERMINATED)
            raise
        finally:
            if self._ended is None:
                self._finish(StopReason.END)
            close = getattr(self._frames, "close", None)
            if callable(close):
                close()

    def _one(self, read: int, frame: Frame) -> FrameResult:
        if frame.capture_ms is not None:
            self._stages["capture"].add(frame.capture_ms)
        if frame.error is not None:
            return self._count(FrameResult(frame, FrameStatus.FAILED, error=frame.error, time=time.time()))
        if not self._due(read, frame):
            return self._count(FrameResult(frame, FrameStatus.SKIPPED, time=time.time()))
        t1 = time.perf_counter()
        try:
            x = self._clf.preprocess(frame.image)
        except ImageError as exc:
            return self._count(FrameResult(frame, FrameStatus.FAILED, error=str(exc), time=time.time()))
        t2 = time.perf_counter()
        probs = self._clf.predict_scores(x[None])[0]  # the scores an app shows, as predict reports them
        t3 = time.perf_counter()
        prediction = self._clf.to_prediction(probs, top_k=self.top_k, source=frame.source)
        pre_ms, inf_ms = (t2 - t1) * 1e3, (t3 - t2) * 1e3
        self._stages["preprocess"].add(pre_ms)
        self._stages["inference"].add(inf_ms)
        self._stages["total"].add((frame.capture_ms or 0.0) + pre_ms + inf_ms)
        return self._count(FrameResult(frame, FrameStatus.CLASSIFIED, prediction, preprocess_ms=pre_ms,
                                       inference_ms=inf_ms, time=time.time()))

    def _count(self, result: FrameResult) -> FrameResult:
        self._counts[result.status] += 1
        return result

    def _finish(self, reason: StopReason, error: Optional[str] = None) -> None:
        if self._ended is None:
            self._ended = time.monotonic()
            self._stop, self._error = reason, error

    def fps_so_far(self) -> float:
        """Frames classified per second since the first frame was asked for."""
        if self._started is None:
            return 0.0
        elapsed = (self._ended or time.monotonic()) - self._started
        return self._counts[FrameStatus.CLASSIFIED] / elapsed if elapsed > 0 else 0.0

    def summary(self, *, stopped_by: Optional[StopReason] = None) -> StreamSummary:
        """The run so far. ``stopped_by`` overrides the reason the loop recorded (the CLI knows
        of a Ctrl-C that came while it, not the loop, was running)."""
        end = self._ended if self._ended is not None else time.monotonic()
        elapsed = max(0.0, end - self._started) if self._started is not None else 0.0
        c = self._counts
        read = c[FrameStatus.CLASSIFIED] + c[FrameStatus.SKIPPED] + c[FrameStatus.FAILED]
        st = {name: s.stats() for name, s in self._stages.items()}
        return StreamSummary(
            model=str(self._clf.path), source=getattr(self._frames, "name", None), threads=self._clf.threads,
            frames_read=read, classified=c[FrameStatus.CLASSIFIED], skipped=c[FrameStatus.SKIPPED],
            failed=c[FrameStatus.FAILED], elapsed_s=elapsed,
            fps=c[FrameStatus.CLASSIFIED] / elapsed if elapsed > 0 else 0.0,
            read_fps=read / elapsed if elapsed > 0 else 0.0,
            capture=st["capture"], preprocess=st["preprocess"], inference=st["inference"], total=st["total"],
            peak_memory_bytes=peak_rss_bytes(), stopped_by=StopReason(stopped_by or self._stop), error=self._error,
        )
