"""Watching workers: ask the machines, reconcile the board with what they say, follow a run's
events live, wait for its end, read its log, stop it.

A status asks each machine once (one remote command), folds each live run's new events
(`reconcile`, `coordlib.progress`), writes every change in one board transaction
(`Board.settle`) and posts the trail of whatever ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .assignment import TERMINAL, Assignment, Status
from .contacts import Contacts, format_age, machine_state
from .errors import (
    CommandError,
    CoordError,
    MachineError,
    UnreachableError,
    UsageError,
    WaitTimeout,
)
from .reconcile import DISPATCH_GRACE, MAX_EVENT_BYTES, dispatch_may_be_in_flight, reconcile
from .runtime.answers import Disk, MachineProbe, parse_status
from .runtime.builders import Want, status_command, stop_command, tail_command
from .runtime.layout import RunFile
from .runtime.protocol import ExitCode, Scope

if TYPE_CHECKING:
    from .board import Board
    from .context import Context
    from .markers import SkippedMarker
    from .stream import Event, Reconnected, Reconnecting

__all__ = [
    "MachineStatus",
    "Monitor",
    "ResumeReport",
    "StatusReport",
]

_PROBE_TIMEOUT = 30.0
# Seconds between two readings of a running branch's files by the status pass (each costs
# the machine two git commands): the planner's file-conflict radar needs no finer grain.
RADAR_EVERY = 20.0


@dataclass
class MachineStatus:
    """One machine as the last probe saw it.

    `state` is ``up``, or why it is not: ``timeout`` (no answer in time: hung or stopped),
    ``refused`` (nothing listens), ``lost`` (the connection dropped), ``auth`` (our key was
    refused), ``host_key`` (unknown or changed key), ``unreachable`` or ``error``.
    `seen_at` is the last time it answered (epoch seconds), as far as this board knows.
    """

    name: str
    reachable: bool
    error: str | None = None
    running: int = 0
    orphans: list[str] = field(default_factory=list)  # run ids on the machine, not on the board
    state: str = "up"
    seen_at: float | None = None
    seconds: float | None = None  # how long the probe took (or waited)
    disk: Disk | None = None  # coordlib's disk use there, and the room left (as last measured)
    # it has missed concurrency.stale_threshold passes in a row: it gets no new work
    stale: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON contract of ``coord status --json``."""
        disk = self.disk
        return {
            "name": self.name,
            "reachable": self.reachable,
            "error": self.error,
            "running": self.running,
            "state": self.state,
            "seen_at": self.seen_at,
            "stale": self.stale,
            "disk": None if disk is None else
                    {"used_kb": disk.used_kb, "free_kb": disk.free_kb, "at": disk.at},
        }  # fmt: skip


_PUBLIC_FIELDS = (
    "id", "machine", "repo", "issue", "branch", "model", "status", "cost_usd", "num_turns",
    "session_id", "exit_reason", "failure_class", "title", "tier", "last_status", "last_tool",
    "duration_ms", "created_at", "started_at", "finished_at", "exit_code", "error", "worktree",
    "run_dir", "files_changed",
)  # fmt: skip


def _public(a: Assignment) -> dict[str, Any]:
    data = {k: getattr(a, k) for k in _PUBLIC_FIELDS}
    data["status"] = str(a.status)
    return data


