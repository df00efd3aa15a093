"""``coord report``: what the pipeline delivered and what it cost, from the board alone."""

from __future__ import annotations

import time

import click

from .main import EXIT_USAGE, State, coord, fail, pass_state
from .output import echo, echo_json


@coord.command(short_help="What the pipeline delivered, what it cost, and where.")
@click.option("--since", help="Only the last 30m, 24h, 7d, 2w, … (default: the whole board).")
@click.option("--repo", help="Only this repo.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
@click.option("--markdown", is_flag=True, help="Print Markdown tables, for a weekly note.")
@pass_state
def report(
    state: State, since: str | None, repo: str | None, as_json: bool, markdown: bool
) -> None:
    """Show what the pipeline delivered, what it cost, and how busy the machines were.

    Issues merged, merge rate, hands-off share, rounds, reviews, spend per merged issue
    and per tier, time from dispatch to merge, failure classes, machine utilisation: all
    read from the board alone, with no machine or forge asked.

    \b
    Examples:
      coord report --since 7d
      coord report --since 24h --repo api --json
      coord report --since 2w --markdown > week.md
    """
    from coordlib.errors import UsageError
    from coordlib.metrics import report_from
    from coordlib.metrics_format import render_markdown, render_text

    if as_json and markdown:
        raise click.UsageError("give --json or --markdown, not both")
    c = state.coordinator()
    try:
        figures = report_from(c.board, c.config, now=time.time(), since=since, repo=repo)
    except UsageError as exc:
        fail(f"error: {exc}", EXIT_USAGE)
        return
    if as_json:
        echo_json(figures.to_dict())
    else:
        echo(render_markdown(figures) if markdown else render_text(figures), nl=False)
