"""Reconcile: what a machine's status probe means for each live assignment on the board.

Pure functions of an assignment row and its run's probe (plus, for a pending row, whether
the process that is dispatching it still lives).  They return the field changes to write;
`Coordinator.status` writes them in one board transaction.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .assignment import SESSION_ID_PATTERN, Assignment, Status
from .runtime.probe import MachineProbe, RunProbe

if TYPE_CHECKING:  # the parser is imported when there are events to fold, not before
    from .stream import RunProgress

__all__ = ["DISPATCH_GRACE", "MAX_EVENT_BYTES", "dispatch_may_be_in_flight", "fold", "reconcile"]

# A pending row whose dispatch may still be in flight in another process is left alone this long.
DISPATCH_GRACE = 300.0
# How long a rate-limited assignment waits when the CLI did not say.
RATE_LIMIT_WAIT = 60.0
_RESULT_TEXT = 2000
# Events read per run per status call (the rest waits for the next call); a line longer
# than this is never read whole: it is skipped and recorded as malformed.
MAX_EVENT_BYTES = 8 * 1024 * 1024
_MALFORMED_KEPT = 20
_EDIT_TOOLS = frozenset({"Write", "Edit", "MultiEdit", "NotebookEdit"})


def reconcile(
    a: Assignment, probe: MachineProbe, *, in_flight: Callable[[Assignment], bool]
) -> dict[str, Any]:
    """Work out the field changes for live assignment a from its machine's probe.

    `in_flight(a)` tells whether a pending row's dispatch may still be running in some
    process, in which case a missing run is not yet a lost one.  The ``extra`` of the
    result holds only the keys that changed.
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
        return _ended(fields, progress, run.exit)
    # An idle worker (thinking, or in a long tool call) has no new events: nothing to parse.
    fields = fold(a, run)[0] if run.events else {}
    if run.dispatching and a.status == Status.PENDING:
        return fields  # its dispatch is still running on the machine, whoever sent it
    if run.alive:
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


def _ended(
    fields: dict[str, Any], progress: RunProgress, exit: Mapping[str, Any]
) -> dict[str, Any]:
    from .stream import FailureClass, classify

    reason = exit.get("reason")
    code = exit.get("exit_code")
    finished = exit.get("finished_at")
    if reason == "dispatch_failed":  # the machine recorded why the worker never started
        fields.update(
            status=str(Status.FAILED),
            failure_class="dispatch_failed",
            exit_code=code if _is_int(code) else None,
            exit_reason=reason,
            error=str(exit.get("error") or "the dispatch failed on the machine"),
            finished_at=float(finished) if isinstance(finished, int | float) else time.time(),
        )
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
    if fclass == FailureClass.RATE_LIMITED:
        # Not a failed attempt: wait out the limit, then continue the session.
        wait = RATE_LIMIT_WAIT
        if progress.last_retry_delay_ms:
            wait = max(progress.last_retry_delay_ms / 1000, 1.0)
        until = max(fields["finished_at"] + wait, progress.rate_limited_until or 0.0)
        fields.update(
            status=str(Status.QUEUED),
            finished_at=None,
            extra={**fields.get("extra", {}), "not_before": until},
        )
    if reason == "busy":
        fields["error"] = "another worker was still running in its worktree"
    if exit.get("disk_full") and status == Status.FAILED:
        fields["error"] = (
            "the disk holding the run directory is full on the machine; free space there "
            f"and retry ({fields.get('error') or f'exit status {code}'})"
        )
    if status == Status.FAILED and not fields.get("error") and progress.result is None:
        fields["error"] = f"worker exited with status {code} ({reason}) and no result"
    return fields


