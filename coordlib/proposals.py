"""`coord plan` and `coord approve`: gather what the planner decides from, keep its proposals
on the board, and dispatch the approved ones once their premises still hold.

`gather` reads the forge (each repo's ``status:ready`` issues and its ``issue-*`` branches,
concurrently) and one status pass of the machines (one command each); `coordlib.planner`
decides.  Proposals are kept in the board's ``proposals`` table with short ids (p1, p2, …),
replaced by each `coord plan`.  `approve` plans again from the state of the moment and
refuses a proposal whose premises changed (the issue claimed since, its machine full or
down), naming what changed; the others are dispatched ``concurrency.stagger_seconds`` apart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .admission import load as load_admission
from .errors import CoordError, UsageError
from .planner import (
    Candidate,
    InFlight,
    MachineView,
    PlanInput,
    Proposal,
    Skipped,
    files_of,
    plan,
)
from .scope import declared_files

if TYPE_CHECKING:
    from .assignment import Assignment
    from .board import Board
    from .config import Config
    from .context import Forges
    from .monitor import MachineStatus
    from .pipeline.state import Pipeline
    from .runtime.transport import Transport

__all__ = ["PROPOSALS", "Plan", "approve_each", "gather", "load_proposals", "make_plan",
           "still_holds", "store_proposals", "sync_checkout"]  # fmt: skip

PROPOSALS = "proposals"
READY_LABEL = "status:ready"


@dataclass
class Plan:
    """What `coord plan` proposes and leaves out (`to_dict` is its --json contract)."""

    proposals: list[dict[str, Any]] = field(default_factory=list)  # {id, repo, issue, …}
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {repo, issue, why}
    errors: list[str] = field(default_factory=list)  # a forge that did not answer, …

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready plan."""
        keys = ("id", "repo", "issue", "machine", "model", "why", "title", "files")
        return {
            "proposals": [{k: p.get(k) for k in keys} for p in self.proposals],
            "skipped": self.skipped,
            "errors": self.errors,
        }


def _order(config: Config) -> list[str]:
    from .merge.runner import order_repos

    return order_repos(sorted(config.repos), {r: config.repo(r).depends_on for r in config.repos})


async def gather(
    config: Config,
    board: Board,
    forges: Forges,
    machines: Sequence[MachineStatus],
    *,
    now: float | None = None,
    paused: str | None = None,
) -> PlanInput:
    """Build the planner's input from the forge, the board and a status pass's machines (a
    forge that did not answer leaves its repo out, named in the input's `errors`)."""
    now = time.time() if now is None else now
    repos = sorted(config.repos)
    errors: list[str] = []

    async def read(repo: str) -> tuple[list[Any], list[Any]]:
        forge = forges.get(repo)
        issues, branches = await asyncio.gather(
            forge.list_issues(state="open", labels=[READY_LABEL]), forge.branches("issue-")
        )
        return list(issues), list(branches)

    answers = await asyncio.gather(*(read(r) for r in repos), return_exceptions=True)
    live = board.live()
    pipelines = board.pipelines()
    candidates: list[Candidate] = []
    claimed: dict[tuple[str, int], str] = {}
    for repo, got in zip(repos, answers, strict=True):
        if isinstance(got, BaseException):
            if not isinstance(got, CoordError):
                raise got
            errors.append(f"{repo}: {got}")
            continue
        issues, branches = got
        for issue in issues:
            files = tuple(declared_files(issue.body) or ())
            candidates.append(Candidate(repo, issue.number, issue.title, tuple(issue.labels),
                                        files))  # fmt: skip
        for b in branches:
            number = _issue_of_branch(b.name)
            if number is not None:
                claimed.setdefault((repo, number), f"branch {b.name} is on the remote")
    in_flight = _in_flight(live, pipelines, board)
    admitted = load_admission(board)  # the API busy: fewer workers, or none for now
    for f in in_flight:
        claimed[(f.repo, f.issue)] = f"{f.who} is working on it"
    return PlanInput(
        candidates=candidates,
        machines=_machine_views(config, machines, live, now, board),
        in_flight=in_flight,
        claimed=claimed,
        upstream_busy=_upstream_busy(config, in_flight),
        repo_order=_order(config),
        fleet_free=admitted.fleet(config.concurrency.max_workers)
        - sum(1 for a in live if a.status != "queued"),
        model_labels=dict(config.models.labels),
        default_model=config.models.default,
        paused=paused or admitted.paused(now),
        errors=tuple(errors),
    )


