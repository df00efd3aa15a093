"""Forges: where a repo's issues, comments and pull requests live.

`LocalForge` (files and a bare git remote, no account) is the default; `GitHubForge`
speaks GitHub's API.  `open_forge` picks one per repo from the config.  `GitHubForge`
is imported on first use, so importing this package never loads PyGithub.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coordlib.config import Config
from coordlib.errors import ForgeError

from .base import (
    Branch,
    Check,
    Comment,
    Forge,
    Issue,
    MergeMethod,
    MergeResult,
    PullRequest,
    Review,
    ReviewEvent,
)
from .local import LocalForge

if TYPE_CHECKING:
    from .github import GitHubForge

__all__ = [
    "DEFAULT_GITHUB_API",
    "Branch",
    "Check",
    "Comment",
    "Forge",
    "GitHubForge",
    "Issue",
    "LocalForge",
    "MergeMethod",
    "MergeResult",
    "PullRequest",
    "Review",
    "ReviewEvent",
    "open_forge",
    "open_review_forge",
]

DEFAULT_GITHUB_API = "https://api.github.com"


def __getattr__(name: str) -> Any:
    if name == "GitHubForge":
        from .github import GitHubForge

        return GitHubForge
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_forge(
    config: Config,
    repo_name: str,
    *,
    environ: Mapping[str, str] | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Forge:
    """Return the forge serving `repo_name`: its `forge:` if set, GitHub if it has a slug,
    else the local forge."""
    repo = config.repo(repo_name)
    kind = repo.forge or ("github" if repo.github else "local")
    if kind == "github":
        if not repo.github:
            raise ForgeError(
                f"repo {repo_name!r} uses the github forge but has no slug; add "
                f"`github: owner/name` to it in {_where(config)}"
            )
        from .github import GitHubForge

        api_url = _section_text(config, "github", "api_url") or DEFAULT_GITHUB_API
        section = config.extra.get("github") or {}
        interval = section.get("write_interval") if isinstance(section, Mapping) else None
        return GitHubForge(
            repo_name,
            repo.github,
            api_url=api_url,
            environ=environ,
            on_wait=on_wait,
            write_interval=1.0 if interval is None else float(interval),
        )
    base = config.path.absolute().parent if config.path is not None else Path.cwd()
    root_text = _section_text(config, "forge", "root")
    if root_text:
        root = base / Path(root_text).expanduser() / repo_name
    else:
        root = base / ".coord" / "issues" / repo_name
    remote = repo.url or _origin_of_local_checkout(config, repo_name)
    return LocalForge(repo_name, root, remote=remote, default_branch=repo.default_branch)


def open_review_forge(
    config: Config,
    repo_name: str,
    *,
    environ: Mapping[str, str] | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Forge | None:
    """Return a forge acting as the second identity of `reviews.github_token_env`, for real
    APPROVE / REQUEST_CHANGES reviews on a GitHub repo; None when none is configured."""
    name = config.reviews.github_token_env
    repo = config.repo(repo_name)
    if not name or (repo.forge or ("github" if repo.github else "local")) != "github":
        return None
    env = os.environ if environ is None else environ
    token = env.get(name)
    if not token:
        raise ForgeError(
            f"reviews.github_token_env names {name}, which is not set in the environment; "
            f"export the reviewer's token as {name}, or remove the setting"
        )
    from .github import GitHubForge

    section = config.extra.get("github") or {}
    interval = section.get("write_interval") if isinstance(section, Mapping) else None
    assert repo.github is not None
    return GitHubForge(
        repo_name,
        repo.github,
        api_url=_section_text(config, "github", "api_url") or DEFAULT_GITHUB_API,
        token=token,
        on_wait=on_wait,
        write_interval=1.0 if interval is None else float(interval),
    )


def _where(config: Config) -> str:
    return str(config.path) if config.path is not None else "coordinator.yml"


def _section_text(config: Config, section: str, key: str) -> str | None:
    """Return `section.key` from the config's raw top-level sections, checked to be text."""
    values = config.extra.get(section) or {}
    value = values.get(key) if isinstance(values, Mapping) else None
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ForgeError(
            f"{_where(config)}: `{section}.{key}` must be a non-empty string, got {value!r}"
        )
    return value


def _origin_of_local_checkout(config: Config, repo_name: str) -> str:
    """Return the `origin` URL of the repo's checkout on this machine."""
    fix = (
        f"set `url:` on repo {repo_name!r} in {_where(config)} to its git remote "
        "(a bare repo path or URL), e.g. `url: git@github.com:acme/api.git`"
    )
    local = [m for m in config.machines.values() if m.is_local]
    if not local:
        raise ForgeError(f"repo {repo_name!r} has no `url:` and no machine is local; {fix}")
    checkout = Path(os.path.expanduser(local[0].repo_path(repo_name)))
    try:
        out = subprocess.run(
            ["git", "-C", str(checkout), "remote", "get-url", "origin"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ForgeError(f"cannot ask git for the origin of {checkout}: {exc}; {fix}") from exc
    url = out.stdout.strip()
    if out.returncode != 0 or not url:
        raise ForgeError(
            f"repo {repo_name!r} has no `url:` and its checkout {checkout} on machine "
            f"{local[0].name!r} has no `origin` remote; {fix}"
        )
    if "://" not in url and not url.startswith("/") and ":" not in url.split("/", 1)[0]:
        url = str((checkout / url).resolve())  # a relative path, as `git remote add` allows
    return url
