"""Latency, cold start, memory and the machine they were measured on.

In the spirit of a good profiler: warm-up calls first (caches, lazy allocation, thread pool
start-up), then timed calls bounded by a count, a time budget or both, and statistics that
noise cannot drag around (report the percentiles; the mean and std are there for
completeness). Standard library and numpy only; the engines are asked for their versions
only if they are already installed.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import numpy as np

from ..errors import UsageError

DEFAULT_WARMUP = 3
DEFAULT_SECONDS = 2.0
MAX_RUNS = 100_000  # a bound for time-budgeted runs of a function that takes microseconds


@dataclass(frozen=True)
class LatencyStats:
    """Timings of repeated calls, in milliseconds."""

    runs: int
    warmup: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    total_s: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_samples(cls, samples_ms, *, warmup: int = 0) -> "LatencyStats":
        s = np.asarray(samples_ms, dtype=np.float64)
        if s.ndim != 1 or s.size == 0:
            raise UsageError("latency statistics need at least one timed run")
        p50, p90, p99 = np.percentile(s, [50, 90, 99])
        return cls(runs=int(s.size), warmup=int(warmup), p50_ms=float(p50), p90_ms=float(p90),
                   p99_ms=float(p99), mean_ms=float(s.mean()), std_ms=float(s.std(ddof=1) if s.size > 1 else 0.0),
                   min_ms=float(s.min()), max_ms=float(s.max()), total_s=float(s.sum() / 1000.0))


def _check_bounds(warmup: int, runs: Optional[int], seconds: Optional[float]) -> None:
    if warmup < 0:
        raise UsageError(f"warm-up runs must be >= 0; got {warmup}")
    if runs is not None and runs < 1:
        raise UsageError(f"runs must be >= 1; got {runs}")
    if seconds is not None and not (seconds > 0):
        raise UsageError(f"seconds must be > 0; got {seconds}")


def measure_latency(fn: Callable[[], object], *, warmup: int = DEFAULT_WARMUP, runs: Optional[int] = None,
                    seconds: Optional[float] = None) -> LatencyStats:
    """Time ``fn()`` after ``warmup`` untimed calls.

    Args:
        fn: the call to time (e.g. ``lambda: clf.predict_proba(x)``).
        warmup: untimed calls made first.
        runs: stop after this many timed calls.
        seconds: stop once the timed calls have taken this long (at least one call is made).
            With both, whichever bound comes first stops; with neither, a 2-second budget.

    Returns:
        ``LatencyStats`` with p50/p90/p99, mean, std, min and max in milliseconds.

    Example:
        >>> stats = measure_latency(lambda: sum(range(1000)), runs=20)
        >>> stats.runs
        20
    """
    _check_bounds(warmup, runs, seconds)
    if runs is None and seconds is None:
        seconds = DEFAULT_SECONDS
    max_runs = runs if runs is not None else MAX_RUNS
    budget_ns = None if seconds is None else int(seconds * 1e9)
    for _ in range(warmup):
        fn()
    samples = []
    clock = time.perf_counter_ns
    spent = 0
    while len(samples) < max_runs:
        t0 = clock()
        fn()
        dt = clock() - t0
        samples.append(dt)
        spent += dt
        if budget_ns is not None and spent >= budget_ns:
            break
    return LatencyStats.from_samples(np.asarray(samples, np.float64) / 1e6, warmup=warmup)


@dataclass(frozen=True)
class ColdStart:
    """Time from nothing to a first answer, in milliseconds: load, then one inference."""

    load_ms: float
    first_inference_ms: float

    @property
    def total_ms(self) -> float:
        return self.load_ms + self.first_inference_ms

    def to_dict(self) -> dict:
        return {"load_ms": self.load_ms, "first_inference_ms": self.first_inference_ms, "total_ms": self.total_ms}


def measure_cold_start(load: Callable[[], object], infer: Callable[[object], object]):
    """Call ``load()`` then ``infer(loaded)`` once each; return ``(ColdStart, loaded)``."""
    t0 = time.perf_counter_ns()
    obj = load()
    t1 = time.perf_counter_ns()
    infer(obj)
    t2 = time.perf_counter_ns()
    return ColdStart(load_ms=(t1 - t0) / 1e6, first_inference_ms=(t2 - t1) / 1e6), obj


def peak_rss_bytes() -> Optional[int]:
    """The process's peak resident memory so far (``getrusage``), or None where unsupported."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> Optional[int]:
    """The process's resident memory now (Linux ``/proc``), or None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _version(dist: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class SystemInfo:
    """The machine and software a measurement came from; print it beside every figure."""

    cpu_model: str
    machine: str
    logical_cpus: int
    usable_cpus: int
    os: str
    python: str
    numpy: str
    edgeclf: str
    ai_edge_litert: Optional[str]
    onnxruntime: Optional[str]
    int8: Optional[object] = None  # cpu.Int8Features: VNNI/AMX, dotprod/i8mm, or their absence

    def to_dict(self) -> dict:
        d = asdict(self)
        d["int8"] = None if self.int8 is None else self.int8.to_dict()
        return d

    def summary(self) -> str:
        engines = ", ".join(f"{k} {v}" for k, v in (("ai-edge-litert", self.ai_edge_litert),
                                                     ("onnxruntime", self.onnxruntime)) if v)
        int8 = "" if self.int8 is None else f"; {self.int8.summary()}"
        return (f"{self.cpu_model} ({self.usable_cpus} of {self.logical_cpus} CPUs usable{int8}), "
                f"{self.os}, Python {self.python}, numpy {self.numpy}, {engines}")


def system_info() -> SystemInfo:
    """Describe this machine and the installed engines (without importing them)."""
    from .. import __version__
    from .cpu import cpu_model_name, int8_features, usable_cpus

    return SystemInfo(
        cpu_model=cpu_model_name(), machine=platform.machine(), logical_cpus=os.cpu_count() or 1,
        usable_cpus=usable_cpus(), os=f"{platform.system()} {platform.release()}",
        python=platform.python_version(), numpy=np.__version__, edgeclf=__version__,
        ai_edge_litert=_version("ai-edge-litert"), onnxruntime=_version("onnxruntime"), int8=int8_features(),
    )


@dataclass(frozen=True)
class BenchResult:
    """One model file benchmarked at one thread count (what ``edgeclf bench`` reports)."""

    path: str
    format: str
    precision: str
    size_bytes: int
    input_size: tuple[int, int]
    threads: Optional[int]
    cold_start: ColdStart
    latency: LatencyStats  # batch 1
    batch_size: Optional[int] = None
    batch_latency: Optional[LatencyStats] = None
    peak_rss_bytes: Optional[int] = None  # the whole process's high-water mark so far
    rss_growth_bytes: Optional[int] = None  # resident memory added in this process (the first file pays imports)
    memory: Optional[object] = None  # memory.MemoryUse: measured in a fresh process, batch 1

    def to_dict(self) -> dict:
        return {
            "path": self.path, "format": self.format, "precision": self.precision, "size_bytes": self.size_bytes,
            "input_size": list(self.input_size), "threads": self.threads, "cold_start": self.cold_start.to_dict(),
            "latency": self.latency.to_dict(), "batch_size": self.batch_size,
            "batch_latency": None if self.batch_latency is None else self.batch_latency.to_dict(),
            "peak_rss_bytes": self.peak_rss_bytes, "rss_growth_bytes": self.rss_growth_bytes,
            "memory": None if self.memory is None else self.memory.to_dict(),
        }
