"""Small image folders for the data and training tests."""

from __future__ import annotations

import threading

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, colour=(200, 30, 30), size=(12, 10), fmt=None, seed=None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if seed is not None:
        arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        img = Image.fromarray(arr)
    else:
        img = Image.new("RGB", size, colour)
    img.save(path, format=fmt)
    return path


def make_folder(root: Path, counts: dict, *, size=(12, 10), suffix=".png") -> Path:
    """root/<class>/<class>_<i><suffix> with ``counts[class]`` distinct random images each."""
    root = Path(root)
    for ci, (name, n) in enumerate(counts.items()):
        for i in range(n):
            write_image(root / name / f"{name}_{i:03d}{suffix}", size=size, seed=ci * 1000 + i)
    return root


def truncated_png(path: Path) -> Path:
    write_image(path, seed=7, size=(32, 32))
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])
    return path


def finishes(fn, seconds: float = 20.0) -> dict:
    """Run ``fn`` in a thread and return ``{"value": ...}`` or ``{"error": exc}``; a hang fails
    the test instead of hanging the suite."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn} still running after {seconds}s (a hang: it blocks on the file)"
    return box