def fold(a: Assignment, run: RunProbe) -> tuple[dict[str, Any], RunProgress]:
    """Fold the run's new events into a's fields; return the changes and the progress."""
    from .stream import Result, RunProgress, ToolUse, parse_line

    progress = RunProgress(
        session_id=a.session_id,
        turns=a.num_turns or 0,
        last_status=a.last_status,
        last_tool=a.last_tool,
        cost_usd=a.cost_usd,
        duration_ms=a.duration_ms,
    )
    raw_result = a.extra.get("result_raw")
    if isinstance(raw_result, dict):
        for event in parse_line(json.dumps(raw_result)):
            if isinstance(event, Result):
                progress.result = event
    delay = a.extra.get("last_retry_delay_ms")
    progress.last_retry_delay_ms = float(delay) if isinstance(delay, int | float) else None
    last_msg = a.extra.get("last_message_id")
    if isinstance(last_msg, str):
        progress.note_message(last_msg)  # resume the turn count across calls
    fields: dict[str, Any] = {}
    if not run.events or run.events_offset is None:
        return fields, progress
    data, offset, pos = run.events, run.events_offset, 0
    extra: dict[str, Any] = {}
    oversized = a.extra.get("oversized")  # inside a line too long to read whole
    if isinstance(oversized, dict):
        nl = data.find(b"\n")
        so_far = int(oversized.get("size") or 0)
        if nl < 0:
            extra["oversized"] = {**oversized, "size": so_far + len(data)}
            fields.update(events_offset=offset + len(data), extra=extra)
            return fields, progress
        done = {**oversized, "size": so_far + nl}
        extra.update(oversized=None, malformed_lines=_malformed(a, done))
        progress.malformed += 1
        pos = nl + 1
    end = data.rfind(b"\n") + 1
    if end <= pos:
        if len(data) - pos >= MAX_EVENT_BYTES:
            # No line end within a whole read: skip the line rather than ask for it again.
            extra["oversized"] = {"start": offset + pos, "size": len(data) - pos}
            fields.update(events_offset=offset + len(data), extra=extra)
        elif extra:
            fields.update(events_offset=offset + pos, extra=extra)
        return fields, progress
    last_id = last_msg
    touched = list(a.extra.get("files_touched", []))
    for line in data[pos:end].split(b"\n"):
        for event in parse_line(line, cwd=progress.cwd):
            progress.apply(event)
            msg = event.raw.get("message") if hasattr(event, "raw") else None
            if isinstance(msg, dict) and isinstance(msg.get("id"), str):
                last_id = msg["id"]
            if isinstance(event, ToolUse) and event.name in _EDIT_TOOLS:
                path = _relative(event.input, progress.cwd)
                if path and path not in touched and len(touched) < 200:
                    touched.append(path)
    session = progress.session_id
    if session is not None and not SESSION_ID_PATTERN.fullmatch(session):
        session = a.session_id  # only a UUID is ever kept (and so passed to --resume)
    fields.update(
        events_offset=offset + end,
        session_id=session,
        num_turns=progress.turns,
        last_status=progress.last_status,
        last_tool=progress.last_tool,
        cost_usd=progress.cost_usd,
        duration_ms=progress.duration_ms,
        extra={
            **extra,
            "last_message_id": last_id,
            "last_retry_delay_ms": progress.last_retry_delay_ms,
            "files_touched": touched,
        },
    )
    result = progress.result
    if result is not None:
        if result.result:
            fields["result"] = result.result[:_RESULT_TEXT]
        if result.is_error:
            errors = result.raw.get("errors")  # error_max_turns has these, and no text
            listed = "; ".join(str(e) for e in errors) if isinstance(errors, list) else ""
            fields["error"] = (result.result or listed)[:_RESULT_TEXT] or None
        # Re-folding later needs the result; it is the last event, so remember it.
        fields["extra"]["result_raw"] = result.raw
    return fields, progress


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _malformed(a: Assignment, line: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's record of lines it could not read, with one more (the last few kept)."""
    kept = a.extra.get("malformed_lines")
    earlier = [x for x in kept if isinstance(x, dict)] if isinstance(kept, list) else []
    return [*earlier, {"start": line["start"], "size": line["size"]}][-_MALFORMED_KEPT:]


def dispatch_may_be_in_flight(a: Assignment, host: str) -> bool:
    """Tell whether pending a may still be being dispatched by some coord process."""
    if time.time() - a.created_at > DISPATCH_GRACE:
        return False
    owner = a.extra.get("coordinator")
    if not isinstance(owner, dict) or owner.get("host") != host:
        return True
    pid = owner.get("pid")
    if pid == os.getpid():
        return False  # this process is not dispatching it right now
    return isinstance(pid, int) and _pid_alive(pid)


def _relative(tool_input: Mapping[str, Any], cwd: str | None) -> str | None:
    path = tool_input.get("file_path") or tool_input.get("notebook_path")
    if not isinstance(path, str) or not path:
        return None
    if cwd and path.startswith(cwd.rstrip("/") + "/"):
        return path[len(cwd.rstrip("/")) + 1 :]
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
