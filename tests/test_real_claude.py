"""The real Claude Code CLI through the whole path, against the scripted model server.

`coord assign` → real ``claude -p`` in tmux, in a worktree, on an sshd machine → real tool
calls write a file and commit → `watch` shows the tool uses → `status` records cost, turns,
session id and duration.  Then every failure class the CLI can produce, and a stuck session
continued with guidance.  The CLI is the pinned npm release (``coordlib.testing.claude_cli``),
installed on first use; in CI a missing CLI fails these tests rather than skipping them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordlib import Status
from coordlib.event_view import format_event
from coordlib.stream import Init, Result, ToolUse
from coordlib.testing import SSHServer
from coordlib.testing.model_server import (
    Fault,
    ModelServer,
    Scenario,
    Turn,
    claude_env,
    redacted,
    text,
    tool,
)

from .conftest import Setup

SECRET = "sk-test-real-claude-7f3a9c1e"  # the API key the workers get; must never be written down


def arun(coro: Any) -> Any:
    return asyncio.run(coro)


def worker_env(server: ModelServer, home: Path, *, retries: int = 1) -> dict[str, str]:
    """The machine's `env:` for real workers: offline against server, isolated in home."""
    env = claude_env(server.url, home, max_retries=retries, base={})
    env["ANTHROPIC_API_KEY"] = "${TEST_WORKER_API_KEY}"  # a secret is a reference, never a literal
    return env


WORK = Scenario(
    [
        Turn([text("STATUS: writing the greeting"),
              tool("Write", file_path="hello.txt", content="hello from a real worker\n")]),
        Turn([tool("Bash", command="git add hello.txt && git commit -q -m 'Add a greeting'",
                   description="Commit the greeting")]),
        Turn([text("STATUS: done\nAdded hello.txt and committed it.")]),
    ]
)  # fmt: skip


def test_real_cli_end_to_end_over_ssh(
    setup: Setup,
    sshd: SSHServer,
    claude_cli: Path,
    model_server: Callable[..., ModelServer],
    record_property: Callable[[str, object], None],
) -> None:
    server = model_server(WORK)
    setup.add_ssh(
        sshd, "remote", claude_command=str(claude_cli), env=worker_env(server, setup.root / "home")
    )
    setup.worker.update(stall_timeout=60, result_grace=10)

    async def go() -> tuple[Any, list[tuple[float, Any]], Any, float, float]:
        async with setup.coordinator(environ={"TEST_WORKER_API_KEY": SECRET}) as c:
            t0 = time.monotonic()
            a = await c.assign("remote", "api", 21, title="Add a greeting", model="sonnet")
            events = []
            async for event in c.watch(a.id):
                events.append((time.monotonic(), event))
            recorded = time.monotonic()  # watch settles the row before it returns
            report = await c.status()
            return a, events, report, t0, recorded

    a, events, report, t0, recorded = arun(go())
    row = next(x for x in report.assignments if x.id == a.id)
    assert row.status == Status.DONE, (row.error, row.failure_class)
    assert row.failure_class is None
    assert row.num_turns == 3
    assert row.cost_usd and row.cost_usd > 0
    assert row.session_id and row.duration_ms and row.duration_ms > 0
    assert row.last_status and row.last_status.startswith("STATUS: done")

    kinds = [e for _, e in events]
    init = next(e for e in kinds if isinstance(e, Init))
    assert init.session_id == row.session_id and init.cwd and init.cwd.endswith(a.id)
    tools = [e for e in kinds if isinstance(e, ToolUse)]
    assert [t.name for t in tools] == ["Write", "Bash"]
    shown = [format_event(e) for e in kinds]
    assert "[tool] Write hello.txt" in shown
    assert any(s and s.startswith("[tool] Bash git add hello.txt") for s in shown)
    assert isinstance(kinds[-1], Result) and not kinds[-1].is_error

    # The real Bash tool committed in the worktree, on the issue's branch.
    assert setup.repo.log(a.branch)[:2] == ["Add a greeting", "initial commit"]
    assert setup.repo.log("main") == ["initial commit"]
    assert server.count() == 3  # one model request per turn, nothing else

    # The key reached the worker (the server saw it) but was never written anywhere.
    posts = [r for r in server.requests if r.method == "POST"]
    assert {r.headers.get("x-api-key") for r in posts} == {redacted(SECRET)}
    for path in setup.root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert SECRET.encode() not in path.read_bytes(), path

    # What coordlib adds around one run: dispatch to first event, last event to result.
    first, last = events[0][0], events[-1][0]
    record_property("dispatch_to_first_event_s", round(first - t0, 3))
    record_property("last_event_to_recorded_s", round(recorded - last, 3))
    print(
        f"\nreal CLI e2e: dispatch→first event {first - t0:.3f} s, "
        f"last event→recorded {recorded - last:.3f} s, whole run {recorded - t0:.3f} s"
    )


