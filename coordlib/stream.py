"""Claude Code stream-json, parsed into typed events; pure functions, no I/O.

``claude -p PROMPT --output-format stream-json --verbose`` writes one JSON object per line:
a ``system``/``init`` event, ``assistant`` events (one per content block, sharing the
message id), ``user`` events carrying tool results, ``system``/``api_retry`` events while
the API is retried, ``rate_limit_event`` notices, and a final ``result``.  `parse_line`
turns one line into a list of events and never raises: anything it cannot read becomes
`Malformed`, anything it does not know becomes `Other`.  `coordlib.event_view` shows each
as the line ``coord watch`` prints; `coordlib.progress.RunProgress` folds events into what
the board keeps, and `coordlib.outcomes.classify` decides how a finished run ends.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

__all__ = [
    "ApiRetry",
    "AssistantText",
    "Event",
    "Init",
    "Malformed",
    "Other",
    "Progress",
    "RateLimit",
    "Reconnected",
    "Reconnecting",
    "Result",
    "ToolResult",
    "ToolUse",
    "one_line",
    "parse_line",
    "parse_lines",
]

_SHORT = 100  # characters of a command, text or argument shown on one line
_PATH_TOOLS = frozenset({"Edit", "Write", "Read", "MultiEdit", "NotebookEdit"})
_MAIN_ARGUMENT = {
    "Bash": "command",
    "Grep": "pattern",
    "Glob": "pattern",
    "WebFetch": "url",
    "WebSearch": "query",
    "Task": "description",
    "Agent": "description",  # Task's name in later releases
}
# Models sometimes dress the marker as a list item or in bold (`- **STATUS:** x`); accept that,
# but only the upper-case words, so prose such as "Status: green" is not taken for a report.
_PROGRESS = re.compile(r"^[\s>*_`-]*(STATUS|STUCK)[*_`]*:[*_`]*\s*(.*?)\s*$")


@dataclass(frozen=True)
class Init:
    """The CLI started a session."""

    session_id: str | None
    model: str | None
    cwd: str | None
    tools: tuple[str, ...]
    version: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class AssistantText:
    """A text block the model wrote."""

    text: str
    message_id: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class ToolUse:
    """A tool call the model made."""

    name: str
    input: dict[str, Any]
    tool_use_id: str | None
    message_id: str | None
    cwd: str | None = None  # the session's working directory, to show paths relative to it
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def summary(self) -> str:
        """Return the tool's main argument, shortened to one line."""
        return _summarize(self.name, self.input, self.cwd)


@dataclass(frozen=True)
class ToolResult:
    """What a tool call returned."""

    tool_use_id: str | None
    is_error: bool
    text: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class ApiRetry:
    """The CLI is retrying a failed API request."""

    attempt: int | None
    max_retries: int | None
    retry_delay_ms: float | None
    error_status: int | None
    error: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class RateLimit:
    """The account's usage-limit state, as the CLI reports it."""

    status: str | None  # allowed | allowed_warning | rejected | …
    resets_at: float | None  # epoch seconds
    rate_limit_type: str | None  # five_hour | seven_day | …
    overage_status: str | None
    is_using_overage: bool | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Result:
    """The run's final event."""

    subtype: str | None
    is_error: bool
    api_error_status: int | None
    duration_ms: int | None
    num_turns: int | None
    result: str | None
    session_id: str | None
    total_cost_usd: float | None
    usage: dict[str, Any]
    permission_denials: tuple[dict[str, Any], ...]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Progress:
    """A ``STATUS:`` or ``STUCK:`` line the worker wrote to report on itself."""

    kind: Literal["STATUS", "STUCK"]
    text: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Other:
    """A well-formed event this module does not interpret."""

    type: str
    subtype: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Malformed:
    """A line that is not a JSON object."""

    line: str
    error: str


@dataclass(frozen=True)
class Reconnecting:
    """Not the worker's: watch lost its connection to the run's machine and is retrying."""

    machine: str
    error: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Reconnected:
    """Not the worker's: watch is connected again, and goes on from where it was."""

    machine: str
    after_s: float
    line: int  # the line it resumes at (1: the first line this watch read; the run's first from 0)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


