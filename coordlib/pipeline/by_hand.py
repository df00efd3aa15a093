"""The pipeline's by-hand rounds: `coord test`, `coord pr`, `coord fix`, `coord bounce`, and
the session summary of `coord done`.

Each puts the issue's pipeline at the stage it runs (bringing it back from an end if need
be), runs that stage now, and moves on by the playbook from there, as a pass would.  None
of them runs while the pipeline waits for a live worker: that worker is stopped first.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..assignment import Assignment
from ..board_store import FINISHED
from ..errors import ClaimError, UsageError
from .actions import stage_label
from .engine import Pipelines
from .report import PassReport
from .state import NEEDS_HUMAN, READY, Pipeline
from .verdict import parse_verdict

if TYPE_CHECKING:
    from ..runtime.answers import Tested

__all__ = ["bounce", "fix", "open_pr", "session_summary", "test"]


def _stage_of(engine: Pipelines, run: str, *, round_: bool = False) -> str:
    for s in engine.playbook.stages.values():
        if s.run == run and (not round_ or s.round):
            return s.name
    raise UsageError(f"the playbook {engine.playbook.name} has no {run} stage")


def _hold(engine: Pipelines, a: Assignment, stage: str, **fields: Any) -> Pipeline:
    """Put a's issue's pipeline at `stage`, claimed by this process; return it as claimed.

    Refused (in the same transaction, so no pass can slip in between) while the issue waits
    for a live worker, while `a` itself is live, or while another process acts on it.
    """
    board = engine.ctx.board
    if board.pipeline(a.repo, a.issue) is None:
        engine.enter(a)
    stale_after = engine._stale_after()

    def apply(q: Pipeline | None, txn: Any) -> None:
        assert q is not None
        for aid in {a.id, q.current} - {None}:
            row = txn.get(aid) if aid in txn else None
            if row is not None and row.get("status") not in FINISHED:
                raise ClaimError(
                    f"{q.key} waits for {aid} ({row.get('status')}, "
                    f"{(row.get('extra') or {}).get('stage') or 'work'}); stop it first "
                    f"(`coord stop {aid}`) or let it finish"
                )
        if q.acting and q.acting_alive(stale_after=stale_after):
            raise ClaimError(f"another coord process is acting on {q.key} right now; try again")
        if q.stage != stage:
            q.note_move(stage, "by hand")
        q.reason, q.current = None, None
        q.acting = engine._me(stage)
        for name, value in fields.items():
            setattr(q, name, value)

    _, held = board.pipeline_change(a.repo, a.issue, apply)
    assert held is not None
    return held


async def test(
    engine: Pipelines, aid: str, *, passed: bool | None = None, reason: str = ""
) -> tuple[Pipeline, Tested | None, dict[str, Any]]:
    """Test the branch of assignment `aid` now (or record a person's verdict) and move on."""
    a = engine.ctx.board.assignment(aid)
    p = _hold(engine, a, _stage_of(engine, "test"))
    report = PassReport()
    tested: Tested | None = None
    if passed is None:
        try:
            tested = await engine.actions.run_test(p, ref=a.branch)
        except BaseException:
            engine._release(p, started=None)
            raise
        verdict = engine.actions.record_test(p, tested)
        outcome = "passed" if tested.passed else "failed"
    else:
        if not passed and not reason.strip():
            raise UsageError("say why it failed: --failed --reason TEXT")
        outcome = "passed" if passed else "failed"
        verdict = {"by": "hand", "reason": reason, "sha": p.head_sha}

        def note(q: Pipeline | None, txn: Any) -> None:
            assert q is not None
            q.failures = "" if passed else f"A person says the tests fail: {reason}"

        engine.ctx.board.pipeline_change(p.repo, p.issue, note)
    mine = engine.still_mine(p)
    if mine is None:
        raise ClaimError(f"another coord process took {p.key} over meanwhile")
    await engine._outcome(mine, None, outcome, report, verdict=verdict)
    await engine.actions.post_outbox(report)
    after = engine.ctx.board.pipeline(p.repo, p.issue) or p
    return after, tested, {"outcome": outcome, **verdict}


async def open_pr(engine: Pipelines, aid: str, *, review: bool = True) -> dict[str, Any]:
    """Push aid's branch, open (or update) its PR and, with `review`, start the reviewer."""
    a = engine.ctx.board.assignment(aid)
    p = _hold(engine, a, _stage_of(engine, "pr"))
    report = PassReport()
    try:
        outcome, detail = await engine.actions.pull_request(p)
    except BaseException:
        engine._release(p, started=None)
        raise
    mine = engine.still_mine(p)
    if mine is None:
        raise ClaimError(f"another coord process took {p.key} over meanwhile")
    p = mine
    await engine._outcome(p, None, outcome, report, verdict=detail)
    if review:
        await engine.step(p.repo, p.issue, report)
    else:
        q = engine.ctx.board.pipeline(p.repo, p.issue) or p

        def park(r: Pipeline) -> None:
            r.reason = "the PR was opened with --no-review: a person reviews it"
            r.current = None
            r.note_move(NEEDS_HUMAN, "no review")
            engine.actions.queue_stage_comment(
                r, NEEDS_HUMAN, "no review", stage_label(engine.playbook, NEEDS_HUMAN)
            )

        engine._change(q, park)
    await engine.actions.post_outbox(report)
    after = engine.ctx.board.pipeline(p.repo, p.issue) or p
    return {"pr": detail.get("pr"), "url": detail.get("url"), "sha": detail.get("sha"),
            "review": report.dispatched[0] if report.dispatched else None,
            "stage": after.stage}  # fmt: skip


async def fix(
    engine: Pipelines, aid: str, *, guidance: str = "", findings: str | None = None
) -> Assignment:
    """Run one fix round by hand on aid's issue (beyond the cap: a person decided)."""
    a = engine.ctx.board.assignment(aid)
    stage = _stage_of(engine, "worker", round_=True)
    board = engine.ctx.board
    before = board.pipeline(a.repo, a.issue)
    fields: dict[str, Any] = {"guidance": guidance.strip()}
    if findings is not None:
        fields["findings"] = findings
    fields["round"] = (before.round if before else 0) + 1
    p = _hold(engine, a, stage, **fields)
    engine._release(p, started=None)
    p = board.pipeline(p.repo, p.issue) or p
    report = PassReport()
    await engine._dispatch(p, report)
    if not report.dispatched:
        why = "; ".join(report.errors) or report.paused or "it could not be started"
        raise ClaimError(f"no fix worker started for {p.key}: {why}")
    return board.assignment(report.dispatched[0])


async def bounce(engine: Pipelines, review_id: str, *, reason: str = "") -> Assignment:
    """Send a review's findings (or `reason`) back to a fix worker, whatever its verdict."""
    r = engine.ctx.board.assignment(review_id)
    if r.stage is not None and not engine.playbook.stages.get(r.stage, None):
        raise UsageError(f"{r.id} is not a stage of the playbook")
    findings = reason.strip() or parse_verdict(r.result)[1] or (r.result or "")
    if not findings.strip():
        raise UsageError(f"{r.id} left no findings to fix; give them: --reason TEXT")
    return await fix(engine, review_id, findings=findings)


def session_summary(engine: Pipelines, *, since: float | None = None) -> dict[str, Any]:
    """What the session did: issues advanced, ready to merge, stuck; cost per issue and tier."""
    start = engine.ledger.session_start() if since is None else since
    pipelines = engine.ctx.board.pipelines()
    advanced = [p.key for p in pipelines if any(m.get("at", 0) >= start for m in p.moves)]
    spent = engine.ledger.session_spend(start)
    return {
        "since": start,
        "until": time.time(),
        "advanced": advanced,
        "ready_to_merge": [
            {"issue": p.key, "pr": p.pr, "url": p.pr_url} for p in pipelines if p.stage == READY
        ],
        "needs_human": [
            {"issue": p.key, "reason": p.reason} for p in pipelines if p.stage == NEEDS_HUMAN
        ],
        "in_flight": [
            {"issue": p.key, "stage": p.stage, "round": p.round} for p in pipelines if not p.ended
        ],
        "cost_usd": spent["usd"],
        "cost_by_issue": spent["by_issue"],
        "cost_by_tier": spent["by_tier"],
    }
