"""The board: coordlib's memory, and the one owner of assignment state.

Every change to an assignment is one of the typed transitions below, each checked against
the allowed moves of `Status` and written in one transaction (lock, re-read, change, fsync,
atomic replace: see `coordlib.board_store`).  No other module edits a row: the dispatcher
claims and starts, the monitor settles what machines report, the trail records what it
posted, the cleaner marks what it removed.

The dispatcher's transitions are coroutines: concurrent tasks' changes are written together
in one transaction, in a thread (group commit), so twenty dispatches at once cost a few
fsyncs rather than forty, and the event loop goes on with the machines meanwhile.

The moves an assignment's status may make::

    pending ──> running ──> done | failed | stopped | lost | queued
       └──────────────────> done | failed | stopped | lost | queued
    queued  ──> failed       (closed when a continuation or a retry replaces it)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

from .assignment import TERMINAL, Assignment, Status
from .board_pipelines import PipelineTransitions
from .board_store import FINISHED, SCHEMA_VERSION, BoardSnapshot, Transaction
from .errors import BoardError, ClaimError, DispatchError

__all__ = [
    "ALLOWED",
    "FINISHED",
    "SCHEMA_VERSION",
    "Board",
    "BoardSnapshot",
    "Capacity",
    "Transaction",
    "refuse_live_clash",
]

T = TypeVar("T")

ALLOWED: Mapping[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.RUNNING, *TERMINAL, Status.QUEUED}),
    Status.RUNNING: frozenset({*TERMINAL, Status.QUEUED}),
    Status.QUEUED: frozenset({Status.FAILED}),
    **{s: frozenset() for s in TERMINAL},
}


class LiveRow(Protocol):
    """What the claim checks read of a live row: an `Assignment`, or a `_Live` of a raw one."""

    @property
    def id(self) -> str: ...
    @property
    def repo(self) -> str: ...
    @property
    def issue(self) -> int: ...
    @property
    def machine(self) -> str: ...
    @property
    def status(self) -> str: ...


class _Live(NamedTuple):
    """The few fields of a live row that claims check, read without building an Assignment."""

    id: str
    repo: str
    issue: int
    machine: str
    status: str


@dataclass(frozen=True)
class Capacity:
    """How many workers may be live: fleet-wide, and on the machine being claimed."""

    fleet: int
    machine: int
    where: str = ""  # the config file, for the message


def refuse_live_clash(live: Iterable[LiveRow], repo: str, issue: int) -> None:
    """Raise `ClaimError` if one of the live assignments works on repo's issue."""
    clash = next((x for x in live if x.repo == repo and x.issue == issue), None)
    if clash is not None:
        raise ClaimError(
            f"issue {repo}#{issue} already has live assignment {clash.id} "
            f"({clash.status} on {clash.machine}); stop it with `coord stop {clash.id}` "
            f"or pass --force"
        )


