"""`coord report` for people: an aligned text table, or Markdown ready for a weekly note.

Both forms show the same rows, built once (`_issue_rows`): one column per scope (all
repos, then each repo), then the spend by tier, the machines and the failure classes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .metrics import Figures, Report
from .pipeline.ledger import usd

__all__ = ["render_markdown", "render_text"]

_Table = list[list[str]]  # a header row, then the rows


def render_text(report: Report) -> str:
    """Return the report as aligned plain-text tables."""
    parts = [_title(report), ""]
    for heading, table in _tables(report):
        parts += [heading, *_aligned(table), ""]
    return "\n".join(parts).rstrip() + "\n"


def render_markdown(report: Report) -> str:
    """Return the report as Markdown: a heading, then one table per part."""
    parts = [f"## {_title(report)}", ""]
    for heading, table in _tables(report):
        parts += [f"### {heading}", "", *_markdown(table), ""]
    return "\n".join(parts).rstrip() + "\n"


def _title(report: Report) -> str:
    until = _when(report.until)
    if report.since is not None:
        return f"coord report: {_when(report.since)} to {until}"
    if report.start is not None:
        return f"coord report: everything on the board, {_when(report.start)} to {until}"
    return f"coord report: the board is empty ({until})"


def _tables(report: Report) -> list[tuple[str, _Table]]:
    scopes = _scopes(report)
    out = [("Issues", _issue_rows(scopes))]
    tiers = sorted({t for _, f in scopes for t in f.cost_by_tier})
    if tiers:
        out.append(
            (
                "Spend by tier",
                [["tier", *(name for name, _ in scopes)]]
                + [[t, *(_money(f.cost_by_tier.get(t)) for _, f in scopes)] for t in tiers],
            )
        )
    machines = [["machine", "slots", "runs", "busy", "utilisation"]] + [
        [m.name, str(m.slots), str(m.runs), _duration(m.busy_seconds), _percent(m.utilisation)]
        for m in report.machines
    ]
    if len(machines) > 1:
        out.append(("Machines", machines))
    failures = [[k, str(n)] for k, n in report.failures.items()] or [["none", "0"]]
    out.append(("Failures", [["failure class", "runs"], *failures]))
    return out


def _scopes(report: Report) -> list[tuple[str, Figures]]:
    """Return the columns: every repo together, then each (one repo: only that one)."""
    if len(report.repos) == 1:
        return list(report.repos.items())
    return [("overall", report.overall), *report.repos.items()]


def _issue_rows(scopes: Sequence[tuple[str, Figures]]) -> _Table:
    def row(label: str, cell: Callable[[Figures], object]) -> list[str]:
        return [label, *(str(cell(f)) for _, f in scopes)]

    return [
        ["", *(name for name, _ in scopes)],
        row("issues", lambda f: f.issues),
        row("merged", lambda f: f.merged),
        row("in flight", lambda f: f.in_flight),
        row("ready to merge", lambda f: f.ready_to_merge),
        row("needs human", lambda f: f.needs_human),
        row("merge rate", lambda f: _percent(f.merge_rate)),
        row("hands-off", lambda f: f"{f.hands_off} ({_percent(f.hands_off_share)})"),
        row("hands-off unknown", lambda f: f.hands_off_unknown),
        row("rounds mean / max", lambda f: f"{_number(f.rounds_mean)} / {_number(f.rounds_max)}"),
        row("reviews per issue", lambda f: _number(f.reviews_per_issue)),
        row("fix runs per issue", lambda f: _number(f.fix_runs_per_issue)),
        row("spent", lambda f: _money(f.cost_usd)),
        row("per merged issue", lambda f: _money(f.cost_per_merged_usd)),
        row("dispatch to merge p50", lambda f: _duration(f.dispatch_to_merge_p50_s)),
        row("dispatch to merge p90", lambda f: _duration(f.dispatch_to_merge_p90_s)),
    ]


def _aligned(table: _Table) -> list[str]:
    """Lay a table out in columns: the first left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = []
    for r in table:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def _markdown(table: _Table) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(table[0]), "|" + "---|" + "--:|" * (len(table[0]) - 1)] + [
        line(r) for r in table[1:]
    ]


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


def _money(amount: float | None) -> str:
    return "-" if amount is None else usd(amount)


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f}%"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _duration(seconds: float | None) -> str:
    """Show seconds as people read them: 42s, 12m05s, 3h02m, 2d04h."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
