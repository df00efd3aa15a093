"""A day on a real fleet, over real sshd: machines that hang or vanish, failures that name
their cause, labels and trail that never contradict the board, and watch telling when it
reconnects."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from coordlib import Status
from coordlib.errors import ForgeError
from coordlib.event_view import format_event
from coordlib.markers import parse_markers
from coordlib.stream import Reconnected, Reconnecting
from coordlib.testing import SSHServer

from .conftest import Setup

pytestmark = pytest.mark.ssh


def arun(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_hung_machine_costs_its_timeout_and_says_so(setup: Setup, sshd_factory: Any) -> None:
    good: SSHServer = sshd_factory()
    hung: SSHServer = sshd_factory()
    setup.add_ssh(good, "good", env={"FAKE_CLAUDE_SCENARIO": "stall"})
    setup.add_ssh(hung, "hung", connect_timeout="2s")
    assert hung.proc is not None
    os.kill(hung.proc.pid, signal.SIGSTOP)  # it accepts the TCP connection, then says nothing
    try:
        heard: list[tuple[str, str, float]] = []

        async def go() -> Any:
            async with setup.coordinator() as c:
                a = await c.assign("good", "api", 1, title="works")
                t0 = time.monotonic()
                report = await c.status(
                    on_machine=lambda m: heard.append((m.name, m.state, time.monotonic() - t0))
                )
                return a, report, time.monotonic() - t0

        a, report, took = arun(go())
        assert took < 4.5, took
        states = {m.name: (m.state, m.reachable) for m in report.machines}
        assert states == {"good": ("up", True), "hung": ("timeout", False)}
        assert "no answer within 2 s" in next(m.error for m in report.machines if m.name == "hung")
        assert heard[0][0] == "good" and heard[0][2] < heard[1][2]  # heard as each answered
        data = report.to_dict()
        assert {m["name"]: m["state"] for m in data["machines"]} == {
            "good": "up",
            "hung": "timeout",
        }
        assert next(x for x in data["assignments"] if x["id"] == a.id)["reachable"] is True
    finally:
        os.kill(hung.proc.pid, signal.SIGCONT)


def test_rows_on_an_unreachable_machine_say_so_and_wait_says_why(
    setup: Setup, sshd_factory: Any, run_coord: Any
) -> None:
    server: SSHServer = sshd_factory()
    setup.add_ssh(server, "m2", env={"FAKE_CLAUDE_SCENARIO": "stall"}, connect_timeout="1s")
    config = setup.write()
    out = run_coord("assign", "m2", "api", "5", "--title", "far away", "--json", config=config)
    assert out.returncode == 0, out.stderr
    aid = json.loads(out.stdout)["id"]
    assert run_coord("status", config=config).returncode == 0  # a contact on record
    server.stop()
    try:
        text = run_coord("status", config=config).stdout
        line = next(ln for ln in text.splitlines() if ln.startswith(aid))
        assert "running?" in line and "m2 did not answer (refused); last contact" in line
        assert "m2               REFUSED" in text
        exact = json.loads(run_coord("status", "--json", config=config).stdout)
        assert exact["assignments"][0]["reachable"] is False
        assert exact["machines"][0]["state"] == "refused" and exact["machines"][0]["seen_at"]
        waited = run_coord("wait", aid, "--timeout", "2", config=config)
        assert waited.returncode == 2
        assert "its machine m2 is unreachable (refused" in waited.stderr
        assert "last contact" in waited.stderr
    finally:
        server.start()
        run_coord("stop", aid, config=config)


def test_a_listener_that_died_leaves_an_open_connection_working(
    setup: Setup, sshd_factory: Any
) -> None:
    server: SSHServer = sshd_factory()
    setup.add_ssh(server, "m1", env={"FAKE_CLAUDE_SCENARIO": "stall"})

    async def go() -> tuple[Any, Any]:
        async with setup.coordinator() as c:
            a = await c.assign("m1", "api", 6, title="still here")
            assert server.proc is not None
            server.proc.kill()  # the listener only: the session it serves goes on
            server.proc.wait()
            report = await c.status()
            await c.stop(a.id)
            return report, c.get(a.id)

    try:
        report, a = arun(go())
        assert report.machines[0].reachable and report.machines[0].state == "up"
        assert a.status == Status.STOPPED
    finally:
        server.proc = None
        server.start()


def test_a_missing_claude_command_is_named_with_its_machine_and_last_words(setup: Setup) -> None:
    setup.add_local("local", claude_command="/nonexistent/claude-code")

    async def go() -> Any:
        async with setup.coordinator() as c:
            a = await c.assign("local", "api", 7, title="no cli")
            return await c.wait(a.id, timeout=30)

    a = arun(go())
    assert a.status == Status.FAILED and a.failure_class == "claude_not_found"
    assert a.exit_code == 127
    assert "`/nonexistent/claude-code` was not found on local (exit 127: setsid:" in (a.error or "")
    assert "machines.local.claude_command" in (a.error or "")


def test_a_refused_dispatch_posts_nothing_and_labels_follow_the_newest_state(
    setup: Setup, run_coord: Any
) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok", "API_KEY": "${COORD_TEST_KEY}"})
    config = setup.write()
    made = run_coord("issue", "new", "api", "--title", "Refused first", "--label",
                     "status:ready", "--json", config=config)  # fmt: skip
    n = json.loads(made.stdout)["number"]
    env = {k: v for k, v in os.environ.items() if k != "COORD_TEST_KEY"}
    refused = subprocess.run(
        [sys.executable, "-m", "coord_cli", "--config", str(config), "assign", "local", "api",
         str(n)], capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert refused.returncode == 1 and "COORD_TEST_KEY" in refused.stderr
    # Out of the pipeline: a done worker's issue is done (in it, the test stage comes next).
    ok = run_coord("assign", "local", "api", str(n), "--json", "--no-pipeline", config=config,
                   env={"COORD_TEST_KEY": "sk-x"})  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    aid = json.loads(ok.stdout)["id"]
    assert run_coord("wait", aid, config=config).returncode == 0
    resumed = run_coord("resume", "--json", config=config)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["posted"] == []  # nothing left to post late
    issue = json.loads(run_coord("issue", "show", "api", str(n), "--json", config=config).stdout)
    stages = [(m["id"], m["stage"]) for m in parse_markers(c["body"] for c in issue["comments"])]
    assert stages == [(aid, "dispatch"), (aid, "done")]
    assert [x for x in issue["labels"] if x.startswith("status:")] == ["status:done"]
    # The refused one is kept, as what it was, out of the default view.
    status = run_coord("status", config=config).stdout
    assert "1 dispatch(es) that never started are not shown" in status
    shown = run_coord("status", "--all", config=config).stdout
    assert "dispatch_failed" in shown


def test_a_late_trail_post_never_moves_the_label_back(setup: Setup, run_coord: Any) -> None:
    """An ending posted late (the forge was down) while a newer attempt runs."""
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "fail"})
    config = setup.write()
    n = json.loads(run_coord("issue", "new", "api", "--title", "Twice", "--json",
                             config=config).stdout)["number"]  # fmt: skip

    async def go() -> Any:
        async with setup.coordinator() as c:
            first = await c.wait((await c.assign("local", "api", n)).id, timeout=30)
            # Its ending comment "was not posted": forget it, as a failed post does.
            c.board.trail_forget(first.id, lambda k, v: k == "failed")
            setup.machines[0]["env"] = {"FAKE_CLAUDE_SCENARIO": "stall"}
        async with setup.coordinator() as c:
            second = await c.retry(first.id)
            posted = await c.trail.post_pending(c.assignments())
            during = await c.forge("api").labels(n)
            await c.stop(second.id)
            return first, posted, during, await c.forge("api").labels(n)

    first, posted, during, after = arun(go())
    assert (first.id, "failed") in posted
    # The late "failed" of attempt 1 did not put status:ready back while attempt 2 ran; the
    # stop of attempt 2 then did.  One status label throughout.
    assert [x for x in during if x.startswith("status:")] == ["status:in-progress"]
    assert [x for x in after if x.startswith("status:")] == ["status:ready"]


def test_a_label_that_cannot_be_set_never_posts_the_comment_twice(
    setup: Setup, run_coord: Any
) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "fail"})
    config = setup.write()
    n = json.loads(run_coord("issue", "new", "api", "--title", "Labels down", "--json",
                             config=config).stdout)["number"]  # fmt: skip
    told: list[str] = []

    async def go() -> Any:
        async with setup.coordinator(notify=told.append) as c:
            a = await c.assign("local", "api", n, pipeline=False)

            async def refuse(number: int, labels: Any) -> Any:
                raise ForgeError("labels are down")

            c.forge("api").add_labels = refuse  # type: ignore[method-assign]
            a = await c.wait(a.id, timeout=30)
            return a, await c.trail.post_pending(c.assignments())

    a, late = arun(go())
    assert a.status == Status.FAILED and late == []
    assert any("could not be labelled status:ready: labels are down" in t for t in told), told
    comments = show_comments(run_coord, config, n)
    assert sum(f"`{a.id}` ended as **failed**" in c for c in comments) == 1


def show_comments(run_coord: Any, config: Any, n: int) -> list[str]:
    shown = json.loads(run_coord("issue", "show", "api", str(n), "--json", config=config).stdout)
    return [c["body"] for c in shown["comments"]]


def test_a_wait_on_a_hung_machine_keeps_to_its_own_timeout(
    setup: Setup, sshd_factory: Any, run_coord: Any
) -> None:
    server: SSHServer = sshd_factory()
    setup.add_ssh(server, "m3", env={"FAKE_CLAUDE_SCENARIO": "stall"}, connect_timeout="20s")
    config = setup.write()
    out = run_coord("assign", "m3", "api", "8", "--title", "hangs", "--json", config=config)
    aid = json.loads(out.stdout)["id"]
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        waited = run_coord("wait", aid, "--timeout", "2", config=config)
        took = time.monotonic() - t0
        assert waited.returncode == 2 and took < 8, (took, waited.stderr)  # not 20 s
        assert "its machine m3 is unreachable (timeout" in waited.stderr
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        run_coord("stop", aid, config=config)


def test_watch_says_when_it_reconnects(setup: Setup, sshd_factory: Any) -> None:
    server: SSHServer = sshd_factory()
    setup.add_ssh(server, "m2", env={"FAKE_CLAUDE_SCENARIO": "events", "FAKE_CLAUDE_EVENTS": "60",
                                     "FAKE_CLAUDE_RATE": "20"})  # fmt: skip

    async def go() -> list[Any]:
        async with setup.coordinator() as c:
            a = await c.assign("m2", "api", 8, title="events")
            seen: list[Any] = []
            async for event in c.watch(a.id):
                seen.append(event)
                if len(seen) == 10:
                    server.restart()
            return seen

    seen = arun(go())
    lost = [e for e in seen if isinstance(e, Reconnecting)]
    back = [e for e in seen if isinstance(e, Reconnected)]
    assert lost and back and seen.index(lost[0]) < seen.index(back[0])
    line = format_event(back[0]) or ""
    assert line.startswith("[reconnected] m2 after ") and "resuming at line" in line
    assert (format_event(lost[0]) or "").startswith("[reconnecting] m2: ")


def test_recovery_says_what_to_do_next(setup: Setup, run_coord: Any) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"})
    config = setup.write()
    aid = json.loads(run_coord("assign", "local", "api", "9", "--title", "x", "--json",
                               config=config).stdout)["id"]  # fmt: skip
    assert run_coord("wait", aid, config=config).returncode == 0
    dry = run_coord("clean", "-n", config=config).stdout
    assert "left alone: 1 ended assignment(s) younger than 7d (`--older-than 0`" in dry
    listed = run_coord("clean", "-n", "--older-than", "0", config=config).stdout
    assert f"{aid}" in listed and "would_remove" in listed
    (setup.root / ".coord" / "board.json").unlink()
    resumed = run_coord("resume", config=config).stdout
    assert f"runs not on the board: {aid}" in resumed
    assert "coord resume --from-forge" in resumed
    shown = run_coord("config", config=config).stdout
    assert "repos: all" in shown
    exact = json.loads(run_coord("config", "--json", config=config).stdout)
    assert exact["machines"]["local"]["repos"] == []


def test_the_note_column_is_cut_at_a_word() -> None:
    from coord_cli.status_cmds import _cut

    text = "the worker exited with status 1 and no result: Traceback (most recent call last)"
    cut = _cut(text + " and more words after that", 60)
    assert len(cut) <= 60 and cut.endswith("…") and not cut[:-1].endswith(" ")
    assert _cut("short") == "short"


def test_a_silent_connection_is_a_timeout_and_a_taken_branch_moves_the_retry_on() -> None:
    from coordlib.assignment import Assignment
    from coordlib.contacts import machine_state
    from coordlib.dispatch import _no_attempt
    from coordlib.errors import CommandTimeout

    assert machine_state(CommandTimeout("probe did not finish within 30 s", machine="m")) == (
        "timeout"
    )
    base = {"id": "api-1-abcd", "machine": "m", "repo": "api", "issue": 1, "branch": "b",
            "model": "x", "status": "failed", "failure_class": "dispatch_failed"}  # fmt: skip
    assert _no_attempt(Assignment.from_dict({**base, "error": "no tmux on m"}))
    taken = {**base, "error": "branch issue-1-x already exists in /src/api (finish or delete it)"}
    assert not _no_attempt(Assignment.from_dict(taken))  # the same name would fail again
    assert not _no_attempt(Assignment.from_dict({**base, "failure_class": "crashed"}))
