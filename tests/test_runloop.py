"""`coord run`'s loop hears a run's end as it happens: one waiting `await` command per machine
between passes (real sshd, tmux and git), never a poll per interval."""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import Any

from coordlib import Status
from coordlib.testing import SSHServer

from .conftest import Setup
from .test_pipeline import arun, coordinator, new_issue, pipeline_setup


def test_next_end_hears_a_run_end_over_sshd_with_one_command(setup: Setup, sshd: SSHServer) -> None:
    setup.add_ssh(sshd, "remote", env={"FAKE_CLAUDE_SCENARIO": "slow", "FAKE_CLAUDE_DELAY": "1"})

    async def go() -> tuple[Any, str | None, int, float]:
        async with setup.coordinator() as c:
            a = await c.assign("remote", "api", 3, title="Slow", pipeline=False)
            await c.status()
            assert c.get(a.id).status == Status.RUNNING
            before = c.transport("remote").stats["commands"]
            t0 = time.monotonic()
            ended = await c.next_end(timeout=60)
            took = time.monotonic() - t0
            after = c.transport("remote").stats["commands"]
            return a, ended, after - before, took

    a, ended, commands, took = arun(go())
    assert ended == a.id
    assert commands == 1  # one await, however long the run took
    assert took < 30  # it answered as the run ended, long before its 60 s


def test_next_end_waits_out_the_timeout_when_nothing_runs(setup: Setup) -> None:
    setup.add_local("local")

    async def go() -> tuple[str | None, float]:
        async with setup.coordinator() as c:
            t0 = time.monotonic()
            return await c.next_end(timeout=0.3), time.monotonic() - t0

    ended, took = arun(go())
    assert ended is None and took >= 0.3


def test_a_machine_that_cannot_be_asked_never_holds_the_others(
    setup: Setup, sshd: SSHServer
) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "slow", "FAKE_CLAUDE_DELAY": "1"})
    setup.add_ssh(sshd, "remote", env={"FAKE_CLAUDE_SCENARIO": "stall"})

    async def go() -> tuple[Any, str | None]:
        async with setup.coordinator() as c:
            stalled = await c.assign("remote", "api", 1, title="Stall", pipeline=False)
            a = await c.assign("local", "api", 2, title="Slow", pipeline=False)
            sshd.stop()  # the remote machine goes away with its worker running
            try:
                return a, await c.next_end(timeout=60)
            finally:
                sshd.start()
                await c.stop(stalled.id)

    a, ended = arun(go())
    assert ended == a.id


def test_a_waiter_whose_coordinator_left_ends_by_itself(setup: Setup, sshd: SSHServer) -> None:
    setup.add_ssh(sshd, "remote", env={"FAKE_CLAUDE_SCENARIO": "stall"})

    def waiters() -> list[str]:
        ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
        return [line for line in ps.splitlines() if "coord-run await" in line]

    async def go() -> tuple[int, int]:
        async with setup.coordinator() as c:
            a = await c.assign("remote", "api", 4, title="Stall", pipeline=False)
            try:
                task = asyncio.create_task(c.next_end(timeout=600))
                await asyncio.sleep(1.0)
                during = len(waiters())
                task.cancel()  # the coordinator stops listening (Ctrl-C, another machine)
                await asyncio.gather(task, return_exceptions=True)
                await asyncio.sleep(3.5)  # a tick every 2 s finds its reader gone
                return during, len(waiters())
            finally:
                await c.stop(a.id)

    during, after = arun(go())
    assert during == 1 and after == 0


def test_the_loop_moves_on_as_a_run_ends_not_at_its_interval(setup: Setup) -> None:
    machine = pipeline_setup(setup, None, review="[fake:approve]")
    passes: list[Any] = []

    async def go() -> tuple[Any, float]:
        async with coordinator(setup) as c:
            n = await new_issue(c, "Write a greeting. [fake:slow]")
            await c.assign(machine, "api", n)
            t0 = time.monotonic()
            await c.run(interval=60, until_idle=True, on_pass=passes.append)
            return c.board.pipeline("api", n), time.monotonic() - t0

    p, took = arun(go())
    assert p.stage == "merged", p
    assert took < 55  # with a 60 s interval: every pass began as a run ended
    woke = [t.woke for t in passes if t.woke]
    assert set(woke) >= {*p.assignments["review"]}  # the review's end woke a pass
    moved = {m["from"]: m["at"] for m in p.moves}
    assert "review" in moved


def test_batch_wait_lands_the_ready_prs_together_once_none_is_in_flight(setup: Setup) -> None:
    setup.extra["merge"] = {"batch_wait": True}
    machine = pipeline_setup(setup, None, review="[fake:approve]", max_workers=4,
                             env={"FAKE_CLAUDE_DELAY": "1.5"})  # fmt: skip

    async def go() -> list[Any]:
        async with coordinator(setup) as c:
            quick = await new_issue(c, "Quick. [fake:ok:a.txt=quick]", title="Quick")
            slow = await new_issue(c, "Slow. [fake:slow:b.txt=slow]", title="Slow")
            for n in (quick, slow):
                await c.assign(machine, "api", n)
            await c.run(interval=60, until_idle=True)
            return [c.board.pipeline("api", n) for n in (quick, slow)]

    quick, slow = arun(go())
    assert quick.stage == slow.stage == "merged"
    # The quick one waited for the slow one: one stack, one test, one landing.
    assert quick.merged_sha == slow.merged_sha
