"""The `Assignment`: one worker run for one issue on one machine, as the board keeps it."""

from __future__ import annotations

import dataclasses
import enum
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import BoardError, UsageError

__all__ = ["ID_PATTERN", "SESSION_ID_PATTERN", "TERMINAL", "Assignment", "Status", "check_id",
           "check_session_id"]  # fmt: skip

# What an assignment id may look like (`api-42-1f3a`): it names a run dir, a tmux session and a
# worktree on a machine, so no dots, slashes, spaces or shell syntax, and never a leading "-".
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
# Claude Code's session ids are UUIDs; nothing else is ever passed to `--resume`.
SESSION_ID_PATTERN = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def check_id(value: object, what: str = "assignment id") -> str:
    """Return value if it is a well-formed assignment id; raise `UsageError` otherwise."""
    if isinstance(value, str) and ID_PATTERN.fullmatch(value):
        return value
    raise UsageError(
        f"{what} {value!r} is not a valid assignment id (letters, digits, '-' and '_', "
        f"like api-42-1f3a); `coord status` lists them"
    )


def check_session_id(value: object) -> str:
    """Return value if it is a Claude Code session id (a UUID); raise `UsageError` otherwise."""
    if isinstance(value, str) and SESSION_ID_PATTERN.fullmatch(value):
        return value
    raise UsageError(
        f"session id {value!r} is not a UUID; only a session id Claude Code reported can be "
        f"resumed (start the issue again with `coord retry`)"
    )


class Status(enum.StrEnum):
    """Where an assignment is in its life."""

    PENDING = "pending"  # on the board, not yet confirmed started on the machine
    RUNNING = "running"  # the launcher is alive on the machine
    QUEUED = "queued"  # stopped by an API rate limit; continues after extra["not_before"]
    DONE = "done"  # the worker finished with a successful result
    FAILED = "failed"  # the worker ended without a successful result
    STOPPED = "stopped"  # someone stopped it
    LOST = "lost"  # its run vanished (machine rebooted, run dir removed) with no exit record


TERMINAL = frozenset({Status.DONE, Status.FAILED, Status.STOPPED, Status.LOST})


