"""The board's storage: records in one TinyDB JSON file that many processes share safely.

`coordlib.board.Board` builds the typed assignment transitions on top of `RecordStore`.

Files beside the board (``board.json`` here):

- ``board.json``: the live records in TinyDB's layout,
  ``{"assignments": {"1": {...}, ...}, "meta": {"1": {"schema_version": 1}}}``, and beside
  them keyed documents of other kinds, one table each (``"pipelines": {"1": {"key":
  "api#42", ...}}``): `Transaction.docs` reads and writes them in the same transaction.
- ``board.json.lock``: ``flock``-ed, exclusive for a transaction, shared for a read.
- ``board.json.tmp``: the next version while it is written; only the exclusive lock holder
  writes it, so one fixed name suffices and a killed writer leaves at most this one file.
- ``board.history.jsonl``: finished records moved out of the live file, one JSON object a line.

All of them are the owner's alone (0600, in a 0700 directory when coordlib makes it): rows
hold briefings, workers' results and errors, which are no other local user's to read.

Plain TinyDB corrupts its file under several writing processes (it rewrites in place), so every
transaction takes the lock, re-reads the file, works in memory and writes once, by temp file +
fsync + ``os.replace``. Records are handled through the raw tables with an id index rather than
TinyDB's ``Table``, whose every write rebuilds the whole table: updating each record of a
1,000-record board one by one took 0.5 s that way.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordlib.board_file import MODE as _MODE
from coordlib.board_file import AtomicJSONStorage as _AtomicJSONStorage
from coordlib.board_file import fsync_dir as _fsync_dir
from coordlib.errors import AssignmentNotFound, BoardError

__all__ = ["FINISHED", "SCHEMA_VERSION", "BoardSnapshot", "Docs", "RecordStore", "Transaction"]

SCHEMA_VERSION = 1
FINISHED = frozenset({"done", "failed", "stopped", "lost"})

_DIR_MODE = 0o700

_RECORDS = "assignments"
_META = "meta"
_SHOWN_CANDIDATES = 10

_Record = dict[str, Any]
_Tables = dict[str, dict[str, Any]]

# Locks this thread holds, so a nested board call fails loudly instead of deadlocking on flock.
_thread_state = threading.local()


class Docs:
    """One table of keyed documents (each a dict with a string "key") inside a transaction."""

    def __init__(self, txn: Transaction, name: str, rows: dict[str, _Record]) -> None:
        self._txn = txn
        self.name = name
        self._rows = rows
        self._keys = {row["key"]: k for k, row in rows.items()}

    def get(self, key: str) -> dict[str, Any] | None:
        """Return a copy of the document with this key, or None."""
        self._txn._check_open()
        k = self._keys.get(key)
        return None if k is None else dict(self._rows[k])

    def all(self) -> list[dict[str, Any]]:
        """Return copies of every document, in insertion order."""
        self._txn._check_open()
        return [dict(row) for row in self._rows.values()]

    def put(self, doc: Mapping[str, Any]) -> None:
        """Insert or replace the document with doc's "key"."""
        self._txn._check_open()
        key = doc.get("key")
        if not isinstance(key, str) or not key:
            raise BoardError(f"cannot write to {self.name} of board {self._txn._path}: no key")
        k = self._keys.get(key)
        if k is None:
            k = str(max((int(x) for x in self._rows), default=0) + 1)
            self._keys[key] = k
        elif self._rows[k] == doc:
            return
        self._rows[k] = dict(doc)
        self._txn._changed = True


