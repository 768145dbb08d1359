"""The built-in synthetic dataset: shapes on cluttered, noisy backgrounds.

Each class is a shape family (circles, squares, triangles, ...). Every image draws its
background (a random two-colour gradient with blotches), a few distractor strokes, the object
(random colour, size, position and rotation, solid or textured) and sensor noise, all from a
per-image seed. Colours and brightness are drawn the same way for every class, so no class is
given away by a colour or by mean brightness; the object's shape is the only cue. Off-centre,
rotated, partly occluded objects and small training sets make it hard enough that a plain
CNN from scratch stays below 100% and augmentation helps.

Deterministic: the same ``seed`` gives byte-identical files on any machine (numpy's PCG64
and Pillow's drawing, written as PNG).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .._io import atomic_dir, check_out_dir, write_json
from ..errors import UsageError
from ..runtime.layout import SYNTH_RECORD

CLASS_NAMES = ("circles", "squares", "triangles", "stars", "crosses",
               "rings", "hexagons", "stripes", "checkers", "arrows")

DEFAULT_CLASSES = 5
DEFAULT_PER_CLASS = 300
DEFAULT_SIZE = 64
SYNTH_SEED = 0  # the synthetic images' own seed (not the split seed of spec.DEFAULT_SEED)
_SS = 2  # supersampling factor: draw at 2x, downsample, for anti-aliased edges


@dataclass(frozen=True)
class SynthResult:
    out: Path
    class_names: tuple[str, ...]
    per_class: int
    size: int
    seed: int

    def to_dict(self) -> dict:
        return {"out": str(self.out), "class_names": list(self.class_names), "per_class": self.per_class,
                "size": self.size, "seed": self.seed}


def _colour(rng) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _luma(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _far_colour(rng, avoid, min_dist=110.0, min_luma=55.0):
    """A random colour that stands out from ``avoid`` in colour and in brightness; lighter or
    darker at random, so brightness says nothing about the class."""
    for _ in range(40):
        c = _colour(rng)
        if (np.linalg.norm(np.subtract(c, avoid, dtype=float)) >= min_dist
                and abs(_luma(c) - _luma(avoid)) >= min_luma):
            return c
    return tuple(255 - int(v) for v in avoid)


def _background(rng, s: int) -> Image.Image:
    # a gentle gradient between two nearby colours: the object, not the background, has edges
    c1 = np.array(_colour(rng), float)
    c2 = np.clip(c1 + rng.uniform(-60, 60, 3), 0, 255)
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:s, 0:s] / max(s - 1, 1)
    t = (np.cos(ang) * xx + np.sin(ang) * yy)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    img = c1[None, None] * (1 - t[..., None]) + c2[None, None] * t[..., None]
    # low-frequency blotches: upsampled coarse noise
    coarse = rng.normal(0, 20, (4, 4, 3))
    blot = np.asarray(Image.fromarray(np.uint8(np.clip(coarse + 128, 0, 255))).resize((s, s), Image.BICUBIC),
                      float) - 128
    img = np.clip(img + blot, 0, 255)
    return Image.fromarray(img.astype(np.uint8), "RGB")


def _poly(cx, cy, r, n, rot, inner=None):
    pts = []
    k = n * 2 if inner else n
    for i in range(k):
        a = rot + i * 2 * math.pi / k
        rr = (inner if (inner and i % 2) else 1.0) * r
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def _rotate(points, cx, cy, rot):
    c, s = math.cos(rot), math.sin(rot)
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in points]


def _shape_mask(kind: str, s: int, cx, cy, r, rot, rng) -> Image.Image:
    """A mode-L mask (255 inside) of one object."""
    m = Image.new("L", (s, s), 0)
    d = ImageDraw.Draw(m)
    if kind == "circles":
        rx, ry = r, r * rng.uniform(0.85, 1.0)
        d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    elif kind == "squares":
        d.polygon(_poly(cx, cy, r * 1.05, 4, rot), fill=255)
    elif kind == "triangles":
        d.polygon(_poly(cx, cy, r * 1.1, 3, rot), fill=255)
    elif kind == "stars":
        d.polygon(_poly(cx, cy, r * 1.1, 5, rot, inner=0.45), fill=255)
    elif kind == "crosses":
        a, b = r, r * 0.33
        bars = [[(cx - a, cy - b), (cx + a, cy - b), (cx + a, cy + b), (cx - a, cy + b)],
                [(cx - b, cy - a), (cx + b, cy - a), (cx + b, cy + a), (cx - b, cy + a)]]
        for bar in bars:
            d.polygon(_rotate(bar, cx, cy, rot), fill=255)
    elif kind == "rings":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        ri = r * rng.uniform(0.45, 0.6)
        d.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=0)
    elif kind == "hexagons":
        d.polygon(_poly(cx, cy, r, 6, rot), fill=255)
    elif kind == "stripes":
        n = int(rng.integers(3, 5))
        gap = 2 * r / (2 * n - 1)
        for i in range(n):
            x0 = cx - r + 2 * i * gap
            bar = [(x0, cy - r), (x0 + gap, cy - r), (x0 + gap, cy + r), (x0, cy + r)]
            d.polygon(_rotate(bar, cx, cy, rot), fill=255)
    elif kind == "checkers":
        n = 3
        cell = 2 * r / n
        for i in range(n):
            for j in range(n):
                if (i + j) % 2 == 0:
                    x0, y0 = cx - r + i * cell, cy - r + j * cell
                    sq = [(x0, y0), (x0 + cell, y0), (x0 + cell, y0 + cell), (x0, y0 + cell)]
                    d.polygon(_rotate(sq, cx, cy, rot), fill=255)
    elif kind == "arrows":
        pts = [(cx - r, cy - r * 0.22), (cx + r * 0.1, cy - r * 0.22), (cx + r * 0.1, cy - r * 0.6),
               (cx + r, cy), (cx + r * 0.1, cy + r * 0.6), (cx + r * 0.1, cy + r * 0.22), (cx - r, cy + r * 0.22)]
        d.polygon(_rotate(pts, cx, cy, rot), fill=255)
    else:  # pragma: no cover - CLASS_NAMES and this list are kept together
        raise ValueError(kind)
    return m


def _fill(rng, s, colour) -> Image.Image:
    """Solid, or a second-colour texture (dots or hatching), so texture is not a class cue."""
    base = Image.new("RGB", (s, s), colour)
    style = rng.integers(0, 5)
    if style >= 2:
        return base
    d = ImageDraw.Draw(base)
    c2 = tuple(int(np.clip(v + rng.integers(-60, 61), 0, 255)) for v in colour)
    step = int(rng.integers(4, 8)) * _SS
    if style == 1:
        for x in range(0, s, step):
            d.line([(x, 0), (x + s // 2, s)], fill=c2, width=_SS)
    else:
        for x in range(0, s, step):
            for y in range(0, s, step):
                d.ellipse([x, y, x + _SS * 1.5, y + _SS * 1.5], fill=c2)
    return base


def render(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One image of class ``kind`` as uint8 (size, size, 3)."""
    s = size * _SS
    img = _background(rng, s)
    d = ImageDraw.Draw(img)
    # distractor strokes and small blobs: clutter the object must be told apart from
    for _ in range(int(rng.integers(1, 3))):
        p = rng.uniform(0, s, 4)
        d.line([(p[0], p[1]), (p[2], p[3])], fill=_colour(rng), width=_SS)
    if rng.random() < 0.3:
        cx, cy = rng.uniform(0, s, 2)
        rr = rng.uniform(0.02, 0.04) * s
        d.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=_colour(rng))
    # the object: size, place and rotation vary; it may touch the border
    r = rng.uniform(0.26, 0.38) * s
    cx, cy = rng.uniform(0.3 * s, 0.7 * s, 2)
    rot = rng.uniform(0, 2 * math.pi)
    mask = _shape_mask(kind, s, cx, cy, r, rot, rng)
    local = np.asarray(img.crop((int(cx - r), int(cy - r), int(cx + r) + 1, int(cy + r) + 1)), float)
    avoid = local.reshape(-1, 3).mean(0) if local.size else (128, 128, 128)
    fg = _fill(rng, s, _far_colour(rng, avoid))
    img.paste(fg, (0, 0), mask)
    # a thin occluding bar across the object, sometimes
    if rng.random() < 0.15:
        ang = rng.uniform(0, math.pi)
        dx, dy = math.cos(ang) * s, math.sin(ang) * s
        off = rng.uniform(-0.5, 0.5) * r
        d.line([(cx - dx + off, cy - dy), (cx + dx + off, cy + dy)], fill=_colour(rng),
               width=max(_SS, int(rng.uniform(0.06, 0.12) * r)))
    img = img.resize((size, size), Image.BILINEAR)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    arr = np.asarray(img, float)
    arr = arr + rng.normal(0, rng.uniform(3, 10), arr.shape)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _write_images(job) -> None:
    folder, name, ci, start, stop, size, seed, image_format = job
    for i in range(start, stop):
        # one generator per image: any image can be regenerated alone, and the stream does
        # not depend on how many images came before it or on which process drew it
        rng = np.random.default_rng([seed, ci, i])
        arr = render(name, size, rng)
        path = os.path.join(folder, f"{name}_{i:05d}.{image_format}")
        if image_format == "png":
            Image.fromarray(arr).save(path, format="PNG", optimize=False)
        else:
            Image.fromarray(arr).save(path, format="JPEG", quality=92)


