"""smoke_tests.auto_queue: a PR smoke-tested as soon as its review approves, alone on its base
on each machine with a capability its changes call for, so a red smoke test sends it back to
its fix stage before it reaches a batch.  The merge queue still smoke-tests what it lands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import CoordError
from .queue import Trial
from .runner import MergeReport
from .smoke import capable, rules_for

if TYPE_CHECKING:
    from ..pipeline.state import Pipeline
    from .runner import Merger

__all__ = ["early_smoke"]


async def early_smoke(merger: Merger) -> list[dict[str, Any]]:
    """smoke_tests.auto_queue: smoke-test each PR once its review approves, alone on its
    base, so a red one goes back to its fix stage before it reaches a batch.  The merge
    still smoke-tests the stack it lands.  Return the moves made."""
    config = merger.ctx.config
    if not (config.smoke_tests.auto_queue and config.smoke_tests.capability_rules):
        return []
    moves: list[dict[str, Any]] = []
    for p in merger.ctx.board.pipelines():
        if p.stage != "ready-to-merge" or not p.branch or p.pr is None:
            continue
        if any(v.get("stage") == "smoke" and v.get("sha") == p.head_sha for v in p.verdicts):
            continue
        claimed = merger._claim([p], MergeReport(dry_run=False))
        if not claimed:
            continue
        q = claimed[0]
        try:
            red = await _smoke_alone(merger, q)
            if red is None:
                merger.engine.while_mine(q, lambda x: x.note_verdict(
                    {"stage": "smoke", "outcome": "passed", "sha": x.head_sha}))  # fmt: skip
            else:
                tail = str(red.facts.get("tail") or "")
                merger.engine.reopen(q, outcome="smoke test failed", escalate=True, failures=(
                    f"The smoke test on {red.facts.get('machine')} "
                    f"({red.facts.get('smoke')}) failed:\n{tail}"))  # fmt: skip
                moves.append({"issue": q.key, "from": "ready-to-merge", "to": "fix",
                              "outcome": "smoke failed"})  # fmt: skip
        except CoordError as exc:
            merger.ctx.notify(f"smoke test of {q.key}: {exc}")
        finally:
            merger._release([q])
    return moves


async def _smoke_alone(merger: Merger, p: Pipeline) -> Trial | None:
    """Smoke-test p alone on its base on each capable machine its changes call for."""
    config = merger.ctx.config
    method = config.merge.method
    _, steps = await merger._stack_on(config.machine(p.machine), p.repo, method, [p])
    if not steps or steps[0].state != "applied":
        return None  # a conflict: the merge queue deals with it
    for rule in rules_for(config, [steps[0].files]):
        where = capable(config, rule["capability"], p.repo)
        if where is None:
            continue  # it waits; `coord merge` says why
        _, there = await merger._stack_on(where, p.repo, method, [p])
        if there and there[0].state == "applied":
            red = await merger._smoke_run(rule, where, p.repo, str(there[0].sha))
            if red is not None:
                return red
    return None
