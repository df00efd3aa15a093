"""The line ``coord watch`` shows for each stream event (`format_event`); pure functions."""

from __future__ import annotations

from datetime import UTC, datetime

from .stream import (
    ApiRetry,
    AssistantText,
    Event,
    Init,
    Malformed,
    Progress,
    RateLimit,
    Reconnected,
    Reconnecting,
    Result,
    ToolResult,
    ToolUse,
    one_line,
)

__all__ = ["format_event"]

_MALFORMED_SHOWN = 80


def _seconds(ms: float) -> str:
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _format_result(event: Result) -> str:
    if event.is_error:
        reasons = []
        if event.api_error_status is not None:
            reasons.append(f"api {event.api_error_status}")
        if event.subtype and event.subtype != "success":
            reasons.append(event.subtype)
        head = f"error ({', '.join(reasons)})" if reasons else "error"
    else:
        head = "ok"
    stats = []
    if event.duration_ms is not None:
        stats.append(f"in {_seconds(event.duration_ms)}")
    if event.num_turns is not None:
        stats.append(f"{event.num_turns} turn{'' if event.num_turns == 1 else 's'}")
    if event.total_cost_usd is not None:
        stats.append(f"${event.total_cost_usd:.4f}")
    line = f"[result] {head}"
    if stats:
        line += (" " if stats[0].startswith("in ") else ", ") + ", ".join(stats)
    if event.is_error and event.result:
        line += f": {one_line(event.result)}"
    return line


def _format_retry(event: ApiRetry) -> str:
    attempt = "?" if event.attempt is None else str(event.attempt)
    if event.max_retries is not None:
        attempt += f"/{event.max_retries}"
    line = f"[retry] attempt {attempt}"
    if event.retry_delay_ms is not None:
        line += f" in {_seconds(event.retry_delay_ms)}"
    why = " ".join(str(p) for p in (event.error_status, event.error) if p is not None)
    return f"{line} ({why})" if why else line


def _format_rate_limit(event: RateLimit) -> str:
    line = f"[rate-limit] {event.status or 'unknown'}"
    if event.rate_limit_type:
        line += f" ({event.rate_limit_type})"
    if event.resets_at is not None:
        when = datetime.fromtimestamp(event.resets_at, tz=UTC)
        line += f" until {when:%Y-%m-%d %H:%M} UTC"
    return line


def format_event(event: Event, *, verbose: bool = False) -> str | None:
    """Return the line ``coord watch`` shows for event, or None when it is hidden."""
    if isinstance(event, Reconnecting):
        return f"[reconnecting] {event.machine}: {event.error}; retrying…"
    if isinstance(event, Reconnected):
        return (
            f"[reconnected] {event.machine} after {event.after_s:.0f} s, "
            f"resuming at line {event.line}"
        )
    if isinstance(event, Init):
        return f"[init] model={event.model or '?'} session={event.session_id or '?'}"
    if isinstance(event, ToolUse):
        return f"[tool] {event.name} {event.summary}".rstrip()
    if isinstance(event, Progress):
        return f"[{event.kind.lower()}] {event.text}"
    if isinstance(event, ApiRetry):
        return _format_retry(event)
    if isinstance(event, RateLimit):
        # The CLI reports "allowed" after every request; only a limit being near or hit is news.
        return _format_rate_limit(event) if verbose or event.status != "allowed" else None
    if isinstance(event, Result):
        return _format_result(event)
    if isinstance(event, Malformed):
        return f"[malformed] {event.line[:_MALFORMED_SHOWN]}"
    if not verbose:
        return None
    if isinstance(event, AssistantText):
        return f"[text] {one_line(event.text)}".rstrip()
    if isinstance(event, ToolResult):
        outcome = "error" if event.is_error else "ok"
        return f"[tool-result] {outcome} {one_line(event.text)}".rstrip()
    return f"[event] {event.type or '?'}" + (f"/{event.subtype}" if event.subtype else "")
