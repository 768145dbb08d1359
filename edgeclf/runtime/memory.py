"""How much memory a model file takes where it runs: the resident memory that loading it and
running one batch adds to a process, at its peak.

Measured in a fresh Python process per file (``python -m edgeclf.runtime.memory FILE``),
because inside a long-lived process the figure is not the file's: the first file of a format
pays for importing its engine, freed memory stays with the allocator and is reused by the
next file, and the process's high-water mark only ever grows. The child imports numpy and the
file's engine first, then (Linux) resets the kernel's peak-RSS counter (``/proc/self/clear_refs``,
"5"), loads the file through ``load_classifier``, predicts one batch and reads the peak
(``VmHWM``). The figure is that peak minus the resident memory before loading: the weights
as the engine holds them (XNNPACK repacks them), its activation arena and the threads'
stacks. Where the counter cannot be reset (not Linux, or no /proc), the peak is the
process's ``ru_maxrss`` and the method says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..errors import ModelFileError

METHOD_HWM = "fresh process, VmHWM reset after importing the engine"
METHOD_MAXRSS = "fresh process, ru_maxrss (peak of the whole process, imports included)"
TIMEOUT_S = 300


@dataclass(frozen=True)
class MemoryUse:
    """Resident memory of one file, loaded and run on one batch in a fresh process (bytes)."""

    added_bytes: int  # peak resident memory minus the resident memory before loading
    peak_rss_bytes: int  # the child process's peak, imports included
    baseline_rss_bytes: int  # the child's resident memory after importing numpy and the engine
    batch: int
    threads: Optional[int]
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


def _status_bytes(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux: kilobytes, macOS: bytes


def measure_here(path, *, threads: Optional[int] = None, batch: int = 1,
                 labels: Optional[Sequence[str]] = None) -> MemoryUse:
    """The measurement itself; meant for a fresh process (``measure_memory`` starts one)."""
    import numpy as np

    from .backend import import_engine
    from .classifier import load_classifier

    import_engine(path)
    reset = _reset_peak() and _status_bytes("VmHWM") is not None
    base = _status_bytes("VmRSS") if reset else None
    if base is None:
        from .latency import current_rss_bytes

        base = current_rss_bytes() or 0
    clf = load_classifier(path, threads=threads, labels=list(labels) if labels else None)
    h, w = clf.input_size
    clf.predict_proba(np.zeros((batch, h, w, 3), np.uint8))
    peak = _status_bytes("VmHWM") if reset else None
    method = METHOD_HWM if peak is not None else METHOD_MAXRSS
    if peak is None:
        peak = _maxrss_bytes()
    return MemoryUse(added_bytes=max(int(peak - base), 0), peak_rss_bytes=int(peak), baseline_rss_bytes=int(base),
                     batch=batch, threads=clf.threads, method=method)


def measure_memory(path, *, threads: Optional[int] = None, batch: int = 1,
                   labels: Optional[Sequence[str]] = None) -> MemoryUse:
    """Peak resident memory that loading ``path`` and predicting one batch of ``batch``
    images adds, measured in a fresh Python process (see the module docstring).

    Raises ModelFileError when the child cannot load or run the file (with its message).

    Example:
        >>> measure_memory("export/shapes/model_int8.tflite").added_bytes   # doctest: +SKIP
        1843200
    """
    cmd = [sys.executable, "-m", "edgeclf.runtime.memory", str(Path(path)), "--batch", str(batch)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    if labels:
        cmd += ["--labels-json", json.dumps(list(labels))]
    env = dict(os.environ)
    # The child must import this edgeclf (a checkout run from its folder included).
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        raise ModelFileError(f"{path}: measuring its memory took over {TIMEOUT_S} s") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise ModelFileError(f"{path}: could not measure its memory in a fresh process: {last}")
    return MemoryUse(**json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Peak resident memory added by loading a model file and running "
                                             "one batch (prints JSON).")
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--labels-json", default=None)
    args = ap.parse_args(argv)
    from ..errors import EdgeclfError

    try:
        use = measure_here(args.model, threads=args.threads, batch=args.batch,
                           labels=json.loads(args.labels_json) if args.labels_json else None)
    except EdgeclfError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(json.dumps(use.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
