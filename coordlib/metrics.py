"""The figures of `coord report`: what the pipeline delivered, what it cost, and where.

Pure computation over the board's rows (every pipeline, every assignment, archived ones
too): nothing here asks a machine or a forge, prints, or reads the clock (`now` is given).

**The window.** A pipeline counts when it merged or was last updated at or after `since`;
an assignment when it was created at or after it.  With no `since`, everything counts.  A
machine's busy time is clipped to the window, which starts at `since` (else at the
earliest row in scope) and ends at `now`.

**Whose cost.** An issue's cost is what its pipeline recorded per assignment
(`Pipeline.costs`), plus any of its runs that reported a cost not recorded yet; an
assignment in no pipeline (a plain ``coord assign --no-pipeline`` run) counts on its own.
Each assignment is counted once.  `coordlib.metrics_format` renders a `Report` as text or
Markdown.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from .assignment import Assignment, Status
from .errors import UsageError
from .pipeline.state import MERGED, NEEDS_HUMAN, READY, Pipeline

if TYPE_CHECKING:
    from .board import Board
    from .config import Config

__all__ = [
    "Figures",
    "MachineUse",
    "Report",
    "build_report",
    "hands_off",
    "merged_at",
    "nearest_rank",
    "parse_since",
    "report_from",
]

# Stages whose runs read the branch but never commit to it.
_READ_ONLY_STAGES = frozenset({"review"})
_SINCE_PART = re.compile(r"(\d+)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SINCE_FORMS = "a number and a unit, s, m, h, d or w, parts may add up: 30m, 24h, 7d, 2w, 1d12h"


def parse_since(text: str, *, now: float) -> float:
    """Return the epoch `text` (a span back from `now`: 30m, 24h, 7d, 2w, 1d12h) names."""
    spec = text.strip().lower()
    if not spec or _SINCE_PART.sub("", spec) != "":
        raise UsageError(f"--since {text!r} is not a span of time: write {_SINCE_FORMS}")
    seconds = sum(int(n) * _UNIT[unit] for n, unit in _SINCE_PART.findall(spec))
    if seconds <= 0:
        raise UsageError(f"--since {text!r} is an empty span: write {_SINCE_FORMS}")
    return now - seconds


@dataclass(frozen=True)
class Figures:
    """The figures of one scope (one repo, or all of them): the JSON object's keys."""

    issues: int = 0  # pipelines in the window
    merged: int = 0
    in_flight: int = 0  # not yet at ready-to-merge, needs-human or merged
    ready_to_merge: int = 0
    needs_human: int = 0
    merge_rate: float | None = None  # merged / (merged + needs_human)
    hands_off: int = 0  # merged with only its workers' commits on the branch
    hands_off_unknown: int = 0  # merged, but some run left no outcome facts
    hands_off_share: float | None = None  # hands_off / merged
    rounds_mean: float | None = None
    rounds_max: int | None = None
    reviews_per_issue: float | None = None
    fix_runs_per_issue: float | None = None
    cost_usd: float = 0.0
    cost_per_merged_usd: float | None = None  # the merged issues' cost / merged
    cost_by_tier: dict[str, float] = field(default_factory=dict)
    dispatch_to_merge_p50_s: float | None = None
    dispatch_to_merge_p90_s: float | None = None


@dataclass(frozen=True)
class MachineUse:
    """How busy one machine was in the window."""

    name: str
    slots: int  # worker slots: the machine's max_workers (concurrency.max_workers if unknown)
    runs: int  # runs created in the window that started
    busy_seconds: float  # the runs' running time, clipped to the window
    utilisation: float | None  # busy / (window seconds x slots)


