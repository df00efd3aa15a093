"""Who works on what next: the planner's decisions, as a pure function of what it is shown.

`plan` takes the ready issues (``status:ready``), the machines (which repos each serves, its
capabilities, its free slots, whether it is healthy), the work in flight (live assignments
and unfinished pipelines, with the files each declares or has touched), the issues already
claimed, and the repos waiting on an upstream; it returns proposals, each saying why, and
the ready issues it left out, each saying why not.  Nothing here asks a machine or a forge:
`coordlib.proposals` gathers the input and stores the proposals for `coord approve`.

The rules, in the order they are applied to each issue (upstream repos first, then by
issue number):

1. dispatch is not paused (a rate limit, the session budget);
2. the issue is not claimed (a live worker, its pipeline in flight, an unmerged remote
   ``issue-<N>-*`` branch);
3. none of its repo's ``depends_on`` has unmerged work in flight;
4. none of the files it declares is being changed by work in flight or by an earlier
   proposal (two concurrent workers are never given the same file);
5. a machine serves the repo, has every capability its ``needs:<capability>`` labels ask
   for, is healthy, and has a free slot, within the fleet's ``concurrency.max_workers``:
   of those, the one with the most free slots (then by name).

The model is the tier its labels pick (``models.labels``), else ``models.default``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .scope import outside

if TYPE_CHECKING:
    from .assignment import Assignment
    from .config import Config

__all__ = [
    "CAPABILITY_LABEL",
    "Candidate",
    "InFlight",
    "MachineView",
    "PlanInput",
    "Proposal",
    "Skipped",
    "capabilities_asked",
    "files_of",
    "overlaps",
    "plan",
    "retry_machine",
]

CAPABILITY_LABEL = "needs:"  # a label `needs:gpu` asks for a machine with capability gpu


@dataclass(frozen=True)
class Candidate:
    """A ready issue."""

    repo: str
    number: int
    title: str = ""
    labels: tuple[str, ...] = ()
    files: tuple[str, ...] = ()  # what it declares it will change (## Files, Files:)


@dataclass(frozen=True)
class MachineView:
    """A machine as the planner sees it."""

    name: str
    repos: frozenset[str]  # the repos it serves
    capabilities: frozenset[str] = frozenset()
    free: int = 0  # free worker slots (its max_workers less its live workers)
    slots: int = 0  # its max_workers
    healthy: bool = True
    why_not: str = ""  # why it is not healthy (down since …, stale, …)


@dataclass(frozen=True)
class InFlight:
    """Work under way: whose it is and the files it changes (or may)."""

    repo: str
    issue: int
    who: str  # an assignment id, or the issue's pipeline (api#3 in review)
    files: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PlanInput:
    """Everything `plan` decides from."""

    candidates: Sequence[Candidate]
    machines: Sequence[MachineView]
    in_flight: Sequence[InFlight] = ()
    claimed: Mapping[tuple[str, int], str] = field(default_factory=dict)  # -> why
    upstream_busy: Mapping[str, str] = field(default_factory=dict)  # repo -> why it waits
    repo_order: Sequence[str] = ()  # upstream first
    fleet_free: int = 0  # concurrency.max_workers less the live workers
    model_labels: Mapping[str, str] = field(default_factory=dict)
    default_model: str = "sonnet"
    paused: str | None = None  # why no dispatch may start now
    errors: Sequence[str] = ()  # what could not be read (a forge that did not answer)


@dataclass(frozen=True)
class Proposal:
    """One assignment the planner proposes."""

    repo: str
    issue: int
    machine: str
    model: str
    why: str
    title: str = ""
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Skipped:
    """A ready issue left out, and why."""

    repo: str
    issue: int
    why: str


def capabilities_asked(labels: Iterable[str]) -> frozenset[str]:
    """The capabilities an issue's ``needs:<capability>`` labels ask for."""
    return frozenset(
        x[len(CAPABILITY_LABEL) :]
        for x in labels
        if x.startswith(CAPABILITY_LABEL) and len(x) > len(CAPABILITY_LABEL)
    )


def _model(c: Candidate, inp: PlanInput) -> tuple[str, str]:
    for label in c.labels:
        if label in inp.model_labels:
            return inp.model_labels[label], f"label {label}"
    return inp.default_model, "models.default"


def _clash(mine: Iterable[str], theirs: Iterable[str]) -> list[str]:
    """The paths of either side that the other's paths cover (a path, a directory, a glob)."""
    a, b = sorted(mine), sorted(theirs)
    return sorted({f for f in a if not outside([f], b)} | {f for f in b if not outside([f], a)})


def _overlap(files: Sequence[str], taken: Iterable[tuple[str, frozenset[str], str]],
             repo: str) -> str | None:  # fmt: skip
    """Why `files` may not be given out: the first file some other work is changing."""
    for other_repo, theirs, who in taken:
        if other_repo != repo or not theirs or not files:
            continue
        clash = _clash(files, theirs)
        if clash:
            return f"would change {clash[0]}, which {who} is changing"
    return None


