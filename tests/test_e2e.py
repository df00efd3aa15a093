"""assign → watch → wait → status through real tmux, real git, and real sshd."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from coordlib import Status
from coordlib.event_view import format_event
from coordlib.stream import Result, ToolUse
from coordlib.testing import SSHServer
from coordlib.testing.gitrepo import git

from .conftest import Setup


def arun(coro: Any) -> Any:
    return asyncio.run(coro)


def machine_for(kind: str, setup: Setup, sshd: SSHServer | None, **extra: Any) -> str:
    if kind == "local":
        setup.add_local("local", **extra)
        return "local"
    assert sshd is not None
    setup.add_ssh(sshd, "remote", **extra)
    return "remote"


@pytest.fixture(params=["local", "ssh"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def maybe_sshd(kind: str, request: pytest.FixtureRequest) -> SSHServer | None:
    return request.getfixturevalue("sshd") if kind == "ssh" else None


def test_assign_watch_wait_status(kind: str, setup: Setup, maybe_sshd: SSHServer | None) -> None:
    name = machine_for(kind, setup, maybe_sshd, env={"FAKE_CLAUDE_SCENARIO": "ok"})

    async def go() -> tuple[Any, list[Any], Any, Any]:
        async with setup.coordinator() as c:
            a = await c.assign(name, "api", 12, title="Add a greeting", model="haiku")
            assert a.status == Status.RUNNING
            events = [e async for e in c.watch(a.id)]
            done = await c.wait(a.id, timeout=30)
            report = await c.status()
            return a, events, done, report

    a, events, done, report = arun(go())
    assert a.branch == "issue-12-add-a-greeting"
    assert a.model == "claude-haiku-4-5"
    tools = [e for e in events if isinstance(e, ToolUse)]
    assert [t.name for t in tools] == ["Write", "Bash"]
    assert any(isinstance(e, Result) for e in events)
    shown = [format_event(e) for e in events]
    assert any(s and s.startswith("[tool] Write") for s in shown)
    assert any(s and s.startswith("[status]") for s in shown)

    assert done.status == Status.DONE, done
    assert done.failure_class is None
    assert done.num_turns and done.cost_usd and done.session_id
    assert done.exit_reason in ("exited", "result_grace_kill")
    row = next(x for x in report.assignments if x.id == a.id)
    assert row.status == Status.DONE
    assert report.machines[0].reachable

    # The worker's commit is on the branch, in the machine's clone, and main is untouched.
    subjects = setup.repo.log(a.branch)
    assert subjects[0].startswith("coord:") and "initial commit" in subjects
    assert setup.repo.log("main") == ["initial commit"]
    worktree = setup.root / f"wd-{name}" / "worktrees" / "api" / a.id
    assert (worktree / "fake_claude_output.txt").exists()


def test_two_workers_at_once_in_separate_worktrees(setup: Setup, sshd: SSHServer) -> None:
    setup.add_ssh(sshd, "remote", env={"FAKE_CLAUDE_SCENARIO": "slow", "FAKE_CLAUDE_DELAY": "4"})

    async def go() -> list[Any]:
        async with setup.coordinator() as c:
            a, b = await asyncio.gather(
                c.assign("remote", "api", 1, title="first"),
                c.assign("remote", "api", 2, title="second"),
            )
            report = await c.status()
            assert report.machines[0].running == 2
            return list(await asyncio.gather(c.wait(a.id, timeout=60), c.wait(b.id, timeout=60)))

    a, b = arun(go())
    assert a.status == b.status == Status.DONE
    assert a.worktree != b.worktree
    assert {"issue-1-first", "issue-2-second"} <= set(setup.repo.branches())


def test_status_costs_one_command_per_machine(setup: Setup, sshd: SSHServer) -> None:
    setup.add_ssh(sshd, "remote", env={"FAKE_CLAUDE_SCENARIO": "slow", "FAKE_CLAUDE_DELAY": "2"})
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "slow", "FAKE_CLAUDE_DELAY": "2"})

    async def go() -> None:
        async with setup.coordinator() as c:
            ids = [
                (await c.assign(m, "api", n, title=f"t{n}")).id
                for n, m in enumerate(["remote", "remote", "local"], 1)
            ]
            before = {m: c.transport(m).stats["commands"] for m in ("remote", "local")}
            await c.status()
            after = {m: c.transport(m).stats["commands"] for m in ("remote", "local")}
            assert {m: after[m] - before[m] for m in after} == {"remote": 1, "local": 1}
            assert c.transport("remote").stats["connects"] == 1
            for aid in ids:
                assert (await c.wait(aid, timeout=60)).status == Status.DONE

    arun(go())


def test_dispatch_is_one_remote_command(setup: Setup, sshd: SSHServer) -> None:
    setup.add_ssh(sshd, "remote", env={"FAKE_CLAUDE_SCENARIO": "ok"})

    async def go() -> None:
        async with setup.coordinator() as c:
            a = await c.assign("remote", "api", 3, title="count")
            assert c.transport("remote").stats["commands"] == 1
            await c.wait(a.id, timeout=30)

    arun(go())


def test_unreachable_machine_is_reported_and_never_holds_up_the_others(
    setup: Setup, sshd: SSHServer
) -> None:
    import socket

    setup.add_ssh(sshd, "remote")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    dead = setup.add_ssh(sshd, "dead")
    dead["port"] = dead_port
    blackhole = setup.add_ssh(sshd, "blackhole")
    blackhole["host"] = "127.0.0.1"
    # A listener that accepts but never speaks: the connect timeout must bound it.
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(5)
    blackhole["port"] = hole.getsockname()[1]

    async def go() -> Any:
        async with setup.coordinator() as c:
            return await c.status()

    import time

    t0 = time.monotonic()
    report = arun(go())
    elapsed = time.monotonic() - t0
    hole.close()
    by_name = {m.name: m for m in report.machines}
    assert by_name["remote"].reachable
    assert not by_name["dead"].reachable and "cannot connect" in (by_name["dead"].error or "")
    assert not by_name["blackhole"].reachable
    assert elapsed < 40


def test_metacharacters_in_title_and_briefing_never_execute(
    kind: str, setup: Setup, maybe_sshd: SSHServer | None, tmp_path: Path
) -> None:
    marker = tmp_path / "PWNED"
    evil = (
        f"$(touch {marker}) `touch {marker}` ; touch {marker} ' \" \\ \n"
        f"| touch {marker} && touch {marker} > {marker} $HOME ${{IFS}} %s %q \x07 '$(x)'"
    )
    name = machine_for(kind, setup, maybe_sshd, env={"FAKE_CLAUDE_SCENARIO": "ok"})

    async def go() -> Any:
        async with setup.coordinator() as c:
            a = await c.assign(name, "api", 66, title=evil, briefing=evil + "\nmore\n")
            return a, await c.wait(a.id, timeout=30)

    a, done = arun(go())
    assert done.status == Status.DONE
    assert not marker.exists()
    assert a.branch.startswith("issue-66-") and set(a.branch) <= set(
        "abcdefghijklmnopqrstuvwxyz0123456789-"
    )
    run_dir = setup.root / f"wd-{name}" / "runs" / a.id
    assert (run_dir / "briefing.md").read_text() == evil + "\nmore\n"
    spec = json.loads((run_dir / "spec.json").read_text())
    assert spec["title"] == evil


def test_secrets_reach_the_worker_but_never_disk(
    kind: str, setup: Setup, maybe_sshd: SSHServer | None
) -> None:
    secret = "sk-test-" + "s3cr3t-value-4242"
    import hashlib

    name = machine_for(
        kind,
        setup,
        maybe_sshd,
        env={
            "FAKE_CLAUDE_SCENARIO": "env",
            "FAKE_CLAUDE_REPORT_ENV": "ANTHROPIC_API_KEY,PLAIN,COORD_LEAK",
            "ANTHROPIC_API_KEY": "${TEST_ANTHROPIC_KEY}",
            "PLAIN": "visible",
        },
    )

    async def go() -> Any:
        async with setup.coordinator(
            environ={"TEST_ANTHROPIC_KEY": secret, "COORD_LEAK": "from-coordinator"}
        ) as c:
            a = await c.assign(name, "api", 5, title="env")
            return await c.wait(a.id, timeout=30)

    done = arun(go())
    assert done.status == Status.DONE
    worktree = setup.root / f"wd-{name}" / "worktrees" / "api" / done.id
    report = json.loads((worktree / "fake_claude_output.txt").read_text())
    assert report["ANTHROPIC_API_KEY"]["sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    assert report["PLAIN"]["set"] is True
    assert report["COORD_LEAK"]["set"] is False  # the coordinator's own env stays out
    # Nowhere coordlib writes: board, run dir (spec.json, launch.env, logs), workdir.
    hits = subprocess.run(
        ["grep", "-rl", secret, str(setup.root)], capture_output=True, text=True
    ).stdout.split()
    assert hits == [], hits


def test_stop_kills_the_worker_and_keeps_the_worktree(setup: Setup, sshd: SSHServer) -> None:
    setup.add_ssh(sshd, "remote", env={"FAKE_CLAUDE_SCENARIO": "stall"})

    async def go() -> Any:
        async with setup.coordinator() as c:
            a = await c.assign("remote", "api", 9, title="long")
            # Listed in the machine's live index while it runs (what a status reads) ...
            assert (setup.root / "wd-remote" / "runs" / ".live" / a.id).exists()
            await asyncio.sleep(0.5)
            return await c.stop(a.id)

    a = arun(go())
    assert not (setup.root / "wd-remote" / "runs" / ".live" / a.id).exists()  # ... not after
    assert a.status == Status.STOPPED and a.failure_class == "stopped"
    assert a.exit_reason == "stopped"
    assert (setup.root / "wd-remote" / "worktrees" / "api" / a.id).is_dir()
    sessions = subprocess.run(
        ["tmux", "-L", setup.socket, "ls"], capture_output=True, text=True
    ).stdout
    assert f"coord-{a.id}" not in sessions


def test_branch_exists_is_a_clear_dispatch_error(setup: Setup) -> None:
    from coordlib import DispatchError

    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"})
    git("branch", "issue-4-taken", cwd=setup.repo.path)

    async def go() -> None:
        async with setup.coordinator() as c:
            with pytest.raises(DispatchError, match="issue-4-taken already exists"):
                await c.assign("local", "api", 4, title="taken")
            rows = c.assignments()
            assert rows[0].status == Status.FAILED and rows[0].failure_class == "dispatch_failed"
            assert list((setup.root / "wd-local" / "runs" / ".live").iterdir()) == []

    arun(go())


def test_claim_refuses_a_second_live_assignment(setup: Setup) -> None:
    from coordlib import ClaimError

    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "stall"})

    async def go() -> None:
        async with setup.coordinator() as c:
            a = await c.assign("local", "api", 8, title="one")
            with pytest.raises(ClaimError, match=a.id):
                await c.assign("local", "api", 8, title="one again")
            await c.stop(a.id)

    arun(go())


def test_log_and_watch_of_a_vanished_run(setup: Setup) -> None:
    import shutil

    from coordlib import CommandError

    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "stall"})

    async def go() -> Any:
        async with setup.coordinator() as c:
            a = await c.assign("local", "api", 71, title="vanish")
            subprocess.run(["tmux", "-L", setup.socket, "kill-server"], check=True)
            shutil.rmtree(setup.root / "wd-local" / "runs" / a.id)
            with pytest.raises(CommandError, match=f"no run {a.id}"):
                async for _ in c.log(a.id):
                    pass
            events = [e async for e in c.watch(a.id)]
            return events, c.get(a.id)

    events, a = arun(go())
    assert events == []
    assert a.status == Status.LOST and a.exit_reason == "vanished"


def test_two_workdirs_sharing_one_clone_never_race_on_its_git_locks(setup: Setup) -> None:
    """Two machines (or coordinators) with their own workdirs dispatch into one clone at
    once: the dispatch lock lives in the clone's git dir, so `git worktree add -b` never
    meets another's `.git/config.lock`."""
    setup.add_local("one", env={"FAKE_CLAUDE_SCENARIO": "ok"}, max_workers=6)
    setup.add_local("two", env={"FAKE_CLAUDE_SCENARIO": "ok"}, max_workers=6)

    async def go() -> list[Any]:
        async with setup.coordinator() as c:
            started = await asyncio.gather(*(
                c.assign("one" if i % 2 else "two", "api", 100 + i, title=f"Task {i}")
                for i in range(8)
            ))  # fmt: skip
            return [await c.wait(a.id, timeout=60) for a in started]

    done = arun(go())
    assert [a.status for a in done] == [Status.DONE] * 8
    assert (setup.repo.path / ".git" / "coord-dispatch.lock").exists()
