"""Images for calibration and validation, decoded by the one preprocessing function.

One ``ImageBank`` per export decodes each distinct image once: the calibration sample is a
subset of the training images that QAT reads again, and ``--data`` is decoded whole before
it is split.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .._term import info
from ..errors import ImageError, UsageError
from ..runtime.preprocess import load_image


@dataclass(frozen=True)
class ImageSet:
    """Preprocessed images (uint8 NHWC) with their class indices (-1 when unknown)."""

    images: np.ndarray
    indices: np.ndarray
    paths: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def has_labels(self) -> bool:
        return len(self) > 0 and bool((self.indices >= 0).all())


class ImageBank:
    """Decoded images of one size and resize method, keyed by absolute path; each path is
    decoded at most once (an unreadable one is remembered with its reason)."""

    def __init__(self, size, resize_method: str = "bilinear"):
        self.size = (int(size[0]), int(size[1]))
        self.resize_method = str(resize_method)
        self._pixels: dict[str, np.ndarray] = {}
        self._bad: dict[str, str] = {}
        self.decoded = 0

    def add(self, paths: Sequence[str], pixels, bad: Optional[dict] = None) -> None:
        """Take images decoded elsewhere (``edgeclf.data.cache.decode_images``)."""
        for i, p in enumerate(paths):
            self._pixels[os.path.abspath(p)] = pixels[i]
        for p, why in (bad or {}).items():
            self._bad[os.path.abspath(p)] = why

    def get(self, path) -> np.ndarray:
        """The image at ``path``; ImageError when it cannot be read."""
        key = os.path.abspath(str(path))
        if key in self._pixels:
            return self._pixels[key]
        if key in self._bad:
            raise ImageError(path, self._bad[key])
        try:
            arr = load_image(key, self.size, resize_method=self.resize_method)
        except ImageError as exc:
            self._bad[key] = exc.reason
            raise
        self.decoded += 1
        self._pixels[key] = arr
        return arr


def stratified_sample(samples: Sequence[tuple[str, int]], n: int, *, seed: int) -> list[tuple[str, int]]:
    """``n`` samples spread evenly over the classes (round-robin over shuffled classes), seeded."""
    rng = random.Random(seed)
    by_class: dict[int, list] = {}
    for s in samples:
        by_class.setdefault(int(s[1]), []).append(tuple(s))
    for k in by_class:
        rng.shuffle(by_class[k])
    picked: list = []
    keys = sorted(by_class)
    depth = 0
    while len(picked) < n and any(depth < len(by_class[k]) for k in keys):
        for k in keys:
            if depth < len(by_class[k]) and len(picked) < n:
                picked.append(by_class[k][depth])
        depth += 1
    return picked


def load_images(samples: Sequence[tuple[str, int]], size, *, resize_method: str = "bilinear",
                what: str = "images", bank: Optional[ImageBank] = None) -> ImageSet:
    """Decode ``samples`` (through ``bank`` when given, so nothing is decoded twice);
    unreadable images are skipped and listed, never fatal."""
    h, w = size
    if bank is None:
        bank = ImageBank((h, w), resize_method)
    arrays, idx, paths, skipped = [], [], [], []
    for path, i in samples:
        try:
            arrays.append(bank.get(path))
        except ImageError as exc:
            skipped.append((str(path), exc.reason))
            continue
        idx.append(int(i))
        paths.append(str(path))
    for p, why in skipped[:10]:
        info(f"  skipped {what} image {p}: {why}")
    if len(skipped) > 10:
        info(f"  ... and {len(skipped) - 10} more unreadable {what} images")
    images = np.stack(arrays) if arrays else np.zeros((0, h, w, 3), np.uint8)
    return ImageSet(images, np.asarray(idx, np.int64), tuple(paths), tuple(skipped))


def calibration_set(train: Sequence[tuple[str, int]], size, *, n: int, seed: int,
                    resize_method: str = "bilinear", bank: Optional[ImageBank] = None) -> ImageSet:
    """A seeded, class-stratified sample of ``n`` training images; fewer when fewer exist."""
    picked = stratified_sample(train, n, seed=seed)
    if len(picked) < n:
        info(f"Calibration: {n} images asked for, {len(picked)} available in the training split; using {len(picked)}")
    return load_images(picked, size, resize_method=resize_method, what="calibration", bank=bank)


def representative_dataset(images: np.ndarray):
    """Calibration batches of one image each, as float32 0..255.

    The first image gets one pixel at 0 and one at 255, so the calibrated input range is
    exactly 0..255 and a uint8 input quantizes with scale 1, zero point 0: the file then
    takes raw pixels, as its metadata says.
    """
    if len(images) == 0:
        raise UsageError("this precision needs calibration images; give --calibration DATA or --data DATA")

    def gen():
        for i in range(len(images)):
            x = images[i : i + 1].astype(np.float32)
            if i == 0:
                x = x.copy()
                x[0, 0, 0, 0] = 0.0
                x[0, 0, 0, 1] = 255.0
            yield [x]

    return gen
