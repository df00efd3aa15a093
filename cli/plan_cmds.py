"""``coord plan`` (who works on what next) and ``coord approve`` (dispatch the proposals)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .main import State, coord, pass_state, run
from .output import echo, echo_json

if TYPE_CHECKING:
    from coordlib.brain import Ranking
    from coordlib.proposals import Plan


@coord.command(short_help="Propose who works on what next, and say why.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option(
    "--brain",
    is_flag=True,
    help="Also ask Claude to rank the proposals (a read-only run on a machine).",
)
@click.option(
    "--brain-machine",
    metavar="MACHINE",
    help="Where the ranking runs (default: the first proposal's machine).",
)
@click.option("--brain-model", metavar="TIER", help="Its model (default: models.default).")
@pass_state
def plan(state: State, as_json: bool, brain: bool, brain_machine: str | None,
         brain_model: str | None) -> None:  # fmt: skip
    """Propose assignments for the free capacity: each ready issue (label status:ready) on a
    machine that serves its repo, has the capabilities its needs:<capability> labels ask
    for, is up and has a free slot; never into a repo whose depends_on has work in flight;
    never two workers on one file.  Every proposal says why, every issue left out why not.
    The proposals are kept (p1, p2, …) for `coord approve`.

    With --brain, Claude also ranks the proposals (what to start first), through the same
    worker machinery: a run with read-only tools and no repo, on a machine of the fleet.  Both
    orders are shown; the plan itself stands either way.

    \b
    Examples:
      coord plan
      coord plan --brain
      coord plan --json | jq '.skipped[] | "\\(.repo)#\\(.issue): \\(.why)"'
    """
    from coordlib.errors import BrainError

    async def go() -> tuple[Plan, Ranking | BrainError | None]:
        async with state.coordinator() as c:
            got = await c.plan()
            if not brain or not got.proposals:
                return got, None
            try:
                return got, await c.rank(got, machine=brain_machine, model=brain_model)
            except BrainError as exc:
                return got, exc

    got, ranked = run(go)
    if as_json:
        data = got.to_dict()
        if brain:
            data["brain"] = (ranked.to_dict() if ranked is not None and
                             not isinstance(ranked, BrainError) else
                             {"error": str(ranked) if ranked else None})  # fmt: skip
        echo_json(data)
        if isinstance(ranked, BrainError):
            raise SystemExit(1)
        return
    for p in got.proposals:
        echo(f"{p['id']:<4} {p['repo']}#{p['issue']:<6} on {p['machine']:<14} {p['model']:<8} "
             f"{p.get('title') or ''}")  # fmt: skip
        echo(f"       {p['why']}")
    if not got.proposals:
        echo("nothing to propose")
    for s in got.skipped:
        echo(f"  left out {s['repo']}#{s['issue']}: {s['why']}")
    for e in got.errors:
        echo(f"  error: {e}")
    order = [p["id"] for p in got.proposals]
    if isinstance(ranked, BrainError):
        echo(f"\nno ranking from Claude: {ranked}")
    elif ranked is not None and ranked.order:
        order = ranked.order
        cost = f", ${ranked.cost_usd:.4f}" if ranked.cost_usd is not None else ""
        echo(f"\nthe planner's order: {' '.join(p['id'] for p in got.proposals)}")
        echo(f"Claude's order:      {' '.join(order)}  ({ranked.model} on {ranked.machine}"
             f"{cost})")  # fmt: skip
        for pid in order:
            note = ranked.why.get(pid) or ("(not ranked: kept in the planner's order)"
                                           if pid in ranked.unranked else "")  # fmt: skip
            echo(f"  {pid:<4} {note}")
    if got.proposals:
        echo(f"\napprove with `coord approve {' '.join(order)}` (or --all)")
    if isinstance(ranked, BrainError):
        raise SystemExit(1)


@coord.command(short_help="Dispatch proposals from `coord plan`, if they still hold.")
@click.argument("ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every proposal of the last plan.")
@click.option("--dry-run", is_flag=True, help="Check each proposal again; dispatch nothing.")
@click.option("--auto-pull", is_flag=True,
              help="Fast-forward a checkout behind origin (git pull --ff-only).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one record per proposal as JSON.")
@pass_state
def approve(state: State, ids: tuple[str, ...], every: bool, dry_run: bool, auto_pull: bool,
            as_json: bool) -> None:  # fmt: skip
    """Dispatch the proposals IDS (or --all), concurrency.stagger_seconds apart.  Each is
    planned again first: one whose premises changed since `coord plan` (its issue claimed,
    its machine full or down) is refused, saying what changed.  Each machine's checkout of
    the repo is compared with origin first: behind is a warning, or (--auto-pull) a
    fast-forward when the checkout is clean and has nothing of its own.

    \b
    Examples:
      coord approve p1 p3
      coord approve --all --dry-run
      coord approve p2 --auto-pull
    """
    if bool(ids) == every:
        raise click.UsageError("name the proposals to approve (p1 p2 …), or give --all")

    def said(r: dict[str, Any]) -> None:
        if as_json:
            return
        head = f"{r['id']}: {r['repo']}#{r['issue']} on {r['machine']}"
        if r.get("checkout"):
            echo(f"{head}: note: {r['checkout']}")
        if "refused" in r:
            echo(f"{head}: refused: {r['refused']}")
        elif r.get("would_dispatch"):
            echo(f"{head}: still holds (dry run: nothing dispatched)")
        else:
            echo(f"{head}: started {r['assignment']} ({r['model']})")

    async def go() -> list[dict[str, Any]]:
        async with state.coordinator() as c:
            return await c.approve(list(ids), dry_run=dry_run, auto_pull=auto_pull, on_each=said)

    done = run(go)
    if as_json:
        echo_json({"approved": done})
