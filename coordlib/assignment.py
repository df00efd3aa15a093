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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_terminal(self) -> bool:
        """Tell whether the assignment has ended."""
        return self.status in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready record."""
        data = dataclasses.asdict(self)
        data["status"] = str(self.status)
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
            kinds = _FIELD_KINDS.get(name)
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
        return cls(**kwargs)


# Computed once from the annotations above, so a new field is checked the day it is added:
# `coord status` builds every live row through from_dict, hundreds per call.
_KINDS: dict[str, tuple[tuple[type, ...], str]] = {
    "str": ((str,), "a string"),
    "int": ((int,), "an integer"),
    "float": ((float, int), "a number"),
    "Status": ((str,), f"{', '.join(list(Status)[:-1])} or {list(Status)[-1]}"),
    "dict[str, Any]": ((dict,), "an object"),
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
    return kinds, wanted, tuple(required)


_FIELD_KINDS, _WANTED, _REQUIRED = _field_kinds()
_STATUSES = frozenset(Status)


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
