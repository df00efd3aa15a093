"""Starting workers: planning an assignment, claiming its issue, one remote command to start
it, and the later starts of the same issue (a retry, a continued session).

An assign costs one board read (what is live: clashes, capacity's first look, the files other
workers change) and two writes: the claim (the row, pending, before the machine is touched)
and the start (running, with the trail's first comment).  The `Coordinator` exposes these as
``assign``, ``retry``, ``resume_stuck``, ``continue_`` and ``dispatch_due``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .assignment import Assignment, Status, check_session_id
from .board import Capacity
from .briefings import (
    DEFAULT_TRUSTED_AUTHORS,
    check_briefing,
    files_in_scope,
    issue_context,
    render_briefing,
)
from .claims import Claims
from .config import is_secret_name, resolve_env
from .confine import confined_tool_args
from .errors import (
    ClaimError,
    CommandError,
    CoordError,
    DispatchError,
    MachineError,
    ProtocolError,
    UnreachableError,
    UsageError,
)
from .runtime.answers import Started, failure_reason, parse_dispatch
from .runtime.builders import dispatch_command
from .runtime.command import LaunchSpec, branch_name, slugify
from .runtime.layout import Layout
from .runtime.protocol import DispatchMode, ExitCode
from .scope import declared_files

if TYPE_CHECKING:
    from .admission import Admission
    from .board import Transaction
    from .context import Context
    from .doctor import MachineHealth
    from .forge.base import Issue

__all__ = ["RATE_LIMIT_GUIDANCE", "Dispatcher"]

_DISPATCH_TIMEOUT = 180.0
# A burst of assigns shares one read of the board's live rows (for the early clash check and
# the "do not touch" list; the claim itself checks the board again, inside its transaction).
_LIVE_SHARED_S = 1.0
RATE_LIMIT_GUIDANCE = (
    "Your previous run was interrupted by an API rate limit. Continue the task from where "
    "you left off; check `git status` and `git log` to see what is already done."
)


class Dispatcher:
    """Everything that starts a worker."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.claims = Claims(ctx)
        self._live: tuple[float, list[Assignment]] | None = None
        self._admitted: tuple[float, Admission] | None = None  # admission control, as read
        self._doctored: tuple[float, dict[str, MachineHealth]] | None = None  # doctor's, read

    def _live_rows(self) -> list[Assignment]:
        """The board's live rows, read once for a burst of assigns (see _LIVE_SHARED_S)."""
        now = time.monotonic()
        if self._live is None or now - self._live[0] > _LIVE_SHARED_S:
            self._live = (now, self.ctx.board.live())
        return self._live[1]

    # ------------------------------------------------------------ planning
    def launch_spec(
        self,
        machine: str,
        worktree: str,
        model_id: str,
        *,
        resume: str | None = None,
        tools: str | None = None,
        repo: str | None = None,
        fresh: bool = False,
        reads_only: bool = False,
    ) -> LaunchSpec:
        """Return what the launcher starts: the claude command line and the watchdog's limits.

        `tools` replaces worker.allowed_tools (a pipeline stage's own: a reviewer's read only).
        `repo` names the base branch the run's outcome is checked against, and the workspace:
        its ports for any run, and (`fresh`: a worktree this dispatch makes) its setup.
        Confined (worker.confine), the file tools are held to the worktree, and a worker that
        only reads (`reads_only`: a review) gets none.
        """
        m = self.ctx.config.machine(machine)
        w = self.ctx.config.worker
        args = ["--output-format", "stream-json", "--verbose", "--model", model_id]
        tools = tools or w.allowed_tools
        if w.confine:
            args += confined_tool_args(tools, reads_only=reads_only)
        else:
            args += ["--allowedTools", tools]
        if w.max_turns:
            args += ["--max-turns", str(w.max_turns)]
        if resume:
            # One word: a session id can never be read as an option of its own.
            args.append(f"--resume={check_session_id(resume)}")
        return LaunchSpec(
            worktree=worktree,
            command=m.claude_argv(),
            args=[*args, *w.extra_args],
            stall_ms=int(w.stall_timeout * 1000),
            max_runtime_ms=int(w.max_runtime * 1000),
            grace_ms=int(w.result_grace * 1000),
            poll_seconds=w.poll_interval,
            confine=w.confine,
            deny_read=w.deny_read,
            domains=_domains(
                w.allowed_domains, self.ctx.config.repo(repo).allowed_domains if repo else ()
            ),
            **(self._workspace(m.name, repo, fresh=fresh) if repo else {}),
        )

    def _workspace(self, machine: str, repo: str, *, fresh: bool) -> dict[str, Any]:
        """The LaunchSpec fields of repo's workspace (see `WorkspaceConfig`)."""
        r = self.ctx.config.repo(repo)
        ws = r.workspace
        return {
            "base": r.default_branch, "ports": ws.ports, "setup": fresh,
            "setup_script": (ws.setup or "") if fresh else "",
            "archive_script": (ws.archive or "") if fresh else "",
            "run_script": (ws.run or "") if fresh else "",
            "setup_timeout": math.ceil(ws.timeout or 0), "copy": ws.copy if fresh else (),
            "main": self.ctx.config.machine(machine).repo_path(repo) if fresh else "",
        }  # fmt: skip

    def _new_id(self, repo: str, issue: int) -> str:
        return f"{slugify(repo, max_length=16) or 'repo'}-{issue}-{os.urandom(2).hex()}"

    def _row(
        self,
        machine: str,
        repo: str,
        issue: int,
        *,
        branch: str,
        model: tuple[str, str],
        title: str,
        worktree: str | None,
        **fields: Any,
    ) -> Assignment:
        """A new row on `machine` with a fresh id: its run dir, and its own worktree unless one
        is given (a continued session's or a fix's).  `model` is (tier, model id)."""
        layout = Layout(self.ctx.config.machine(machine).workdir)
        aid = self._new_id(repo, issue)
        return Assignment(
            id=aid, machine=machine, repo=repo, issue=issue, branch=branch, model=model[1],
            tier=model[0], title=title, worktree=worktree or layout.worktree(repo, aid),
            run_dir=layout.run_dir(aid).path, created_at=time.time(), **fields,
        )  # fmt: skip

    def plan(
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
        live: Sequence[Assignment] | None = None,
    ) -> tuple[Assignment, str, LaunchSpec]:
        """See `Coordinator.plan_assignment`; `live` is the board's live rows, if read."""
        config = self.ctx.config
        m = config.machine(machine)
        r = config.repo(repo)
        if m.repos and r.name not in m.repos:
            raise DispatchError(
                f"does not work on repo {r.name} (its repos: {', '.join(m.repos)}); "
                f"add it to machines.{m.name}.repos in {config.path}",
                machine=m.name,
            )
        if issue < 0:
            raise UsageError(f"issue number must be positive, got {issue}")
        if model is None and issue_info is not None:
            # A label can pick the tier (models.labels: {chore: haiku}).
            model = next((config.models.labels[x] for x in issue_info.labels
                          if x in config.models.labels), None)  # fmt: skip
        tier, model_id = config.models.resolve(model or config.models.default)
        if not (title or "").strip() and issue_info is not None:
            title = issue_info.title
        title = (title or "").strip() or f"issue {issue}"
        branch = branch_name(issue, title)
        if attempt > 1:  # a retry starts afresh beside the earlier attempt's branch
            branch = f"{branch}-r{attempt}"
        scope = files_in_scope(issue_info.body) if issue_info is not None else []
        a = self._row(m.name, r.name, issue, branch=branch, model=(tier, model_id), title=title,
                      worktree=None, attempt=attempt, files_in_scope=scope)  # fmt: skip
        a.files_declared = declared_files(issue_info.body) if issue_info is not None else None
        if briefing is None:
            rows = self._live_rows() if live is None else live
            info = self._issue_context(r.name, issue_info) if issue_info is not None else {}
            briefing = render_briefing(
                "work",
                {
                    "issue": {**info, "number": issue, "title": title},
                    "repo": r,
                    "branch": branch,
                    "machine": m,
                    "model": model_id,
                    "attempt": attempt,
                    "previous": previous,
                    "files_in_scope": scope,
                    "do_not_touch": _in_flight_files(rows, r.name, issue),
                },
                user_dir=self._briefing_dir(),
            )
        check_briefing(briefing)
        launch = self.launch_spec(m.name, a.worktree, model_id, repo=r.name, fresh=True)
        a.argv = _worker_argv(launch)
        return a, briefing, launch

    def _issue_context(self, repo: str, issue: Issue) -> dict[str, Any]:
        """The issue as the work briefing quotes it (see `briefings.issue_context`)."""
        raw = self.ctx.config.extra.get("briefings")
        trusted: Sequence[str] = DEFAULT_TRUSTED_AUTHORS
        if isinstance(raw, Mapping) and raw.get("trusted_authors") is not None:
            trusted = tuple(str(x) for x in raw["trusted_authors"])
        kind = self.ctx.forges.get(repo).kind
        return issue_context(issue, forge_kind=kind, trusted_authors=trusted)

    def _briefing_dir(self) -> Path | None:
        raw = self.ctx.config.extra.get("briefings")
        if isinstance(raw, Mapping) and raw.get("dir"):
            base = self.ctx.config.path.parent if self.ctx.config.path else Path.cwd()
            return (base / os.path.expanduser(str(raw["dir"]))).resolve()
        return None

    # ------------------------------------------------------------ the first start
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
        also: Callable[[Transaction, Assignment], None] | None = None,
    ) -> Assignment:
        """See `Coordinator.assign`; `also` is made in the claim's transaction."""
        board = self.ctx.board
        # What the config can answer first: an unknown machine or repo is said before the
        # forge is asked anything (ConfigError, with the nearest name).
        self.ctx.config.machine(machine)
        self.ctx.config.repo(repo)
        live = self._live_rows()
        titled = bool((title or "").strip()) or briefing is not None
        info = await self.claims.issue(
            repo, issue, live=live, titled=titled, force=force,
            mine=lambda: {x.branch for x in board.assignments(history=True) if x.repo == repo},
        )  # fmt: skip
        a, text, launch = self.plan(machine, repo, issue, model=model, briefing=briefing,
                                    title=title, issue_info=info, live=live)  # fmt: skip
        if dry_run:
            a.briefing = text
            return a
        return await self._start(a, text, launch, issue=info, force=force, also=also)

    def _capacity(self, machine: str) -> Capacity:
        """The room to claim in: the fleet's (as admission control allows it now) and the
        machine's; raise `DispatchError` while admission control pauses new dispatch."""
        from .admission import load

        c = self.ctx.config
        where = str(c.path) if c.path else ""
        now = time.time()
        # A burst of dispatches shares one read of it (as it shares the live rows).
        if self._admitted is None or now - self._admitted[0] > 1.0:
            self._admitted = (now, load(self.ctx.board))
        admitted = self._admitted[1]
        paused = admitted.paused(now)
        if paused:
            raise DispatchError(f"{paused} (admission control; --force goes ahead)")
        fleet = admitted.fleet(c.concurrency.max_workers)
        if fleet < c.concurrency.max_workers:
            where = f"{where}; admission control allows {fleet} while the API is busy"
        return Capacity(fleet, c.machine(machine).max_workers, where)

    def _refuse_unhealthy(self, machine: str, repo: str) -> None:
        """Raise `UnhealthyMachineError` when machine's latest `coord doctor` (under a day
        old) found it unhealthy; a burst of dispatches shares one read of the board."""
        from .doctor import latest, refuse_unhealthy

        now = time.time()
        if self._doctored is None or now - self._doctored[0] > 1.0:
            self._doctored = (now, latest(self.ctx.board))
        refuse_unhealthy(self._doctored[1], machine, repo, now=now)

    async def _start(
        self,
        a: Assignment,
        text: str,
        launch: LaunchSpec,
        *,
        issue: Issue | None,
        force: bool,
        replaces: Assignment | None = None,
        retried: bool = False,
        mode: DispatchMode = DispatchMode.NEW,
        also: Callable[[Transaction, Assignment], None] | None = None,
    ) -> Assignment:
        """Claim a on the board, start its worker, post its briefing, and record the start."""
        if issue is None and not (replaces and replaces.trail is not None):
            a.trail_off = "the issue is not on the forge"
        if a.trail_off is None:
            a.trail = {"dispatch": "posting"}  # claimed with the row: posted just below
        a.sender_host, a.sender_pid = self.ctx.host, os.getpid()
        if not force:
            self._refuse_unhealthy(a.machine, a.repo)
        capacity = None if force else self._capacity(a.machine)
        await self.ctx.board.claim(
            a, capacity=capacity, replaces=replaces.id if replaces else None, retried=retried,
            also=also,
        )  # fmt: skip
        self._live = None  # the next assign reads the board again: it holds a new row
        # Until its dispatch returns, a status in this process (another task's `wait`) must
        # not take the row's missing run for a lost one.
        self.ctx.sending.add(a.id)
        try:
            started = await self._send(a, text, launch, mode=mode)
        finally:
            self.ctx.sending.discard(a.id)
        posted: dict[str, int | str | None] = {}
        a.ports = list(started.ports) if started.ports else None
        if a.trail_off is None:
            labels = issue.labels if issue is not None else None
            posted["dispatch"] = await self.ctx.trail.post_dispatch(a, text, labels)
        return await self.ctx.board.started(a.id, base_sha=started.head, posted=posted,
                                            ports=a.ports)  # fmt: skip

    async def _send(
        self, a: Assignment, text: str, launch: LaunchSpec, *, mode: DispatchMode
    ) -> Started:
        """Send one pending assignment to its machine: one remote command."""
        m = self.ctx.config.machine(a.machine)
        r = self.ctx.config.repo(a.repo)
        board = self.ctx.board
        try:
            env = resolve_env(m.env, self.ctx.environ, machine=m.name)
        except CoordError as exc:
            await board.dispatch_failed(a.id, str(exc))
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
            "mode": str(mode),
            "argv": a.argv,
            # names only for secrets: their values exist only in the worker's memory
            "env": {k: ("<secret>" if is_secret_name(k) else v) for k, v in env.items()},
            "created_at": a.created_at,
            "coordlib_version": __version__,
        }
        if mode == DispatchMode.NEW and self.ctx.config.concurrency.remote_claims:
            mode = DispatchMode.CLAIM  # the branch goes to origin first: the issue's claim
        argv, payload = dispatch_command(
            workdir=m.workdir, id=a.id, repo_path=m.repo_path(r.name), worktree=a.worktree,
            branch=a.branch, base=r.default_branch, socket=m.tmux_socket, mode=mode,
            briefing=text, spec=spec, launch=launch, env=env,
        )  # fmt: skip
        try:
            result = await self.ctx.machines.get(m.name).run(
                argv, input=payload, timeout=_DISPATCH_TIMEOUT, what="dispatch"
            )
        except CommandError as exc:
            # The script exited with its own error: nothing was started.
            reason = failure_reason(exc.stderr) or str(exc)
            await board.dispatch_failed(a.id, reason)
            if exc.returncode == ExitCode.CLAIMED:
                raise ClaimError(f"issue {a.repo}#{a.issue}: {reason}") from exc
            raise DispatchError(f"could not start {a.id}: {reason}", machine=m.name) from exc
        except MachineError as exc:
            if isinstance(exc, UnreachableError) and not exc.command_sent:
                await board.dispatch_failed(a.id, str(exc))  # never reached the machine
            else:
                # It may have started: leave it pending for status/resume to settle.
                board.dispatch_unknown(a.id, f"dispatch outcome unknown: {exc}")
            raise
        try:
            return parse_dispatch(result.stdout, machine=m.name)
        except ProtocolError:
            return Started()  # it started (exit 0); only what it said is unreadable

    # ------------------------------------------------------------ later starts of an issue
    async def retry(
        self,
        id: str,
        *,
        machine: str | None = None,
        model: str | None = None,
        briefing: str | None = None,
        force: bool = False,
    ) -> Assignment:
        """See `Coordinator.retry`."""
        board = self.ctx.board
        prev = board.assignment(id)
        if not prev.is_terminal and prev.status != Status.QUEUED:
            raise ClaimError(
                f"assignment {prev.id} is still {prev.status}; stop it first "
                f"(`coord stop {prev.id}`) or use `coord resume-stuck` to steer it"
            )
        # The issue as the forge has it now; its own earlier branch is no claim against it.
        info = await self.claims.issue(prev.repo, prev.issue, live=(), titled=True, force=True,
                                       mine=set)  # fmt: skip
        a, text, launch = self.plan(
            machine or self._retry_machine(prev, info),
            prev.repo,
            prev.issue,
            model=model or prev.tier or prev.model,
            briefing=briefing,
            title=prev.title,
            attempt=prev.attempt + (not _no_attempt(prev)),
            issue_info=info,
            previous=prev,
        )
        a.retry_of, a.stage = prev.id, prev.stage
        return await self._start(a, text, launch, issue=info, force=force, replaces=prev,
                                 retried=True)  # fmt: skip

    def _retry_machine(self, prev: Assignment, info: Issue | None) -> str:
        """Where a retry runs by default (`planner.retry_machine`)."""
        from .contacts import Contacts
        from .planner import retry_machine

        contacts = Contacts(self.ctx.board.path.with_name("contacts.json"))
        passes = self.ctx.config.concurrency.stale_threshold
        return retry_machine(self.ctx.config, prev, info.labels if info is not None else (),
                             self._live_rows(), lambda n: contacts.stale(n, passes))  # fmt: skip

    async def continue_session(
        self, prev: Assignment, prompt: str, *, model: str | None = None
    ) -> Assignment:
        """Continue prev's session with `prompt`, in its worktree, as a new assignment."""
        if prev.status == Status.LOST:
            raise DispatchError(
                f"assignment {prev.id} is lost with its run; start it again with "
                f"`coord retry {prev.id}`",
                machine=prev.machine,
            )
        check_briefing(prompt, "guidance")
        tier, model_id = (prev.tier, prev.model)
        if model:
            tier, model_id = self.ctx.config.models.resolve(model)
        launch = self.launch_spec(
            prev.machine, prev.worktree, model_id, resume=prev.session_id, repo=prev.repo
        )
        a = self._row(
            prev.machine, prev.repo, prev.issue, branch=prev.branch, model=(tier, model_id),
            title=prev.title, worktree=prev.worktree,
            attempt=prev.attempt,  # steering or waiting out a limit is not a new attempt
            session_id=prev.session_id, continues=prev.id, argv=_worker_argv(launch),
            trail_off=prev.trail_off, stage=prev.stage, reads_only=prev.reads_only,
            files_declared=prev.files_declared, outcome=_since(prev),
        )  # fmt: skip
        return await self._start(a, prompt, launch, issue=None, force=True, replaces=prev,
                                 mode=DispatchMode.CONTINUE)  # fmt: skip

    async def start_stage(
        self,
        *,
        stage: str,
        machine: str,
        repo: str,
        issue: int,
        title: str,
        branch: str,
        model: str,
        tools: str,
        briefing: str,
        mode: DispatchMode,
        worktree: str | None = None,
        attempt: int = 1,
        issue_info: Issue | None = None,
        planned: Callable[[Assignment], None] | None = None,
    ) -> Assignment:
        """Start a pipeline stage's worker on an existing branch and return its assignment.

        `mode` REVIEW checks the branch's head out detached in a worktree of its own (a
        reviewer shares nothing with the author); CONTINUE starts a fresh session in the
        author's `worktree` (a fix).  `planned` is called with the row before it is claimed
        (the pipeline records its id first, so a crash in between is seen and repaired).
        """
        check_briefing(briefing)
        tier, model_id = self.ctx.config.models.resolve(model)
        a = self._row(machine, repo, issue, branch=branch, model=(tier, model_id), title=title,
                      worktree=worktree, attempt=attempt, stage=stage)  # fmt: skip
        a.reads_only = mode == DispatchMode.REVIEW
        if issue_info is not None:
            a.files_declared = declared_files(issue_info.body)
        launch = self.launch_spec(machine, a.worktree, model_id, tools=tools, repo=repo,
                                  fresh=a.reads_only, reads_only=a.reads_only)  # fmt: skip
        a.argv = _worker_argv(launch)
        if planned is not None:
            planned(a)
        return await self._start(a, briefing, launch, issue=issue_info, force=False, mode=mode)

    async def continue_queued(
        self, id: str, *, guidance: str | None = None, model: str | None = None
    ) -> Assignment:
        """See `Coordinator.continue_`."""
        prev = self.ctx.board.assignment(id)
        if prev.status != Status.QUEUED:
            raise UsageError(
                f"assignment {prev.id} is {prev.status}, not queued; `coord resume-stuck "
                f"{prev.id} --guidance …` steers a worker, `coord retry {prev.id}` starts afresh"
            )
        prompt = guidance if guidance is not None else RATE_LIMIT_GUIDANCE
        if not prompt.strip():
            raise UsageError("give the worker some guidance (--guidance TEXT)")
        if not prev.session_id:  # it never got going: no session to resume
            prompt = f"Work on issue #{prev.issue} of {prev.repo}: {prev.title}"
        return await self.continue_session(prev, prompt, model=model)

    async def dispatch_due(self, *, now: float | None = None) -> list[Assignment]:
        """See `Coordinator.dispatch_due` and `coordlib.requeue`."""
        from .requeue import dispatch_due

        return await dispatch_due(self.ctx, self.continue_session, RATE_LIMIT_GUIDANCE, now=now)


