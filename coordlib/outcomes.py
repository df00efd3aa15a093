"""How a finished run ends on the board: its status and, when not done, its failure class.

Decided from the launcher's exit record and the run's final `Result` event, never from the
result's ``subtype`` alone, which says ``success`` even when the API's retries ran out.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from .assignment import Status
from .runtime.protocol import ExitCode, ExitReason

if TYPE_CHECKING:
    from .stream import Result

__all__ = ["FAILURE_CLASSES", "FailureClass", "classify"]


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
