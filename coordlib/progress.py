"""`RunProgress`: what a run's events say so far, the one place events become progress.

It folds the typed events of `coordlib.stream` into the facts the board shows (session,
turns, the last ``STATUS:`` line and tool, cost, the result, the files the worker edited),
and keeps what it needs to go on later: how many bytes of ``events.jsonl`` it has read, the
last message id (a message's content blocks arrive as separate events), the result, and a
line too long to read whole.  It serialises to a small dict that lives on the board row, so
`status`, `reconcile` and `watch` fold alike and a fold resumes exactly where the last one
stopped; no event is ever folded twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .assignment import SESSION_ID_PATTERN
from .stream import (
    ApiRetry,
    Event,
    Init,
    Malformed,
    Progress,
    RateLimit,
    Result,
    ToolUse,
    _dict,
    _str,
    _summarize,
    parse_line,
)

__all__ = ["MAX_EVENT_LINE", "RunProgress", "fold"]

# A line longer than this is never read whole: it is skipped and recorded as malformed.  It is
# also the most a status reads of one run at a time.
MAX_EVENT_LINE = 8 * 1024 * 1024
_EDIT_TOOLS = frozenset({"Write", "Edit", "MultiEdit", "NotebookEdit"})
_FILES_KEPT = 200
_MALFORMED_KEPT = 20


@dataclass
class RunProgress:
    """What a run's events say so far, and where in its event log the fold stands."""

    session_id: str | None = None  # only ever a UUID: it may be passed to --resume
    model: str | None = None
    cwd: str | None = None
    turns: int = 0
    last_status: str | None = None  # "STATUS: …" or "STUCK: …"
    last_tool: str | None = None  # "Edit auth/x.py"
    cost_usd: float | None = None
    duration_ms: int | None = None
    result: Result | None = None
    malformed: int = 0
    retries: int = 0
    rate_limited_until: float | None = None  # epoch seconds, while the account is limited
    last_retry_delay_ms: float | None = None  # the CLI's last back-off (429s honour retry-after)
    files_touched: list[str] = field(default_factory=list)  # relative to the worktree
    # Where the fold stands: bytes of events.jsonl read, a line being skipped, lines skipped.
    offset: int = field(default=0, compare=False)
    oversized: tuple[int, int] | None = field(default=None, compare=False)  # (start, size)
    malformed_lines: list[tuple[int, int]] = field(default_factory=list, compare=False)
    last_message_id: str | None = field(default=None, compare=False)
    _message_ids: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    # -- events ------------------------------------------------------------------------
    def apply(self, event: Event) -> None:
        """Fold one event in."""
        if isinstance(event, Malformed):
            self.malformed += 1
            return
        raw = event.raw
        # Any event carries the session id, so a watcher that starts mid-file still learns it.
        if self.session_id is None:
            self._session(_str(raw, "session_id"))
        if raw.get("type") == "assistant":
            self._assistant(raw)
        if isinstance(event, Init):
            self._session(event.session_id)
            self.model = event.model or self.model
            self.cwd = event.cwd or self.cwd
        elif isinstance(event, Progress):
            self.last_status = f"{event.kind}: {event.text}"
        elif isinstance(event, ToolUse):
            summary = _summarize(event.name, event.input, event.cwd or self.cwd)
            self.last_tool = f"{event.name} {summary}".rstrip()
            if event.name in _EDIT_TOOLS:
                self._touched(event.input)
        elif isinstance(event, ApiRetry):
            self.retries += 1
            self.last_retry_delay_ms = event.retry_delay_ms or self.last_retry_delay_ms
        elif isinstance(event, RateLimit):
            limited = event.status not in (None, "allowed", "allowed_warning")
            self.rate_limited_until = event.resets_at if limited else None
        elif isinstance(event, Result):
            self.result = event
            self._session(event.session_id)
            if event.num_turns is not None:
                self.turns = event.num_turns
            self.cost_usd = event.total_cost_usd
            self.duration_ms = event.duration_ms

    def _session(self, value: str | None) -> None:
        # The stream is the model's output: only a UUID may ever reach `--resume`.
        if value is not None and SESSION_ID_PATTERN.fullmatch(value):
            self.session_id = value

    def _assistant(self, raw: dict[str, Any]) -> None:
        message = _dict(raw, "message")
        key = _str(message, "id") or _str(raw, "uuid")
        # The CLI reports an API failure as a "<synthetic>" assistant message: no turn.
        synthetic = _str(message, "model") == "<synthetic>"
        if key is not None:
            self.last_message_id = key
            if key not in self._message_ids and self.result is None and not synthetic:
                self._message_ids.add(key)
                self.turns += 1
        if not synthetic:
            self.model = self.model or _str(message, "model")

    def _touched(self, tool_input: Mapping[str, Any]) -> None:
        path = tool_input.get("file_path") or tool_input.get("notebook_path")
        if not isinstance(path, str) or not path:
            return
        base = (self.cwd or "").rstrip("/")
        if base and path.startswith(base + "/"):
            path = path[len(base) + 1 :]
        if path not in self.files_touched and len(self.files_touched) < _FILES_KEPT:
            self.files_touched.append(path)

    # -- bytes -------------------------------------------------------------------------
    def feed(self, data: bytes, offset: int) -> bool:
        """Fold the complete lines of `data`, the bytes of events.jsonl from `offset`.

        Bytes already folded are skipped, an unfinished last line waits for the next
        call, and a line of `MAX_EVENT_LINE` or more is skipped and recorded (its start and
        size) rather than read again and again.  Return whether anything was folded.
        """
        if offset > self.offset or offset + len(data) <= self.offset:
            return False  # not contiguous with what was folded: nothing to do here
        data = data[self.offset - offset :]
        start = self.offset
        pos = 0
        if self.oversized is not None:
            nl = data.find(b"\n")
            first, size = self.oversized
            if nl < 0:
                self.oversized = (first, size + len(data))
                self.offset += len(data)
                return True
            self._skipped(first, size + nl)
            pos = nl + 1
        end = data.rfind(b"\n") + 1
        if end <= pos:
            if len(data) - pos >= MAX_EVENT_LINE:
                self.oversized = (start + pos, len(data) - pos)
                pos = len(data)
            self.offset = start + pos
            return pos > 0
        for line in data[pos:end].split(b"\n"):
            for event in parse_line(line, cwd=self.cwd):
                self.apply(event)
        self.offset = start + end
        return True

    def _skipped(self, start: int, size: int) -> None:
        self.oversized = None
        self.malformed += 1
        self.malformed_lines = [*self.malformed_lines, (start, size)][-_MALFORMED_KEPT:]

    # -- the board's form ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready state the board keeps (the result as its raw event)."""
        counters = {"turns": self.turns, "malformed": self.malformed, "retries": self.retries,
                    "offset": self.offset}  # fmt: skip
        facts = {
            "session_id": self.session_id,
            "model": self.model,
            "cwd": self.cwd,
            "last_status": self.last_status,
            "last_tool": self.last_tool,
            "cost_usd": self.cost_usd,
            "duration_ms": self.duration_ms,
            "rate_limited_until": self.rate_limited_until,
            "last_retry_delay_ms": self.last_retry_delay_ms,
            "last_message_id": self.last_message_id,
        }
        data: dict[str, Any] = {k: v for k, v in counters.items() if v}
        data.update((k, v) for k, v in facts.items() if v is not None)
        if self.files_touched:
            data["files_touched"] = list(self.files_touched)
        if self.result is not None:
            data["result"] = self.result.raw
        if self.oversized is not None:
            data["oversized"] = list(self.oversized)
        if self.malformed_lines:
            data["malformed_lines"] = [list(x) for x in self.malformed_lines]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunProgress:
        """Rebuild from `to_dict`'s form; values of the wrong kind are left out."""
        p = cls(
            session_id=_text(data, "session_id"),
            model=_text(data, "model"),
            cwd=_text(data, "cwd"),
            turns=_count(data, "turns"),
            last_status=_text(data, "last_status"),
            last_tool=_text(data, "last_tool"),
            cost_usd=_number(data, "cost_usd"),
            duration_ms=_count(data, "duration_ms") if "duration_ms" in data else None,
            malformed=_count(data, "malformed"),
            retries=_count(data, "retries"),
            rate_limited_until=_number(data, "rate_limited_until"),
            last_retry_delay_ms=_number(data, "last_retry_delay_ms"),
            files_touched=[x for x in data.get("files_touched") or () if isinstance(x, str)],
            offset=_count(data, "offset"),
            last_message_id=_text(data, "last_message_id"),
        )
        if p.session_id is not None and not SESSION_ID_PATTERN.fullmatch(p.session_id):
            p.session_id = None
        if p.last_message_id is not None:
            p._message_ids.add(p.last_message_id)  # a message split across two reads
        raw = data.get("result")
        if isinstance(raw, dict):
            p.result = next((e for e in _events_of(raw) if isinstance(e, Result)), None)
        p.oversized = _pair(data.get("oversized"))
        p.malformed_lines = [x for x in map(_pair, data.get("malformed_lines") or ()) if x]
        return p


def fold(events: Iterable[Event]) -> RunProgress:
    """Fold events into a fresh `RunProgress`."""
    progress = RunProgress()
    for event in events:
        progress.apply(event)
    return progress


def _events_of(raw: dict[str, Any]) -> list[Event]:
    from .stream import _events

    return _events(raw, None)


def _text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _count(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _number(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _pair(value: Any) -> tuple[int, int] | None:
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in value)
    ):
        return (value[0], value[1])
    return None
