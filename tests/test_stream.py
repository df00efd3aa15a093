"""Parsing, showing, folding and classifying Claude Code stream-json (coordlib.stream)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordlib.assignment import Status
from coordlib.event_view import format_event
from coordlib.outcomes import FAILURE_CLASSES, FailureClass, classify
from coordlib.progress import RunProgress, fold
from coordlib.stream import (
    ApiRetry,
    AssistantText,
    Event,
    Init,
    Malformed,
    Other,
    Progress,
    RateLimit,
    Result,
    ToolResult,
    ToolUse,
    parse_line,
    parse_lines,
)

FIXTURES = Path(__file__).parent / "fixtures" / "stream"
CWD = "/root/.coord/worktrees/webapp/a1b2c3"
SID = "5f0c2a9e-3d41-4b7e-9a62-0c8e1f4d7b35"


def load(name: str) -> list[Event]:
    return list(parse_lines(FIXTURES.joinpath(name).read_bytes().splitlines()))


def shown(events: list[Event], *, verbose: bool = False) -> list[str]:
    return [line for e in events if (line := format_event(e, verbose=verbose)) is not None]


def assistant(*blocks: dict[str, Any], message_id: str = "msg_1") -> str:
    return json.dumps({"type": "assistant", "message": {"id": message_id, "content": list(blocks)}})


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def result(**fields: Any) -> Result:
    base: dict[str, Any] = {
        "subtype": "success",
        "is_error": False,
        "api_error_status": None,
        "duration_ms": 1000,
        "num_turns": 1,
        "result": "",
        "session_id": "s",
        "total_cost_usd": 0.0,
        "usage": {},
        "permission_denials": (),
    }
    return Result(**(base | fields))


def error(**fields: Any) -> Result:
    return result(is_error=True, result=None, **fields)


# -- parsing ----------------------------------------------------------------------------------


def test_success_run_parses_into_typed_events_in_order() -> None:
    events = load("success.jsonl")
    assert [type(e).__name__ for e in events] == [
        "Init",
        "RateLimit",
        "AssistantText",
        "Progress",
        "ToolUse",
        "ToolResult",
        "ToolUse",
        "ToolResult",
        "AssistantText",
        "Progress",
        "Progress",
        "Result",
    ]
    init = events[0]
    assert isinstance(init, Init)
    assert (init.session_id, init.model, init.cwd, init.version) == (
        SID,
        "claude-sonnet-4-5-20250929",
        CWD,
        "2.1.197",
    )
    assert "Edit" in init.tools and init.raw["type"] == "system"

    edit = events[4]
    assert isinstance(edit, ToolUse)
    assert edit.name == "Edit" and edit.tool_use_id == "toolu_01Edit"
    assert edit.message_id == "msg_01AbCdEfGh1" == getattr(events[2], "message_id", None)
    assert edit.input["file_path"] == f"{CWD}/auth/middleware.py"
    assert edit.summary == "auth/middleware.py"  # cwd learnt from the init event

    tool_result = events[5]
    assert isinstance(tool_result, ToolResult)
    assert tool_result.tool_use_id == "toolu_01Edit" and not tool_result.is_error
    assert "has been updated" in tool_result.text

    final = events[-1]
    assert isinstance(final, Result)
    assert final.subtype == "success" and final.is_error is False
    assert final.api_error_status is None
    assert (final.duration_ms, final.num_turns, final.total_cost_usd) == (12345, 5, 0.0123)
    assert final.session_id == SID and final.usage["output_tokens"] == 412
    assert final.permission_denials == ()


def test_progress_follows_its_text_one_per_marked_line() -> None:
    line = assistant(
        text("Looking.\nSTATUS: reading tests\nnot a marker\nSTUCK: no test database"),
        {"type": "tool_use", "id": "t1", "name": "Read", "input": {"file_path": "/r/a.py"}},
    )
    events = parse_line(line)
    assert events == [
        AssistantText(
            "Looking.\nSTATUS: reading tests\nnot a marker\nSTUCK: no test database", "msg_1"
        ),
        Progress("STATUS", "reading tests"),
        Progress("STUCK", "no test database"),
        ToolUse("Read", {"file_path": "/r/a.py"}, "t1", "msg_1"),
    ]
    assert all(e.raw == json.loads(line) for e in events if not isinstance(e, Malformed))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("STATUS: plain", [("STATUS", "plain")]),
        ("  STATUS:tight  ", [("STATUS", "tight")]),
        ("- **STATUS:** in a list, in bold", [("STATUS", "in a list, in bold")]),
        ("**STUCK**: bold word", [("STUCK", "bold word")]),
        ("Status: prose, not a report", []),
        ("The STATUS: mid-line is not a report", []),
        ("STATUS:", []),
    ],
)
def test_progress_markers(line: str, expected: list[tuple[str, str]]) -> None:
    events = parse_line(assistant(text(line)))
    assert [(e.kind, e.text) for e in events if isinstance(e, Progress)] == expected


def test_blank_lines_yield_nothing() -> None:
    assert parse_line("") == []
    assert parse_line("  \r\n") == []
    assert parse_line(b"\n") == []


def test_bytes_decode_as_utf8_with_replacement() -> None:
    good = parse_line(assistant(text("STATUS: café")).encode())
    assert good[-1] == Progress("STATUS", "café")
    bad = parse_line(b'{"type":"result","subtype":"success","result":"\xff"}')
    assert isinstance(bad[0], Result) and bad[0].result == "\ufffd"


def test_other_events_keep_type_and_subtype() -> None:
    line = '{"type":"system","subtype":"compact_boundary","session_id":"s1"}'
    assert parse_line(line) == [Other("system", "compact_boundary")]
    thinking = parse_line(assistant({"type": "thinking", "thinking": "hmm"}))
    assert thinking == [Other("assistant", "thinking")]
    assert parse_line('{"type":"stream_event","event":{}}') == [Other("stream_event", None)]
    assert parse_line('{"no_type": true}') == [Other("", None)]


def test_user_events_without_tool_results() -> None:
    line = '{"type":"user","message":{"role":"user","content":"a replayed prompt"}}'
    assert parse_line(line) == [Other("user", "text")]
    content = [{"type": "text", "text": "Exit code 1"}, {"type": "image"}]
    blocks = [{"type": "tool_result", "tool_use_id": "t", "is_error": True, "content": content}]
    events = parse_line(json.dumps({"type": "user", "message": {"content": blocks}}))
    assert events == [ToolResult("t", True, "Exit code 1")]


def test_api_retry_fields() -> None:
    (retry,) = load("overloaded.jsonl")[1:2]
    assert retry == ApiRetry(1, 3, 566.3, 529, "overloaded")


@pytest.mark.parametrize(
    "line",
    [
        '{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1784979600,'
        '"rateLimitType":"five_hour","overageStatus":"rejected","isUsingOverage":false}}',
        '{"type":"system","subtype":"rate_limit","status":"rejected","resets_at":1784979600000,'
        '"rate_limit_type":"five_hour","overage_status":"rejected","is_using_overage":false}',
    ],
)
def test_rate_limit_in_either_shape(line: str) -> None:
    (event,) = parse_line(line)
    assert event == RateLimit("rejected", 1784979600.0, "five_hour", "rejected", False)
    assert format_event(event) == "[rate-limit] rejected (five_hour) until 2026-07-25 11:40 UTC"


@pytest.mark.parametrize("resets_at", ["NaN", "Infinity", "-5", "1e30", '"soon"', "true"])
def test_rate_limit_with_an_unusable_reset_time(resets_at: str) -> None:
    info = f'{{"status":"rejected","resetsAt":{resets_at}}}'
    line = f'{{"type":"rate_limit_event","rate_limit_info":{info}}}'
    (event,) = parse_line(line)
    assert isinstance(event, RateLimit) and event.resets_at is None
    assert format_event(event) == "[rate-limit] rejected"
    assert fold([event]).rate_limited_until is None


def test_result_without_is_error_falls_back_to_subtype() -> None:
    (ok,) = parse_line('{"type":"result","subtype":"success"}')
    (bad,) = parse_line('{"type":"result","subtype":"error_during_execution"}')
    assert isinstance(ok, Result) and isinstance(bad, Result)
    assert (ok.is_error, bad.is_error) == (False, True)
    assert (ok.usage, ok.num_turns, ok.total_cost_usd) == ({}, None, None)


def test_malformed_fixture_keeps_every_good_event() -> None:
    events = load("malformed.jsonl")
    malformed = [e for e in events if isinstance(e, Malformed)]
    assert len(malformed) == 7
    assert all(e.error for e in malformed)
    assert {e.line for e in malformed} >= {"[1, 2, 3]", "null", '"just a string"'}
    assert isinstance(events[0], Init) and isinstance(events[-1], Result)
    assert sum(isinstance(e, Progress) for e in events) == 1


@pytest.mark.parametrize(
    "line",
    [
        "{",
        "[]",
        "1",
        "true",
        "}{",
        '{"type": 1}',
        '{"type":"assistant","message":"not a dict"}',
        '{"type":"assistant","message":{"content":[1,"x",null,{"type":7}]}}',
        '{"type":"assistant","message":{"content":[{"type":"tool_use","input":[1],"name":9}]}}',
        '{"type":"user","message":{"content":[{"type":"tool_result","content":{"x":1}}]}}',
        '{"type":"result","num_turns":"7","duration_ms":1e400,"total_cost_usd":"x","usage":[]}',
        '{"type":"system","subtype":"init","tools":"Bash"}',
        '{"type":"rate_limit_event","rate_limit_info":[]}',
        "[" * 100_000,
        '{"n": ' + "9" * 5000 + "}",
        "\x00\x01 binary",
    ],
)
def test_odd_lines_never_raise(line: str) -> None:
    events = parse_line(line)
    assert events
    for event in events:
        assert format_event(event, verbose=True) is not None
    fold(events)


@given(st.text())
def test_any_text_never_raises(line: str) -> None:
    parse_line(line)


@given(st.binary())
def test_any_bytes_never_raise(line: bytes) -> None:
    parse_line(line)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(
    st.sampled_from(["system", "assistant", "user", "result", "rate_limit_event", "x"]),
    st.dictionaries(
        st.sampled_from(["subtype", "message", "content", "rate_limit_info", "is_error",
                         "num_turns", "session_id", "tools", "attempt", "usage"]),
        json_values,
    ),
)  # fmt: skip
def test_any_json_object_never_raises(kind: str, fields: dict[str, Any]) -> None:
    events = parse_line(json.dumps({"type": kind, **fields}))
    for event in events:
        format_event(event, verbose=True)
    fold(events)


# -- tool summaries ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "tool_input", "cwd", "summary"),
    [
        ("Edit", {"file_path": "/w/auth/middleware.py"}, "/w", "auth/middleware.py"),
        ("Write", {"file_path": "/w/x.txt", "content": "x"}, "/w/", "x.txt"),
        ("Read", {"file_path": "/elsewhere/x.py"}, "/w", "/elsewhere/x.py"),
        ("Read", {"file_path": "/wx/x.py"}, "/w", "/wx/x.py"),
        ("MultiEdit", {"file_path": "rel/x.py", "edits": []}, "/w", "rel/x.py"),
        ("NotebookEdit", {"notebook_path": "/w/n.ipynb"}, "/w", "n.ipynb"),
        ("Edit", {"file_path": "/w/a.py"}, None, "/w/a.py"),
        ("Bash", {"command": 'git commit -m "fix: x"'}, None, 'git commit -m "fix: x"'),
        ("Bash", {"command": "cd /w\nmake test", "description": "d"}, None, "cd /w …"),
        ("Bash", {"command": "x" * 150}, None, "x" * 99 + "…"),
        ("Grep", {"pattern": "def expired", "path": "/w"}, None, "def expired"),
        ("Glob", {"pattern": "**/*.py"}, None, "**/*.py"),
        ("WebFetch", {"url": "https://example.com", "prompt": "p"}, None, "https://example.com"),
        ("Task", {"prompt": "long", "description": "Find callers"}, None, "Find callers"),
        ("TodoWrite", {"todos": [{"content": "x"}]}, None, ""),
        ("mcp__db__query", {"limit": 3, "sql": "select 1"}, None, "select 1"),
    ],
)
def test_tool_summary(name: str, tool_input: dict[str, Any], cwd: str | None, summary: str) -> None:
    assert ToolUse(name, tool_input, "t", "m", cwd=cwd).summary == summary


def test_parse_line_takes_cwd_for_a_watcher_that_missed_the_init() -> None:
    block = {"type": "tool_use", "id": "t", "name": "Edit", "input": {"file_path": "/w/a/b.py"}}
    (tool,) = parse_line(assistant(block), cwd="/w")
    assert format_event(tool) == "[tool] Edit a/b.py"


# -- showing ----------------------------------------------------------------------------------


def test_watch_view_of_a_successful_run() -> None:
    assert shown(load("success.jsonl")) == [
        f"[init] model=claude-sonnet-4-5-20250929 session={SID}",
        "[status] reading the issue and auth/middleware.py",
        "[tool] Edit auth/middleware.py",
        '[tool] Bash git add -A && git commit -m "fix: x"',
        "[status] committed the fix",
        "[status] done",
        "[result] ok in 12.3s, 5 turns, $0.0123",
    ]


def test_verbose_view_shows_everything() -> None:
    lines = shown(load("success.jsonl"), verbose=True)
    assert len(lines) == len(load("success.jsonl"))
    assert "[rate-limit] allowed (five_hour) until 2026-07-25 11:40 UTC" in lines
    assert "[text] I'll look at the middleware first. …" in lines
    assert "[tool-result] ok [issue-7-fix-x 3f9a1c2] fix: x …" in lines
    assert format_event(Other("system", "compact_boundary"), verbose=True) == (
        "[event] system/compact_boundary"
    )
    assert format_event(Other("stream_event", None), verbose=True) == "[event] stream_event"
    assert format_event(ToolResult("t", True, "Exit code 1\nboom"), verbose=True) == (
        "[tool-result] error Exit code 1 …"
    )


def test_watch_view_of_failed_runs() -> None:
    assert shown(load("overloaded.jsonl"))[1:] == [
        "[retry] attempt 1/3 in 0.6s (529 overloaded)",
        "[retry] attempt 2/3 in 1.2s (529 overloaded)",
        "[retry] attempt 3/3 in 2.4s (529 overloaded)",
        "[result] error (api 529) in 5.1s, 1 turn, $0.0000: API Error: Repeated 529 Overloaded "
        'errors · {"type":"error","error":{"type":"overloaded_error","mes…',
    ]
    assert shown(load("max_turns.jsonl"))[-1] == (
        "[result] error (error_max_turns) in 8.0s, 3 turns, $0.0087"
    )
    assert shown(load("server_down.jsonl"))[-1] == (
        "[result] error in 3.3s, 1 turn, $0.0000: API Error: Connection error."
    )


@pytest.mark.parametrize(
    ("event", "line"),
    [
        (
            result(duration_ms=754_000, num_turns=31, total_cost_usd=1.5),
            "[result] ok in 12m34s, 31 turns, $1.5000",
        ),
        (result(duration_ms=7_500_000), "[result] ok in 2h05m, 1 turn, $0.0000"),
        (result(duration_ms=None, total_cost_usd=None), "[result] ok, 1 turn"),
        (error(api_error_status=401), "[result] error (api 401) in 1.0s, 1 turn, $0.0000"),
        (ApiRetry(None, None, None, None, None), "[retry] attempt ?"),
        (ApiRetry(4, None, 250, 429, None), "[retry] attempt 4 in 0.2s (429)"),
        (
            RateLimit("allowed_warning", None, "seven_day", None, None),
            "[rate-limit] allowed_warning (seven_day)",
        ),
        (RateLimit("allowed", None, None, None, None), None),
        (Init(None, None, None, (), None), "[init] model=? session=?"),
        (Progress("STUCK", "tests need a database"), "[stuck] tests need a database"),
        (ToolUse("TodoWrite", {}, None, None), "[tool] TodoWrite"),
        (Malformed("x" * 200, "invalid JSON"), "[malformed] " + "x" * 80),
        (AssistantText("hello", "m"), None),
        (ToolResult("t", False, "ok"), None),
        (Other("system", "hook_response"), None),
    ],
)
def test_format_event(event: Event, line: str | None) -> None:
    assert format_event(event) == line


# -- folding ----------------------------------------------------------------------------------


def test_run_progress_of_a_successful_run() -> None:
    events = load("success.jsonl")
    before_result = fold(events[:-1])
    assert before_result.turns == 3  # distinct assistant message ids
    assert before_result.result is None and before_result.cost_usd is None
    progress = fold(events)
    assert progress == RunProgress(
        session_id=SID,
        model="claude-sonnet-4-5-20250929",
        cwd=CWD,
        turns=5,  # the result's num_turns replaces the count
        last_status="STATUS: done",
        last_tool='Bash git add -A && git commit -m "fix: x"',
        cost_usd=0.0123,
        duration_ms=12345,
        result=events[-1],  # type: ignore[arg-type]
        malformed=0,
        retries=0,
        rate_limited_until=None,
        files_touched=["auth/middleware.py"],  # relative to the worktree (its cwd)
    )


def test_run_progress_counts_retries_malformed_and_stuck() -> None:
    assert fold(load("overloaded.jsonl")).retries == 3
    assert fold(load("malformed.jsonl")).malformed == 7
    progress = RunProgress()
    for event in parse_line(assistant(text("STATUS: one\nSTUCK: no creds"))):
        progress.apply(event)
    assert progress.last_status == "STUCK: no creds"


def test_run_progress_from_the_middle_of_a_file() -> None:
    events = load("success.jsonl")[4:]  # no init: a watcher resuming at an offset
    progress = fold(events)
    assert progress.session_id == SID and progress.model == "claude-sonnet-4-5-20250929"
    assert progress.last_tool == 'Bash git add -A && git commit -m "fix: x"'


def test_run_progress_tracks_rate_limit_window() -> None:
    progress = RunProgress()
    progress.apply(RateLimit("rejected", 1784979600.0, "five_hour", None, None))
    assert progress.rate_limited_until == 1784979600.0
    progress.apply(RateLimit("allowed", 1784979600.0, "five_hour", None, None))
    assert progress.rate_limited_until is None


# -- classifying ------------------------------------------------------------------------------

OK = result()
OVERLOADED = error(api_error_status=529)
FAILED = Status.FAILED


@pytest.mark.parametrize(
    ("exit_code", "exit_reason", "res", "present", "expected"),
    [
        (None, None, None, False, (Status.LOST, "lost")),
        (0, "exited", OK, False, (Status.LOST, "lost")),
        (None, None, None, True, (Status.LOST, "lost")),
        (None, None, OK, True, (Status.LOST, "lost")),
        (143, "stopped", None, True, (Status.STOPPED, "stopped")),
        (143, "stopped", OK, True, (Status.STOPPED, "stopped")),
        (0, "exited", OK, True, (Status.DONE, None)),
        (143, "result_grace_kill", OK, True, (Status.DONE, None)),
        (-9, "result_grace_kill", OK, True, (Status.DONE, None)),
        (137, "stalled", OK, True, (Status.DONE, None)),
        (137, "stalled", None, True, (Status.FAILED, "stalled")),
        (137, "stalled", OVERLOADED, True, (Status.FAILED, "stalled")),
        (137, "timed_out", None, True, (Status.FAILED, "timed_out")),
        (1, "exited", error(subtype="error_max_turns"), True, (FAILED, "max_turns")),
        (1, "exited", OVERLOADED, True, (FAILED, "overloaded")),
        (1, "exited", error(api_error_status=429), True, (FAILED, "rate_limited")),
        (1, "exited", error(api_error_status=401), True, (FAILED, "auth_error")),
        (1, "exited", error(api_error_status=403), True, (FAILED, "auth_error")),
        (1, "exited", error(api_error_status=500), True, (FAILED, "api_error")),
        (1, "exited", error(api_error_status=400), True, (FAILED, "api_error")),
        (1, "exited", error(), True, (FAILED, "unreachable_api")),
        (1, "result_grace_kill", OVERLOADED, True, (FAILED, "overloaded")),
        (1, "exited", error(subtype="error_during_execution"), True, (FAILED, "execution_error")),
        (3, "exited", None, True, (Status.FAILED, "crashed")),
        (0, "exited", None, True, (Status.FAILED, "crashed")),
        (None, "exited", None, True, (Status.FAILED, "crashed")),
    ],
)
def test_classify(
    exit_code: int | None,
    exit_reason: str | None,
    res: Result | None,
    present: bool,
    expected: tuple[Status, str | None],
) -> None:
    got = classify(exit_code=exit_code, exit_reason=exit_reason, result=res, run_present=present)
    assert got == expected
    assert got[1] is None or got[1] in FAILURE_CLASSES


@pytest.mark.parametrize(
    ("fixture", "exit_code", "expected"),
    [
        ("success.jsonl", 0, (Status.DONE, None)),
        ("overloaded.jsonl", 1, (Status.FAILED, "overloaded")),
        ("max_turns.jsonl", 1, (Status.FAILED, "max_turns")),
        ("server_down.jsonl", 1, (Status.FAILED, "unreachable_api")),
        ("malformed.jsonl", 0, (Status.DONE, None)),
    ],
)
def test_classify_fixtures(fixture: str, exit_code: int, expected: tuple[Status, str]) -> None:
    progress = fold(load(fixture))
    assert classify(exit_code=exit_code, exit_reason="exited", result=progress.result) == expected


def test_failure_classes_are_plain_strings_on_the_board() -> None:
    assert {c.value for c in FailureClass} == FAILURE_CLASSES
    assert "overloaded" in FAILURE_CLASSES
    assert json.dumps([FailureClass.OVERLOADED]) == '["overloaded"]'


def test_a_synthetic_error_message_is_not_a_turn() -> None:
    # Before an API failure's result, the real CLI (2.1.197) emits an assistant event
    # whose model is "<synthetic>", carrying the error text: it is not a model turn.
    lines = [
        {"type": "system", "subtype": "init", "session_id": "s1", "model": "claude-sonnet-4-5"},
        {"type": "assistant", "error": "rate_limit", "session_id": "s1",
         "message": {"id": "m1", "model": "<synthetic>", "role": "assistant",
                     "content": [{"type": "text", "text": "API Error: Request rejected (429)"}]}},
        {"type": "result", "subtype": "success", "is_error": True, "api_error_status": 429,
         "session_id": "s1", "num_turns": 1, "result": "API Error: Request rejected (429)"},
    ]  # fmt: skip
    progress = RunProgress()
    for raw in lines[:2]:
        for event in parse_line(json.dumps(raw)):
            progress.apply(event)
    assert progress.turns == 0
    assert progress.model == "claude-sonnet-4-5"
