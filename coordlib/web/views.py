"""The pages' HTML: Jinja2 templates shipped in ``coordlib/web/templates``, autoescaped, with
the filters they use to show ages, money and sizes as ``coord status`` does."""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from ..contacts import format_age, format_kib
from ..pipeline.ledger import usd

__all__ = ["TEMPLATES", "column_slug", "render"]

TEMPLATES = Path(__file__).with_name("templates")


def age(seconds: float | None) -> str:
    """How long, shortly (45s, 12m, 3h, 2d); "-" when unknown."""
    return "-" if seconds is None else format_age(seconds)


def ago(ts: float | None) -> str:
    """How long ago an epoch time was; "never" when unknown."""
    return "never" if not ts else f"{format_age(time.time() - ts)} ago"


def clock(ts: float | None) -> str:
    """An epoch time as the local clock shows it (HH:MM:SS)."""
    return "-" if not ts else time.strftime("%H:%M:%S", time.localtime(ts))


def column_slug(name: str) -> str:
    """A column's name as a CSS class: "Ready to merge" -> "ready-to-merge"."""
    return name.lower().replace(" ", "-")


@cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(usd=usd, size=format_kib, age=age, ago=ago, clock=clock, slug=column_slug)
    return env


def render(name: str, **context: Any) -> str:
    """Render the template `name` with `context`."""
    return _env().get_template(name).render(**context)