class Board(PipelineTransitions):
    """Assignments in one locked file, changed only through the transitions here.

    Each issue's pipeline state is in the same file, changed through the transitions of
    `PipelineTransitions` (``board_pipelines.py``).
    """

    def __init__(self, path: str | Path, *, keep_finished: int = 300) -> None:
        super().__init__(path, keep_finished=keep_finished)
        self._groups: dict[asyncio.AbstractEventLoop, _GroupCommit] = {}

    async def _grouped(self, change: Callable[[Transaction], T]) -> T:
        """Apply `change` in a transaction shared with the changes other tasks ask for now."""
        loop = asyncio.get_running_loop()
        group = self._groups.get(loop)
        if group is None:
            for old in [lp for lp in self._groups if lp.is_closed()]:
                del self._groups[old]
            group = self._groups[loop] = _GroupCommit(self)
        return await group.submit(change)

    # -- reading ---------------------------------------------------------------------------
    def live(self) -> list[Assignment]:
        """Return the assignments that have not ended (finished rows are not even built)."""
        return [Assignment.from_dict(r, where=self.path) for r in self.all()
                if r.get("status") not in FINISHED]  # fmt: skip

    def assignment(self, id_or_prefix: str) -> Assignment:
        """Return the assignment with that id (or unique prefix), live or archived."""
        return Assignment.from_dict(self.get(id_or_prefix), where=self.path)

    def assignments(self, *, history: bool = False) -> list[Assignment]:
        """Return the live assignments (the archived ones first, too, with history)."""
        rows = self.all()
        if history:
            # A crash between the history append and the live write leaves a row in both:
            # the archived rows come first, each id once, and the live row wins.
            ids = {r["id"] for r in rows}
            rows = [r for r in self.history() if r["id"] not in ids] + rows
        return [Assignment.from_dict(r, where=self.path) for r in rows]

    # -- dispatch --------------------------------------------------------------------------
    async def claim(
        self,
        a: Assignment,
        *,
        capacity: Capacity | None,
        replaces: str | None = None,
        retried: bool = False,
        also: Callable[[Transaction, Assignment], None] | None = None,
    ) -> None:
        """Put a on the board as pending, unless its issue is taken or capacity is full.

        `capacity` None (``--force``) skips both checks.  `replaces` names the assignment a
        continues (or, with `retried`, retries): it may be live (a queued one) and is no
        clash; it is linked to a, and closed as failed if it was queued.  A session is
        continued once only.  `also` makes a change of its own in the same transaction (the
        issue entering its pipeline, so no crash after the dispatch can leave it out).
        """

        def change(txn: Transaction) -> None:
            # Raw fields, not Assignments: a batch of a hundred claims on a board of hundreds
            # of rows would otherwise build tens of thousands of them.
            live = [
                _Live(
                    r["id"],
                    r.get("repo", ""),
                    r.get("issue", -1),
                    r.get("machine", ""),
                    r.get("status", "pending"),
                )
                for r in txn.records()
                if r.get("status") not in FINISHED and r["id"] != replaces
            ]
            if capacity is not None:
                refuse_live_clash(live, a.repo, a.issue)
                _check_capacity(live, a.machine, capacity)
            if replaces is not None and replaces in txn:
                prev = Assignment.from_dict(txn.get(replaces), where=self.path)
                if not retried and prev.continued_by:
                    raise ClaimError(
                        f"assignment {replaces} was already continued by {prev.continued_by}; "
                        f"one session is never driven by two workers"
                    )
                if retried:
                    prev.retried_by = a.id
                else:
                    prev.continued_by = a.id
                if prev.status == Status.QUEUED:
                    _move(prev, Status.FAILED)
                    prev.finished_at = time.time()
                txn.update(replaces, prev.to_dict())
            txn.insert(a.to_dict())
            if also is not None:
                also(txn, a)

        await self._grouped(change)

    async def started(
        self,
        id: str,
        *,
        base_sha: str | None,
        posted: Mapping[str, int | str | None] | None = None,
        ports: list[int] | None = None,
    ) -> Assignment:
        """Record that a's worker was started: pending → running (if nothing moved it on).

        `posted` records trail stages claimed with the row: a comment's id, or None when it
        could not be posted (the claim is dropped, for `post_pending` to try again).
        """

        def change(txn: Transaction) -> Assignment:
            a = Assignment.from_dict(txn.get(id), where=self.path)
            if a.status == Status.PENDING:
                _move(a, Status.RUNNING)
                a.started_at = time.time()
            a.base_sha = base_sha or a.base_sha
            a.ports = ports or a.ports
            if posted and a.trail is not None:
                trail = dict(a.trail)
                for stage, comment in posted.items():
                    if comment is None:
                        trail.pop(stage, None)
                    else:
                        trail[stage] = comment
                a.trail = trail
            txn.update(id, a.to_dict())
            return a

        return await self._grouped(change)

    async def dispatch_failed(self, id: str, error: str) -> None:
        """Record that a's worker never started: pending → failed, and free its session."""

        def change(txn: Transaction) -> None:
            a = Assignment.from_dict(txn.get(id), where=self.path)
            if a.status in TERMINAL:
                return
            _move(a, Status.FAILED)
            a.failure_class, a.error, a.finished_at = "dispatch_failed", error, time.time()
            # Nothing ran: nothing is posted as dispatched, and no ending either.
            a.trail, a.trail_off = (
                None,
                a.trail_off or "the dispatch failed before the worker started",
            )
            txn.update(id, a.to_dict())
            if a.continues is not None and a.continues in txn:
                prev = Assignment.from_dict(txn.get(a.continues), where=self.path)
                if prev.continued_by == a.id:
                    prev.continued_by = None  # the session is free for another try
                    txn.update(prev.id, prev.to_dict())

        await self._grouped(change)

    def dispatch_unknown(self, id: str, error: str) -> None:
        """Note that a's dispatch may or may not have started it (status will tell)."""
        with self.transaction() as txn:
            txn.update(id, {"error": error})

    # -- what machines report --------------------------------------------------------------
    def settle(
        self, updates: Mapping[str, tuple[int, Mapping[str, Any]]]
    ) -> tuple[list[tuple[str, str, str]], list[Assignment] | None]:
        """Apply reconciled changes ({id: (events offset folded from, fields)}) at once.

        A row another process settled first, or whose events another process folded
        further, is left as it is.  Return the status changes made, and the live rows after
        the write (None when there was nothing to write).
        """
        changed: list[tuple[str, str, str]] = []
        if not updates:
            return changed, None
        with self.transaction() as txn:
            for aid, (offset, fields) in updates.items():
                if aid not in txn:
                    continue
                a = Assignment.from_dict(txn.get(aid), where=self.path)
                if a.is_terminal or a.events_offset != offset:
                    continue
                old = a.status
                for name, value in fields.items():
                    if name == "status":
                        _move(a, Status(value))
                    else:
                        setattr(a, name, value)
                txn.update(aid, a.to_dict())
                if a.status != old:
                    changed.append((aid, str(old), str(a.status)))
            rows = [Assignment.from_dict(r, where=self.path) for r in txn.all()]
        return changed, rows

    # -- the trail ---------------------------------------------------------------------------
    def trail_claim(self, id: str, stage: str) -> bool:
        """Claim posting `stage` of a's trail; False when it is posted, claimed, or off."""
        with self.transaction() as txn:
            if id not in txn:
                return False
            a = Assignment.from_dict(txn.get(id), where=self.path)
            if a.trail is None or a.trail_off is not None or stage in a.trail:
                return False
            a.trail = {**a.trail, stage: "posting"}
            txn.update(id, a.to_dict())
            return True

    def trail_posted(self, id: str, stage: str, comment: int | str) -> None:
        """Record the comment that carries `stage` of a's trail."""
        with self.transaction() as txn:
            if id in txn:
                a = Assignment.from_dict(txn.get(id), where=self.path)
                a.trail = {**(a.trail or {}), stage: comment}
                txn.update(id, a.to_dict())

    def trail_forget(self, id: str, drop: Callable[[str, Any], bool]) -> dict[str, Any]:
        """Forget the trail stages `drop(stage, value)` picks (to post them again)."""
        with self.transaction() as txn:
            if id not in txn:
                return {}
            a = Assignment.from_dict(txn.get(id), where=self.path)
            a.trail = {k: v for k, v in (a.trail or {}).items() if not drop(k, v)}
            txn.update(id, a.to_dict())
            return dict(a.trail)

    def restore(self, rows: Sequence[Assignment]) -> list[Assignment]:
        """Insert the rows the board does not have (rebuilt from the forge's trail)."""
        restored: list[Assignment] = []
        with self.transaction() as txn:
            for a in rows:
                if a.id not in txn:
                    txn.insert(a.to_dict())
                    restored.append(a)
        return restored

    # -- cleaning up ---------------------------------------------------------------------------
    def mark_cleaned(self, marks: Mapping[str, Mapping[str, Any]]) -> None:
        """Note on each assignment (live or archived) what `coord clean` removed."""
        if not marks:
            return
        with self.transaction() as txn:
            for aid, mark in marks.items():
                if aid in txn:
                    a = Assignment.from_dict(txn.get(aid), where=self.path)
                    a.cleaned = dict(mark)
                    txn.update(aid, a.to_dict())
            archived = [aid for aid in marks if aid not in txn]
        if archived:
            self.amend_history(
                archived,
                lambda r: {"extra": {**(r.get("extra") or {}), "cleaned": dict(marks[r["id"]])}},
            )


