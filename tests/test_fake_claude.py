"""The fake `claude -p` speaks stream-json that coordlib.stream reads like the real CLI's."""

from __future__ import annotations

import hashlib
import json
import os
import select
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import coordlib.testing
from coordlib.assignment import Status
from coordlib.event_view import format_event
from coordlib.outcomes import classify
from coordlib.progress import fold
from coordlib.stream import (
    ApiRetry,
    Event,
    Init,
    Malformed,
    Progress,
    Result,
    ToolResult,
    ToolUse,
    parse_line,
    parse_lines,
)

FAKE = Path(coordlib.testing.__file__).with_name("fake_claude.py")
TITLE = "Fix issue 7: expired tokens pass the check"
PROMPT = f"{TITLE}\n\nThe middleware accepts expired tokens."
MODEL = "claude-sonnet-4-5-20250929"


def argv(*extra: str, prompt: str = PROMPT) -> list[str]:
    return [
        str(FAKE),
        "-p",
        prompt,
        "--output-format",
        "stream-json",
        "--verbose",
        "--model",
        MODEL,
        "--allowedTools",
        "Read,Edit,Write,Bash",
        *extra,
    ]


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "commit", "-q", "--allow-empty", "-m", "initial")
    return path


def environment(scenario: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_CLAUDE_")}
    return env | {"FAKE_CLAUDE_SCENARIO": scenario} | extra


def run(
    repo: Path, scenario: str, *extra_argv: str, prompt: str = PROMPT, **extra_env: str
) -> tuple[subprocess.CompletedProcess[bytes], list[Event]]:
    proc = subprocess.run(
        argv(*extra_argv, prompt=prompt),
        cwd=repo,
        env=environment(scenario, **extra_env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        check=False,
    )
    events = list(parse_lines(proc.stdout.splitlines()))
    assert not [e for e in events if isinstance(e, Malformed)]
    return proc, events


def test_ok_writes_commits_and_reports(repo: Path) -> None:
    proc, events = run(repo, "ok")
    assert proc.returncode == 0, proc.stderr
    init = events[0]
    assert isinstance(init, Init)
    assert uuid.UUID(init.session_id or "")
    assert (init.model, init.version, init.cwd) == (MODEL, "fake-1", str(repo))
    assert isinstance(events[-1], Result)

    assert [format_event(e) for e in events if format_event(e) is not None] == [
        f"[init] model={MODEL} session={init.session_id}",
        "[status] reading the issue",
        "[tool] Write fake_claude_output.txt",
        f'[tool] Bash git add -A && git commit -m "coord: {TITLE}"',
        "[status] done",
        format_event(events[-1]),
    ]
    progress = fold(events)
    assert progress.turns == 3 and progress.session_id == init.session_id
    assert progress.result is not None and progress.result.total_cost_usd
    assert progress.result.permission_denials == () and progress.result.usage["output_tokens"]
    assert classify(exit_code=0, exit_reason="exited", result=progress.result) == (
        Status.DONE,
        None,
    )

    written = (repo / "fake_claude_output.txt").read_text()
    assert TITLE in written
    assert git(repo, "log", "-1", "--format=%s|%an|%ae") == (
        f"coord: {TITLE}|coord-worker|worker@coord.invalid"
    )
    assert git(repo, "status", "--porcelain") == ""


def test_ok_honours_the_output_file_and_resume(repo: Path) -> None:
    session = str(uuid.uuid4())
    proc, events = run(repo, "ok", "--resume", session, FAKE_CLAUDE_FILE="notes/out.md")
    assert proc.returncode == 0, proc.stderr
    assert (repo / "notes" / "out.md").is_file()
    assert fold(events).session_id == session
    assert next(e.summary for e in events if isinstance(e, ToolUse)) == "notes/out.md"


def test_fail_crashes_without_a_result(repo: Path) -> None:
    proc, events = run(repo, "fail")
    assert proc.returncode == 3
    assert b"simulated crash" in proc.stderr
    assert [type(e) for e in events] == [Init]
    progress = fold(events)
    assert progress.result is None
    assert classify(exit_code=3, exit_reason="exited", result=progress.result) == (
        Status.FAILED,
        "crashed",
    )


def test_events_are_numbered_stamped_and_paced(repo: Path) -> None:
    count, rate = 20, 200.0
    proc, events = run(repo, "events", FAKE_CLAUDE_EVENTS=str(count), FAKE_CLAUDE_RATE=str(rate))
    assert proc.returncode == 0, proc.stderr
    ticks = [e for e in events if isinstance(e, Progress)]
    assert [t.text for t in ticks] == [f"tick {n}" for n in range(1, count + 1)]
    assert [t.raw["seq"] for t in ticks] == list(range(1, count + 1))
    stamps = [t.raw["ts"] for t in ticks]
    assert stamps == sorted(stamps)
    assert stamps[-1] - stamps[0] >= (count - 1) / rate * 0.9
    progress = fold(events)
    assert progress.turns == count
    assert classify(exit_code=0, exit_reason="exited", result=progress.result) == (
        Status.DONE,
        None,
    )


def test_error_result_is_an_exhausted_retry(repo: Path) -> None:
    proc, events = run(repo, "error_result", CLAUDE_CODE_MAX_RETRIES="2")
    assert proc.returncode == 1
    assert [e.attempt for e in events if isinstance(e, ApiRetry)] == [1, 2]
    result = fold(events).result
    assert result is not None
    assert (result.subtype, result.is_error, result.api_error_status) == ("success", True, 529)
    assert classify(exit_code=1, exit_reason="exited", result=result) == (
        Status.FAILED,
        "overloaded",
    )


def test_env_reports_digests_never_values(repo: Path) -> None:
    secret = "ghp_" + uuid.uuid4().hex
    proc, _ = run(
        repo,
        "env",
        FAKE_CLAUDE_REPORT_ENV="COORD_TEST_SECRET, COORD_TEST_ABSENT",
        COORD_TEST_SECRET=secret,
    )
    assert proc.returncode == 0, proc.stderr
    text = (repo / "fake_claude_output.txt").read_text()
    assert json.loads(text) == {
        "COORD_TEST_ABSENT": {"set": False, "sha256": None},
        "COORD_TEST_SECRET": {"set": True, "sha256": hashlib.sha256(secret.encode()).hexdigest()},
    }
    assert secret not in text and secret.encode() not in proc.stdout


def test_argv_log_records_the_command(repo: Path, tmp_path: Path) -> None:
    log = tmp_path / "argv.jsonl"
    for _ in range(2):
        proc, _events = run(repo, "ok", "--max-turns", "5", FAKE_CLAUDE_ARGV_LOG=str(log))
        assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [argv("--max-turns", "5")] * 2


@pytest.mark.parametrize(
    ("argv_", "message"),
    [
        ([str(FAKE), "-p", "x", "--output-format", "stream-json"], b"requires --verbose"),
        ([str(FAKE), "-p", "--output-format", "stream-json", "--verbose"], b"Input must be"),
    ],
)
def test_refuses_command_lines_the_real_cli_refuses(
    repo: Path, argv_: list[str], message: bytes
) -> None:
    proc = subprocess.run(
        argv_, cwd=repo, env=environment("ok"), capture_output=True, timeout=30, check=False
    )
    assert proc.returncode == 1 and message in proc.stderr and proc.stdout == b""


def running(repo: Path, scenario: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv(),
        cwd=repo,
        env=environment(scenario),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        bufsize=0,  # unbuffered, so select() sees exactly what has not been read yet
    )


def read_events(proc: subprocess.Popen[bytes], until: type) -> Iterator[Event]:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        assert line, "the fake closed its output early"
        for event in parse_line(line):
            yield event
            if isinstance(event, until):
                return


def silent_for(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], seconds)
    return not readable


def test_linger_stays_alive_after_its_result(repo: Path) -> None:
    with running(repo, "linger") as proc:
        try:
            events = list(read_events(proc, Result))
            assert silent_for(proc, 0.3) and proc.poll() is None
        finally:
            proc.kill()
    result = fold(events).result
    assert classify(exit_code=proc.returncode, exit_reason="result_grace_kill", result=result) == (
        Status.DONE,
        None,
    )


def test_stall_goes_silent_after_one_status(repo: Path) -> None:
    with running(repo, "stall") as proc:
        try:
            events = list(read_events(proc, Progress))
            assert silent_for(proc, 0.3) and proc.poll() is None
        finally:
            proc.kill()
    assert [format_event(e) for e in events][1:] == [None, "[status] about to stall"]
    assert classify(exit_code=proc.returncode, exit_reason="stalled", result=None) == (
        Status.FAILED,
        "stalled",
    )


def test_slow_waits_before_its_result(repo: Path) -> None:
    started = time.monotonic()
    proc, events = run(repo, "slow", FAKE_CLAUDE_DELAY="0.3")
    assert proc.returncode == 0 and isinstance(events[-1], Result)
    assert time.monotonic() - started >= 0.3


def test_a_prompt_marker_beats_the_environment(repo: Path) -> None:
    proc, events = run(repo, "fail", prompt=f"{PROMPT}\n[fake:ok]")
    assert proc.returncode == 0, proc.stderr
    assert isinstance(events[-1], Result) and git(repo, "status", "--porcelain") == ""
    assert git(repo, "log", "-1", "--format=%s") == f"coord: {TITLE}"


def test_the_last_marker_wins_and_its_arg_is_the_content(repo: Path) -> None:
    prompt = f"[fake:fail] {TITLE}\n\nquoted: [fake:stall]\n[fake:ok:hello, world 1.2-x_y]"
    proc, _ = run(repo, "stall", prompt=prompt)
    assert proc.returncode == 0, proc.stderr
    assert (repo / "fake_claude_output.txt").read_text() == "hello, world 1.2-x_y\n"


def test_a_name_in_the_arg_picks_the_file(repo: Path) -> None:
    proc, _ = run(repo, "ok", prompt=f"{TITLE} [fake:ok:feature-2.txt=two]")
    assert proc.returncode == 0, proc.stderr
    assert (repo / "feature-2.txt").read_text() == "two\n"
    assert not (repo / "fake_claude_output.txt").exists()


def test_a_marker_beats_the_resume_scenario_too(repo: Path) -> None:
    proc, _ = run(
        repo,
        "ok",
        "--resume",
        str(uuid.uuid4()),
        prompt="Carry on. [fake:slow:resumed]",
        FAKE_CLAUDE_RESUME_SCENARIO="fail",
        FAKE_CLAUDE_DELAY="0",
    )
    assert proc.returncode == 0, proc.stderr
    assert (repo / "fake_claude_output.txt").read_text() == "resumed\n"


def test_an_unknown_marker_is_refused(repo: Path) -> None:
    proc, events = run(repo, "ok", prompt="[fake:nonsense]")
    assert proc.returncode == 2 and events == []
    assert b"unknown scenario 'nonsense'" in proc.stderr


def test_ok_always_has_something_to_commit(repo: Path) -> None:
    """A second (and third) worker on the same branch writing the same content still commits."""
    prompt = f"{TITLE} [fake:ok:same]"
    for _ in range(3):
        proc, events = run(repo, "ok", prompt=prompt)
        assert proc.returncode == 0, proc.stderr
        assert not any(isinstance(e, ToolResult) and e.is_error for e in events)
    assert (repo / "fake_claude_output.txt").read_text() == "same\nagain 1\nagain 2\n"
    assert git(repo, "rev-list", "--count", "HEAD") == "4"
    assert git(repo, "status", "--porcelain") == ""


@pytest.mark.parametrize(
    ("scenario", "text"),
    [
        (
            "approve",
            "The change does what the issue asks.\nVERDICT: approve\n1. Nothing blocking.",
        ),
        (
            "request_changes",
            "The greeting is wrong.\nVERDICT: request-changes\n"
            "1. hello.txt:1 must say hello, not broken.\n2. Add a test.",
        ),
        ("no_verdict", "I looked at it and it seems fine."),
    ],
)
def test_reviewers_read_the_history_and_give_a_verdict_without_committing(
    repo: Path, scenario: str, text: str
) -> None:
    head = git(repo, "rev-parse", "HEAD")
    for how in ({"scenario": scenario}, {"scenario": "ok", "prompt": f"Review. [fake:{scenario}]"}):
        proc, events = run(repo, **how)
        assert proc.returncode == 0, proc.stderr
        shown = [format_event(e) for e in events if format_event(e) is not None]
        assert shown[1:3] == ["[status] reviewing the change", "[tool] Bash git log --oneline -3"]
        assert len(shown) == 4 and isinstance(events[-1], Result)
        [log] = [e for e in events if isinstance(e, ToolResult)]
        assert not log.is_error and log.text == git(repo, "log", "--oneline", "-3")
        result = fold(events).result
        assert result is not None and (result.result, result.is_error) == (text, False)
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "status", "--porcelain") == ""


def test_stuck_asks_and_ends_its_turn(repo: Path) -> None:
    line = "STUCK: I need the staging API key to run the integration tests"
    proc, events = run(repo, "stuck")
    assert proc.returncode == 0, proc.stderr
    assert [(e.kind, e.text) for e in events if isinstance(e, Progress)] == [
        ("STATUS", "reading"),
        ("STUCK", "I need the staging API key to run the integration tests"),
    ]
    progress = fold(events)
    assert progress.last_status == line
    assert progress.result is not None
    assert (progress.result.result, progress.result.is_error) == (line, False)
    assert git(repo, "status", "--porcelain") == ""
