"""The dashboard's actions, each one `Coordinator` verb: stop, retry, bounce, merge and
approve.  Their arguments come from a request body, so each is checked here before the verb
sees it; the verb itself checks the state (it refuses what cannot be done now, saying why).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..assignment import check_id
from ..dashboard import Action
from ..errors import UsageError

if TYPE_CHECKING:
    from ..coordinator import Coordinator

__all__ = ["ACTIONS", "perform"]

_PROPOSAL = re.compile(r"p[0-9]{1,6}")
_REASON_MAX = 20_000


def _text(body: Mapping[str, Any], key: str, *, limit: int = 200) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise UsageError(f"the request needs {key!r}: a string of at most {limit} characters")
    return value


def _issue(body: Mapping[str, Any]) -> int:
    value = body.get("issue")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError("the request needs 'issue': a positive whole number")
    return value


async def _stop(c: Coordinator, body: Mapping[str, Any]) -> dict[str, Any]:
    a = await c.stop(check_id(_text(body, "assignment")))
    said = f"{a.id} is {a.status}" if a.is_terminal else f"{a.id} was told to stop"
    return {"assignment": a.id, "status": str(a.status), "message": said}


async def _retry(c: Coordinator, body: Mapping[str, Any]) -> dict[str, Any]:
    prev = check_id(_text(body, "assignment"))
    a = await c.retry(prev)
    return {"assignment": a.id, "retries": prev, "machine": a.machine,
            "message": f"{prev} retried as {a.id} on {a.machine}"}  # fmt: skip


async def _bounce(c: Coordinator, body: Mapping[str, Any]) -> dict[str, Any]:
    review = check_id(_text(body, "assignment"))
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > _REASON_MAX:
        raise UsageError(f"'reason' must be text of at most {_REASON_MAX} characters")
    a = await c.bounce(review, reason=reason)
    said = f"{review}'s findings went to the fix worker {a.id} on {a.machine}"
    return {"assignment": a.id, "review": review, "message": said}


async def _merge(c: Coordinator, body: Mapping[str, Any]) -> dict[str, Any]:
    repo = _text(body, "repo")
    c.config.repo(repo)  # an unknown repo: refused, with the nearest name
    key = f"{repo}#{_issue(body)}"
    report = await c.merge(repo=repo, order=[key])
    landed = [x for b in report.batches for x in b.get("landed", [])]
    said = [f"landed {x['issue']} as {str(x['sha'])[:12]}" for x in landed]
    said += [f"{k} breaks the tests: back to its fix stage"
             for b in report.batches for k in b.get("bounced", [])]  # fmt: skip
    said += [f"{x['issue']} conflicts in {', '.join(x['files'])}"
             for b in report.batches for x in b.get("conflicts", [])]  # fmt: skip
    said += [f"{w['issue']} waits: {w['why']}" for w in report.waiting]
    said += [str(e) for e in report.errors]
    message = "; ".join(said) or f"{key}: nothing landed"
    return {"issue": key, "report": report.to_dict(), "landed": bool(landed), "message": message}


async def _approve(c: Coordinator, body: Mapping[str, Any]) -> dict[str, Any]:
    pid = _text(body, "proposal")
    if not _PROPOSAL.fullmatch(pid):
        raise UsageError(f"proposal {pid!r} is not a proposal id (p1, p2, …)")
    records = await c.approve([pid])
    said = []
    for r in records:
        if r.get("assignment"):
            said.append(f"{pid}: {r['repo']}#{r['issue']} started as {r['assignment']} "
                        f"on {r['machine']}")  # fmt: skip
        else:
            said.append(f"{pid} refused: {r.get('refused') or 'its premises changed'}")
    return {"proposal": pid, "records": records, "message": "; ".join(said) or pid}


ACTIONS: Mapping[str, Callable[[Coordinator, Mapping[str, Any]], Awaitable[dict[str, Any]]]] = {
    Action.STOP: _stop,
    Action.RETRY: _retry,
    Action.BOUNCE: _bounce,
    Action.MERGE: _merge,
    Action.APPROVE: _approve,
}


async def perform(c: Coordinator, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Run `action` with the request's `body` and return what it did (with a "message")."""
    verb = ACTIONS.get(action)
    if verb is None:
        raise UsageError(f"no action {action!r}; the actions are {', '.join(ACTIONS)}")
    return await verb(c, body)
