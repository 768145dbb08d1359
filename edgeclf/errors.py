"""The exception tree. Standard library only, so every layer can raise these.

Every error a user can cause is an ``EdgeclfError`` whose message says what was wrong,
where, and what to do; the CLI prints it as one ``Error: ...`` line and exits non-zero.
"""

from __future__ import annotations


class EdgeclfError(Exception):
    """Base class of every error edgeclf raises on purpose."""

    exit_code = 1


class UsageError(EdgeclfError):
    """An option or argument that makes no sense (bad precision, thread count 0, ...)."""

    exit_code = 2


class OptionError(UsageError):
    """A parameter with a value that makes no sense. The message names the parameter as the
    Python API spells it (``epochs must be at least 1``); the CLI shows the flag instead
    (``--epochs must be at least 1``), so each layer speaks its caller's language."""

    def __init__(self, param: str, problem: str):
        self.param = param
        self.problem = problem
        super().__init__(f"{param} {problem}")

    def for_flag(self, flag: str) -> str:
        return f"{flag} {self.problem}"


class DataError(EdgeclfError):
    """A dataset that cannot be used: missing, empty, one class, classes that differ."""


class ImageError(EdgeclfError):
    """One image that cannot be decoded: corrupt, truncated, not an image, too large."""

    def __init__(self, path, reason: str):
        self.path = str(path) if path is not None else None
        self.reason = reason
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{reason}")


class ModelFileError(EdgeclfError):
    """A model file that cannot be loaded: empty, truncated, wrong format, no metadata."""


class ExportError(EdgeclfError):
    """An export that ran but produced a file that fails its checks (parity, collapse)."""


class StreamError(EdgeclfError):
    """A frame source that cannot be used: a camera that does not open, a video that cannot be
    decoded, a stream that drops and does not come back, a watched folder that disappears."""


class MissingDependencyError(EdgeclfError):
    """An optional package is not installed; the message names the extra to install."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its class name when it has none), cut to
    ``limit`` characters: what a one-line error quotes of a library's failure."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
