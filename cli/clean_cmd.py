"""``coord clean``: remove the worktrees and run directories of ended work."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from .complete import complete_ids, complete_machines
from .main import EXIT_ERROR, State, coord, pass_state, run
from .output import echo, echo_json

if TYPE_CHECKING:
    from coordlib.cleanup import CleanReport


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    from coordlib.config import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@coord.command(short_help="Remove ended work's worktrees and run dirs; keep any changes.")
@click.argument("ids", nargs=-1, shell_complete=complete_ids)
@click.option(
    "--older-than",
    default="7d",
    show_default=True,
    callback=_duration,
    help="Only work that ended at least this long ago (90s, 10m, 2h, 7d; 0 for all).",
)
@click.option("--machine", shell_complete=complete_machines, help="Only this machine.")
@click.option("--keep-runs", is_flag=True, help="Keep run directories (events, logs).")
@click.option(
    "--rescue",
    is_flag=True,
    help="Save uncommitted work at refs/coord/rescue/ID, then remove the worktree.",
)
@click.option(
    "--no-merged", is_flag=True, help="Do not ask the forge which work merged (the age rule alone)."
)
@click.option("--dry-run", "-n", is_flag=True, help="Check and say what would go; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_state
def clean(
    state: State,
    ids: tuple[str, ...],
    older_than: float,
    machine: str | None,
    keep_runs: bool,
    rescue: bool,
    no_merged: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Remove the worktrees and run directories of ended assignments (IDS, or all old ones,
    and those whose pull request merged, however recent: the forge says, so squash and
    rebase merges count).

    A worktree with uncommitted or untracked files is kept and listed, unless --rescue
    saves them first at refs/coord/rescue/ID in the repo (a commit of the whole tree; `git
    checkout refs/coord/rescue/ID -- .` brings them back); a main checkout is never
    touched; branches, and so every commit, always stay.  On a terminal each machine is
    shown as it answers.

    \b
    Examples:
      coord clean -n                     # what would go
      coord clean --older-than 0         # every ended run, however recent
      coord clean --rescue               # dirty worktrees too, their work saved first
      coord clean api-42-1f3a --keep-runs
    """

    def heard(name: str, done: Any) -> None:
        said = f"{len(done)} run(s)" if isinstance(done, list) else f"error: {done}"
        echo(f"coord: {name} answered: {said}", err=True)

    async def go() -> CleanReport:
        async with state.coordinator() as c:
            return await c.clean(
                *ids, older_than=older_than, machine=machine, keep_runs=keep_runs,
                dry_run=dry_run, rescue=rescue, merged=not no_merged,
                on_machine=heard if not as_json and sys.stderr.isatty() else None,
            )  # fmt: skip

    report = run(go)
    if as_json:
        echo_json(report.to_dict())
    else:
        _print(report)
    if report.errors:
        raise SystemExit(EXIT_ERROR)


_STAYED = frozenset({"kept", "refused", "in_use"})
_RUN_STAYED = frozenset({"kept", "running", "refused"})


def _print(report: CleanReport) -> None:
    from coordlib.config import format_duration

    verb = "would remove" if report.dry_run else "removed"
    gone = "would_remove" if report.dry_run else "removed"
    for r in report.runs:
        stays = r.worktree in _STAYED or r.run in _RUN_STAYED
        if stays or report.dry_run or r.rescue:  # a dry run lists what would go, too
            why = "merged; " if r.merged else ""
            saved = f"its work saved at {r.rescue}; " if r.rescue else ""
            echo(f"{r.id:<22} {r.machine:<12} worktree {r.worktree:<12} run {r.run:<12} "
                 f"{why}{saved}{r.note}".rstrip().rstrip(";"))  # fmt: skip
    for name, error in report.errors.items():
        echo(f"coord: {name}: not cleaned: {error}", err=True)
    held = report.count("worktree", "kept") + report.count("worktree", "refused")
    echo(
        f"{verb} {report.count('worktree', gone)} worktree(s) and "
        f"{report.count('run', gone)} run dir(s) of {len(report.runs)} ended assignment(s)"
        + (f"; kept {held} worktree(s), listed above" if held else "")
    )
    merged = sum(1 for r in report.runs if r.merged)
    if merged:
        echo(f"of which {merged} merged (its pull request, as the forge says), whatever its age")
    for note in report.notes:
        echo(f"coord: {note}", err=True)
    if report.younger:
        age = format_duration(report.older_than)
        echo(f"left alone: {report.younger} ended assignment(s) younger than {age} "
             f"(`--older-than 0` includes them)")  # fmt: skip
    if report.live:
        echo(f"left alone: {report.live} assignment(s) that have not ended "
             f"(`coord stop ID` first)")  # fmt: skip
