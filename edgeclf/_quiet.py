"""Keep native libraries' start-up chatter (CUDA probes, oneDNN and XNNPACK banners,
converter statistics) off the user's terminal. Standard library only."""

from __future__ import annotations

import contextlib
import os
import sys


def verbose() -> bool:
    return bool(os.environ.get("EDGECLF_VERBOSE"))


@contextlib.contextmanager
def native_stderr_silenced():
    """Point file descriptor 2 at /dev/null for the block (C++ code writes there directly).

    Python-level errors are unaffected: a traceback is printed after the block restores
    the descriptor. Does nothing with EDGECLF_VERBOSE=1 or when fd 2 cannot be duplicated.
    """
    if verbose():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)
        os.close(saved)