class Transaction:
    """The live records inside one exclusive transaction, written once when it ends."""

    def __init__(
        self, path: Path, records: dict[str, _Record], tables: _Tables | None = None
    ) -> None:
        self._path = path
        self._tables = tables if tables is not None else {}
        self._docs: dict[str, Docs] = {}
        self._records = records
        self._keys = {record["id"]: key for key, record in records.items()}
        self._next_key: int | None = None
        self._open = True
        self._changed = False

    def __contains__(self, id: object) -> bool:
        self._check_open()
        return id in self._keys

    def __len__(self) -> int:
        self._check_open()
        return len(self._keys)

    @property
    def changed(self) -> bool:
        """Tell whether the transaction has anything to write."""
        return self._changed

    def docs(self, name: str) -> Docs:
        """Return the table of keyed documents called `name` (made when first written)."""
        self._check_open()
        table = self._docs.get(name)
        if table is None:
            if name in (_RECORDS, _META):
                raise BoardError(f"{name!r} is not a table of keyed documents")
            table = self._docs[name] = Docs(self, name, _docs_of(self._tables, name, self._path))
        return table

    def get(self, id: str) -> dict[str, Any]:
        """Return a copy of the record with this exact id."""
        return dict(self._records[self._key(id)])

    def all(self) -> list[dict[str, Any]]:
        """Return copies of the live records, in insertion order."""
        self._check_open()
        return [dict(record) for record in self._records.values()]

    def records(self) -> Iterator[Mapping[str, Any]]:
        """Iterate over the live records themselves, without copies: read, never change them."""
        self._check_open()
        return iter(self._records.values())

    def insert(self, record: Mapping[str, Any]) -> None:
        """Add a record; its "id" must be a string no live record has."""
        self._check_open()
        id = record.get("id")
        if not isinstance(id, str) or not id:
            raise BoardError(f"cannot insert into board {self._path}: the record has no string id")
        if id in self._keys:
            raise BoardError(f"assignment {id} is already on board {self._path}; ids are unique")
        if self._next_key is None:
            # TinyDB's own rule, computed on fresh data: a cached next id is how it loses records.
            self._next_key = max((int(key) for key in self._records), default=0) + 1
        key = str(self._next_key)
        self._next_key += 1
        self._records[key] = dict(record)
        self._keys[id] = key
        self._changed = True

    def update(self, id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Set fields on the record with this exact id and return a copy of it."""
        record = self._records[self._key(id)]
        if fields.get("id", id) != id:
            raise BoardError(f"cannot change the id of assignment {id} on board {self._path}")
        # type() as well as ==, or 1 -> True would compare equal and never be written.
        if any(
            k not in record or type(record[k]) is not type(v) or record[k] != v
            for k, v in fields.items()
        ):
            record.update(fields)
            self._changed = True
        return dict(record)

    def remove(self, id: str) -> dict[str, Any]:
        """Delete the record with this exact id and return it."""
        key = self._key(id)
        del self._keys[id]
        self._changed = True
        return self._records.pop(key)

    def _key(self, id: str) -> str:
        self._check_open()
        try:
            return self._keys[id]
        except KeyError:
            raise AssignmentNotFound(
                f"no assignment {id!r} on board {self._path}; `coord status` lists them"
            ) from None

    def _check_open(self) -> None:
        if not self._open:
            raise BoardError(f"the transaction on board {self._path} has ended; start a new one")


@dataclass(frozen=True)
class BoardSnapshot:
    """The live records as one read saw them."""

    path: Path
    records: tuple[dict[str, Any], ...]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)

    def all(self) -> list[dict[str, Any]]:
        """Return the live records, in insertion order."""
        return list(self.records)

    def get(self, id_or_prefix: str) -> dict[str, Any]:
        """Return the live record with this id, or the only one it is a prefix of."""
        return _lookup(id_or_prefix, {r["id"]: r for r in self.records}, {}, self.path, False)


class RecordStore:
    """Records (dicts with a string "id") in one locked TinyDB JSON file, and their history."""

    def __init__(self, path: str | Path, *, keep_finished: int = 300) -> None:
        if keep_finished < 0:
            raise ValueError(f"keep_finished must be 0 or more, not {keep_finished}")
        self.path = Path(os.path.abspath(path))
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.history_path = self.path.with_suffix(".history.jsonl")
        self.keep_finished = keep_finished
        # What this store did (benchmarks read it): "transactions" run to their end,
        # "writes" of the file among them, "reads" under the shared lock.
        self.stats: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, keep_finished={self.keep_finished})"

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Lock the board, yield its fresh records, and write them once if anything changed."""
        with self._locked(exclusive=True):
            storage = _AtomicJSONStorage(self.path)
            tables = storage.read() or {}
            txn = Transaction(self.path, _records_of(tables, self.path), tables)
            try:
                # An exception in the block skips the write below: the file stays as it was.
                yield txn
                self._archive(txn)
                if txn.changed:
                    for name, docs in txn._docs.items():
                        tables[name] = docs._rows
                    tables[_RECORDS] = txn._records
                    tables[_META] = {"1": {"schema_version": SCHEMA_VERSION}}
                    storage.write(tables)
                    self.stats["writes"] += 1
                self.stats["transactions"] += 1
            finally:
                txn._open = False

    def insert(self, record: Mapping[str, Any]) -> None:
        """Add a record whose "id" no live record has."""
        with self.transaction() as txn:
            txn.insert(record)

    def update(self, id: str, /, **fields: Any) -> dict[str, Any]:
        """Set fields on the live record with this exact id and return it."""
        with self.transaction() as txn:
            return txn.update(id, fields)

    def remove(self, id: str) -> dict[str, Any]:
        """Delete the live record with this exact id and return it."""
        with self.transaction() as txn:
            return txn.remove(id)

    def get(self, id_or_prefix: str, *, history: bool = True) -> dict[str, Any]:
        """Return the record with this id, or the only one it prefixes, live or archived."""
        with self._locked(exclusive=False):
            records = _records_of(_AtomicJSONStorage(self.path).read() or {}, self.path)
            live = {record["id"]: record for record in records.values()}
            # Read history under the same lock, so a record being archived is seen on one side.
            archived = self._read_history() if history and id_or_prefix not in live else {}
        return _lookup(id_or_prefix, live, archived, self.path, history)

    def all(self) -> list[dict[str, Any]]:
        """Return the live records, in insertion order."""
        return self.snapshot().all()

    def docs(self, name: str) -> list[dict[str, Any]]:
        """Read every document of the keyed table `name` under a shared lock."""
        with self._locked(exclusive=False):
            tables = _AtomicJSONStorage(self.path).read() or {}
            _records_of(tables, self.path)  # the schema check
            return [dict(row) for row in _docs_of(tables, name, self.path).values()]

    def snapshot(self) -> BoardSnapshot:
        """Read the live records under a shared lock, writing nothing."""
        with self._locked(exclusive=False):
            records = _records_of(_AtomicJSONStorage(self.path).read() or {}, self.path)
        return BoardSnapshot(self.path, tuple(records.values()))

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Return archived records, newest last, one per id."""
        with self._locked(exclusive=False):
            archived = list(self._read_history().values())
        if limit is not None:
            return archived[-limit:] if limit > 0 else []
        return archived

    def amend_history(
        self, ids: Iterable[str], change: Callable[[dict[str, Any]], Mapping[str, Any]]
    ) -> list[str]:
        """Set the fields `change(record)` returns on archived records; return the ids amended.

        The amended records are appended to the history (readers take the last line of an
        id, in the place of its first), so the file only ever grows by whole lines.  Ids not
        archived are skipped.
        """
        with self._locked(exclusive=True):
            archived = self._read_history()
            amended = [{**archived[i], **change(archived[i])} for i in ids if i in archived]
            if amended:
                self._append_history(amended)
        return [r["id"] for r in amended]

    @contextlib.contextmanager
    def _locked(self, *, exclusive: bool) -> Iterator[None]:
        held = _held_locks()
        key = str(self.lock_path)
        if key in held:
            raise BoardError(
                f"board {self.path} is already locked by this thread: inside "
                "`with board.transaction() as txn`, use txn's methods, not the board's"
            )
        try:
            if exclusive:
                self.path.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
            elif not self.path.parent.is_dir():
                # Nothing to read and nothing to lock; don't create directories to read.
                yield
                return
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, _MODE)
        except OSError as exc:
            raise BoardError(f"cannot lock board {self.path}: {exc.strerror or exc}") from exc
        held.add(key)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            if not exclusive:
                self.stats["reads"] += 1
            yield
        finally:
            held.discard(key)
            os.close(fd)  # closing the descriptor releases the flock

    def _archive(self, txn: Transaction) -> None:
        finished = [
            (index, record)
            for index, record in enumerate(txn._records.values())
            if record.get("status") in FINISHED
        ]
        excess = len(finished) - self.keep_finished
        if excess <= 0:
            return
        finished.sort(key=lambda item: (_finished_at(item[1]), item[0]))
        oldest = [record for _, record in finished[:excess]]
        # Durable in history before leaving the live file: a crash in between duplicates a
        # record (readers keep the last line per id), it never loses one.
        self._append_history(oldest)
        for record in oldest:
            txn.remove(record["id"])

    def _append_history(self, records: Iterable[_Record]) -> None:
        try:
            payload = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        except (TypeError, ValueError) as exc:
            raise BoardError(f"cannot archive to {self.history_path}: {exc}") from exc
        data = payload.encode()
        try:
            fd = os.open(
                self.history_path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _MODE
            )
            with open(fd, "a+b") as history:
                if os.fstat(fd).st_mode & 0o077:
                    os.fchmod(fd, _MODE)  # a history made readable to others before
                end = history.seek(0, os.SEEK_END)
                if end:
                    history.seek(end - 1)
                    if history.read(1) != b"\n":
                        # A crash cut the last append short; end that line so ours stays whole.
                        data = b"\n" + data
                history.write(data)
                history.flush()
                os.fsync(history.fileno())
            if not end:
                _fsync_dir(self.history_path.parent)
        except OSError as exc:
            raise BoardError(
                f"cannot archive to {self.history_path}: {exc.strerror or exc}"
            ) from exc

    def _read_history(self) -> dict[str, _Record]:
        archived: dict[str, _Record] = {}
        try:
            history = open(self.history_path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            return archived
        except OSError as exc:
            raise BoardError(f"cannot read {self.history_path}: {exc.strerror or exc}") from exc
        with history:
            for line in history:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a torn append; its record stayed live and was archived again
                if isinstance(record, dict) and isinstance(record.get("id"), str):
                    # A record keeps the position of its first line (when it was archived);
                    # a later line (archived again after a crash, or amended) replaces it.
                    archived[record["id"]] = record
        return archived


def _records_of(tables: _Tables, path: Path) -> dict[str, _Record]:
    """Return the records table of a board file's content, after checking schema and shape."""
    meta = tables.get(_META) or {}
    for doc in meta.values() if isinstance(meta, dict) else [meta]:
        version = doc.get("schema_version") if isinstance(doc, dict) else None
        if not isinstance(version, int):
            raise BoardError(f"board {path} has a malformed meta table: {meta!r}")
        if version > SCHEMA_VERSION:
            raise BoardError(
                f"board {path} has schema version {version}, newer than this coordlib reads "
                f"({SCHEMA_VERSION}); upgrade coordlib: pip install --upgrade coordlib"
            )
    records = tables.get(_RECORDS, {})
    if not isinstance(records, dict):
        raise BoardError(f"board {path}: the {_RECORDS!r} table is not a JSON object")
    for key, record in records.items():
        if (
            not key.isdigit()
            or not isinstance(record, dict)
            or not isinstance(record.get("id"), str)
        ):
            raise BoardError(f"board {path}: record {key!r} is not an object with a string id")
    return records


def _docs_of(tables: _Tables, name: str, path: Path) -> dict[str, _Record]:
    """Return the keyed documents of table `name`, after checking their shape."""
    rows = tables.get(name, {})
    if not isinstance(rows, dict):
        raise BoardError(f"board {path}: the {name!r} table is not a JSON object")
    for k, row in rows.items():
        if not k.isdigit() or not isinstance(row, dict) or not isinstance(row.get("key"), str):
            raise BoardError(f"board {path}: {name} document {k!r} is not an object with a key")
    return rows


def _lookup(
    key: str, live: dict[str, _Record], archived: dict[str, _Record], path: Path, history: bool
) -> _Record:
    """Find a record by exact id, else by unique prefix; live records win over archived."""
    if key in live:
        return live[key]
    if key in archived:
        return archived[key]
    where = f"board {path}" + (" or its history" if history else "")
    matches = {id: r for id, r in archived.items() if key and id.startswith(key)}
    matches.update((id, r) for id, r in live.items() if key and id.startswith(key))
    if len(matches) == 1:
        return next(iter(matches.values()))
    if not matches:
        raise AssignmentNotFound(f"no assignment {key!r} on {where}; `coord status` lists them")
    shown = sorted(matches)[:_SHOWN_CANDIDATES]
    more = ", ..." if len(matches) > len(shown) else ""
    raise AssignmentNotFound(
        f"{key!r} matches {len(matches)} assignments on {where}: {', '.join(shown)}{more}; "
        "give more of the id"
    )


def _held_locks() -> set[str]:
    held: set[str] | None = getattr(_thread_state, "locks", None)
    if held is None:
        held = _thread_state.locks = set()
    return held


def _finished_at(record: _Record) -> float:
    value = record.get("finished_at")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return float("-inf")  # no time recorded: treat as oldest, so it is archived first