@dataclass
class Assignment:
    """A worker run, as recorded on the board.

    Field names are the JSON contract of ``coord status --json``; add fields, never rename.
    The fields after ``attempt`` are written under ``extra`` in the record (where scripts
    read ``extra.continues``, ``extra.not_before``, …); `extra` shows them as that dict.
    """

    id: str
    machine: str
    repo: str
    issue: int
    branch: str
    model: str  # full model id given to the worker
    status: Status = Status.PENDING
    title: str = ""
    tier: str = ""  # the tier name the model came from, "" when a full id was given
    worktree: str = ""  # path on the machine
    run_dir: str = ""  # path on the machine
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    exit_reason: str | None = None  # exited | stalled | timed_out | stopped | result_grace_kill | …
    failure_class: str | None = None
    session_id: str | None = None
    cost_usd: float | None = None
    num_turns: int | None = None
    duration_ms: int | None = None
    result: str | None = None  # the worker's final text, truncated
    last_status: str | None = None  # last STATUS:/STUCK: line seen
    last_tool: str | None = None
    events_offset: int = 0  # bytes of events.jsonl already folded into the fields above
    error: str | None = None  # what went wrong, in words, when it did
    attempt: int = 1
    progress: dict[str, Any] = field(default_factory=dict)  # the fold's state (RunProgress)
    # -- under `extra` in the record --------------------------------------------------------
    continues: str | None = None  # the assignment whose session this one continues
    continued_by: str | None = None
    retry_of: str | None = None  # the earlier attempt this one retries
    retried_by: str | None = None
    not_before: float | None = None  # queued: continue no earlier than this (epoch seconds)
    held: str | None = None  # why nothing continues it by itself (restored from the trail)
    restored: bool = False  # rebuilt from the forge's trail
    base_sha: str | None = None  # the commit its branch started from
    argv: list[str] = field(default_factory=list)  # the worker's command line (no prompt)
    sender_host: str | None = None  # the coordinator that dispatched it: host and pid
    sender_pid: int | None = None
    files_in_scope: list[str] = field(default_factory=list)  # named in the issue
    trail: dict[str, Any] | None = None  # stage -> comment id ("posting"); None: no trail kept
    trail_off: str | None = None  # why it leaves no trail (not on the forge)
    cleaned: dict[str, Any] | None = None  # {at, worktree, run}: what `coord clean` did
    briefing: str | None = None  # a dry run's briefing (never on the board)
    stage: str | None = None  # the pipeline stage it works (work, review, fix, …); None: none
    # What the run left behind, checked on the machine as it ended (see coordlib.outcomes):
    # {start, head, base, commits, ahead, dirty, untracked, files, files_total, rescue,
    #  conflicts, outside}; None until it ended (or from a machine that did not say).
    outcome: dict[str, Any] | None = None
    files_declared: list[str] | None = None  # the issue's own `## Files`; None: it has none
    reads_only: bool = False  # a reviewer's run: on a detached checkout, owing no commit
    # what its branch has changed so far (committed or not), as the status pass last read it
    files_changed: list[str] | None = None
    ports: list[int] | None = None  # [first, last]: the worktree's port range, while it runs
    setup: dict[str, Any] | None = None  # the workspace's setup: {exit, seconds, timed_out}
    other: dict[str, Any] = field(default_factory=dict, repr=False)  # a newer version's keys

    @property
    def is_terminal(self) -> bool:
        """Tell whether the assignment has ended."""
        return self.status in TERMINAL

    @property
    def files_touched(self) -> list[str]:
        """Return the files the worker has edited so far, relative to its worktree."""
        touched = self.progress.get("files_touched")
        return [x for x in touched if isinstance(x, str)] if isinstance(touched, list) else []

    @property
    def extra(self) -> dict[str, Any]:
        """Return the fields the record keeps under ``extra``, as it keeps them."""
        out = dict(self.other)
        for name in _EXTRA_NAMES:
            value = getattr(self, name)
            if value is not None and value is not False and value != [] and value != {}:
                out[_EXTRA_KEYS.get(name, name)] = value
        if self.sender_host is not None:
            out["coordinator"] = {"host": self.sender_host, "pid": self.sender_pid}
        if self.trail_off is not None:
            out["trail"] = {"off": self.trail_off}
        elif self.trail is not None:
            out["trail"] = dict(self.trail)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready record."""
        data = {name: getattr(self, name) for name in _COLUMNS}
        data["status"] = str(self.status)
        data["progress"] = dict(self.progress)
        data["extra"] = self.extra
        return data

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], where: str | os.PathLike[str] | None = None
    ) -> Assignment:
        """Build from a board record, ignoring fields a newer version may have added.

        A known field that is missing or holds the wrong kind of value (a hand-edited row)
        raises `BoardError` naming the row, the field and the fix; `where` is the file the
        row came from, for that message.
        """
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            kinds = _TOP_KINDS.get(name)
            if kinds is None:
                continue  # a field a newer version added
            # type() first: the common case costs one lookup; bool is an int to isinstance.
            if type(value) not in kinds and (
                isinstance(value, bool) or not isinstance(value, kinds)
            ):
                raise _bad_row(data, name, f"must be {_WANTED[name]}, not {_shown(value)}", where)
            kwargs[name] = value
        for name in _REQUIRED:
            if name not in kwargs:
                raise _bad_row(data, name, f"is missing (it must be {_WANTED[name]})", where)
        if not ID_PATTERN.fullmatch(kwargs["id"]):
            raise _bad_row(data, "id", "is not a valid assignment id (like api-42-1f3a)", where)
        status = kwargs.get("status", Status.PENDING)
        if status not in _STATUSES:
            raise _bad_row(
                data, "status", f"must be {_WANTED['status']}, not {_shown(status)}", where
            )
        kwargs["status"] = Status(status)
        extra = kwargs.pop("extra", None)
        if extra:
            _read_extra(data, extra, kwargs, where)
        if "progress" not in kwargs:
            kwargs["progress"] = _progress_of(kwargs, extra or {})
        return cls(**kwargs)


# The typed fields kept under `extra`, and the key each has there when it is not its name.
_EXTRA_KEYS = {"restored": "restored_from_forge"}
_EXTRA_NAMES = (
    "continues", "continued_by", "retry_of", "retried_by", "not_before", "held", "restored",
    "base_sha", "argv", "files_in_scope", "cleaned", "briefing", "stage", "outcome",
    "files_declared", "reads_only", "files_changed", "ports", "setup",
)  # fmt: skip
_EXTRA_FIELD = {_EXTRA_KEYS.get(n, n): n for n in _EXTRA_NAMES}
# Keys older versions kept under `extra` that now live in `progress`.
_OLD_PROGRESS = {
    "last_message_id": "last_message_id",
    "last_retry_delay_ms": "last_retry_delay_ms",
    "files_touched": "files_touched",
    "result_raw": "result",
    "oversized": "oversized",
    "malformed_lines": "malformed_lines",
}


def _read_extra(
    data: Mapping[str, Any],
    extra: dict[str, Any],
    kwargs: dict[str, Any],
    where: str | os.PathLike[str] | None,
) -> None:
    """Move the keys of a record's `extra` onto their typed fields, checking each."""
    other: dict[str, Any] = {}
    for key, value in extra.items():
        name = _EXTRA_FIELD.get(key)
        if name is None:
            if key == "coordinator" and isinstance(value, dict):
                host, pid = value.get("host"), value.get("pid")
                kwargs["sender_host"] = host if isinstance(host, str) else None
                kwargs["sender_pid"] = pid if type(pid) is int else None
            elif key == "trail" and isinstance(value, dict):
                off = value.get("off")
                if off:
                    kwargs["trail_off"] = str(off)
                else:
                    kwargs["trail"] = dict(value)
            elif key not in _OLD_PROGRESS:
                other[key] = value
            continue
        kinds = _FIELD_KINDS[name]
        if type(value) not in kinds and (isinstance(value, bool) or not isinstance(value, kinds)):
            raise _bad_row(
                data, f"extra.{key}", f"must be {_WANTED[name]}, not {_shown(value)}", where
            )
        kwargs[name] = value
    if other:
        kwargs["other"] = other


