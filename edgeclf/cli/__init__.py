"""The ``edgeclf`` command. Each command module keeps its heavy imports (TensorFlow,
the engines) inside the command functions, so ``edgeclf --help`` and the runtime-only
commands start in a fraction of a second and never load TensorFlow."""

from __future__ import annotations

import contextlib
import os
import sys

import click

from .. import __version__
from ..errors import EdgeclfError, OptionError


def _flag(ctx, param: str) -> str:
    """The command-line spelling of a library parameter name (``batch_size`` -> ``--batch-size``)."""
    sub = ctx.command.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
    for p in getattr(sub, "params", ()):
        if p.name == param and getattr(p, "opts", None):
            return max(p.opts, key=len)
    return "--" + param.replace("_", "-")


class _Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a job scheduler, a container stopping), unwound like Ctrl-C so that
    temporary files and folders are removed on the way out."""


def _raise_terminated(signum, frame):
    raise _Terminated()


@contextlib.contextmanager
def _stop_on_sigterm():
    """SIGTERM raises ``_Terminated`` while a command runs (the default handler is put back after)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


# Each command and the module that defines it: a command's module is imported only when that
# command runs (or help lists it), so `edgeclf predict` on a device loads no training code.
COMMAND_MODULES = {
    "data": "data", "train": "train", "models": "train", "export": "export", "predict": "predict",
    "verify": "predict", "stream": "stream", "compare": "compare", "bench": "compare", "run": "run",
    "explain-quant": "quant",
}


class _Group(click.Group):
    """Maps edgeclf's own errors to one ``Error: ...`` line and their exit code, in one place,
    and loads each command's module on first use."""

    def list_commands(self, ctx):
        return sorted(set(COMMAND_MODULES) | set(self.commands))

    def get_command(self, ctx, name):
        if name not in self.commands and name in COMMAND_MODULES:
            import importlib

            module = importlib.import_module(f"{__name__}.{COMMAND_MODULES[name]}")
            for command in module.COMMANDS:
                self.commands.setdefault(command.name, command)
        return self.commands.get(name)

    def invoke(self, ctx):
        from .._io import private_tempdir
        from .._term import printable

        try:
            # private_tempdir: a kill -9 leaves no temp files forever; the next run removes them.
            with _stop_on_sigterm(), private_tempdir():
                return super().invoke(ctx)
        except OptionError as exc:
            click.echo(f"Error: {printable(exc.for_flag(_flag(ctx, exc.param)))}", err=True)
            sys.exit(exc.exit_code)
        except EdgeclfError as exc:
            click.echo(f"Error: {printable(exc)}", err=True)
            sys.exit(exc.exit_code)
        except BrokenPipeError:
            # `edgeclf ... | head`: the reader left; stop quietly as Unix tools do (128 + SIGPIPE).
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # the final flush at exit must not fail again
            os.close(devnull)
            sys.exit(141)
        except _Terminated:
            click.echo("Terminated; nothing half-written was left behind.", err=True)
            sys.exit(143)
        except KeyboardInterrupt:
            click.echo("Interrupted; nothing half-written was left behind.", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except OSError as exc:
            # The disk, not edgeclf: a full disk, a read-only folder, a path through a file.
            where = f" {exc.filename}" if exc.filename else ""
            click.echo(f"Error: cannot write or read{where}: {exc.strerror or exc}; check the path and free space",
                       err=True)
            sys.exit(1)
        except MemoryError:
            click.echo("Error: out of memory; try a smaller --batch-size or --image-size", err=True)
            sys.exit(1)
        except Exception as exc:  # a bug, not bad input: one line, traceback on request
            if os.environ.get("EDGECLF_VERBOSE"):
                raise
            click.echo(
                f"Error: internal error {type(exc).__name__}: {exc}\n"
                "       (a bug in edgeclf; rerun with EDGECLF_VERBOSE=1 for the traceback and report it)",
                err=True,
            )
            sys.exit(70)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgeclf")
def main():
    """Train image classifiers, quantize and export them to TFLite and ONNX, and prove
    on-device parity and latency with a TensorFlow-free runtime.

    Set EDGECLF_VERBOSE=1 to see TensorFlow's own logs and full tracebacks."""
    from .._term import show_progress_on_stderr

    show_progress_on_stderr()

