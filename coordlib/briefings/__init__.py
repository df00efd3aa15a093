"""Briefings: the prompts workers get, rendered from Jinja2 templates.

The package ships one template per kind; a folder of the user's own, given as
``briefings: {dir: …}`` in coordinator.yml, overrides any of them by file name
(``work.md.j2``, or the shared parts ``_rules.md.j2`` and ``_protocol.md.j2``).
Templates use StrictUndefined: a missing variable is an error, never an empty
string in a prompt.

The variables each kind gets (`KINDS` has the same, as data):

========  ==================================================================
every     ``issue`` (number, title, body, labels, comments[{author, body}],
          untrusted_comments[{author, url}]: see `issue_context`),
          ``repo`` (name, default_branch, build_command, test_command),
          ``branch``, ``model``, ``machine`` (name, …)
work      ``attempt``, ``previous`` (the last attempt's row, or None),
          ``files_in_scope`` [path], ``do_not_touch`` [{path, branch, assignment}]
fix       ``pr`` ({number, url, base} or None), ``review`` (text), ``failures``,
          ``guidance`` (a person's words, from `coord fix --guidance`)
review    ``pr`` ({number, url, head, base} or None), ``base_ref``
pr        ``summary``, ``tests`` (e.g. "passed"), ``assignment`` (the row)
pipeline  every stage's briefing also gets ``stage``, ``round``, ``review``, ``failures``,
          ``guidance`` and ``attempt`` (see `coordlib.pipeline.actions`)
smoke     ``ref``, ``merged`` [{number, title}], ``commands`` [command]
conflict  ``base``, ``conflicts`` [path]
========  ==================================================================
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, CoordError, UsageError

if TYPE_CHECKING:
    import jinja2

    from ..forge.base import Comment, Issue

__all__ = [
    "DEFAULT_TRUSTED_AUTHORS",
    "KINDS",
    "MAX_BRIEFING_BYTES",
    "check_briefing",
    "files_in_scope",
    "has_template",
    "issue_context",
    "render_briefing",
]

# Any briefing, rendered or given: the prompt travels on stdin, so this is about what a
# model should be sent at once (and what a trail comment can hold a pointer to), not argv.
MAX_BRIEFING_BYTES = 512 * 1024
# What of an issue goes into a briefing: its body, and each comment, up to these sizes.
_MAX_BODY_CHARS = 64 * 1024
_MAX_COMMENT_CHARS = 8 * 1024
_MAX_DISCUSSION_CHARS = 48 * 1024
# On GitHub, comments by these author associations are quoted; others are only listed.
DEFAULT_TRUSTED_AUTHORS = ("OWNER", "MEMBER", "COLLABORATOR")
_MARKER = "<!-- coord:"

_COMMON = ("issue", "repo", "branch", "model", "machine")
# kind -> (variables the caller must give, defaults for the optional ones)
KINDS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "work": (_COMMON, {"attempt": 1, "previous": None, "files_in_scope": [], "do_not_touch": []}),
    "fix": (_COMMON, {"pr": None, "review": "", "failures": "", "guidance": ""}),
    "review": (_COMMON, {"pr": None, "base_ref": "origin/main"}),
    "pr": (("issue", "repo", "summary", "assignment"), {"tests": ""}),
    "smoke": (("repo", "ref"), {"merged": [], "commands": []}),
    "conflict": (_COMMON, {"base": "main", "conflicts": []}),
    "rank": (("proposals",), {"skipped": []}),
}
_ISSUE_DEFAULTS = {"body": "", "labels": [], "comments": [], "untrusted_comments": [], "url": ""}


@functools.lru_cache(maxsize=8)
def _environment(user_dir: Path | None) -> jinja2.Environment:
    # Imported here: jinja2 costs ~30 ms, and most coord commands render nothing.  The
    # environment is cached (its loaders notice a user's edited template by mtime).
    import jinja2

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
    """Render the briefing template ``<kind>.md.j2`` with context.

    A known kind's optional variables get their defaults; a missing required one is a
    `CoordError` naming it.  Unknown kinds (a user's own template) render as given.
    """
    import jinja2

    name = f"{kind}.md.j2"
    ctx = dict(context)
    if kind in KINDS:
        required, defaults = KINDS[kind]
        missing = [k for k in required if k not in ctx]
        if missing:
            raise CoordError(f"the {kind} briefing needs {', '.join(missing)}")
        ctx = {**defaults, **ctx}
    issue = ctx.get("issue")
    if isinstance(issue, Mapping):
        ctx["issue"] = {**_ISSUE_DEFAULTS, **issue}
    try:
        template = _environment(user_dir).get_template(name)
        # Optional sections leave blank lines behind; one blank line between blocks is enough.
        return re.sub(r"\n{3,}", "\n\n", template.render(**ctx)).lstrip("\n")
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
            hint=f"the variables are {', '.join(sorted(ctx))}",
        ) from exc


def has_template(kind: str, *, user_dir: Path | None = None) -> bool:
    """Tell whether the template ``<kind>.md.j2`` exists (the user's, or a shipped one)."""
    import jinja2

    try:
        _environment(user_dir).get_template(f"{kind}.md.j2")
    except jinja2.TemplateNotFound:
        return False
    except jinja2.TemplateError:
        return True  # it exists; rendering will report what is wrong with it
    return True


def check_briefing(text: str, what: str = "briefing") -> str:
    """Return text if it can be sent as a worker's prompt; raise `UsageError` otherwise."""
    if "\0" in text:
        raise UsageError(f"the {what} contains a NUL byte; remove it and try again")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BRIEFING_BYTES:
        raise UsageError(
            f"the {what} is {size:,} bytes, over the limit of {MAX_BRIEFING_BYTES:,}; "
            f"shorten it, or point the worker at a file in the repo instead"
        )
    return text


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n\n[… cut: {len(text) - limit:,} more characters on the issue]"


def _trusted(c: Comment, trusted: set[str], forge_kind: str) -> bool:
    if "*" in trusted or (c.author and c.author.lower() in trusted):
        return True
    if not c.author_association:
        return forge_kind == "local"  # the local forge's files are the operator's own
    return c.author_association.lower() in trusted


def issue_context(
    issue: Issue,
    *,
    forge_kind: str,
    trusted_authors: Sequence[str] = DEFAULT_TRUSTED_AUTHORS,
) -> dict[str, Any]:
    """Return the issue as a briefing sees it: capped, and quoting only trusted comments.

    Comments that carry a coord marker (coordlib's own trail: earlier briefings and
    results) are left out, so a briefing never grows with each attempt.  Comments by
    authors not in `trusted_authors` (GitHub author associations such as OWNER, or
    logins; ``*`` trusts everyone) are listed by author and link, never quoted: anyone
    can comment on a public issue, and a briefing is what a worker obeys.
    """
    trusted = {t.lower() for t in trusted_authors}  # logins and associations: any case
    quoted: list[dict[str, str]] = []
    listed: list[dict[str, str]] = []
    room = _MAX_DISCUSSION_CHARS
    for c in issue.comments:
        if _MARKER in c.body:
            continue
        if room <= 0 or not _trusted(c, trusted, forge_kind):
            listed.append({"author": c.author or "someone", "url": c.url})
            continue
        body = _cap(c.body.strip(), min(_MAX_COMMENT_CHARS, room))
        room -= len(body)
        quoted.append({"author": c.author, "body": body})
    return {
        "number": issue.number,
        "title": issue.title,
        "body": _cap(issue.body, _MAX_BODY_CHARS),
        "labels": list(issue.labels),
        "url": issue.url,
        "comments": quoted,
        "untrusted_comments": listed,
    }


def files_in_scope(body: str, *, limit: int = 50) -> list[str]:
    """Return the file paths an issue body names in backticks (``src/x.py``, ``README.md``).

    A word counts when it has a slash or an extension; ``..`` and URLs never count.
    """
    found: list[str] = []
    for match in re.finditer(r"`([A-Za-z0-9_.][A-Za-z0-9_./-]*)`", body or ""):
        path = match.group(1).rstrip(".")
        looks_like_file = "/" in path or re.search(r"\.[A-Za-z0-9]{1,8}$", path)
        if looks_like_file and ".." not in path and "//" not in path and path not in found:
            found.append(path)
        if len(found) >= limit:
            break
    return found
