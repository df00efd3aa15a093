"""`Coordinator`: the async facade that scripts and the CLI drive.

It owns the shared `Context` (config, board, one transport per machine, one forge per repo,
the trail) and three parts that each get that context and nothing more:

- `Dispatcher` (`dispatch.py`): assign, retry, continue a session; claims (`claims.py`);
- `Monitor` (`monitor.py`): status and reconciliation, watch, wait, log, stop;
- the fleet's verbs (`coordinator_fleet.py`, a mixin): plan and approve (`proposals.py`,
  `brain.py`), doctor and setup (`doctor.py`, `machine_setup.py`), run-app (`workspace.py`),
  and clean (`cleanup.py`: remove ended work's worktrees and run dirs);
- the pipeline engine (`pipeline/engine.py`): carries each issue through the playbook's
  stages (work, test, PR, review, fixes) in `notify` passes, with the by-hand rounds.

Every change to an assignment is a typed transition of the `Board`; every remote command is
declared in `coordlib.runtime.protocol`.  Each operation costs as few remote commands as it
can: a dispatch is one, a status is one per machine.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .assignment import Assignment
from .board import Board
from .config import Config, find_config
from .config_load import load_config
from .context import Context, Forges, Machines
from .coordinator_fleet import FleetVerbs
from .dispatch import Dispatcher
from .monitor import MachineStatus, Monitor, ResumeReport, StatusReport
from .trail import Trail, sort_into_sections

if TYPE_CHECKING:
    from .forge.base import Forge, Issue
    from .markers import SkippedMarker
    from .merge.runner import MergeReport
    from .pipeline.engine import PassReport, Pipelines
    from .pipeline.state import Pipeline
    from .runloop import LoopPass
    from .runtime.answers import Tested
    from .runtime.command import LaunchSpec
    from .runtime.ssh import SSHTarget
    from .runtime.transport import Transport
    from .stream import Event

__all__ = ["Coordinator", "MachineStatus", "ResumeReport", "StatusReport"]


class Coordinator(FleetVerbs):
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
        environ = dict(os.environ if environ is None else environ)
        # Things worth telling a person that are not errors (a forge rate limit being
        # waited out, a trail comment that could not be posted); the CLI prints them.
        self.notify: Callable[[str], None] = notify or (lambda message: None)

        def tell(message: str) -> None:
            self.notify(message)  # looked up at each call: a caller may set `notify` later

        forges = Forges(config, environ, tell)
        self.trail = Trail(self.board, forges.get, tell)
        self._ctx = Context(config, self.board, Machines(config), forges, self.trail, tell, environ)
        self._dispatcher = Dispatcher(self._ctx)
        self._monitor = Monitor(self._ctx, continue_due=self.dispatch_due)
        self._engine: Pipelines | None = None

    @property
    def engine(self) -> Pipelines:
        """The pipeline engine (its playbook is read on first use)."""
        if self._engine is None:
            from .hooks import Hooks
            from .pipeline.engine import Pipelines

            hooks = self.config.hooks
            commands = {f.name: getattr(hooks, f.name) for f in dataclasses.fields(hooks)}
            self._engine = Pipelines(
                self._ctx,
                self._dispatcher,
                Hooks(commands, notify=self._ctx.notify, state_dir=self.board.path.parent,
                      environ=self._ctx.environ),
            )  # fmt: skip
        return self._engine

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
        await self._ctx.machines.close()
        await self._ctx.forges.close()

    # ------------------------------------------------------------ machines, forges, rows
    def forge(self, repo: str) -> Forge:
        """Return the one forge serving repo (local or GitHub, as the config says)."""
        return self._ctx.forges.get(repo)

    def transport(self, machine: str) -> Transport:
        """Return the one transport for machine, creating it on first use."""
        return self._ctx.machines.get(machine)

    def ssh_target(self, machine: str) -> SSHTarget:
        """Return where machine is reached over SSH (for `coord trust`)."""
        return self._ctx.machines.ssh_target(machine)

    def get(self, id_or_prefix: str) -> Assignment:
        """Return the assignment with that id (or unique id prefix), live or archived."""
        return self.board.assignment(id_or_prefix)

    def assignments(self, *, history: bool = False) -> list[Assignment]:
        """Return the board's assignments (and the archived ones too with history)."""
        return self.board.assignments(history=history)

    # ------------------------------------------------------------ starting workers
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
        return self._dispatcher.plan(
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
        pipeline: bool = True,
    ) -> Assignment:
        """Start a worker for issue of repo on machine and return its assignment.

        With `pipeline` (and ``pipeline.enabled``, the default) the issue enters the
        pipeline at its work stage: `notify` passes carry it on to test, PR and review.

        One remote command does it all: worktree, run files, launcher and tmux
        session.  The row is on the board as ``pending`` before the machine is
        touched, so a crash at any point leaves something `resume` can repair.
        """
        enters = not dry_run and pipeline and self.config.pipeline.enabled
        if enters:
            self.engine.playbook  # noqa: B018 - a broken playbook refuses before any dispatch
        return await self._dispatcher.assign(
            machine, repo, issue, model=model, briefing=briefing, title=title,
            dry_run=dry_run, force=force,
            also=(lambda txn, a: self.engine.entering(a)(txn, a)) if enters else None,
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
        two are linked: ``retry_of`` on the new row, ``retried_by`` on the old.
        """
        a = await self._dispatcher.retry(
            id, machine=machine, model=model, briefing=briefing, force=force
        )
        self._pipeline_follows(a)
        return a

    async def resume_stuck(self, id: str, guidance: str, *, model: str | None = None) -> Assignment:
        """Stop a stuck worker and continue its session with guidance, in the same worktree.

        The continuation is a new assignment (``continues`` names the old one) that runs
        ``claude --resume=<session>`` with `guidance` as its prompt, in the same worktree
        and Claude config dir.  A session is never driven twice: the old row can be
        continued once, and on the machine one worker holds the worktree.
        """
        from .briefings import check_briefing
        from .errors import UsageError

        if not guidance.strip():
            raise UsageError("give the worker some guidance (--guidance TEXT)")
        check_briefing(guidance, "guidance")
        prev = self.get(id)
        if not prev.is_terminal:
            prev = await self._monitor.stop(prev.id)
        a = await self._dispatcher.continue_session(prev, guidance, model=model)
        self._pipeline_follows(a)
        return a

    def _pipeline_follows(self, a: Assignment) -> None:
        """A person started a's issue again: its pipeline (if it has one) waits for a."""
        p = self.board.pipeline(a.repo, a.issue)
        if p is not None and (p.ended or p.current is None):
            self.engine.enter(a)  # at a's own stage (a work retry: the first)

    async def continue_(
        self, id: str, *, guidance: str | None = None, model: str | None = None
    ) -> Assignment:
        """Continue a queued (rate-limited) assignment's session now, held or not.

        A row restored from the forge's trail is held until a person continues it this way.
        """
        return await self._dispatcher.continue_queued(id, guidance=guidance, model=model)

    async def dispatch_due(self, *, now: float | None = None) -> list[Assignment]:
        """Continue every queued (rate-limited) assignment whose wait is over."""
        return await self._dispatcher.dispatch_due(now=now)

    # ------------------------------------------------------------ the pipeline
    async def advance(self) -> PassReport:
        """One pass (`coord notify`): ask every machine once, record what ended, post its
        trail, and move every issue's pipeline as far as it goes.  Safe to run twice at once.
        """
        seen = await self._monitor.status()
        if self.config.concurrency.auto_reassign:
            from .requeue import reassign

            await reassign(self._ctx, seen.changed,
                           lambda aid, where: self.retry(aid, machine=where))  # fmt: skip
        report = await self.engine.run_pass()
        smoke = self.config.smoke_tests
        if smoke.auto_queue and smoke.capability_rules:
            from .merge.early import early_smoke
            from .merge.runner import Merger

            moves = await early_smoke(Merger(self._ctx, self.engine))
            if moves:
                report.moves += moves
                report.pipelines = self.pipelines()
        return report

    async def next_end(self, *, timeout: float) -> str | None:
        """Wait until one of the running workers ends (one waiting command per machine), at
        most `timeout` seconds; return its id, or None.  See `coordlib.runloop`."""
        from .runloop import next_end

        return await next_end(self._ctx, timeout=timeout)

    async def run(
        self,
        *,
        interval: float | None = None,
        until_idle: bool = False,
        on_pass: Callable[[LoopPass], None] = lambda turn: None,
    ) -> None:
        """`coord run`: pass, land what is ready, and pass again as soon as a run ends (or
        `interval`, default pipeline.interval, passes); see `coordlib.runloop.run_loop`."""
        from .runloop import run_loop

        await run_loop(self, interval=interval, until_idle=until_idle, on_pass=on_pass)

    def pipelines(self) -> list[Pipeline]:
        """Return every issue's pipeline state."""
        return self.board.pipelines()

    async def test(
        self, id: str, *, passed: bool | None = None, reason: str = ""
    ) -> tuple[Pipeline, Tested | None, dict[str, Any]]:
        """Build and test assignment id's branch head on its machine, in a clean detached
        worktree (one remote command), or record a person's verdict; the pipeline moves on."""
        from .pipeline import by_hand

        return await by_hand.test(self.engine, id, passed=passed, reason=reason)

    async def pr(self, id: str, *, review: bool = True) -> dict[str, Any]:
        """Push id's branch, open or update its PR, and start the adversarial review."""
        from .pipeline import by_hand

        return await by_hand.open_pr(self.engine, id, review=review)

    async def fix(self, id: str, *, guidance: str = "") -> Assignment:
        """Run one fix round on id's issue now, with a person's guidance."""
        from .briefings import check_briefing
        from .pipeline import by_hand

        check_briefing(guidance, "guidance")
        return await by_hand.fix(self.engine, id, guidance=guidance)

    async def bounce(self, review_id: str, *, reason: str = "") -> Assignment:
        """Send a review's findings back to a fix worker, whatever its verdict said."""
        from .pipeline import by_hand

        return await by_hand.bounce(self.engine, review_id, reason=reason)

    async def merge(
        self,
        *,
        repo: str | None = None,
        method: str | None = None,
        order: Sequence[str] = (),
        batch: int | None = None,
        dry_run: bool = False,
    ) -> MergeReport:
        """Land the PRs that reached ready-to-merge: stacked in batches on the default
        branch's head, tested there, and that tested commit landed (see `coordlib.merge`)."""
        from .merge.runner import Merger

        return await Merger(self._ctx, self.engine).merge(
            repo=repo, method=method, order=order, batch=batch, dry_run=dry_run
        )

    async def done(self, *, clean: bool = True) -> dict[str, Any]:
        """End the session: run the on_session_end hooks and return the session's summary;
        with `clean`, the worktrees and run dirs of work that merged go first (whatever their
        age; anything uncommitted stays), under the summary's ``cleaned``."""
        from .pipeline import by_hand

        summary = by_hand.session_summary(self.engine)
        if clean:
            report = await self.clean(older_than=float("inf"))
            summary["cleaned"] = {
                "worktrees": report.count("worktree", "removed"),
                "runs": report.count("run", "removed"),
                "kept": [r.to_dict() for r in report.runs if r.worktree in ("kept", "refused")],
                "errors": report.errors,
                "notes": report.notes,
            }
        await self.engine.hooks.fire("on_session_end", {"event": "on_session_end",
                                                         "summary": summary})  # fmt: skip
        self.engine.ledger.end_session()
        return summary

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

    # ------------------------------------------------------------ watching workers
    async def status(
        self,
        *,
        machine: str | None = None,
        history: bool = False,
        on_machine: Callable[[MachineStatus], None] | None = None,
    ) -> StatusReport:
        """Ask every machine (or one) once, reconcile the board, and report.

        A machine's ``orphans`` are the runs there that the board does not know and that
        are still running (`resume` lists ended ones too).  `on_machine` hears each machine
        as it answers (or fails to), before the report is complete.
        """
        return await self._monitor.status(machine=machine, history=history, on_machine=on_machine)

    def watch_lines(
        self, id: str, *, offset: int = 0, reconnect_for: float = 300.0
    ) -> AsyncIterator[bytes]:
        """Yield the run's raw stream-json lines from offset until the run ends.

        A dropped connection is resumed from the last complete line, so no line
        is lost or repeated; after ``reconnect_for`` seconds of failing to
        reconnect the `UnreachableError` is raised.
        """
        return self._monitor.watch_lines(id, offset=offset, reconnect_for=reconnect_for)

    def watch(self, id: str, *, offset: int = 0) -> AsyncIterator[Event]:
        """Yield the run's parsed events until it ends, then record its outcome."""
        return self._monitor.watch(id, offset=offset)

    async def wait(
        self,
        id: str,
        *,
        timeout: float | None = None,
        poll: float = 0.5,
        on_update: Callable[[Assignment], None] | None = None,
    ) -> Assignment:
        """Wait until the assignment ends and return it; raise `WaitTimeout` past timeout.
        `on_update` hears the row after each look at its machine (a progress line)."""
        return await self._monitor.wait(id, timeout=timeout, poll=poll, on_update=on_update)

    def log(
        self, id: str, *, follow: bool = False, stderr: bool = False, offset: int = 0
    ) -> AsyncIterator[bytes]:
        """Yield the raw bytes of the run's events.jsonl (or stderr.log)."""
        return self._monitor.log(id, follow=follow, stderr=stderr, offset=offset)

    async def stop(self, id: str) -> Assignment:
        """Stop a running worker (its process group is killed) and record it."""
        return await self._monitor.stop(id)

    # ------------------------------------------------------------ cleaning up, repairing
    async def resume(
        self,
        *,
        from_forge: bool = False,
        on_machine: Callable[[MachineStatus], None] | None = None,
    ) -> ResumeReport:
        """Rebuild truth from every machine and repair the board.

        With `from_forge`, first put back the assignments the forge's trail knows of
        and the board does not (a lost or deleted board file).
        """
        restored, skipped = await self.rebuild_from_forge() if from_forge else ([], [])
        report = await self._monitor.status(all_orphans=True, on_machine=on_machine)
        unreachable = [m for m in report.machines if not m.reachable]
        down = {m.name for m in unreachable}
        still = [a.id for a in report.assignments if not a.is_terminal and a.machine in down]
        orphans = {m.name: m.orphans for m in report.machines if m.orphans}
        continued = await self.dispatch_due()
        posted = await self.trail.post_pending(self.assignments())
        return ResumeReport(
            changed=report.changed,
            unreachable=unreachable,
            orphans=orphans,
            still_running=still,
            continued=continued,
            restored=[a.id for a in restored],
            skipped=skipped,
            posted=posted,
        )
