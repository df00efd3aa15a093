"""Admission control: when the API says it is busy, the fleet starts fewer workers, and waits.

Signals come from what the status pass reads of the runs: a run stopped by a rate limit
(queued until its reset), a run that failed as overloaded (529 until its retries ran out),
and a live run that reported a rate-limit event with a reset time.  Each new signal halves
the number of live workers the fleet may have (never below one) and pauses new dispatch
until the reset it names, or for ``concurrency.backoff_base ** signals-in-a-row`` seconds
when it names none.  Once the pause is over and no new signal came for ``backoff_base``
seconds, the limit rises by one worker, step by step, back to ``concurrency.max_workers``.

The state is one document on the board (`ADMISSION`), so every coordinator process sharing
the board obeys it; `note` is pure apart from that.  A person's ``--force`` goes ahead.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .assignment import Assignment
    from .board import Board
    from .config import ConcurrencyConfig

__all__ = ["ADMISSION", "Admission", "Signal", "load", "note", "observe", "signals_of"]

ADMISSION = "admission"
_KEY = "fleet"
_SEEN_KEPT = 200
_RECENT = 600.0  # an overloaded run counts as a signal this long after it ended


@dataclass(frozen=True)
class Signal:
    """One sign that the API is busy: whose run, what, and when it resets (None: unknown)."""

    id: str
    what: str
    resets_at: float | None = None


@dataclass
class Admission:
    """The fleet's admission state (a board document)."""

    limit: int | None = None  # live workers allowed now; None: concurrency.max_workers
    paused_until: float = 0.0  # no new dispatch before this (epoch seconds)
    hits: int = 0  # signals in a row: the back-off's exponent
    reason: str = ""
    changed_at: float = 0.0
    seen: list[str] = field(default_factory=list)  # the signals already counted

    def paused(self, now: float) -> str | None:
        """Why new dispatch must wait now, or None."""
        if now >= self.paused_until:
            return None
        at = time.strftime("%H:%M:%S", time.localtime(self.paused_until))
        return f"the API is busy ({self.reason}); dispatch resumes at {at}"

    def fleet(self, max_workers: int) -> int:
        """The live workers the fleet may have now."""
        return max_workers if self.limit is None else min(self.limit, max_workers)


def signals_of(rows: Iterable[Assignment], *, now: float) -> list[Signal]:
    """The busy-API signals in these rows (a status pass's)."""
    out = []
    for a in rows:
        if a.status == "queued" and a.not_before:
            out.append(Signal(f"{a.id}:limited", f"{a.id} hit a rate limit", a.not_before))
        elif a.failure_class == "overloaded" and now - (a.finished_at or 0.0) < _RECENT:
            out.append(Signal(f"{a.id}:overloaded", f"{a.id} found the API overloaded"))
        else:
            until = (a.progress or {}).get("rate_limited_until")
            if isinstance(until, int | float) and until > now and not a.is_terminal:
                out.append(Signal(f"{a.id}:limit-event", f"{a.id} reported a rate limit",
                                  float(until)))  # fmt: skip
    return out


def observe(state: Admission, signals: Iterable[Signal], *, live: int, conf: ConcurrencyConfig,
            now: float) -> Admission:  # fmt: skip
    """Return the state after a pass that saw `signals` with `live` workers running."""
    new = [s for s in signals if s.id not in state.seen]
    s = Admission(**{**asdict(state), "seen": list(state.seen)})
    if new:
        s.hits += len(new)
        current = s.limit if s.limit is not None else conf.max_workers
        s.limit = max(1, min(current, max(live, 1)) // 2)
        resets = [x.resets_at for x in new if x.resets_at]
        wait_until = max(resets) if resets else now + conf.backoff_base ** min(s.hits, 10)
        s.paused_until = max(s.paused_until, wait_until)
        s.reason = new[-1].what
        s.changed_at = now
        s.seen = (s.seen + [x.id for x in new])[-_SEEN_KEPT:]
        return s
    if s.limit is not None and now >= s.paused_until and now - s.changed_at >= conf.backoff_base:
        s.limit += 1  # recover, one worker at a time
        s.changed_at = now
        if s.limit >= conf.max_workers:
            s.limit, s.hits, s.reason = None, 0, ""
    return s


def load(board: Board) -> Admission:
    """The board's admission state (none yet: the fleet's full size)."""
    for doc in board.docs(ADMISSION):
        if doc.get("key") == _KEY:
            data = {k: v for k, v in doc.items() if k in Admission.__dataclass_fields__}
            try:
                return Admission(**data)
            except TypeError:
                return Admission()  # an unreadable state is no reason to stop the fleet
    return Admission()


def note(board: Board, rows: Iterable[Assignment], *, conf: ConcurrencyConfig,
         now: float | None = None) -> Admission:  # fmt: skip
    """Fold a status pass's rows into the board's admission state; return the new state."""
    now = time.time() if now is None else now
    rows = list(rows)
    live = sum(1 for a in rows if a.status in ("running", "pending"))
    with board.transaction() as txn:
        table = txn.docs(ADMISSION)
        raw: dict[str, Any] = table.get(_KEY) or {}
        data = {k: v for k, v in raw.items() if k in Admission.__dataclass_fields__}
        try:
            state = Admission(**data)
        except TypeError:
            state = Admission()
        after = observe(state, signals_of(rows, now=now), live=live, conf=conf, now=now)
        if after != state:
            table.put({"key": _KEY, **asdict(after)})
    return after
