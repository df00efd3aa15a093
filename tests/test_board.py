"""Tests for the board: records, lookups, atomic transactions, archiving, several processes."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tinydb import TinyDB

from coordlib.board import SCHEMA_VERSION, Board
from coordlib.errors import AssignmentNotFound, BoardError

SPAWN = multiprocessing.get_context("spawn")


def rec(id: str, status: str = "running", **fields: Any) -> dict[str, Any]:
    return {"id": id, "status": status, **fields}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "board.json"


# --- records and lookups ---------------------------------------------------------------


def test_insert_get_update_remove(path: Path) -> None:
    board = Board(path)
    board.insert(rec("a1", machine="m1"))
    board.insert(rec("b2"))
    assert board.get("a1") == rec("a1", machine="m1")

    updated = board.update("a1", status="done", finished_at=12.5)
    assert updated == rec("a1", "done", machine="m1", finished_at=12.5)
    assert board.get("a1") == updated

    assert board.remove("b2") == rec("b2")
    assert [r["id"] for r in board.all()] == ["a1"]


def test_all_keeps_insertion_order(path: Path) -> None:
    board = Board(path)
    ids = ["zeta", "alpha", "mid", "beta"]
    for id in ids:
        board.insert(rec(id))
    board.remove("alpha")
    board.insert(rec("last"))
    assert [r["id"] for r in board.all()] == ["zeta", "mid", "beta", "last"]


def test_duplicate_id_is_refused(path: Path) -> None:
    board = Board(path)
    board.insert(rec("a1"))
    with pytest.raises(BoardError, match="a1 is already on board"):
        board.insert(rec("a1", "done"))
    assert board.get("a1")["status"] == "running"


def test_record_without_id_is_refused(path: Path) -> None:
    with pytest.raises(BoardError, match="no string id"):
        Board(path).insert({"status": "running"})


def test_unknown_id(path: Path) -> None:
    board = Board(path)
    board.insert(rec("a1"))
    with pytest.raises(AssignmentNotFound, match="no assignment 'zz'") as info:
        board.get("zz")
    assert str(path) in str(info.value)
    assert isinstance(info.value, KeyError)
    with pytest.raises(AssignmentNotFound):
        board.update("zz", status="done")
    with pytest.raises(AssignmentNotFound):
        board.update("a", status="done")  # writes take exact ids, never prefixes
    with pytest.raises(AssignmentNotFound):
        board.remove("zz")


def test_prefix_lookup(path: Path) -> None:
    board = Board(path)
    board.insert(rec("abc123"))
    board.insert(rec("abd456"))
    board.insert(rec("ab"))
    assert board.get("abc")["id"] == "abc123"
    assert board.get("abd4")["id"] == "abd456"
    assert board.get("ab")["id"] == "ab"  # an exact id beats the longer ids it prefixes


def test_ambiguous_prefix_lists_candidates(path: Path) -> None:
    board = Board(path)
    board.insert(rec("abc123"))
    board.insert(rec("abd456"))
    with pytest.raises(AssignmentNotFound, match="matches 2 assignments") as info:
        board.get("ab")
    assert "abc123" in str(info.value)
    assert "abd456" in str(info.value)


def test_update_cannot_change_id(path: Path) -> None:
    board = Board(path)
    board.insert(rec("a1"))
    with board.transaction() as txn, pytest.raises(BoardError, match="cannot change the id"):
        txn.update("a1", {"id": "b1"})


def test_missing_board_reads_empty_and_creates_nothing(tmp_path: Path) -> None:
    board = Board(tmp_path / "deep" / "dir" / "board.json")
    assert board.all() == []
    assert board.history() == []
    with pytest.raises(AssignmentNotFound):
        board.get("a")
    assert not (tmp_path / "deep").exists()
    board.insert(rec("a"))
    assert board.get("a") == rec("a")


def test_a_second_board_object_sees_every_write(path: Path) -> None:
    reader, writer = Board(path), Board(path)
    writer.insert(rec("a"))
    assert [r["id"] for r in reader.all()] == ["a"]
    writer.update("a", status="done")
    assert reader.get("a")["status"] == "done"


def test_file_stays_readable_by_tinydb(path: Path) -> None:
    board = Board(path)
    board.insert(rec("a"))
    board.insert(rec("b"))
    with TinyDB(path) as db:
        assert [d["id"] for d in db.table("assignments").all()] == ["a", "b"]
        assert db.table("meta").all() == [{"schema_version": SCHEMA_VERSION}]


# --- transactions -----------------------------------------------------------------------


def test_transaction_reads_and_writes_together(path: Path) -> None:
    board = Board(path)
    board.insert(rec("counter", n=0))
    with board.transaction() as txn:
        assert "counter" in txn
        assert len(txn) == 1
        txn.update("counter", {"n": txn.get("counter")["n"] + 1})
        txn.insert(rec("a"))
        assert [r["id"] for r in txn.all()] == ["counter", "a"]
    assert board.get("counter")["n"] == 1


def test_exception_in_transaction_writes_nothing(path: Path) -> None:
    board = Board(path)
    board.insert(rec("a"))
    before = path.read_bytes()
    inode = path.stat().st_ino
    with pytest.raises(RuntimeError, match="boom"), board.transaction() as txn:
        txn.insert(rec("b"))
        txn.update("a", {"status": "done"})
        raise RuntimeError("boom")
    assert path.read_bytes() == before
    assert path.stat().st_ino == inode
    assert board.all() == [rec("a")]


def test_unchanged_transaction_does_not_write(path: Path) -> None:
    board = Board(path)
    board.insert(rec("a", n=1))
    inode = path.stat().st_ino
    with board.transaction() as txn:
        txn.get("a")
        txn.update("a", {"status": "running", "n": 1})
    assert path.stat().st_ino == inode
    board.update("a", n=True)  # equal to 1 in Python, different in JSON
    assert path.stat().st_ino != inode
    assert board.get("a")["n"] is True


def test_transaction_writes_once(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    board = Board(path)
    board.insert(rec("a"))
    replaced: list[str] = []
    real_replace = os.replace

    def counting_replace(src: Any, dst: Any) -> None:
        replaced.append(str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", counting_replace)
    with board.transaction() as txn:
        for n in range(50):
            txn.insert(rec(f"r{n}"))
            txn.update("a", {"n": n})
    assert replaced == [str(path)]
    assert len(board.all()) == 51


def test_nested_board_call_fails_instead_of_deadlocking(path: Path) -> None:
    board = Board(path)
    board.insert(rec("a"))
    with board.transaction(), pytest.raises(BoardError, match="already locked by this thread"):
        Board(path).all()
    assert board.get("a") == rec("a")  # the lock was released


def test_transaction_is_unusable_after_it_ends(path: Path) -> None:
    board = Board(path)
    with board.transaction() as txn:
        txn.insert(rec("a"))
    with pytest.raises(BoardError, match="has ended"):
        txn.insert(rec("b"))
    with pytest.raises(BoardError, match="has ended"):
        txn.all()


# --- damaged and foreign files ----------------------------------------------------------


def test_newer_schema_is_refused(path: Path) -> None:
    content = json.dumps({"meta": {"1": {"schema_version": SCHEMA_VERSION + 1}}, "assignments": {}})
    path.write_text(content)
    board = Board(path)
    with pytest.raises(BoardError, match="upgrade coordlib"):
        board.all()
    with pytest.raises(BoardError, match="upgrade coordlib"):
        board.insert(rec("a"))
    assert path.read_text() == content


def test_corrupt_file_is_named(path: Path) -> None:
    path.write_text('{"assignments": {"1": {"id": "a", "sta')
    board = Board(path)
    for attempt in (board.all, lambda: board.get("a"), lambda: board.insert(rec("b"))):
        with pytest.raises(BoardError, match="is not valid JSON") as info:
            attempt()
        assert str(path) in str(info.value)
        assert "mv " in str(info.value)


def test_malformed_record_is_named(path: Path) -> None:
    path.write_text(json.dumps({"assignments": {"1": {"status": "done"}}}))
    with pytest.raises(BoardError, match="record '1'"):
        Board(path).all()


def test_empty_file_is_an_empty_board(path: Path) -> None:
    path.write_text("")
    board = Board(path)
    assert board.all() == []
    board.insert(rec("a"))
    assert board.all() == [rec("a")]


# --- archiving --------------------------------------------------------------------------


def test_archiving_keeps_the_newest_finished(path: Path) -> None:
    board = Board(path, keep_finished=5)
    for n in range(20):
        board.insert(rec(f"f{n:02d}", "done", finished_at=float(n)))
        if n % 7 == 0:
            board.insert(rec(f"run{n}"))

    live = board.all()
    assert len(live) == 8
    assert [r["id"] for r in live if r["status"] == "done"] == [f"f{n:02d}" for n in range(15, 20)]
    archived = board.history()
    assert [r["id"] for r in archived] == [f"f{n:02d}" for n in range(15)]
    assert [r["id"] for r in board.history(limit=3)] == ["f12", "f13", "f14"]
    assert board.history(limit=0) == []

    assert board.get("f03") == rec("f03", "done", finished_at=3.0)
    with pytest.raises(AssignmentNotFound, match="matches 10 assignments"):
        board.get("f0")


def test_get_prefix_spans_live_and_history(path: Path) -> None:
    board = Board(path, keep_finished=1)
    board.insert(rec("old-1", "done", finished_at=1.0))
    board.insert(rec("new-2", "done", finished_at=2.0))
    assert board.get("old")["id"] == "old-1"
    with pytest.raises(AssignmentNotFound, match="no assignment 'old' on board"):
        board.get("old", history=False)
    with pytest.raises(AssignmentNotFound, match="or its history"):
        board.get("gone")
    board.insert(rec("old-3"))
    with pytest.raises(AssignmentNotFound, match="old-1, old-3"):
        board.get("old")


def test_archiving_orders_by_finished_at_then_insertion(path: Path) -> None:
    board = Board(path, keep_finished=2)
    with board.transaction() as txn:
        txn.insert(rec("late", "failed", finished_at=50.0))
        txn.insert(rec("untimed", "lost"))
        txn.insert(rec("early-a", "stopped", finished_at=10.0))
        txn.insert(rec("early-b", "done", finished_at=10.0))
        txn.insert(rec("running"))
    assert [r["id"] for r in board.history()] == ["untimed", "early-a"]
    assert [r["id"] for r in board.all()] == ["late", "early-b", "running"]


def test_history_dedupes_and_survives_a_torn_line(path: Path) -> None:
    board = Board(path, keep_finished=0)
    board.insert(rec("a", "done", finished_at=1.0))
    board.insert(rec("b", "done", finished_at=2.0))
    history_path = path.with_name("board.history.jsonl")
    assert board.history_path == history_path
    # A crash between the history append and the live write archives "a" twice.
    with history_path.open("a") as history:
        history.write(json.dumps(rec("a", "done", finished_at=1.0, note="again")) + "\n")
        history.write('{"id": "torn", "sta')  # an append cut short
    board.insert(rec("c", "failed", finished_at=3.0))

    assert [r["id"] for r in board.history()] == ["a", "b", "c"]  # in the place of its first
    assert board.get("a")["note"] == "again"
    assert board.get("c")["status"] == "failed"
    assert board.all() == []


# --- permissions ------------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    """Run with the usual umask, under which a file made without a mode is world-readable."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.usefixtures("umask_022")
def test_board_files_are_the_owners_alone(tmp_path: Path) -> None:
    path = tmp_path / "state" / "coord" / "board.json"
    board = Board(path, keep_finished=0)
    board.insert(rec("a", "running"))
    assert _mode(path.parent) == 0o700  # made by coordlib
    assert _mode(path) == 0o600
    assert _mode(board.lock_path) == 0o600
    board.update("a", status="done", finished_at=1.0)  # archived at once
    assert [r["id"] for r in board.history()] == ["a"]
    assert _mode(board.history_path) == 0o600
    assert _mode(path) == 0o600


