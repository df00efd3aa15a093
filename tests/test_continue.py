"""Retry, resume-stuck and rate-limit queueing, through real tmux and git (stand-in worker)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from coordlib import ClaimError, DispatchError, Status
from coordlib.testing import SSHServer

from .conftest import Setup


def arun(coro: Any) -> Any:
    return asyncio.run(coro)


def test_resume_stuck_continues_the_session_in_the_same_worktree(
    setup: Setup, sshd: SSHServer, run_coord: Any
) -> None:
    log = setup.root / "argv.jsonl"
    prompts = setup.root / "prompts.jsonl"
    setup.add_ssh(
        sshd,
        "remote",
        env={"FAKE_CLAUDE_SCENARIO": "stall", "FAKE_CLAUDE_ARGV_LOG": str(log),
             "FAKE_CLAUDE_PROMPT_LOG": str(prompts)},
    )  # fmt: skip
    config = setup.write()

    async def start() -> Any:
        async with setup.coordinator() as c:
            a = await c.assign("remote", "api", 7, title="Stuck one")
            for _ in range(100):  # until its session id is known
                a = next(x for x in (await c.status()).assignments if x.id == a.id)
                if a.session_id:
                    return a
                await asyncio.sleep(0.1)
            raise AssertionError("no session id")

    a = arun(start())
    out = run_coord("resume-stuck", a.id, "--guidance", "Try `ls`; $(touch PWNED)", "--json",
                    config=config)  # fmt: skip
    assert out.returncode == 0, out.stderr
    new = json.loads(out.stdout)
    assert new["session_id"] == a.session_id
    assert new["worktree"] == a.worktree and new["branch"] == a.branch
    assert new["extra"]["continues"] == a.id
    assert new["attempt"] == a.attempt

    async def finish() -> tuple[Any, Any]:
        async with setup.coordinator() as c:
            done = await c.wait(new["id"], timeout=30)
            return c.get(a.id), done

    old, done = arun(finish())
    assert old.status == Status.STOPPED and old.extra["continued_by"] == new["id"]
    assert done.status == Status.DONE, done
    argvs = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(argvs) == 2
    second = argvs[1]
    assert f"--resume={a.session_id}" in second  # one word: never read as an option
    # The guidance is the prompt, on stdin: never an argument.
    guided = [json.loads(line) for line in prompts.read_text().splitlines()][1]
    assert guided["prompt"] == "Try `ls`; $(touch PWNED)" and guided["source"] == "stdin"
    assert guided["prompt"] not in second
    assert not list(setup.root.rglob("PWNED"))
    # The continuation committed in the same worktree, on the same branch.
    assert setup.repo.log(a.branch)[0].startswith("coord:")

    # A session is continued once: a second resume of the old row is refused.
    again = run_coord("resume-stuck", a.id, "--guidance", "again", config=config)
    assert again.returncode == 1
    assert f"already continued by {new['id']}" in again.stderr


def test_a_worktree_is_driven_by_one_worker_at_a_time(setup: Setup) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "stall"})

    async def go() -> None:
        async with setup.coordinator() as c:
            a = await c.assign("local", "api", 8, title="Busy")
            for _ in range(100):
                a = c.get(a.id)
                await c.status()
                if c.get(a.id).session_id:
                    break
                await asyncio.sleep(0.1)
            a = c.get(a.id)
            # Force a second driver while the first still runs: the machine refuses it.
            with pytest.raises(DispatchError, match="another worker is still running"):
                await c._dispatcher.continue_session(a, "also work here")
            await c.stop(a.id)

    arun(go())


def test_retry_starts_a_new_attempt_on_another_machine(
    setup: Setup, sshd: SSHServer, run_coord: Any
) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "fail"})
    setup.add_ssh(sshd, "remote", env={"FAKE_CLAUDE_SCENARIO": "ok"})
    config = setup.write()

    async def first() -> Any:
        async with setup.coordinator() as c:
            a = await c.assign("local", "api", 9, title="Flaky")
            return await c.wait(a.id, timeout=30)

    failed = arun(first())
    assert failed.status == Status.FAILED and failed.failure_class == "crashed"

    out = run_coord("retry", failed.id, "--machine", "remote", "--model", "opus", "--json",
                    config=config)  # fmt: skip
    assert out.returncode == 0, out.stderr
    new = json.loads(out.stdout)
    assert new["machine"] == "remote" and new["attempt"] == 2
    assert new["branch"] == f"{failed.branch}-r2"
    assert new["extra"]["retry_of"] == failed.id
    assert new["model"] == "claude-opus-4-5"

    async def finish() -> tuple[Any, Any]:
        async with setup.coordinator() as c:
            return c.get(failed.id), await c.wait(new["id"], timeout=30)

    old, done = arun(finish())
    assert old.extra["retried_by"] == new["id"]
    assert done.status == Status.DONE

    # A live assignment is not retried (stop it first).
    async def live() -> None:
        setup.machines[1]["env"] = {"FAKE_CLAUDE_SCENARIO": "stall"}
        async with setup.coordinator() as c:
            a = await c.retry(done.id)
            with pytest.raises(ClaimError, match="still running"):
                await c.retry(a.id)
            await c.stop(a.id)

    arun(live())


def test_rate_limited_run_is_queued_and_continued_without_counting_an_attempt(
    setup: Setup,
) -> None:
    log = setup.root / "argv.jsonl"
    setup.add_local(
        "local",
        env={
            "FAKE_CLAUDE_SCENARIO": "error_result",
            "FAKE_CLAUDE_ERROR_STATUS": "429",
            "FAKE_CLAUDE_RETRY_DELAY_MS": "400",
            "CLAUDE_CODE_MAX_RETRIES": "2",
            "FAKE_CLAUDE_ARGV_LOG": str(log),
        },
    )

    async def go() -> tuple[Any, Any, Any]:
        async with setup.coordinator() as c:
            a = await c.assign("local", "api", 10, title="Limited")
            for _ in range(100):
                await c.status()
                if c.get(a.id).status == Status.QUEUED:
                    break
                await asyncio.sleep(0.1)
            queued = c.get(a.id)
            # wait() sleeps out the limit, continues the session and follows it to the end.
            done = await c.wait(a.id, timeout=30)
            return queued, done, c.get(a.id)

    queued, done, old = arun(go())
    assert queued.status == Status.QUEUED and queued.failure_class == "rate_limited"
    assert queued.finished_at is None
    # The CLI's last back-off was 800 ms; the queue honours it.
    assert queued.extra["not_before"] >= queued.created_at + 0.8
    assert done.extra["continues"] == queued.id and done.status == Status.DONE
    assert done.attempt == queued.attempt == 1
    assert old.status == Status.FAILED and old.extra["continued_by"] == done.id
    argvs = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(arg.startswith("--resume=") for arg in argvs[1])