def _scenarios() -> dict[str, Scenario]:
    commit = tool("Bash", command="git commit -q --allow-empty -m 'Do it'", description="Commit")
    ok = Scenario([Turn([commit]), Turn([text("STATUS: done\nDid it.")])])
    many = Scenario([Turn([tool("Bash", command=f"echo {i}")]) for i in range(5)])
    return {
        "ok": ok,
        "max_turns": many,
        "overloaded": Scenario([Turn([], fault=Fault.error(529))]),
        "auth": Scenario([Turn([], fault=Fault.error(401))]),
        "server_error": Scenario([Turn([], fault=Fault.error(500))]),
        "bad_request": Scenario([Turn([], fault=Fault.error(400))]),
        "limited": Scenario(
            [
                Turn([commit], fault=Fault.error(429, retry_after=1, times=2)),
                Turn([text("STATUS: done\nWaited out the limit.")]),
            ]
        ),
        "hang": Scenario([Turn([], fault=Fault.hang())]),
    }


def test_every_failure_class_the_real_cli_produces(
    setup: Setup, claude_cli: Path, model_server: Callable[..., ModelServer]
) -> None:
    server = model_server(_scenarios())
    home = setup.root / "home"
    env = worker_env(server, home)
    env["API_TIMEOUT_MS"] = "60000"  # the watchdog, not the CLI, must notice the hang
    down = dict(env, ANTHROPIC_BASE_URL="http://127.0.0.1:9")  # nothing listens there
    setup.add_local("local", claude_command=str(claude_cli), env=env, max_workers=12)
    setup.add_local("down", claude_command=str(claude_cli), env=down)
    setup.add_local("broken", claude_command=f"{claude_cli} --no-such-flag", env=env)
    # Ten CLIs start at once on two cores: the stall limit must allow for a slow start.
    setup.worker.update(stall_timeout=20, result_grace=5, max_turns=2)
    setup.extra["concurrency"] = {"max_workers": 16}

    # name -> (machine, scenario, expected status, expected failure class)
    cases = {
        "ok": ("local", "ok", Status.DONE, None),
        "max_turns": ("local", "max_turns", Status.FAILED, "max_turns"),
        "overloaded": ("local", "overloaded", Status.FAILED, "overloaded"),
        "auth": ("local", "auth", Status.FAILED, "auth_error"),
        "server_error": ("local", "server_error", Status.FAILED, "api_error"),
        "bad_request": ("local", "bad_request", Status.FAILED, "api_error"),
        "stalled": ("local", "hang", Status.FAILED, "stalled"),
        "unreachable": ("down", "ok", Status.FAILED, "unreachable_api"),
        "crashed": ("broken", "ok", Status.FAILED, "crashed"),
        "limited": ("local", "limited", Status.DONE, None),
    }

    async def go() -> dict[str, Any]:
        async with setup.coordinator(environ={"TEST_WORKER_API_KEY": SECRET}) as c:
            started = await asyncio.gather(*(
                c.assign(machine, "api", n, title=name,
                         briefing=f"[scenario:{scenario}] Work on {name}.")
                for n, (name, (machine, scenario, _, _)) in enumerate(cases.items(), 1)
            ))  # fmt: skip
            done = await asyncio.gather(*(c.wait(a.id, timeout=90) for a in started))
            return {
                name: (first, c.get(first.id), last)
                for name, first, last in zip(cases, started, done, strict=True)
            }

    results = arun(go())
    for name, (_, _, want_status, want_class) in cases.items():
        first, first_now, last = results[name]
        got = (last.status, last.failure_class)
        assert got == (want_status, want_class), (name, got, last.error, last.exit_reason)
        if want_status == Status.FAILED:
            assert last.error, name  # a failure always says why
    # The rate limit was waited out: queued, then the same session continued, attempt 1.
    first, first_now, last = results["limited"]
    assert first_now.failure_class == "rate_limited" and first_now.extra["continued_by"] == last.id
    assert last.extra["continues"] == first.id and last.attempt == 1
    assert last.session_id == first_now.session_id
    # The watchdog killed the stalled worker; the CLI's own result never came.
    stalled = results["stalled"][2]
    assert stalled.exit_reason == "stalled"


# The second request hangs once (the worker looks stuck); the continued session gets it.
STUCK = Scenario(
    [
        Turn([text("STATUS: looking around"), tool("Bash", command="ls")]),
        Turn([tool("Write", file_path="greeting.txt", content="hi\n")], fault=Fault.hang(times=1)),
        Turn(
            [
                tool(
                    "Bash",
                    command="git add -A && git commit -q -m 'Add greeting.txt'",
                    description="Commit it",
                )
            ]
        ),
        Turn([text("STATUS: done\nWrote greeting.txt as told.")]),
    ]
)


