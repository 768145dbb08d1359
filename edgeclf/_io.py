"""Write files so that a crash or Ctrl-C leaves the old file or none, never half of one.
Standard library (and ``edgeclf.errors``) only."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

from .errors import UsageError

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _naming(target: Path) -> Iterator[None]:
    """An OSError without a file name (a full disk) names ``target``, the path the user asked for."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(target)) from None
        raise


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
        with _naming(target):
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


# Every folder edgeclf makes (a run, an export, a synthetic dataset, an `edgeclf run` folder)
# carries this file; --overwrite replaces only a folder that does, never a user's own folder.
MARKER = ".edgeclf"
# A temp folder younger than this is never judged stale: its writer may not have locked it yet.
_STALE_GRACE_S = 60.0
# Without file locks (Windows) an unlocked-looking temp folder counts as stale only after this.
_STALE_UNLOCKED_S = 86400.0


def is_edgeclf_dir(path: PathLike) -> bool:
    """True when ``path`` is a real folder that edgeclf made (it carries the marker file).

    Only the marker counts: files that edgeclf also writes (``config.json``, ``golden.npz``...)
    are common names, and a user's folder holding them beside their own files is not ours."""
    p = Path(path)
    return not p.is_symlink() and p.is_dir() and (p / MARKER).is_file()


def mark_dir(path: PathLike, what: str) -> Path:
    """Write the marker that lets a later ``--overwrite`` replace this folder."""
    return write_json(Path(path) / MARKER, {"made_by": "edgeclf", "what": what})


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _not_ours(out: Path, what: str) -> UsageError:
    return UsageError(f"{what} {out} holds files edgeclf did not write (it has no {MARKER} marker), and "
                      "--overwrite replaces only a folder edgeclf made; choose another folder or empty it yourself")


def _fcntl():
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; stale temp folders are judged by age alone
        return None
    return fcntl