@dataclass
class StatusReport:
    """What ``status`` found: every machine, and the assignments after reconciliation."""

    machines: list[MachineStatus]
    assignments: list[Assignment]
    changed: list[tuple[str, str, str]] = field(default_factory=list)  # (id, old, new status)
    confined: bool = True  # worker.confine: false has every worker run unconfined

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON contract of ``coord status --json``."""
        down = {m.name for m in self.machines if not m.reachable}
        return {
            "confined": self.confined,
            "machines": [m.to_dict() for m in self.machines],
            "assignments": [
                _public(a) | {"reachable": a.machine not in down} for a in self.assignments
            ],
        }

    def unreachable(self, a: Assignment) -> MachineStatus | None:
        """Return a's machine's status if this report could not reach it."""
        return next((m for m in self.machines if m.name == a.machine and not m.reachable), None)


@dataclass
class ResumeReport:
    """What ``resume`` repaired."""

    changed: list[tuple[str, str, str]]
    unreachable: list[MachineStatus]
    orphans: dict[str, list[str]]
    still_running: list[str]
    continued: list[Assignment] = field(default_factory=list)  # rate-limited work resumed
    restored: list[str] = field(default_factory=list)  # rows rebuilt from the forge's trail
    skipped: list[SkippedMarker] = field(default_factory=list)  # trail markers not trusted
    posted: list[tuple[str, str]] = field(default_factory=list)  # (id, stage) posted late

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready summary."""
        return {
            "changed": [{"id": i, "from": a, "to": b} for i, a, b in self.changed],
            "unreachable": [m.to_dict() for m in self.unreachable],
            "orphans": self.orphans,
            "still_running": self.still_running,
            "restored": self.restored,
            "skipped": [m.to_dict() for m in self.skipped],
            "posted": [{"id": i, "stage": s} for i, s in self.posted],
            "continued": [{"id": a.id, "continues": a.continues} for a in self.continued],
        }


def _machine_status(
    name: str, outcome: MachineProbe | CoordError, seconds: float, contacts: Contacts
) -> MachineStatus:
    if isinstance(outcome, CoordError):
        state, seen = machine_state(outcome), contacts.seen(name)
        return MachineStatus(name, False, str(outcome), state=state, seen_at=seen, seconds=seconds)
    return MachineStatus(
        name, reachable=True, seen_at=time.time(), seconds=seconds, disk=outcome.disk
    )


def _why(exc: UnreachableError) -> str:
    """The reason of a machine error, without the machine's name in front."""
    text = str(exc)
    return text.removeprefix(f"{exc.machine}: ") if exc.machine else text


def _last_contact(m: MachineStatus) -> str:
    if m.seen_at is None:
        return "no contact on record"
    return f"last contact {format_age(time.time() - m.seen_at)} ago"


