"""Pipeline hooks run real `sh` commands: payload on stdin, failures reported, never raised."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import time
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from coordlib.hooks import BUILTINS, HookResult, Hooks, render_summary, scrub

T = TypeVar("T")
PAYLOAD = {
    "event": "on_stage",
    "repo": "api",
    "issue": 42,
    "stage": "review",
    "assignment": "api-42-1f3a",
    "cost_usd": 0.12,
}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Notes(list[str]):
    """A notify callback that keeps what it was told."""

    def __call__(self, message: str) -> None:
        self.append(message)


def hooks(
    tmp_path: Path, commands: Mapping[str, Sequence[str]], **options: Any
) -> tuple[Hooks, Notes]:
    notes = Notes()
    return Hooks(commands, notify=notes, state_dir=tmp_path / "state", **options), notes


def q(path: Path) -> str:
    return shlex.quote(str(path))


def test_the_payload_arrives_on_stdin_with_the_event_in_the_environment(tmp_path: Path) -> None:
    got, env = tmp_path / "payload.json", tmp_path / "event.txt"
    command = f'cat > {q(got)}; printf %s "$COORD_EVENT" > {q(env)}; echo chatter'
    h, notes = hooks(tmp_path, {"on_stage": [command]})
    [result] = run(h.fire("on_stage", PAYLOAD))
    assert result == HookResult("on_stage", command, True, "exit 0", result.seconds)
    assert json.loads(got.read_text()) == PAYLOAD
    assert env.read_text() == "on_stage"
    assert notes == []


def test_the_event_argument_names_the_event_in_the_payload(tmp_path: Path) -> None:
    got = tmp_path / "payload.json"
    h, _ = hooks(tmp_path, {"on_done": [f"cat > {q(got)}"]})
    run(h.fire("on_done", {"event": "something else", "issue": 7}))
    assert json.loads(got.read_text()) == {"event": "on_done", "issue": 7}


def test_the_environment_is_the_one_given_plus_the_event(tmp_path: Path) -> None:
    got = tmp_path / "env.txt"
    environ = {"PATH": os.environ["PATH"], "ONLY_THIS": "yes"}
    h, _ = hooks(tmp_path, {"on_merge": [f"env > {q(got)}"]}, environ=environ)
    run(h.fire("on_merge", PAYLOAD))
    lines = set(got.read_text().splitlines())
    assert {"ONLY_THIS=yes", "COORD_EVENT=on_merge"} <= lines
    assert not any(line.startswith("HOME=") for line in lines)


def test_no_hooks_spawn_nothing(tmp_path: Path) -> None:
    h, notes = hooks(tmp_path, {"on_stage": [], "on_done": ["true"]})
    assert run(h.fire("on_stage", PAYLOAD)) == [] and run(h.fire("on_stuck", PAYLOAD)) == []
    assert (h.has("on_stage"), h.has("on_stuck"), h.has("on_done")) == (False, False, True)
    assert notes == []


def test_a_failing_and_a_missing_command_are_reported_not_raised(tmp_path: Path) -> None:
    failing = "echo first >&2; echo 'disk on fire' >&2; exit 4"
    missing = "coord-no-such-notifier --now"
    h, notes = hooks(tmp_path, {"on_failed": [failing, missing, "true"]})
    results = run(h.fire("on_failed", PAYLOAD))
    assert [r.ok for r in results] == [False, False, True]
    assert results[0].detail == "exit 4: disk on fire"
    assert results[1].detail.startswith("exit 127: ") and "not found" in results[1].detail
    assert notes == [
        f"hook on_failed `{failing}` failed: exit 4: disk on fire",
        f"hook on_failed `{missing}` failed: {results[1].detail}",
    ]


@pytest.mark.parametrize("command", ["sleep 60", "sh -c 'sleep 60 & wait'"])
def test_a_hook_past_its_timeout_is_killed_with_its_children(tmp_path: Path, command: str) -> None:
    pids = tmp_path / "pids"
    # Record the group's pids, so the test can see that none of them outlives the timeout.
    h, notes = hooks(tmp_path, {"on_review": [f"echo $$ > {q(pids)}; {command}"]}, timeout=0.5)
    started = time.monotonic()
    [result] = run(h.fire("on_review", PAYLOAD))
    assert time.monotonic() - started < 3
    assert not result.ok and result.detail == "timed out after 0.5 s (killed)"
    assert notes == [f"hook on_review `{result.hook}` failed: {result.detail}"]
    group = int(pids.read_text())
    deadline = time.monotonic() + 2
    while _group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group_alive(group), "a process of the hook's group survived the timeout"


def test_a_hook_is_done_when_it_exits_even_if_a_child_it_left_holds_stderr(
    tmp_path: Path,
) -> None:
    pids = tmp_path / "pids"
    h, notes = hooks(tmp_path, {"on_merge": [f"echo $$ > {q(pids)}; sleep 30 & exit 0"]})
    started = time.monotonic()
    try:
        [result] = run(h.fire("on_merge", PAYLOAD))
        assert result.ok and notes == [] and time.monotonic() - started < 3
    finally:
        os.killpg(int(pids.read_text()), signal.SIGKILL)


def test_cancelling_fire_kills_the_hooks(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    h, _ = hooks(tmp_path, {"on_stage": [f"echo $$ > {q(pids)}; sleep 60"]})
    with pytest.raises(TimeoutError):
        run(asyncio.wait_for(h.fire("on_stage", PAYLOAD), 0.5))
    time.sleep(0.2)
    assert not _group_alive(int(pids.read_text()))


def _group_alive(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def test_hooks_of_one_event_run_at_the_same_time(tmp_path: Path) -> None:
    h, notes = hooks(tmp_path, {"on_done": ["sleep 1", "sleep 1"]})
    started = time.monotonic()
    results = run(h.fire("on_done", PAYLOAD))
    elapsed = time.monotonic() - started
    assert [r.ok for r in results] == [True, True] and notes == []
    assert 0.9 < elapsed < 1.8


def test_secrets_are_scrubbed_at_every_depth(tmp_path: Path) -> None:
    payload = {
        "issue": 42,
        "api_key": "sk-top",
        "GitHub_Token": "ghp_x",
        "worker": {"password": "p", "name": "w1", "env": {"AWS_SECRET_ACCESS_KEY": "s"}},
        "runs": [{"session_token": "t", "cost_usd": 0.5}, "plain", ["nested", {"Secret": 1}]],
    }
    clean = {
        "issue": 42,
        "worker": {"name": "w1", "env": {}},
        "runs": [{"cost_usd": 0.5}, "plain", ["nested", {}]],
    }
    assert scrub(payload) == clean
    got = tmp_path / "payload.json"
    h, _ = hooks(tmp_path, {"on_dispatch": [f"cat > {q(got)}"]})
    run(h.fire("on_dispatch", payload))
    assert json.loads(got.read_text()) == {"event": "on_dispatch", **clean}
    for secret in ("sk-top", "ghp_x", "session_token", "AWS_SECRET"):
        assert secret not in got.read_text()


def test_shell_metacharacters_in_values_never_execute(tmp_path: Path) -> None:
    canary, got = tmp_path / "pwned", tmp_path / "payload.json"
    evil = f"$(touch {canary}) `touch {canary}`; touch {canary} && echo '\" | sh"
    payload = {"stage": evil, "title": f"'; touch {canary}; '", "nested": {"x": evil}}
    command = f'cat > {q(got)}; echo "$(jq -r .stage 2>/dev/null)" > /dev/null'
    h, notes = hooks(tmp_path, {"on_stage": [command]})
    [result] = run(h.fire("on_stage", payload))
    assert result.ok and notes == []
    assert json.loads(got.read_text()) == {"event": "on_stage", **payload}
    assert not canary.exists()


def test_summary_report_writes_markdown_and_notifies_its_path(tmp_path: Path) -> None:
    summary = {
        "issues_advanced": 3,
        "ready_to_merge": ["api#42", "web#7"],
        "stuck": [{"issue": "api#43", "why": "needs the staging key | asap"}],
        "cost_per_issue": {"api#42": 0.1234, "web#7": 1.5},
        "cost_per_tier": {"opus": {"cost_usd": 1.5, "runs": 2}, "sonnet": {"cost_usd": 0.25}},
        "api_key": "sk-never",
        "notes": [],
    }
    assert "summary_report" in BUILTINS
    h, notes = hooks(tmp_path, {"on_session_end": ["summary_report"]})
    [result] = run(h.fire("on_session_end", {"repo": "api", "summary": summary}))
    assert result.ok
    path = Path(result.detail)
    assert path.parent == tmp_path / "state" / "reports"
    assert re.fullmatch(r"summary-\d{8}-\d{6}\.md", path.name)
    assert notes == [f"summary report: {path}"]
    text = path.read_text()
    for expected in (
        "- Repo: api",
        "- Issues advanced: 3",
        "## Ready to merge",
        "- api#42",
        "| Issue | Why |",
        "| api#43 | needs the staging key \\| asap |",
        "- api#42: $0.12",
        "- web#7: $1.50",
        "| opus | $1.50 | 2 |",
        "| sonnet | $0.25 |  |",
        "## Notes\n\nNone.",
    ):
        assert expected in text, expected
    assert "sk-never" not in text and "Api key" not in text

    [again] = run(h.fire("on_session_end", {"summary": summary}))
    assert again.ok and again.detail != result.detail  # a second report never overwrites


def test_a_summary_without_a_summary_still_reports() -> None:
    from datetime import datetime

    text = render_summary({"event": "on_session_end"}, datetime(2025, 1, 2, 3, 4, 5))
    assert text == "# Summary (on_session_end, 2025-01-02 03:04:05)\n\nNo summary in this event.\n"


def test_a_builtin_that_fails_is_reported(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("a file where the folder should be")
    h, notes = hooks(tmp_path, {"on_session_end": ["summary_report"]})
    [result] = run(h.fire("on_session_end", {"summary": {"x": 1}}))
    assert not result.ok and result.detail.startswith("NotADirectoryError")
    assert notes == [f"hook on_session_end `summary_report` failed: {result.detail}"]


def test_a_notify_that_raises_does_not_break_fire(tmp_path: Path) -> None:
    def broken(message: str) -> None:
        raise RuntimeError("notifier down")

    h = Hooks({"on_failed": ["exit 1"]}, notify=broken, state_dir=tmp_path)
    [result] = run(h.fire("on_failed", PAYLOAD))
    assert not result.ok and result.detail == "exit 1"
