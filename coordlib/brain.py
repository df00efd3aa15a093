"""`coord plan --brain`: Claude ranks the plan's proposals, through the worker machinery.

The deterministic plan decides what may run where; the brain only orders it.  It is a run
like any worker's (the same dispatch, launcher, watchdog and status verbs, on a machine of the
fleet), with no repo (`DispatchMode.SCRATCH`: it works in its run dir), read-only tools and
no issue, so it is not on the board; its run is removed once its answer is read.

What it answers is untrusted model output: only the proposal ids of the plan are taken from
it, each once, and its reasons are cut to one short line of printable text.  Ids it leaves
out follow in the plan's own order, so the ranking always holds every proposal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .briefings import render_briefing
from .config import is_secret_name, resolve_env
from .errors import BrainError, CommandError, CoordError
from .reconcile import MAX_EVENT_BYTES
from .runtime.answers import failure_reason, parse_status
from .runtime.builders import Want, clean_command, dispatch_command, status_command, stop_command
from .runtime.layout import Layout, RunFile
from .runtime.protocol import CleanMode, DispatchMode, Scope
from .stream import Result, parse_lines

if TYPE_CHECKING:
    from .context import Context
    from .dispatch import Dispatcher

__all__ = ["Ranking", "parse_ranking", "rank"]

TOOLS = "Read"  # it answers from the prompt; nothing it may run or write
_WHY_MAX = 200
_POLL = 0.5


@dataclass
class Ranking:
    """Claude's order of the proposals (every id, first to start first) and its reasons."""

    order: list[str]
    why: dict[str, str] = field(default_factory=dict)
    unranked: list[str] = field(default_factory=list)  # ids it left out (appended, in order)
    machine: str = ""
    model: str = ""
    cost_usd: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready ranking (``coord plan --brain --json``'s ``brain``)."""
        return {"ranking": self.order, "why": self.why, "unranked": self.unranked,
                "machine": self.machine, "model": self.model, "cost_usd": self.cost_usd,
                "seconds": round(self.seconds, 1)}  # fmt: skip


_RANKING = re.compile(r"^\s*\**RANKING:?\**\s*:?\s*(.*)$", re.I | re.M)
_WORD = re.compile(r"[A-Za-z0-9]+")


def _printable(text: str) -> str:
    text = "".join(c if c.isprintable() else " " for c in text)
    text = " ".join(text.split())
    return text if len(text) <= _WHY_MAX else text[: _WHY_MAX - 1] + "…"


def parse_ranking(text: str, ids: Sequence[str]) -> tuple[list[str], dict[str, str], list[str]]:
    """Read a ``RANKING:`` answer: (every id in its order, the reasons, the ids it left out).

    Only ids of `ids` count, each once; the last RANKING line wins (a model may think aloud
    first).  The ids it did not name follow in the given order.
    """
    known = set(ids)
    order: list[str] = []
    lines = _RANKING.findall(text or "")
    for word in _WORD.findall(lines[-1] if lines else ""):
        if word in known and word not in order:
            order.append(word)
    left = [i for i in ids if i not in order]
    why: dict[str, str] = {}
    for line in (text or "").splitlines():
        m = re.match(r"^\s*[-*]?\s*`?([A-Za-z0-9]+)`?\s*[:\-\u2013]\s*(.+)$", line)
        if m and m.group(1) in known and m.group(1) not in why:
            why[m.group(1)] = _printable(m.group(2))
    return order + left, why, left


async def rank(
    ctx: Context,
    dispatcher: Dispatcher,
    proposals: Sequence[Mapping[str, Any]],
    skipped: Sequence[Mapping[str, Any]] = (),
    *,
    machine: str | None = None,
    model: str | None = None,
    timeout: float = 300.0,
) -> Ranking:
    """Ask Claude, on `machine` (default: the first proposal's), to rank `proposals`."""
    ids = [str(p["id"]) for p in proposals]
    if not ids:
        return Ranking(order=[])
    config = ctx.config
    m = config.machine(machine or str(proposals[0]["machine"]))
    tier, model_id = config.models.resolve(model or config.models.default)
    text = render_briefing("rank", {
        "proposals": [{k: p.get(k) for k in ("id", "repo", "issue", "machine", "model", "labels")}
                      | {"title": _printable(str(p.get("title") or ""))} for p in proposals],
        "skipped": [{"repo": s.get("repo"), "issue": s.get("issue")} for s in skipped],
    })  # fmt: skip
    layout = Layout(m.workdir)
    rid = f"brain-{os.urandom(3).hex()}"
    scratch = layout.run_dir(rid) / RunFile.SCRATCH
    launch = dispatcher.launch_spec(m.name, scratch, model_id, tools=TOOLS)
    env = resolve_env(m.env, ctx.environ, machine=m.name)
    spec = {"id": rid, "machine": m.name, "kind": "rank", "model": model_id,
            "env": {k: ("<secret>" if is_secret_name(k) else v) for k, v in env.items()},
            "created_at": time.time(), "coordlib_version": __version__}  # fmt: skip
    repo = next(iter(config.repos))
    argv, payload = dispatch_command(
        workdir=m.workdir, id=rid, repo_path=m.workdir, worktree=scratch, branch="issue-0",
        base=config.repo(repo).default_branch, socket=m.tmux_socket,
        mode=DispatchMode.SCRATCH, briefing=text, spec=spec, launch=launch, env=env,
    )  # fmt: skip
    t = ctx.machines.get(m.name)
    t0 = time.monotonic()
    try:
        await t.run(argv, input=payload, timeout=60.0, what="dispatch of the ranking run")
    except CommandError as exc:
        raise BrainError(f"could not start the ranking run: {failure_reason(exc.stderr) or exc}",
                         machine=m.name) from exc  # fmt: skip
    try:
        events, ended = await _follow(t, m.workdir, m.tmux_socket, rid, t0 + timeout)
        if not ended:
            await t.run(stop_command(m.workdir, rid), timeout=60.0, what="stop")
            raise BrainError(f"the ranking run gave no answer within {timeout:g} s (the plan "
                             "above stands without it)", machine=m.name)  # fmt: skip
    finally:
        clean, data = clean_command(m.workdir, CleanMode.REMOVE, keep_runs=False, runs=[(rid, "")])
        with contextlib.suppress(CoordError):  # (else `coord clean` removes it: an ended run)
            await t.run(clean, input=data, timeout=60.0, what="clean of the ranking run")
    result = next((e for e in reversed(list(parse_lines(events.splitlines())))
                   if isinstance(e, Result)), None)  # fmt: skip
    if result is None or result.is_error or not result.result:
        said = (result.result or result.subtype) if result is not None else "no result"
        raise BrainError(f"the ranking run ended without a ranking ({_printable(str(said))})",
                         machine=m.name)  # fmt: skip
    order, why, left = parse_ranking(result.result, ids)
    return Ranking(order, why, left, machine=m.name, model=tier, cost_usd=result.total_cost_usd,
                   seconds=time.monotonic() - t0)  # fmt: skip


async def _follow(
    t: Any, workdir: str, socket: str, rid: str, deadline: float
) -> tuple[bytes, bool]:
    """Read run `rid`'s events until it ends (True) or the deadline passes (False)."""
    events = bytearray()
    while True:
        got = await t.run(status_command(workdir, socket, Scope.LIVE,
                                         [Want(rid, len(events), MAX_EVENT_BYTES)]),
                          timeout=30.0, what="status of the ranking run")  # fmt: skip
        run = parse_status(got.stdout).runs.get(rid)
        if run is not None and run.events:
            events += run.events
        if run is None:
            raise BrainError(f"the ranking run {rid} vanished from its machine")
        if run.exit is not None and len(events) >= run.size:
            return bytes(events), True
        if time.monotonic() > deadline:
            return bytes(events), False
        await asyncio.sleep(_POLL)
