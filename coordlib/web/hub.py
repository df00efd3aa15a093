"""The web server's one view of the fleet: a poller and the shared tails.

One background task asks every machine once per `interval` (`Coordinator.status`: one
command per machine, over the coordinator's one connection to each), reads the open issues
of each repo every `issues_every` seconds, and publishes a fresh `Dashboard`.  Pages read the
latest one; a page view never asks a machine anything.  An action `poke`s the poller so the
board shows its effect at once.  The tails of the assignments being viewed are shared by
their viewers (`coordlib.web.tails`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..dashboard import Dashboard, gather
from ..errors import CoordError
from .tails import Tails

if TYPE_CHECKING:
    from ..coordinator import Coordinator
    from ..forge.base import Issue
    from ..monitor import MachineStatus

__all__ = ["Hub"]

_log = logging.getLogger(__name__)


class Hub:
    """Polls the machines in one task, keeps the latest snapshot, and shares the tails."""

    def __init__(
        self,
        coord: Coordinator,
        *,
        interval: float = 5.0,
        issues_every: float | None = None,
        linger: float = 30.0,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval}")
        self.coord = coord
        self.interval = interval
        self.issues_every = max(interval, 60.0) if issues_every is None else issues_every
        self.tails = Tails(lambda aid: coord.watch_lines(aid), linger=linger)
        self.snapshot: Dashboard | None = None
        self.version = 0  # bumped at each snapshot published
        self.polls = 0  # status passes run (one per interval, or per poke)
        self._machines: list[MachineStatus] | None = None  # as the last pass saw them
        self._polled_at: float | None = None
        self._issues: dict[str, list[Issue]] | None = None
        self._issue_errors: list[str] = []
        self._issues_at = float("-inf")
        self._history: tuple[tuple[int, int], list[dict[str, Any]]] | None = None
        self._poke = asyncio.Event()
        self._published = asyncio.Event()  # set (and replaced) at each snapshot
        self._task: asyncio.Task[None] | None = None
        self.stopping = False  # `release` was called: event streams end

    # ------------------------------------------------------------ life
    async def start(self) -> None:
        """Publish a first snapshot from the board alone, and start polling."""
        if self._task is not None:
            return
        self._publish(self._build())
        self._task = asyncio.create_task(self._loop(), name="coord web poller")

    async def close(self) -> None:
        """Stop polling and every tail."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.tails.close()

    def release(self) -> None:
        """End every open event stream now (the server is stopping: uvicorn waits for open
        responses before it shuts down, and an event stream never ends by itself)."""
        self.stopping = True
        self.tails.release()
        published, self._published = self._published, asyncio.Event()
        published.set()

    def poke(self) -> None:
        """Poll now rather than at the next interval (after an action)."""
        self._poke.set()

    async def changed(self, after: int, *, timeout: float | None = None) -> int:
        """Wait until a snapshot newer than version `after` is published (at most `timeout`
        seconds); return the version then."""
        published = self._published
        if self.version > after:
            return self.version
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(published.wait(), timeout)
        return self.version

    def latest(self) -> Dashboard:
        """Return the latest snapshot (`start` publishes one at once)."""
        if self.snapshot is None:
            raise RuntimeError("the hub has not started")
        return self.snapshot

    # ------------------------------------------------------------ polling
    async def _loop(self) -> None:
        while True:
            self._poke.clear()
            try:
                await self.poll()
            except CoordError as exc:  # the board unreadable, say: shown, and tried again
                self._publish(self._build([f"status: {exc}"]))
            except Exception:  # never let one bad pass end the dashboard
                _log.exception("coord web: a status pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.interval)

    async def poll(self) -> Dashboard:
        """Ask every machine once (and the forge, when due), and publish the snapshot."""
        report = await self.coord.status()
        self.polls += 1
        self._machines, self._polled_at = report.machines, time.time()
        if self._polled_at - self._issues_at >= self.issues_every:
            self._issues_at = self._polled_at
            self._issues, self._issue_errors = await self._read_issues()
        snap = self._build()
        self._publish(snap)
        return snap

    async def _read_issues(self) -> tuple[dict[str, list[Issue]], list[str]]:
        """Each repo's open issues (closed ones the board does not know stay off the board)."""
        repos = sorted(self.coord.config.repos)

        async def one(repo: str) -> list[Issue]:
            return list(await self.coord.forge(repo).list_issues(state="open"))

        got = await asyncio.gather(*(one(r) for r in repos), return_exceptions=True)
        issues: dict[str, list[Issue]] = {}
        errors: list[str] = []
        for repo, answer in zip(repos, got, strict=True):
            if isinstance(answer, CoordError):
                errors.append(f"{repo}: the forge did not list its issues: {answer}")
            elif isinstance(answer, BaseException):
                raise answer
            else:
                issues[repo] = answer
        return issues, errors

    def _history_rows(self) -> list[dict[str, Any]]:
        """The board's archived records, read again only when their file changed."""
        path = self.coord.board.history_path
        try:
            st = path.stat()
            key = (st.st_mtime_ns, st.st_size)
        except OSError:
            return []
        if self._history is None or self._history[0] != key:
            self._history = (key, self.coord.board.history())
        return self._history[1]

    def _build(self, errors: Sequence[str] = ()) -> Dashboard:
        """The snapshot of the board now, with the machines as the last pass saw them."""
        return gather(
            self.coord,
            machines=self._machines,
            issues=self._issues,
            history=self._history_rows(),
            errors=[*errors, *self._issue_errors],
            polled_at=self._polled_at,
        )

    def _publish(self, snap: Dashboard) -> None:
        self.snapshot = snap
        self.version += 1
        published, self._published = self._published, asyncio.Event()
        published.set()
