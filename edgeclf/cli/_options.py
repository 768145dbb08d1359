"""Options every command spells the same way, and the one way results leave as JSON."""

from __future__ import annotations

import json

import click

JSON_HELP = "Write the result as JSON to FILE; '-' prints it on standard output instead of the table."


def json_option(f):
    """``--json FILE``: every command's result as JSON, to a file or (``-``) to stdout."""
    return click.option("--json", "json_out", type=click.Path(dir_okay=False, allow_dash=True), default=None,
                        metavar="FILE", help=JSON_HELP)(f)


def _at_least_one(ctx, param, value):
    from ..errors import UsageError

    for v in value if isinstance(value, tuple) else (value,):
        if v is not None and v < 1:
            raise UsageError(f"{max(param.opts, key=len)} must be at least 1; got {v}")
    return value


def threads_option(f=None, *, multiple: bool = False, help: str = "Engine threads (default: the number of physical cores)."):
    """``--threads N`` (at least 1); ``multiple=True`` for commands that sweep thread counts."""
    opt = click.option("--threads", type=int, default=None, multiple=multiple, callback=_at_least_one, help=help)
    return opt if f is None else opt(f)


def json_to_stdout(json_out) -> bool:
    """True when ``--json -`` asked for JSON on stdout (then the table is not printed)."""
    return json_out == "-"


def emit_json(json_out, obj) -> None:
    """Write ``obj`` where ``--json`` said: stdout for ``-``, else atomically to the file."""
    if json_out is None:
        return
    if json_to_stdout(json_out):
        click.echo(json.dumps(obj, indent=2, ensure_ascii=False))
        return
    from .._io import write_json
    from .._term import info

    write_json(json_out, obj)
    info(f"wrote {json_out}")
