"""Reconcile: what a machine's status probe means for each live assignment on the board.

Pure functions of an assignment row and its run's probe (plus, for a pending row, whether
the process that is dispatching it still lives).  They return the changes to make, as
`Assignment` attributes; `Board.settle` checks and writes them in one transaction.  The
run's new events are folded by `coordlib.progress.RunProgress`, resumed from the row's own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .assignment import Assignment, Status
from .runtime.answers import MachineProbe, RunProbe
from .runtime.protocol import ExitReason

if TYPE_CHECKING:  # the parser is imported when there are events to fold, not before
    from .progress import RunProgress

__all__ = ["DISPATCH_GRACE", "MAX_EVENT_BYTES", "dispatch_may_be_in_flight", "fold", "reconcile"]

# A pending row whose dispatch may still be in flight in another process is left alone this long.
DISPATCH_GRACE = 300.0
# How long a rate-limited assignment waits when the CLI did not say.
RATE_LIMIT_WAIT = 60.0
# A worker's final text on the board: its head and its tail (where a reviewer's verdict and
# findings are) when it is longer; the whole of it is in the run's events.jsonl.
_RESULT_HEAD, _RESULT_TAIL = 2000, 6000
# Events read per run per status call; the rest waits for the next call (see progress.py).
MAX_EVENT_BYTES = 8 * 1024 * 1024


def reconcile(
    a: Assignment, probe: MachineProbe, *, in_flight: Callable[[Assignment], bool]
) -> dict[str, Any]:
    """Work out the field changes for live assignment a from its machine's probe.

    `in_flight(a)` tells whether a pending row's dispatch may still be running in some
    process, in which case a missing run is not yet a lost one.
    """
    run = probe.runs.get(a.id)
    if run is None:
        if a.status == Status.PENDING and in_flight(a):
            return {}
        return {
            "status": str(Status.LOST),
            "failure_class": "lost",
            "exit_reason": "vanished",
            "error": "its run directory is gone from the machine (rebooted or cleaned?)",
            "finished_at": time.time(),
        }
    if run.exit is not None:
        fields, progress = fold(a, run)
        unread = (
            run.events is not None
            and run.events_offset is not None
            and (run.events_offset + len(run.events) < run.size)
        )
        if unread:
            return fields  # more events to read before the result can be trusted
        return _ended(a, fields, progress, run.exit, _last_words(run.stderr))
    # An idle worker (thinking, or in a long tool call) has no new events: nothing to parse.
    fields = fold(a, run)[0] if run.events else {}
    if run.dispatching and a.status == Status.PENDING:
        return fields  # its dispatch is still running on the machine, whoever sent it
    if run.alive:
        if run.files is not None and list(run.files) != (a.files_changed or []):
            fields["files_changed"] = list(run.files)  # the file-conflict radar's
        if a.status == Status.PENDING:
            fields["status"] = str(Status.RUNNING)
            fields["started_at"] = a.started_at or time.time()
        return fields
    if a.status == Status.PENDING and in_flight(a):
        return fields
    fields.update(
        status=str(Status.LOST),
        failure_class="lost",
        exit_reason="launcher_gone",
        error="the launcher is gone without an exit record (machine rebooted or killed)",
        finished_at=time.time(),
    )
    return fields


def _setup(raw: object) -> dict[str, Any] | None:
    """The workspace setup's record in an exit.json (the machine's word: checked)."""
    if not isinstance(raw, dict):
        return None
    code, seconds, tail = raw.get("exit"), raw.get("seconds"), raw.get("tail")
    if not _is_int(code) or not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return None
    out: dict[str, Any] = {"exit": code, "seconds": round(float(seconds), 3),
                           "timed_out": raw.get("timed_out") is True}  # fmt: skip
    if isinstance(tail, str) and tail:
        out["tail"] = "".join(c if c.isprintable() or c == "\n" else "?" for c in tail[-2000:])
    return out


def _last_words(stderr: bytes | None) -> str:
    """The last line a worker wrote on stderr that says anything, cut to one line's length."""
    lines = (stderr or b"").decode("utf-8", "replace").splitlines()
    said = next((ln.strip() for ln in reversed(lines) if ln.strip()), "")
    return said if len(said) <= 300 else said[:299] + "…"


def _posted(comment: object) -> bool:
    """Whether a trail stage's record is a posted comment (not a claim, not absent)."""
    return comment is not None and comment != "posting"


