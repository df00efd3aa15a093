"""The pure middle, tested directly: `reconcile` (a machine's answer -> a row's changes),
`cleanup.select` (which ended work to clean), and the board's transitions and their cost."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from coordlib.assignment import Assignment, Status
from coordlib.board import ALLOWED, Board, Capacity
from coordlib.cleanup import select
from coordlib.errors import BoardError, ClaimError, DispatchError, UsageError
from coordlib.reconcile import RATE_LIMIT_WAIT, reconcile
from coordlib.runtime.answers import MachineProbe, RunProbe

from .conftest import Setup  # noqa: F401 - the setup fixture's type

UUID = "0b5c2a4e-8f1d-4c7a-9e3b-2d6f1a8c4e90"
NOW = time.time()


def row(id: str = "api-1-abcd", **over: Any) -> Assignment:
    fields: dict[str, Any] = {
        "id": id, "machine": "box", "repo": "api", "issue": 1, "branch": "issue-1-x",
        "model": "m", "status": "running", "created_at": NOW - 10,
        "worktree": f"/w/worktrees/api/{id}",
    }  # fmt: skip
    fields.update(over)
    return Assignment.from_dict(fields)


def lines(*events: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


INIT = {"type": "system", "subtype": "init", "session_id": UUID, "cwd": "/w"}
OK = {"type": "result", "subtype": "success", "is_error": False, "result": "did it",
      "num_turns": 3, "total_cost_usd": 0.5, "duration_ms": 9000, "session_id": UUID}  # fmt: skip


def probe(a: Assignment, *, exit: dict[str, Any] | None = None, alive: bool = False,
          events: bytes = b"", dispatching: bool = False) -> MachineProbe:  # fmt: skip
    run = RunProbe(a.id, alive=alive, size=a.events_offset + len(events), dispatching=dispatching,
                   exit=exit, events_offset=a.events_offset, events=events)  # fmt: skip
    return MachineProbe(runs={a.id: run})


def never(_: Assignment) -> bool:
    return False


def test_a_run_that_ended_with_a_result_is_done_with_its_facts() -> None:
    a = row()
    change = reconcile(a, probe(a, exit={"exit_code": 0, "reason": "exited", "finished_at": 5.0},
                                events=lines(INIT, OK)), in_flight=never)  # fmt: skip
    assert change["status"] == "done" and change["failure_class"] is None
    assert change["result"] == "did it" and change["num_turns"] == 3 and change["cost_usd"] == 0.5
    assert change["session_id"] == UUID and change["finished_at"] == 5.0
    assert change["events_offset"] == len(lines(INIT, OK))


def test_a_run_still_writing_its_log_after_its_end_is_read_to_the_end_first() -> None:
    a = row()
    p = probe(a, exit={"exit_code": 0, "reason": "exited"}, events=lines(INIT))
    p.runs[a.id].size += 500  # more on disk than this read brought
    change = reconcile(a, p, in_flight=never)
    assert "status" not in change and change["events_offset"] == len(lines(INIT))


@pytest.mark.parametrize(
    ("exit", "status", "fclass"),
    [
        ({"exit_code": 143, "reason": "stopped"}, "stopped", "stopped"),
        ({"exit_code": 137, "reason": "stalled"}, "failed", "stalled"),
        ({"exit_code": 1, "reason": "exited"}, "failed", "crashed"),
        ({"exit_code": 15, "reason": "dispatch_failed", "error": "no tmux"}, "failed",
         "dispatch_failed"),
        ({"exit_code": True, "reason": ["not", "text"]}, "lost", "lost"),  # a garbled record
    ],
)  # fmt: skip
def test_how_a_run_without_a_result_ended(exit: dict[str, Any], status: str, fclass: str) -> None:
    a = row()
    change = reconcile(a, probe(a, exit=exit), in_flight=never)
    assert (change["status"], change["failure_class"]) == (status, fclass)
    assert change["exit_code"] is None or isinstance(change["exit_code"], int)
    assert change["exit_reason"] is None or isinstance(change["exit_reason"], str)


def test_a_dispatch_the_machine_recorded_as_failed_leaves_no_trail_unless_posted() -> None:
    failed = {"exit_code": 15, "reason": "dispatch_failed", "error": "no tmux"}
    unsure = row(status="pending", extra={"trail": {"dispatch": "posting"}})  # answer lost
    change = reconcile(unsure, probe(unsure, exit=failed), in_flight=never)
    assert change["trail"] is None and "before the worker started" in change["trail_off"]
    told = row(status="pending", extra={"trail": {"dispatch": 17}})  # briefing on the issue
    assert "trail" not in reconcile(told, probe(told, exit=failed), in_flight=never)


def test_a_rate_limited_run_is_queued_until_the_last_back_off_has_passed() -> None:
    a = row()
    limited = {**OK, "is_error": True, "api_error_status": 429, "result": "limited"}
    retry = {"type": "system", "subtype": "api_retry", "attempt": 1, "retry_delay_ms": 4000}
    change = reconcile(a, probe(a, exit={"exit_code": 1, "reason": "exited", "finished_at": 100.0},
                                events=lines(INIT, retry, limited)), in_flight=never)  # fmt: skip
    assert change["status"] == "queued" and change["finished_at"] is None
    assert change["not_before"] == 104.0
    quiet = reconcile(row(), probe(row(), exit={"exit_code": 1, "reason": "exited",
                                                "finished_at": 100.0},
                                   events=lines(limited)), in_flight=never)  # fmt: skip
    assert quiet["not_before"] == 100.0 + RATE_LIMIT_WAIT


def test_pending_running_and_lost() -> None:
    pending = row(status="pending")
    assert reconcile(pending, probe(pending, alive=True), in_flight=never)["status"] == "running"
    # Its dispatch is on its way (here or elsewhere): no verdict yet.
    assert reconcile(pending, MachineProbe(), in_flight=lambda _: True) == {}
    assert reconcile(pending, probe(pending, dispatching=True), in_flight=never) == {}
    gone = reconcile(row(), MachineProbe(), in_flight=never)
    assert (gone["status"], gone["exit_reason"]) == ("lost", "vanished")
    dead = reconcile(row(), probe(row()), in_flight=never)
    assert (dead["status"], dead["exit_reason"]) == ("lost", "launcher_gone")
    # A live, idle worker: nothing to parse, nothing to write.
    assert reconcile(row(), probe(row(), alive=True), in_flight=never) == {}


# ------------------------------------------------------------------ cleanup.select
def test_select_takes_old_ended_work_and_keeps_worktrees_live_work_shares() -> None:
    ended = row("api-1-aaaa", status="done", finished_at=NOW - 8 * 86400)
    fresh = row("api-2-bbbb", status="failed", finished_at=NOW - 60)
    continued = row("api-3-cccc", status="stopped", finished_at=NOW - 9 * 86400)
    live = row("api-4-dddd", status="running", worktree=continued.worktree)
    mark = {"at": NOW, "worktree": "removed", "run": "removed"}
    cleaned = row("api-5-eeee", status="done", finished_at=NOW - 9 * 86400, extra={"cleaned": mark})
    rows = [ended, fresh, continued, live, cleaned]
    chosen, in_use = select(rows, now=NOW, older_than=7 * 86400)
    assert [a.id for a in chosen] == [ended.id, continued.id]
    assert in_use == {("box", continued.worktree): live.id}
    everything, _ = select(rows, now=NOW, older_than=0)
    assert cleaned.id not in {a.id for a in everything} and fresh.id in {a.id for a in everything}
    named, _ = select(rows, now=NOW, older_than=7 * 86400, ids=[fresh.id])
    assert [a.id for a in named] == [fresh.id]  # named: whatever its age
    with pytest.raises(UsageError, match="stop it first"):
        select(rows, now=NOW, older_than=0, ids=[live.id])
    other, _ = select(rows, now=NOW, older_than=0, machine="elsewhere")
    assert other == []


# ------------------------------------------------------------------ the board's transitions
def test_every_move_the_board_allows_is_a_status_move() -> None:
    assert set(ALLOWED) == set(Status)
    assert ALLOWED[Status.DONE] == frozenset() and Status.RUNNING in ALLOWED[Status.PENDING]
    board_moves = {(a, b) for a, bs in ALLOWED.items() for b in bs}
    assert (Status.DONE, Status.RUNNING) not in board_moves
    assert (Status.QUEUED, Status.RUNNING) not in board_moves


def test_settle_refuses_a_move_backwards_and_skips_rows_others_moved_on(tmp_path: Path) -> None:
    board = Board(tmp_path / "board.json")
    board.insert(row("api-1-aaaa", status="done").to_dict())
    board.insert(row("api-2-bbbb").to_dict())
    board.insert(row("api-3-cccc", status="queued").to_dict())
    changed, _ = board.settle({"api-1-aaaa": (0, {"status": "failed"}),  # settled: skipped
                               "api-2-bbbb": (99, {"status": "done"})})  # stale offset  # fmt: skip
    assert changed == []
    with pytest.raises(BoardError, match="cannot go from queued to done"):
        board.settle({"api-3-cccc": (0, {"status": "done"})})
    assert board.assignment("api-3-cccc").status == Status.QUEUED  # nothing was written


def test_an_assign_reads_the_board_once_and_writes_it_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claims, starts and their checks, as the dispatcher drives them (no machine)."""
    board = Board(tmp_path / "board.json")
    for i in range(5):
        board.insert(row(f"api-{10 + i}-aaaa", issue=10 + i, status="done").to_dict())
    board.insert(row("api-20-bbbb", issue=20).to_dict())
    writes = {"n": 0}
    real = Board.transaction

    def counted(self: Board) -> Any:
        writes["n"] += 1
        return real(self)

    monkeypatch.setattr(Board, "transaction", counted)
    cap = Capacity(fleet=10, machine=2)

    async def go() -> None:
        a = row("api-30-cccc", issue=30, status="pending")
        await board.claim(a, capacity=cap)
        await board.started(a.id, base_sha="f" * 40, posted={"dispatch": 7})
        with pytest.raises(ClaimError, match="already has live assignment api-20-bbbb"):
            await board.claim(row("api-20-dddd", issue=20, status="pending"), capacity=cap)
        with pytest.raises(DispatchError, match="running 2 of its 2 workers"):
            await board.claim(row("api-40-eeee", issue=40, status="pending"), capacity=cap)
        # Concurrent claims share one transaction (group commit).
        many = [row(f"api-{50 + i}-ffff", issue=50 + i, machine=f"m{i}", status="pending")
                for i in range(6)]  # fmt: skip
        before = writes["n"]
        await asyncio.gather(*(board.claim(x, capacity=cap) for x in many))
        assert writes["n"] - before <= 2

    asyncio.run(go())
    started = board.assignment("api-30-cccc")
    assert started.status == Status.RUNNING and started.base_sha == "f" * 40
    assert started.trail is None  # no trail was claimed with this row, so none is recorded


def test_a_whole_assign_costs_one_board_read_and_two_writes(
    setup: Any, monkeypatch: pytest.MonkeyPatch, run_coord: Any
) -> None:
    """With the trail on (an issue on the local forge): read, claim, start; nothing more."""
    from coordlib.board_store import RecordStore

    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "stall"})
    config = setup.write()
    made = run_coord("issue", "new", "api", "--title", "Count", "--json", config=config)
    number = json.loads(made.stdout)["number"]
    counts = {"read": 0, "write": 0}
    snapshot, transaction = RecordStore.snapshot, Board.transaction

    def read(self: RecordStore) -> Any:
        counts["read"] += 1
        return snapshot(self)

    def write(self: Board) -> Any:
        counts["write"] += 1
        return transaction(self)

    async def go() -> Assignment:
        async with setup.coordinator() as c:
            monkeypatch.setattr(RecordStore, "snapshot", read)
            monkeypatch.setattr(Board, "transaction", write)
            a = await c.assign("local", "api", number)
            monkeypatch.undo()
            await c.stop(a.id)
            return c.get(a.id)

    a = asyncio.run(go())
    assert counts == {"read": 1, "write": 2}
    assert isinstance(a.trail, dict) and isinstance(a.trail["dispatch"], int)  # recorded
