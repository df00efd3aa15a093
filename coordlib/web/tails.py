"""One tail per assignment, shared by every viewer (fan-out).

A `Tail` follows one run's events.jsonl from its start (`Coordinator.watch_lines`: one
streaming remote command, which survives a dropped connection) and keeps the lines it read,
parsed into the entries ``coord watch`` shows.  Viewers `follow` it from any byte offset:
what it already holds is replayed from memory, then each new line reaches every viewer as
it arrives, with no queue per viewer (a slow viewer holds up nobody).  `Tails` starts a
tail on the first viewer of an assignment, stops it a while after the last one leaves, and
keeps the ended ones most recently used for late viewers.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

from ..errors import CoordError
from ..event_view import format_event
from ..stream import Init, parse_line

__all__ = ["Entry", "StreamLine", "Tail", "Tails", "entries_of"]

KEEP_LINES = 20_000  # lines one tail holds in memory; older ones are dropped (and said so)


@dataclass(frozen=True)
class Entry:
    """One line of the view: its kind (``status``, ``stuck``, ``tool``, ``result``, …), its
    text as ``coord watch`` prints it, and whether the filtered view shows it."""

    kind: str
    text: str
    shown: bool


@dataclass(frozen=True)
class StreamLine:
    """One line of a run's events.jsonl and what it shows."""

    offset: int  # byte offset just past the line: resume after it (the SSE event id)
    at: float  # when the coordinator received it (epoch seconds)
    entries: tuple[Entry, ...]

    def visible(self, everything: bool) -> tuple[Entry, ...]:
        """Return the entries the filtered view (or, with `everything`, the full one) shows."""
        return self.entries if everything else tuple(e for e in self.entries if e.shown)


def entries_of(raw: bytes, cwd: str | None = None) -> tuple[tuple[Entry, ...], str | None]:
    """Parse one stream-json line into its entries; return them and the session's cwd."""
    out = []
    for event in parse_line(raw, cwd=cwd):
        if isinstance(event, Init) and event.cwd:
            cwd = event.cwd
        text = format_event(event, verbose=True)
        if text is None:
            continue
        kind = text[1 : text.index("]")] if text.startswith("[") and "]" in text else "event"
        out.append(Entry(kind, text, format_event(event) is not None))
    return tuple(out), cwd


class Tail:
    """One run's lines, read once, for every viewer."""

    def __init__(self, aid: str, keep: int = KEEP_LINES) -> None:
        self.aid = aid
        self.keep = keep
        self.lines: list[StreamLine] = []
        self.offsets: list[int] = []
        self.dropped = 0  # lines dropped from the front (the index of lines[0])
        self.dropped_through = 0  # the offset of the last line dropped
        self.ended = False
        self.error: str | None = None
        self.released = False  # the server is stopping: every viewer's stream ends now
        self.viewers = 0
        self.task: asyncio.Task[None] | None = None
        self._tick = asyncio.Event()  # set (and replaced) at each new line and at the end

    def _wake(self) -> None:
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    def add(self, line: StreamLine) -> None:
        """Append one line and wake every viewer."""
        self.lines.append(line)
        self.offsets.append(line.offset)
        if len(self.lines) > self.keep + self.keep // 4:  # trim in chunks, not each line
            cut = len(self.lines) - self.keep
            self.dropped_through = self.offsets[cut - 1]
            del self.lines[:cut], self.offsets[:cut]
            self.dropped += cut
        self._wake()

    def end(self, error: str | None = None) -> None:
        """Mark the tail over (the run ended, or `error` stopped the reading)."""
        self.ended, self.error = True, error
        self._wake()

    async def read(self, source: AsyncIterator[bytes]) -> None:
        """Read `source` (the run's lines from offset 0) into this tail until it ends."""
        offset, cwd = 0, None
        try:
            try:
                async for raw in source:
                    offset += len(raw) + 1
                    entries, cwd = entries_of(raw, cwd)
                    if entries:
                        self.add(StreamLine(offset, time.time(), entries))
            finally:
                close = getattr(source, "aclose", None)
                if close is not None:  # the remote tail ends now, not when collected
                    with contextlib.suppress(RuntimeError):  # it was cancelled mid-step
                        await close()
        except CoordError as exc:
            self.end(str(exc))
            return
        except asyncio.CancelledError:
            self.end("the server stopped following this run")
            raise
        except Exception as exc:  # a viewer must never wait on a tail that died
            self.end(f"reading stopped: {type(exc).__name__}: {exc}")
            raise
        self.end()

    async def follow(
        self, after: int = 0, *, idle: float | None = None
    ) -> AsyncGenerator[StreamLine | int | None, None]:
        """Yield every line past byte offset `after`, then each new one, until the tail
        ends.  An int yielded instead says that many earlier lines (at most) are no longer
        held; None, that `idle` seconds passed with nothing new (a keepalive's moment)."""
        i = self.dropped + bisect.bisect_right(self.offsets, after)
        if self.dropped and i == self.dropped and after < self.dropped_through:
            yield self.dropped  # (at most: where `after` fell among them is not kept)
        while True:
            tick = self._tick
            if i < self.dropped:
                yield self.dropped - i
                i = self.dropped
            while i - self.dropped < len(self.lines) and not self.released:
                yield self.lines[i - self.dropped]
                i += 1
                if i < self.dropped:  # trimmed while the viewer was away
                    break
            else:
                if self.ended or self.released:
                    return
                try:
                    await asyncio.wait_for(tick.wait(), idle)
                except TimeoutError:
                    yield None


