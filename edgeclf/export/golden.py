"""``golden.npz``: a few validation images and what each exported file must answer on them,
for ``edgeclf verify`` on the device.

The tolerance of each precision, and why, is ``edgeclf.runtime.spec.GOLDEN_ATOL``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import atomic_path


def write_golden(path, images: np.ndarray, outputs: dict[str, tuple[np.ndarray, float]]) -> Path:
    """Write ``golden.npz``: ``images`` (uint8 NHWC) and, per file basename F, ``probs::F``
    (float32, N x C) and ``atol::F`` (float64 scalar). Atomic."""
    arrays = {"images": np.ascontiguousarray(images, dtype=np.uint8)}
    for name, (probs, atol) in outputs.items():
        arrays[f"probs::{name}"] = np.asarray(probs, np.float32)
        arrays[f"atol::{name}"] = np.float64(atol)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return Path(path)
