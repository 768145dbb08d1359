"""Hostile files built as an attacker would, and a CLI runner that measures what a run cost.

``run_cli`` runs ``python -m edgeclf ARGS`` under a small parent process that reports the
child's own peak RSS (``RUSAGE_CHILDREN`` of that parent only, so other tests' children do
not count), with its own empty TMPDIR so files written to the temp directory can be seen.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]

_PARENT = r"""
import json, resource, subprocess, sys
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": r.returncode, "out": r.stdout, "err": r.stderr, "peak_kb": peak}))
"""


@dataclass(frozen=True)
class CliRun:
    rc: int
    out: str
    err: str
    peak_mb: float
    seconds: float
    tmp_files: tuple  # what the run left in its temp directory

    def assert_refused(self, *, budget_mb: float = 500, seconds: float = 60, match: str = "") -> None:
        """Exit 1, one ``Error:`` line and no traceback, within the time and memory budget."""
        lines = [ln for ln in self.err.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("Error: ")]
        assert self.rc == 1, f"exit {self.rc}, expected 1\nstdout: {self.out[-2000:]}\nstderr: {self.err[-2000:]}"
        assert len(errors) == 1, f"expected one Error: line, got: {lines[-10:]}"
        assert "Traceback" not in self.err + self.out, self.err[-3000:]
        assert match in errors[0], f"{match!r} not in {errors[0]!r}"
        assert self.seconds < seconds, f"took {self.seconds:.1f}s"
        assert self.peak_mb < budget_mb, f"peak RSS {self.peak_mb:.0f} MB"
        assert not self.tmp_files, f"left in the temp directory: {self.tmp_files[:5]}"


def run_cli(args, tmp: Path, *, timeout: float = 120) -> CliRun:
    tmpdir = Path(tmp) / "tmpdir"
    tmpdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmpdir), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-c", _PARENT, sys.executable, "-m", "edgeclf", *map(str, args)]
    start = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=str(tmp))
    seconds = time.monotonic() - start
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    left = tuple(str(p.relative_to(tmpdir)) for p in tmpdir.rglob("*"))
    return CliRun(doc["rc"], doc["out"], doc["err"], doc["peak_kb"] / 1024, seconds, left)


def zip_with_zeros(path: Path, members) -> Path:
    """Write a zip by hand: ``members`` is a list of ``(name, data)`` or ``(name, head, nbytes)``,
    the latter ``head`` followed by zeros to ``nbytes`` in all. The zeros are one deflated
    16 MiB block repeated (each ends in a full flush, so the copies do not depend on each
    other): gigabytes declared cost a few MB of disk and well under a second to write."""
    chunk = 16 << 20
    zeros = bytes(chunk)
    with open(path, "wb") as f:
        central = []
        for member in members:
            name, head, nbytes = (member[0], member[1], len(member[1])) if len(member) == 2 else member
            offset = f.tell()
            crc = zlib.crc32(head)
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            data = [c.compress(head), c.flush(zlib.Z_FULL_FLUSH)]
            left = nbytes - len(head)
            if left >= chunk:
                block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
                blocks, left = divmod(left, chunk)
                data.append(block * blocks)
                for _ in range(blocks):
                    crc = zlib.crc32(zeros, crc)
            data += [c.compress(zeros[:left]), c.flush(zlib.Z_FINISH)]
            crc = zlib.crc32(zeros[:left], crc)
            raw = b"".join(data)
            bname = name.encode()
            f.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x5821, crc, len(raw), nbytes,
                                len(bname), 0) + bname)
            f.write(raw)
            central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x5821, crc, len(raw), nbytes,
                                       len(bname), 0, 0, 0, 0, 0o100644 << 16, offset) + bname)
        start = f.tell()
        for entry in central:
            f.write(entry)
        f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central), f.tell() - start, start, 0))
    return Path(path)


def npy_header(shape, dtype="<f4") -> bytes:
    """An .npy version 1.0 header declaring ``shape`` (no data follows)."""
    text = repr({"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    pad = 64 - (10 + len(text) + 1) % 64
    text = text + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode("latin1")


def secret_file(tmp: Path) -> tuple[Path, bytes]:
    """A file whose bytes must never appear in any output."""
    secret = os.urandom(8).hex().encode() + b"-TOP-SECRET-" + os.urandom(8).hex().encode()
    path = Path(tmp) / "secret.txt"
    path.write_bytes(secret * 64)
    return path, secret


def assert_no_secret(root: Path, secret: bytes) -> None:
    for p in Path(root).rglob("*"):
        if p.is_file() and not p.name.startswith("secret"):
            assert secret not in p.read_bytes(), f"the secret's bytes are in {p}"
