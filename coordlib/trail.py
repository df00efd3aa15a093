"""The durable trail: what coordlib writes on an issue, and how to read it back.

Every dispatch posts its briefing as an issue comment, and every ending posts a comment
too.  Each ends with a signed, hidden marker (see `coordlib.markers`), so a person reads the
comment and `coord resume --from-forge` rebuilds a lost board from the markers it can verify.
Every comment is capped below the forges' limits: a long briefing is cut, with a note that
says where the whole of it is.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .assignment import TERMINAL, Assignment, Status
from .errors import CoordError
from .markers import (
    MarkerError,
    SkippedMarker,
    TrailKey,
    check_marker,
    defang,
    find_marker,
    make_marker,
    neutralise,
    parse_markers,
)
from .outcomes import summary

if TYPE_CHECKING:
    from .board import Board
    from .config import Config
    from .forge.base import Forge, Issue

__all__ = [
    "ISSUE_SECTIONS",
    "MAX_COMMENT_CHARS",
    "STATUS_LABELS",
    "Trail",
    "briefing_comment",
    "ending_comment",
    "parse_markers",
    "set_status_label",
    "sort_into_sections",
]

# GitHub refuses a comment over 65,536 characters; stay well below, marker included.
MAX_COMMENT_CHARS = 60_000

# Pipeline labels on issues; `coord issues` sorts issues into sections by them.
STATUS_LABELS = {
    "refining": "status:refining",
    "ready": "status:ready",
    "waiting": "status:waiting",  # split into sub-issues (`coord split`), waiting for them
    "in_progress": "status:in-progress",
    "review": "status:review",
    "ready_to_merge": "status:ready-to-merge",
    "needs_human": "status:needs-human",
    "done": "status:done",
}


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _cut(text: str, room: int, where: str) -> str:
    """Return text, or as much of it as fits in `room` characters with a note saying where."""
    if len(text) <= room:
        return text
    note = f"\n\n[… cut here: {len(text):,} characters in all; the whole text is {where}]"
    return text[: max(0, room - len(note))] + note


def briefing_comment(a: Assignment, briefing: str, key: TrailKey) -> str:
    """The comment a dispatch posts: who works on it, where, and the briefing itself."""
    verb = "continues" if a.continues else "dispatched"
    head = (
        f"**coord** {verb} `{a.id}` on `{a.machine}` with `{a.model}`, "
        f"branch `{a.branch}` (attempt {a.attempt})."
    )
    if a.retry_of:
        head += f" It retries `{a.retry_of}`."
    if a.continues:
        head += f" It continues `{a.continues}`, session `{a.session_id}`."
    if a.ports:
        head += f" Its worktree holds ports {a.ports[0]}-{a.ports[1]} (`$COORD_PORT`)."
    marker = make_marker("dispatch", a, key)
    room = MAX_COMMENT_CHARS - len(head) - len(marker) - 200
    text = _cut(neutralise(briefing.rstrip()), room, f"`{a.run_dir}/briefing.md` on `{a.machine}`")
    fence = _fence(text)
    return (
        f"{head}\n\n<details><summary>Briefing</summary>\n\n"
        f"{fence}markdown\n{text}\n{fence}\n\n</details>\n\n{marker}\n"
    )


def _duration(ms: int | None) -> str:
    if not ms:
        return ""
    s = ms // 1000
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


_NO_MENTION = re.compile(r"@(?=[A-Za-z0-9_-])")


def ending_comment(a: Assignment, key: TrailKey) -> str:
    """The comment posted when an assignment ends (done, failed, stopped, lost, queued)."""
    facts = [x for x in (
        _duration(a.duration_ms),
        f"{a.num_turns} turns" if a.num_turns else "",
        f"${a.cost_usd:.4f}" if a.cost_usd else "",
    ) if x]  # fmt: skip
    tail = f" ({', '.join(facts)})" if facts else ""
    if a.status == Status.DONE:
        head = f"**coord** `{a.id}` is done on branch `{a.branch}`{tail}."
        body = a.result or a.last_status or ""
    elif a.status == Status.QUEUED:
        head = f"**coord** `{a.id}` hit an API rate limit{tail}; it will continue by itself."
        body = ""
    else:
        why = a.failure_class or a.exit_reason or str(a.status)
        head = f"**coord** `{a.id}` ended as **{a.status}** ({why}){tail}."
        body = a.error or ""
    if a.outcome and a.outcome.get("head"):
        # What the machine found the run left behind (paths are the worker's: defanged).
        left = summary(a.outcome, branch=a.branch)
        head += f"\n\nIt left: {defang(left)}." if left else ""
        if a.outcome.get("rescue") and a.status != Status.DONE:
            head += f" Uncommitted changes saved at `{a.outcome['rescue']}` on {a.machine}."
    setup = a.setup
    if setup is not None and setup.get("exit") == 0:
        head += f"\n\nThe workspace's setup took {setup['seconds']:g} s."
    marker = make_marker(str(a.status), a, key)
    room = MAX_COMMENT_CHARS - len(head) - len(marker) - 200
    body = _cut(neutralise(body.strip()), room, f"in `coord log {a.id}`")
    body = _NO_MENTION.sub("@\u200b", body)  # a worker's words ping nobody
    quoted = "\n".join(f"> {line}" if line else ">" for line in body.splitlines())
    text = head + (f"\n\n{quoted}" if quoted else "")
    return f"{text}\n\n{marker}\n"


# -- posting and reading the trail -----------------------------------------------------------

ISSUE_SECTIONS = (
    "New", "Refining", "Pending", "In progress", "Review", "Ready to merge", "Done",
    "Needs human",
)  # fmt: skip
# What a checked marker carries over into a rebuilt board row.
_ROW_FIELDS = (
    "machine", "repo", "issue", "branch", "model", "tier", "title", "worktree", "run_dir",
    "attempt", "created_at", "session_id", "failure_class", "exit_reason", "cost_usd",
    "num_turns", "duration_ms", "finished_at",
)  # fmt: skip
# Why a restored row waits for a person rather than starting by itself.
HELD_RESTORED = "restored from the forge's trail"
# Every status label: an issue carries one of them at a time.
_STATUS = frozenset(STATUS_LABELS.values())
# A stage claimed for posting this long ago by a process that never finished is retried.
_STALE_POSTING = 60.0


def pipeline_label(stage: str, a: Assignment) -> str:
    """The status label of an issue whose pipeline is at `stage` (a's the newest worker)."""
    if stage == "ready-to-merge":
        return STATUS_LABELS["ready_to_merge"]
    if stage == "needs-human":
        return STATUS_LABELS["needs_human"]
    if a.stage == "review" or stage == "review":
        return STATUS_LABELS["review"]
    return STATUS_LABELS["in_progress"]


def sort_into_sections(issues: Iterable[Issue], live: set[int]) -> dict[str, list[Issue]]:
    """Sort issues into the pipeline's sections by their status labels.

    New (open, no status label), Refining (``status:refining``), Pending
    (``status:ready``, or ``status:waiting`` for its sub-issues), In progress
    (``status:in-progress``, or a number in `live`), Review (``status:review``), Ready to
    merge (``status:ready-to-merge``), Done (``status:done``, or closed) and Needs human
    (``status:needs-human``).
    """
    sections: dict[str, list[Issue]] = {k: [] for k in ISSUE_SECTIONS}
    for i in issues:
        labels = set(i.labels)
        if i.state == "closed" or STATUS_LABELS["done"] in labels:
            key = "Done"
        elif STATUS_LABELS["needs_human"] in labels:
            key = "Needs human"
        elif STATUS_LABELS["ready_to_merge"] in labels:
            key = "Ready to merge"
        elif STATUS_LABELS["review"] in labels:
            key = "Review"
        elif i.number in live or STATUS_LABELS["in_progress"] in labels:
            key = "In progress"
        elif STATUS_LABELS["ready"] in labels or STATUS_LABELS["waiting"] in labels:
            key = "Pending"
        elif STATUS_LABELS["refining"] in labels:
            key = "Refining"
        else:
            key = "New"
        sections[key].append(i)
    return sections


async def set_status_label(
    forge: Forge, issue: int, label: str, known: Sequence[str] | None = None
) -> None:
    """Leave `label` the issue's one status label (`known`: its labels, if just read)."""
    labels: Sequence[str] | None = known
    if labels is None or label not in labels:
        labels = await forge.add_labels(issue, [label])  # returns the issue's labels
    for stale in [x for x in labels if x in _STATUS and x != label]:
        await forge.remove_label(issue, stale)


class Trail:
    """Posts the trail on issues, once per stage, and rebuilds board rows from it.

    Each row's `trail` records the stages posted (stage → comment id), and `trail_off`
    why work that is not on the forge leaves none.  A stage is claimed on the
    board before it is posted, so two coord processes never post it twice; a post that
    fails is forgotten, for `post_pending` (run by `coord resume`) to try again.
    """

    def __init__(
        self,
        board: Board,
        forge: Callable[[str], Forge],
        notify: Callable[[str], None],
        key: TrailKey | None = None,
    ) -> None:
        self.board = board
        self.forge = forge
        self.notify = notify
        self.key = key or TrailKey(board.path.with_name("trail.key"))

    async def post_dispatch(
        self, a: Assignment, briefing: str, labels: Sequence[str] | None = None
    ) -> int | str | None:
        """Post the briefing on the issue and mark it in progress (best effort).

        The dispatcher claimed this stage on the board with the assignment itself and
        records what this returns: the comment's id, or None when it could not be posted
        (`post_pending` tries again).  `labels` are the issue's labels when known, which
        saves reading them.
        """
        body = briefing_comment(a, briefing, self.key)
        return await self._send(a, "dispatch", body, STATUS_LABELS["in_progress"], labels)

    async def post_ending(self, a: Assignment) -> None:
        """Post how an assignment ended on its issue and move its status label."""
        await self._post(a, str(a.status), ending_comment(a, self.key))

    async def post_pending(self, rows: Iterable[Assignment]) -> list[tuple[str, str]]:
        """Post the stages earlier processes could not (or crashed before they did).

        Return the (assignment, stage) pairs posted.
        """
        posted: list[tuple[str, str]] = []
        for a in rows:
            if a.trail is None or a.trail_off is not None:
                continue
            trail = a.trail
            stale = time.time() - (a.finished_at or a.created_at) > _STALE_POSTING
            if stale and "posting" in trail.values():
                trail = self.board.trail_forget(a.id, lambda k, v: v == "posting")
            if "dispatch" not in trail and a.status != Status.PENDING:
                note = f"(the briefing of {a.id} was not recorded by the coordinator)"
                if await self._post(a, "dispatch", briefing_comment(a, note, self.key)):
                    posted.append((a.id, "dispatch"))
            ended = a.is_terminal or a.status == Status.QUEUED
            if ended and str(a.status) not in trail:  # noqa: SIM102 - await in the second test
                if await self._post(a, str(a.status), ending_comment(a, self.key)):
                    posted.append((a.id, str(a.status)))
        return posted

    async def _post(self, a: Assignment, stage: str, body: str) -> bool:
        """Claim `stage` on the board, post it, and record the comment (or forget the claim).

        The issue's status label is that of its newest assignment, read now: a stage posted
        late (the forge was down) never moves it back.
        """
        if a.trail is None or a.trail_off is not None:
            return False  # work that is not on the forge: no need to lock the board to know it
        if not self.board.trail_claim(a.id, stage):
            return False
        comment = await self._send(a, stage, body, None)
        if comment is None:
            self.board.trail_forget(a.id, lambda k, v: k == stage)
            return False
        self.board.trail_posted(a.id, stage, comment)
        return True

    def _status_label(self, a: Assignment) -> str:
        """The status label a's issue should carry: what its newest assignment says."""
        p = self.board.pipeline(a.repo, a.issue)
        if p is not None and (p.ended or p.current == a.id or a.stage is not None):
            return pipeline_label(p.stage, a)
        rows = [x for x in self.board.assignments() if x.repo == a.repo and x.issue == a.issue]
        rows = [x for x in rows if x.id != a.id] + [a]
        # A dispatch that never started says nothing about the issue, unless it is all there is.
        started = [x for x in rows if x.failure_class != "dispatch_failed"]
        newest = max(started or rows, key=lambda x: x.created_at)
        if newest.status == Status.DONE:
            return STATUS_LABELS["done"]
        if newest.is_terminal:
            return STATUS_LABELS["ready"]  # free to be picked up again
        return STATUS_LABELS["in_progress"]

    async def _send(
        self,
        a: Assignment,
        stage: str,
        body: str,
        label: str | None,
        known: Sequence[str] | None = None,
    ) -> int | str | None:
        """Post body on a's issue and leave `label` its one status label.

        `label` None: the label of the issue's newest assignment, read once the comment is
        posted.  Return the comment id, None when the comment was not posted.  `known` are
        the issue's labels if read just now.  A label that cannot be set is reported and
        does not undo the comment (it would be posted twice).
        """
        try:
            forge = self.forge(a.repo)
            comment = await forge.comment(a.issue, body)
        except CoordError as exc:
            self.notify(f"{a.id}: the {stage} comment on {a.repo}#{a.issue} was not posted: {exc}")
            return None
        label = label or self._status_label(a)
        try:
            await set_status_label(forge, a.issue, label, known)
        except CoordError as exc:
            self.notify(f"{a.id}: {a.repo}#{a.issue} could not be labelled {label}: {exc}")
        return comment.id

    async def rebuild(
        self, repos: Iterable[str], config: Config
    ) -> tuple[list[Assignment], list[SkippedMarker]]:
        """Put back on the board every assignment the trail knows and the board lost.

        Only markers this coordinator signed are read, from comments by its own identity
        on the forge, each checked field by field (see `markers.check_marker`); the others
        are skipped with the reason, and the rest of the rebuild goes on.  It reads the
        issues carrying a status label, keeps each assignment's latest stage, and inserts
        the missing rows: ended ones as they ended, running ones as running (for `resume`
        to check against the machines), and rate-limited ones held: a restored row never
        starts by itself (`coord continue ID` starts it).
        """
        key = self.key.get(create=False)
        skipped: list[SkippedMarker] = []
        known = {r["id"] for r in self.board.history()} | {r["id"] for r in self.board.all()}
        found: dict[str, dict[str, Any]] = {}
        for repo in repos:
            forge = self.forge(repo)
            me = await forge.identity()
            numbers: set[int] = set()
            for label in ("in_progress", "done", "ready"):
                listed = await forge.list_issues(state="all", labels=[STATUS_LABELS[label]])
                numbers |= {i.number for i in listed}
            for n in sorted(numbers):
                issue = await forge.get_issue(n)
                for c in issue.comments:
                    marker = find_marker(c.body)
                    if marker is None:
                        continue
                    try:
                        if key is None:
                            raise MarkerError(
                                f"there is no trail key at {self.key.path} to verify it with"
                            )
                        if me is not None and c.author != me:
                            raise MarkerError(
                                f"it was posted by {c.author!r}, not by coordlib's own "
                                f"identity {me!r}"
                            )
                        row = check_marker(marker, key=key, repo=repo, issue=n, config=config)
                    except MarkerError as exc:
                        skipped.append(SkippedMarker(repo, n, c.id, str(exc)))
                        continue
                    if row["id"] not in known:
                        found.setdefault(row["id"], {}).update(row)
        restored = self.board.restore([_row_from_marker(aid, data) for aid, data in found.items()])
        return restored, skipped


def _row_from_marker(aid: str, data: dict[str, Any]) -> Assignment:
    """Build the board row of a checked marker's latest stage."""
    stage = data["stage"]
    status = Status(stage) if stage in {str(x) for x in Status} else Status.RUNNING
    trail: dict[str, Any] = {"dispatch": "restored"}
    if status in TERMINAL or status == Status.QUEUED:
        trail[str(status)] = "restored"
    fields = {k: data[k] for k in _ROW_FIELDS if k in data}
    a = Assignment.from_dict({**fields, "id": aid, "status": str(status)})
    a.trail, a.restored = trail, True
    a.retry_of, a.continues = data.get("retry_of"), data.get("continues")
    if status == Status.QUEUED:
        a.held = HELD_RESTORED
    return a  # its events are folded again from the start by the next status