@dataclass(frozen=True)
class Report:
    """Everything `coord report` shows; `to_dict` is its JSON contract."""

    since: float | None
    until: float
    start: float | None  # where the window starts: since, else the earliest row (None: none)
    overall: Figures
    repos: dict[str, Figures]
    machines: list[MachineUse]
    failures: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready report."""
        return {
            "since": self.since,
            "until": self.until,
            "start": self.start,
            "overall": asdict(self.overall),
            "repos": {name: asdict(f) for name, f in self.repos.items()},
            "machines": [asdict(m) for m in self.machines],
            "failures": dict(self.failures),
        }


def hands_off(runs: Sequence[Assignment], landed: str | None) -> bool | None:
    """Tell whether a merged issue's branch holds only its workers' commits (None: unknown).

    The issue's runs that may commit (every stage but review) and that started are taken
    oldest first (by created_at).  Each must carry its outcome facts, the branch's HEAD when
    it started (`start`) and when it ended (`head`); when one lacks them the answer is None.
    Of those runs, the ones that moved the branch (head != start) must chain: each starts
    where the previous one ended, so nobody committed between them (the first starts
    wherever the branch did).  And the merge must have landed the last one's head
    (`landed`, the head the pipeline tested and pushed, when it recorded one), so nobody
    committed after.  A branch no worker moved is not hands-off.
    """
    committing = [
        a for a in sorted(runs, key=lambda a: a.created_at)
        if not a.reads_only and a.stage not in _READ_ONLY_STAGES and a.started_at is not None
    ]  # fmt: skip
    facts: list[tuple[str, str]] = []
    for a in committing:
        start = (a.outcome or {}).get("start")
        head = (a.outcome or {}).get("head")
        if not isinstance(start, str) or not isinstance(head, str) or not start or not head:
            return None
        facts.append((start, head))
    moved = [(start, head) for start, head in facts if head != start]
    if not moved:
        return False
    for (_, before), (start, _) in pairwise(moved):
        if start != before:
            return False
    return landed is None or moved[-1][1] == landed


def nearest_rank(values: Iterable[float], pct: float) -> float | None:
    """Return the `pct` percentile of values by nearest rank (None for no values).

    The value at rank ceil(pct / 100 x n) of the n values sorted, so always one of them:
    the median of 1, 2, 3, 4 is 2.
    """
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def merged_at(p: Pipeline) -> float | None:
    """Return when p merged: its last move to merged (else its landing verdict), or None."""
    for move in reversed(p.moves):
        if move.get("to") == MERGED and isinstance(move.get("at"), int | float):
            return float(move["at"])
    if p.stage == MERGED:
        for v in reversed(p.verdicts):
            if v.get("stage") == "merge" and isinstance(v.get("at"), int | float):
                return float(v["at"])
    return None


def report_from(
    board: Board,
    config: Config,
    *,
    now: float,
    since: str | None = None,
    repo: str | None = None,
) -> Report:
    """Read the board and compute the report over `since` (as --since takes it) and `repo`."""
    if repo is not None and repo not in config.repos:
        from .config import suggest

        where = f" in {config.path}" if config.path else ""
        raise UsageError(
            f"--repo {repo!r}: no such repo{where} ({suggest(repo, sorted(config.repos), 'repos')}"
            f"); `coord config` shows the config"
        )
    start = None if since is None else parse_since(since, now=now)
    slots = {
        name: m.max_workers
        for name, m in config.machines.items()
        if repo is None or not m.repos or repo in m.repos
    }
    return build_report(
        board.pipelines(),
        board.assignments(history=True),
        now=now,
        since=start,
        repo=repo,
        slots=slots,
        default_slots=config.concurrency.max_workers,
    )


def build_report(
    pipelines: Sequence[Pipeline],
    assignments: Sequence[Assignment],
    *,
    now: float,
    since: float | None = None,
    repo: str | None = None,
    slots: Mapping[str, int] | None = None,
    default_slots: int = 1,
) -> Report:
    """Compute every figure from the board's rows, over the window from `since` to `now`.

    `slots` maps each machine to its worker slots; a machine on the board but not in it
    has `default_slots`.  `repo` keeps one repo's rows only.
    """
    rows = {a.id: a for a in assignments}
    owned = {aid for p in pipelines for aid in (*p.ids(), *p.costs)}
    scoped = [a for a in assignments if repo is None or a.repo == repo]
    recent = [a for a in scoped if since is None or a.created_at >= since]
    issues = [
        (p, _runs_of(p, rows))
        for p in pipelines
        if (repo is None or p.repo == repo) and _counts_in(p, since)
    ]
    alone = [a for a in recent if a.id not in owned]
    names = {p.repo for p, _ in issues} | {a.repo for a in recent} | ({repo} if repo else set())
    by_repo = {
        name: _figures(
            [x for x in issues if x[0].repo == name], [a for a in alone if a.repo == name]
        )
        for name in sorted(names)
    }
    earliest = [t for t in (*(p.created_at for p in pipelines if repo in (None, p.repo)),
                            *(a.created_at for a in scoped)) if t > 0]  # fmt: skip
    start = since if since is not None else (min(earliest) if earliest else None)
    return Report(
        since=since,
        until=now,
        start=start,
        overall=_figures(issues, alone),
        repos=by_repo,
        machines=_machines(scoped, recent, start, now, dict(slots or {}), default_slots),
        failures=_failures(recent),
    )


def _counts_in(p: Pipeline, since: float | None) -> bool:
    """Tell whether p counts in the window: it merged, or was last updated, since then."""
    if since is None:
        return True
    at = merged_at(p)
    return p.updated_at >= since or (at is not None and at >= since)


def _runs_of(p: Pipeline, rows: Mapping[str, Assignment]) -> list[Assignment]:
    """Return the board's rows of p's assignments (recorded or costed), oldest first."""
    ids = dict.fromkeys([*p.ids(), *p.costs])
    return sorted((rows[aid] for aid in ids if aid in rows), key=lambda a: a.created_at)


def _issue_costs(p: Pipeline, runs: Sequence[Assignment]) -> dict[str, tuple[str, float]]:
    """Return assignment id -> (tier, usd) of everything the issue spent, each run once."""
    out = {aid: (str(c[0] or "?"), float(c[1] or 0.0)) for aid, c in p.costs.items()}
    for a in runs:
        if a.id not in out and a.cost_usd:
            out[a.id] = (a.tier or a.model or "?", float(a.cost_usd))
    return out


def _figures(
    issues: Sequence[tuple[Pipeline, list[Assignment]]], alone: Sequence[Assignment]
) -> Figures:
    """Compute one scope's figures from its pipelines (with their runs) and lone runs."""
    stages = [p.stage for p, _ in issues]
    merged = [(p, runs) for p, runs in issues if p.stage == MERGED]
    needs_human = stages.count(NEEDS_HUMAN)
    spent = [(p.stage, tier, usd) for p, runs in issues
             for tier, usd in _issue_costs(p, runs).values()]  # fmt: skip
    spent += [("", a.tier or a.model or "?", float(a.cost_usd)) for a in alone if a.cost_usd]
    tiers: dict[str, float] = {}
    for _, tier, usd in spent:
        tiers[tier] = tiers.get(tier, 0.0) + usd
    merged_cost = sum(usd for stage, _, usd in spent if stage == MERGED)
    verdicts = [_judged(p, runs) for p, runs in merged]
    durations = [d for d in (_dispatch_to_merge(p, runs) for p, runs in merged) if d is not None]
    n = len(issues)
    return Figures(
        issues=n,
        merged=len(merged),
        in_flight=sum(1 for s in stages if s not in (MERGED, READY, NEEDS_HUMAN)),
        ready_to_merge=stages.count(READY),
        needs_human=needs_human,
        merge_rate=_ratio(len(merged), len(merged) + needs_human),
        hands_off=verdicts.count(True),
        hands_off_unknown=verdicts.count(None),
        hands_off_share=_ratio(verdicts.count(True), len(merged)),
        rounds_mean=_ratio(sum(p.round for p, _ in issues), n),
        rounds_max=max((p.round for p, _ in issues), default=None),
        reviews_per_issue=_ratio(sum(_reviews(p) for p, _ in issues), n),
        fix_runs_per_issue=_ratio(sum(len(p.ids("fix")) for p, _ in issues), n),
        cost_usd=round(sum(tiers.values()), 4),
        cost_per_merged_usd=round(merged_cost / len(merged), 4) if merged else None,
        cost_by_tier={k: round(v, 4) for k, v in sorted(tiers.items())},
        dispatch_to_merge_p50_s=_seconds(nearest_rank(durations, 50)),
        dispatch_to_merge_p90_s=_seconds(nearest_rank(durations, 90)),
    )


