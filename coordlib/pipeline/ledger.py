"""The cost ledger and the model ladder: what each issue and the session spent, the
budgets that stop fixing or pause dispatch, which tier comes next, and whether the tiers and
templates a playbook names exist.

Costs come from the assignments' own ``cost_usd`` (what Claude Code reported); a pipeline
keeps each of its ended assignments' cost by tier.  A session runs from the first pass
after `coord done` (or the board's first pass) to the next `coord done`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..assignment import Assignment
from ..errors import AssignmentNotFound, ConfigError
from .state import Pipeline

if TYPE_CHECKING:
    from pathlib import Path

    from ..config import Config
    from ..context import Context
    from ..playbook import Playbook

__all__ = ["SESSIONS", "Ledger", "check_against", "spend", "usd"]

SESSIONS = "sessions"  # the board's table of the session document ({"key": "current", …})


def usd(amount: float) -> str:
    """Show an amount of US dollars: cents, or more digits for a fraction of a cent."""
    return f"${amount:.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.6f}".rstrip("0")


def spend(rows: Iterable[Mapping[str, Any]], *, since: float = 0.0) -> dict[str, Any]:
    """Sum the cost of assignment records created at or after `since`: total and per tier."""
    total = 0.0
    tiers: dict[str, float] = {}
    issues: dict[str, float] = {}
    for r in rows:
        cost = r.get("cost_usd")
        if not isinstance(cost, int | float) or isinstance(cost, bool) or not cost:
            continue
        if float(r.get("created_at") or 0.0) < since:
            continue
        tier = str(r.get("tier") or r.get("model") or "?")
        issue = f"{r.get('repo')}#{r.get('issue')}"
        total += cost
        tiers[tier] = tiers.get(tier, 0.0) + cost
        issues[issue] = issues.get(issue, 0.0) + cost
    return {
        "usd": round(total, 6),
        "by_tier": {k: round(v, 6) for k, v in sorted(tiers.items())},
        "by_issue": {k: round(v, 6) for k, v in sorted(issues.items())},
    }


class Ledger:
    """Budgets and tiers for the engine, read from the config and the board."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    # ------------------------------------------------------------ the session
    def session_start(self) -> float:
        """Return when the current session began (starting one now if none is open)."""
        board = self.ctx.board
        with board.transaction() as txn:
            table = txn.docs(SESSIONS)
            doc = table.get("current")
            if doc is None or not isinstance(doc.get("started_at"), int | float):
                doc = {"key": "current", "started_at": time.time()}
                table.put(doc)
            return float(doc["started_at"])

    def end_session(self) -> tuple[float, float]:
        """Close the current session and open the next; return the closed one's (start, end)."""
        now = time.time()
        with self.ctx.board.transaction() as txn:
            table = txn.docs(SESSIONS)
            doc = table.get("current") or {}
            start = float(doc.get("started_at") or now)
            table.put({"key": "current", "started_at": now, "previous": [start, now]})
        return start, now

    def session_spend(self, since: float | None = None) -> dict[str, Any]:
        """Return what the session (or everything since `since`) spent."""
        start = self.session_start() if since is None else since
        board = self.ctx.board
        live = board.all()
        ids = {r["id"] for r in live}
        rows = [r for r in board.history() if r["id"] not in ids] + live
        return {"since": start, **spend(rows, since=start)}

    def session_paused(self) -> str | None:
        """Why new dispatch is paused (the session spent budget.session_usd), or None."""
        limit = self.ctx.config.budget.session_usd
        if limit is None:
            return None
        used = self.session_spend()["usd"]
        if used < limit:
            return None
        return (f"the session spent {usd(used)}, its budget.session_usd is {usd(limit)}: "
                f"new dispatch waits for `coord done` (or a higher budget)")  # fmt: skip

    # ------------------------------------------------------------ the issue
    def issue_over_budget(self, p: Pipeline) -> str | None:
        """Why p may not be fixed further (it spent budget.per_issue_usd), or None."""
        limit = self.ctx.config.budget.per_issue_usd
        if limit is None or p.cost_usd < limit:
            return None
        return (f"the issue spent {usd(p.cost_usd)}, its budget.per_issue_usd is "
                f"{usd(limit)}: no more fixing or escalation without a person")  # fmt: skip

    def costs(self, p: Pipeline, a: Assignment | None) -> dict[str, list[Any]]:
        """The cost of every ended worker of p (retried and continued ones too) and of a."""
        out: dict[str, list[Any]] = {}
        rows = [a] if a is not None else []
        for aid in p.ids():
            if aid not in p.costs and (a is None or aid != a.id):
                try:
                    rows.append(self.ctx.board.assignment(aid))
                except AssignmentNotFound:
                    continue
        seen: set[str] = set()
        for first in rows:
            row: Assignment | None = first
            while row is not None and row.id not in seen:  # predecessors a retry replaced
                seen.add(row.id)
                if row.cost_usd:
                    out[row.id] = [row.tier or row.model, row.cost_usd]
                prev = row.continues or row.retry_of
                try:
                    row = self.ctx.board.assignment(prev) if prev else None
                except AssignmentNotFound:
                    row = None
        return out

    # ------------------------------------------------------------ tiers
    def next_tier(self, tier: str) -> str:
        """Return the tier one step up models.escalation from `tier` (the top stays)."""
        models = self.ctx.config.models
        ladder = list(models.escalation)
        if not ladder:
            return tier or models.default
        start = tier if tier in ladder else models.default
        i = ladder.index(start) if start in ladder else -1
        return ladder[min(i + 1, len(ladder) - 1)]

    def reviewer_tier(self, author: str) -> str:
        """Return the reviewer's tier: reviews.model, else a tier other than the author's."""
        models = self.ctx.config.models
        chosen = self.ctx.config.reviews.model
        if chosen:
            return chosen
        ladder = list(models.escalation) or list(models.ids)
        author = author if author in ladder else models.default
        if author not in ladder:
            return ladder[-1] if ladder else models.default
        i = ladder.index(author)
        if i + 1 < len(ladder):
            return ladder[i + 1]
        return ladder[i - 1] if i > 0 else author


def check_against(book: Playbook, config: Config, user_dir: Path | None) -> Playbook:
    """Check what a playbook names against a config: its tiers and briefing templates."""
    from ..briefings import has_template
    from ..playbook import MODEL_POLICIES

    where = str(book.path) if book.path else book.name
    for s in book.stages.values():
        if s.run != "worker":
            continue
        if s.model not in MODEL_POLICIES:
            try:
                config.models.resolve(s.model)
            except ConfigError as exc:
                raise ConfigError(f"stages.{s.name}.model: {exc.message}", path=where,
                                  line=s.line or None, hint=exc.hint) from None  # fmt: skip
        if s.briefing and not has_template(s.briefing, user_dir=user_dir):
            raise ConfigError(
                f"stages.{s.name}.briefing: no template {s.briefing}.md.j2",
                path=where, line=s.line or None,
                hint="the shipped ones are work, review, fix, pr, smoke and conflict; "
                "or add yours to the briefings.dir of coordinator.yml",
            )  # fmt: skip
    return book