class Tails:
    """The tails of the assignments being viewed: one each, however many viewers."""

    def __init__(
        self,
        open_lines: Callable[[str], AsyncIterator[bytes]],
        *,
        linger: float = 30.0,
        keep_ended: int = 16,
        keep_lines: int = KEEP_LINES,
    ) -> None:
        self.open_lines = open_lines  # assignment id -> its lines from offset 0
        self.linger = linger  # seconds a live tail outlives its last viewer
        self.keep_ended = keep_ended
        self.keep_lines = keep_lines
        self.tails: OrderedDict[str, Tail] = OrderedDict()
        self.started = 0  # tails started in all (what the fan-out saves is seen here)
        self._stops: dict[str, asyncio.TimerHandle] = {}

    def get(self, aid: str) -> Tail:
        """Return the tail of `aid`, starting it unless one is live or ended cleanly."""
        t = self.tails.get(aid)
        if t is None or t.error is not None:
            t = Tail(aid, self.keep_lines)
            t.task = asyncio.create_task(t.read(self.open_lines(aid)), name=f"tail {aid}")
            self.tails[aid] = t
            self.started += 1
            self._evict()
        self.tails.move_to_end(aid)
        return t

    def _evict(self) -> None:
        ended = [k for k, t in self.tails.items() if t.ended and not t.viewers]
        for k in ended[: max(0, len(ended) - self.keep_ended)]:
            del self.tails[k]

    async def follow(
        self, aid: str, after: int = 0, *, idle: float | None = None
    ) -> AsyncGenerator[StreamLine | int | None, None]:
        """Follow `aid`'s shared tail from byte offset `after` (see `Tail.follow`)."""
        t = self.get(aid)
        stop = self._stops.pop(aid, None)
        if stop is not None:
            stop.cancel()
        t.viewers += 1
        try:
            async for item in t.follow(after, idle=idle):
                yield item
        finally:
            t.viewers -= 1
            if not t.viewers and not t.ended:
                loop = asyncio.get_running_loop()
                self._stops[aid] = loop.call_later(self.linger, self._stop, aid, t)

    def _stop(self, aid: str, t: Tail) -> None:
        self._stops.pop(aid, None)
        if t.viewers or t.ended:
            return
        if t.task is not None:
            t.task.cancel()
        if self.tails.get(aid) is t:
            del self.tails[aid]

    def release(self) -> None:
        """End every viewer's stream now (the server is stopping); the tails read on."""
        for t in self.tails.values():
            t.released = True
            t._wake()

    async def close(self, *, grace: float = 2.0) -> None:
        """Stop every tail, waiting at most `grace` seconds for their remote commands to end
        (one that does not is left to end with its run)."""
        self.release()
        for h in self._stops.values():
            h.cancel()
        self._stops.clear()
        tasks = [t.task for t in self.tails.values() if t.task is not None and not t.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        self.tails.clear()
