"""The one way the CLI writes text: untrusted text never reaches the terminal raw, and colour
only where it is wanted (``--color``, ``NO_COLOR``, a terminal)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from coordlib.terminal import printable

__all__ = ["COLOR_MODES", "color_mode", "echo", "echo_json", "echo_styled", "set_color", "styled",
           "use_color"]  # fmt: skip

COLOR_MODES = ("auto", "always", "never")
_mode = "auto"


def set_color(mode: str) -> None:
    """Set the colour mode for this run: auto (a terminal, unless NO_COLOR), always, never."""
    global _mode
    _mode = mode if mode in COLOR_MODES else "auto"


def color_mode() -> str:
    """Return the colour mode in force."""
    return _mode


def use_color(*, err: bool = False) -> bool:
    """Whether text written now (to stderr with `err`) may be coloured."""
    if _mode != "auto":
        return _mode == "always"
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False  # https://no-color.org: present and not empty
    stream = sys.stderr if err else sys.stdout
    return stream.isatty()


def styled(text: str, *, err: bool = False, fg: str | None = None, bold: bool | None = None) -> str:
    """Return untrusted text made printable, then styled when colour is in use."""
    safe = printable(text)
    if not use_color(err=err) or (fg is None and bold is None):
        return safe
    return click.style(safe, fg=fg, bold=bold)


def echo(message: Any = "", *, err: bool = False, nl: bool = True) -> None:
    """Print message with its control characters made visible (see `coordlib.terminal`)."""
    click.echo(printable(str(message)), err=err, nl=nl)


def echo_styled(message: str, *, err: bool = False, nl: bool = True) -> None:
    """Print a line built with `styled` (already printable): its colour kept when wanted."""
    click.echo(message, err=err, nl=nl, color=use_color(err=err))


def echo_json(data: Any) -> None:
    """Print data as indented JSON; its strings keep their exact text, escaped."""
    click.echo(json.dumps(data, indent=2, default=str))
