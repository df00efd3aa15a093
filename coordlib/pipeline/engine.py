"""The pipeline engine: moves every issue through its playbook, one safe step at a time.

A pass (`coord notify`) asks every machine once (the monitor's status), then steps each
issue's pipeline as far as it can go without waiting: an ended worker's outcome is read, the
playbook says where that leads, and the next stage's action runs (a worker dispatched, the
branch tested, the PR opened or updated).  Every move is a compare-and-set on the board
(`Board.pipeline_change` with the version read), and an action is claimed first (the
pipeline's `acting`), so two passes at once never act twice; a pass killed mid-action
leaves a claim whose process is gone, which the next pass takes over.

The rules the playbook does not spell out live here: the loop cap, a reviewer with no
verdict is asked once more, a failed test moves the next fix one tier up
``models.escalation``, the per-issue budget stops fixing, the session budget pauses
dispatch, and a ``STUCK:`` line hands the issue to a person.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..assignment import Assignment, Status
from ..board_pipelines import PIPELINES, Stale, put_pipeline
from ..errors import (
    AssignmentNotFound,
    ClaimError,
    CoordError,
    DispatchError,
    IssueClosedError,
    MachineError,
    UnreachableError,
)
from ..playbook import Playbook, load_playbook
from .actions import Actions, stage_label
from .ledger import Ledger, check_against
from .report import PassReport
from .state import ENDS, NEEDS_HUMAN, Pipeline, pipeline_key
from .verdict import NO_VERDICT, parse_verdict

if TYPE_CHECKING:
    from ..context import Context
    from ..dispatch import Dispatcher
    from ..hooks import Hooks

__all__ = ["PassReport", "Pipelines"]

# Most steps a pass takes on one issue (a loop in a user's playbook must not spin).
_MAX_STEPS = 12
# A claim to act from another host is trusted this long past the test timeout.
_ACTING_MARGIN = 300.0
# A stage action (a test, a push) that fails to run this many times in a row asks a person.
_ACTION_TRIES = 3
# A reviewer with no verdict is asked again this many times, then a person is.
_VERDICT_RETRIES = 1
_STEPS_AT_ONCE = 16  # issues stepped at once in a pass
# A worker that said it was done yet left no commit, or changes uncommitted: the playbook's
# outcomes for those failure classes (coordlib.outcomes).
_LEFT_BEHIND = {"done_empty": "empty", "uncommitted": "uncommitted"}


class Pipelines:
    """The engine: enter issues, step them, and the by-hand rounds."""

    def __init__(self, ctx: Context, dispatcher: Dispatcher, hooks: Hooks) -> None:
        self.ctx = ctx
        self.hooks = hooks
        self.ledger = Ledger(ctx)
        self.actions = Actions(ctx, dispatcher, self.ledger)
        self._playbook: Playbook | None = None

    @property
    def playbook(self) -> Playbook:
        """The playbook of `pipeline.playbook` (the shipped one by default), read once."""
        if self._playbook is None:
            raw = self.ctx.config.pipeline.playbook
            path = None
            if raw:
                base = self.ctx.config.path.parent if self.ctx.config.path else Path.cwd()
                path = base / os.path.expanduser(raw)
            user_dir = self.actions.dispatcher._briefing_dir()
            self._playbook = check_against(load_playbook(path), self.ctx.config, user_dir)
        return self._playbook

    def _stale_after(self) -> float:
        return self.ctx.config.pipeline.test_timeout + _ACTING_MARGIN

    def _me(self, stage: str) -> dict[str, Any]:
        return {"host": socket.gethostname(), "pid": os.getpid(), "at": time.time(),
                "stage": stage}  # fmt: skip

    # ------------------------------------------------------------ entering the pipeline
    def enter(self, a: Assignment, *, stage: str | None = None) -> Pipeline:
        """Make `a` (just dispatched by assign, retry or resume-stuck) its issue's current
        worker, in a new pipeline or the issue's existing one (brought back from an end).
        """
        change = self.entering(a, stage=stage)
        _, p = self.ctx.board.pipeline_change(a.repo, a.issue, lambda q, txn: change(txn, a))
        assert p is not None
        return p

    def entering(
        self, a: Assignment, *, stage: str | None = None
    ) -> Callable[[Any, Assignment], None]:
        """Return the change `enter` makes, to be made in a transaction of the caller's (the
        dispatch's own start, so an assign still costs two board writes)."""
        book = self.playbook
        stage = stage or a.stage or book.start

        def change(txn: Any, a: Assignment) -> None:
            if a.trail_off is not None:
                return  # not on the forge: no PR, no review, no pipeline
            raw = txn.docs(PIPELINES).get(pipeline_key(a.repo, a.issue))
            p = Pipeline.from_dict(raw) if raw is not None else None
            if p is None or (p.ended and stage == book.start):
                fresh = Pipeline(repo=a.repo, issue=a.issue, stage=stage, playbook=book.name,
                                 title=a.title)  # fmt: skip
                if p is not None:
                    fresh.version, fresh.costs, fresh.pr, fresh.pr_url = (
                        p.version, p.costs, p.pr, p.pr_url)  # fmt: skip
                p = fresh
            if p.stage != stage:
                p.note_move(stage, "by hand")
            p.reason, p.acting, p.current = None, None, a.id
            p.assignments = {**p.assignments, stage: [*p.assignments.get(stage, []), a.id]}
            if stage == book.start or not p.branch:
                p.machine, p.branch, p.worktree = a.machine, a.branch, a.worktree
                p.base_sha, p.tier = a.base_sha, a.tier or p.tier
            put_pipeline(txn, p)

        return change

    # ------------------------------------------------------------ a pass
    async def run_pass(self) -> PassReport:
        """Step every issue's pipeline as far as it goes without waiting; post what is due."""
        report = PassReport()
        report.paused = self.ledger.session_paused()
        # Issues move side by side: ten runs that end together are tested, pushed and
        # reviewed at once, not one after another (each issue's own steps stay in order,
        # and every move is a compare-and-set, so nothing here needs them serialised).
        room = asyncio.Semaphore(_STEPS_AT_ONCE)

        async def one(p: Pipeline) -> None:
            async with room:
                try:
                    await self.step(p.repo, p.issue, report)
                except CoordError as exc:
                    report.errors.append(f"{p.key}: {exc}")
                    self.ctx.notify(f"{p.key}: {exc}")

        await asyncio.gather(*(one(p) for p in self.ctx.board.pipelines()
                               if not (p.ended and not p.outbox)))  # fmt: skip
        await self.actions.post_outbox(report)
        report.pipelines = self.ctx.board.pipelines()
        return report

    async def step(self, repo: str, issue: int, report: PassReport) -> None:
        """Move one issue's pipeline until it waits for a worker, ends, or is busy."""
        for _ in range(_MAX_STEPS):
            p = self.ctx.board.pipeline(repo, issue)
            if p is None or p.ended:
                return
            if p.acting_alive(stale_after=self._stale_after()):
                report.running += 1
                return  # another process acts on it
            if not await self._step_once(p, report):
                return

    async def _step_once(self, p: Pipeline, report: PassReport) -> bool:
        """Take one step; return whether the pipeline moved (and may move again)."""
        stage = self.playbook.stage(p.stage)
        if stage.run == "worker":
            if p.current is None:
                return await self._dispatch(p, report)
            try:
                a = self._follow(self.ctx.board.assignment(p.current))
            except AssignmentNotFound:
                # Recorded, then the process died before the claim: dispatch it again.
                return self._change(p, lambda q: _forget(q, q.current))
            if a.failure_class == "dispatch_failed" and a.id == p.current:
                if not p.branch or a.branch != p.branch or stage.name == self.playbook.start:
                    # A person's `coord assign` that never started: they were told; the
                    # issue waits for them (a later assign starts it afresh).
                    return await self._outcome(p, a, "failed", report)
                # A stage the engine started that never ran: the next pass tries again.
                report.errors.append(f"{p.key}: {a.id} did not start: {a.error}")
                self._change(p, lambda q: _forget(q, a.id))
                return False
            if a.id != p.current:
                # Read again once adopted: the adopted worker is the one waited for.
                return self._change(p, lambda q: _adopt(q, a))
            if not a.is_terminal and not (a.last_status or "").startswith("STUCK:"):
                report.running += 1
                return False
            if (a.last_status or "").startswith("STUCK:") and a.id not in p.stuck_seen:
                await self._stuck(p, a, report)
                return False
            if not a.is_terminal:
                return False
            return await self._outcome(p, a, self._worker_outcome(stage.verdict, a), report)
        claimed = self._claim(p, stage.name)
        if claimed is None:
            return False
        try:
            if stage.run == "test":
                outcome, verdict = await self.actions.test(claimed, report)
            else:
                outcome, verdict = await self.actions.pull_request(claimed)
        except UnreachableError:
            self._release(claimed, started=None)  # a machine away is no failure of the stage
            raise
        except IssueClosedError as exc:  # closed by a person meanwhile: theirs to reopen
            self.reopen(claimed, outcome=str(exc), escalate=False, failures="", stage=NEEDS_HUMAN)
            report.errors.append(f"{p.key}: {exc}")
            return False
        except CoordError as exc:
            self._failed_action(claimed, stage.name, exc)  # the next pass tries again
            raise
        except BaseException:
            self._release(claimed, started=None)
            raise
        mine = self.still_mine(claimed)
        if mine is None:
            return False
        return await self._outcome(mine, None, outcome, report, verdict=verdict)

    def _failed_action(self, p: Pipeline, stage: str, exc: CoordError) -> None:
        """Release p after its stage's action failed; the third failure in a row asks a person
        (a push the remote refuses, a machine that cannot test, will not mend by itself)."""
        key = f"{stage}:failed"

        def apply(q: Pipeline | None, txn: Any) -> None:
            assert q is not None
            q.acting = None
            q.retries = {**q.retries, key: q.retries.get(key, 0) + 1}
            if q.retries[key] >= _ACTION_TRIES:
                q.retries = {k: v for k, v in q.retries.items() if k != key}
                q.reason = f"the {stage} stage failed {_ACTION_TRIES} times; the last: {exc}"
                q.note_move(NEEDS_HUMAN, "failed")
                self.actions.queue_stage_comment(
                    q, NEEDS_HUMAN, "failed", stage_label(self.playbook, NEEDS_HUMAN)
                )

        self.ctx.board.pipeline_change(p.repo, p.issue, apply)

    def still_mine(self, claimed: Pipeline) -> Pipeline | None:
        """Return the pipeline as it is now if this process's claim on it still holds."""
        now = self.ctx.board.pipeline(claimed.repo, claimed.issue)
        if now is None or now.acting != claimed.acting:
            return None
        return now

    def _follow(self, a: Assignment) -> Assignment:
        """Follow a's continuations and retries to the newest (a queued run continued, or a
        person's retry)."""
        seen = {a.id}
        while a.is_terminal and (a.continued_by or a.retried_by):
            nxt = a.continued_by or a.retried_by
            if nxt is None or nxt in seen:
                break
            try:
                b = self.ctx.board.assignment(nxt)
            except AssignmentNotFound:
                break
            if b.failure_class == "dispatch_failed":
                break  # a retry that never started changes nothing
            a = b
            seen.add(a.id)
        return a

    def _worker_outcome(self, verdict: bool, a: Assignment) -> str:
        if a.status != Status.DONE:
            # What it left behind (`outcomes.judge`): the fix worker is told the facts.
            return _LEFT_BEHIND.get(a.failure_class or "", "failed")
        if verdict:
            return parse_verdict(a.result)[0]
        return "done"

    # ------------------------------------------------------------ claims and moves
    def _change(self, p: Pipeline, change: Callable[[Pipeline], Any]) -> bool:
        """Apply change to p if nobody moved it since it was read; tell whether it did."""

        def apply(q: Pipeline | None, txn: Any) -> None:
            assert q is not None
            change(q)

        try:
            self.ctx.board.pipeline_change(p.repo, p.issue, apply, version=p.version)
        except Stale:
            return False
        return True

    def _claim(self, p: Pipeline, stage: str) -> Pipeline | None:
        """Claim acting on p's stage; return the pipeline as claimed, None if beaten to it."""

        def apply(q: Pipeline | None, txn: Any) -> None:
            assert q is not None
            q.acting = self._me(stage)

        try:
            _, q = self.ctx.board.pipeline_change(p.repo, p.issue, apply, version=p.version)
        except Stale:
            return None
        return q

    async def _dispatch(self, p: Pipeline, report: PassReport) -> bool:
        """Start the worker of p's stage (claimed first); return whether it was started."""
        # Checked again at each dispatch: a worker that ended earlier in this pass counts.
        report.paused = report.paused or self.ledger.session_paused()
        if report.paused:
            return False
        claimed = self._claim(p, p.stage)
        if claimed is None:
            return False
        stage = self.playbook.stage(p.stage)
        try:
            a = await self.actions.dispatch(claimed, stage, self.playbook)
        except IssueClosedError as exc:  # closed by a person meanwhile: theirs to reopen
            self.reopen(claimed, outcome=str(exc), escalate=False, failures="", stage=NEEDS_HUMAN)
            report.errors.append(f"{p.key}: {exc}")
            return False
        except (DispatchError, ClaimError, MachineError) as exc:
            # Capacity, a busy issue or a machine down: nothing started; the next pass tries.
            self._release(claimed, started=None)
            report.errors.append(f"{p.key}: {exc}")
            return False
        except BaseException:
            self._release(claimed, started=None)
            raise
        self._release(claimed, started=a)
        report.dispatched.append(a.id)
        await self._fire("on_dispatch", claimed, assignment=a.id, stage=stage.name)
        return False  # now it waits for the worker

    def _release(self, p: Pipeline, *, started: Assignment | None) -> None:
        """End p's claim: with the worker started (or a row a failed dispatch left), or none."""

        def apply(q: Pipeline | None, txn: Any) -> None:
            assert q is not None
            q.acting = None
            if started is None and q.current is not None:
                row = txn.get(q.current) if q.current in txn else None
                if row is None or row.get("failure_class") == "dispatch_failed":
                    _forget(q, q.current)  # planned, never claimed, or never started
                return
            if started is not None:
                q.current = started.id

        self.ctx.board.pipeline_change(p.repo, p.issue, apply)

    async def _outcome(
        self,
        p: Pipeline,
        a: Assignment | None,
        outcome: str,
        report: PassReport,
        *,
        verdict: dict[str, Any] | None = None,
    ) -> bool:
        """Move p by `outcome` of its stage (of assignment a, when a worker's)."""
        book = self.playbook
        stage = book.stage(p.stage)
        target = book.after(stage.name, outcome)
        notes: dict[str, Any] = {}
        reviews_on = self.ctx.config.reviews.enabled

        costs = self.ledger.costs(p, a)

        def apply(q: Pipeline) -> None:
            nonlocal target
            q.acting = None
            q.retries = {k: v for k, v in q.retries.items() if k != f"{stage.name}:failed"}
            if stage.round:
                q.guidance = ""  # a person's words were for that round
            q.costs = {**q.costs, **costs}
            if a is not None and a.branch == q.branch and not q.base_sha:
                q.base_sha = a.base_sha  # known once the work started (entered at its claim)
            if verdict is not None:
                q.note_verdict({"stage": stage.name, "outcome": outcome, **verdict})
            if stage.verdict and a is not None:
                _, findings = parse_verdict(a.result)
                if outcome != NO_VERDICT:
                    q.retries = {k: v for k, v in q.retries.items() if k != stage.name}
                    q.findings = findings
                    q.note_verdict({"stage": stage.name, "outcome": outcome,
                                    "assignment": a.id, "sha": q.head_sha})  # fmt: skip
                    self.actions.queue_review(q, a, outcome, findings)
                    notes["round_complete"] = True
                elif q.retries.get(stage.name, 0) < _VERDICT_RETRIES:
                    q.retries = {**q.retries, stage.name: q.retries.get(stage.name, 0) + 1}
                else:
                    target = NEEDS_HUMAN
                    q.reason = (f"the reviewer gave no VERDICT line twice "
                                f"(last: {a.id}); read it with `coord log {a.id}`")  # fmt: skip
            if a is not None and outcome in _LEFT_BEHIND.values():
                q.failures = f"The {stage.name} run {a.id} {a.error or outcome}."
            if stage.run == "test" and outcome == "failed":
                q.escalate = True
            if target not in ENDS and book.stage(target).verdict and not reviews_on:
                # reviews.enabled: false: the review is passed over as if it approved
                q.note_move(target, outcome)
                target = book.after(target, "approve")
            if target not in ENDS and book.stage(target).round:
                why = self._refuse_round(q)
                if why:
                    target, q.reason = NEEDS_HUMAN, why
                else:
                    q.round += 1
                    if q.escalate:
                        q.tier = self.ledger.next_tier(q.tier)
                    q.escalate = False
            if target == NEEDS_HUMAN and not q.reason:
                who = f" ({a.id} ended {a.failure_class or a.status})" if a is not None else ""
                q.reason = f"the {stage.name} stage ended with {outcome}{who}"
            q.current = None
            q.note_move(target, outcome)
            self.actions.queue_stage_comment(q, target, outcome, stage_label(book, target))

        if not self._change(p, apply):
            return False
        report.moves.append({"issue": p.key, "from": stage.name, "to": target,
                             "outcome": outcome})  # fmt: skip
        moved = self.ctx.board.pipeline(p.repo, p.issue) or p
        aid = a.id if a is not None else None
        if notes.get("round_complete"):
            await self._fire("on_round_complete", moved, assignment=aid, outcome=outcome)
        await self._fire("on_stage", moved, assignment=aid, outcome=outcome, previous=stage.name)
        if target == NEEDS_HUMAN:
            await self._fire("on_needs_human", moved, assignment=aid, reason=moved.reason)
        return target not in ENDS

    def reopen(
        self,
        p: Pipeline,
        *,
        outcome: str,
        failures: str,
        escalate: bool,
        brief: str | None = None,
        conflicts: tuple[str, ...] = (),
        stage: str | None = None,
    ) -> bool:
        """Send an issue that was ready to merge back to its fix stage (the merge queue's test
        of it failed, or it no longer merges), as a round; past the cap, to a person.  With
        `stage`, back to that stage instead (no round).  Made only while this process's claim
        on p (p.acting) holds: False when it does not."""
        book = self.playbook
        fix = stage or next((s.name for s in book.stages.values() if s.round), None)

        def apply(q: Pipeline) -> None:
            if stage is not None:
                q.current, q.acting, q.failures = None, None, failures
                if stage == NEEDS_HUMAN:
                    q.reason = outcome
                q.note_move(stage, outcome)
                self.actions.queue_stage_comment(q, stage, outcome, stage_label(book, stage))
                return
            q.failures, q.brief, q.conflicts = failures, brief, list(conflicts)
            q.escalate = q.escalate or escalate
            why = self._refuse_round(q) if fix else "the playbook has no fix stage"
            target = NEEDS_HUMAN if why else str(fix)
            if why:
                q.reason = why
            else:
                q.round += 1
                if q.escalate:
                    q.tier = self.ledger.next_tier(q.tier)
                q.escalate = False
            q.current, q.acting = None, None
            q.note_move(target, outcome)
            self.actions.queue_stage_comment(q, target, outcome, stage_label(book, target))

        return self.while_mine(p, apply)

    def while_mine(self, p: Pipeline, change: Callable[[Pipeline], Any]) -> bool:
        """Apply change to p if this process's claim on it (p.acting) still holds."""

        def apply(q: Pipeline | None, txn: Any) -> bool:
            if q is None or q.acting != p.acting:
                return False
            change(q)
            return True

        done, _ = self.ctx.board.pipeline_change(p.repo, p.issue, apply)
        return done

    def _refuse_round(self, q: Pipeline) -> str | None:
        """Why the next fix round may not start (the cap, the issue's budget), or None."""
        cap = self.ctx.config.reviews.max_rounds or self.playbook.max_rounds
        if q.round >= cap:
            return (f"{q.round} fix rounds, the cap of {cap}, did not get it through; "
                    f"a person takes it from here (`coord fix` runs one more round)")  # fmt: skip
        return self.ledger.issue_over_budget(q)

    async def _stuck(self, p: Pipeline, a: Assignment, report: PassReport) -> None:
        """A worker asked for help: the issue goes to a person, with its words quoted."""
        line = (a.last_status or "")[:500]
        costs = self.ledger.costs(p, a)

        def apply(q: Pipeline) -> None:
            q.costs = {**q.costs, **costs}
            q.stuck_seen = [*q.stuck_seen, a.id][-50:]
            q.reason = f"{a.id} is stuck: {line}"
            q.note_move(NEEDS_HUMAN, "stuck")
            q.current, q.acting = None, None
            self.actions.queue_stage_comment(
                q, NEEDS_HUMAN, "stuck", stage_label(self.playbook, NEEDS_HUMAN)
            )

        if not self._change(p, apply):
            return
        report.stuck.append({"issue": p.key, "assignment": a.id, "line": line})
        moved = self.ctx.board.pipeline(p.repo, p.issue) or p
        await self._fire("on_stuck", moved, assignment=a.id, line=line)
        await self._fire("on_stage", moved, assignment=a.id, outcome="stuck", previous=p.stage)

    async def _fire(self, event: str, p: Pipeline, **extra: Any) -> None:
        if not self.hooks.has(event):
            return
        payload = {"event": event, "repo": p.repo, "issue": p.issue, "stage": p.stage,
                   "round": p.round, "pr": p.pr, "cost_usd": p.cost_usd, "reason": p.reason,
                   **extra}  # fmt: skip
        await self.hooks.fire(event, payload)


def _forget(q: Pipeline, aid: str | None) -> None:
    """Drop a worker that never ran from q: no longer waited for, and no attempt of its stage."""
    if q.current == aid:
        q.current = None
    q.assignments = {k: [x for x in v if x != aid] for k, v in q.assignments.items()}


def _adopt(q: Pipeline, a: Assignment) -> None:
    """Make a (a continuation or retry of the stage's worker) the one the stage waits for."""
    q.current = a.id
    if a.branch != q.branch and (a.stage or q.stage) == q.stage:
        # A retry starts a fresh branch (maybe on another machine): the later stages use it.
        q.machine, q.branch, q.worktree, q.base_sha = a.machine, a.branch, a.worktree, a.base_sha
    stage = a.stage or q.stage
    if a.id not in q.assignments.get(stage, []):
        q.assignments = {**q.assignments, stage: [*q.assignments.get(stage, []), a.id]}