@contextlib.contextmanager
def _dir_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` while edgeclf renames things in it, so that two runs
    never swap the same target at once and recovery never runs into a swap in progress."""
    fcntl = _fcntl()
    fd = None
    if fcntl is not None:
        try:
            fd = os.open(folder, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without locks: go on unlocked, as before
            if fd is not None:
                os.close(fd)
            fd = None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing releases the lock


def _hold_marker(folder: Path, what: str) -> Optional[int]:
    """Write the marker into a folder being filled and keep it locked while this process
    works; a killed process's lock goes with it, which is how stale folders are recognised."""
    path = folder / MARKER
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"made_by": "edgeclf", "what": what, "pid": os.getpid()}, f)
        f.write("\n")
    fcntl = _fcntl()
    if fcntl is None:
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _in_use(folder: Path, *, require_marker: bool = False) -> bool:
    """Whether a live edgeclf process may still be filling ``folder`` (a temp folder)."""
    try:
        st = folder.stat()
    except OSError:
        return True
    age = time.time() - st.st_mtime
    if age < _STALE_GRACE_S or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
        return True
    fcntl = _fcntl()
    marker = folder / MARKER
    if not marker.is_file() and require_marker:
        return True  # not provably edgeclf's: never removed
    if fcntl is None or not marker.is_file():
        return age < _STALE_UNLOCKED_S
    try:
        fd = os.open(marker, os.O_RDONLY)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True  # locked: its writer is alive
    finally:
        os.close(fd)
    return False


def _temp_names(parent: Path, prefix: str, suffix: str) -> list[Path]:
    # Exactly mkdtemp's names: prefix, 8 characters, suffix; nothing a user would name so.
    pattern = re.compile(re.escape(prefix) + r"[a-z0-9_]{8}" + re.escape(suffix) + "$")
    try:
        return [parent / n for n in os.listdir(parent) if pattern.match(n)]
    except OSError:
        return []


def clean_stale_temp(parent: PathLike, prefix: str, suffix: str = "", *, require_marker: bool = False) -> list[Path]:
    """Remove edgeclf's temp folders ``prefix*suffix`` in ``parent`` that a killed process
    left behind (this user's, not locked by a live process, older than a minute; with
    ``require_marker`` only ones holding edgeclf's marker). Returns what went."""
    removed = []
    for d in _temp_names(Path(parent), prefix, suffix):
        if d.is_symlink() or not d.is_dir() or _in_use(d, require_marker=require_marker):
            continue
        shutil.rmtree(d, ignore_errors=True)
        if not d.exists():
            removed.append(d)
    return removed


def _side_names(target: Path) -> tuple[Path, Path]:
    return target.with_name(f".{target.name}.new"), target.with_name(f".{target.name}.old")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        with contextlib.suppress(OSError):
            path.unlink()


def _recover(target: Path) -> None:
    """Finish or undo a replace of ``target`` that a kill interrupted (call with the lock held).

    A replace is three renames: the finished temp folder to ``.T.new``, ``T`` to ``.T.old``,
    ``.T.new`` to ``T``. Whatever a kill left, the next run puts a complete folder at ``T``."""
    from ._term import info

    new, old = _side_names(target)
    present = target.exists() or target.is_symlink()
    new_ready = new.is_dir() and not new.is_symlink()
    if not present and new_ready:
        os.replace(new, target)
        info(f"{target}: an earlier edgeclf was stopped while replacing this folder; finished replacing it")
    elif not present and old.is_dir() and not old.is_symlink():
        os.replace(old, target)
        info(f"{target}: an earlier edgeclf was stopped while replacing this folder; restored the previous one")
    elif present and new_ready and target.is_dir() and not target.is_symlink():
        _remove(old)
        os.replace(target, old)
        os.replace(new, target)
        info(f"{target}: an earlier edgeclf was stopped while replacing this folder; finished replacing it")
    _remove(old)


def prepare_target(target: PathLike) -> None:
    """Before writing ``target``: repair an interrupted replace and remove the temp folders
    killed runs left beside it (only edgeclf's own names, only unlocked and old ones)."""
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return
    with _dir_lock(parent):
        _recover(target)
    clean_stale_temp(parent, f".{target.name}.", ".tmp")


def _check_writable(out: Path, what: str) -> None:
    # The result is built beside ``out`` and renamed onto it: its parent must take writes.
    probe = out.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.is_dir() and not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {out}: cannot write in {probe} (read-only or permission denied); "
                         "choose a folder you can write to")


def _named(out: Path, what: str) -> Path:
    """``out`` as an absolute path with a name: the side names of a replace are built from it,
    and the file system's root has none (nor may it be replaced)."""
    full = Path(os.path.abspath(out))
    if full.parent == full:
        raise UsageError(f"{what} {out} is the root of the file system; choose a folder of its own")
    return full


def check_not_inputs(out: PathLike, inputs: Iterable[Optional[PathLike]], *, what: str = "--out") -> None:
    """Refuse (UsageError) an output folder that is, contains or lies inside one of ``inputs``
    (data folders, model files or folders): replacing it would delete them, and an output inside
    a data folder becomes a class on the next scan. Symlinks are resolved on both sides."""
    real = Path(os.path.realpath(Path(out).expanduser()))
    for d in inputs:
        if d is None or str(d) == "":
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
        raise UsageError(f"{what} {out} {rel} the input {d}; choose a folder outside every input")


def check_out_dir(out: PathLike, overwrite: bool, *, inside: Iterable[Optional[PathLike]] = (),
                  what: str = "--out") -> Path:
    """Refuse an output folder before any work starts; returns ``out`` as a Path.

    Raises UsageError (one line) when ``out`` is an existing file or the file system's root, is
    a non-empty folder and ``overwrite`` is False, is a non-empty folder edgeclf did not make
    (no marker; even with ``overwrite``), cannot be written, or equals, contains or lies inside
    one of ``inside`` (the inputs: see ``check_not_inputs``). An empty existing folder is fine;
    ``atomic_dir`` replaces it. A replace that a kill interrupted earlier is repaired first.
    """
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"{what} {out} exists and is a file; choose a folder name")
    _named(out, what)
    check_not_inputs(out, inside, what=what)
    _check_writable(out, what)
    prepare_target(_named(out, what))
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UsageError(f"{what} {out} exists and is not empty; choose another folder or pass --overwrite")
        if not is_edgeclf_dir(out):
            raise _not_ours(out, what)
    return out


def _keep_aside(tmp: Path, target: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        keep = target.with_name(f"{target.name}.new-{stamp}" + (f"-{n}" if n else ""))
        if not (keep.exists() or keep.is_symlink()):
            os.replace(tmp, keep)
            return keep
    raise FileExistsError(str(target))


@contextlib.contextmanager
def atomic_dir(path: PathLike, *, overwrite: bool = False, what: str = "output") -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path``.

    Without ``overwrite`` an existing non-empty folder ``path`` is left alone and
    FileExistsError raised before any work starts (an empty folder is simply replaced). With
    ``overwrite`` only a folder edgeclf made (it carries ``MARKER``) is replaced; anything
    else is refused (UsageError). An existing *file* ``path`` is always refused. The same
    checks run again at the end, under a lock: a folder that filled up meanwhile (another
    run to the same place) is never replaced; the new result is kept beside it under
    ``path.new-<time>`` and UsageError says where. On failure the temporary folder is removed;
    a kill leaves only hidden names that the next run cleans up or repairs.
    """
    target = Path(path)
    if (target.exists() or target.is_symlink()) and not target.is_dir():
        raise UsageError(f"{target} exists and is a file, not a folder; choose a folder name")
    target = _named(target, "the folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    prepare_target(target)
    if target.exists() and not _is_empty_dir(target):
        if not overwrite:
            raise FileExistsError(str(target))
        if not is_edgeclf_dir(target):
            raise _not_ours(target, "--out")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    lock_fd = None
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        lock_fd = _hold_marker(tmp, what)
        with _naming(target):
            yield tmp
        if not (tmp / MARKER).is_file():  # the caller may have emptied the folder; mark it again
            mark_dir(tmp, what)
        with _dir_lock(target.parent):
            if (target.exists() or target.is_symlink()) and not target.is_dir():
                raise UsageError(f"{target} became a file while it was being written; nothing replaced it")
            if target.exists() and not _is_empty_dir(target) and (not overwrite or not is_edgeclf_dir(target)):
                keep = _keep_aside(tmp, target)
                raise UsageError(f"{target} was filled by something else while this ran (another run to the "
                                 f"same folder?); it was left alone and the new result is in {keep}")
            if _is_empty_dir(target):
                target.rmdir()
            if target.exists() or target.is_symlink():
                new, old = _side_names(target)
                _remove(new)
                _remove(old)
                os.replace(tmp, new)      # complete: from here a kill is finished by the next run
                os.replace(target, old)
                os.replace(new, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


def write_into_dir(path: PathLike, write, *, overwrite: bool = False, what: str = "output") -> Path:
    """Fill the folder ``path`` with ``write(folder)`` through ``atomic_dir`` (so it gets the
    marker and follows the rules of ``--out``); returns the path ``write`` returned, moved to
    where it now lies in ``path``."""
    with atomic_dir(path, overwrite=overwrite, what=what) as tmp:
        written = Path(write(tmp))
    return Path(path) / written.relative_to(tmp)


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    """A private temporary folder (removed on exit) in the system temp folder; ones a killed
    process left with the same ``prefix`` are removed first."""
    parent = Path(tempfile.gettempdir())
    clean_stale_temp(parent, prefix, require_marker=True)  # a shared folder: only provably ours
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    lock_fd = None
    try:
        lock_fd = _hold_marker(tmp, "temporary files")
        yield tmp
    finally:
        if lock_fd is not None:
            os.close(lock_fd)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def private_tempdir() -> Iterator[Optional[Path]]:
    """Point every temporary file of this process (TensorFlow's converter SavedModels,
    tf2onnx, ONNX Runtime's quantizer) into one locked ``edgeclf-*`` folder that is removed on
    exit; one left by a killed process is removed by the next run. Yields None (and changes
    nothing) when the system temp folder cannot be written."""
    try:
        ctx = temp_dir("edgeclf-")
        folder = ctx.__enter__()
    except OSError:
        yield None
        return
    old_dir, old_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = str(folder)
    os.environ["TMPDIR"] = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = old_dir
        if old_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_env
        ctx.__exit__(None, None, None)
