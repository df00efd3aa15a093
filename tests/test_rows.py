"""Reading board rows into `Assignment`: what the code writes loads, a bad row is named."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from coordlib.assignment import Assignment, Status
from coordlib.board import Board
from coordlib.errors import BoardError
from tests.conftest import Setup

RunCoord = Callable[..., subprocess.CompletedProcess[str]]


def written(**changes: Any) -> dict[str, Any]:
    """Return a row as the board holds it: a dispatched assignment, through JSON."""
    a = Assignment(
        id="api-1-abcd",
        machine="box",
        repo="api",
        issue=1,
        branch="issue-1-fix-it",
        model="claude-sonnet-4-5",
        tier="sonnet",
        title="fix it",
        worktree="/w/worktrees/api/api-1-abcd",
        run_dir="/w/runs/api-1-abcd",
        created_at=time.time(),
        sender_host="h",
        sender_pid=1,
        trail={},
        argv=["claude"],
    )
    return {**json.loads(json.dumps(a.to_dict())), **changes}


# --- what coordlib writes loads ------------------------------------------------------------


def test_a_row_round_trips() -> None:
    row = written()
    assert Assignment.from_dict(row).to_dict() == row


@pytest.mark.parametrize(
    "changes",
    [
        # a worker folded in and ended (reconcile): ints where numbers are, nulls where allowed
        {
            "status": "done",
            "started_at": 1700000000,
            "finished_at": 1700000100.5,
            "exit_code": 0,
            "exit_reason": "exited",
            "session_id": "0f0e0d0c-0b0a-0908-0706-050403020100",
            "cost_usd": 0,
            "num_turns": 3,
            "duration_ms": 1234,
            "result": "done",
            "last_status": "STATUS: tests pass",
            "last_tool": "Bash",
            "events_offset": 4096,
        },
        # a failed dispatch
        {"status": "failed", "failure_class": "dispatch_failed", "error": "no tmux"},
        # queued by a rate limit: finished_at back to null, the wait in extra
        {"status": "queued", "finished_at": None, "extra": {"not_before": 1.5}},
        # restored from an issue's trail: only some fields, the rest defaults
        {"cost_usd": None, "num_turns": None, "duration_ms": None, "attempt": 2},
        # written by an older coordlib: fewer fields; by a newer one: fields we do not know
        {"tier": "", "future_field": {"any": "thing"}},
    ],
)
def test_rows_the_code_writes_load(changes: dict[str, Any]) -> None:
    row = written(**changes)
    a = Assignment.from_dict(row)
    assert a.status == Status(row["status"])
    assert {k: v for k, v in a.to_dict().items() if k in row} == {
        k: v for k, v in row.items() if k != "future_field"
    }


def test_an_old_row_without_optional_fields_loads() -> None:
    row = {k: written()[k] for k in ("id", "machine", "repo", "issue", "branch", "model")}
    a = Assignment.from_dict(row)
    assert (a.status, a.created_at, a.extra, a.attempt) == (Status.PENDING, 0.0, {}, 1)


def test_values_built_in_code_load() -> None:
    a = Assignment.from_dict({**written(), "status": Status.RUNNING})
    assert a.status is Status.RUNNING


def test_every_field_has_a_check() -> None:
    from coordlib.assignment import _FIELD_KINDS, _REQUIRED

    assert set(_FIELD_KINDS) - {"extra"} == {f.name for f in dataclasses.fields(Assignment)}
    assert _REQUIRED == ("id", "machine", "repo", "issue", "branch", "model")


# --- a bad row is named --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"created_at": "soon"}, "field created_at must be a number, not 'soon'"),
        ({"created_at": None}, "field created_at must be a number, not None"),
        ({"started_at": "1"}, "field started_at must be a number or null, not '1'"),
        ({"issue": "42"}, "field issue must be an integer, not '42'"),
        ({"issue": 4.0}, "field issue must be an integer, not 4.0"),
        ({"issue": True}, "field issue must be an integer, not True"),
        ({"cost_usd": False}, "field cost_usd must be a number or null, not False"),
        ({"title": None}, "field title must be a string, not None"),
        ({"exit_reason": 3}, "field exit_reason must be a string or null, not 3"),
        ({"extra": []}, "field extra must be an object, not []"),
        ({"status": "finished"}, "field status must be pending, running, queued, done, failed"),
        ({"status": 3}, "field status must be pending, running"),
        ({"branch": None}, "field branch must be a string, not None"),
    ],
)
def test_a_wrong_value_names_the_row_the_field_and_the_fix(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(BoardError) as info:
        Assignment.from_dict(written(**changes), where="/srv/.coord/board.json")
    text = str(info.value)
    assert text.startswith(f"assignment api-1-abcd: {message}")
    assert "edit or remove that row in /srv/.coord/board.json" in text
    assert "coord resume --from-forge" in text


def test_a_missing_field_is_named() -> None:
    row = written()
    del row["branch"]
    with pytest.raises(BoardError, match="assignment api-1-abcd: field branch is missing"):
        Assignment.from_dict(row)
    del row["id"]
    with pytest.raises(BoardError, match="an assignment row: field id is missing"):
        Assignment.from_dict(row)


def test_without_where_the_message_says_how_to_find_the_board() -> None:
    with pytest.raises(BoardError) as info:
        Assignment.from_dict(written(created_at="soon"))
    assert "in the board file (`coord config` shows its board.path;" in str(info.value)


def test_a_long_value_is_cut_in_the_message() -> None:
    with pytest.raises(BoardError) as info:
        Assignment.from_dict(written(num_turns="x" * 5000))
    assert len(str(info.value)) < 400


# --- through the CLI -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "drop", "message"),
    [
        ({"created_at": "soon"}, None, "field created_at must be a number, not 'soon'"),
        ({}, "branch", "field branch is missing (it must be a string)"),
    ],
)
def test_status_on_a_hand_edited_row_prints_one_error_line(
    setup: Setup,
    run_coord: RunCoord,
    changes: dict[str, Any],
    drop: str | None,
    message: str,
) -> None:
    setup.add_local("box")
    config = setup.write()
    row = written(status="pending", **changes)  # pending: status checks its dispatch age
    if drop:
        del row[drop]
    board = Board(setup.root / ".coord" / "board.json")
    board.insert(row)
    res = run_coord("status", config=config, timeout=60)
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    (line,) = res.stderr.splitlines()
    assert line.startswith(f"coord: error: assignment api-1-abcd: {message}; edit or remove")
