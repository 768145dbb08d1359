"""Zip archives and ``.npy`` arrays checked from their headers before anything is extracted or
allocated (standard library and numpy only: the runtime reads ``golden.npz`` with it, and the
export side checks ``.keras`` zips with the same member rules).

A zip's central directory declares each member's name and sizes; ``check_zip_members`` refuses
names that could land outside a folder (``..``, absolute paths, drive letters, backslashes),
symbolic-link members, duplicate names (a checker could read one copy and a loader the other),
local headers that disagree with the central directory, members or totals over a cap, and
members that inflate far more than real data does (a zip bomb). ``read_npz`` then reads each
``.npy`` member's header (dtype, shape) and refuses object arrays and arrays whose declared
size is over the cap or does not match the member's size, before one byte of data is read.
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Callable, Optional

import numpy as np

# How much a member may inflate: real weights and images compress at most a few times; a
# stream of zeros deflates about 1000:1.
MAX_RATIO = 100

# Below this size a member may inflate as much as it likes (small configs compress well).
RATIO_FREE_BYTES = 1 << 20

# dtype kinds an array from a file may have: bool, integers, floats, complex, text, bytes.
# No object arrays (they would need pickle) and no structured or void records.
ARRAY_KINDS = frozenset("biufcUS")

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_SYMLINK = 0o120000
_MODE_MASK = 0o170000


@dataclass(frozen=True)
class ZipLimits:
    """Caps for one kind of archive (bytes, uncompressed)."""

    member: int  # any one member
    total: int  # all members together
    members: int = 10_000  # how many members


def check_zip_members(zf: zipfile.ZipFile, where: str, limits: ZipLimits, *,
                      error: Callable[[str], Exception], allowed: Optional[Callable[[str], bool]] = None,
                      what: str = "archive", expected: str = "") -> dict[str, zipfile.ZipInfo]:
    """Refuse a zip whose headers could write outside a folder, inflate past ``limits`` or
    hold members ``allowed`` does not accept; return ``{name: ZipInfo}``. Reads headers only.

    ``error`` builds the exception to raise from a one-line message (each side has its own
    error class); ``expected`` finishes the message for a member that is not allowed.
    """
    infos = zf.infolist()
    if len(infos) > limits.members:
        raise error(f"{where}: the {what} has {len(infos):,} members, over the limit of {limits.members:,}")
    seen: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.filename
        _check_member_name(name, info, where, what, error)
        if name in seen:
            raise error(f"{where}: the {what} holds {name!r} twice; a reader could take either copy, so it is "
                        "refused")
        if allowed is not None and not allowed(name):
            raise error(f"{where}: the {what} holds {name!r}, which {expected or 'does not belong in it'}")
        if info.file_size > limits.member:
            raise error(f"{where}: {name} in the {what} unpacks to {info.file_size:,} bytes, over the limit of "
                        f"{limits.member:,} bytes")
        if info.file_size > RATIO_FREE_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise error(f"{where}: {name} in the {what} unpacks {info.file_size // max(info.compress_size, 1):,} "
                        f"times larger than it is stored ({info.compress_size:,} -> {info.file_size:,} bytes), "
                        "which real data does not; a zip bomb is refused")
        total += info.file_size
        if total > limits.total:
            raise error(f"{where}: the {what}'s members unpack to over {limits.total:,} bytes in all, over the "
                        "limit")
        _check_local_header(zf, info, where, what, error)
        seen[name] = info
    return seen


def _check_member_name(name: str, info: zipfile.ZipInfo, where: str, what: str, error) -> None:
    mode = (info.external_attr >> 16) & _MODE_MASK
    if mode == _SYMLINK:
        raise error(f"{where}: {name!r} in the {what} is a symbolic link; refused (it could point anywhere)")
    parts = PurePosixPath(name).parts
    if (not name or name.startswith("/") or "\\" in name or "\x00" in name or ".." in parts
            or (len(name) > 1 and name[1] == ":")):
        raise error(f"{where}: the {what} holds a member named {name!r}, which could land outside the folder "
                    "it is unpacked into; refused")


def _check_local_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, what: str, error) -> None:
    """The local header must name the same member, and, unless the sizes follow the data
    (flag bit 3), declare the same sizes, as the central directory."""
    fp = zf.fp
    if fp is None:
        return
    pos = fp.tell()
    try:
        fp.seek(info.header_offset)
        raw = fp.read(_LOCAL_HEADER.size)
        if len(raw) != _LOCAL_HEADER.size:
            raise error(f"{where}: {info.filename} in the {what} has a truncated header; damaged archive")
        (sig, _ver, flags, _method, _t, _d, _crc, csize, usize, nlen, _elen) = _LOCAL_HEADER.unpack(raw)
        local_name = fp.read(nlen)
    finally:
        fp.seek(pos)
    if sig != b"PK\x03\x04":
        raise error(f"{where}: {info.filename} in the {what} has no local header where the directory says; "
                    "damaged or doctored archive")
    if local_name.decode("utf-8" if flags & 0x800 else "cp437", "replace") != info.filename:
        raise error(f"{where}: {info.filename} in the {what} is stored under another name in its local header; "
                    "doctored archive refused")
    if not flags & 0x8 and usize != 0xFFFFFFFF and (usize != info.file_size or csize != info.compress_size):
        raise error(f"{where}: {info.filename} in the {what} declares {usize:,} bytes in its local header but "
                    f"{info.file_size:,} in the directory; doctored archive refused")


def read_npy_header(f, where: str, name: str, cap: int, size: int, error) -> tuple:
    """(shape, fortran_order, dtype) from an ``.npy`` stream, checked: a plain dtype, the
    declared bytes under ``cap`` and no more than the member holds."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f"unknown .npy version {version}")
    except (ValueError, EOFError, SyntaxError, TypeError, OverflowError) as exc:
        raise error(f"{where}: {name} is not a readable .npy array ({str(exc)[:200]})") from None
    if dtype.hasobject or dtype.kind not in ARRAY_KINDS or dtype.fields is not None:
        raise error(f"{where}: {name} holds {dtype} values; only plain number, bool and text arrays are read "
                    "(object arrays would need pickle)")
    count = 1
    for dim in shape:
        count *= int(dim)
    nbytes = count * dtype.itemsize
    if nbytes > cap:
        raise error(f"{where}: {name} declares a {'x'.join(str(d) for d in shape) or 'scalar'} {dtype} array "
                    f"({nbytes:,} bytes), over the limit of {cap:,} bytes; refused before allocating it")
    if nbytes > size:
        raise error(f"{where}: {name} declares {nbytes:,} bytes of data but holds only {size:,}; damaged file")
    return shape, fortran, dtype


def read_npz(path, *, error: Callable[[str], Exception], limits: ZipLimits,
             what: str = ".npz archive") -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, every header checked before its array is allocated."""
    where = str(path)
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            infos = check_zip_members(zf, where, limits, error=error, what=what,
                                      allowed=lambda n: n.endswith(".npy"),
                                      expected="is not an .npy array (an .npz holds only .npy members)")
            for name, info in infos.items():
                with zf.open(info) as f:
                    shape, fortran, dtype = read_npy_header(f, where, name, limits.member, info.file_size, error)
                    arrays[name[:-4]] = _read_data(f, shape, fortran, dtype, where, name, error)
    except zipfile.BadZipFile as exc:
        raise error(f"{where}: not a readable {what} ({str(exc)[:200]})") from None
    return arrays


def _read_data(f, shape, fortran, dtype, where, name, error) -> np.ndarray:
    count = 1
    for dim in shape:
        count *= int(dim)
    data = f.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise error(f"{where}: {name} is truncated ({len(data):,} of {count * dtype.itemsize:,} bytes)")
    array = np.frombuffer(data, dtype=dtype, count=count).copy()
    if fortran:
        return array.reshape(shape[::-1]).transpose()
    return array.reshape(shape)