def plan(inp: PlanInput) -> tuple[list[Proposal], list[Skipped]]:
    """Return the proposals for the free capacity, and the ready issues left out (see the
    module for the rules); deterministic for a given input."""
    order = {r: i for i, r in enumerate(inp.repo_order)}
    ready = sorted(inp.candidates, key=lambda c: (order.get(c.repo, len(order)), c.repo,
                                                  c.number))  # fmt: skip
    free = {m.name: m.free for m in inp.machines}
    fleet = inp.fleet_free
    taken = [(f.repo, f.files, f.who) for f in inp.in_flight]
    proposals: list[Proposal] = []
    skipped: list[Skipped] = []
    for c in ready:
        why_not = _why_not(c, inp, taken)
        if why_not is None and fleet <= 0:
            why_not = "the fleet is full (concurrency.max_workers)"
        picked: MachineView | None = None
        if why_not is None:
            picked, why_not = _machine(c, inp.machines, free)
        if picked is None:
            skipped.append(Skipped(c.repo, c.number, why_not or "no machine"))
            continue
        model, because = _model(c, inp)
        needs = capabilities_asked(c.labels)
        why = (f"{picked.name} serves {c.repo}"
               + (f", has {', '.join(sorted(needs))}" if needs else "")
               + f", {free[picked.name]} of {picked.slots} slots free; model {model} "
               f"({because})"
               + (f"; changes {', '.join(c.files[:3])}" if c.files else ""))  # fmt: skip
        proposals.append(Proposal(c.repo, c.number, picked.name, model, why, c.title, c.files))
        free[picked.name] -= 1
        fleet -= 1
        taken.append((c.repo, frozenset(c.files), f"the proposal for {c.repo}#{c.number}"))
    return proposals, skipped


def _why_not(
    c: Candidate, inp: PlanInput, taken: Sequence[tuple[str, frozenset[str], str]]
) -> str | None:
    if inp.paused:
        return f"dispatch is paused: {inp.paused}"
    claim = inp.claimed.get((c.repo, c.number))
    if claim:
        return f"claimed: {claim}"
    if c.repo in inp.upstream_busy:
        return inp.upstream_busy[c.repo]
    return _overlap(c.files, taken, c.repo)


def _machine(
    c: Candidate, machines: Sequence[MachineView], free: Mapping[str, int]
) -> tuple[MachineView | None, str | None]:
    """The machine for c (most free slots, then name), or why there is none."""
    serving = [m for m in machines if c.repo in m.repos]
    if not serving:
        return None, f"no machine serves {c.repo} (machines.<name>.repos)"
    needs = capabilities_asked(c.labels)
    able = [m for m in serving if needs <= m.capabilities]
    if not able:
        return None, (f"no machine serving {c.repo} has {', '.join(sorted(needs))} "
                      f"(machines.<name>.capabilities)")  # fmt: skip
    healthy = [m for m in able if m.healthy]
    if not healthy:
        return None, "; ".join(f"{m.name}: {m.why_not}" for m in able)
    room = [m for m in healthy if free.get(m.name, 0) > 0]
    if not room:
        return None, f"no free slot on {', '.join(m.name for m in healthy)}"
    best = sorted(room, key=lambda m: (-free.get(m.name, 0), m.name))[0]
    return best, None


def retry_machine(
    config: Config,
    prev: Assignment,
    labels: Iterable[str],
    live: Sequence[Assignment],
    stale: Callable[[str], bool],
) -> str:
    """Where `coord retry` runs an ended assignment by default: another machine that serves
    its repo, has the capabilities its issue's labels ask for, is not stale (`stale` tells:
    it missed ``concurrency.stale_threshold`` status passes in a row) and has a free slot
    (the roomiest, then by name); its own machine when there is none."""
    needs = capabilities_asked(labels)
    room: list[tuple[int, str]] = []
    for name, m in config.machines.items():
        if name == prev.machine or (m.repos and prev.repo not in m.repos):
            continue
        if not needs <= set(m.capabilities) or stale(name):
            continue
        busy = sum(1 for x in live if x.machine == name and x.status != "queued")
        if m.max_workers - busy > 0:
            room.append((busy - m.max_workers, name))
    return min(room)[1] if room else prev.machine


def files_of(a: Assignment) -> frozenset[str]:
    """The files an assignment changes or may: declared (or named) by its issue, touched by
    its worker's edits, found changed on its branch by the status pass, and by its outcome
    check."""
    files = {*(a.files_declared or a.files_in_scope), *a.files_touched, *(a.files_changed or ())}
    files |= {f for f in (a.outcome or {}).get("files") or [] if isinstance(f, str)}
    return frozenset(files)


def overlaps(rows: Sequence[Assignment]) -> list[tuple[str, str, list[str]]]:
    """Pairs of live assignments of one repo whose files clash (a path, or a directory or
    glob covering it): (one id, the other id, the files), for `coord status` to show."""
    live = sorted((a for a in rows if not a.is_terminal), key=lambda a: (a.created_at, a.id))
    out = []
    for i, a in enumerate(live):
        mine = sorted(files_of(a))
        for b in live[i + 1 :]:
            if b.repo != a.repo or b.issue == a.issue:
                continue
            theirs = sorted(files_of(b))
            clash = _clash(mine, theirs)
            if clash:
                out.append((a.id, b.id, clash))
    return out
