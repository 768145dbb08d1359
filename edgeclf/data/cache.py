"""Decode every image once, in parallel, into a uint8 cache on disk.

The cache for one dataset root, image size and resize method is a folder holding
``index.json`` and one ``pixels-<token>.npy`` array (N, H, W, 3). The index maps each file to
its row, keyed by the file's (path, size, mtime); a changed, added or removed file is noticed
on the next run, and only what changed is decoded again. Files that failed to decode are not
remembered: they are tried again on every run (they are rare, and the cause may have been
outside the file: the EDGECLF_MAX_PIXELS limit, memory, permissions, a decoder version).

Writes are atomic: a new array is written under a fresh name and opened, then the index is
replaced to point at it, then only the array the previous index pointed to is removed (plus
arrays no index has named for an hour, left by concurrent runs). An array is memory-mapped as
soon as it is read, so removing its name never takes it from a process using it; a process
that finds the index's array already gone rebuilds. A crash leaves the old cache usable. Two
processes updating the same cache at once are not otherwise coordinated (the later index wins).
"""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .._io import atomic_path, write_json
from .._term import progress
from ..errors import DataError, ImageError
from ..runtime.preprocess import ResizeMethod, image_size_arg, load_image, max_pixels_limit

CACHE_VERSION = 1
_CHUNK = 32


@dataclass(frozen=True)
class DecodedImages:
    """The decoded images of ``paths`` (only the readable ones, in the order asked for).

    ``pixels`` may be a read-only memory map; ``bad`` maps unreadable path -> reason.
    """

    paths: tuple[str, ...]
    pixels: np.ndarray
    bad: dict
    decoded: int
    reused: int
    cache_dir: Path | None

    def rows(self, paths: Sequence[str]) -> np.ndarray:
        """Row numbers in ``pixels`` for ``paths`` (all of which must be readable)."""
        where = {p: i for i, p in enumerate(self.paths)}
        return np.asarray([where[p] for p in paths], dtype=np.int64)


def default_cache_root() -> Path:
    env = os.environ.get("EDGECLF_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgeclf" / "images"


def cache_dir_for(root, size, resize_method) -> Path:
    h, w = image_size_arg(size)
    method = ResizeMethod(resize_method).value
    key = hashlib.sha1(f"{os.path.abspath(root)}|{h}x{w}|{method}".encode()).hexdigest()[:16]
    name = f"{Path(root).name or 'root'}-{h}x{w}-{method}-{key}"
    return default_cache_root() / name


def _stat_key(path: str):
    try:
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]
    except OSError:
        return None


def _decode_chunk(args):
    paths, size, method = args
    out = []
    for p in paths:
        try:
            out.append((p, load_image(p, size, resize_method=method), None))
        except ImageError as exc:
            out.append((p, None, exc.reason))
        except MemoryError:
            out.append((p, None, "out of memory while decoding"))
        except Exception as exc:  # a decoder bug on one file must not cost the run
            out.append((p, None, f"cannot decode ({type(exc).__name__}: {exc})"))
    return out


def _pool(workers: int):
    """Processes (fork) when that is safe; threads otherwise.

    Forking a process that has TensorFlow's threads running can deadlock, and "spawn"
    re-imports the caller's main module (breaking unguarded scripts and re-importing
    TensorFlow in every worker). Pillow releases the GIL while it decodes and resizes, so
    threads still decode in parallel when TensorFlow is already loaded.
    """
    if sys.platform == "linux" and "tensorflow" not in sys.modules:
        return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))
    return ThreadPoolExecutor(max_workers=workers)


def _decode_many(paths: list[str], size, method: str, workers: int | None,
                 label: str, show: bool) -> Iterator[tuple[str, np.ndarray | None, str | None]]:
    chunks = [(paths[i:i + _CHUNK], size, method) for i in range(0, len(paths), _CHUNK)]
    if workers is None:
        workers = os.cpu_count() or 1
    workers = max(1, min(workers, len(chunks)))

    def results():
        if workers == 1 or len(paths) < 2 * _CHUNK:
            for c in chunks:
                yield from _decode_chunk(c)
            return
        with _pool(workers) as pool:
            for res in pool.map(_decode_chunk, chunks):
                yield from res

    it = results()
    if show:
        it = progress(it, total=len(paths), label=label)
    yield from it


