"""The forge interface: where a repo's issues, comments and pull requests live.

One `Forge` instance serves one repository.  `LocalForge` (issues as Markdown files,
pull requests as records, merges by real git against the repo's bare remote) is the
embedded default; `GitHubForge` speaks GitHub's REST API through PyGithub.  Both pass
the same contract test suite (``tests/test_forge_contract.py``).

Every method is a coroutine so the coordinator can await the forge alongside its
machines; a forge that blocks (PyGithub) runs its calls in a worker thread.  Values
are plain frozen dataclasses with ``to_dict()`` for ``--json`` output.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "Branch",
    "Check",
    "Comment",
    "Forge",
    "Issue",
    "MergeMethod",
    "MergeResult",
    "PullRequest",
    "Review",
    "ReviewEvent",
]

MergeMethod = Literal["merge", "squash", "rebase"]
ReviewEvent = Literal["APPROVE", "REQUEST_CHANGES", "COMMENT"]


class _Dict:
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (tuples become lists)."""
        return _jsonable(dataclasses.asdict(self))  # type: ignore[call-overload,no-any-return]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class Comment(_Dict):
    """One comment on an issue."""

    id: int
    body: str
    author: str = ""
    created_at: str = ""  # ISO 8601, UTC
    url: str = ""  # where a person reads it ("" on the local forge)
    # GitHub's author_association: OWNER, MEMBER, COLLABORATOR, CONTRIBUTOR, NONE, …;
    # "" where the forge has none (the local forge: whoever can write its files)
    author_association: str = ""


@dataclass(frozen=True)
class Issue(_Dict):
    """An issue.  `comments` is filled by `get_issue`, left empty by `list_issues`."""

    number: int
    title: str
    body: str = ""
    labels: tuple[str, ...] = ()
    state: str = "open"  # "open" | "closed"
    comments: tuple[Comment, ...] = ()
    url: str = ""
    created_at: str = ""
    updated_at: str = ""


@dataclass(frozen=True)
class Review(_Dict):
    """A review on a pull request."""

    id: int
    state: str  # "APPROVED" | "CHANGES_REQUESTED" | "COMMENTED"
    body: str = ""
    author: str = ""


@dataclass(frozen=True)
class Check(_Dict):
    """A check run or commit status on a pull request's head commit."""

    name: str
    status: str  # "queued" | "in_progress" | "completed"
    conclusion: str | None = None  # "success" | "failure" | ... once completed


@dataclass(frozen=True)
class PullRequest(_Dict):
    """A pull request.  `state` is "open", "closed" or "merged"."""

    number: int
    title: str
    head: str  # branch name
    base: str
    body: str = ""
    state: str = "open"
    merged: bool = False
    mergeable: bool | None = None  # None: not computed yet
    head_sha: str = ""
    merge_sha: str | None = None
    url: str = ""
    reviews: tuple[Review, ...] = ()
    checks: tuple[Check, ...] = ()


@dataclass(frozen=True)
class MergeResult(_Dict):
    """What `merge` did."""

    merged: bool
    sha: str | None = None
    message: str = ""


@dataclass(frozen=True)
class Branch(_Dict):
    """A branch on the forge's remote."""

    name: str
    sha: str


