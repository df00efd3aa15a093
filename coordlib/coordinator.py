"""`Coordinator`: the async facade that scripts and the CLI drive.

It ties the pieces together: the config says which machines and repos exist,
the board remembers assignments, transports reach machines, and the remote run
protocol (``runtime/remote.sh``) does the work there.  Every operation costs as
few remote commands as it can: a dispatch is one, a status is one per machine.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .assignment import TERMINAL, Assignment, Status
from .board import Board
from .config import Config, find_config
from .config_load import load_config
from .dispatch import Dispatcher
from .errors import (
    CommandError,
    CoordError,
    MachineError,
    UnreachableError,
    UsageError,
    WaitTimeout,
)
from .reconcile import DISPATCH_GRACE, MAX_EVENT_BYTES, dispatch_may_be_in_flight, reconcile
from .runtime.command import (
    LaunchSpec,
    remote_argv,
)
from .runtime.local import LocalTransport
from .runtime.probe import MachineProbe, parse_probe
from .runtime.transport import Transport
from .trail import Trail, sort_into_sections

if TYPE_CHECKING:  # imported where used: asyncssh alone costs ~200 ms to import
    from .cleanup import CleanReport
    from .forge.base import Forge, Issue
    from .markers import SkippedMarker
    from .runtime.ssh import SSHTarget
    from .stream import Event

__all__ = ["Coordinator", "MachineStatus", "ResumeReport", "StatusReport"]

_PROBE_TIMEOUT = 30.0


@dataclass
class MachineStatus:
    """One machine as the last probe saw it."""

    name: str
    reachable: bool
    error: str | None = None
    running: int = 0
    orphans: list[str] = field(default_factory=list)  # run ids on the machine, not on the board

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON contract of ``coord status --json``."""
        return {
            "name": self.name,
            "reachable": self.reachable,
            "error": self.error,
            "running": self.running,
        }


