"""``golden.npz``: a few validation images and what each exported file must answer on them,
for ``edgeclf verify`` on the device.

The tolerance of each precision, and why, is ``edgeclf.runtime.spec.GOLDEN_ATOL``. They do not
have to absorb ONNX Runtime's uint8 x int8 saturation on x86 CPUs without VNNI (0.057 was seen
on a tiny model): ``quantize_onnx`` makes files that cannot saturate (uint8 weights for dynamic,
7-bit weights for int8) and the runtime turns on ORT's exact path for files made elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import atomic_path
from ..runtime.layout import ExportDir
from ..runtime.metadata import file_sha256


def write_golden(path, images: np.ndarray, outputs: dict[str, tuple]) -> Path:
    """Write ``golden.npz``: ``images`` (uint8 NHWC) and, per file basename F, ``probs::F``
    (float32, N x C), ``atol::F`` (float64 scalar) and ``sha256::F``. Atomic.

    ``outputs`` maps F to ``(probs, atol)`` or ``(probs, atol, sha256)``; without the hash it
    is computed from the file F beside ``path`` when that exists (as in an export folder), so
    ``edgeclf verify`` finds the entry by the file's content even after a rename.
    """
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"golden images must be a non-empty (N, H, W, 3) batch; got shape {images.shape}")
    arrays = {ExportDir.GOLDEN_KEY_IMAGES: images}
    for name, value in outputs.items():
        probs, atol, *rest = value
        arrays[ExportDir.GOLDEN_KEY_PROBS + name] = np.asarray(probs, np.float32)
        arrays[ExportDir.GOLDEN_KEY_ATOL + name] = np.float64(atol)
        digest = rest[0] if rest else None
        beside = Path(path).parent / name
        if digest is None and beside.is_file():
            digest = file_sha256(beside)
        if digest:
            arrays[ExportDir.GOLDEN_KEY_SHA256 + name] = np.array(str(digest))
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return Path(path)