def _worker_argv(launch: LaunchSpec) -> list[str]:
    """The worker's command line as spec.json records it; the prompt comes on stdin."""
    return [*launch.command, "-p", *launch.args]


def _since(prev: Assignment) -> dict[str, Any] | None:
    """What a continued session's outcome counts from: the commit its first run started at
    (the commits a run made before its rate limit are no less the session's)."""
    facts = prev.outcome or {}
    since = facts.get("since") or facts.get("start")
    return {"since": since} if isinstance(since, str) else None


def _in_flight_files(rows: Sequence[Assignment], repo: str, issue: int) -> list[dict[str, str]]:
    """The files other live workers on repo are changing (or are scoped to)."""
    seen: dict[str, dict[str, str]] = {}
    for x in rows:
        if x.repo != repo or x.issue == issue or x.is_terminal:
            continue
        for path in [*x.files_touched, *(x.files_changed or ()), *x.files_in_scope]:
            seen.setdefault(path, {"path": path, "branch": x.branch, "assignment": x.id})
    return [seen[k] for k in sorted(seen)]


def _no_attempt(a: Assignment) -> bool:
    """Whether a's retry may take a's attempt number (and so its branch name).

    A dispatch that never started was no attempt (the machine undid its worktree and
    branch), unless it failed because that branch was already there: then the same name
    would fail again.
    """
    return a.failure_class == "dispatch_failed" and "already exists" not in (a.error or "")


def _domains(*lists: Sequence[str]) -> tuple[str, ...]:
    """The domains of lists, each once, in order."""
    return tuple(dict.fromkeys(d for names in lists for d in names))
