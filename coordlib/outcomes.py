"""How a finished run ends on the board: its status and, when not done, its failure class.

Decided from the launcher's exit record and the run's final `Result` event, never from the
result's ``subtype`` alone, which says ``success`` even when the API's retries ran out; and
then from what the run left behind (the exit record's ``outcome``, checked on the machine as
the run ended): a worker that says it is done but left no commit, or left changes
uncommitted, is not done.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .assignment import Status
from .runtime.protocol import ExitCode, ExitReason

if TYPE_CHECKING:
    from .stream import Result

__all__ = ["FAILURE_CLASSES", "FailureClass", "classify", "failure_text", "judge", "read_outcome",
           "summary"]  # fmt: skip


class FailureClass(enum.StrEnum):
    """Why an assignment did not end DONE (the board's ``failure_class``)."""

    LOST = "lost"  # the run vanished with no exit record
    STOPPED = "stopped"  # someone stopped it
    STALLED = "stalled"  # no output for stall_timeout; the launcher killed it
    TIMED_OUT = "timed_out"  # ran past max_runtime; the launcher killed it
    MAX_TURNS = "max_turns"  # hit --max-turns
    OVERLOADED = "overloaded"  # API 529 until retries ran out
    RATE_LIMITED = "rate_limited"  # API 429 until retries ran out
    AUTH_ERROR = "auth_error"  # API 401/403: the key is wrong or lacks access
    API_ERROR = "api_error"  # any other API status
    UNREACHABLE_API = "unreachable_api"  # no API status at all: the server is down
    EXECUTION_ERROR = "execution_error"  # an error_* result other than max turns, no API status
    CRASHED = "crashed"  # the CLI exited without a result
    CLAUDE_NOT_FOUND = "claude_not_found"  # the worker's command was not found (exit 127)
    NOT_EXECUTABLE = "not_executable"  # the worker's command could not be run (exit 126)
    WORKTREE_GONE = "worktree_gone"  # the worktree vanished before the worker started
    DONE_EMPTY = "done_empty"  # it said it was done, and left no commit
    UNCOMMITTED = "uncommitted"  # it said it was done, and left changes uncommitted
    SETUP_FAILED = "setup_failed"  # the workspace's setup failed: no worker started


FAILURE_CLASSES = frozenset(FailureClass)

_API_STATUS_CLASS = {
    529: FailureClass.OVERLOADED,
    429: FailureClass.RATE_LIMITED,
    401: FailureClass.AUTH_ERROR,
    403: FailureClass.AUTH_ERROR,
}


# The worker never ran: how its launcher's subshell or the shell's exec reported it.
_NO_WORKER = {
    127: FailureClass.CLAUDE_NOT_FOUND,
    126: FailureClass.NOT_EXECUTABLE,
    ExitCode.WORKTREE_GONE: FailureClass.WORKTREE_GONE,
}


def classify(
    *,
    exit_code: int | None,
    exit_reason: str | None,
    result: Result | None,
    run_present: bool = True,
) -> tuple[Status, FailureClass | None]:
    """Decide a finished run's terminal status and failure class."""
    if not run_present or (exit_reason is None and exit_code is None):
        return Status.LOST, FailureClass.LOST
    if exit_reason == ExitReason.STOPPED:
        return Status.STOPPED, FailureClass.STOPPED
    if exit_reason == ExitReason.SETUP_FAILED:
        return Status.FAILED, FailureClass.SETUP_FAILED
    # A successful result is the worker's own word that it finished: whatever killed the
    # process afterwards (the grace kill of a lingering CLI, a watchdog) changes nothing.
    if result is not None and not result.is_error:
        return Status.DONE, None
    if exit_reason == ExitReason.STALLED:
        return Status.FAILED, FailureClass.STALLED
    if exit_reason == ExitReason.TIMED_OUT:
        return Status.FAILED, FailureClass.TIMED_OUT
    if result is None:
        if exit_reason == ExitReason.EXITED and exit_code in _NO_WORKER:
            return Status.FAILED, _NO_WORKER[exit_code]
        # Exit 0 without a result is no success either: the worker said nothing.
        return Status.FAILED, FailureClass.CRASHED
    # Exhausted retries end with subtype "success" and is_error true, so read the status.
    if result.subtype == "error_max_turns":
        return Status.FAILED, FailureClass.MAX_TURNS
    if result.api_error_status is not None:
        return Status.FAILED, _API_STATUS_CLASS.get(result.api_error_status, FailureClass.API_ERROR)
    if result.subtype and result.subtype.startswith("error_"):
        return Status.FAILED, FailureClass.EXECUTION_ERROR
    return Status.FAILED, FailureClass.UNREACHABLE_API


# -- what the run left behind ------------------------------------------------------------------

_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
_RESCUE = re.compile(r"refs/coord/rescue/[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
_COUNTS = ("commits", "ahead", "dirty", "untracked", "files_total")
_MAX_FILES = 200
_MAX_PATH = 1024


def read_outcome(raw: object) -> dict[str, Any] | None:
    """Return the outcome facts of an exit record, checked, or None when it has none.

    The record is the machine's file, which the worker could have written: every value is
    checked for its kind and shape, and what fails a check is dropped (an unknown count is
    None, never a guess).
    """
    if not isinstance(raw, Mapping):
        return None
    out: dict[str, Any] = {}
    for key in ("start", "head", "base"):
        value = raw.get(key)
        out[key] = value if isinstance(value, str) and _SHA.fullmatch(value) else None
    if out["head"] is None:
        return None  # no commit to speak of: the worktree was gone or is no repo
    for key in _COUNTS:
        value = raw.get(key)
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        out[key] = value if ok else None
    for key in ("files", "uncommitted"):
        paths = raw.get(key)
        out[key] = [
            f for f in paths[:_MAX_FILES] if isinstance(f, str) and 0 < len(f) <= _MAX_PATH
        ] if isinstance(paths, list) else []  # fmt: skip
    rescue = raw.get("rescue")
    out["rescue"] = rescue if isinstance(rescue, str) and _RESCUE.fullmatch(rescue) else None
    conflicts = raw.get("conflicts")
    out["conflicts"] = conflicts if isinstance(conflicts, bool) else None
    return out


def judge(facts: Mapping[str, Any]) -> FailureClass | None:
    """Return why a run that reported success is not done, or None when it is.

    Changes left uncommitted come first (they are the work at risk); then a run that made
    no commit of its own (or, when its start is unknown, a branch with none beyond its base).
    """
    if facts.get("dirty"):
        return FailureClass.UNCOMMITTED
    made = facts.get("commits")
    since = facts.get("since")  # a continued session's: the commit its first run began at
    if isinstance(since, str) and facts.get("head"):
        made = 0 if facts["head"] == since else max(made or 0, 1)
    if made == 0 or (made is None and facts.get("ahead") == 0):
        return FailureClass.DONE_EMPTY
    return None


def _files(paths: Sequence[str], total: int | None, limit: int = 5) -> str:
    shown = ", ".join(paths[:limit])
    more = (total or len(paths)) - min(len(paths), limit)
    return f"{shown} and {more} more" if more > 0 else shown


def summary(facts: Mapping[str, Any], *, branch: str, base: str = "its base") -> str:
    """Say in one line what a run left behind (coord's words: paths come quoted by git)."""
    commits, ahead = facts.get("commits"), facts.get("ahead")
    parts = []
    if commits is not None:
        parts.append(f"{commits} new commit{'s' if commits != 1 else ''} on {branch}")
    if ahead is not None:
        parts.append(f"{ahead} ahead of {base}")
    if facts.get("files_total"):
        parts.append(f"{facts['files_total']} file(s) changed")
    if facts.get("dirty"):
        parts.append(f"{facts['dirty']} left uncommitted")
    if facts.get("outside"):
        parts.append(f"outside the issue's declared files: {_files(facts['outside'], None)}")
    if facts.get("conflicts"):
        parts.append(f"no longer merges cleanly onto {base}")
    return "; ".join(parts)


def failure_text(fclass: FailureClass, facts: Mapping[str, Any], *, branch: str,
                 worktree: str, machine: str, base: str = "its base") -> str:  # fmt: skip
    """The error an outcome failure records: what was found, and where the work is."""
    if fclass == FailureClass.UNCOMMITTED:
        dirty = facts.get("dirty") or 0
        where = f"; saved at {facts['rescue']} on {machine}" if facts.get("rescue") else ""
        files = _files(facts.get("uncommitted") or [], dirty)
        return (
            f"it reported success but left {dirty} uncommitted or untracked file(s) "
            f"({files}): they are kept in {worktree}{where}; commit what belongs to the "
            f"change (`coord fix`), or remove the rest"
        )
    ahead = facts.get("ahead")
    beyond = f" ({ahead} commit(s) beyond {base})" if ahead is not None else ""
    return f"it reported success but made no commit on {branch}{beyond}; nothing was done"
