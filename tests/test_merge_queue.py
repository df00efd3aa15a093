"""The merge queue's batching, pure: what is stacked, tested and landed, and how many test
runs it costs (the issue's targets: 8 green PRs in at most 2 runs; 8 with one breaker land
the 7 good ones in at most 7 and bounce the bad one)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from coordlib.merge.queue import BatchResult, Step, Trial, run_batch


class World:
    """A default branch (a list of landed PRs) and PRs that may break or conflict."""

    def __init__(self, broken: set[int] = frozenset(), conflicting: set[int] = frozenset(),
                 moves: int = 0) -> None:  # fmt: skip
        self.main: list[int] = []
        self.broken, self.conflicting, self.moves = set(broken), set(conflicting), moves
        self.tested: list[tuple[int, ...]] = []
        self.landed: list[tuple[int, ...]] = []  # the default branch after each land
        self.commits: dict[str, tuple[int, ...]] = {}

    def sha(self, prs: Sequence[int]) -> str:
        """The commit of a state: the same state, the same commit (as git's would be)."""
        for key, state in self.commits.items():
            if state == tuple(prs):
                return key
        key = f"c{len(self.commits)}"
        self.commits[key] = tuple(prs)
        return key

    async def stack(self, cands: Sequence[int]) -> tuple[str, list[Step[int]]]:
        base = self.sha(self.main)
        steps, have = [], list(self.main)
        for c in cands:
            if c in self.conflicting:
                steps.append(Step(c, None, "conflict", ("a.py",)))
                continue
            have.append(c)
            steps.append(Step(c, self.sha(have), files=(f"f{c}.py",)))
        return base, steps

    async def test(self, sha: str, cands: Sequence[int]) -> Trial:
        prs = self.commits[sha]
        self.tested.append(prs)
        return Trial(not (set(prs) & self.broken), {"sha": sha})

    async def land(self, sha: str, base: str) -> bool:
        if self.moves:
            self.moves -= 1
            self.main.append(-1)  # someone pushed meanwhile
            return False
        if self.commits[base] != tuple(self.main):
            return False
        self.main = list(self.commits[sha])
        self.landed.append(tuple(self.main))
        return True


def merge_all(world: World, prs: list[int], batch: int) -> list[BatchResult[int]]:
    async def go() -> list[BatchResult[int]]:
        out, green = [], set[str]()
        for i in range(0, len(prs), batch):
            out.append(await run_batch(prs[i : i + batch], stack=world.stack, test=world.test,
                                       land=world.land, green=green))  # fmt: skip
        return out

    return asyncio.run(go())


@pytest.mark.parametrize("batch", [4, 8])
def test_eight_green_prs_land_in_at_most_two_runs(batch: int) -> None:
    w = World()
    results = merge_all(w, list(range(1, 9)), batch)
    assert w.main == list(range(1, 9))
    assert sum(r.test_runs for r in results) == 8 // batch <= 2


@pytest.mark.parametrize("batch", [4, 8])
@pytest.mark.parametrize("bad", [1, 3, 5, 8])
def test_one_breaker_among_eight_is_bounced_and_the_rest_land(batch: int, bad: int) -> None:
    w = World(broken={bad})
    results = merge_all(w, list(range(1, 9)), batch)
    assert w.main == [x for x in range(1, 9) if x != bad]
    assert [p for r in results for p, _ in r.bounced] == [bad]
    assert sum(r.test_runs for r in results) <= 7
    # Nothing landed that was not tested as exactly that stack on exactly that base.
    assert w.landed and all(state in w.tested for state in w.landed)


def test_every_landed_commit_was_tested_on_its_base() -> None:
    w = World(broken={2, 6})
    merge_all(w, list(range(1, 9)), 8)
    assert w.main == [1, 3, 4, 5, 7, 8]
    assert w.landed and all(state in w.tested for state in w.landed)


def test_a_moved_branch_forces_a_retest() -> None:
    w = World(moves=1)
    [r] = merge_all(w, [1, 2, 3], 3)
    assert r.restacks == 1 and r.test_runs == 2
    assert w.main == [-1, 1, 2, 3]  # stacked again on the moved branch, tested, landed
    assert (-1, 1, 2, 3) in w.tested


def test_a_conflict_is_set_aside_and_the_rest_land() -> None:
    w = World(conflicting={2})
    [r] = merge_all(w, [1, 2, 3], 3)
    assert [s.candidate for s in r.conflicts] == [2] and w.main == [1, 3]
    assert r.test_runs == 1


def test_a_red_base_bounces_nobody() -> None:
    w = World(broken={0})
    w.main = [0]  # the default branch itself is broken

    async def go() -> BatchResult[int]:
        return await run_batch([1, 2, 3, 4], stack=w.stack, test=w.test, land=w.land)

    r = asyncio.run(go())
    assert r.bounced == [] and r.landed == [] and r.base_red is not None
    assert w.tested[-1] == (0,)  # the base was tested on its own


def test_outcomes_are_heard_as_they_happen() -> None:
    w = World(broken={3})
    heard: list[tuple[str, Any]] = []

    async def landed(cands: list[int], sha: str) -> None:
        heard.append(("landed", tuple(cands)))

    async def bounced(c: int, trial: Trial) -> None:
        heard.append(("bounced", c))

    async def go() -> BatchResult[int]:
        return await run_batch([1, 2, 3, 4], stack=w.stack, test=w.test, land=w.land,
                               landed=landed, bounced=bounced)  # fmt: skip

    asyncio.run(go())
    assert heard == [("bounced", 3), ("landed", (1, 2)), ("landed", (4,))]


def test_a_base_this_merge_landed_is_not_tested_again() -> None:
    w = World(broken={5})
    results = merge_all(w, list(range(1, 9)), 4)
    # batch 1 green (1 run); batch 2: its top (red), then prefixes 5-6 and 5 (red): 5 is the
    # breaker with no test of the base, which batch 1 landed tested; then 6-8 (green).
    assert [r.test_runs for r in results] == [1, 4]
    assert (1, 2, 3, 4) not in w.tested[1:]
