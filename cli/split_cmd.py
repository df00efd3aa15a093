"""``coord split``: an issue judged too large becomes sub-issues, one per area of its files."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import click

from .complete import complete_ids
from .main import State, coord, pass_state, run
from .output import echo, echo_json

if TYPE_CHECKING:
    from coordlib.split import SplitReport

_ISSUE = re.compile(r"(?P<repo>[^#\s]+)#(?P<number>[1-9][0-9]*)")


@coord.command(short_help="Split a too-large issue into sub-issues by area.")
@click.argument("target", metavar="REPO#N|ID", shell_complete=complete_ids)
@click.option("--dry-run", is_flag=True, help="Say what it would open; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the split as JSON.")
@pass_state
def split(state: State, target: str, dry_run: bool, as_json: bool) -> None:
    """Split an issue (REPO#N, or an assignment ID's issue) into one sub-issue per area of
    the files it declares (its `## Files` section or `Files:` line).

    An area is a top-level directory; files at the root form one more.  Each sub-issue
    starts with `Part of #N.`, quotes the issue, and declares only its area's files; the
    issue gets a comment naming them and the label status:waiting, and stays open.  If its
    last worker ended STUCK: about its scope, the comment quotes that line.

    \b
    Examples:
      coord split api#42 --dry-run
      coord split api#42
      coord split api-42-1f3a --json
    """
    from coordlib.split import scope_stuck_line, split_issue

    match = _ISSUE.fullmatch(target)
    if match is None and "#" in target:
        raise click.BadParameter(
            f"{target!r} is not an issue: write it REPO#N (`api#42`), or give an assignment id",
            param_hint="REPO#N|ID",
        )

    async def go() -> SplitReport:
        async with state.coordinator() as c:
            if match is not None:
                repo, number = match["repo"], int(match["number"])
            else:
                a = c.get(target)
                repo, number = a.repo, a.issue
            stuck = scope_stuck_line(c.assignments(history=True), repo, number)
            return await split_issue(c.forge(repo), number, dry_run=dry_run, stuck_line=stuck)

    report = run(go)
    if as_json:
        echo_json(report.to_dict())
        return
    where = f"{report.repo}#{report.parent}"
    echo(f"{'would split' if report.dry_run else 'split'} {where} into:")
    for child in report.children:
        number = f"#{child.number}" if child.number is not None else "(new)"
        again = " (opened by an earlier split that stopped)" if child.existing else ""
        echo(f"  {number} {child.title}{again}")
        echo(f"      {', '.join(child.files)}")
    if report.stuck:
        echo(f"its last worker said: {report.stuck}")
    if report.dry_run:
        echo("nothing written (--dry-run)")
    else:
        echo(f"{where} waits for them (status:waiting)")