class Monitor:
    """Status, reconciliation, watching, waiting and stopping."""

    def __init__(
        self, ctx: Context, continue_due: Callable[[], Awaitable[list[Assignment]]]
    ) -> None:
        self.ctx = ctx
        # How a wait continues a rate-limited assignment once its limit is over.
        self.continue_due = continue_due
        # Whether admission control has the fleet slowed (None: not read yet this process).
        self._slowed: bool | None = None
        # id -> (when, events offset) its branch's files were last read (the radar's pace)
        self._radar: dict[str, tuple[float, int]] = {}

    # ------------------------------------------------------------ status
    async def status(
        self,
        *,
        machine: str | None = None,
        history: bool = False,
        all_orphans: bool = False,
        on_machine: Callable[[MachineStatus], None] | None = None,
        within: float | None = None,
    ) -> StatusReport:
        """See `Coordinator.status`; `all_orphans` also lists ended runs the board lacks.

        `within` bounds the wait for each machine's answer (its connect included); one that
        has not answered by then is `timeout`.  Only the read-only probe is cut short.
        """
        config, board = self.ctx.config, self.ctx.board
        names = [machine] if machine else list(config.machines)
        if machine:
            config.machine(machine)  # unknown name -> ConfigError with a suggestion
        rows = board.assignments()
        # Queued (rate-limited) work has no run to ask about until it is continued.
        live = [a for a in rows if not a.is_terminal and a.status != Status.QUEUED]
        if not machine:  # (the radar's pace is kept for live runs only)
            ids = {a.id for a in live}
            self._radar = {k: v for k, v in self._radar.items() if k in ids}
        contacts = Contacts(board.path.with_name("contacts.json"))

        async def ask(name: str) -> tuple[MachineProbe | CoordError, MachineStatus]:
            t0 = time.monotonic()
            probe = self._probe(name, [a for a in live if a.machine == name], ended=all_orphans)
            outcome: MachineProbe | CoordError
            try:
                outcome = await asyncio.wait_for(probe, within)
            except TimeoutError:
                outcome = UnreachableError(
                    f"no answer within {within:g} s", machine=name, reason="timeout"
                )
            ms = _machine_status(name, outcome, time.monotonic() - t0, contacts)
            if on_machine is not None:  # as each answers: a hung machine holds up no other
                on_machine(ms)
            return outcome, ms

        probes = await asyncio.gather(*(ask(n) for n in names))
        machines: list[MachineStatus] = []
        updates: dict[str, tuple[int, dict[str, Any]]] = {}
        archived: set[str] | None = None
        for name, (outcome, ms) in zip(names, probes, strict=True):
            machines.append(ms)
            if isinstance(outcome, CoordError):
                continue
            known = {a.id for a in rows if a.machine == name}
            unknown = set(outcome.runs) - known
            if not all_orphans:
                # A status only cares about workers running unseen; the ended runs of
                # archived work are many, and reading the history to place them costs.
                unknown = {i for i in unknown if outcome.runs[i].exit is None}
            if unknown:
                if archived is None:
                    archived = {r["id"] for r in board.history()}
                unknown -= archived
            ms.orphans = sorted(unknown)
            for a in (x for x in live if x.machine == name):
                change = reconcile(a, outcome, in_flight=self._in_flight)
                if change:
                    updates[a.id] = (a.events_offset, change)
        contacts.saw([m.name for m in machines if m.reachable],
                     [m.name for m in machines if not m.reachable])  # fmt: skip
        for ms in machines:
            ms.stale = contacts.stale(ms.name, config.concurrency.stale_threshold)
        changed, written = board.settle(updates)
        if written is not None:  # the rows as our transaction left them: no second read
            rows = written
        ended = {aid for aid, _, new in changed
                 if Status(new) in TERMINAL or new == Status.QUEUED}  # fmt: skip
        if ended:
            await asyncio.gather(*(self.ctx.trail.post_ending(a) for a in rows if a.id in ended))
        self._admit(board, rows)
        if history:
            ids = {a.id for a in rows}
            rows = [Assignment.from_dict(r, where=board.history_path)
                    for r in board.history() if r["id"] not in ids] + rows  # fmt: skip
        for ms in machines:
            ms.running = sum(1 for a in rows if a.machine == ms.name and a.status == Status.RUNNING)
        if machine:
            rows = [a for a in rows if a.machine == machine]
        return StatusReport(machines=machines, assignments=rows, changed=changed,
                            confined=config.worker.confine)  # fmt: skip

    def _admit(self, board: Board, rows: Sequence[Assignment]) -> None:
        """Fold this pass's busy-API signals into admission control, or let a slowed fleet
        grow back; nothing is read or written while the fleet is not slowed and none came."""
        from .admission import note, signals_of

        now = time.time()
        if not signals_of(rows, now=now) and self._slowed is False:
            return
        state = note(board, rows, conf=self.ctx.config.concurrency, now=now)
        self._slowed = state.limit is not None or state.paused_until > now

    def _radar_due(self, a: Assignment, *, now: float | None = None) -> bool:
        """Whether this pass lists the files a's branch has changed: a running worker's,
        once, and then every RADAR_EVERY seconds while it has done something since."""
        if a.status != Status.RUNNING or a.reads_only:
            return False
        now = time.monotonic() if now is None else now
        last = self._radar.get(a.id)
        if last is not None and (now - last[0] < RADAR_EVERY or last[1] == a.events_offset):
            return False
        self._radar[a.id] = (now, a.events_offset)
        return True

    def _in_flight(self, a: Assignment) -> bool:
        if a.id in self.ctx.sending and time.time() - a.created_at < DISPATCH_GRACE:
            return True  # another task of ours is sending it right now
        return dispatch_may_be_in_flight(a, self.ctx.host)

    async def _probe(
        self, name: str, live: Sequence[Assignment], *, ended: bool
    ) -> MachineProbe | CoordError:
        """Ask one machine about `live` (and every running run; every ended one too if `ended`)."""
        m = self.ctx.config.machine(name)
        wants = [Want(a.id, a.events_offset, MAX_EVENT_BYTES, self._radar_due(a)) for a in live]
        scope = Scope.ALL if ended else Scope.LIVE
        try:
            result = await asyncio.wait_for(
                self.ctx.machines.get(name).run(
                    status_command(m.workdir, m.tmux_socket, scope, wants),
                    timeout=_PROBE_TIMEOUT,
                    what="status probe",
                ),
                _PROBE_TIMEOUT + 15,
            )
            return parse_status(result.stdout, machine=name)
        except CoordError as exc:
            return exc
        except TimeoutError:
            return UnreachableError(
                f"did not answer within {_PROBE_TIMEOUT + 15:g} s", machine=name, reason="timeout"
            )

    # ------------------------------------------------------------ watch / wait / log
    async def watch_lines(
        self, id: str, *, offset: int = 0, reconnect_for: float = 300.0
    ) -> AsyncIterator[bytes]:
        """See `Coordinator.watch_lines`."""
        async for item in self._follow(id, offset=offset, reconnect_for=reconnect_for):
            if isinstance(item, bytes):
                yield item

    async def _follow(
        self, id: str, *, offset: int, reconnect_for: float
    ) -> AsyncIterator[bytes | Reconnecting | Reconnected]:
        """Yield the run's lines, and a notice each time the connection drops and comes back.

        A dropped connection is resumed from the last complete line, so no line is lost or
        repeated; after `reconnect_for` seconds of failing to reconnect it raises.
        """
        from .stream import Reconnected, Reconnecting

        a = self.ctx.board.assignment(id)
        m = self.ctx.config.machine(a.machine)
        t = self.ctx.machines.get(a.machine)
        failing_since: float | None = None
        delay = 0.2
        line = 0  # lines yielded so far (from offset)
        while True:
            buf = b""
            try:
                async for chunk in t.stream(tail_command(m.workdir, a.id, offset, follow=True)):
                    if failing_since is not None:
                        yield Reconnected(m.name, time.monotonic() - failing_since, line + 1)
                    failing_since, delay = None, 0.2
                    buf += chunk
                    if b"\n" not in chunk:
                        continue
                    *lines, buf = buf.split(b"\n")
                    for one in lines:
                        offset += len(one) + 1
                        line += 1
                        yield one
                break
            except CommandError as exc:
                if exc.returncode == ExitCode.NO_RUN:  # the run dir is gone: nothing to read
                    break
                raise
            except UnreachableError as exc:
                now = time.monotonic()
                if failing_since is None:
                    failing_since = now
                    yield Reconnecting(m.name, _why(exc))
                if now - failing_since > reconnect_for:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 3.0)
        if buf:
            yield buf

    async def watch(self, id: str, *, offset: int = 0) -> AsyncIterator[Event]:
        """See `Coordinator.watch`."""
        from .progress import RunProgress
        from .stream import parse_line

        a = self.ctx.board.assignment(id)
        progress = RunProgress()  # what it folds here is the session's cwd, for tool paths
        async for item in self._follow(a.id, offset=offset, reconnect_for=300.0):
            if not isinstance(item, bytes):
                yield item  # a reconnection, told as it happens
                continue
            for event in parse_line(item, cwd=progress.cwd):
                progress.apply(event)
                yield event
        await self.settle(a)

    async def settle(self, a: Assignment, *, tries: int = 20) -> Assignment:
        """Probe a's machine until a has a terminal status (its exit.json lands just after)."""
        for _ in range(tries):
            await self.status(machine=a.machine)
            current = self.ctx.board.assignment(a.id)
            if current.is_terminal:
                return current
            await asyncio.sleep(0.25)
        return self.ctx.board.assignment(a.id)

    async def wait(
        self,
        id: str,
        *,
        timeout: float | None = None,
        poll: float = 0.5,
        on_update: Callable[[Assignment], None] | None = None,
    ) -> Assignment:
        """See `Coordinator.wait`."""
        board = self.ctx.board
        a = board.assignment(id)
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = poll
        down: MachineStatus | None = None  # its machine, when the last look could not reach it
        while True:
            if a.is_terminal:
                return a
            if a.status == Status.QUEUED:  # rate-limited: continue it when its wait is over
                a = await self._wait_queued(a, deadline)
                continue
            if deadline is not None and time.monotonic() >= deadline:
                if down is not None:
                    raise WaitTimeout(
                        f"assignment {a.id} was {a.status} when last seen, but its machine "
                        f"{down.name} is unreachable ({down.state}: {down.error}); "
                        f"{_last_contact(down)}"
                    )
                raise WaitTimeout(
                    f"assignment {a.id} is still {a.status} after {timeout:g} s "
                    f"(`coord watch {a.id}` to follow it)"
                )
            # A hung machine costs at most what is left of the wait, not its connect timeout.
            left = None if deadline is None else max(deadline - time.monotonic(), 0.5)
            report = await self.status(machine=a.machine, within=left)
            down = report.unreachable(a)
            a = next((x for x in report.assignments if x.id == a.id), None) or board.assignment(
                a.id
            )
            if on_update is not None:
                on_update(a)
            if a.is_terminal:
                return a
            sleep = interval
            if deadline is not None:
                sleep = max(0.0, min(sleep, deadline - time.monotonic()))
            await asyncio.sleep(sleep)
            interval = min(interval * 1.5, 5.0)

    async def _wait_queued(self, a: Assignment, deadline: float | None) -> Assignment:
        """Sleep out a queued assignment's limit, continue it, and return what follows it."""
        if a.held:
            raise UsageError(
                f"assignment {a.id} is queued and held ({a.held}); nothing starts it by itself: "
                f"`coord continue {a.id}` continues its session, `coord retry {a.id}` starts afresh"
            )
        due = (a.not_before or 0.0) - time.time()
        if deadline is not None and due > deadline - time.monotonic():
            raise WaitTimeout(
                f"assignment {a.id} is queued after a rate limit until "
                f"{time.strftime('%H:%M:%S', time.localtime(time.time() + due))}, "
                f"past the timeout"
            )
        await asyncio.sleep(max(0.0, due))
        await self.continue_due()
        a = self.ctx.board.assignment(a.id)
        return self.ctx.board.assignment(a.continued_by) if a.continued_by else a

    async def log(
        self, id: str, *, follow: bool = False, stderr: bool = False, offset: int = 0
    ) -> AsyncIterator[bytes]:
        """See `Coordinator.log`."""
        a = self.ctx.board.assignment(id)
        if a.cleaned and a.cleaned.get("run") == "removed":
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(a.cleaned.get("at", 0))))
            raise MachineError(
                f"the run directory of {a.id} was removed by `coord clean` on {when}; "
                "its outcome is on the board (coord status --history --json)",
                machine=a.machine,
            )
        m = self.ctx.config.machine(a.machine)
        name = RunFile.STDERR if stderr else RunFile.EVENTS
        argv = tail_command(m.workdir, a.id, offset, name, follow=follow)
        async for chunk in self.ctx.machines.get(a.machine).stream(argv):
            if chunk:
                yield chunk

    async def stop(self, id: str) -> Assignment:
        """See `Coordinator.stop`."""
        a = self.ctx.board.assignment(id)
        if a.is_terminal:
            return a
        m = self.ctx.config.machine(a.machine)
        try:
            await self.ctx.machines.get(a.machine).run(
                stop_command(m.workdir, a.id), timeout=30, what="stop"
            )
        except CommandError as exc:
            if exc.returncode != ExitCode.NO_RUN:  # status settles it as lost
                raise
        return await self.settle(a, tries=8)
