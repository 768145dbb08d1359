"""Latency of model files through the runtime: what ``edgeclf bench`` measures and prints."""

from __future__ import annotations

import os
from pathlib import Path


def bench_one(path, *, threads=None, batch_size=None, warmup=5, runs=None, seconds=None, memory=True):
    """Benchmark one model file; returns a BenchResult. ``memory``: also its peak memory at
    batch 1, measured in a fresh process (``runtime.memory``)."""
    import numpy as np

    from ..runtime import load_classifier
    from ..runtime.latency import (BenchResult, current_rss_bytes, measure_cold_start, measure_latency,
                                   peak_rss_bytes)

    rss0 = current_rss_bytes()
    holder = {}

    def load():
        return load_classifier(path, threads=threads)

    def first(clf):
        h, w = clf.input_size
        holder["x"] = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
        clf.predict_proba(holder["x"])

    cold, clf = measure_cold_start(load, first)
    x1 = holder["x"]
    lat1 = measure_latency(lambda: clf.predict_proba(x1), warmup=warmup, runs=runs, seconds=seconds)
    latb = None
    if batch_size and batch_size > 1:
        h, w = clf.input_size
        xb = np.random.default_rng(1).integers(0, 256, (batch_size, h, w, 3), dtype=np.uint8)
        latb = measure_latency(lambda: clf.predict_proba(xb), warmup=warmup, runs=runs, seconds=seconds)
    rss1 = current_rss_bytes()
    mem = None
    if memory:
        from ..runtime.memory import measure_memory

        mem = measure_memory(path, threads=clf.threads)
    return BenchResult(path=str(path), format=clf.format, precision=clf.precision,
                       size_bytes=os.path.getsize(path), input_size=tuple(clf.input_size), threads=clf.threads,
                       cold_start=cold, latency=lat1, batch_size=batch_size if latb is not None else None,
                       batch_latency=latb, peak_rss_bytes=peak_rss_bytes(),
                       rss_growth_bytes=None if rss0 is None or rss1 is None else rss1 - rss0, memory=mem)


def bench_table(results) -> str:
    from .._term import format_table, human_bytes

    with_batch = any(r.batch_latency is not None for r in results)
    headers = ["file", "format", "precision", "size", "threads", "cold ms", "p50 ms", "p90 ms", "p99 ms",
               "mean±std ms", "runs"]
    if with_batch:
        headers += ["batch", "batch p50 ms", "ms/image"]
    headers += ["memory"]
    rows = []
    for r in results:
        lat = r.latency
        row = [Path(r.path).name, r.format, r.precision, human_bytes(r.size_bytes), str(r.threads),
               f"{r.cold_start.total_ms:.1f}", f"{lat.p50_ms:.3f}", f"{lat.p90_ms:.3f}", f"{lat.p99_ms:.3f}",
               f"{lat.mean_ms:.3f}±{lat.std_ms:.3f}", str(lat.runs)]
        if with_batch:
            b = r.batch_latency
            row += ["-", "-", "-"] if b is None else [str(r.batch_size), f"{b.p50_ms:.2f}",
                                                      f"{b.p50_ms / r.batch_size:.3f}"]
        row += [human_bytes(r.memory.added_bytes) if r.memory is not None else "-"]
        rows.append(row)
    return format_table(headers, rows)


def bench_speed_lines(results, system) -> list[str]:
    """The lines ``edgeclf bench`` prints under its table: every file not faster than the float32
    file of its format at the same thread count (``report.speed_notes``)."""
    from .report import speed_lines, speed_notes

    return speed_lines(speed_notes(results, int8=getattr(system, "int8", None)))


def bench_speed_notes(results, system) -> list[dict]:
    """The same notes as JSON-ready dicts, for ``bench --json``."""
    from .report import speed_notes

    return [n.to_dict() for n in speed_notes(results, int8=getattr(system, "int8", None))]
