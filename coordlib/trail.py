"""The durable trail: what coordlib writes on an issue, and how to read it back.

Every dispatch posts its briefing as an issue comment, and every ending posts a
comment too.  Each carries a hidden, machine-readable marker, an HTML comment
``<!-- coord:{json} -->``, so a person reads the comment and `coord resume
--from-forge` rebuilds a lost board from the markers alone.

The marker's JSON never contains ``--`` (which would end an HTML comment early):
hyphens inside strings are written as ``\\u002d`` where two would meet.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from .assignment import Assignment, Status

__all__ = [
    "MARKER_VERSION",
    "STATUS_LABELS",
    "briefing_comment",
    "ending_comment",
    "make_marker",
    "parse_markers",
]

MARKER_VERSION = 1
_MARKER = re.compile(r"<!-- coord:(\{.*?\}) -->", re.DOTALL)
# The fields a marker carries: enough to rebuild the board row.
_FIELDS = (
    "id", "machine", "repo", "issue", "branch", "model", "tier", "title", "worktree",
    "run_dir", "attempt", "created_at", "session_id", "status", "failure_class",
    "exit_reason", "cost_usd", "num_turns", "duration_ms", "finished_at",
)  # fmt: skip

# Pipeline labels on issues; `coord issues` sorts issues into sections by them.
STATUS_LABELS = {
    "refining": "status:refining",
    "ready": "status:ready",
    "in_progress": "status:in-progress",
    "done": "status:done",
}


def make_marker(stage: str, a: Assignment, **more: Any) -> str:
    """Return the hidden marker for assignment a at `stage` (dispatch, done, failed, …)."""
    data: dict[str, Any] = {"v": MARKER_VERSION, "stage": stage}
    row = a.to_dict()
    data.update({k: row[k] for k in _FIELDS if row.get(k) is not None})
    for key in ("retry_of", "continues"):
        if a.extra.get(key):
            data[key] = a.extra[key]
    data.update(more)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    while "--" in text:  # only possible inside strings, where \u002d means the same
        text = text.replace("--", "-\\u002d")
    return f"<!-- coord:{text} -->"


def parse_markers(bodies: Iterable[str]) -> list[dict[str, Any]]:
    """Return every well-formed marker found in the comment bodies, oldest first."""
    found: list[dict[str, Any]] = []
    for body in bodies:
        for match in _MARKER.finditer(body):
            try:
                data = json.loads(match.group(1))
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict) and isinstance(data.get("id"), str) and data.get("stage"):
                found.append(data)
    return found


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def briefing_comment(a: Assignment, briefing: str) -> str:
    """The comment a dispatch posts: who works on it, where, and the briefing itself."""
    verb = "continues" if a.extra.get("continues") else "dispatched"
    head = (
        f"**coord** {verb} `{a.id}` on `{a.machine}` with `{a.model}`, "
        f"branch `{a.branch}` (attempt {a.attempt})."
    )
    if a.extra.get("retry_of"):
        head += f" It retries `{a.extra['retry_of']}`."
    if a.extra.get("continues"):
        head += f" It continues `{a.extra['continues']}`, session `{a.session_id}`."
    fence = _fence(briefing)
    return (
        f"{head}\n\n<details><summary>Briefing</summary>\n\n"
        f"{fence}markdown\n{briefing.rstrip()}\n{fence}\n\n</details>\n\n"
        f"{make_marker('dispatch', a)}\n"
    )


def _duration(ms: int | None) -> str:
    if not ms:
        return ""
    s = ms // 1000
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def ending_comment(a: Assignment) -> str:
    """The comment posted when an assignment ends (done, failed, stopped, lost, queued)."""
    facts = [x for x in (
        _duration(a.duration_ms),
        f"{a.num_turns} turns" if a.num_turns else "",
        f"${a.cost_usd:.4f}" if a.cost_usd else "",
    ) if x]  # fmt: skip
    tail = f" ({', '.join(facts)})" if facts else ""
    if a.status == Status.DONE:
        head = f"**coord** `{a.id}` is done on branch `{a.branch}`{tail}."
        body = a.result or a.last_status or ""
    elif a.status == Status.QUEUED:
        head = f"**coord** `{a.id}` hit an API rate limit{tail}; it will continue by itself."
        body = ""
    else:
        why = a.failure_class or a.exit_reason or str(a.status)
        head = f"**coord** `{a.id}` ended as **{a.status}** ({why}){tail}."
        body = a.error or ""
    quoted = "\n".join(f"> {line}" if line else ">" for line in body.strip().splitlines())
    text = head + (f"\n\n{quoted}" if quoted else "")
    return f"{text}\n\n{make_marker(str(a.status), a)}\n"
