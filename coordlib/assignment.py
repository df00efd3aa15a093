"""The `Assignment`: one worker run for one issue on one machine, as the board keeps it."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TERMINAL", "Assignment", "Status"]


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
    def from_dict(cls, data: dict[str, Any]) -> Assignment:
        """Build from a board record, ignoring fields a newer version may have added."""
        kwargs = {k: v for k, v in data.items() if k in _FIELD_NAMES}
        kwargs["status"] = Status(kwargs.get("status", Status.PENDING))
        return cls(**kwargs)


# Computed once: building a board's worth of rows asks for them hundreds of times.
_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(Assignment))