_Batch = list[tuple[Callable[[Transaction], Any], "asyncio.Future[Any]"]]


class _GroupCommit:
    """The changes concurrent tasks of one event loop asked for, written in one transaction."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self.queue: _Batch = []
        self.writer: asyncio.Task[None] | None = None

    async def submit(self, change: Callable[[Transaction], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.queue.append((change, future))
        if self.writer is None or self.writer.done():
            self.writer = asyncio.ensure_future(self._write())
        return await future

    async def _write(self) -> None:
        while self.queue:
            batch, self.queue = self.queue, []
            try:
                outcomes = await asyncio.to_thread(self._apply, batch)
            except BaseException as exc:  # the write itself failed: nothing of it was kept
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _apply(self, batch: _Batch) -> list[tuple[bool, Any]]:
        """Run each change in one transaction; one change's error is its own alone.

        A change checks before it writes (a refused claim inserts nothing), so an error
        leaves the transaction as the changes before it made it.
        """
        outcomes: list[tuple[bool, Any]] = []
        with self.board.transaction() as txn:
            for change, _ in batch:
                try:
                    outcomes.append((True, change(txn)))
                except Exception as exc:
                    outcomes.append((False, exc))
        return outcomes


def _move(a: Assignment, to: Status) -> None:
    """Set a's status to `to` if that is an allowed move (or no move at all)."""
    if to != a.status and to not in ALLOWED[a.status]:
        raise BoardError(
            f"assignment {a.id} cannot go from {a.status} to {to}; this is a bug in "
            f"coordlib, please report it"
        )
    a.status = to


def _check_capacity(live: Sequence[LiveRow], machine: str, cap: Capacity) -> None:
    working = [x for x in live if x.status != Status.QUEUED]
    if len(working) >= cap.fleet:
        where = f" in {cap.where}" if cap.where else ""
        raise DispatchError(
            f"{len(working)} workers are live, the limit of concurrency.max_workers "
            f"({cap.fleet}); wait for one to end or raise the limit{where}"
        )
    busy = sum(1 for x in working if x.machine == machine)
    if busy >= cap.machine:
        raise DispatchError(
            f"is running {busy} of its {cap.machine} workers; wait, pick another "
            f"machine, or raise machines.{machine}.max_workers",
            machine=machine,
        )