def _judged(p: Pipeline, runs: Sequence[Assignment]) -> bool | None:
    """Apply `hands_off` to a merged pipeline, with the head it tested and pushed last."""
    return hands_off(runs, p.head_sha or p.tested_sha)


def _reviews(p: Pipeline) -> int:
    return sum(1 for v in p.verdicts if v.get("stage") == "review")


def _dispatch_to_merge(p: Pipeline, runs: Sequence[Assignment]) -> float | None:
    """Seconds from p's first assignment's creation (else p's own) to its merge."""
    end = merged_at(p)
    begin = min((a.created_at for a in runs if a.created_at > 0), default=p.created_at)
    if end is None or begin <= 0:
        return None
    return max(0.0, end - begin)


def _busy(a: Assignment, now: float) -> tuple[float, float] | None:
    """Return when a ran (started_at to finished_at, or to now while it runs), or None."""
    if a.started_at is None:
        return None
    if a.finished_at is not None:
        return a.started_at, a.finished_at
    if not a.is_terminal and a.status != Status.QUEUED:
        return a.started_at, now
    if a.duration_ms:  # queued (rate-limited) or ended without a time: what the run said
        return a.started_at, a.started_at + a.duration_ms / 1000
    return None


def _machines(
    scoped: Sequence[Assignment],
    recent: Sequence[Assignment],
    start: float | None,
    until: float,
    slots: Mapping[str, int],
    default_slots: int,
) -> list[MachineUse]:
    """Return each machine's runs, busy time and utilisation, the busiest first."""
    busy: dict[str, float] = {}
    for a in scoped:
        span = _busy(a, until)
        if span is not None and start is not None:
            seconds = min(span[1], until) - max(span[0], start)
            if seconds > 0:
                busy[a.machine] = busy.get(a.machine, 0.0) + seconds
    runs: dict[str, int] = {}
    for a in recent:
        if a.started_at is not None:
            runs[a.machine] = runs.get(a.machine, 0) + 1
    window = until - start if start is not None else 0.0
    out = []
    for name in {*slots, *busy, *runs}:
        n = max(1, slots.get(name, default_slots))
        seconds = busy.get(name, 0.0)
        use = round(seconds / (window * n), 4) if window > 0 else None
        out.append(MachineUse(name, n, runs.get(name, 0), round(seconds, 3), use))
    return sorted(out, key=lambda m: (-(m.utilisation or 0.0), -m.busy_seconds, m.name))


def _failures(recent: Iterable[Assignment]) -> dict[str, int]:
    """Count the failure classes of the runs created in the window, the commonest first."""
    counts: dict[str, int] = {}
    for a in recent:
        if a.failure_class:
            counts[a.failure_class] = counts.get(a.failure_class, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
