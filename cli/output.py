"""The one way the CLI writes text: untrusted text never reaches the terminal raw."""

from __future__ import annotations

import json
from typing import Any

import click

from coordlib.terminal import printable

__all__ = ["echo", "echo_json"]


def echo(message: Any = "", *, err: bool = False, nl: bool = True) -> None:
    """Print message with its control characters made visible (see `coordlib.terminal`)."""
    click.echo(printable(str(message)), err=err, nl=nl)


def echo_json(data: Any) -> None:
    """Print data as indented JSON; its strings keep their exact text, escaped."""
    click.echo(json.dumps(data, indent=2, default=str))