@dataclass
class StatusReport:
    """What ``status`` found: every machine, and the assignments after reconciliation."""

    machines: list[MachineStatus]
    assignments: list[Assignment]
    changed: list[tuple[str, str, str]] = field(default_factory=list)  # (id, old, new status)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON contract of ``coord status --json``."""
        return {
            "machines": [m.to_dict() for m in self.machines],
            "assignments": [_public(a) for a in self.assignments],
        }


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

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready summary."""
        return {
            "changed": [{"id": i, "from": a, "to": b} for i, a, b in self.changed],
            "unreachable": [m.to_dict() for m in self.unreachable],
            "orphans": self.orphans,
            "still_running": self.still_running,
            "restored": self.restored,
            "skipped": [m.to_dict() for m in self.skipped],
            "continued": [
                {"id": a.id, "continues": a.extra.get("continues")} for a in self.continued
            ],
        }


_PUBLIC_FIELDS = (
    "id", "machine", "repo", "issue", "branch", "model", "status", "cost_usd", "num_turns",
    "session_id", "exit_reason", "failure_class", "title", "tier", "last_status", "last_tool",
    "duration_ms", "created_at", "started_at", "finished_at", "exit_code", "error", "worktree",
    "run_dir",
)  # fmt: skip


def _public(a: Assignment) -> dict[str, Any]:
    # Only these fields, read directly: to_dict() deep-copies every row's extra first.
    data = {k: getattr(a, k) for k in _PUBLIC_FIELDS}
    data["status"] = str(a.status)
    return data


class Coordinator:
    """Dispatch, watch and reconcile Claude Code workers on the machines of one config.

    Use it as an async context manager so connections are closed::

        async with Coordinator.from_path("coordinator.yml") as coord:
            a = await coord.assign("local", "api", 42, title="Fix login")
            done = await coord.wait(a.id)
    """

    def __init__(
        self,
        config: Config,
        *,
        board: Board | None = None,
        environ: Mapping[str, str] | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.board = board or Board(config.board.path, keep_finished=config.board.keep_finished)
        self._environ = dict(os.environ if environ is None else environ)
        self._transports: dict[str, Transport] = {}
        self._forges: dict[str, Forge] = {}
        self._host = socket.gethostname()
        # Things worth telling a person that are not errors (a forge rate limit being
        # waited out, a trail comment that could not be posted); the CLI prints them.
        self.notify: Callable[[str], None] = notify or (lambda message: None)
        self.trail = Trail(self.board, self.forge, lambda message: self.notify(message))
        self._dispatcher = Dispatcher(self)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str] | None = None, **kwargs: Any) -> Coordinator:
        """Load the config found from path (see `find_config`) and build a coordinator."""
        return cls(load_config(find_config(path)), **kwargs)

    async def __aenter__(self) -> Coordinator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection this coordinator opened."""
        transports, self._transports = list(self._transports.values()), {}
        forges, self._forges = list(self._forges.values()), {}
        await asyncio.gather(
            *(t.close() for t in transports), *(f.close() for f in forges), return_exceptions=True
        )

    # ------------------------------------------------------------ forges
    def forge(self, repo: str) -> Forge:
        """Return the one forge serving repo (local or GitHub, as the config says)."""
        f = self._forges.get(repo)
        if f is None:
            from .forge import open_forge

            f = open_forge(self.config, repo, environ=self._environ, on_wait=self.notify)
            self._forges[repo] = f
        return f

    # ------------------------------------------------------------ machines
    def transport(self, machine: str) -> Transport:
        """Return the one transport for machine, creating it on first use."""
        t = self._transports.get(machine)
        if t is None:
            m = self.config.machine(machine)
            if m.is_local:
                t = LocalTransport(m.name)
            else:
                from .runtime.ssh import SSHTransport

                t = SSHTransport(self.ssh_target(m.name))
            self._transports[machine] = t
        return t

    def ssh_target(self, machine: str) -> SSHTarget:
        """Return where machine is reached over SSH (for `coord trust`)."""
        m = self.config.machine(machine)
        if m.is_local:
            raise MachineError(
                "is the local machine: there is no host key to trust", machine=m.name
            )
        from .runtime.ssh import SSHTarget

        return SSHTarget(
            name=m.name,
            host=m.host,
            port=m.port,
            user=m.user,
            identity_file=m.identity_file,
            known_hosts=m.known_hosts,
        )

    # ------------------------------------------------------------ lookup
    def get(self, id_or_prefix: str) -> Assignment:
        """Return the assignment with that id (or unique id prefix), live or archived."""
        return Assignment.from_dict(self.board.get(id_or_prefix), where=self.board.path)

    def assignments(self, *, history: bool = False) -> list[Assignment]:
        """Return the board's assignments (and the archived ones too with history)."""
        rows = self.board.all()
        rows = self._with_history(rows) if history else rows
        return [Assignment.from_dict(r, where=self.board.path) for r in rows]

    def _with_history(self, live: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # A crash between the history append and the live write leaves a row in both:
        # the archived rows come first, each id once, and the live row wins.
        ids = {r["id"] for r in live}
        return [r for r in self.board.history() if r["id"] not in ids] + live

    # ------------------------------------------------------------ assign, retry, continue
    def plan_assignment(
        self,
        machine: str,
        repo: str,
        issue: int,
        *,
        model: str | None = None,
        briefing: str | None = None,
        title: str | None = None,
        attempt: int = 1,
        issue_info: Issue | None = None,
        previous: Assignment | None = None,
    ) -> tuple[Assignment, str, LaunchSpec]:
        """Work out everything a dispatch needs without touching a machine or the forge.

        Without `briefing`, the work briefing is rendered from `issue_info` (the issue as
        the forge has it) and from the board: the files other live workers on the repo
        are changing go in its "do not touch" list.
        """
        return self._dispatcher.plan_assignment(
            machine, repo, issue, model=model, briefing=briefing, title=title,
            attempt=attempt, issue_info=issue_info, previous=previous,
        )  # fmt: skip

    async def assign(
        self,
        machine: str,
        repo: str,
        issue: int,
        *,
        model: str | None = None,
        briefing: str | None = None,
        title: str | None = None,
        dry_run: bool = False,
        force: bool = False,
    ) -> Assignment:
        """Start a worker for issue of repo on machine and return its assignment.

        One remote command does it all: worktree, run files, launcher and tmux
        session.  The row is on the board as ``pending`` before the machine is
        touched, so a crash at any point leaves something `resume` can repair.
        """
        return await self._dispatcher.assign(
            machine, repo, issue, model=model, briefing=briefing, title=title,
            dry_run=dry_run, force=force,
        )  # fmt: skip

    async def retry(
        self,
        id: str,
        *,
        machine: str | None = None,
        model: str | None = None,
        briefing: str | None = None,
        force: bool = False,
    ) -> Assignment:
        """Start the issue of an ended assignment afresh, as its next attempt.

        The new assignment gets a new worktree and branch (``…-r<attempt>``), on
        `machine` (default: the same one) with `model` (default: the same).  The
        two are linked: ``extra["retry_of"]`` on the new row, ``extra["retried_by"]``
        on the old.
        """
        return await self._dispatcher.retry(
            id, machine=machine, model=model, briefing=briefing, force=force
        )

    async def resume_stuck(self, id: str, guidance: str, *, model: str | None = None) -> Assignment:
        """Stop a stuck worker and continue its session with guidance, in the same worktree.

        The continuation is a new assignment (``extra["continues"]`` names the old one)
        that runs ``claude --resume <session>`` with `guidance` as its prompt, in the
        same worktree and Claude config dir.  A session is never driven twice: the old
        row can be continued once, and on the machine one worker holds the worktree.
        """
        return await self._dispatcher.resume_stuck(id, guidance, model=model)

    async def dispatch_due(self, *, now: float | None = None) -> list[Assignment]:
        """Continue every queued (rate-limited) assignment whose wait is over."""
        return await self._dispatcher.dispatch_due(now=now)

    async def continue_(
        self, id: str, *, guidance: str | None = None, model: str | None = None
    ) -> Assignment:
        """Continue a queued (rate-limited) assignment's session now, held or not.

        A row restored from the forge's trail is held until a person continues it this way.
        """
        return await self._dispatcher.continue_queued(id, guidance=guidance, model=model)

    async def _continue(
        self, prev: Assignment, prompt: str, *, model: str | None = None
    ) -> Assignment:
        return await self._dispatcher._continue(prev, prompt, model=model)

    # ------------------------------------------------------------ issues
    async def issue_sections(self, repo: str) -> dict[str, list[Issue]]:
        """Sort repo's issues into the pipeline's sections (see `trail.sort_into_sections`)."""
        issues = await self.forge(repo).list_issues(state="all")
        live = {a.issue for a in self.assignments() if a.repo == repo and not a.is_terminal}
        return sort_into_sections(issues, live)

    async def rebuild_from_forge(
        self, repos: Sequence[str] | None = None
    ) -> tuple[list[Assignment], list[SkippedMarker]]:
        """Put back on the board every assignment the forge's trail knows and the board lost.

        Return the rows restored and the markers skipped (not signed by this coordinator,
        copied from elsewhere, or malformed), each with its reason.  A restored row that
        was rate-limited is held: `continue_` starts it, never `resume` by itself.
        """
        return await self.trail.rebuild(repos or list(self.config.repos), self.config)

    # ------------------------------------------------------------ status
    async def status(self, *, machine: str | None = None, history: bool = False) -> StatusReport:
        """Ask every machine (or one) once, reconcile the board, and report.

        A machine's ``orphans`` are the runs there that the board does not know and that
        are still running (`resume` lists ended ones too).
        """
        return await self._status(machine=machine, history=history, all_orphans=False)

    async def _status(
        self, *, machine: str | None, history: bool, all_orphans: bool
    ) -> StatusReport:
        names = [machine] if machine else list(self.config.machines)
        if machine:
            self.config.machine(machine)  # unknown name -> ConfigError with a suggestion
        rows = [Assignment.from_dict(r, where=self.board.path) for r in self.board.all()]
        # Queued (rate-limited) work has no run to ask about until it is continued.
        live = [a for a in rows if not a.is_terminal and a.status != Status.QUEUED]
        probes = await asyncio.gather(
            *(self._probe(n, [a for a in live if a.machine == n], ended=all_orphans) for n in names)
        )
        machines: list[MachineStatus] = []
        updates: dict[str, tuple[int, dict[str, Any]]] = {}
        for name, outcome in zip(names, probes, strict=True):
            if isinstance(outcome, CoordError):
                machines.append(MachineStatus(name, reachable=False, error=str(outcome)))
                continue
            ms = MachineStatus(name, reachable=True)
            known = {a.id for a in rows if a.machine == name}
            unknown = set(outcome.runs) - known
            if not all_orphans:
                # A status only cares about workers running unseen; the ended runs of
                # archived work are many, and reading the history to place them costs.
                unknown = {i for i in unknown if outcome.runs[i].exit is None}
            if unknown:
                unknown -= self._history_ids()
            ms.orphans = sorted(unknown)
            for a in (x for x in live if x.machine == name):
                change = reconcile(a, outcome, in_flight=self._in_flight)
                if change:
                    updates[a.id] = (a.events_offset, change)
            machines.append(ms)
        changed, written = self._apply(updates)
        if written is not None:  # the rows as our transaction left them: no second read
            rows = [Assignment.from_dict(r, where=self.board.path) for r in written]
        ended = [a for a in rows for aid, _, new in changed
                 if a.id == aid and (Status(new) in TERMINAL or new == Status.QUEUED)]  # fmt: skip
        if ended:
            await asyncio.gather(*(self.trail.post_ending(a) for a in ended))
        if history:
            live_ids = {a.id for a in rows}
            archived = [r for r in self.board.history() if r["id"] not in live_ids]
            rows = [Assignment.from_dict(r, where=self.board.path) for r in archived] + rows
        for ms in machines:
            ms.running = sum(1 for a in rows if a.machine == ms.name and a.status == Status.RUNNING)
        if machine:
            rows = [a for a in rows if a.machine == machine]
        return StatusReport(machines=machines, assignments=rows, changed=changed)

    def _in_flight(self, a: Assignment) -> bool:
        if a.id in self._dispatcher.sending and time.time() - a.created_at < DISPATCH_GRACE:
            return True  # another task of ours is sending it right now
        return dispatch_may_be_in_flight(a, self._host)

    def _history_ids(self) -> set[str]:
        return {r["id"] for r in self.board.history()}

    async def _probe(
        self, name: str, live: Sequence[Assignment], *, ended: bool
    ) -> MachineProbe | CoordError:
        """Ask one machine about `live` (and every running run; every ended one too if `ended`)."""
        m = self.config.machine(name)
        wants = [f"{a.id}:{a.events_offset}:{MAX_EVENT_BYTES}" for a in live]
        scope = "all" if ended else "live"
        try:
            result = await asyncio.wait_for(
                self.transport(name).run(
                    remote_argv("status", m.workdir, m.tmux_socket, scope, *wants),
                    timeout=_PROBE_TIMEOUT,
                    what="status probe",
                ),
                _PROBE_TIMEOUT + 15,
            )
            return parse_probe(result.stdout)
        except CoordError as exc:
            return exc
        except TimeoutError:
            return UnreachableError("did not answer within 45 s", machine=name)
        except ValueError as exc:
            return MachineError(f"unreadable status output: {exc}", machine=name)

    def _apply(
        self, updates: Mapping[str, tuple[int, dict[str, Any]]]
    ) -> tuple[list[tuple[str, str, str]], list[dict[str, Any]] | None]:
        """Write reconciled fields in one transaction, skipping rows others moved on.

        Return the status changes made, and the live rows after the write (None
        when there was nothing to write).
        """
        changed: list[tuple[str, str, str]] = []
        if not updates:
            return changed, None
        with self.board.transaction() as txn:
            for aid, (offset, fields) in updates.items():
                if aid not in txn:
                    continue
                row = txn.get(aid)
                if row.get("status") in {str(s) for s in TERMINAL}:
                    continue  # another process settled it first
                if row.get("events_offset", 0) != offset:
                    continue  # another process folded newer events; ours are stale
                if "extra" in fields:  # fields carry only the extra keys that changed
                    fields = {**fields, "extra": {**row.get("extra", {}), **fields["extra"]}}
                txn.update(aid, fields)
                new = fields.get("status")
                if new and new != row.get("status"):
                    changed.append((aid, str(row.get("status")), str(new)))
            rows = txn.all()
        return changed, rows

    # ------------------------------------------------------------ watch / wait / log
    async def watch_lines(
        self, id: str, *, offset: int = 0, reconnect_for: float = 300.0
    ) -> AsyncIterator[bytes]:
        """Yield the run's raw stream-json lines from offset until the run ends.

        A dropped connection is resumed from the last complete line, so no line
        is lost or repeated; after ``reconnect_for`` seconds of failing to
        reconnect the `UnreachableError` is raised.
        """
        a = self.get(id)
        m = self.config.machine(a.machine)
        t = self.transport(a.machine)
        failing_since: float | None = None
        delay = 0.2
        while True:
            buf = b""
            try:
                async for chunk in t.stream(
                    remote_argv("tail", m.workdir, a.id, str(offset), "events.jsonl", "1")
                ):
                    failing_since, delay = None, 0.2
                    buf += chunk
                    if b"\n" not in chunk:
                        continue
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        offset += len(line) + 1
                        yield line
                break
            except CommandError as exc:
                if exc.returncode == 3:  # the run dir is gone: nothing more to read
                    break
                raise
            except UnreachableError:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > reconnect_for:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 3.0)
        if buf:
            yield buf

    async def watch(self, id: str, *, offset: int = 0) -> AsyncIterator[Event]:
        """Yield the run's parsed events until it ends, then record its outcome."""
        from .stream import Init, parse_line

        a = self.get(id)
        cwd: str | None = None
        async for line in self.watch_lines(a.id, offset=offset):
            for event in parse_line(line, cwd=cwd):
                if isinstance(event, Init) and event.cwd:
                    cwd = event.cwd  # tool paths are then shown relative to the worktree
                yield event
        await self._settle(a)

    async def _settle(self, a: Assignment, *, tries: int = 20) -> Assignment:
        """Probe a's machine until a has a terminal status (its exit.json lands just after)."""
        for _ in range(tries):
            await self.status(machine=a.machine)
            current = self.get(a.id)
            if current.is_terminal:
                return current
            await asyncio.sleep(0.25)
        return self.get(a.id)

    async def wait(self, id: str, *, timeout: float | None = None, poll: float = 0.5) -> Assignment:
        """Wait until the assignment ends and return it; raise `WaitTimeout` past timeout."""
        a = self.get(id)
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = poll
        while True:
            if a.is_terminal:
                return a
            if a.status == Status.QUEUED:  # rate-limited: continue it when its wait is over
                a = await self._wait_queued(a, deadline)
                continue
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"assignment {a.id} is still {a.status} after {timeout:g} s "
                    f"(`coord watch {a.id}` to follow it)"
                )
            report = await self.status(machine=a.machine)
            a = next((x for x in report.assignments if x.id == a.id), None) or self.get(a.id)
            if a.is_terminal:
                return a
            sleep = interval
            if deadline is not None:
                sleep = max(0.0, min(sleep, deadline - time.monotonic()))
            await asyncio.sleep(sleep)
            interval = min(interval * 1.5, 5.0)

    async def _wait_queued(self, a: Assignment, deadline: float | None) -> Assignment:
        """Sleep out a queued assignment's limit, continue it, and return what follows it."""
        held = a.extra.get("held")
        if held:
            raise UsageError(
                f"assignment {a.id} is queued and held ({held}); nothing starts it by itself: "
                f"`coord continue {a.id}` continues its session, `coord retry {a.id}` starts afresh"
            )
        due = float(a.extra.get("not_before") or 0) - time.time()
        if deadline is not None and due > deadline - time.monotonic():
            raise WaitTimeout(
                f"assignment {a.id} is queued after a rate limit until "
                f"{time.strftime('%H:%M:%S', time.localtime(time.time() + due))}, "
                f"past the timeout"
            )
        await asyncio.sleep(max(0.0, due))
        await self.dispatch_due()
        a = self.get(a.id)
        follow = a.extra.get("continued_by")
        return self.get(follow) if isinstance(follow, str) else a

    async def log(
        self, id: str, *, follow: bool = False, stderr: bool = False, offset: int = 0
    ) -> AsyncIterator[bytes]:
        """Yield the raw bytes of the run's events.jsonl (or stderr.log)."""
        a = self.get(id)
        cleaned = a.extra.get("cleaned")
        if isinstance(cleaned, dict) and cleaned.get("run") == "removed":
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(cleaned.get("at", 0))))
            raise MachineError(
                f"the run directory of {a.id} was removed by `coord clean` on {when}; "
                "its outcome is on the board (coord status --history --json)",
                machine=a.machine,
            )
        m = self.config.machine(a.machine)
        name = "stderr.log" if stderr else "events.jsonl"
        argv = remote_argv("tail", m.workdir, a.id, str(offset), name, "1" if follow else "0")
        async for chunk in self.transport(a.machine).stream(argv):
            yield chunk

    # ------------------------------------------------------------ stop / resume
    async def stop(self, id: str) -> Assignment:
        """Stop a running worker (its process group is killed) and record it."""
        a = self.get(id)
        if a.is_terminal:
            return a
        m = self.config.machine(a.machine)
        try:
            await self.transport(a.machine).run(
                remote_argv("stop", m.workdir, a.id), timeout=30, what="stop"
            )
        except CommandError as exc:
            if exc.returncode != 3:  # 3: no such run; status settles it as lost
                raise
        return await self._settle(a, tries=8)

    async def clean(
        self,
        *ids: str,
        older_than: float = 7 * 86400.0,
        machine: str | None = None,
        keep_runs: bool = False,
        dry_run: bool = False,
    ) -> CleanReport:
        """Remove the worktrees and run dirs of ended work; keep anything with changes.

        Without `ids`, every ended assignment that finished `older_than` seconds ago or
        more.  A worktree with uncommitted or untracked files, a main checkout, or one a
        live assignment still uses is never removed; branches always stay.  See
        `coordlib.cleanup`.
        """
        from .cleanup import clean

        return await clean(
            self,
            older_than=older_than,
            ids=ids,
            machine=machine,
            keep_runs=keep_runs,
            dry_run=dry_run,
        )

    async def resume(self, *, from_forge: bool = False) -> ResumeReport:
        """Rebuild truth from every machine and repair the board.

        With `from_forge`, first put back the assignments the forge's trail knows of
        and the board does not (a lost or deleted board file).
        """
        restored, skipped = await self.rebuild_from_forge() if from_forge else ([], [])
        report = await self._status(machine=None, history=False, all_orphans=True)
        unreachable = [m for m in report.machines if not m.reachable]
        down = {m.name for m in unreachable}
        still = [a.id for a in report.assignments if not a.is_terminal and a.machine in down]
        orphans = {m.name: m.orphans for m in report.machines if m.orphans}
        continued = await self.dispatch_due()
        await self.trail.post_pending(self.assignments())
        return ResumeReport(
            changed=report.changed,
            unreachable=unreachable,
            orphans=orphans,
            still_running=still,
            continued=continued,
            restored=[a.id for a in restored],
            skipped=skipped,
        )