MAX_PER_CLASS = 100_000  # 1,000,000 images at most: more only fills the disk


def generate(out, *, classes: int = DEFAULT_CLASSES, per_class: int = DEFAULT_PER_CLASS,
             size: int = DEFAULT_SIZE, seed: int = SYNTH_SEED, overwrite: bool = False,
             image_format: str = "png") -> SynthResult:
    """Write the synthetic dataset to ``out/<class>/<class>_<i>.png``.

    Args:
        out: the folder to create (refused when it exists and is not empty, unless ``overwrite``).
        classes: number of classes, 2..10 (circles, squares, triangles, stars, crosses, ...).
        per_class: images per class.
        size: image side in pixels (16..1024).
        seed: the same seed gives the same files.
        overwrite: replace an existing ``out``.
        image_format: ``png`` (lossless, default) or ``jpg``.

    Example:
        >>> generate("shapes", classes=5, per_class=200, size=64, seed=0)   # doctest: +SKIP
    """
    if not 2 <= classes <= len(CLASS_NAMES):
        raise UsageError(f"--classes must be between 2 and {len(CLASS_NAMES)}; got {classes}")
    if not 1 <= per_class <= MAX_PER_CLASS:
        raise UsageError(f"--per-class must be between 1 and {MAX_PER_CLASS:,}; got {per_class}")
    if not 16 <= size <= 1024:
        raise UsageError(f"--size must be between 16 and 1024 pixels; got {size}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise UsageError(f"--seed must be a whole number from 0 to {2**32 - 1}; got {seed!r}")
    if image_format not in ("png", "jpg"):
        raise UsageError(f"--format must be png or jpg; got {image_format!r}")
    out = check_out_dir(out, overwrite, what="output folder")
    names = CLASS_NAMES[:classes]
    with atomic_dir(out, overwrite=overwrite, what="synthetic dataset") as tmp:
        jobs = []
        for ci, name in enumerate(names):
            (tmp / name).mkdir()
            for start in range(0, per_class, 64):
                jobs.append((str(tmp / name), name, ci, start, min(per_class, start + 64), size, seed, image_format))
        workers = min(len(jobs), os.cpu_count() or 1)
        if workers > 1 and sys.platform == "linux" and "tensorflow" not in sys.modules:
            ctx = multiprocessing.get_context("fork")  # never fork a process running TensorFlow
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                list(pool.map(_write_images, jobs))
        else:
            for job in jobs:
                _write_images(job)
        result = SynthResult(out=out.resolve(), class_names=names, per_class=per_class, size=size, seed=seed)
        write_json(tmp / SYNTH_RECORD, result.to_dict())
    return result
