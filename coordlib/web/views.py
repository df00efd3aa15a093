"""The pages' HTML: Jinja2 templates shipped in ``coordlib/web/templates``, autoescaped, with
the filters they use to show ages, money and sizes as ``coord status`` does."""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from ..contacts import format_age
from ..pipeline.ledger import usd

__all__ = ["TEMPLATES", "column_slug", "render"]

TEMPLATES = Path(__file__).with_name("templates")


def size(kb: int | None) -> str:
    """KiB as a person reads a size: 812K, 3.4G ("-" when unknown)."""
    if kb is None or kb < 0:
        return "-"
    value, unit = float(kb), "K"
    for unit in "KMGT":
        if value < 1024 or unit == "T":
            break
        value /= 1024
    return f"{value:.0f}{unit}" if value >= 10 or unit == "K" else f"{value:.1f}{unit}"


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
    env.filters.update(usd=usd, size=size, age=age, ago=ago, clock=clock, slug=column_slug)
    return env


def render(name: str, **context: Any) -> str:
    """Render the template `name` with `context`."""
    return _env().get_template(name).render(**context)
