"""Whether a local checkout can take work: an `origin`, and its default branch both here and
there.  Read from git's own files (its remotes and refs), never over the network.

`github_slug` and `read_refs` are pure; `check_repo` runs three quick local git commands.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .runtime.command import join

__all__ = ["Problem", "Refs", "RepoCheck", "check_repo", "github_slug", "read_refs"]

_SLUG = re.compile(r"([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?")
_GITHUB_HOSTS = ("github.com", "www.github.com")
_SCP = re.compile(r"(?:[^@/]+@)?([^:/]+):(?!//)(.*)")  # git@github.com:owner/name.git
_URL = re.compile(r"(?:ssh|git|https?|git\+ssh|ssh\+git)://(?:[^@/]+@)?([^/:]+)(?::\d*)?/(.*)")
_REF_LINE = re.compile(r"(\S+) ?(\S*)")


@dataclass(frozen=True)
class Problem:
    """One thing that keeps a repo from taking work, and the command that fixes it."""

    what: str
    fix: str


@dataclass(frozen=True)
class Refs:
    """What a checkout knows of its branches, and of origin's as last fetched."""

    heads: frozenset[str]
    origin: frozenset[str]
    origin_head: str | None  # the branch origin/HEAD names, if the clone recorded it


@dataclass(frozen=True)
class RepoCheck:
    """What `coord init` learns of one checkout."""

    path: Path
    default_branch: str
    origin: str | None = None  # the URL of its `origin` remote
    github: str | None = None  # owner/name, when origin is on github.com
    problems: tuple[Problem, ...] = ()

    @property
    def ready(self) -> bool:
        """Tell whether nothing keeps the repo from taking work."""
        return not self.problems


def github_slug(url: str) -> str | None:
    """Return ``owner/name`` when the git remote `url` is a repository on github.com, else None.

    Reads the https, ssh and scp-like forms: ``https://github.com/o/n.git``,
    ``git@github.com:o/n.git``, ``ssh://git@github.com[:22]/o/n``, ``git://github.com/o/n``.
    """
    text = url.strip()
    found = _URL.fullmatch(text) or _SCP.fullmatch(text)
    if found is None or found.group(1).lower() not in _GITHUB_HOSTS:
        return None
    slug = _SLUG.fullmatch(found.group(2).lstrip("/"))
    if slug is None or slug.group(2) in ("", ".", ".."):
        return None
    return f"{slug.group(1)}/{slug.group(2)}"


def read_refs(for_each_ref: str) -> Refs:
    """Read ``git for-each-ref --format='%(refname) %(symref)'`` output into branch sets."""
    heads: set[str] = set()
    origin: set[str] = set()
    origin_head: str | None = None
    for line in for_each_ref.splitlines():
        found = _REF_LINE.fullmatch(line.strip())
        if found is None:
            continue
        ref, target = found.groups()
        if ref.startswith("refs/heads/"):
            heads.add(ref.removeprefix("refs/heads/"))
        elif ref == "refs/remotes/origin/HEAD":
            if target.startswith("refs/remotes/origin/"):
                origin_head = target.removeprefix("refs/remotes/origin/")
        elif ref.startswith("refs/remotes/origin/"):
            origin.add(ref.removeprefix("refs/remotes/origin/"))
    return Refs(frozenset(heads), frozenset(origin), origin_head)


def check_repo(path: Path, *, fallback_branch: str = "main") -> RepoCheck:
    """Look at the checkout at `path`: its origin, its default branch, and what is missing.

    The default branch is the one origin/HEAD names (set by `git clone`), else the branch
    checked out, else `fallback_branch`.  Origin's branches are the remote-tracking refs as
    last fetched: nothing here goes over the network.
    """
    path = Path(path).expanduser().absolute()
    refs_out = _git(
        path, "for-each-ref", "--format=%(refname) %(symref)", "refs/heads", "refs/remotes/origin"
    )
    if refs_out.returncode != 0:
        return RepoCheck(path, fallback_branch, problems=(_unreadable(path, refs_out),))
    refs = read_refs(refs_out.stdout)
    head = _git(path, "symbolic-ref", "--quiet", "--short", "HEAD")
    checked_out = head.stdout.strip() if head.returncode == 0 else ""
    branch = refs.origin_head or checked_out or fallback_branch
    remote = _git(path, "remote", "get-url", "origin")
    origin = remote.stdout.strip() if remote.returncode == 0 and remote.stdout.strip() else None
    problems: list[Problem] = []
    here = str(path)
    if branch not in refs.heads:
        if branch in refs.origin:
            fix = join(["git", "-C", here, "branch", "--track", branch, f"origin/{branch}"])
            problems.append(Problem(f"no local {branch} branch (origin has one)", fix))
        else:
            fix = join(["git", "-C", here, "commit", "--allow-empty", "-m", "First commit"])
            problems.append(Problem(f"no commit on {branch} yet for workers to branch from", fix))
    if origin is None:
        add = join(["git", "-C", here, "remote", "add", "origin"]) + " URL"
        example = f"git@github.com:OWNER/{path.name}.git, or a bare repo's path"
        problems.append(Problem(f"no `origin` remote to push work to (URL: e.g. {example})", add))
    if branch not in refs.origin:
        push = join(["git", "-C", here, "push", "-u", "origin", branch])
        seen = " (as last fetched: `git fetch origin` looks again)" if origin else ""
        what = f"origin has no {branch} branch for workers to start from{seen}"
        problems.append(Problem(what, push))
    return RepoCheck(
        path=path,
        default_branch=branch,
        origin=origin,
        github=github_slug(origin) if origin else None,
        problems=tuple(problems),
    )


def _unreadable(path: Path, done: subprocess.CompletedProcess[str]) -> Problem:
    said = (done.stderr.strip().splitlines() or ["git gave no reason"])[-1]
    if "safe.directory" in done.stderr or "dubious ownership" in done.stderr:
        fix = join(["git", "config", "--global", "--add", "safe.directory", str(path)])
        return Problem(f"git refuses to read it: another user owns it ({said})", fix)
    return Problem(f"git cannot read it: {said}", join(["git", "-C", str(path), "status"]))


def _git(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", "-C", str(path), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return subprocess.CompletedProcess(["git", *args], 1, "", f"cannot run git: {exc}")
