"""CLI commands: compare. Heavy imports stay inside the command functions."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
