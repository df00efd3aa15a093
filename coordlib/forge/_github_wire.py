"""GitHub's side of `GitHubForge`: its JSON read into the forge's values, its errors and rate
limits read, and where a token comes from.  Pure functions: no request is made here but
``gh auth token`` in `resolve_token`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from github import GithubException

from .base import Check, Comment, Issue, PullRequest, Review

__all__ = [
    "DEFAULT_API_URL",
    "comment_of",
    "issue_of",
    "message_of",
    "next_link",
    "pull_of",
    "rate_limit_wait",
    "resolve_token",
    "review_of",
]

DEFAULT_API_URL = "https://api.github.com"


def resolve_token(
    environ: Mapping[str, str] | None = None, *, api_url: str = DEFAULT_API_URL
) -> str | None:
    """Return a GitHub token from GITHUB_TOKEN, GH_TOKEN or `gh auth token`, in that order."""
    env = os.environ if environ is None else environ
    for name in ("GITHUB_TOKEN", "GH_TOKEN"):
        if env.get(name, "").strip():
            return env[name].strip()
    gh = shutil.which("gh", path=env.get("PATH", os.defpath))
    if gh is None:
        return None
    host = urllib.parse.urlsplit(api_url).hostname or "github.com"
    host = "github.com" if host == "api.github.com" else host
    try:
        proc = subprocess.run(
            [gh, "auth", "token", "--hostname", host],
            capture_output=True,
            text=True,
            timeout=15,
            env=dict(env),
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    token = proc.stdout.strip()
    return token if proc.returncode == 0 and token else None


def rate_limit_wait(exc: GithubException, now: float) -> tuple[float, str] | None:
    """Return (seconds, which limit) if exc is a rate limit answer, else None."""
    if exc.status not in (403, 429):
        return None
    headers = {k.lower(): str(v) for k, v in (exc.headers or {}).items()}
    retry_after = headers.get("retry-after", "")
    if retry_after.strip().isdigit():
        return float(retry_after), "GitHub secondary rate limit"
    if headers.get("x-ratelimit-remaining") == "0" and headers.get("x-ratelimit-reset"):
        reset = float(headers["x-ratelimit-reset"])
        return max(reset - now, 0.0) + 0.5, "GitHub rate limit"
    message = message_of(exc).lower()
    if "secondary rate limit" in message or exc.status == 429:
        return 60.0, "GitHub secondary rate limit"  # GitHub: wait at least a minute
    return None


def message_of(exc: GithubException) -> str:
    """Return GitHub's own words for an error: its message plus any field errors."""
    data = exc.data if isinstance(exc.data, dict) else {}
    text = str(data.get("message") or exc.message or "no message")
    details = []
    for err in data.get("errors") or []:
        if isinstance(err, dict):
            details.append(
                str(
                    err.get("message")
                    or " ".join(str(err[k]) for k in ("resource", "field", "code") if err.get(k))
                )
            )
        else:
            details.append(str(err))
    return f"{text}: {'; '.join(details)}" if details else text


def next_link(headers: Mapping[str, Any]) -> str | None:
    for part in str(headers.get("link", "")).split(","):
        url, _, rel = part.partition(";")
        if rel.strip() == 'rel="next"':
            return url.strip().strip("<>")
    return None


def issue_of(data: Mapping[str, Any], comments: Sequence[Comment] = ()) -> Issue:
    return Issue(
        number=data["number"],
        title=data["title"],
        body=data.get("body") or "",
        labels=tuple(
            label["name"] if isinstance(label, dict) else str(label)
            for label in data.get("labels", [])
        ),
        state=data["state"],
        comments=tuple(comments),
        url=data.get("html_url", ""),
        created_at=data.get("created_at", ""),
        updated_at=data.get("updated_at", ""),
    )


def comment_of(data: Mapping[str, Any]) -> Comment:
    return Comment(
        id=data["id"],
        body=data.get("body") or "",
        author=(data.get("user") or {}).get("login", ""),
        created_at=data.get("created_at", ""),
        url=data.get("html_url", ""),
        author_association=data.get("author_association", ""),
    )


def review_of(data: Mapping[str, Any]) -> Review:
    return Review(
        id=data["id"],
        state=data["state"],
        body=data.get("body") or "",
        author=(data.get("user") or {}).get("login", ""),
    )


def pull_of(
    data: Mapping[str, Any], reviews: Sequence[Review] = (), checks: Sequence[Check] = ()
) -> PullRequest:
    merged = bool(data.get("merged") or data.get("merged_at"))
    return PullRequest(
        number=data["number"],
        title=data["title"],
        head=data["head"]["ref"],
        base=data["base"]["ref"],
        body=data.get("body") or "",
        state="merged" if merged else data["state"],
        merged=merged,
        mergeable=data.get("mergeable"),
        head_sha=data["head"]["sha"],
        merge_sha=data.get("merge_commit_sha") if merged else None,
        url=data.get("html_url", ""),
        reviews=tuple(reviews),
        checks=tuple(checks),
    )