Event: TypeAlias = (
    Init
    | AssistantText
    | ToolUse
    | ToolResult
    | ApiRetry
    | RateLimit
    | Result
    | Progress
    | Other
    | Malformed
    | Reconnecting
    | Reconnected
)


# -- reading fields defensively: the CLI's fields change between releases ----------------------


def _str(data: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str):
            return value
    return None


def _int(data: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value):
            return int(value)
    return None


def _float(data: dict[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def _bool(data: dict[str, Any], *keys: str) -> bool | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, bool):
            return value
    return None


def _dict(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def one_line(text: str, limit: int = _SHORT) -> str:
    """Return the first non-blank line of text, cut to limit, marked when anything was dropped."""
    lines = [line.strip() for line in text.strip().splitlines()]
    first = lines[0] if lines else ""
    if len(first) > limit:
        return first[: limit - 1] + "…"
    return first + " …" if len(lines) > 1 else first


def _relative(path: str, cwd: str | None) -> str:
    """Show path relative to cwd when it lies inside it (string work only: paths are remote)."""
    base = (cwd or "").rstrip("/")
    if not base or not path.startswith("/"):
        return path
    if path == base:
        return "."
    return path[len(base) + 1 :] if path.startswith(base + "/") else path


def _summarize(name: str, tool_input: dict[str, Any], cwd: str | None) -> str:
    if name in _PATH_TOOLS:
        path = _str(tool_input, "file_path", "notebook_path", "path")
        if path is not None:
            return _relative(path, cwd)
    value = _str(tool_input, _MAIN_ARGUMENT.get(name, ""))
    if value is None:
        value = next((v for v in tool_input.values() if isinstance(v, str) and v.strip()), "")
    return one_line(value)


# -- parsing ----------------------------------------------------------------------------------


def parse_line(line: str | bytes, *, cwd: str | None = None) -> list[Event]:
    """Parse one stream-json line into its events; never raise.

    cwd, when known, lets tool summaries show paths relative to the worktree.
    """
    text = line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line
    text = text.rstrip("\r\n")
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError covers JSONDecodeError
        return [Malformed(text, f"invalid JSON: {exc}")]
    if not isinstance(data, dict):
        return [Malformed(text, f"not a JSON object but {type(data).__name__}")]
    try:
        return _events(data, cwd)
    except Exception as exc:  # a watcher must survive any shape a future CLI emits
        return [Malformed(text, f"unreadable {data.get('type')!r} event: {exc!r}")]


def parse_lines(lines: Iterable[str | bytes], *, cwd: str | None = None) -> Iterator[Event]:
    """Parse stream-json lines in order, relating tool paths to the session's cwd."""
    for line in lines:
        for event in parse_line(line, cwd=cwd):
            if isinstance(event, Init) and event.cwd:
                cwd = event.cwd
            yield event


def _events(data: dict[str, Any], cwd: str | None) -> list[Event]:
    kind = _str(data, "type") or ""
    subtype = _str(data, "subtype")
    if kind == "system" and subtype == "init":
        tools = data.get("tools")
        if not isinstance(tools, list):
            tools = []
        return [
            Init(
                session_id=_str(data, "session_id"),
                model=_str(data, "model"),
                cwd=_str(data, "cwd"),
                tools=tuple(t for t in tools if isinstance(t, str)),
                version=_str(data, "claude_code_version", "version"),
                raw=data,
            )
        ]
    if kind == "system" and subtype == "api_retry":
        return [
            ApiRetry(
                attempt=_int(data, "attempt"),
                max_retries=_int(data, "max_retries"),
                retry_delay_ms=_float(data, "retry_delay_ms"),
                error_status=_int(data, "error_status"),
                error=_str(data, "error"),
                raw=data,
            )
        ]
    if kind == "rate_limit_event" or (kind == "system" and "rate_limit" in (subtype or "")):
        return [_rate_limit(data)]
    if kind == "result":
        return [_result(data)]
    if kind == "assistant":
        return _assistant(data, cwd)
    if kind == "user":
        return _user(data)
    return [Other(kind, subtype, raw=data)]


def _rate_limit(data: dict[str, Any]) -> RateLimit:
    info = data.get("rate_limit_info")
    fields = info if isinstance(info, dict) else data
    resets_at = _float(fields, "resetsAt", "resets_at", "reset")
    if resets_at is not None and resets_at > 1e11:  # milliseconds, not seconds
        resets_at /= 1000
    if resets_at is not None and not 0 < resets_at < 1e11:  # not a time datetime can show
        resets_at = None
    return RateLimit(
        status=_str(fields, "status"),
        resets_at=resets_at,
        rate_limit_type=_str(fields, "rateLimitType", "rate_limit_type"),
        overage_status=_str(fields, "overageStatus", "overage_status"),
        is_using_overage=_bool(fields, "isUsingOverage", "is_using_overage"),
        raw=data,
    )


def _result(data: dict[str, Any]) -> Result:
    subtype = _str(data, "subtype")
    is_error = _bool(data, "is_error")
    denials = data.get("permission_denials")
    return Result(
        subtype=subtype,
        is_error=is_error if is_error is not None else subtype != "success",
        api_error_status=_int(data, "api_error_status"),
        duration_ms=_int(data, "duration_ms"),
        num_turns=_int(data, "num_turns"),
        result=_str(data, "result"),
        session_id=_str(data, "session_id"),
        total_cost_usd=_float(data, "total_cost_usd", "cost_usd"),
        usage=_dict(data, "usage"),
        permission_denials=(
            tuple(d for d in denials if isinstance(d, dict)) if isinstance(denials, list) else ()
        ),
        raw=data,
    )


def _blocks(data: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    message = _dict(data, "message")
    content = message.get("content")
    if isinstance(content, str):
        return message, [{"type": "text", "text": content}]
    if isinstance(content, list):
        return message, [b for b in content if isinstance(b, dict)]
    return message, []


def _assistant(data: dict[str, Any], cwd: str | None) -> list[Event]:
    message, blocks = _blocks(data)
    message_id = _str(message, "id")
    events: list[Event] = []
    for block in blocks:
        block_type = _str(block, "type")
        if block_type == "text":
            text = _str(block, "text") or ""
            events.append(AssistantText(text, message_id, raw=data))
            events.extend(_progress(text, data))
        elif block_type == "tool_use":
            tool_input = block.get("input")
            events.append(
                ToolUse(
                    name=_str(block, "name") or "",
                    input=tool_input if isinstance(tool_input, dict) else {},
                    tool_use_id=_str(block, "id"),
                    message_id=message_id,
                    cwd=cwd,
                    raw=data,
                )
            )
        else:  # thinking, redacted_thinking, server tools: not shown, but counted as a turn
            events.append(Other("assistant", block_type, raw=data))
    return events or [Other("assistant", None, raw=data)]


def _progress(text: str, data: dict[str, Any]) -> list[Event]:
    events: list[Event] = []
    for line in text.splitlines():
        match = _PROGRESS.match(line)
        if match and match.group(2):
            kind: Literal["STATUS", "STUCK"] = "STATUS" if match.group(1) == "STATUS" else "STUCK"
            events.append(Progress(kind, match.group(2), raw=data))
    return events


def _user(data: dict[str, Any]) -> list[Event]:
    _, blocks = _blocks(data)
    events: list[Event] = []
    for block in blocks:
        if _str(block, "type") == "tool_result":
            events.append(
                ToolResult(
                    tool_use_id=_str(block, "tool_use_id"),
                    is_error=_bool(block, "is_error") or False,
                    text=_tool_result_text(block.get("content")),
                    raw=data,
                )
            )
        else:
            events.append(Other("user", _str(block, "type"), raw=data))
    return events or [Other("user", None, raw=data)]


def _tool_result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [_str(part, "text") for part in content if isinstance(part, dict)]
        return "\n".join(p for p in parts if p)
    return ""
