"""Runs to start again: rate-limited ones once their wait is over (or held), and, with
``concurrency.auto_reassign``, runs a machine failed, on another machine.

A run stopped by an API rate limit waits on the board as ``queued`` until ``not_before``;
`dispatch_due` (every `coord resume`, `coord run` pass and `wait`) continues its session
then, unless a person must decide: its issue was closed meanwhile, or the session has been
stopped by rate limits ``concurrency.max_retries`` times in a row.  Either way it is held,
saying why, and only `coord continue ID` starts it again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from .assignment import Assignment, Status
from .errors import ClaimError, CoordError

if TYPE_CHECKING:
    from .context import Context

__all__ = ["MACHINE_FAULTS", "dispatch_due", "issue_closed", "reassign", "retried_enough"]


async def dispatch_due(
    ctx: Context,
    continue_session: Callable[[Assignment, str], Awaitable[Assignment]],
    guidance: str,
    *,
    now: float | None = None,
) -> list[Assignment]:
    """Continue every queued run whose wait is over (see the module); return those started."""
    now = time.time() if now is None else now
    started: list[Assignment] = []
    for a in ctx.board.assignments():
        if a.status != Status.QUEUED or (a.not_before or 0.0) > now:
            continue
        if a.held:
            continue  # restored from the trail, or held below: a person continues it
        if await issue_closed(ctx, a) or retried_enough(ctx, a):
            continue
        prompt = guidance
        if not a.session_id:  # it never got going: no session to resume
            prompt = f"Work on issue #{a.issue} of {a.repo}: {a.title}"
        try:
            started.append(await continue_session(a, prompt))
        except ClaimError:
            continue  # another process continued it first
    return started


def retried_enough(ctx: Context, a: Assignment) -> bool:
    """Whether a's session has been stopped by rate limits ``concurrency.max_retries`` times
    in a row (then a is held, saying so, rather than continued again)."""
    limit = ctx.config.concurrency.max_retries
    times, cur = 1, a
    while cur.continues and times <= limit:
        try:
            cur = ctx.board.assignment(cur.continues)
        except CoordError:
            break
        if cur.failure_class != "rate_limited":
            break
        times += 1
    if times <= limit:
        return False
    held = (f"stopped by a rate limit {times} times in a row (concurrency.max_retries "
            f"{limit}): not continued again by itself (`coord continue {a.id}`)")  # fmt: skip
    ctx.board.settle({a.id: (a.events_offset, {"held": held})})
    return True


async def issue_closed(ctx: Context, a: Assignment) -> bool:
    """Whether a's issue was closed while a waited out its limit (then a is held, so
    nothing continues it by itself: `resume` never restarts a closed issue's work)."""
    try:
        state = await ctx.forges.get(a.repo).issue_state(a.issue)
    except CoordError:
        return False  # the forge away is no reason to hold the work back
    if state == "open":
        return False
    held = (f"issue #{a.issue} is {state}: not continued (reopen it, then "
            f"`coord continue {a.id}`)")  # fmt: skip
    ctx.board.settle({a.id: (a.events_offset, {"held": held})})
    return True


# The run failed because of where it ran, not what it did: another machine may well succeed.
MACHINE_FAULTS = frozenset(
    {"lost", "claude_not_found", "not_executable", "worktree_gone", "auth_error"}
)


async def reassign(
    ctx: Context,
    changed: Sequence[tuple[str, str, str]],
    retry: Callable[[str, str], Awaitable[Assignment]],
) -> list[Assignment]:
    """With ``concurrency.auto_reassign``: start again, on another machine that can take it,
    each run that just ended with a machine's fault (`MACHINE_FAULTS`), at most
    ``concurrency.max_retries`` attempts in all; return the new attempts.  A run with no
    other machine to go to is left to a person (`coord retry`)."""
    from .contacts import Contacts
    from .planner import retry_machine

    conf = ctx.config.concurrency
    if not conf.auto_reassign:
        return []
    started: list[Assignment] = []
    contacts = Contacts(ctx.board.path.with_name("contacts.json"))
    for aid, _, new in changed:
        if new not in (Status.FAILED, Status.LOST):
            continue
        try:
            a = ctx.board.assignment(aid)
        except CoordError:
            continue
        if a.failure_class not in MACHINE_FAULTS or a.retried_by or a.attempt > conf.max_retries:
            continue
        where = retry_machine(ctx.config, a, (), ctx.board.live(),
                              lambda n: contacts.stale(n, conf.stale_threshold))  # fmt: skip
        if where == a.machine:
            ctx.notify(f"{a.id} failed on {a.machine} ({a.failure_class}); no other machine "
                       f"can take it: `coord retry {a.id}` when one can")  # fmt: skip
            continue
        try:
            started.append(await retry(a.id, where))
        except CoordError as exc:
            ctx.notify(f"{a.id}: could not move it to {where}: {exc}")
    return started
