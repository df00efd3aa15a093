"""Claims: may this issue be worked on now?  The board and the forge's branches say.

An issue is taken while a live assignment works on it (`board.refuse_live_clash`), or while
an unmerged remote branch ``issue-<N>-*`` exists: someone is (or was) working on it.  The
dispatcher asks here before it claims the issue on the board.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .board import refuse_live_clash
from .errors import ClaimError, ForgeError, NotFoundError

if TYPE_CHECKING:
    from .assignment import Assignment
    from .context import Context
    from .forge.base import Branch, Forge, Issue

__all__ = ["Claims"]

# A burst of dispatches to one repo shares one listing of its remote's issue branches.
_BRANCH_CACHE_SECONDS = 3.0


class Claims:
    """Reads an issue from its forge and checks that nobody else has claimed it."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._branch_cache: dict[str, tuple[float, list[Branch]]] = {}
        self._branch_locks: dict[str, asyncio.Lock] = {}

    async def issue(
        self,
        repo: str,
        number: int,
        *,
        live: Sequence[Assignment],
        titled: bool,
        force: bool,
        mine: Callable[[], set[str]],
    ) -> Issue | None:
        """Read issue `number` of `repo` from its forge, and refuse it if it is claimed.

        An issue the forge does not have is fine when the caller said what the work is
        (`titled`): it is then briefed from the title alone and leaves no trail.  `live` are
        the board's live assignments; `mine()` the branches coord's own assignments made.
        """
        self.ctx.config.repo(repo)  # unknown repo -> ConfigError with a suggestion
        info: Issue | None = None
        try:
            forge = self.ctx.forges.get(repo)
            info = await forge.get_issue(number)
        except NotFoundError:
            if not titled:
                raise NotFoundError(
                    f"issue #{number} is not on {repo}'s {forge.kind} forge; create it with "
                    f"`coord issue new {repo} --title ...`, or give --title to work without it"
                ) from None
        except ForgeError as exc:
            if not titled:
                raise
            # The caller said what the work is: go on without the forge, but say so.
            self.ctx.notify(f"{repo}#{number}: working without the forge (no trail, no "
                            f"branch claim check): {exc}")  # fmt: skip
            return None
        if not force:
            # The board first: it is the cheaper check, and the likelier reason.
            refuse_live_clash(live, repo, number)
            await self._check_branches(forge, repo, number, mine)
        return info

    async def _branches(self, forge: Forge, repo: str) -> list[Branch]:
        """The remote's ``issue-*`` branches, listed once for concurrent dispatches."""
        lock = self._branch_locks.setdefault(repo, asyncio.Lock())
        async with lock:
            cached = self._branch_cache.get(repo)
            if cached is None or time.monotonic() - cached[0] > _BRANCH_CACHE_SECONDS:
                cached = (time.monotonic(), await forge.branches("issue-"))
                self._branch_cache[repo] = cached
            return cached[1]

    async def _check_branches(
        self, forge: Forge, repo: str, number: int, mine: Callable[[], set[str]]
    ) -> None:
        prefix = f"issue-{number}-"
        branches = [b for b in await self._branches(forge, repo) if b.name.startswith(prefix)]
        if not branches:
            return
        ours = mine()  # read only now: the history is a second file
        unmerged = []
        for b in branches:
            prs = await forge.list_prs(state="all", head=b.name)
            if any(p.merged for p in prs):
                continue
            unmerged.append(b.name + (" (an earlier coord assignment)" if b.name in ours else ""))
        if unmerged:
            raise ClaimError(
                f"issue {repo}#{number} has unmerged remote branch "
                f"{', '.join(unmerged)}: someone is (or was) working on it; "
                f"merge or delete the branch, `coord retry` the earlier assignment, "
                f"or pass --force"
            )
