"""Split an issue judged too large into sub-issues, one per area of its declared files.

An area is the top-level directory of a path the issue declares (`coordlib.scope`); paths at
the root form one area named by the repo.  Each sub-issue's text starts ``Part of #N.`` (the
link up, read back by `parent_of`), quotes the parent's text defanged, and declares exactly
its area's files in a ``## Files`` section, so the briefing and the outcome checks read them.
The parent gets one comment whose first line is ``Split into #a, #b by coord split: …`` (the
links down, read back by `subissues_of`) and the label ``status:waiting``: it waits while
`open_children` names any.  Nothing is closed.

Splitting twice is refused, naming the sub-issues.  A split cut short (the forge failed between
two sub-issues) is finished by running it again: it takes up the sub-issues already opened
instead of opening them twice.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import CoordError, ForgeError, NotFoundError, UsageError
from .markers import defang
from .scope import declared_files

if TYPE_CHECKING:
    from .assignment import Assignment
    from .forge.base import Comment, Forge, Issue

__all__ = [
    "WAITING",
    "Area",
    "SplitReport",
    "SubIssue",
    "child_body",
    "child_title",
    "children_named",
    "group_by_area",
    "open_children",
    "parent_comment",
    "parent_of",
    "scope_stuck_line",
    "split_issue",
    "subissues_of",
]

WAITING = "status:waiting"
_READY = "status:ready"
_STATUS = "status:"
# Only a comment's first line is read: text quoted below it (a worker's words) says nothing.
_SPLIT_LINE = re.compile(r"Split into (#\d+(?:, #\d+)*) by coord split\b")
_PART_OF = re.compile(r"Part of #(\d+)\.?")
_ON_SCOPE = re.compile(r"scope|too (?:big|large|broad|much)|split", re.IGNORECASE)
_GLOB = re.compile(r"[*?\[]")
_MAX_TITLE = 256  # GitHub refuses a longer title
_MAX_QUOTE = 50_000  # the quote of the parent's text; GitHub refuses a body over 65,536
_MAX_STUCK = 500


@dataclass(frozen=True)
class Area:
    """The declared files under one top-level directory (or at the root)."""

    name: str
    files: tuple[str, ...]


@dataclass(frozen=True)
class SubIssue:
    """One sub-issue of a split: planned, opened, or opened by an earlier split cut short."""

    area: str
    title: str
    files: tuple[str, ...]
    number: int | None = None  # None: not opened (a dry run)
    existing: bool = False  # opened by an earlier split that stopped, and taken up

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"number": self.number, "title": self.title, "area": self.area,
                "files": list(self.files), "existing": self.existing}  # fmt: skip


@dataclass(frozen=True)
class SplitReport:
    """What `split_issue` did (or, on a dry run, would do)."""

    repo: str
    parent: int
    children: tuple[SubIssue, ...]
    dry_run: bool
    stuck: str | None = None  # the worker's STUCK: line the comment quotes
    comment: str = ""  # the comment on the parent, as posted (or as it would be)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"parent": self.parent, "repo": self.repo,
                "children": [c.to_dict() for c in self.children], "dry_run": self.dry_run,
                "stuck": self.stuck}  # fmt: skip


# ------------------------------------------------------------------ pure: areas and texts


def group_by_area(files: Sequence[str], repo: str) -> list[Area]:
    """Return the files grouped by top-level directory, each area where it first appears.

    Paths at the root form one area named by the repo (``<repo> root`` if a directory has the
    repo's name); a root entry naming a directory that other entries are in (``docs`` beside
    ``docs/a.md``) joins that directory's area.  A path whose top-level directory is a glob
    (``*/x.py``) belongs to no one area: `UsageError`.
    """
    paths = [_plain(f) for f in files]
    dirs = {p.partition("/")[0] for p in paths if "/" in p}
    root = f"{repo} root" if repo in dirs else repo
    groups: dict[str, list[str]] = {}
    for path in paths:
        top, sep, _ = path.partition("/")
        if sep and _GLOB.search(top):
            raise UsageError(
                f"`{path}` can match files in several top-level directories, so it belongs to "
                f"no one area; declare it per directory instead (`src/{path.partition('/')[2]}`)"
            )
        name = top if sep or top in dirs else root
        if path not in groups.setdefault(name, []):
            groups[name].append(path)
    return [Area(name, tuple(found)) for name, found in groups.items()]


def _plain(path: str) -> str:
    while path.startswith("./"):
        path = path[2:]
    return path


def child_title(parent_title: str, area: str) -> str:
    """Return a sub-issue's title: the parent's, with the area in brackets."""
    tail = f" ({area})"
    room = _MAX_TITLE - len(tail)
    title = parent_title if len(parent_title) <= room else parent_title[: room - 1] + "…"
    return title + tail


def child_body(parent: Issue, area: Area) -> str:
    """Return a sub-issue's text: the link up, the parent's text quoted (defanged), its files."""
    text = defang(parent.body.strip())
    if len(text) > _MAX_QUOTE:
        text = text[:_MAX_QUOTE] + f"\n\n[… cut here: the whole text is on #{parent.number}]"
    quoted = "\n".join(f"> {line}".rstrip() for line in text.splitlines())
    files = "\n".join(f"- `{f}`" for f in area.files)
    return (
        f"Part of #{parent.number}.\n\n"
        f"`coord split` made this issue from #{parent.number}, one per area of its declared "
        f"files: this one is the `{area.name}` area. Change only the files below; "
        f"#{parent.number} waits until all its parts are closed.\n\n"
        f"The text of #{parent.number}:\n\n{quoted}\n\n"
        f"## Files\n\n{files}\n"
    )


def parent_comment(children: Sequence[SubIssue], stuck: str | None = None) -> str:
    """Return the comment on the parent: the links down, one line per sub-issue, and why."""
    refs = ", ".join(_ref(c) for c in children)
    lines = [
        f"Split into {refs} by coord split: one sub-issue per area of the files this issue "
        f"declares. It waits for them (`{WAITING}`); nothing was closed.",
        "",
        *(f"- {_ref(c)} `{c.area}`: {', '.join(f'`{f}`' for f in c.files)}" for c in children),
    ]
    if stuck:
        quote = " ".join(defang(stuck).split())[:_MAX_STUCK]
        lines += ["", "The last worker on this issue stopped on its scope:", "", f"> {quote}"]
    return "\n".join(lines) + "\n"


def _ref(c: SubIssue) -> str:
    return f"#{c.number}" if c.number is not None else "#?"


def children_named(comments: Iterable[Comment], me: str | None) -> list[int]:
    """Return the sub-issues that split comments name, from comments by `me` (None: anyone).

    Only a comment's first line counts, so a split line quoted inside a comment says nothing.
    """
    found: list[int] = []
    for c in comments:
        if me is not None and c.author != me:
            continue
        match = _SPLIT_LINE.match(c.body.lstrip().partition("\n")[0])
        if match:
            found += [n for n in _numbers(match.group(1)) if n not in found]
    return found


def _numbers(refs: str) -> list[int]:
    return [int(x) for x in re.findall(r"#(\d+)", refs)]


def parent_of(body: str | None) -> int | None:
    """Return the issue a sub-issue is part of (its first line ``Part of #N.``), or None."""
    first = (body or "").lstrip().partition("\n")[0].strip()
    match = _PART_OF.fullmatch(first)
    return int(match.group(1)) if match else None


def scope_stuck_line(rows: Iterable[Assignment], repo: str, issue: int) -> str | None:
    """Return the issue's newest run's ``STUCK:`` line when it speaks of scope, else None."""
    mine = [a for a in rows if a.repo == repo and a.issue == issue]
    # A dispatch that never started says nothing about the issue.
    started = [a for a in mine if a.failure_class != "dispatch_failed"]
    if not started:
        return None
    line = max(started, key=lambda a: a.created_at).last_status or ""
    return line[:_MAX_STUCK] if line.startswith("STUCK:") and _ON_SCOPE.search(line) else None


def _refs(numbers: Iterable[int]) -> str:
    return ", ".join(f"#{n}" for n in numbers)


# ------------------------------------------------------------------ the forge


async def subissues_of(forge: Forge, parent: int) -> list[int]:
    """Return the sub-issues the parent's split comments name (coordlib's own comments)."""
    issue = await forge.get_issue(parent)
    return children_named(issue.comments, await forge.identity())


async def open_children(forge: Forge, parent: int) -> list[int]:
    """Return the parent's sub-issues still open: it waits while there are any.

    A sub-issue the forge no longer has (deleted) does not hold the parent back.
    """
    still: list[int] = []
    for n in await subissues_of(forge, parent):
        try:
            if await forge.issue_state(n) == "open":
                still.append(n)
        except NotFoundError:
            continue
    return still


async def split_issue(
    forge: Forge, number: int, *, dry_run: bool = False, stuck_line: str | None = None
) -> SplitReport:
    """Split issue `number` into one sub-issue per area of its declared files.

    `stuck_line` is the ``STUCK:`` line of its last worker, if it spoke of scope
    (`scope_stuck_line`); the parent's comment quotes it.  Raise `UsageError` when the issue
    is closed, already split, or declares files in fewer than two areas.
    """
    repo, where = forge.repo, f"{forge.repo}#{number}"
    parent = await forge.get_issue(number)
    if parent.state != "open":
        reopen = f"`coord issue close {repo} {number} --reopen`"
        raise UsageError(f"{where} is closed: there is nothing to split (reopen it: {reopen})")
    already = children_named(parent.comments, await forge.identity())
    if already:
        label = f"`coord issue label {repo} {number} {WAITING}`"
        unlabelled = "" if WAITING in parent.labels else f"; it is not {WAITING} yet: {label}"
        raise UsageError(f"{where} is already split into {_refs(already)}{unlabelled}")
    areas = _areas(parent, repo, where)
    planned = [SubIssue(a.name, child_title(parent.title, a.name), a.files) for a in areas]
    earlier = await _opened_before(forge, number, {s.title for s in planned})
    planned = [
        dataclasses.replace(s, number=earlier[s.title], existing=True) if s.title in earlier else s
        for s in planned
    ]
    if dry_run:
        comment = parent_comment(planned, stuck_line)
        return SplitReport(repo, number, tuple(planned), True, stuck_line, comment)
    labels = [x for x in dict.fromkeys(parent.labels) if not x.startswith(_STATUS)] + [_READY]
    children: list[SubIssue] = []
    try:
        for sub, area in zip(planned, areas, strict=True):
            if sub.number is None:
                body = child_body(parent, area)
                made = await forge.create_issue(sub.title, body=body, labels=labels)
                sub = dataclasses.replace(sub, number=made.number)
            children.append(sub)
        comment = parent_comment(children, stuck_line)
        await forge.comment(number, comment)
    except CoordError as exc:
        opened = _refs(c.number for c in children if c.number is not None) or "none"
        raise ForgeError(
            f"the split of {where} stopped (sub-issues opened: {opened}): {exc}; run "
            f"`coord split {where}` again to finish it: it takes up the ones already opened"
        ) from exc
    try:
        await _wait(forge, number)
    except CoordError as exc:
        raise ForgeError(
            f"{where} is split into {_refs(c.number for c in children if c.number)} but was not "
            f"labelled {WAITING}: {exc}; label it: `coord issue label {repo} {number} {WAITING}`"
        ) from exc
    return SplitReport(repo, number, tuple(children), False, stuck_line, comment)


def _areas(parent: Issue, repo: str, where: str) -> list[Area]:
    """Return the parent's areas, or say why it cannot be split by them and what to do."""
    by_hand = (
        f"or split it by hand: `coord issue new {repo} --title …` once per part, each text "
        f"starting with the line `Part of #{parent.number}.`"
    )
    files = declared_files(parent.body)
    if not files:
        raise UsageError(
            f"{where} declares no files, so its areas are unknown: list them in a `## Files` "
            f"section (one path per line), {by_hand}"
        )
    try:
        areas = group_by_area(files, repo)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from exc
    if len(areas) < 2:
        raise UsageError(
            f"{where} declares files in one area only ({areas[0].name}), so there is nothing "
            f"to split by area: declare the files of each area it touches in its `## Files` "
            f"section, {by_hand}"
        )
    return areas


async def _opened_before(forge: Forge, parent: int, titles: set[str]) -> dict[str, int]:
    """Return the open sub-issues of `parent` an earlier split opened, by title."""
    found: dict[str, int] = {}
    for i in await forge.list_issues(state="open"):
        if i.title in titles and parent_of(i.body) == parent:
            found.setdefault(i.title, i.number)
    return found


async def _wait(forge: Forge, number: int) -> None:
    """Leave `status:waiting` the issue's one status label (added first: never none)."""
    labels = await forge.add_labels(number, [WAITING])
    for stale in [x for x in labels if x.startswith(_STATUS) and x != WAITING]:
        await forge.remove_label(number, stale)
