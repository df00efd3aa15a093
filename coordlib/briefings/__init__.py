"""Briefings: the prompts workers get, rendered from Jinja2 templates.

The package ships one template per kind (``work.md.j2`` …); a folder of the
user's own, given as ``briefings: {dir: …}`` in coordinator.yml, overrides any
of them by file name.  Templates use StrictUndefined: a missing variable is an
error, never an empty string in a prompt.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from ..errors import ConfigError

__all__ = ["render_briefing"]


def _environment(user_dir: Path | None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if user_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(user_dir)))
    loaders.append(jinja2.PackageLoader("coordlib", "briefings"))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=False,
        autoescape=False,  # Markdown for a model, not HTML
    )


def render_briefing(kind: str, context: Mapping[str, Any], *, user_dir: Path | None = None) -> str:
    """Render the briefing template ``<kind>.md.j2`` with context."""
    name = f"{kind}.md.j2"
    try:
        template = _environment(user_dir).get_template(name)
        return template.render(**context)
    except jinja2.TemplateNotFound as exc:
        raise ConfigError(
            f"no briefing template {name}", path=str(user_dir) if user_dir else None
        ) from exc
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(
            f"briefing template syntax error: {exc.message}",
            path=exc.filename or name,
            line=exc.lineno,
        ) from exc
    except jinja2.UndefinedError as exc:
        raise ConfigError(
            f"briefing template {name} uses an undefined variable: {exc.message}",
            path=str(user_dir / name) if user_dir else name,
            hint="the variables are issue, repo, branch, machine, model",
        ) from exc
