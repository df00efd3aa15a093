"""What must still hold when a ready PR is landed, checked at that moment.

A pipeline records the facts its stages established (the head that was tested, the head a
review approved); by the time the merge queue reaches it, a person may have closed the
issue, pushed to the branch, or the approval may cover an older head.  `stale` compares the
record with the forge's word now and says which fact changed and where the issue goes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..playbook import NEEDS_HUMAN

if TYPE_CHECKING:
    from ..forge.base import PullRequest
    from ..pipeline.state import Pipeline
    from ..playbook import Playbook

__all__ = ["stale"]


def stale(
    p: Pipeline, pr: PullRequest, issue_state: str, book: Playbook, *, reviews: bool = True
) -> tuple[str, str] | None:
    """Return (where p goes, which fact changed) when p may not be landed now, else None.

    A closed issue, or a closed PR, goes to a person.  A PR pushed to since its review, or a
    head its tests did not see, goes back to the test stage.  A head no approval covers goes
    back to the review stage (only when the playbook has one and `reviews` are on).
    """
    test = next((s.name for s in book.stages.values() if s.run == "test"), NEEDS_HUMAN)
    review = next((s.name for s in book.stages.values() if s.verdict), None) if reviews else None
    head = pr.head_sha or p.head_sha or ""
    if issue_state != "open":
        return NEEDS_HUMAN, (f"issue #{p.issue} is {issue_state}: the change of a closed issue "
                             f"is never merged (reopen it, then `coord bounce`)")  # fmt: skip
    if pr.state != "open":
        return NEEDS_HUMAN, f"PR #{p.pr} is {pr.state}"
    if p.head_sha and pr.head_sha and pr.head_sha != p.head_sha:
        return test, (f"PR #{p.pr} changed after its review: its head is {pr.head_sha[:12]}, "
                      f"not {p.head_sha[:12]}; tested again")  # fmt: skip
    if p.tested_sha and head and p.tested_sha != head:
        return test, (f"branch {p.branch} moved since its test: tested {p.tested_sha[:12]}, "
                      f"its head is {head[:12]}; tested again")  # fmt: skip
    if review is None:
        return None
    approved = [v for v in p.verdicts if v.get("stage") == review and v.get("outcome") == "approve"]
    if not approved:
        return review, f"no approval of PR #{p.pr} is on record; reviewed again"
    sha = str(approved[-1].get("sha") or "")
    if head and sha and sha != head:
        return review, (f"the approval of PR #{p.pr} was of {sha[:12]}, older than its head "
                        f"{head[:12]}; reviewed again")  # fmt: skip
    return None