def _issue_of_branch(name: str) -> int | None:
    head = name.removeprefix("issue-").split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _in_flight(live: Sequence[Assignment], pipelines: Sequence[Pipeline],
               board: Board) -> list[InFlight]:  # fmt: skip
    """Live workers with their files, and issues whose pipeline has not ended."""
    out: list[InFlight] = []
    seen: set[tuple[str, int]] = set()
    for a in live:
        out.append(InFlight(a.repo, a.issue, a.id, files_of(a)))
        seen.add((a.repo, a.issue))
    rows = {a.id: a for a in board.assignments()}
    for p in pipelines:
        if p.ended or (p.repo, p.issue) in seen:
            continue
        theirs: set[str] = set()
        for aid in p.ids():
            row = rows.get(aid)
            if row is not None:
                theirs |= files_of(row)
        out.append(InFlight(p.repo, p.issue, f"{p.key} ({p.stage})", frozenset(theirs)))
    return out


def _upstream_busy(config: Config, in_flight: Sequence[InFlight]) -> dict[str, str]:
    busy: dict[str, str] = {}
    for repo in config.repos:
        for up in config.repo(repo).depends_on:
            work = next((f for f in in_flight if f.repo == up), None)
            if work is not None:
                busy[repo] = f"waits for upstream {up}: {work.who} is not merged yet"
                break
    return busy


def _machine_views(config: Config, machines: Sequence[MachineStatus], live: Sequence[Assignment],
                   now: float, board: Board) -> list[MachineView]:  # fmt: skip
    from .doctor import latest, refusal

    said = {m.name: m for m in machines}
    doctored = latest(board)  # a machine `coord doctor` found unhealthy gets no proposal
    views = []
    for name, m in config.machines.items():
        busy = sum(1 for a in live if a.machine == name and a.status != "queued")
        status = said.get(name)
        healthy, why = True, ""
        if status is not None and not status.reachable:
            healthy = False
            ago = f"{int(now - status.seen_at)} s ago" if status.seen_at else "never"
            why = (f"{'stale' if status.stale else 'down'} ({status.state}; last answered {ago}): "
                   f"{status.error or ''}").rstrip(": ")  # fmt: skip
        elif (sick := refusal(doctored.get(name), repo=None, now=now)) is not None:
            healthy, why = False, sick
        views.append(MachineView(
            name=name, repos=frozenset(m.repos or config.repos),
            capabilities=frozenset(m.capabilities), free=max(0, m.max_workers - busy),
            slots=m.max_workers, healthy=healthy, why_not=why,
        ))  # fmt: skip
    return views


def make_plan(inp: PlanInput) -> tuple[list[Proposal], list[Skipped]]:
    """The planner's decision (see `coordlib.planner.plan`)."""
    return plan(inp)


def store_proposals(board: Board, proposals: Sequence[Proposal]) -> list[dict[str, Any]]:
    """Replace the board's proposals with these, numbered p1, p2, …; return them stored."""
    docs = [{"key": f"p{i}", "id": f"p{i}", "at": time.time(), **asdict(p),
             "files": list(p.files)} for i, p in enumerate(proposals, 1)]  # fmt: skip
    with board.transaction() as txn:
        table = txn.docs(PROPOSALS)
        mine = {str(d["key"]) for d in docs}
        for old in table.all():  # an earlier plan's: kept as a key, never approved again
            if str(old["key"]) not in mine and not old.get("superseded"):
                table.put({"key": old["key"], "id": old.get("id"), "superseded": True})
        for doc in docs:
            table.put(doc)
    return docs