@pytest.mark.usefixtures("umask_022")
def test_temp_file_is_written_owner_only(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    board = Board(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("left by a killed writer")
    tmp.chmod(0o644)
    seen: list[int] = []
    replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        seen.append(_mode(Path(src)))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    board.insert(rec("a"))
    assert seen == [0o600]


@pytest.mark.usefixtures("umask_022")
def test_wider_board_and_history_are_narrowed_on_the_next_write(path: Path) -> None:
    board = Board(path, keep_finished=0)
    board.insert(rec("a", "done", finished_at=1.0))
    board.insert(rec("b"))
    path.chmod(0o644)
    board.history_path.chmod(0o644)
    assert board.all() and board.history()  # reading changes nothing
    assert _mode(path) == 0o644
    board.update("b", status="failed", finished_at=2.0)
    assert _mode(path) == 0o600
    assert _mode(board.history_path) == 0o600


@pytest.mark.usefixtures("umask_022")
def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    Board(shared / "board.json").insert(rec("a"))
    assert _mode(shared) == 0o755
    assert _mode(shared / "board.json") == 0o600


# --- several processes ------------------------------------------------------------------


def _insert_and_count(path: str, worker: int, count: int) -> None:
    board = Board(path)
    for n in range(count):
        board.insert(rec(f"w{worker}-{n:03d}", worker=worker))
        with board.transaction() as txn:
            txn.update("counter", {"n": txn.get("counter")["n"] + 1})


def test_four_processes_lose_no_update(path: Path) -> None:
    board = Board(path)
    board.insert(rec("counter", n=0))
    workers = [SPAWN.Process(target=_insert_and_count, args=(str(path), w, 100)) for w in range(4)]
    for worker in workers:
        worker.start()
    parses = 0
    try:
        while any(worker.is_alive() for worker in workers):
            # Read without the lock, as a careless reader would: a replaced file is never partial.
            json.loads(path.read_bytes())
            parses += 1
    finally:
        for worker in workers:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.kill()
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    assert parses > 0
    records = board.all()
    assert len(records) == 401
    assert len({r["id"] for r in records}) == 401
    assert board.get("counter")["n"] == 400


def _write_until_killed(path: str) -> None:
    board = Board(path, keep_finished=20)
    while True:
        with board.transaction() as txn:
            n = txn.get("counter")["n"]
            txn.insert(rec(f"item-{n:05d}", "done", finished_at=time.time(), n=n, pad="x" * 2000))
            txn.update("counter", {"n": n + 1})


def _assert_consistent(path: Path) -> int:
    json.loads(path.read_bytes())
    board = Board(path, keep_finished=20)
    live = board.all()
    counter = board.get("counter")["n"]
    items = [r for r in live if r["id"].startswith("item-")] + board.history()
    assert {r["id"] for r in items} == {f"item-{n:05d}" for n in range(counter)}
    for item in items:
        assert item["id"] == f"item-{item['n']:05d}"
        assert item["pad"] == "x" * 2000
    assert sum(r["status"] == "done" for r in live) <= 20
    assert [r for r in live if r["id"].startswith("filler-")] == [
        rec(f"filler-{n:03d}", pad="y" * 2000) for n in range(200)
    ]
    return int(counter)


@pytest.mark.chaos
def test_sigkill_mid_write_leaves_a_consistent_board(path: Path) -> None:
    board = Board(path, keep_finished=20)
    with board.transaction() as txn:
        txn.insert(rec("counter", n=0))
        for n in range(200):  # a larger file widens the window a kill can land in
            txn.insert(rec(f"filler-{n:03d}", pad="y" * 2000))
    rng = random.Random(20240601)
    counter = 0
    for _ in range(5):
        writer = SPAWN.Process(target=_write_until_killed, args=(str(path),), daemon=True)
        writer.start()
        try:
            deadline = time.monotonic() + 30
            while board.get("counter")["n"] == counter:
                assert time.monotonic() < deadline, "the writer never wrote"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            writer.kill()
            writer.join(timeout=10)
        assert writer.exitcode == -signal.SIGKILL
        new_counter = _assert_consistent(path)
        assert new_counter > counter
        counter = new_counter
        # At most the one fixed-name temp file, which no reader opens and the next write reuses.
        expected = {"board.json", "board.json.lock", "board.history.jsonl", "board.json.tmp"}
        assert set(os.listdir(path.parent)) <= expected

    board.insert(rec("after"))
    assert not path.with_name("board.json.tmp").exists()
    _assert_consistent(path)
