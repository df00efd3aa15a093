"""Admission control: the API's 429s and 529s slow the fleet, pause dispatch until the reset,
and the fleet recovers one worker at a time; max_retries holds a session limited too often.
Pure from fixtures, then the real Claude Code CLI against a scripted model that answers 429."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordlib import Status
from coordlib.admission import Admission, Signal, load, observe
from coordlib.config import ConcurrencyConfig
from coordlib.errors import DispatchError
from coordlib.testing.model_server import Fault, ModelServer, Scenario, Turn, text, tool

from .conftest import Setup
from .test_real_claude import SECRET, worker_env

CONF = ConcurrencyConfig(max_workers=8, backoff_base=2.0)


def test_a_signal_halves_the_fleet_and_pauses_until_its_reset() -> None:
    now = 1000.0
    s = observe(Admission(), [Signal("a:limited", "a hit a rate limit", now + 30)], live=4,
                conf=CONF, now=now)  # fmt: skip
    assert (s.limit, s.paused_until, s.hits) == (2, now + 30, 1)
    assert s.paused(now) and "dispatch resumes at" in (s.paused(now) or "")
    assert s.fleet(8) == 2
    # The same signal seen again changes nothing; a new one halves again (never below 1).
    assert observe(s, [Signal("a:limited", "x", now + 30)], live=2, conf=CONF, now=now + 1) == s
    t = observe(s, [Signal("b:overloaded", "b found the API overloaded")], live=2, conf=CONF,
                now=now + 1)  # fmt: skip
    assert t.limit == 1 and t.paused_until == now + 30 and t.hits == 2
    u = observe(t, [Signal("c:overloaded", "c")], live=1, conf=CONF, now=now + 40)
    assert u.limit == 1 and u.paused_until == now + 40 + 2.0**3  # backoff_base ** hits


def test_the_fleet_recovers_one_worker_at_a_time_after_the_pause() -> None:
    s = Admission(limit=6, paused_until=100.0, hits=3, reason="r", changed_at=90.0)
    assert observe(s, [], live=0, conf=CONF, now=99.0) == s  # still paused
    steps = []
    now = 100.0
    for _ in range(4):
        s = observe(s, [], live=0, conf=CONF, now=now)
        steps.append(s.limit)
        now += 1.0  # less than backoff_base: no step
        assert observe(s, [], live=0, conf=CONF, now=now) == s
        now += 1.0
    assert steps == [7, None, None, None]  # 6 -> 7 -> the full fleet (8): no limit left
    assert s.hits == 0 and s.reason == "" and s.paused(now) is None


LIMITED = Scenario([
    Turn([tool("Bash", command="git commit -q --allow-empty -m 'Do it'", description="Commit")],
         fault=Fault.error(429, retry_after=2, times=2)),
    Turn([text("STATUS: done\nDid it once the limit was over.")]),
])  # fmt: skip
QUICK = Scenario([
    Turn([tool("Bash", command="git commit -q --allow-empty -m 'Quick'", description="Commit")]),
    Turn([text("STATUS: done\nQuick.")]),
])  # fmt: skip


def test_429s_slow_the_fleet_pause_dispatch_and_it_recovers(
    setup: Setup, claude_cli: Path, model_server: Callable[..., ModelServer]
) -> None:
    server = model_server({"limited": LIMITED, "quick": QUICK})
    env = worker_env(server, setup.root / "home", retries=1)
    setup.add_local("local", claude_command=str(claude_cli), env=env, max_workers=4)
    setup.worker.update(stall_timeout=60, result_grace=5)
    setup.extra["concurrency"] = {"max_workers": 4, "backoff_base": 0.5}

    async def go() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with setup.coordinator(environ={"TEST_WORKER_API_KEY": SECRET}) as c:
            a = await c.assign("local", "api", 1, title="Limited", pipeline=False,
                               briefing="[scenario:limited] Do it.")  # fmt: skip
            for _ in range(200):
                await c.status()
                if c.get(a.id).status == Status.QUEUED:
                    break
                await asyncio.sleep(0.1)
            seen["queued"] = c.get(a.id)
            seen["slowed"] = load(c.board)
            # Paused until the reset: a new dispatch waits (a person's --force would not).
            with pytest.raises(DispatchError, match="API is busy") as refused:
                await c.assign("local", "api", 2, title="Quick", pipeline=False,
                               briefing="[scenario:quick] Quick.")  # fmt: skip
            seen["refused"] = str(refused.value)
            seen["done"] = await c.wait(a.id, timeout=90)  # sits out the limit, continues
            # No more signals: the fleet grows back, one worker each backoff_base.
            limits = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                await c.status()
                limits.append(load(c.board).limit)
                if limits[-1] is None:
                    break
                await asyncio.sleep(0.6)
            seen["limits"] = limits
            b = await c.assign("local", "api", 2, title="Quick", pipeline=False,
                               briefing="[scenario:quick] Quick.")  # fmt: skip
            seen["after"] = await c.wait(b.id, timeout=60)
        return seen

    seen = asyncio.run(go())
    assert seen["queued"].failure_class == "rate_limited"
    slowed = seen["slowed"]
    assert slowed.limit == 1 and slowed.paused_until >= time.time() - 60
    assert "hit a rate limit" in slowed.reason
    assert "dispatch resumes at" in seen["refused"]
    assert seen["done"].status == Status.DONE, seen["done"].error
    steps = [x for x in seen["limits"] if x is not None]
    assert steps == sorted(steps) and seen["limits"][-1] is None  # step by step, back to full
    assert seen["after"].status == Status.DONE


def test_a_session_limited_max_retries_times_in_a_row_is_held(setup: Setup) -> None:
    limited = {"FAKE_CLAUDE_SCENARIO": "error_result", "FAKE_CLAUDE_RESUME_SCENARIO":
               "error_result", "FAKE_CLAUDE_ERROR_STATUS": "429",
               "FAKE_CLAUDE_RETRY_DELAY_MS": "100", "CLAUDE_CODE_MAX_RETRIES": "1"}  # fmt: skip
    setup.add_local("local", env=limited)
    setup.extra["concurrency"] = {"max_retries": 1, "backoff_base": 0.1}

    async def go() -> list[Any]:
        async with setup.coordinator() as c:
            a = await c.assign("local", "api", 3, title="Always limited", pipeline=False)
            rows = []
            for _ in range(300):
                await c.status()
                await c.dispatch_due()
                rows = c.assignments()
                if any(x.held for x in rows):
                    break
                await asyncio.sleep(0.1)
            return [c.get(a.id), *rows]

    first, *rows = asyncio.run(go())
    held = [x for x in rows if x.held]
    assert len(held) == 1 and "stopped by a rate limit 2 times in a row" in (held[0].held or "")
    assert held[0].extra["continues"] == first.id  # continued once, then held
