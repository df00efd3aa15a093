"""`LocalForge`: issues as Markdown files, pull requests as YAML records, merges by real git.

The layout of `root` (the coordinator passes ``<config dir>/.coord/issues/<repo>/``)::

    0007-fix-login-redirect.md    an issue: YAML front matter between two '---' lines, then
                                  the Markdown body, byte for byte
    0007.comments/0012.md         its comments, one file each, named by comment id (oldest
                                  first); front matter (id, author, created_at), then the body.
                                  A comment added by hand needs a higher number than the
                                  last; its front matter is optional
    pulls/0008.yml                a pull request: head, base, state, merge sha, reviews, body
    .counters.json                the last number (issues and PRs share them) and last
                                  comment/review id handed out
    .lock                         flock-ed while a number is allocated or a file rewritten
    .merge.lock                   held across a merge, so a PR is never merged twice
    .mirror.git/                  a bare copy of a remote that is not a local bare repo

People may edit the files by hand; every call re-reads them.  Each file is a whole-file
write (temp file, fsync, ``os.replace``), so a reader never sees half of one, and each
comment is a file of its own, so its body can hold anything, '---' lines included.

Merges run real git against the remote: ``git merge-tree --write-tree`` computes the
result without a work tree, ``git commit-tree`` records it, and the base moves by
compare-and-swap (``update-ref <new> <old>`` in a local bare repo, ``push
--force-with-lease`` otherwise), so a base that moved meanwhile is recomputed, never
overwritten.  `checks` is always empty: nothing runs CI here.

The files are read and written by `_local_files`, git is driven by `_local_git`; this
module is the `Forge` built on the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from coordlib.errors import ForgeError, MergeConflictError

from ._local_files import _Files, _labels, _now
from ._local_git import _async_flock, _Git
from .base import (
    Branch,
    Comment,
    Forge,
    Issue,
    MergeMethod,
    MergeResult,
    PullRequest,
    Review,
    ReviewEvent,
)

__all__ = ["LocalForge"]

_CLOSES = re.compile(r"\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)\s*:?\s+#(\d+)\b", re.I)
_REVIEW_STATES = {
    "APPROVE": "APPROVED",
    "REQUEST_CHANGES": "CHANGES_REQUESTED",
    "COMMENT": "COMMENTED",
}
_MERGE_ATTEMPTS = 5


# --- the forge ----------------------------------------------------------------------------


class LocalForge(Forge):
    """Issues in a folder of Markdown files; PRs merged by real git into a bare remote."""

    kind = "local"

    def __init__(
        self,
        repo: str,
        root: Path,
        *,
        remote: str | Path,
        default_branch: str = "main",
        author: str = "coord",
    ) -> None:
        self.repo = repo
        self.root = Path(root)
        self.default_branch = default_branch
        self._label = f"{repo} (local forge)"
        self.author = author
        self._files = _Files(self.root, author)
        self._git = _Git(os.fspath(remote), self.root / ".mirror.git", self._label)

    def __repr__(self) -> str:
        return f"LocalForge({self.repo!r}, {str(self.root)!r}, remote={self._git.remote!r})"

    async def identity(self) -> str:
        """Return the author name coordlib's comments carry here."""
        return self.author

    # -- issues ----------------------------------------------------------------------------
    async def list_issues(self, *, state: str = "open", labels: Sequence[str] = ()) -> list[Issue]:
        """Return issues in `state` carrying every label in `labels`, lowest number first."""
        _check_state(state, ("open", "closed", "all"))
        wanted = {labels} if isinstance(labels, str) else set(labels)
        return [
            issue
            for issue in await asyncio.to_thread(self._files.issues)
            if state in ("all", issue.state) and wanted.issubset(issue.labels)
        ]

    async def get_issue(self, number: int) -> Issue:
        """Return one issue with its comments, oldest first."""
        return await asyncio.to_thread(self._files.issue, number, comments=True)

    async def create_issue(
        self, title: str, *, body: str = "", labels: Sequence[str] = ()
    ) -> Issue:
        """Open a new issue and return it."""
        return await asyncio.to_thread(self._files.create_issue, title, body, list(labels))

    async def comment(self, number: int, body: str) -> Comment:
        """Add a comment to an issue or pull request and return it."""
        return await asyncio.to_thread(self._files.comment, number, body)

    async def add_labels(self, number: int, labels: Iterable[str]) -> tuple[str, ...]:
        """Add labels (idempotent); return the issue's labels."""
        new = list(labels)

        def change(front: dict[str, Any]) -> None:
            front["labels"] = sorted({*_labels(front.get("labels"), self.root), *new})

        return (await asyncio.to_thread(self._files.edit_issue, number, change)).labels

    async def remove_label(self, number: int, label: str) -> tuple[str, ...]:
        """Remove one label (absent is fine); return the issue's labels."""

        def change(front: dict[str, Any]) -> None:
            front["labels"] = [x for x in _labels(front.get("labels"), self.root) if x != label]

        return (await asyncio.to_thread(self._files.edit_issue, number, change)).labels

    async def set_state(self, number: int, state: str) -> Issue:
        """Close ("closed") or reopen ("open") an issue or an unmerged pull request."""
        _check_state(state, ("open", "closed"))

        def change(front: dict[str, Any]) -> None:
            if front.get("merged"):
                raise ForgeError(f"pull request #{number} is merged; it cannot be {state}")
            front["state"] = state

        return await asyncio.to_thread(self._files.edit_issue, number, change)

    # -- pull requests ---------------------------------------------------------------------
    async def open_pr(self, *, head: str, base: str, title: str, body: str = "") -> PullRequest:
        """Open a pull request from pushed branch `head` into `base` (or return the open one)."""
        for record in await asyncio.to_thread(self._files.prs):
            if record["state"] == "open" and record["head"] == head:
                return self._pr(record, await self._git.heads())
        if not title.strip():
            raise ForgeError("a pull request needs a title; give a non-empty one")
        heads = await self._git.heads()
        for branch, what in ((head, "head"), (base, "base")):
            if branch not in heads:
                raise ForgeError(
                    f"{what} branch {branch!r} is not on the remote {self._git.remote}; "
                    f"push it first: git push origin {branch}",
                    forge=self._label,
                    status=422,
                )
        async with self._git.workdir() as repo:
            _, count = await self._git.run(
                "rev-list", "--count", f"{heads[base]}..{heads[head]}", cwd=repo
            )
        if count.strip() == "0":
            raise ForgeError(
                f"no commits between {base} and {head}: commit and push work to {head} first",
                forge=self._label,
                status=422,
            )
        record = await asyncio.to_thread(
            self._files.create_pr, head, base, title, body, heads[head]
        )
        return self._pr(record, heads)

    async def get_pr(self, number: int) -> PullRequest:
        """Return a pull request with its reviews; `mergeable` is computed by git."""
        record = await asyncio.to_thread(self._files.pr, number)
        heads = await self._git.heads()
        mergeable: bool | None = None
        head, base = heads.get(record["head"]), heads.get(record["base"])
        if record["state"] == "open" and head and base:
            async with self._git.workdir() as repo:
                status, _ = await self._git.run(
                    "merge-tree", "--write-tree", "--name-only", "--no-messages", base, head,
                    cwd=repo, ok=(0, 1, 128),
                )  # fmt: skip
            mergeable = status == 0  # 128: unrelated histories, which cannot merge either
        reviews = tuple(
            Review(
                id=int(r.get("id", 0)),
                state=str(r.get("state", "")),
                body=str(r.get("body") or ""),
                author=str(r.get("author") or ""),
            )
            for r in record.get("reviews") or ()
        )
        return dataclasses.replace(self._pr(record, heads), mergeable=mergeable, reviews=reviews)

    async def list_prs(self, *, state: str = "open", head: str | None = None) -> list[PullRequest]:
        """Return pull requests in `state` ("closed" includes merged), lowest number first."""
        _check_state(state, ("open", "closed", "all"))
        records = await asyncio.to_thread(self._files.prs)
        chosen = [
            r
            for r in records
            if (state == "all" or (r["state"] == "open") == (state == "open"))
            and (head is None or r["head"] == head)
        ]
        heads = await self._git.heads() if any(r["state"] == "open" for r in chosen) else {}
        return [self._pr(r, heads) for r in chosen]

    async def review(self, number: int, event: ReviewEvent, body: str) -> Review:
        """Record a review: approve, request changes, or comment."""
        if event not in _REVIEW_STATES:
            raise ValueError(f"unknown review event {event!r}; use {', '.join(_REVIEW_STATES)}")
        return await asyncio.to_thread(self._files.add_review, number, _REVIEW_STATES[event], body)

    async def record_landed(self, number: int, sha: str) -> PullRequest:
        """Mark the pull request merged as `sha`, which the merge queue pushed to its base."""

        def mark(pr: dict[str, Any]) -> None:
            if pr["state"] == "open":
                pr.update(state="merged", merged=True, merge_sha=sha, merged_at=_now())

        await asyncio.to_thread(self._files.update_pr, number, mark)
        return await self.get_pr(number)

    async def merge(
        self, number: int, *, method: MergeMethod = "merge", message: str | None = None
    ) -> MergeResult:
        """Merge a pull request into its base with real git; conflicts leave the base as is."""
        if method not in ("merge", "squash", "rebase"):
            raise ValueError(f"unknown merge method {method!r}; use merge, squash or rebase")
        async with _async_flock(self.root / ".merge.lock"):
            record = await asyncio.to_thread(self._files.pr, number)
            if record["state"] != "open":
                raise ForgeError(
                    f"pull request #{number} is {record['state']}; only an open one merges",
                    forge=self._label,
                    status=405,
                )
            for _ in range(_MERGE_ATTEMPTS):
                heads = await self._git.heads()
                head, base = heads.get(record["head"]), heads.get(record["base"])
                if not head or not base:
                    missing = record["head"] if not head else record["base"]
                    raise ForgeError(
                        f"pull request #{number}: branch {missing!r} is gone from the remote "
                        f"{self._git.remote}; push it again",
                        forge=self._label,
                        status=405,
                    )
                async with self._git.workdir() as repo:
                    new = await self._merged_commit(repo, record, head, base, method, message)
                    _, messages = await self._git.run(
                        "log", "--format=%B", f"{base}..{head}", cwd=repo
                    )
                    if await self._git.publish(repo, record["base"], new, base):
                        break
            else:
                raise ForgeError(
                    f"pull request #{number}: {record['base']} kept moving during the merge; "
                    "try again",
                    forge=self._label,
                )

            def mark(pr: dict[str, Any]) -> None:
                pr.update(state="merged", merged=True, merge_sha=new, head_sha=head)
                pr["merged_at"] = _now()

            await asyncio.to_thread(self._files.update_pr, number, mark)
        if record["base"] == self.default_branch:  # GitHub closes only on the default branch
            named = _CLOSES.findall(f"{record.get('body') or ''}\n{messages}")
            for closed in dict.fromkeys(int(n) for n in named):
                if await asyncio.to_thread(self._files.issue_path, closed) is None:
                    continue  # no such issue, or a pull request: GitHub closes issues only
                # The merge is done and must be reported as done; an issue file a person
                # broke meanwhile stays open, and the next read of it names the problem.
                with contextlib.suppress(ForgeError):
                    await self.set_state(closed, "closed")
        return MergeResult(merged=True, sha=new, message="Pull Request successfully merged")

    async def _merged_commit(
        self,
        repo: Path,
        record: dict[str, Any],
        head: str,
        base: str,
        method: MergeMethod,
        message: str | None,
    ) -> str:
        """Write the commit `base` should move to; raise MergeConflictError if none merges."""
        number, title = record["number"], record["title"]
        if method == "rebase":
            return await self._replay(repo, number, head, base)
        tree, conflicts = await self._git.merge_tree(repo, base, head)
        if conflicts:
            raise self._conflict(number, record["base"], conflicts)
        if method == "merge":
            text = message or f"Merge pull request #{number} from {record['head']}\n\n{title}\n"
            return await self._git.commit(repo, tree, [base, head], text)
        if message is None:
            _, subjects = await self._git.run(
                "log", "--reverse", "--format=* %s", f"{base}..{head}", cwd=repo
            )
            message = f"{title} (#{number})\n\n{subjects}"
        return await self._git.commit(repo, tree, [base], message)

    async def _replay(self, repo: Path, number: int, head: str, base: str) -> str:
        _, out = await self._git.run(
            "rev-list", "--reverse", "--no-merges", f"{base}..{head}", cwd=repo
        )
        tip = base
        for commit in out.split():
            _, parent = await self._git.run("rev-parse", "--verify", f"{commit}^", cwd=repo)
            # git 2.39's merge-tree has no --merge-base, so a stand-in commit (the tip's tree
            # on the commit's parent) makes that parent the merge base: a cherry-pick.
            stand_in = await self._git.commit(repo, f"{tip}^{{tree}}", [parent.strip()], "tmp")
            tree, conflicts = await self._git.merge_tree(repo, stand_in, commit)
            if conflicts:
                raise self._conflict(number, f"the base (at {commit[:12]})", conflicts)
            _, raw = await self._git.run("cat-file", "commit", commit, cwd=repo)
            text = raw.partition("\n\n")[2]
            tip = await self._git.commit(repo, tree, [tip], text, author=raw)
        return tip

    def _conflict(self, number: int, base: str, paths: tuple[str, ...]) -> MergeConflictError:
        return MergeConflictError(
            f"pull request #{number} does not merge cleanly into {base}: conflicts in "
            f"{', '.join(paths)}; merge {base} into the branch, resolve, and push",
            forge=self._label,
            paths=paths,
        )

    def _pr(self, record: dict[str, Any], heads: dict[str, str]) -> PullRequest:
        number = int(record["number"])
        path = self._files.pulls / f"{number:04d}.yml"
        live = heads.get(record["head"]) if record["state"] == "open" else None
        return PullRequest(
            number=number,
            title=str(record["title"]),
            head=str(record["head"]),
            base=str(record["base"]),
            body=str(record.get("body") or ""),
            state=str(record["state"]),
            merged=bool(record.get("merged")),
            head_sha=live or str(record.get("head_sha") or ""),
            merge_sha=record.get("merge_sha") or None,
            url=path.absolute().as_uri(),
        )

    # -- branches --------------------------------------------------------------------------
    async def branches(self, prefix: str = "") -> list[Branch]:
        """Return the remote's branches whose names start with `prefix`, sorted by name."""
        heads = await self._git.heads()
        return [Branch(name, sha) for name, sha in sorted(heads.items()) if name.startswith(prefix)]


def _check_state(state: str, allowed: Sequence[str]) -> None:
    if state not in allowed:
        raise ValueError(f"unknown state {state!r}; use {' or '.join(allowed)}")
