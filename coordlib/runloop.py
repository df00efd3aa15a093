"""`coord run`'s loop: pass after pass, each as soon as a run ends rather than on a timer.

Between passes the loop holds one ``await`` command per machine that has running workers
(`next_end`): the machine answers the moment one of them ends, so the pipeline moves on
within a fraction of a second however long `interval` is.  The interval only bounds the
wait when nothing ends (a machine that never answers, a rate limit to sit out, work that
waits for a person).  A pass already carries each issue as far as it goes; a merge that
landed or bounced something is followed by another pass at once (a bounced PR's fix).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .assignment import Status
from .errors import CoordError
from .pipeline.state import READY
from .runtime.answers import parse_await
from .runtime.builders import await_command

if TYPE_CHECKING:
    from .board import Board
    from .config import Config
    from .context import Context
    from .merge.runner import MergeReport
    from .pipeline.report import PassReport
    from .pipeline.state import Pipeline

__all__ = ["LoopPass", "next_end", "run_loop"]


class Loopable(Protocol):
    """What the loop drives: the `Coordinator`'s part it uses."""

    config: Config
    board: Board

    async def advance(self) -> PassReport: ...
    async def merge(self, *, repo: str | None = None) -> MergeReport: ...
    def pipelines(self) -> list[Pipeline]: ...
    async def next_end(self, *, timeout: float) -> str | None: ...


@dataclass
class LoopPass:
    """One turn of the loop: the pass's report (merges folded in), and what woke it."""

    report: PassReport
    woke: str | None = None  # the run whose end started this pass (None: the first, a timer)
    merged: list[dict[str, Any]] = field(default_factory=list)  # the merge's batches


async def next_end(ctx: Context, *, timeout: float) -> str | None:
    """Wait until one of the running workers ends, at most `timeout` seconds; return its id.

    One streaming remote command per machine with running workers (`await`); the first to
    answer wins and the others are closed.  A machine that cannot be asked is left to the
    next pass's status, which reports it; with none to ask, this sleeps out the timeout.
    """
    running: dict[str, list[str]] = {}
    for a in ctx.board.live():
        if a.status == Status.RUNNING:
            running.setdefault(a.machine, []).append(a.id)
    deadline = time.monotonic() + timeout

    async def one(machine: str, ids: list[str]) -> str | None:
        m = ctx.config.machine(machine)
        data = bytearray()
        async for chunk in ctx.machines.get(machine).stream(
            await_command(m.workdir, timeout + 1, sorted(ids))
        ):
            data += chunk
        return parse_await(bytes(data), machine=machine)

    tasks = {asyncio.create_task(one(m, ids)) for m, ids in running.items()}
    try:
        while tasks:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            done, tasks = await asyncio.wait(
                tasks, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            for t in done:
                with contextlib.suppress(CoordError):  # a machine away: the next pass says so
                    ended = t.result()
                    if ended is not None:
                        return ended
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        return None
    finally:
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def run_loop(
    c: Loopable,
    *,
    interval: float | None = None,
    until_idle: bool = False,
    on_pass: Callable[[LoopPass], None] = lambda turn: None,
) -> None:
    """Pass (`Coordinator.advance`), land what is ready (with ``merge.auto``), and repeat:
    at once after a pass that moved something, else when a run ends or `interval` passes.
    With `until_idle`, return after a pass with nothing running, moving or waiting."""
    wait = interval or c.config.pipeline.interval
    woke: str | None = None
    while True:
        report = await c.advance()
        turn = LoopPass(report, woke)
        repos = _to_land(report.pipelines, c.config.merge.batch_wait)
        if c.config.merge.auto and repos:
            # (with batch_wait, only the repos whose issues are all ready or done)
            merged = await (_merge_each(c, repos) if c.config.merge.batch_wait else c.merge())
            turn.merged = merged.batches
            for b in merged.batches:  # each a move: the loop is not idle yet
                report.moves += [
                    {"issue": x["issue"], "from": "ready-to-merge", "to": "merged",
                     "outcome": x["sha"][:12]} for x in b.get("landed", [])
                ] + [
                    {"issue": k, "from": "ready-to-merge", "to": "fix", "outcome": why}
                    for why, keys in (("bounced", b.get("bounced", [])),
                                      ("conflict", [x["issue"] for x in b.get("conflicts", [])]))
                    for k in keys
                ]  # fmt: skip
            report.errors += merged.errors
            report.pipelines = c.pipelines()
        on_pass(turn)
        if until_idle and report.idle:
            return
        if any(b.get("landed") or b.get("bounced") or b.get("conflicts") for b in turn.merged):
            woke = None
            continue  # a bounced or conflicting PR's fix starts in the next pass, at once
        woke = await c.next_end(timeout=_until_due(c, wait))


def _to_land(pipelines: list[Pipeline], batch_wait: bool) -> list[str]:
    """The repos with PRs ready to land now (with `batch_wait`, only those none of whose
    other issues is still being worked on: they land together, in one batch)."""
    ready = sorted({p.repo for p in pipelines if p.stage == READY})
    if not batch_wait:
        return ready
    busy = {p.repo for p in pipelines if not p.ended}
    return [r for r in ready if r not in busy]


async def _merge_each(c: Loopable, repos: list[str]) -> MergeReport:
    """Merge each of `repos` (their batches and errors in one report)."""
    report = await c.merge(repo=repos[0])
    for repo in repos[1:]:
        more = await c.merge(repo=repo)
        report.batches += more.batches
        report.errors += more.errors
    return report


def _until_due(c: Loopable, wait: float) -> float:
    """The wait, cut short by the next rate-limited run due to continue."""
    due = [a.not_before for a in c.board.live() if a.status == Status.QUEUED and a.not_before]
    if not due:
        return wait
    return max(0.05, min(wait, min(due) - time.time()))
