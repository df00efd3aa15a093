"""Make real git repositories, each with a bare ``origin``, for tests and demos."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GitRepo", "git", "make_git_repo"]

_IDENTITY = ["-c", "user.name=coord-test", "-c", "user.email=test@coord.invalid"]


def git(*args: str, cwd: Path | str | None = None) -> str:
    """Run git with a fixed identity and return its stdout."""
    out = subprocess.run(
        ["git", *_IDENTITY, *args], cwd=cwd, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


@dataclass(frozen=True)
class GitRepo:
    """A working clone and its bare origin."""

    path: Path
    origin: Path | None
    default_branch: str = "main"

    def branches(self) -> list[str]:
        """Return the local branch names."""
        return git("for-each-ref", "--format=%(refname:short)", "refs/heads", cwd=self.path).split()

    def log(self, ref: str, n: int = 10) -> list[str]:
        """Return the subjects of the last n commits on ref."""
        return git("log", f"-{n}", "--format=%s", ref, cwd=self.path).splitlines()


def make_git_repo(
    path: Path,
    *,
    files: dict[str, str] | None = None,
    with_origin: bool = True,
    branch: str = "main",
) -> GitRepo:
    """Create a repo at path with one commit (and a bare origin beside it, pushed)."""
    path.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "-b", branch, str(path))
    for name, text in (files or {"README.md": "# demo\n"}).items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "initial commit", cwd=path)
    origin = None
    if with_origin:
        origin = path.with_name(path.name + ".git")
        git("init", "-q", "--bare", "-b", branch, str(origin))
        git("remote", "add", "origin", str(origin), cwd=path)
        git("push", "-q", "origin", branch, cwd=path)
    return GitRepo(path=path, origin=origin, default_branch=branch)
