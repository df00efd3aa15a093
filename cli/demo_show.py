"""What `coord demo` shows of the pipeline demo, line by line as it happens, then the table."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import click

from coordlib.terminal import printable

if TYPE_CHECKING:
    from coordlib.assignment import Assignment
    from coordlib.demo_pipeline import PipelineDemo
    from coordlib.pipeline.state import Pipeline
    from coordlib.runloop import LoopPass
    from coordlib.stream import Event

_COLORS = ("cyan", "magenta", "yellow", "green", "blue", "red")


class Show:
    """Prints the demo as it goes: each worker's events, each move, each merge."""

    def __init__(self, color: bool) -> None:
        self.color = color
        self.t0 = time.monotonic()

    def _out(self, issue: str | int | None, text: str) -> None:
        clock = f"{time.monotonic() - self.t0:5.1f}s"
        who = f"#{issue}" if issue is not None else "  "
        if self.color and issue is not None:
            who = click.style(f"{who:<3}", fg=_COLORS[int(str(issue)) % len(_COLORS)])
        else:
            who = f"{who:<3}"
        click.echo(f"{clock} {who} {printable(text)}", color=self.color)

    def event(self, a: Assignment, event: Event) -> None:
        """A worker's event, as `coord watch` shows it."""
        from coordlib.event_view import format_event

        line = format_event(event)
        if line is not None:
            self._out(a.issue, f"{a.stage or 'work':<6} {a.tier or a.model:<6} {line}")

    def turn(self, turn: LoopPass) -> None:
        """A pass's moves and merges."""
        for m in turn.report.moves:
            if m["from"] == "ready-to-merge":
                continue  # the merge's own lines below say it better
            issue = str(m["issue"]).rsplit("#", 1)[-1]
            self._out(issue, f"── {m['from']} → {m['to']}  ({m['outcome']})")
        for b in turn.merged:
            self._merge(b)
        for e in turn.report.errors:
            self._out(None, f"error: {e}")

    def _merge(self, b: dict[str, Any]) -> None:
        def keys(xs: list[Any]) -> str:
            return " ".join(f"#{str(x).rsplit('#', 1)[-1]}" for x in xs)

        landed = b.get("landed") or []
        if landed:
            runs = b.get("test_runs", 0)
            together = "together " if len(landed) > 1 else ""
            self._out(None, f"merge queue: {keys([x['issue'] for x in landed])} stacked on "
                            f"main and tested {together}({runs} test run{'s' * (runs != 1)}): "
                            f"landed as {landed[-1]['sha'][:10]}")  # fmt: skip
        deferred = set(b.get("deferred") or [])
        for c in b.get("conflicts") or []:
            files = ", ".join(c.get("files") or [])
            why = (
                "conflicts with a PR of this batch: it waits for the next merge"
                if c["issue"] in deferred
                else f"no longer merges onto main ({files}): a conflict-fix worker takes it"
            )
            self._out(None, f"merge queue: {keys([c['issue']])} {why}")
        for k in b.get("bounced") or []:
            self._out(None, f"merge queue: {keys([k])} broke the stack's tests: back to fix")


def table(ws: PipelineDemo, pipelines: list[Pipeline], took: float, coord: str) -> list[str]:
    """The closing table: each issue's stage, rounds, reviews, cost and merged commit."""
    from coordlib.demo_pipeline import STORIES
    from coordlib.pipeline.ledger import usd

    lines = [f"{'issue':<6}{'title':<24}{'stage':<11}{'rounds':>6}{'reviews':>8}{'cost':>9}  "
             "merged as"]  # fmt: skip
    for p, story in zip(pipelines, STORIES, strict=False):
        reviews = sum(1 for v in p.verdicts if v.get("stage") == "review")
        merged = (p.merged_sha or "")[:10] or (p.reason or "-")[:40]
        lines.append(f"#{p.issue:<5}{printable(story.title)[:23]:<24}{p.stage:<11}{p.round:>6}"
                     f"{reviews:>8}{usd(p.cost_usd):>9}  {merged}")  # fmt: skip
    total = sum(p.cost_usd for p in pipelines)
    lines += [
        f"{'':<41}{'total':>8}{usd(total):>9}   in {took:.0f} s",
        "",
        "(the cost is what the CLI computes from the scripted model's token counts)"
        if ws.mode == "scripted"
        else "(the cost is what your account was charged)",
        "",
        f"main, merged:   git -C {ws.repo_path} log --oneline --graph main",
        f"the trail:      {coord} issue show demo 1   (briefings, tests, reviews, the merge)",
        f"the pipelines:  {coord} pipeline",
        f"the numbers:    {coord} report",
    ]
    return lines