class Forge(abc.ABC):
    """Issues, comments and pull requests of one repository.

    Errors are `coordlib.errors.ForgeError` subclasses: `NotFoundError` for a missing
    issue or pull request, `MergeConflictError` (with the conflicting paths) when a merge
    is not clean, `ForgeAuthError` for credentials.
    """

    kind: str = "forge"  # "local" | "github"
    repo: str  # the coordlib repo name this forge serves

    # -- issues ----------------------------------------------------------------
    @abc.abstractmethod
    async def list_issues(self, *, state: str = "open", labels: Sequence[str] = ()) -> list[Issue]:
        """Return issues in `state` ("open", "closed" or "all") carrying every label in
        `labels`, lowest number first.  Pull requests are never included."""

    @abc.abstractmethod
    async def get_issue(self, number: int) -> Issue:
        """Return one issue with its comments, oldest first."""

    @abc.abstractmethod
    async def create_issue(
        self, title: str, *, body: str = "", labels: Sequence[str] = ()
    ) -> Issue:
        """Open a new issue and return it."""

    @abc.abstractmethod
    async def comment(self, number: int, body: str) -> Comment:
        """Add a comment to an issue (or pull request) and return it."""

    @abc.abstractmethod
    async def add_labels(self, number: int, labels: Iterable[str]) -> tuple[str, ...]:
        """Add labels (creating them on the forge if needed); return the issue's labels."""

    @abc.abstractmethod
    async def remove_label(self, number: int, label: str) -> tuple[str, ...]:
        """Remove one label (absent is fine); return the issue's labels."""

    @abc.abstractmethod
    async def set_state(self, number: int, state: str) -> Issue:
        """Close ("closed") or reopen ("open") an issue."""

    # -- pull requests ---------------------------------------------------------
    @abc.abstractmethod
    async def open_pr(self, *, head: str, base: str, title: str, body: str = "") -> PullRequest:
        """Open a pull request from branch `head` into `base`.  The head must have been
        pushed to the forge's remote.  An open pull request for the same head is returned
        as is rather than duplicated."""

    @abc.abstractmethod
    async def get_pr(self, number: int) -> PullRequest:
        """Return a pull request with its reviews and the checks on its head commit."""

    @abc.abstractmethod
    async def list_prs(self, *, state: str = "open", head: str | None = None) -> list[PullRequest]:
        """Return pull requests in `state` ("open", "closed", "all"), optionally only
        those from branch `head`.  Reviews and checks are left empty."""

    @abc.abstractmethod
    async def review(self, number: int, event: ReviewEvent, body: str) -> Review:
        """Post a review: approve, request changes, or comment."""

    @abc.abstractmethod
    async def merge(
        self, number: int, *, method: MergeMethod = "merge", message: str | None = None
    ) -> MergeResult:
        """Merge a pull request into its base.  Raises `MergeConflictError` if it does
        not merge cleanly; the base is then left untouched."""

    # -- branches --------------------------------------------------------------
    @abc.abstractmethod
    async def branches(self, prefix: str = "") -> list[Branch]:
        """Return the remote's branches whose names start with `prefix`, sorted by name."""

    async def record_landed(self, number: int, sha: str) -> PullRequest:
        """Record that pull request `number` landed on its base as commit `sha`, pushed there
        by the merge queue (which lands exactly the commit it tested).  A forge that noticed
        by itself leaves it as it is; otherwise the pull request is closed with a comment
        saying where its change is."""
        pr = await self.get_pr(number)
        # GitHub marks a PR merged by itself once its head is in the base, a moment after the
        # push: give it that moment before closing it as unmerged.
        for _ in range(3 if self.kind == "github" else 0):
            if pr.merged or pr.state != "open":
                break
            await asyncio.sleep(1.0)
            pr = await self.get_pr(number)
        if pr.merged or pr.state != "open":
            return pr
        await self.comment(number, f"**coord** landed this change on `{pr.base}` as `{sha}`.")
        await self.set_state(number, "closed")
        return await self.get_pr(number)

    async def labels(self, number: int) -> tuple[str, ...]:
        """Return an issue's labels (forges that can, read them without its comments)."""
        return (await self.get_issue(number)).labels

    async def issue_state(self, number: int) -> str:
        """Return an issue's state, "open" or "closed" (forges that can, without comments)."""
        return (await self.get_issue(number)).state

    async def identity(self) -> str | None:
        """Return the author name this forge posts coordlib's comments as (None: unknown)."""
        return None

    async def issue_branches(self, number: int) -> list[Branch]:
        """Return the remote branches `issue-<number>-*` (the claim check uses this)."""
        return await self.branches(f"issue-{number}-")

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections or threads; the forge is unusable afterwards."""
