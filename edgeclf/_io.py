"""Write files so that a crash or Ctrl-C leaves the old file or none, never half of one.
Standard library (and ``edgeclf.errors``) only."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

from .errors import UsageError

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    The temp name keeps the real suffix (some writers, matplotlib and Keras among them,
    pick the format from it). On any exception the temp file is removed and ``path`` is
    untouched.
    """
    target = Path(path)
    sfx = target.suffix if suffix is None else suffix
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{sfx}", dir=target.parent)
    except OSError as exc:
        # Name the file the user asked for, not the temporary one beside it.
        raise OSError(exc.errno, exc.strerror, str(target)) from None
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes 0600 files; the renamed result should look like any file the user writes.
    os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        yield tmp_path
        if tmp_path.is_dir():
            raise RuntimeError("atomic_path is for files; use atomic_dir for folders")
        try:
            os.replace(tmp_path, target)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(target)) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def write_bytes(path: PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_text(path: PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: PathLike, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def check_out_dir(out: PathLike, overwrite: bool, *, inside: Iterable[Optional[PathLike]] = (),
                  what: str = "--out") -> Path:
    """Refuse an output folder before any work starts; returns ``out`` as a Path.

    Raises UsageError (one line) when ``out`` is an existing file, is a non-empty folder and
    ``overwrite`` is False, or equals, contains or lies inside one of the folders ``inside``
    (the input data: replacing it would delete the data, and a run inside it becomes a class
    on the next scan). An empty existing folder is fine; ``atomic_dir`` replaces it.
    """
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"{what} {out} exists and is a file; choose a folder name")
    real = Path(os.path.realpath(out))
    for d in inside:
        if d is None:
            continue
        dr = Path(os.path.realpath(Path(d).expanduser()))
        if real == dr:
            rel = "is"
        elif dr in real.parents:
            rel = "is inside"
        elif real in dr.parents:
            rel = "contains"
        else:
            continue
        raise UsageError(f"{what} {out} {rel} the input folder {d}; choose a folder outside the data")
    if out.is_dir() and not overwrite and any(out.iterdir()):
        raise UsageError(f"{what} {out} exists and is not empty; choose another folder or pass --overwrite")
    return out


@contextlib.contextmanager
def atomic_dir(path: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path``.

    Without ``overwrite`` an existing non-empty folder ``path`` is left alone and
    FileExistsError raised before any work starts (an empty folder is simply replaced). An
    existing *file* ``path`` is always refused (UsageError), never replaced. On failure the
    temporary folder is removed.
    """
    target = Path(path)
    if (target.exists() or target.is_symlink()) and not target.is_dir():
        raise UsageError(f"{target} exists and is a file, not a folder; choose a folder name")
    if target.exists() and not overwrite and not _is_empty_dir(target):
        raise FileExistsError(str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if (target.exists() or target.is_symlink()) and not target.is_dir():
            raise UsageError(f"{target} became a file while it was being written; nothing replaced it")
        if _is_empty_dir(target):
            target.rmdir()
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            elif old.exists() or old.is_symlink():
                old.unlink()
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
