"""The Coordinator's verbs about the fleet: planning who works on what, the machines
themselves (doctor, setup), their apps, and cleaning up after ended work.

A mixin of `Coordinator` (`coordinator.py`), kept apart so each file stays one concern: these
verbs only call into their own modules (`proposals`, `brain`, `doctor`, `machine_setup`,
`workspace`, `cleanup`) with the Coordinator's context.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .assignment import Assignment
    from .board import Board
    from .brain import Ranking
    from .cleanup import CleanReport
    from .config import Config
    from .context import Context
    from .dispatch import Dispatcher
    from .doctor import MachineHealth
    from .machine_setup import MachineSetup, SetupReport
    from .monitor import Monitor
    from .pipeline.engine import Pipelines
    from .proposals import Plan
    from .runtime.transport import Transport
    from .workspace import AppState

__all__ = ["FleetVerbs"]


class FleetVerbs:
    """Planning, machines, apps and cleaning up (see the module); `Coordinator` has them."""

    if TYPE_CHECKING:
        config: Config
        board: Board
        _ctx: Context
        _dispatcher: Dispatcher
        _monitor: Monitor

        @property
        def engine(self) -> Pipelines: ...

        def transport(self, machine: str) -> Transport: ...

        def get(self, id_or_prefix: str) -> Assignment: ...

        async def assign(self, *args: Any, **kwargs: Any) -> Assignment: ...

    # ------------------------------------------------------------ planning
    async def plan(self) -> Plan:
        """Propose who works on what next (`coordlib.planner`): one status pass, the
        forge's ready issues and branches; the proposals are kept on the board (p1, p2, …)
        for `approve`, replacing the last plan's."""
        from dataclasses import asdict

        from .proposals import Plan, store_proposals

        proposals, skipped, inp = await self._plan_now()
        return Plan(store_proposals(self.board, proposals), [asdict(x) for x in skipped],
                    list(inp.errors))  # fmt: skip

    async def rank(
        self,
        plan: Plan,
        *,
        machine: str | None = None,
        model: str | None = None,
        timeout: float = 300.0,
    ) -> Ranking:
        """Ask Claude to order `plan`'s proposals (`coord plan --brain`), on `machine` (default:
        the first proposal's) with `model` (default: models.default); see `coordlib.brain`."""
        from .brain import rank

        return await rank(self._ctx, self._dispatcher, plan.proposals, plan.skipped,
                          machine=machine, model=model, timeout=timeout)  # fmt: skip

    async def run_app(self, id: str, *, stop: bool = False) -> AppState:
        """Start (or stop) the workspace's run script in id's worktree (`coord run-app`)."""
        from .workspace import run_app

        return await run_app(self._ctx, self.get(id).id, stop=stop)

    async def _plan_now(self) -> tuple[list[Any], list[Any], Any]:
        from .proposals import gather, make_plan

        report = await self._monitor.status()
        inp = await gather(self.config, self.board, self._ctx.forges, report.machines,
                           paused=self.engine.ledger.session_paused())  # fmt: skip
        proposals, skipped = make_plan(inp)
        return proposals, skipped, inp

    async def approve(
        self,
        ids: Sequence[str] = (),
        *,
        dry_run: bool = False,
        auto_pull: bool = False,
        on_each: Callable[[dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Dispatch the stored proposals `ids` (all of them when empty), in order and
        ``concurrency.stagger_seconds`` apart, each machine's checkout first compared with
        origin (`auto_pull`: fast-forwarded).  Each is planned again first: one whose
        premises changed since `plan` (the issue claimed, its machine full or down) is
        refused with what changed.  Return one record per proposal: {id, repo, issue,
        machine, model, and assignment, or refused}."""
        from .proposals import approve_each, load_proposals, sync_checkout

        async def sync(machine: str, repo: str) -> dict[str, Any]:
            return await sync_checkout(self.config, self.transport(machine), machine, repo,
                                       pull=auto_pull and not dry_run)  # fmt: skip

        return await approve_each(
            load_proposals(self.board, ids), plan_now=self._plan_now, assign=self.assign,
            stagger=self.config.concurrency.stagger_seconds, dry_run=dry_run, on_each=on_each,
            sync=sync, auto_pull=auto_pull,
        )  # fmt: skip

    # ------------------------------------------------------------ the machines themselves
    async def doctor(
        self,
        machines: Sequence[str] = (),
        *,
        min_free_kb: int | None = None,
        timeout: float | None = None,
        on_machine: Callable[[MachineHealth], None] | None = None,
    ) -> list[MachineHealth]:
        """Check the health of `machines` (default: all), one remote command each, at once,
        each within `timeout`; keep each result on the board, where every dispatch but a
        continued session consults it (see `coordlib.doctor`)."""
        from .doctor import MIN_FREE_KB, TIMEOUT, doctor

        return await doctor(self._ctx, list(machines) or list(self.config.machines),
                            min_free_kb=MIN_FREE_KB if min_free_kb is None else min_free_kb,
                            timeout=timeout or TIMEOUT, on_machine=on_machine)  # fmt: skip

    async def setup_machine(
        self,
        machines: Sequence[str],
        *,
        playbook: str | os.PathLike[str] | None = None,
        dry_run: bool = False,
        enable: Sequence[str] = (),
        on_machine: Callable[[MachineSetup], None] | None = None,
    ) -> SetupReport:
        """Run a setup playbook (default: the shipped setup-machine.yml) on `machines`, one
        remote command each, at once: its checks, and (unless `dry_run`) the steps that make
        a failing check pass (see `coordlib.machine_setup`)."""
        from .machine_setup import load_setup_playbook, setup_machines

        return await setup_machines(self._ctx, list(machines), dry_run=dry_run, enable=enable,
                                    playbook=load_setup_playbook(playbook),
                                    on_machine=on_machine)  # fmt: skip

    # ------------------------------------------------------------ cleaning up
    async def clean(
        self,
        *ids: str,
        older_than: float = 7 * 86400.0,
        machine: str | None = None,
        keep_runs: bool = False,
        dry_run: bool = False,
        rescue: bool = False,
        merged: bool = True,
        on_machine: Callable[[str, Any], None] | None = None,
    ) -> CleanReport:
        """Remove the worktrees and run dirs of ended work; keep anything with changes.

        Without `ids`, every ended assignment that finished `older_than` seconds ago or
        more, and (`merged`) younger ones whose pull request merged, as the forge says.  A
        worktree with uncommitted or untracked files is kept, or with `rescue` has them
        saved at ``refs/coord/rescue/<id>`` first; a main checkout, or one a live assignment
        still uses, is never removed; branches always stay.  See `coordlib.cleanup`.
        """
        from .cleanup import clean

        return await clean(self._ctx, older_than=older_than, ids=ids, machine=machine,
                           keep_runs=keep_runs, dry_run=dry_run, rescue=rescue, merged=merged,
                           on_machine=on_machine)  # fmt: skip
