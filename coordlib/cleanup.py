"""Cleaning up after finished work: worktrees and run directories, never anyone's changes.

Every assignment leaves a git worktree and a run directory on its machine.  `clean`
removes them once the work has ended, with one remote command per machine:

- only worktrees coord made (under the machine's ``workdir/worktrees/``) and only linked
  worktrees: a main checkout is refused, whatever the board says;
- a worktree with uncommitted or untracked changes, a detached HEAD, or a rebase or merge
  in progress is kept and reported, as is one a worker still holds or runs in; its
  branch (and so every commit) always stays.  Ignored files (build output, caches) go
  with their worktree;
- nothing an assignment that has not ended uses (its run, or a worktree a continued
  session shares) is sent to the machine at all;
- work whose pull request merged is cleaned whatever its age: the forge says so (one
  question per branch, so squash and rebase merges count, which git's ancestry cannot see);
- with `rescue`, a worktree with uncommitted or untracked files (or commits on a detached
  HEAD) has them saved first as ``refs/coord/rescue/<id>`` in its repo (a commit of the
  whole tree on its HEAD, made without touching the worktree's index), and then goes; the
  report names the ref.

Cleaned assignments are marked on the board (``extra["cleaned"]``), so the next clean
skips them; the board keeps their outcome, and the forge keeps the trail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .assignment import Assignment
from .errors import CoordError, MachineError, UsageError
from .runtime.answers import parse_clean
from .runtime.builders import clean_command
from .runtime.protocol import CleanMode

if TYPE_CHECKING:
    from .context import Context

__all__ = ["CleanReport", "CleanedRun", "clean"]

# What `clean` says of a worktree or a run directory.
GONE = frozenset({"removed", "missing", "none"})
_CLEAN_TIMEOUT = 300.0  # a big worktree (node_modules, build output) takes a while to delete
_CLEAN_TIMEOUT_PER_RUN = 30.0


@dataclass
class CleanedRun:
    """What cleaning did (or, in a dry run, would do) for one assignment."""

    id: str
    machine: str
    worktree: str  # removed | would_remove | kept | refused | in_use | missing | none | unreachable
    run: str  # removed | would_remove | kept | running | missing | refused | unreachable
    note: str = ""
    rescue: str | None = None  # the ref its worktree's work was saved at first (rescue)
    merged: bool = False  # chosen because its pull request merged (not for its age)
    archive: int | None = None  # the exit status of the workspace's archive script, if it ran

    @property
    def done(self) -> bool:
        """Tell whether nothing of this assignment is left on its machine."""
        return self.worktree in GONE and self.run in GONE

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready record."""
        return {
            "id": self.id,
            "machine": self.machine,
            "worktree": self.worktree,
            "run": self.run,
            "note": self.note,
            "rescue": self.rescue,
            "merged": self.merged,
            "archive": self.archive,
        }


