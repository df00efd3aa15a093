"""A UI-neutral snapshot of the fleet for dashboards (``coord web``, a terminal UI): each
repo's issues as the pipeline's columns, the machines, the spend, and the actions each card
allows.

`build` is pure: from what was read (the board's assignments and pipelines, the last status
pass's machines, the forge's issues, the plan's proposals) it makes a `Dashboard`.  `gather`
reads the board of a `Coordinator` for it; no command to a machine, no forge call.

The columns are `COLUMNS` (the sections of ``coord issues``).  An issue's card goes by, in
this order: its pipeline's stage (work, test, pr, fix: In progress; a verdict stage such as
review: Review; ready-to-merge, needs-human; merged: Done); else its newest assignment (live:
In progress, done: Done, otherwise ended: Pending, free to start again); else its status
label on the forge (no label: New, ``status:refining``: Refining, ``status:ready``: Pending,
closed: Done).
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .assignment import Assignment, Status
from .pipeline.ledger import spend
from .pipeline.state import MERGED, NEEDS_HUMAN, READY, Pipeline
from .trail import ISSUE_SECTIONS, sort_into_sections

if TYPE_CHECKING:
    from .coordinator import Coordinator
    from .forge.base import Issue
    from .monitor import MachineStatus

__all__ = ["COLUMNS", "Action", "Card", "Dashboard", "MachineCard", "RepoColumns", "Spend",
           "SpendPoint", "actions_for", "build", "column_of_stage", "gather",
           "state_of"]  # fmt: skip

COLUMNS: tuple[str, ...] = tuple(ISSUE_SECTIONS)
NEW, REFINING, PENDING, IN_PROGRESS, REVIEW, READY_TO_MERGE, DONE, HUMAN = COLUMNS
DONE_SHOWN = 25  # the Done column shows the newest this many; the rest are counted
_LIVE_STATES = ("pending", "running", "stuck")
_ENDED_BADLY = ("failed", "stopped", "lost", "queued")


class Action(enum.StrEnum):
    """What a person may do to a card (each is a `Coordinator` verb)."""

    STOP = "stop"  # stop the card's live worker (`Coordinator.stop`)
    RETRY = "retry"  # start the issue again as a new attempt (`Coordinator.retry`)
    BOUNCE = "bounce"  # send the last review's findings to a fix worker (`Coordinator.bounce`)
    MERGE = "merge"  # land its ready PR now (`Coordinator.merge(order=[repo#N])`)
    APPROVE = "approve"  # dispatch the stored plan proposal for it (`Coordinator.approve`)


@dataclass(frozen=True)
class Card:
    """One issue on the board, as a column shows it."""

    repo: str
    issue: int
    title: str
    column: str  # one of COLUMNS
    stage: str | None = None  # its pipeline's stage; None when it has no pipeline
    assignment: str | None = None  # the assignment its column is about (the newest)
    state: str | None = None  # that assignment's state as a person reads it (see state_of)
    machine: str = ""
    tier: str = ""
    cost_usd: float = 0.0  # everything the issue's workers cost
    since: float | None = None  # when it entered this column, as far as is known (epoch s)
    age_s: float | None = None  # how long ago that was, at the snapshot's time
    needs_human: str | None = None  # why a person is needed
    pr: int | None = None
    pr_url: str = ""
    round: int = 0  # fix rounds so far
    last_status: str | None = None  # the worker's last STATUS:/STUCK: line
    review: str | None = None  # the newest ended review of the issue (what bounce sends back)
    proposal: str | None = None  # the stored plan proposal for it (p1, p2, …)
    actions: tuple[str, ...] = ()  # the Action values valid now, in Action's order

    @property
    def key(self) -> str:
        """Return ``repo#issue``."""
        return f"{self.repo}#{self.issue}"

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready card (with its key)."""
        return {"key": self.key, **dataclasses.asdict(self), "actions": list(self.actions)}


@dataclass(frozen=True)
class RepoColumns:
    """One repo's cards, by column (every column of COLUMNS is there, in order)."""

    repo: str
    columns: dict[str, list[Card]]
    hidden: dict[str, int] = field(default_factory=dict)  # cards a column leaves out

    def cards(self) -> Iterator[Card]:
        """Yield every card shown, column by column."""
        for cards in self.columns.values():
            yield from cards

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready repo: its columns as a list, in order."""
        return {"repo": self.repo, "columns": [
            {"name": n, "cards": [c.to_dict() for c in cards], "hidden": self.hidden.get(n, 0)}
            for n, cards in self.columns.items()]}  # fmt: skip


@dataclass(frozen=True)
class MachineCard:
    """One machine as the last status pass saw it (`reachable` None: not asked yet)."""

    name: str
    reachable: bool | None
    state: str = "unknown"  # up, or why not (timeout, refused, lost, auth, host_key, …)
    stale: bool = False  # it missed enough passes in a row to get no new work
    running: int = 0  # its running workers, as the board has them
    error: str | None = None
    seen_at: float | None = None  # when it last answered
    disk_used_kb: int | None = None  # coordlib's disk use there
    disk_free_kb: int | None = None  # the room left on its file system
    disk_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready machine."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SpendPoint:
    """One assignment's cost, counted when it was created (as the ledger counts it)."""

    at: float
    usd: float
    tier: str
    issue: str  # repo#N
    assignment: str


