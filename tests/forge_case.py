"""What the forge contract suite needs from each forge under test.

A `ForgeCase` bundles a forge serving one repository with a way to put commits on that
repository's remote, so the same tests can open, review and merge pull requests on the
local forge and on the fake GitHub server alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from coordlib.forge.base import Forge
from coordlib.testing.gitrepo import git


@dataclass
class ForgeCase:
    """A forge under test, the git URL of its remote, and a clone of that remote."""

    forge: Forge
    remote_url: str  # what `git push` / `git fetch` accept: a path or an http(s) URL
    work: Path  # a clone of the remote with the default branch checked out
    default_branch: str = "main"
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def push_branch(
        self,
        branch: str,
        files: dict[str, str],
        *,
        base: str | None = None,
        message: str | None = None,
    ) -> str:
        """Commit `files` on `branch` (from `base`, default the default branch) and push it;
        return the new head sha."""
        start = f"origin/{base or self.default_branch}"
        git("fetch", "-q", "origin", cwd=self.work)
        git("checkout", "-q", "-B", branch, start, cwd=self.work)
        for name, text in files.items():
            target = self.work / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", message or f"work on {branch}", cwd=self.work)
        git("push", "-q", "-f", "origin", branch, cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def remote_head(self, branch: str | None = None) -> str:
        """Return the sha of `branch` (default: the default branch) on the remote."""
        out = git("ls-remote", self.remote_url, f"refs/heads/{branch or self.default_branch}")
        return out.split()[0] if out else ""

    def remote_file(self, path: str, branch: str | None = None) -> str:
        """Return a file's text as it is on the remote's `branch`."""
        git("fetch", "-q", "origin", cwd=self.work)
        return git("show", f"origin/{branch or self.default_branch}:{path}", cwd=self.work)