@dataclass
class CleanReport:
    """Every assignment `clean` looked at, and the machines it could not clean."""

    runs: list[CleanedRun] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # machine -> what went wrong
    dry_run: bool = False
    # What was left alone without asking a machine, and why: ended work younger than
    # `older_than` (with the age asked for), and work that has not ended.
    younger: int = 0
    older_than: float = 0.0
    live: int = 0
    notes: list[str] = field(default_factory=list)  # a forge that could not say what merged

    def count(self, part: str, state: str) -> int:
        """Count the runs whose `part` ("worktree" or "run") ended in `state`."""
        return sum(1 for r in self.runs if getattr(r, part) == state)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready report."""
        return {
            "dry_run": self.dry_run,
            "runs": [r.to_dict() for r in self.runs],
            "errors": self.errors,
            "younger": self.younger,
            "live": self.live,
            "notes": self.notes,
        }


def select(
    rows: Sequence[Assignment],
    *,
    now: float,
    older_than: float,
    ids: Iterable[str] = (),
    machine: str | None = None,
    keep_runs: bool = False,
) -> tuple[list[Assignment], dict[tuple[str, str], str]]:
    """Return the ended assignments to clean, and the worktrees live work still uses.

    With `ids`, exactly those (each must have ended); otherwise every ended one not yet
    cleaned that finished at least `older_than` seconds ago.  The second value maps
    (machine, worktree) to the id of the live assignment using it.
    """
    in_use = {(a.machine, a.worktree): a.id for a in rows if not a.is_terminal and a.worktree}
    wanted = set(ids)
    chosen: list[Assignment] = []
    for a in rows:
        if machine is not None and a.machine != machine:
            continue
        if wanted:
            if a.id in wanted and not a.is_terminal:
                raise UsageError(
                    f"assignment {a.id} is {a.status}: only ended work is cleaned "
                    f"(stop it first: coord stop {a.id})"
                )
            if a.id in wanted:
                chosen.append(a)
            continue
        if not a.is_terminal or _cleaned(a, keep_runs):
            continue
        if now - (a.finished_at or a.created_at) >= older_than:
            chosen.append(a)
    return chosen, in_use


def _cleaned(a: Assignment, keep_runs: bool) -> bool:
    return a.cleaned is not None and (keep_runs or a.cleaned.get("run") in GONE)


async def clean(
    ctx: Context,
    *,
    older_than: float = 7 * 86400.0,
    ids: Sequence[str] = (),
    machine: str | None = None,
    keep_runs: bool = False,
    dry_run: bool = False,
    rescue: bool = False,
    merged: bool = True,
    on_machine: Callable[[str, list[CleanedRun] | CoordError], None] | None = None,
) -> CleanReport:
    """Remove the worktrees and run directories of ended assignments (see the module).
    `merged`: also ended work younger than `older_than` whose pull request merged.
    `on_machine` hears each machine's records (or its error) as it answers."""
    if machine is not None:
        ctx.config.machine(machine)  # an unknown name: ConfigError with a suggestion
    rows = ctx.board.assignments(history=True)
    full_ids = [ctx.board.assignment(i).id for i in ids]  # prefixes resolved; unknown ids raise
    chosen, in_use = select(
        rows,
        now=time.time(),
        older_than=older_than,
        ids=full_ids,
        machine=machine,
        keep_runs=keep_runs,
    )
    # An issue still in the pipeline keeps its author's worktree: its fixes continue there.
    for p in ctx.board.pipelines():
        if not p.ended and p.worktree:
            in_use.setdefault((p.machine, p.worktree), f"the pipeline of {p.key} ({p.stage})")
    report = CleanReport(dry_run=dry_run, older_than=older_than)
    landed: set[str] = set()
    if merged and not full_ids:
        chosen_ids = {a.id for a in chosen}
        rest = [a for a in rows if a.is_terminal and a.id not in chosen_ids
                and not _cleaned(a, keep_runs) and machine in (None, a.machine)]  # fmt: skip
        landed = await _merged(ctx, rest, report.notes)
        chosen += [a for a in rest if a.id in landed]
    if not full_ids:
        chosen_ids = {a.id for a in chosen}
        mine = [a for a in rows if machine is None or a.machine == machine]
        report.live = sum(1 for a in mine if not a.is_terminal)
        report.younger = sum(1 for a in mine if a.is_terminal and a.id not in chosen_ids
                             and not _cleaned(a, keep_runs))  # fmt: skip
    by_machine: dict[str, list[Assignment]] = {}
    for a in chosen:
        by_machine.setdefault(a.machine, []).append(a)

    async def one(name: str, runs: list[Assignment]) -> list[CleanedRun] | CoordError:
        done = await _clean_machine(ctx, name, runs, in_use, keep_runs=keep_runs,
                                    dry_run=dry_run, rescue=rescue)  # fmt: skip
        if on_machine is not None:
            on_machine(name, done)
        return done

    results = await asyncio.gather(*(one(name, runs) for name, runs in by_machine.items()))
    for name, outcome in zip(by_machine, results, strict=True):
        if isinstance(outcome, CoordError):
            report.errors[name] = str(outcome)
            outcome = [
                CleanedRun(a.id, name, "unreachable", "unreachable") for a in by_machine[name]
            ]
        for r in outcome:
            r.merged = r.id in landed
        report.runs.extend(outcome)
    if not dry_run:
        _mark(ctx, report.runs, keep_runs=keep_runs)
    return report


