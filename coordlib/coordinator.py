"""`Coordinator`: the async facade that scripts and the CLI drive.

It ties the pieces together: the config says which machines and repos exist,
the board remembers assignments, transports reach machines, and the remote run
protocol (``runtime/remote.sh``) does the work there.  Every operation costs as
few remote commands as it can: a dispatch is one, a status is one per machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._version import __version__
from .assignment import TERMINAL, Assignment, Status
from .board import Board
from .briefings import render_briefing
from .config import Config, find_config, is_secret_name, load_config, resolve_env
from .errors import (
    ClaimError,
    CommandError,
    CoordError,
    DispatchError,
    MachineError,
    UnreachableError,
    WaitTimeout,
)
from .runtime.command import (
    LaunchSpec,
    branch_name,
    encode_env,
    remote_argv,
    script_hash,
    slugify,
)
from .runtime.local import LocalTransport
from .runtime.probe import MachineProbe, RunProbe, parse_probe
from .runtime.ssh import SSHTarget, SSHTransport
from .runtime.transport import Transport
from .stream import Event, FailureClass, Init, Result, RunProgress, classify, parse_line

__all__ = ["Coordinator", "MachineStatus", "ResumeReport", "StatusReport"]

# Events read per run per status call; the rest waits for the next call.
_MAX_EVENT_BYTES = 8 * 1024 * 1024
# A pending row whose dispatch may still be in flight in another process is left alone this long.
_DISPATCH_GRACE = 300.0
_DISPATCH_TIMEOUT = 180.0
_PROBE_TIMEOUT = 30.0
_RESULT_TEXT = 2000
# How long a rate-limited assignment waits when the CLI did not say.
_RATE_LIMIT_WAIT = 60.0
RATE_LIMIT_GUIDANCE = (
    "Your previous run was interrupted by an API rate limit. Continue the task from where "
    "you left off; check `git status` and `git log` to see what is already done."
)


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

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready summary."""
        return {
            "changed": [{"id": i, "from": a, "to": b} for i, a, b in self.changed],
            "unreachable": [m.to_dict() for m in self.unreachable],
            "orphans": self.orphans,
            "still_running": self.still_running,
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
    data = a.to_dict()
    return {k: data[k] for k in _PUBLIC_FIELDS}


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
    ) -> None:
        self.config = config
        self.board = board or Board(config.board.path, keep_finished=config.board.keep_finished)
        self._environ = dict(os.environ if environ is None else environ)
        self._transports: dict[str, Transport] = {}
        self._host = socket.gethostname()

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
        await asyncio.gather(*(t.close() for t in transports), return_exceptions=True)

    # ------------------------------------------------------------ machines
    def transport(self, machine: str) -> Transport:
        """Return the one transport for machine, creating it on first use."""
        t = self._transports.get(machine)
        if t is None:
            m = self.config.machine(machine)
            t = LocalTransport(m.name) if m.is_local else SSHTransport(self.ssh_target(m.name))
            self._transports[machine] = t
        return t

    def ssh_target(self, machine: str) -> SSHTarget:
        """Return where machine is reached over SSH (for `coord trust`)."""
        m = self.config.machine(machine)
        if m.is_local:
            raise MachineError(
                "is the local machine: there is no host key to trust", machine=m.name
            )
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
        return Assignment.from_dict(self.board.get(id_or_prefix))

    def assignments(self, *, history: bool = False) -> list[Assignment]:
        """Return the board's assignments (and the archived ones too with history)."""
        rows = (self.board.history() if history else []) + self.board.all()
        return [Assignment.from_dict(r) for r in rows]

    # ------------------------------------------------------------ assign
    def _launch_spec(
        self, machine: str, worktree: str, model_id: str, *, resume: str | None = None
    ) -> LaunchSpec:
        m = self.config.machine(machine)
        w = self.config.worker
        args = ["--output-format", "stream-json", "--verbose", "--model", model_id]
        args += ["--allowedTools", w.allowed_tools]
        if w.max_turns:
            args += ["--max-turns", str(w.max_turns)]
        if resume:
            args += ["--resume", resume]
        return LaunchSpec(
            worktree=worktree,
            command=m.claude_argv(),
            args=[*args, *w.extra_args],
            stall_ms=int(w.stall_timeout * 1000),
            max_runtime_ms=int(w.max_runtime * 1000),
            grace_ms=int(w.result_grace * 1000),
            poll_seconds=w.poll_interval,
        )

    def _new_id(self, repo: str, issue: int) -> str:
        return f"{slugify(repo, max_length=16) or 'repo'}-{issue}-{secrets.token_hex(2)}"

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
    ) -> tuple[Assignment, str, LaunchSpec]:
        """Work out everything a dispatch needs without touching the board or a machine."""
        m = self.config.machine(machine)
        r = self.config.repo(repo)
        if m.repos and r.name not in m.repos:
            raise DispatchError(
                f"does not work on repo {r.name} (its repos: {', '.join(m.repos)}); "
                f"add it to machines.{m.name}.repos in {self.config.path}",
                machine=m.name,
            )
        if issue < 0:
            raise CoordError(f"issue number must be positive, got {issue}")
        tier, model_id = self.config.models.resolve(model or self.config.models.default)
        title = (title or "").strip() or f"issue {issue}"
        branch = branch_name(issue, title)
        if attempt > 1:  # a retry starts afresh beside the earlier attempt's branch
            branch = f"{branch}-r{attempt}"
        aid = self._new_id(r.name, issue)
        workdir = m.workdir.rstrip("/") or "~/.coord"
        worktree = f"{workdir}/worktrees/{r.name}/{aid}"
        a = Assignment(
            id=aid,
            machine=m.name,
            repo=r.name,
            issue=issue,
            branch=branch,
            model=model_id,
            tier=tier,
            title=title,
            worktree=worktree,
            run_dir=f"{workdir}/runs/{aid}",
            created_at=time.time(),
            attempt=attempt,
        )
        if briefing is None:
            briefing = render_briefing(
                "work",
                {
                    "issue": {"number": issue, "title": title, "body": ""},
                    "repo": r,
                    "branch": branch,
                    "machine": m,
                    "model": model_id,
                },
                user_dir=self._briefing_dir(),
            )
        launch = self._launch_spec(m.name, worktree, model_id)
        a.extra["argv"] = [*launch.command, "-p", "<briefing.md>", *launch.args]
        return a, briefing, launch

    def _briefing_dir(self) -> Path | None:
        raw = self.config.extra.get("briefings")
        if isinstance(raw, Mapping) and raw.get("dir"):
            base = self.config.path.parent if self.config.path else Path.cwd()
            return (base / os.path.expanduser(str(raw["dir"]))).resolve()
        return None

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
        a, text, launch = self.plan_assignment(
            machine, repo, issue, model=model, briefing=briefing, title=title
        )
        if dry_run:
            return a
        self._claim(a, force=force)
        return await self._dispatch(a, text, launch, mode="new")

    def _claim(self, a: Assignment, *, force: bool = False, replaces: str | None = None) -> None:
        """Put a on the board as pending, unless its issue is taken or capacity is full.

        `replaces` names the assignment a continues or retries: it may still be live
        (a queued one), and is not counted as a clash.
        """
        m = self.config.machine(a.machine)
        a.extra["coordinator"] = {"host": self._host, "pid": os.getpid()}
        with self.board.transaction() as txn:
            rows = [Assignment.from_dict(x) for x in txn.all()]
            live = [x for x in rows if not x.is_terminal and x.id != replaces]
            clash = [x for x in live if x.repo == a.repo and x.issue == a.issue]
            if clash and not force:
                c = clash[0]
                raise ClaimError(
                    f"issue {a.repo}#{a.issue} already has live assignment {c.id} "
                    f"({c.status} on {c.machine}); stop it with `coord stop {c.id}` "
                    f"or pass --force"
                )
            working = [x for x in live if x.status != Status.QUEUED]
            cap = self.config.concurrency.max_workers
            if len(working) >= cap and not force:
                raise DispatchError(
                    f"{len(working)} workers are live, the limit of concurrency.max_workers "
                    f"({cap}); wait for one to end or raise the limit in {self.config.path}"
                )
            busy = sum(1 for x in working if x.machine == m.name)
            if busy >= m.max_workers and not force:
                raise DispatchError(
                    f"is running {busy} of its {m.max_workers} workers; wait, pick another "
                    f"machine, or raise machines.{m.name}.max_workers",
                    machine=m.name,
                )
            if replaces is not None and replaces in txn:
                prev = txn.get(replaces)
                taken = prev.get("extra", {}).get("continued_by")
                if taken:
                    raise ClaimError(
                        f"assignment {replaces} was already continued by {taken}; "
                        f"one session is never driven by two workers"
                    )
                txn.update(replaces, {"extra": {**prev.get("extra", {}), "continued_by": a.id}})
            txn.insert(a.to_dict())

    async def _dispatch(
        self, a: Assignment, text: str, launch: LaunchSpec, *, mode: str = "new"
    ) -> Assignment:
        """Send one pending assignment to its machine (one remote command) and record it."""
        m = self.config.machine(a.machine)
        r = self.config.repo(a.repo)
        try:
            env = resolve_env(m.env, self._environ, machine=m.name)
        except CoordError as exc:
            self._fail_dispatch(a, str(exc))
            raise
        spec = {
            "id": a.id,
            "machine": a.machine,
            "repo": a.repo,
            "issue": a.issue,
            "title": a.title,
            "branch": a.branch,
            "base": r.default_branch,
            "model": a.model,
            "mode": mode,
            "argv": a.extra["argv"],
            # names only for secrets: their values exist only in the worker's memory
            "env": {k: ("<secret>" if is_secret_name(k) else v) for k, v in env.items()},
            "created_at": a.created_at,
            "coordlib_version": __version__,
        }
        brief_b = text.encode()
        spec_b = (json.dumps(spec, indent=2) + "\n").encode()
        launch_b = launch.render().encode()
        argv = remote_argv(
            "dispatch",
            m.workdir,
            a.id,
            m.repo_path(r.name),
            a.worktree,
            a.branch,
            r.default_branch,
            m.tmux_socket,
            script_hash(),
            str(len(brief_b)),
            str(len(spec_b)),
            str(len(launch_b)),
            mode,
        )
        payload = brief_b + spec_b + launch_b + encode_env(env)
        try:
            result = await self.transport(m.name).run(
                argv, input=payload, timeout=_DISPATCH_TIMEOUT, what="dispatch"
            )
        except CommandError as exc:
            # The script exited with its own error: nothing was started.
            reason = _last_line(exc.stderr) or str(exc)
            self._fail_dispatch(a, reason)
            raise DispatchError(f"could not start {a.id}: {reason}", machine=m.name) from exc
        except MachineError as exc:
            if isinstance(exc, UnreachableError) and "cannot" in str(exc):
                self._fail_dispatch(a, str(exc))  # never connected: nothing started
            else:
                # It may have started: leave it pending for status/resume to settle.
                self.board.update(a.id, error=f"dispatch outcome unknown: {exc}")
            raise
        info = _json_or_empty(result.out)
        fields: dict[str, Any] = {"status": str(Status.RUNNING), "started_at": time.time()}
        if info.get("head"):
            fields["extra"] = {**a.extra, "base_sha": info["head"]}
        with self.board.transaction() as txn:
            if txn.get(a.id).get("status") == str(Status.PENDING):
                txn.update(a.id, fields)
            row = txn.get(a.id)
        return Assignment.from_dict(row)

    def _fail_dispatch(self, a: Assignment, error: str) -> None:
        with self.board.transaction() as txn:
            txn.update(
                a.id,
                {
                    "status": str(Status.FAILED),
                    "failure_class": "dispatch_failed",
                    "error": error,
                    "finished_at": time.time(),
                },
            )
            prev = a.extra.get("continues")
            if isinstance(prev, str) and prev in txn:  # free the session for another try
                row = txn.get(prev)
                extra = {k: v for k, v in row.get("extra", {}).items() if k != "continued_by"}
                txn.update(prev, {"extra": extra})

    # ------------------------------------------------------------ retry / continue
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
        prev = self.get(id)
        if not prev.is_terminal and prev.status != Status.QUEUED:
            raise ClaimError(
                f"assignment {prev.id} is still {prev.status}; stop it first "
                f"(`coord stop {prev.id}`) or use `coord resume-stuck` to steer it"
            )
        a, text, launch = self.plan_assignment(
            machine or prev.machine,
            prev.repo,
            prev.issue,
            model=model or prev.tier or prev.model,
            briefing=briefing,
            title=prev.title,
            attempt=prev.attempt + 1,
        )
        a.extra["retry_of"] = prev.id
        self._claim(a, force=force, replaces=prev.id)
        self._close_replaced(prev, a, retried=True)
        return await self._dispatch(a, text, launch, mode="new")

    def _close_replaced(self, prev: Assignment, new: Assignment, *, retried: bool) -> None:
        with self.board.transaction() as txn:
            if prev.id not in txn:
                return
            row = txn.get(prev.id)
            extra = {**row.get("extra", {})}
            extra["retried_by" if retried else "continued_by"] = new.id
            fields: dict[str, Any] = {"extra": extra}
            if row.get("status") == str(Status.QUEUED):
                fields.update(status=str(Status.FAILED), finished_at=time.time())
            txn.update(prev.id, fields)

    async def resume_stuck(self, id: str, guidance: str, *, model: str | None = None) -> Assignment:
        """Stop a stuck worker and continue its session with guidance, in the same worktree.

        The continuation is a new assignment (``extra["continues"]`` names the old one)
        that runs ``claude --resume <session>`` with `guidance` as its prompt, in the
        same worktree and Claude config dir.  A session is never driven twice: the old
        row can be continued once, and on the machine one worker holds the worktree.
        """
        prev = self.get(id)
        if not prev.is_terminal:
            prev = await self.stop(prev.id)
        if not guidance.strip():
            raise CoordError("give the worker some guidance (--guidance TEXT)")
        return await self._continue(prev, guidance, model=model)

    async def _continue(
        self, prev: Assignment, prompt: str, *, model: str | None = None
    ) -> Assignment:
        if prev.status == Status.LOST:
            raise DispatchError(
                f"assignment {prev.id} is lost with its run; start it again with "
                f"`coord retry {prev.id}`",
                machine=prev.machine,
            )
        tier, model_id = (prev.tier, prev.model)
        if model:
            tier, model_id = self.config.models.resolve(model)
        m = self.config.machine(prev.machine)
        aid = self._new_id(prev.repo, prev.issue)
        workdir = m.workdir.rstrip("/") or "~/.coord"
        launch = self._launch_spec(m.name, prev.worktree, model_id, resume=prev.session_id)
        a = Assignment(
            id=aid,
            machine=prev.machine,
            repo=prev.repo,
            issue=prev.issue,
            branch=prev.branch,
            model=model_id,
            tier=tier,
            title=prev.title,
            worktree=prev.worktree,
            run_dir=f"{workdir}/runs/{aid}",
            created_at=time.time(),
            attempt=prev.attempt,  # steering or waiting out a limit is not a new attempt
            session_id=prev.session_id,
        )
        a.extra["continues"] = prev.id
        a.extra["argv"] = [*launch.command, "-p", "<briefing.md>", *launch.args]
        self._claim(a, force=True, replaces=prev.id)
        self._close_replaced(prev, a, retried=False)
        return await self._dispatch(a, prompt, launch, mode="continue")

    async def dispatch_due(self, *, now: float | None = None) -> list[Assignment]:
        """Continue every queued (rate-limited) assignment whose wait is over."""
        now = time.time() if now is None else now
        started: list[Assignment] = []
        for a in self.assignments():
            if a.status != Status.QUEUED or float(a.extra.get("not_before") or 0) > now:
                continue
            prompt = RATE_LIMIT_GUIDANCE
            if not a.session_id:  # it never got going: no session to resume
                prompt = f"Work on issue #{a.issue} of {a.repo}: {a.title}"
            try:
                started.append(await self._continue(a, prompt))
            except ClaimError:
                continue  # another process continued it first
        return started

    # ------------------------------------------------------------ status
    async def status(self, *, machine: str | None = None, history: bool = False) -> StatusReport:
        """Ask every machine (or one) once, reconcile the board, and report."""
        names = [machine] if machine else list(self.config.machines)
        if machine:
            self.config.machine(machine)  # unknown name -> ConfigError with a suggestion
        rows = [Assignment.from_dict(r) for r in self.board.all()]
        # Queued (rate-limited) work has no run to ask about until it is continued.
        live = [a for a in rows if not a.is_terminal and a.status != Status.QUEUED]
        probes = await asyncio.gather(
            *(self._probe(n, [a for a in live if a.machine == n]) for n in names)
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
            if unknown:  # reading the history costs; only when a run is not live
                unknown -= self._history_ids()
            ms.orphans = sorted(unknown)
            for a in (x for x in live if x.machine == name):
                change = self._reconcile(a, outcome)
                if change:
                    updates[a.id] = (a.events_offset, change)
            machines.append(ms)
        changed, written = self._apply(updates)
        if written is not None:  # the rows as our transaction left them: no second read
            rows = [Assignment.from_dict(r) for r in written]
        if history:
            rows = [Assignment.from_dict(r) for r in self.board.history()] + rows
        for ms in machines:
            ms.running = sum(1 for a in rows if a.machine == ms.name and a.status == Status.RUNNING)
        if machine:
            rows = [a for a in rows if a.machine == machine]
        return StatusReport(machines=machines, assignments=rows, changed=changed)

    def _history_ids(self) -> set[str]:
        return {r["id"] for r in self.board.history()}

    async def _probe(self, name: str, live: Sequence[Assignment]) -> MachineProbe | CoordError:
        m = self.config.machine(name)
        wants = [f"{a.id}:{a.events_offset}:{_MAX_EVENT_BYTES}" for a in live]
        try:
            result = await asyncio.wait_for(
                self.transport(name).run(
                    remote_argv("status", m.workdir, m.tmux_socket, *wants),
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

    def _reconcile(self, a: Assignment, probe: MachineProbe) -> dict[str, Any]:
        """Work out the field changes for a live assignment from its machine's probe."""
        run = probe.runs.get(a.id)
        if run is None:
            if a.status == Status.PENDING and self._dispatch_may_be_in_flight(a):
                return {}
            return {
                "status": str(Status.LOST),
                "failure_class": "lost",
                "exit_reason": "vanished",
                "error": "its run directory is gone from the machine (rebooted or cleaned?)",
                "finished_at": time.time(),
            }
        fields, progress = self._fold(a, run)
        if run.exit is not None:
            unread = (
                run.events is not None
                and run.events_offset is not None
                and (run.events_offset + len(run.events) < run.size)
            )
            if unread:
                return fields  # more events to read before the result can be trusted
            reason = run.exit.get("reason")
            code = run.exit.get("exit_code")
            status, fclass = classify(
                exit_code=code if isinstance(code, int) else None,
                exit_reason=reason if isinstance(reason, str) else None,
                result=progress.result,
            )
            fields.update(
                status=str(status),
                failure_class=str(fclass) if fclass else None,
                exit_code=code if isinstance(code, int) else None,
                exit_reason=reason,
                finished_at=_float(run.exit.get("finished_at")) or time.time(),
            )
            if fclass == FailureClass.RATE_LIMITED:
                # Not a failed attempt: wait out the limit, then continue the session.
                ended = fields["finished_at"]
                wait = _RATE_LIMIT_WAIT
                if progress.last_retry_delay_ms:
                    wait = max(progress.last_retry_delay_ms / 1000, 1.0)
                until = max(ended + wait, progress.rate_limited_until or 0.0)
                extra = fields.get("extra", a.extra)
                fields.update(
                    status=str(Status.QUEUED),
                    finished_at=None,
                    extra={**extra, "not_before": until},
                )
            if reason == "busy":
                fields["error"] = "another worker was still running in its worktree"
            if status == Status.FAILED and not fields.get("error") and progress.result is None:
                fields["error"] = f"worker exited with status {code} ({reason}) and no result"
            return fields
        if run.alive:
            if a.status == Status.PENDING:
                fields["status"] = str(Status.RUNNING)
                fields["started_at"] = a.started_at or time.time()
            return fields
        if a.status == Status.PENDING and self._dispatch_may_be_in_flight(a):
            return fields
        fields.update(
            status=str(Status.LOST),
            failure_class="lost",
            exit_reason="launcher_gone",
            error="the launcher is gone without an exit record (machine rebooted or killed)",
            finished_at=time.time(),
        )
        return fields

    def _fold(self, a: Assignment, run: RunProbe) -> tuple[dict[str, Any], RunProgress]:
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
        end = run.events.rfind(b"\n") + 1
        if end == 0:
            return fields, progress
        last_id = last_msg
        for line in run.events[:end].split(b"\n"):
            for event in parse_line(line):
                progress.apply(event)
                msg = event.raw.get("message") if hasattr(event, "raw") else None
                if isinstance(msg, dict) and isinstance(msg.get("id"), str):
                    last_id = msg["id"]
        fields.update(
            events_offset=run.events_offset + end,
            session_id=progress.session_id,
            num_turns=progress.turns,
            last_status=progress.last_status,
            last_tool=progress.last_tool,
            cost_usd=progress.cost_usd,
            duration_ms=progress.duration_ms,
            extra={
                **a.extra,
                "last_message_id": last_id,
                "last_retry_delay_ms": progress.last_retry_delay_ms,
            },
        )
        if progress.result is not None and progress.result.result:
            fields["result"] = progress.result.result[:_RESULT_TEXT]
        if progress.result is not None and progress.result.is_error:
            fields["error"] = (progress.result.result or "")[:_RESULT_TEXT] or None
        # Re-folding later needs the result; it is the last event, so remember it.
        if progress.result is not None:
            fields["extra"]["result_raw"] = progress.result.raw
        return fields, progress

    def _dispatch_may_be_in_flight(self, a: Assignment) -> bool:
        if time.time() - a.created_at > _DISPATCH_GRACE:
            return False
        owner = a.extra.get("coordinator")
        if not isinstance(owner, dict) or owner.get("host") != self._host:
            return True
        pid = owner.get("pid")
        if pid == os.getpid():
            return False  # this process is not dispatching it right now
        return isinstance(pid, int) and _pid_alive(pid)

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

    async def resume(self) -> ResumeReport:
        """Rebuild truth from every machine and repair the board."""
        report = await self.status()
        unreachable = [m for m in report.machines if not m.reachable]
        down = {m.name for m in unreachable}
        still = [a.id for a in report.assignments if not a.is_terminal and a.machine in down]
        orphans = {m.name: m.orphans for m in report.machines if m.orphans}
        continued = await self.dispatch_due()
        return ResumeReport(
            changed=report.changed,
            unreachable=unreachable,
            orphans=orphans,
            still_running=still,
            continued=continued,
        )


def _json_or_empty(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    return line.removeprefix("coord-run: ")


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
