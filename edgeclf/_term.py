"""Terminal output: tables, progress lines. Standard library only.

Library code reports progress through the ``edgeclf`` logger (``info``, ``progress``), so a
Python caller decides what is shown (``logging.getLogger("edgeclf").setLevel(...)``); nothing
appears unless someone asked for INFO. The CLI asks: ``show_progress_on_stderr`` sends those
messages to stderr as plain lines, and tables and results go to stdout.
"""

from __future__ import annotations

import logging
import sys
import time
import unicodedata
from typing import Iterable, Iterator, Sequence, TypeVar

T = TypeVar("T")

LOGGER = logging.getLogger("edgeclf")


def printable(text: object) -> str:
    """``text`` safe to print on a terminal: control characters (newlines, ANSI escapes) and
    invisible format characters (bidi overrides) become visible escapes like ``\\x1b``, so a
    label or file name from outside cannot forge an extra line or rewrite the screen."""
    s = str(text)
    if s.isprintable():
        return s
    out = []
    for ch in s:
        if ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def info(msg: str) -> None:
    LOGGER.info(msg)


def has_control_character(text: str) -> bool:
    """Whether ``text`` holds a C0 or C1 control character or DEL (a newline, ESC, ...): what no
    name that becomes a label may hold, since a label is printed and written one per line."""
    return any(unicodedata.category(ch) == "Cc" for ch in text)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (tests swap it). Every line is made
    ``printable``: messages carry class names and file names from outside."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    def format(self, record) -> str:
        return "\n".join(printable(line) for line in super().format(record).split("\n"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # logging.StreamHandler assigns it; the live sys.stderr wins
        pass


def show_progress_on_stderr() -> None:
    """Show edgeclf's progress messages on stderr, once per process (what the CLI wants)."""
    if not any(isinstance(h, _StderrHandler) for h in LOGGER.handlers):
        LOGGER.addHandler(_StderrHandler())
    LOGGER.setLevel(logging.INFO)
    # Not to the root logger too: a library's logging.basicConfig() would print every line twice.
    LOGGER.propagate = False


def _showing() -> bool:
    return LOGGER.isEnabledFor(logging.INFO) and any(isinstance(h, _StderrHandler) for h in LOGGER.handlers)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, align: str | None = None) -> str:
    """A plain-text table. ``align`` is a string of 'l'/'r' per column (default: numbers right)."""
    rows = [["" if v is None else printable(v) for v in r] for r in rows]
    headers = [printable(h) for h in headers]
    widths = [len(h) for h in headers]
    for r in rows:
        for i, v in enumerate(r):
            widths[i] = max(widths[i], len(v))
    if align is None:
        align = "".join(
            "r" if rows and all(_numeric(r[i]) for r in rows if r[i]) and any(r[i] for r in rows) else "l"
            for i in range(len(headers))
        )

    def fmt(cells):
        out = []
        for i, v in enumerate(cells):
            out.append(v.rjust(widths[i]) if align[i] == "r" else v.ljust(widths[i]))
        return "  ".join(out).rstrip()

    lines = [fmt(headers), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in rows]
    return "\n".join(lines)


def _numeric(s: str) -> bool:
    s = s.strip().rstrip("%x").replace(",", "").lstrip("+-")
    for unit in (" KB", " MB", " GB", " B", " ms", " s"):
        if s.endswith(unit):
            s = s[: -len(unit)]
    try:
        float(s)
        return True
    except ValueError:
        return False


def human_bytes(n: int) -> str:
    for unit, div in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def progress(items: Iterable[T], *, total: int | None = None, label: str = "", every: float = 0.5) -> Iterator[T]:
    """Yield ``items`` while drawing ``label  done/total  rate`` on stderr: a live bar on a
    terminal, one summary line at the end otherwise (logs stay short)."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if not _showing():
        yield from items
        return
    tty = sys.stderr.isatty()
    start = last = time.monotonic()
    n = 0

    def draw(final=False):
        elapsed = max(time.monotonic() - start, 1e-9)
        rate = n / elapsed
        if total:
            frac = n / total
            bar = ("#" * int(frac * 24)).ljust(24)
            text = f"{label} [{bar}] {n}/{total} {rate:.0f}/s"
        else:
            text = f"{label} {n} {rate:.0f}/s"
        if tty:
            sys.stderr.write("\r" + text + ("\n" if final else ""))
        elif final:
            sys.stderr.write(text + f" in {elapsed:.1f}s\n")
        sys.stderr.flush()

    for item in items:
        yield item
        n += 1
        now = time.monotonic()
        if tty and now - last >= every:
            last = now
            draw()
    draw(final=True)