def test_resume_stuck_continues_the_real_session_with_guidance(
    setup: Setup, claude_cli: Path, model_server: Callable[..., ModelServer]
) -> None:
    server = model_server(STUCK)
    env = worker_env(server, setup.root / "home")
    env["API_TIMEOUT_MS"] = "60000"
    setup.add_local("local", claude_command=str(claude_cli), env=env)
    setup.worker.update(stall_timeout=60, result_grace=5)

    async def go() -> tuple[Any, Any, Any]:
        async with setup.coordinator(environ={"TEST_WORKER_API_KEY": SECRET}) as c:
            a = await c.assign("local", "api", 31, title="Greeting", briefing="Add a greeting.")
            # Wait until the worker hangs on its second request.
            await asyncio.to_thread(
                server.wait_for, lambda rs: any(r.outcome == "hang" for r in rs), 30
            )
            await c.status()
            stuck = c.get(a.id)
            new = await c.resume_stuck(a.id, "Put it in greeting.txt.")
            return stuck, new, await c.wait(new.id, timeout=60)

    stuck, new, done = arun(go())
    assert stuck.session_id
    assert new.session_id == stuck.session_id and new.worktree == stuck.worktree
    assert done.status == Status.DONE, (done.error, done.failure_class)
    # The continued request carried the whole earlier conversation plus the guidance.
    last = [r for r in server.requests if r.path.startswith("/v1/messages")][-1]
    messages = last.body["messages"]
    flat = json.dumps(messages)
    assert "Add a greeting." in flat and "Put it in greeting.txt." in flat
    wt = setup.root / "wd-local" / "worktrees" / "api" / stuck.id
    assert (wt / "greeting.txt").read_text() == "hi\n"
    assert pytest.approx(done.attempt) == stuck.attempt


def test_real_cli_pipeline_to_ready_to_merge_over_ssh(
    setup: Setup,
    sshd: SSHServer,
    claude_cli: Path,
    model_server: Callable[..., ModelServer],
) -> None:
    """The issue-to-PR pipeline with real `claude -p` sessions over sshd: the work, a review
    that asks for changes, a fix, a second review that approves; ready to merge."""
    from tests.test_pipeline import drive, forge_of

    def commit(content: str, message: str) -> Scenario:
        return Scenario([
            Turn([text("STATUS: writing"), tool("Write", file_path="hello.txt", content=content)]),
            Turn([tool("Bash", command=f"git add hello.txt && git commit -q -m '{message}'",
                       description="Commit")]),
            Turn([text(f"STATUS: done\n{message}.")]),
        ])  # fmt: skip

    def review(verdict: str) -> Scenario:
        return Scenario([
            Turn([tool("Bash", command="git log --oneline -3", description="Read the change")]),
            Turn([text(f"Read it.\nVERDICT: {verdict}\n1. hello.txt:1 should end with a '!'.")]),
        ])  # fmt: skip

    server = model_server({
        "work": commit("hello\n", "Add a greeting"),
        "review-0": review("request-changes"),
        # (Bash, not Write: the CLI's Write refuses a file this session has not read)
        "fix": Scenario([
            Turn([tool("Bash", command="printf 'hello!\\n' > hello.txt && git commit -qam "
                                       "'Fix the greeting'", description="Fix and commit")]),
            Turn([text("STATUS: done\nFix the greeting.")]),
        ]),
        "review-1": review("approve"),
    })  # fmt: skip
    briefings = setup.root / "briefings"
    briefings.mkdir()
    (briefings / "review.md.j2").write_text(
        "Review {{ branch }} for #{{ issue.number }}; end with a VERDICT line.\n"
        "[scenario:review-{{ round }}]\n"
    )
    (briefings / "fix.md.j2").write_text("Fix: {{ review }}\n[scenario:fix]\n")
    setup.add_ssh(sshd, "remote", claude_command=str(claude_cli),
                  env=worker_env(server, setup.root / "home"))  # fmt: skip
    setup.worker.update(stall_timeout=60, result_grace=10)
    setup.extra["briefings"] = {"dir": str(briefings)}
    setup.extra["models"] = {"default": "haiku"}
    setup.write()
    cfg = setup.config_path.read_text().replace(
        "test_command: 'true'",
        f"test_command: 'grep -q hello hello.txt'\n  url: {json.dumps(str(setup.repo.origin))}",
    )
    setup.config_path.write_text(cfg)

    async def go() -> Any:
        from coordlib import Coordinator

        env = {"TEST_WORKER_API_KEY": SECRET}
        async with Coordinator.from_path(setup.config_path, environ=env) as c:
            issue = await c.forge("api").create_issue("Add a greeting", body="[scenario:work]")
            await c.assign("remote", "api", issue.number)
            return await drive(c, "api", issue.number, limit=240)

    p = arun(go())
    assert p.stage == "ready-to-merge", (p.moves, p.reason, p.failures)
    assert {s: len(ids) for s, ids in p.assignments.items()} == {"work": 1, "review": 2, "fix": 1}
    assert [v["outcome"] for v in p.verdicts if v["stage"] == "review"] == [
        "request-changes", "approve"]  # fmt: skip
    assert p.cost_usd > 0
    pr = arun(forge_of(setup).get_pr(p.pr))
    assert [r.state for r in pr.reviews] == ["COMMENTED", "COMMENTED"]
    assert "should end with" in pr.reviews[0].body
    assert setup.repo.log("main") == ["initial commit"]
    # The fix really committed (a fix that changed nothing would be done_empty, not done).
    assert setup.repo.log(p.branch)[:2] == ["Fix the greeting", "Add a greeting"]
    for path in setup.root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert SECRET.encode() not in path.read_bytes(), path