async def _clean_machine(
    ctx: Context,
    name: str,
    runs: Sequence[Assignment],
    in_use: dict[tuple[str, str], str],
    *,
    keep_runs: bool,
    dry_run: bool,
    rescue: bool,
) -> list[CleanedRun] | CoordError:
    """Clean one machine's runs with one remote command."""
    if name not in ctx.config.machines:
        return MachineError("not in the config any more; clean it by hand", machine=name)
    m = ctx.config.machine(name)
    owner: dict[str, str] = {}  # worktree -> the id it is sent with (continued sessions share)
    sent: list[tuple[Assignment, str]] = []
    for a in runs:
        wt = a.worktree
        if not wt or (name, wt) in in_use or wt in owner:
            wt = ""
        else:
            owner[wt] = a.id
        sent.append((a, wt))
    argv, payload = clean_command(
        m.root,
        CleanMode.CHECK if dry_run else CleanMode.REMOVE,
        keep_runs=keep_runs,
        runs=[(a.id, wt) for a, wt in sent],
        rescue=rescue,
    )
    try:
        done = await ctx.machines.get(name).run(
            argv,
            input=payload,
            timeout=max(_CLEAN_TIMEOUT, _CLEAN_TIMEOUT_PER_RUN * len(sent)),
            what="clean",
        )
        said = parse_clean(done.stdout, machine=name)
    except CoordError as exc:
        return exc
    out: list[CleanedRun] = []
    for a, wt in sent:
        line = said.get(a.id, {})
        r = CleanedRun(
            a.id,
            name,
            str(line.get("worktree", "unreachable")),
            str(line.get("run", "unreachable")),
            str(line.get("note") or ""),
            # (the machine's word: only the ref this run's own rescue would name)
            f"refs/coord/rescue/{a.id}" if line.get("rescue") == f"refs/coord/rescue/{a.id}"
            else None,
            archive=line["archive"] if type(line.get("archive")) is int else None,
        )  # fmt: skip
        if not wt and a.worktree:
            if (name, a.worktree) in in_use:
                live = in_use[(name, a.worktree)]
                r.worktree, r.note = "in_use", f"its worktree is in use by {live}"
            else:  # shared with an earlier run of the same session: that one's result holds
                first = said.get(owner[a.worktree], {})
                r.worktree = str(first.get("worktree", "unreachable"))
                r.note = f"same worktree as {owner[a.worktree]}"
        out.append(r)
    return out


def _mark(ctx: Context, runs: Sequence[CleanedRun], *, keep_runs: bool) -> None:
    """Record on the board what is gone, so later cleans skip it."""
    now = time.time()
    ctx.board.mark_cleaned({
        r.id: {"at": now, "worktree": r.worktree, "run": r.run,
               **({"rescue": r.rescue} if r.rescue else {})}
        for r in runs
        if r.worktree in GONE and (r.run in GONE or (keep_runs and r.run == "kept"))
    })  # fmt: skip


async def _merged(ctx: Context, rows: Sequence[Assignment], notes: list[str]) -> set[str]:
    """The ids of `rows` whose branch's pull request merged, as the forge says: the PR its
    pipeline opened, else any PR from its branch (one question per branch, 8 at a time).  A
    forge that does not answer is noted, and its work left to the age rule."""
    prs = {(p.repo, p.branch): p.pr for p in ctx.board.pipelines() if p.pr and p.branch}
    branches = sorted({(a.repo, a.branch) for a in rows if a.branch})
    gate = asyncio.Semaphore(8)
    failed: dict[str, str] = {}

    async def ask(repo: str, branch: str) -> bool:
        async with gate:
            try:
                forge = ctx.forges.get(repo)
                number = prs.get((repo, branch))
                if number is not None:
                    return (await forge.get_pr(number)).merged
                return any(pr.merged for pr in await forge.list_prs(state="closed", head=branch))
            except CoordError as exc:
                failed.setdefault(repo, str(exc))
                return False

    said = await asyncio.gather(*(ask(r, b) for r, b in branches))
    done = {rb for rb, yes in zip(branches, said, strict=True) if yes}
    notes += [f"could not ask {repo}'s forge which pull requests merged: {why}"
              for repo, why in sorted(failed.items())]  # fmt: skip
    return {a.id for a in rows if (a.repo, a.branch) in done}