def decode_images(paths: Sequence[str], size, *, resize_method="bilinear", root=None, cache: bool = True,
                  workers: int | None = None, show_progress: bool = True) -> DecodedImages:
    """Decode ``paths`` with ``load_image`` to ``size``, reusing and updating the disk cache.

    Args:
        paths: absolute image paths.
        size: ``S`` or ``(H, W)``.
        resize_method: as ``load_image``.
        root: the dataset root the cache is keyed by (default: the paths' common folder).
        cache: False decodes into memory and writes nothing.
        workers: decoding processes (default: one per CPU).
        show_progress: draw a progress line on stderr.

    Returns:
        DecodedImages; unreadable files are in ``bad`` with the reason, never raised.
    """
    h, w = image_size_arg(size)
    method = ResizeMethod(resize_method).value
    max_pixels_limit()  # a bad EDGECLF_MAX_PIXELS is one error now, not one per image
    paths = [os.path.abspath(p) for p in paths]
    if len(set(paths)) != len(paths):
        paths = list(dict.fromkeys(paths))
    keys = {p: _stat_key(p) for p in paths}

    if not cache:
        return _fresh(paths, (h, w), method, workers, show_progress)

    if root is None:
        root = os.path.commonpath(paths) if paths else "."
    cdir = cache_dir_for(root, (h, w), method)
    index, old = _read_index(cdir, (h, w), method)

    reuse: dict[str, int] = {}
    bad: dict[str, str] = {}
    todo: list[str] = []
    for p in paths:
        k = keys[p]
        e = index["entries"].get(p)
        if k is not None and e is not None and e[:2] == k and old is not None:
            reuse[p] = e[2]
        else:
            todo.append(p)  # new, changed, or failed last time (failures are always retried)

    fresh: dict[str, np.ndarray] = {}
    if todo:
        for p, arr, reason in _decode_many(todo, (h, w), method, workers,
                                           f"decoding {len(todo)} images", show_progress):
            if arr is None:
                bad[p] = reason
            else:
                fresh[p] = arr
    good = tuple(p for p in paths if p in reuse or p in fresh)

    if not fresh and old is not None and len(reuse) == len(index["entries"]):
        rows = np.asarray([reuse[p] for p in good], dtype=np.int64)
        pixels = old if np.array_equal(rows, np.arange(len(old))) else old[rows]
        return DecodedImages(good, pixels, bad, len(todo), len(reuse), cdir)

    cdir.mkdir(parents=True, exist_ok=True)
    name = f"pixels-{uuid.uuid4().hex[:12]}.npy"
    target = cdir / name
    need = len(good) * h * w * 3 + 4096
    _check_space(cdir, need)
    try:
        with atomic_path(target) as tmp:
            # Plain sequential writes, never a memory map: a full disk under a sparse map is a
            # SIGBUS that kills the process without a word; a write says ENOSPC.
            with _open_for_write(tmp, "wb") as f:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                        "shape": (len(good), h, w, 3)})
                for i, p in enumerate(good):
                    f.write(np.ascontiguousarray(fresh[p] if p in fresh else old[reuse[p]], np.uint8).tobytes())
                f.flush()
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise _no_space(cdir, need) from None
        raise
    # Map our array before the index names it: from then on another run may replace and
    # remove it, and the mapping keeps the data.
    pixels = np.load(target, mmap_mode="r")
    new_index = {
        "version": CACHE_VERSION, "root": os.path.abspath(root), "size": [h, w], "resize_method": method,
        "pixels": name,
        "entries": {p: keys[p] + [i] for i, p in enumerate(good) if keys[p] is not None},
    }
    write_json(cdir / "index.json", new_index)
    _remove_old_arrays(cdir, keep=name, previous=index.get("pixels"))
    return DecodedImages(good, pixels, bad, len(todo), len(reuse), cdir)


_ORPHAN_AGE_S = 3600
_open_for_write = open  # tests put a file that fills up here


def _no_space(cdir: Path, need: int) -> DataError:
    return DataError(f"no space left on the device for the decoded-image cache in {cdir} ({need / 2**20:,.0f} MB "
                     "needed); free space there, set EDGECLF_CACHE_DIR to a folder on a bigger disk, or "
                     "train with --no-cache")


def _check_space(cdir: Path, need: int) -> None:
    try:
        free = shutil.disk_usage(cdir).free
    except OSError:
        return  # unknown: the writes themselves will tell
    if free < need:
        raise _no_space(cdir, need)


def _remove_old_arrays(cdir: Path, *, keep: str, previous) -> None:
    """Remove the array the previous index named, and arrays no run has touched for an hour
    (left by a concurrent run whose index lost). Never a fresh array of a concurrent run."""
    now = time.time()
    # Half-written arrays of killed runs (atomic_path's temp names); a live writer keeps its
    # file's mtime fresh, so only ones untouched for an hour go.
    for f in cdir.glob(".pixels-*.tmp.npy"):
        try:
            if now - f.stat().st_mtime > _ORPHAN_AGE_S:
                f.unlink()
        except OSError:
            pass
    for f in cdir.glob("pixels-*.npy"):
        if f.name == keep:
            continue
        try:
            if f.name == previous or now - f.stat().st_mtime > _ORPHAN_AGE_S:
                f.unlink()
        except OSError:
            pass


def _fresh(paths, size, method, workers, show) -> DecodedImages:
    h, w = size
    bad: dict[str, str] = {}
    arrays = {}
    for p, arr, reason in _decode_many(paths, size, method, workers, f"decoding {len(paths)} images", show):
        if arr is None:
            bad[p] = reason
        else:
            arrays[p] = arr
    good = tuple(p for p in paths if p in arrays)
    pixels = np.stack([arrays[p] for p in good]) if good else np.zeros((0, h, w, 3), np.uint8)
    return DecodedImages(good, pixels, bad, len(paths), 0, None)


def _read_index(cdir: Path, size, method):
    empty = {"entries": {}}
    try:
        index = json.loads((cdir / "index.json").read_text("utf-8"))
        if (index.get("version") != CACHE_VERSION or index.get("size") != list(size)
                or index.get("resize_method") != method):
            return empty, None
        old = np.load(cdir / index["pixels"], mmap_mode="r")
        if old.dtype != np.uint8 or old.shape[1:] != (size[0], size[1], 3) \
                or len(old) != len(index["entries"]):
            return empty, None
        return index, old
    except (OSError, ValueError, KeyError, TypeError):
        return empty, None