@dataclass(frozen=True)
class Spend:
    """What the workers cost: today, in all, per issue, per tier, and each cost in time."""

    today_usd: float
    total_usd: float
    by_issue: dict[str, float]
    by_tier: dict[str, float]
    points: list[SpendPoint]  # oldest first
    today_start: float = 0.0  # local midnight, epoch seconds

    def series(self, bucket_s: float) -> list[dict[str, Any]]:
        """Sum the points into buckets of `bucket_s` seconds: one record per bucket that
        holds a cost, oldest first, ``{"at": start, "usd": total, "by_tier": {tier: usd}}``."""
        if bucket_s <= 0:
            raise ValueError(f"bucket_s must be positive, not {bucket_s}")
        buckets: dict[float, dict[str, float]] = {}
        for p in self.points:
            start = p.at - p.at % bucket_s
            tiers = buckets.setdefault(start, {})
            tiers[p.tier] = tiers.get(p.tier, 0.0) + p.usd
        return [
            {"at": at, "usd": round(sum(t.values()), 6),
             "by_tier": {k: round(v, 6) for k, v in sorted(t.items())}}
            for at, t in sorted(buckets.items())
        ]  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready spend."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Dashboard:
    """The whole picture at one moment (`at`); build it with `build` or `gather`."""

    at: float
    repos: list[RepoColumns]
    machines: list[MachineCard]
    spend: Spend
    errors: list[str] = field(default_factory=list)  # what could not be read (a forge, …)
    polled_at: float | None = None  # when the machines answered the status pass shown

    def cards(self) -> Iterator[Card]:
        """Yield every card shown, repo by repo."""
        for r in self.repos:
            yield from r.cards()

    def card(self, repo: str, issue: int) -> Card | None:
        """Return the card of repo's issue, or None."""
        return next((c for c in self.cards() if (c.repo, c.issue) == (repo, issue)), None)

    def card_of(self, assignment: str) -> Card | None:
        """Return the card whose assignment (or review) is `assignment`, or None."""
        return next((c for c in self.cards() if assignment in (c.assignment, c.review)), None)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready dashboard (``/api/board`` of ``coord web``)."""
        return {"at": self.at, "polled_at": self.polled_at, "columns": list(COLUMNS),
                "repos": [r.to_dict() for r in self.repos],
                "machines": [m.to_dict() for m in self.machines],
                "spend": self.spend.to_dict(), "errors": list(self.errors)}  # fmt: skip


# ---------------------------------------------------------------- the rules
def state_of(a: Assignment) -> str:
    """Return the state a person reads: the status, or ``stuck`` for a live worker whose
    last line was a ``STUCK:`` (as ``coord status`` shows it)."""
    if not a.is_terminal and (a.last_status or "").startswith("STUCK:"):
        return "stuck"
    return str(a.status)


def column_of_stage(stage: str, review_stages: Iterable[str] = ("review",)) -> str:
    """Return the column of a pipeline at `stage` (`review_stages`: the playbook's verdict
    stages)."""
    if stage == READY:
        return READY_TO_MERGE
    if stage == NEEDS_HUMAN:
        return HUMAN
    if stage == MERGED:
        return DONE
    return REVIEW if stage in set(review_stages) else IN_PROGRESS


def actions_for(column: str, *, state: str | None, stage: str | None = None,
                pr: int | None = None, review: str | None = None,
                proposal: str | None = None) -> tuple[str, ...]:  # fmt: skip
    """Return the actions valid for a card, in `Action`'s order.

    - stop: its assignment is live (pending, running, stuck);
    - retry: its assignment ended without success (failed, stopped, lost) or waits on a
      rate limit (queued), or it ended at all and the issue needs a person; never once merged;
    - bounce: an ended review of the issue exists and no worker of it is live, and it has
      not merged;
    - merge: it is ready to merge with a PR;
    - approve: a stored plan proposal is for it and no worker of it is live.
    """
    live = state in _LIVE_STATES
    out: list[str] = []
    if live:
        out.append(Action.STOP)
    if (state is not None and column != DONE and not live
            and (state in _ENDED_BADLY or column == HUMAN)):  # fmt: skip
        out.append(Action.RETRY)
    if review is not None and not live and column != DONE:
        out.append(Action.BOUNCE)
    if column == READY_TO_MERGE and stage == READY and pr is not None:
        out.append(Action.MERGE)
    if proposal is not None and not live and column in (NEW, REFINING, PENDING):
        out.append(Action.APPROVE)
    return tuple(str(x) for x in out)


def _today_start(now: float) -> float:
    t = time.localtime(now)
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))


def _issue_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None
    except ValueError:
        return None


def _spend(rows: Sequence[Mapping[str, Any]], now: float) -> Spend:
    start = _today_start(now)
    whole, today = spend(rows), spend(rows, since=start)
    points = []
    for r in rows:
        cost = r.get("cost_usd")
        if isinstance(cost, int | float) and not isinstance(cost, bool) and cost:
            points.append(SpendPoint(
                at=float(r.get("created_at") or 0.0), usd=float(cost),
                tier=str(r.get("tier") or r.get("model") or "?"),
                issue=f"{r.get('repo')}#{r.get('issue')}", assignment=str(r.get("id")),
            ))  # fmt: skip
    points.sort(key=lambda p: p.at)
    return Spend(today_usd=today["usd"], total_usd=whole["usd"], by_issue=whole["by_issue"],
                 by_tier=whole["by_tier"], points=points, today_start=start)  # fmt: skip


def _machines(
    names: Sequence[str], seen: Sequence[MachineStatus] | None, rows: Sequence[Assignment]
) -> list[MachineCard]:
    running: dict[str, int] = {}
    for a in rows:
        if a.status == Status.RUNNING:
            running[a.machine] = running.get(a.machine, 0) + 1
    if seen is None:
        return [MachineCard(n, None, running=running.get(n, 0)) for n in names]
    return [MachineCard(
        m.name, m.reachable, state=m.state, stale=m.stale, running=m.running, error=m.error,
        seen_at=m.seen_at, disk_used_kb=m.disk.used_kb if m.disk and m.disk.used_kb >= 0 else None,
        disk_free_kb=m.disk.free_kb if m.disk and m.disk.free_kb >= 0 else None,
        disk_at=m.disk.at if m.disk else None) for m in seen]  # fmt: skip


class _Cards:
    """Builds the cards of one snapshot (the shared lookups in one place)."""

    def __init__(
        self, rows: Sequence[Assignment], costs: Mapping[str, float], proposals: Mapping[
            tuple[str, int], str], review_stages: frozenset[str], now: float,
    ) -> None:  # fmt: skip
        self.by_id = {a.id: a for a in rows}
        self.costs, self.proposals = costs, proposals
        self.review_stages, self.now = review_stages, now

    def make(self, repo: str, issue: int, column: str, title: str, *,
             a: Assignment | None = None, p: Pipeline | None = None,
             since: float | None = None) -> Card:  # fmt: skip
        state = state_of(a) if a is not None else None
        review = self._review(p) if p is not None else None
        proposal = self.proposals.get((repo, issue))
        stage = p.stage if p is not None else None
        pr = p.pr if p is not None else None
        cost = max(self.costs.get(f"{repo}#{issue}", 0.0), p.cost_usd if p is not None else 0.0)
        return Card(
            repo=repo, issue=issue, title=title or (a.title if a else "") or f"#{issue}",
            column=column, stage=stage, assignment=a.id if a else None, state=state,
            machine=(a.machine if a else "") or (p.machine if p else ""),
            tier=(p.tier if p and p.tier else "") or (a.tier or a.model if a else ""),
            cost_usd=round(cost, 6), since=since,
            age_s=None if since is None else max(0.0, self.now - since),
            needs_human=p.reason if p is not None and p.stage == NEEDS_HUMAN else None,
            pr=pr, pr_url=p.pr_url if p is not None else "", round=p.round if p else 0,
            last_status=a.last_status if a else None, review=review, proposal=proposal,
            actions=actions_for(column, state=state, stage=stage, pr=pr, review=review,
                                proposal=proposal),
        )  # fmt: skip

    def _review(self, p: Pipeline) -> str | None:
        """The newest ended review of p that bounce can send back (one with a result)."""
        ids = [aid for s in self.review_stages for aid in p.ids(s)]
        done = [self.by_id[i] for i in ids if i in self.by_id
                and self.by_id[i].status == Status.DONE]  # fmt: skip
        return max(done, key=lambda a: a.created_at).id if done else None

    def of_pipeline(self, p: Pipeline) -> Card:
        ids = p.ids()
        newest = max((self.by_id[i] for i in ids if i in self.by_id),
                     key=lambda a: a.created_at, default=None)  # fmt: skip
        a = self.by_id.get(p.current or "") or newest
        since = float(p.moves[-1]["at"]) if p.moves else p.created_at
        if not since and a is not None:
            since = a.started_at or a.created_at
        column = column_of_stage(p.stage, self.review_stages)
        return self.make(p.repo, p.issue, column, p.title, a=a, p=p, since=since or None)

    def of_rows(self, repo: str, issue: int, rows: Sequence[Assignment]) -> Card:
        started = [x for x in rows if x.failure_class != "dispatch_failed"] or list(rows)
        a = max(started, key=lambda x: x.created_at)
        live = REVIEW if (a.stage or "") in self.review_stages else IN_PROGRESS
        column = live if not a.is_terminal else DONE if a.status == Status.DONE else PENDING
        return self.make(repo, issue, column, a.title, a=a,
                         since=a.finished_at or a.started_at or a.created_at)  # fmt: skip


def build(
    *, repos: Sequence[str], assignments: Sequence[Assignment],
    pipelines: Sequence[Pipeline] = (), machines: Sequence[MachineStatus] | None = None,
    machine_names: Sequence[str] = (), issues: Mapping[str, Sequence[Issue]] | None = None,
    proposals: Sequence[Mapping[str, Any]] = (), history: Sequence[Mapping[str, Any]] = (),
    review_stages: Iterable[str] = ("review",), errors: Sequence[str] = (),
    now: float | None = None, polled_at: float | None = None, done_shown: int = DONE_SHOWN,
) -> Dashboard:  # fmt: skip
    """Build the snapshot from what was read; pure (no I/O).

    `assignments` are the board's rows (live and the finished ones it keeps), `history` the
    archived records (counted in the spend only); `machines` the last status pass's (None:
    not asked yet, then `machine_names` lists them); `issues` each repo's issues as the forge
    listed them (None: not read, so only issues the board knows are shown); `proposals` the
    stored plan proposals (``{"id", "repo", "issue", …}``).
    """
    now = time.time() if now is None else now
    ids = {a.id for a in assignments}
    records = [r for r in history if r.get("id") not in ids] + [a.to_dict() for a in assignments]
    money = _spend(records, now)
    stored = {(str(x.get("repo")), int(x.get("issue") or 0)): str(x.get("id"))
              for x in proposals if not x.get("superseded") and x.get("id")}  # fmt: skip
    make = _Cards(assignments, money.by_issue, stored, frozenset(review_stages), now)
    names = list(dict.fromkeys([*repos, *(p.repo for p in pipelines),
                                *(a.repo for a in assignments)]))  # fmt: skip
    shown: dict[str, dict[int, Card]] = {r: {} for r in names}
    for p in pipelines:
        shown[p.repo][p.issue] = make.of_pipeline(p)
    grouped: dict[tuple[str, int], list[Assignment]] = {}
    for a in assignments:
        if a.issue not in shown[a.repo]:
            grouped.setdefault((a.repo, a.issue), []).append(a)
    for (repo, issue), rows in grouped.items():
        shown[repo][issue] = make.of_rows(repo, issue, rows)
    for repo, listed in (issues or {}).items():
        known = shown.setdefault(repo, {})
        if repo not in names:
            names.append(repo)
        rest = [i for i in listed if i.number not in known]
        for column, some in sort_into_sections(rest, set()).items():
            for i in some:
                at = _issue_time(i.updated_at) or _issue_time(i.created_at)
                known[i.number] = make.make(repo, i.number, column, i.title, since=at)
        for i in listed:  # the forge's title is the one a person edits
            c = known.get(i.number)
            if c is not None and i.title and c.title != i.title:
                known[i.number] = dataclasses.replace(c, title=i.title)
    out = []
    for repo in names:
        columns: dict[str, list[Card]] = {c: [] for c in COLUMNS}
        for card in shown[repo].values():
            columns[card.column].append(card)
        hidden: dict[str, int] = {}
        for name, cards in columns.items():
            if name == DONE:
                cards.sort(key=lambda c: (-(c.since or 0.0), c.issue))
                if len(cards) > done_shown:
                    hidden[name] = len(cards) - done_shown
                    del cards[done_shown:]
            else:
                cards.sort(key=lambda c: c.issue)
        out.append(RepoColumns(repo, columns, hidden))
    return Dashboard(at=now, repos=out, machines=_machines(machine_names, machines, assignments),
                     spend=money, errors=list(errors), polled_at=polled_at)  # fmt: skip


def gather(
    coord: Coordinator, *, machines: Sequence[MachineStatus] | None = None,
    issues: Mapping[str, Sequence[Issue]] | None = None,
    history: Sequence[Mapping[str, Any]] | None = None, errors: Sequence[str] = (),
    polled_at: float | None = None, now: float | None = None,
) -> Dashboard:  # fmt: skip
    """Read the board (and the playbook's verdict stages) of `coord` and `build` from it.

    Nothing is sent to a machine or the forge: `machines` (a `StatusReport`'s), `issues`
    and `history` (the board's archived records, read here when None) are the caller's.
    """
    from .errors import CoordError
    from .proposals import PROPOSALS

    board = coord.board
    errors = list(errors)
    try:
        review = [s.name for s in coord.engine.playbook.stages.values() if s.verdict]
    except CoordError as exc:  # a broken playbook: the board still shows, saying so
        errors.append(f"playbook: {exc}")
        review = ["review"]
    return build(
        repos=sorted(coord.config.repos), assignments=board.assignments(),
        pipelines=board.pipelines(), machines=machines, machine_names=list(coord.config.machines),
        issues=issues, proposals=board.docs(PROPOSALS), review_stages=review, errors=errors,
        history=board.history() if history is None else history, now=now, polled_at=polled_at,
    )  # fmt: skip
