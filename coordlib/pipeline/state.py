"""An issue's pipeline state as the board keeps it: the stage, the round, each stage's
assignments, the verdicts, the PR and the cost.

One `Pipeline` per issue, keyed ``repo#issue`` in the board's ``pipelines`` table.  Only the
board's pipeline transitions (`coordlib.board_pipelines`) change one; the engine decides
what they should be.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import BoardError

__all__ = ["ENDS", "MERGED", "NEEDS_HUMAN", "READY", "Pipeline", "pipeline_key"]

READY = "ready-to-merge"
NEEDS_HUMAN = "needs-human"
MERGED = "merged"  # the merge queue landed it: after ready-to-merge
ENDS = (READY, NEEDS_HUMAN, MERGED)
# How many verdicts and moves a pipeline keeps (the newest); a long-lived issue stays small.
_KEEP = 50


def pipeline_key(repo: str, issue: int) -> str:
    """Return the board key of repo's issue's pipeline: ``repo#issue``."""
    return f"{repo}#{issue}"


@dataclass
class Pipeline:
    """Where one issue is in its playbook.

    Field names are the JSON contract of ``coord pipeline --json``; add, never rename.
    """

    repo: str
    issue: int
    stage: str  # a stage of the playbook, or one of ENDS
    playbook: str = "issue-to-pr"
    title: str = ""
    round: int = 0  # fix rounds entered so far
    tier: str = ""  # the author's tier now (a failed test moves it up models.escalation)
    machine: str = ""  # where the branch and the author's worktree are
    branch: str = ""
    worktree: str = ""  # the author's worktree: fixes continue in it
    base_sha: str | None = None  # the commit the branch started from
    current: str | None = None  # the assignment the stage waits for
    acting: dict[str, Any] | None = None  # {by, pid, host, at, stage}: a process is acting
    assignments: dict[str, list[str]] = field(default_factory=dict)  # stage -> ids, oldest first
    verdicts: list[dict[str, Any]] = field(default_factory=list)  # {stage, outcome, at, …}
    moves: list[dict[str, Any]] = field(default_factory=list)  # {at, from, to, outcome}
    retries: dict[str, int] = field(default_factory=dict)  # stage -> times run again (no verdict)
    pr: int | None = None
    pr_url: str = ""
    head_sha: str | None = None  # the commit the last test, push or review saw
    tested_sha: str | None = None  # the commit whose test passed last
    costs: dict[str, list[Any]] = field(default_factory=dict)  # assignment -> [tier, usd]
    reason: str | None = None  # why a person is needed
    stuck_seen: list[str] = field(default_factory=list)  # assignments whose STUCK was handled
    outbox: list[dict[str, Any]] = field(default_factory=list)  # comments to post {id, kind, …}
    failures: str = ""  # the last failed test's output tail, for the fix briefing
    findings: str = ""  # the last review's findings, for the fix briefing
    guidance: str = ""  # a person's words for the next fix (`coord fix --guidance`)
    escalate: bool = False  # the next fix moves one tier up (its test failed)
    brief: str | None = None  # the next worker's briefing template, for once (conflict)
    conflicts: list[str] = field(default_factory=list)  # files that did not merge, for it
    merged_sha: str | None = None  # the commit the merge queue landed it in
    created_at: float = 0.0
    updated_at: float = 0.0
    version: int = 0  # bumped by every change: a move is made only from the version decided on

    @property
    def key(self) -> str:
        """Return the board key: ``repo#issue``."""
        return pipeline_key(self.repo, self.issue)

    @property
    def ended(self) -> bool:
        """Tell whether the issue reached ready-to-merge or needs a person."""
        return self.stage in ENDS

    @property
    def cost_usd(self) -> float:
        """Return what every assignment of the issue cost, in US dollars."""
        return round(sum(float(c[1] or 0.0) for c in self.costs.values()), 6)

    def cost_by_tier(self) -> dict[str, float]:
        """Return the cost per model tier (the full model id when no tier was named)."""
        out: dict[str, float] = {}
        for tier, usd in self.costs.values():
            out[str(tier or "?")] = round(out.get(str(tier or "?"), 0.0) + float(usd or 0.0), 6)
        return out

    def ids(self, stage: str | None = None) -> list[str]:
        """Return the assignments of one stage (or of all), oldest first."""
        if stage is not None:
            return list(self.assignments.get(stage, []))
        return [aid for ids in self.assignments.values() for aid in ids]

    def note_move(self, to: str, outcome: str) -> None:
        """Record a move to `to` because of `outcome`."""
        self.moves = [*self.moves, {"at": time.time(), "from": self.stage, "to": to,
                                    "outcome": outcome}][-_KEEP:]  # fmt: skip
        self.stage = to

    def note_verdict(self, verdict: Mapping[str, Any]) -> None:
        """Record a verdict (a test's, a review's, or a person's)."""
        self.verdicts = [*self.verdicts, {"at": time.time(), **verdict}][-_KEEP:]

    def acting_alive(self, *, stale_after: float) -> bool:
        """Tell whether the process acting on this pipeline may still be at it.

        On this host a dead pid settles it at once; another host's claim is trusted for
        `stale_after` seconds.
        """
        if not self.acting:
            return False
        age = time.time() - float(self.acting.get("at") or 0.0)
        pid = self.acting.get("pid")
        if self.acting.get("host") == socket.gethostname() and isinstance(pid, int):
            if pid == os.getpid():
                return age < stale_after
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                pass
        return age < stale_after

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready record (with its key, and its cost for readers)."""
        data = dataclasses.asdict(self)
        data["key"] = self.key
        data["cost_usd"] = self.cost_usd
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pipeline:
        """Build from a board document; a field of the wrong kind raises `BoardError`."""
        kwargs: dict[str, Any] = {}
        for name, kinds in _KINDS.items():
            if name not in data:
                continue
            value = data[name]
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise BoardError(
                    f"pipeline {data.get('key')!r} on the board: field {name} holds "
                    f"{type(value).__name__}; edit or remove that document in the board file"
                )
            kwargs[name] = value
        for name in ("repo", "issue", "stage"):
            if name not in kwargs:
                raise BoardError(f"pipeline {data.get('key')!r} on the board has no {name}")
        return cls(**kwargs)


def _kinds() -> dict[str, tuple[type, ...]]:
    table = {"str": (str,), "int": (int,), "float": (float, int), "bool": (bool,)}
    out: dict[str, tuple[type, ...]] = {}
    for f in dataclasses.fields(Pipeline):
        kind = str(f.type)
        base = kind.removesuffix(" | None")
        if base.startswith("dict"):
            types: tuple[type, ...] = (dict,)
        elif base.startswith("list"):
            types = (list,)
        else:
            types = table[base]
        out[f.name] = types + ((type(None),) if kind.endswith(" | None") else ())
    return out


_KINDS = _kinds()