def _ended(
    a: Assignment,
    fields: dict[str, Any],
    progress: RunProgress,
    exit: Mapping[str, Any],
    last_words: str = "",
) -> dict[str, Any]:
    from .outcomes import FailureClass, classify, failure_text, judge, read_outcome
    from .scope import outside

    reason = exit.get("reason")
    code = exit.get("exit_code")
    finished = exit.get("finished_at")
    if reason == ExitReason.DISPATCH_FAILED:  # the machine recorded why it never started
        fields.update(
            status=str(Status.FAILED),
            failure_class="dispatch_failed",
            exit_code=code if _is_int(code) else None,
            exit_reason=reason,
            error=str(exit.get("error") or "the dispatch failed on the machine"),
            finished_at=float(finished) if isinstance(finished, int | float) else time.time(),
        )
        # Nothing ran: like `Board.dispatch_failed`, no trail, unless its briefing is already
        # on the issue (then the ending follows it there).
        if not _posted((a.trail or {}).get("dispatch")):
            fields.update(trail=None, trail_off="the dispatch failed before the worker started")
        return fields
    reason = reason if isinstance(reason, str) else None  # the machine's file: untrusted
    status, fclass = classify(
        exit_code=code if _is_int(code) else None,
        exit_reason=reason,
        result=progress.result,
    )
    fields.update(
        status=str(status),
        failure_class=str(fclass) if fclass else None,
        exit_code=code if _is_int(code) else None,
        exit_reason=reason,
        finished_at=float(finished) if isinstance(finished, int | float) else time.time(),
    )
    facts = read_outcome(exit.get("outcome"))
    if facts is not None:
        since = (a.outcome or {}).get("since")
        if isinstance(since, str):
            facts["since"] = since
        facts["outside"] = outside(facts["files"], a.files_declared)
        fields["outcome"] = facts
        stuck = (progress.last_status or "").startswith("STUCK:")
        verdict = judge(facts) if status == Status.DONE and not a.reads_only else None
        if verdict is not None and not stuck:  # a worker that stops to ask owes no commit
            status, fclass = Status.FAILED, verdict
            fields.update(
                status=str(status),
                failure_class=str(fclass),
                error=failure_text(
                    verdict, facts, branch=a.branch, worktree=a.worktree, machine=a.machine
                ),
            )
    if fclass == FailureClass.RATE_LIMITED:
        # Not a failed attempt: wait out the limit, then continue the session.
        wait = RATE_LIMIT_WAIT
        if progress.last_retry_delay_ms:
            wait = max(progress.last_retry_delay_ms / 1000, 1.0)
        until = max(fields["finished_at"] + wait, progress.rate_limited_until or 0.0)
        fields.update(status=str(Status.QUEUED), finished_at=None, not_before=until)
    if reason == ExitReason.BUSY:
        fields["error"] = "another worker was still running in its worktree"
    setup = _setup(exit.get("setup"))
    if setup is not None:
        fields["setup"] = setup
        if fclass == FailureClass.SETUP_FAILED:
            how = "ran past its timeout" if setup["timed_out"] else f"exited {setup['exit']}"
            tail = setup.get("tail") or ""
            fields["error"] = (f"the workspace's setup {how} after {setup['seconds']:g} s; no "
                               f"worker started (setup.log ends: {tail[-300:]!r})")  # fmt: skip
    if exit.get("disk_full") and status == Status.FAILED:
        fields["error"] = (
            "the disk holding the run directory is full on the machine; free space there "
            f"and retry ({fields.get('error') or f'exit status {code}'})"
        )
    said = f": {last_words}" if last_words else ""
    command = a.argv[0] if a.argv else "claude"
    if fclass == FailureClass.CLAUDE_NOT_FOUND:
        fields["error"] = (
            f"`{command}` was not found on {a.machine} (exit 127{said}); install Claude Code "
            f"there, or set machines.{a.machine}.claude_command to its path"
        )
    elif fclass == FailureClass.NOT_EXECUTABLE:
        fields["error"] = (
            f"`{command}` could not be run on {a.machine} (exit 126{said}); check that it is "
            f"an executable for that machine (machines.{a.machine}.claude_command)"
        )
    elif fclass == FailureClass.WORKTREE_GONE:
        fields["error"] = f"its worktree {a.worktree} was gone from {a.machine}{said}"
    elif status == Status.FAILED and not fields.get("error") and progress.result is None:
        fields["error"] = f"worker exited with status {code} ({reason}) and no result{said}"
    return fields


def fold(a: Assignment, run: RunProbe) -> tuple[dict[str, Any], RunProgress]:
    """Fold the run's new events into a's progress; return the changes and the progress."""
    from .progress import RunProgress

    progress = RunProgress.from_dict(a.progress)
    if run.events is None or run.events_offset is None:
        return {}, progress
    if not progress.feed(run.events, run.events_offset):
        return {}, progress
    fields: dict[str, Any] = {
        "progress": progress.to_dict(),
        "events_offset": progress.offset,
        "session_id": progress.session_id or a.session_id,
        "num_turns": progress.turns,
        "last_status": progress.last_status,
        "last_tool": progress.last_tool,
        "cost_usd": progress.cost_usd,
        "duration_ms": progress.duration_ms,
    }
    result = progress.result
    if result is not None:
        if result.result:
            fields["result"] = _shortened(result.result)
        if result.is_error:
            errors = result.raw.get("errors")  # error_max_turns has these, and no text
            listed = "; ".join(str(e) for e in errors) if isinstance(errors, list) else ""
            fields["error"] = (result.result or listed)[:_RESULT_HEAD] or None
    return fields, progress


def dispatch_may_be_in_flight(a: Assignment, host: str) -> bool:
    """Tell whether pending a may still be being dispatched by some coord process."""
    if time.time() - a.created_at > DISPATCH_GRACE:
        return False
    if a.sender_host != host:
        return True
    if a.sender_pid == os.getpid():
        return False  # this process is not dispatching it right now
    return a.sender_pid is not None and _pid_alive(a.sender_pid)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _shortened(text: str) -> str:
    """Return a worker's final text, or its head and tail with a note between them."""
    if len(text) <= _RESULT_HEAD + _RESULT_TAIL:
        return text
    cut = len(text) - _RESULT_HEAD - _RESULT_TAIL
    note = f"\n\n[… {cut:,} characters cut: see coord log]\n\n"
    return f"{text[:_RESULT_HEAD]}{note}{text[-_RESULT_TAIL:]}"