def _progress_of(kwargs: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """The fold's state of a record written before `progress` existed."""
    progress: dict[str, Any] = {
        new: extra[old] for old, new in _OLD_PROGRESS.items() if extra.get(old) is not None
    }
    for column, key in (("session_id", "session_id"), ("num_turns", "turns"),
                        ("last_status", "last_status"), ("last_tool", "last_tool"),
                        ("cost_usd", "cost_usd"), ("duration_ms", "duration_ms"),
                        ("events_offset", "offset")):  # fmt: skip
        if kwargs.get(column) is not None:
            progress[key] = kwargs[column]
    return progress


# Computed once from the annotations above, so a new field is checked the day it is added:
# `coord status` builds every live row through from_dict, hundreds per call.
_KINDS: dict[str, tuple[tuple[type, ...], str]] = {
    "str": ((str,), "a string"),
    "int": ((int,), "an integer"),
    "float": ((float, int), "a number"),
    "bool": ((bool,), "true or false"),
    "Status": ((str,), f"{', '.join(list(Status)[:-1])} or {list(Status)[-1]}"),
    "dict[str, Any]": ((dict,), "an object"),
    "list[str]": ((list,), "a list"),
    "list[int]": ((list,), "a list"),
}


def _field_kinds() -> tuple[dict[str, tuple[type, ...]], dict[str, str], tuple[str, ...]]:
    """Return each field's accepted types, its description, and the fields with no default."""
    kinds: dict[str, tuple[type, ...]] = {}
    wanted: dict[str, str] = {}
    required: list[str] = []
    for f in dataclasses.fields(Assignment):
        annotation = str(f.type)
        types, wanted[f.name] = _KINDS[annotation.removesuffix(" | None")]
        kinds[f.name] = types
        if annotation.endswith(" | None"):
            kinds[f.name] += (type(None),)
            wanted[f.name] += " or null"
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    kinds["extra"], wanted["extra"] = (dict,), "an object"
    return kinds, wanted, tuple(required)


_FIELD_KINDS, _WANTED, _REQUIRED = _field_kinds()
_STATUSES = frozenset(Status)
# The record's top-level fields: every field up to `progress` (the rest go under `extra`).
_COLUMNS = tuple(
    f.name for f in dataclasses.fields(Assignment)
    if f.name not in (*_EXTRA_NAMES, "progress", "sender_host", "sender_pid", "trail",
                      "trail_off", "other")
)  # fmt: skip
# What from_dict reads at the top level of a record: the columns, progress and extra.
_TOP_KINDS = {k: v for k, v in _FIELD_KINDS.items() if k in (*_COLUMNS, "progress", "extra")}


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad_row(
    data: Mapping[str, Any], name: str, problem: str, where: str | os.PathLike[str] | None
) -> BoardError:
    row = data.get("id")
    label = f"assignment {row}" if isinstance(row, str) and row else "an assignment row"
    restore = "`coord resume --from-forge` puts a removed row back from its issue's trail"
    if where is None:
        place, restore = "the board file", f"`coord config` shows its board.path; {restore}"
    else:
        place = os.fspath(where)
    return BoardError(
        f"{label}: field {name} {problem}; edit or remove that row in {place} ({restore})"
    )