def load_proposals(board: Board, ids: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The stored proposals (those named by `ids`, in that order); an unknown id is refused."""
    stored = {str(d.get("id")): d for d in board.docs(PROPOSALS) if not d.get("superseded")}
    if not ids:
        return sorted(stored.values(), key=lambda d: int(str(d["id"])[1:] or 0))
    missing = [i for i in ids if i not in stored]
    if missing:
        known = ", ".join(sorted(stored)) or "none: run `coord plan`"
        raise UsageError(f"no proposal {', '.join(missing)} (the proposals are: {known})")
    return [stored[i] for i in ids]


async def _checkout(sync: Callable[[str, str], Awaitable[dict[str, Any]]], machine: str,
                    repo: str, *, auto_pull: bool) -> str:  # fmt: skip
    """What to say of machine's checkout of repo against origin ("" when it is even)."""
    try:
        got = await sync(machine, repo)
    except CoordError as exc:
        return f"could not compare {repo}'s checkout on {machine} with origin: {exc}"
    base, behind = got["base"], got["behind"]
    if got["pulled"]:
        return f"pulled {behind} commit(s) of origin/{base} into {repo}'s checkout on {machine}"
    if not behind:
        return ""
    hint = "" if auto_pull else "; `git pull --ff-only` there, or approve with --auto-pull"
    tail = f" ({got['why']})" if got.get("why") else hint
    return (f"{repo}'s checkout on {machine} is {behind} commit(s) behind origin/{base}"
            f"{tail}")  # fmt: skip


def still_holds(doc: Mapping[str, Any], proposals: Sequence[Proposal],
                skipped: Sequence[Skipped],
                claimed: Mapping[tuple[str, int], str] | None = None) -> str | None:  # fmt: skip
    """Why the stored proposal `doc` may not be dispatched now (its premises changed), given
    a plan made this moment (and its claims); None when it still holds."""
    key = (doc.get("repo"), doc.get("issue"))
    claim = (claimed or {}).get((str(key[0]), int(key[1] or 0)))
    if claim and not any((p.repo, p.issue) == key for p in proposals):
        return f"claimed since the plan: {claim}"
    now = next((p for p in proposals if (p.repo, p.issue) == key), None)
    if now is not None and now.machine == doc.get("machine"):
        return None
    if now is not None:
        return f"{doc.get('machine')} is no longer the machine for it (now: {now.machine})"
    left = next((s for s in skipped if (s.repo, s.issue) == key), None)
    if left is not None:
        return left.why
    return f"{key[0]}#{key[1]} is no longer ready (status:ready removed, or closed)"


async def approve_each(
    docs: Sequence[Mapping[str, Any]],
    *,
    plan_now: Callable[[], Awaitable[tuple[list[Proposal], list[Skipped], PlanInput]]],
    assign: Callable[..., Awaitable[Assignment]],
    stagger: float,
    dry_run: bool,
    on_each: Callable[[dict[str, Any]], None] | None,
    sync: Callable[[str, str], Awaitable[dict[str, Any]]] | None = None,
    auto_pull: bool = False,
) -> list[dict[str, Any]]:
    """Dispatch each stored proposal whose premises still hold (see `Coordinator.approve`).
    With `sync`, each machine's checkout of each repo is first compared with origin (once):
    behind is a warning (`checkout`), or a fast-forward with `auto_pull`."""
    done: list[dict[str, Any]] = []
    checked: dict[tuple[str, str], str] = {}
    for i, doc in enumerate(docs):
        said = {k: doc.get(k) for k in ("id", "repo", "issue", "machine", "model")}
        where = (str(doc.get("machine")), str(doc.get("repo")))
        if sync is not None and where not in checked:
            checked[where] = await _checkout(sync, *where, auto_pull=auto_pull)
        if checked.get(where):
            said["checkout"] = checked[where]
        proposals, skipped, inp = await plan_now()
        why = still_holds(doc, proposals, skipped, inp.claimed)
        if why is not None:
            said["refused"] = why
        elif dry_run:
            said["would_dispatch"] = True
        else:
            try:
                a = await assign(str(doc["machine"]), str(doc["repo"]), int(doc["issue"]),
                                 model=str(doc["model"]))  # fmt: skip
                said["assignment"] = a.id
            except CoordError as exc:
                said["refused"] = str(exc)
            if stagger and i < len(docs) - 1:
                await asyncio.sleep(stagger)
        done.append(said)
        if on_each is not None:
            on_each(said)
    return done


async def sync_checkout(config: Config, transport: Transport, machine: str, repo: str, *,
                        pull: bool) -> dict[str, Any]:  # fmt: skip
    """Compare machine's checkout of repo with origin (one remote command; `pull`: fast-
    forward it when it is clean and has nothing of its own)."""
    from .runtime.answers import parse_sync
    from .runtime.builders import sync_command

    m, r = config.machine(machine), config.repo(repo)
    argv = sync_command(m.repo_path(r.name), r.default_branch, pull=pull)
    result = await transport.run(argv, timeout=120, what="sync")
    return parse_sync(result.stdout, machine=machine)
