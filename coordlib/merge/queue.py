"""The merge queue's batching, as bors-ng and GitHub's merge queue do it, with no I/O: the
`Merger` gives it three coroutines and it decides what to stack, test and land.

A batch of ready PRs is stacked on the default branch's head, one after another, and the top
of the stack is tested once.  Green: the tested commit lands (only if the default branch did
not move meanwhile; if it moved, the batch is stacked and tested again).  Red: the stack's
prefixes are bisected for the first red one; its PR is bounced, the green prefix below it
(tested, so it may land) lands, and the PRs above it are stacked again on the new head and
tested.  So a batch of N green PRs costs one test run; one breaker among N costs about
log2(N) + 2.  Nothing lands that was not tested on exactly the base it lands on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["BatchResult", "Step", "Trial", "run_batch"]

C = TypeVar("C")  # a candidate: the caller's own type


@dataclass(frozen=True)
class Step(Generic[C]):
    """One candidate in a stack: its commit (the stack's head after it), or why none."""

    candidate: C
    sha: str | None  # None: it was not applied
    state: str = "applied"  # applied | conflict | missing
    conflicts: tuple[str, ...] = ()
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Trial:
    """A test of one commit."""

    passed: bool
    facts: dict[str, Any] = field(default_factory=dict)  # what the caller records (tail, log…)


@dataclass
class BatchResult(Generic[C]):
    """What became of a batch."""

    landed: list[tuple[C, str]] = field(default_factory=list)  # (candidate, the landed sha)
    bounced: list[tuple[C, Trial]] = field(default_factory=list)  # broke the tests
    conflicts: list[Step[C]] = field(default_factory=list)  # did not apply on the base
    missing: list[C] = field(default_factory=list)  # its branch is gone
    test_runs: int = 0
    restacks: int = 0  # times the default branch moved under a tested stack
    base_red: Trial | None = None  # the default branch itself failed its tests


Stack = Callable[[Sequence[C]], Awaitable[tuple[str, list[Step[C]]]]]  # -> (base sha, steps)
Test = Callable[[str, Sequence[C]], Awaitable[Trial]]  # (sha, the candidates in it) -> trial
Land = Callable[[str, str], Awaitable[bool]]  # (sha, expected base) -> False: the base moved
Landed = Callable[[list[C], str], Awaitable[None]]  # (the candidates, the landed sha)
Bounced = Callable[[C, Trial], Awaitable[None]]  # (the breaker, its red trial)

_MAX_RESTACKS = 5


async def run_batch(
    candidates: Sequence[C],
    *,
    stack: Stack[C],
    test: Test[C],
    land: Land,
    landed: Landed[C] | None = None,
    bounced: Bounced[C] | None = None,
    green: set[str] | None = None,
) -> BatchResult[C]:
    """Stack, test, bisect and land one batch; see the module.

    `landed` and `bounced` hear each outcome the moment it is decided (a push is recorded
    before anything else can fail); the result repeats them.  A red stack whose first PR is
    red alone gets the base itself tested: a red base bounces nobody (`result.base_red`).
    `green` holds commits known to pass (what this merge landed, tested): a base among them
    is not tested again, and each commit landed is added to it.
    """
    known: set[str] = set() if green is None else green
    result: BatchResult[C] = BatchResult()
    todo = list(candidates)

    async def did_land(part: Sequence[Step[C]], sha: str) -> None:
        known.add(sha)
        result.landed += [(s.candidate, sha) for s in part]
        if landed is not None:
            await landed([s.candidate for s in part], sha)

    async def did_bounce(c: C, trial: Trial) -> None:
        result.bounced.append((c, trial))
        if bounced is not None:
            await bounced(c, trial)

    while todo:
        base, steps = await stack(todo)
        result.conflicts += [s for s in steps if s.state == "conflict"]
        result.missing += [s.candidate for s in steps if s.state == "missing"]
        applied = [s for s in steps if s.state == "applied" and s.sha]
        if not applied:
            return result
        top = applied[-1]
        trial = await test(str(top.sha), [s.candidate for s in applied])
        result.test_runs += 1
        if trial.passed:
            if await land(str(top.sha), base):
                await did_land(applied, str(top.sha))
                return result
            result.restacks += 1
            if result.restacks > _MAX_RESTACKS:
                return result  # the branch moves faster than it can be tested: next time
            todo = [s.candidate for s in applied]
            continue
        # The first red prefix: every prefix below `ok` passed, the one at `red` failed.
        ok, red, red_trial = -1, len(applied) - 1, trial
        while red - ok > 1:
            mid = (ok + red) // 2
            probe = await test(str(applied[mid].sha), [s.candidate for s in applied[: mid + 1]])
            result.test_runs += 1
            if probe.passed:
                ok = mid
            else:
                red, red_trial = mid, probe
        if red == 0 and base not in known:
            # The first PR alone is red: unless the base itself is (then nobody is to blame).
            base_trial = await test(base, [])
            result.test_runs += 1
            if not base_trial.passed:
                result.base_red = base_trial
                return result
            known.add(base)
        await did_bounce(applied[red].candidate, red_trial)
        if ok >= 0:
            sha = str(applied[ok].sha)
            if await land(sha, base):
                await did_land(applied[: ok + 1], sha)
            else:
                result.restacks += 1
                todo = [s.candidate for i, s in enumerate(applied) if i != red]
                if result.restacks > _MAX_RESTACKS:
                    return result
                continue
        todo = [s.candidate for s in applied[red + 1 :]]
    return result
