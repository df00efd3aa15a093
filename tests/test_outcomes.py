"""What a run left behind, and what must still hold when a change is landed: the pure parts.

The machine's side (the launcher's outcome check, its rescue ref) runs for real in
test_outcome_checks.py; these pin down how its record is read and judged, and how the merge
queue decides a ready PR's facts no longer hold.
"""

from __future__ import annotations

from typing import Any

import pytest

from coordlib.forge.base import PullRequest
from coordlib.merge.checks import stale
from coordlib.outcomes import FailureClass, failure_text, judge, read_outcome, summary
from coordlib.pipeline.state import READY, Pipeline
from coordlib.playbook import load_playbook
from coordlib.scope import declared_files, outside

A, B, C = "a" * 40, "b" * 40, "c" * 40


def facts(**kw: Any) -> dict[str, Any]:
    raw = {"start": A, "head": B, "base": A, "commits": 1, "ahead": 1, "dirty": 0,
           "untracked": 0, "files": ["x.py"], "files_total": 1, "uncommitted": [],
           "rescue": None, "conflicts": False}  # fmt: skip
    raw.update(kw)
    out = read_outcome(raw)
    assert out is not None
    return out


# -- reading the machine's record --------------------------------------------------------------


def test_a_record_is_read_with_every_value_checked() -> None:
    got = read_outcome({
        "start": A, "head": B, "base": "not-a-sha", "commits": -1, "ahead": True,
        "dirty": 2, "untracked": "2", "files": ["ok.py", 3, "", "x" * 5000],
        "files_total": 4, "uncommitted": ["u.txt"], "rescue": "refs/heads/main",
        "conflicts": "no", "extra": "ignored",
    })  # fmt: skip
    assert got == {
        "start": A, "head": B, "base": None, "commits": None, "ahead": None, "dirty": 2,
        "untracked": None, "files": ["ok.py"], "files_total": 4, "uncommitted": ["u.txt"],
        "rescue": None, "conflicts": None,
    }  # fmt: skip


@pytest.mark.parametrize("raw", [None, "text", [], {"head": "HEAD"}, {"commits": 1}])
def test_no_head_no_outcome(raw: object) -> None:
    assert read_outcome(raw) is None


def test_a_rescue_ref_is_only_ever_coords_own() -> None:
    assert facts(rescue="refs/coord/rescue/api-1-abcd")["rescue"] == "refs/coord/rescue/api-1-abcd"
    for bad in ("refs/coord/rescue/../heads/main", "refs/coord/rescue/-x", "HEAD"):
        assert facts(rescue=bad)["rescue"] is None


# -- judging it ---------------------------------------------------------------------------------


def test_a_commit_and_a_clean_worktree_is_done() -> None:
    assert judge(facts()) is None


def test_no_commit_is_done_empty() -> None:
    assert judge(facts(commits=0, ahead=0)) == FailureClass.DONE_EMPTY
    # a fix that added nothing to a branch with earlier commits is no less empty
    assert judge(facts(commits=0, ahead=3)) == FailureClass.DONE_EMPTY
    # with no start known, the branch itself must be ahead of its base
    assert judge(facts(start=None, commits=None, ahead=0)) == FailureClass.DONE_EMPTY
    assert judge(facts(start=None, commits=None, ahead=2)) is None


def test_changes_left_uncommitted_come_first() -> None:
    assert judge(facts(dirty=2, untracked=1)) == FailureClass.UNCOMMITTED
    assert judge(facts(commits=0, dirty=1)) == FailureClass.UNCOMMITTED


def test_a_continued_session_counts_from_its_first_run() -> None:
    # It committed before its rate limit; the continuation added nothing and is done.
    assert judge({**facts(start=B, head=B, commits=0), "since": A}) is None
    assert judge({**facts(start=B, head=B, commits=0), "since": B}) == FailureClass.DONE_EMPTY


def test_what_a_failure_says() -> None:
    text = failure_text(FailureClass.UNCOMMITTED,
                        facts(dirty=7, uncommitted=[f"f{i}.py" for i in range(7)],
                              rescue="refs/coord/rescue/api-1-abcd"),
                        branch="issue-1", worktree="/w/api-1", machine="m1")  # fmt: skip
    assert (
        "7 uncommitted or untracked file(s) (f0.py, f1.py, f2.py, f3.py, f4.py and 2 more)" in text
    )
    assert "kept in /w/api-1; saved at refs/coord/rescue/api-1-abcd on m1" in text
    empty = failure_text(FailureClass.DONE_EMPTY, facts(commits=0, ahead=0), branch="issue-1",
                         worktree="/w", machine="m1", base="main")  # fmt: skip
    assert empty == ("it reported success but made no commit on issue-1 (0 commit(s) beyond "
                     "main); nothing was done")  # fmt: skip


def test_the_summary_names_stray_files_and_conflicts() -> None:
    got = summary({**facts(commits=2, ahead=2, files_total=3, conflicts=True),
                   "outside": ["setup.py"]}, branch="issue-1", base="main")  # fmt: skip
    assert got == (
        "2 new commits on issue-1; 2 ahead of main; 3 file(s) changed; outside the issue's "
        "declared files: setup.py; no longer merges cleanly onto main"
    )


# -- the files an issue declares ----------------------------------------------------------------


def test_declared_files_from_a_section_or_a_line() -> None:
    body = (
        "Do it.\n\n## Files\n\n- `src/app.py`\n- docs/\n* tests/*.py (new)\n\n## Notes\n- no.py\n"
    )
    assert declared_files(body) == ["src/app.py", "docs/", "tests/*.py"]
    assert declared_files("Files: a.py, b/c.txt") == ["a.py", "b/c.txt"]
    assert declared_files("**Files:** `a.py`") == ["a.py"]
    assert declared_files("Just mentions `src/app.py`.") is None
    assert declared_files("## Files\n- ../etc/passwd\n- /abs/path\n- http://x.y/z") is None


def test_outside_the_declared_files() -> None:
    declared = ["src/app.py", "docs/", "tests/*.py"]
    changed = ["src/app.py", "docs/a/b.md", "tests/test_x.py", "setup.py", "src/other.py"]
    assert outside(changed, declared) == ["setup.py", "src/other.py"]
    assert outside(changed, None) == []  # nothing declared: nothing flagged


# -- what must still hold when a ready PR lands -------------------------------------------------


def ready(**kw: Any) -> Pipeline:
    approved = [{"stage": "review", "outcome": "approve", "sha": B}]
    p = Pipeline(repo="api", issue=7, stage=READY, branch="issue-7", pr=3, head_sha=B,
                 tested_sha=B, verdicts=approved)  # fmt: skip
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def pr(**kw: Any) -> PullRequest:
    return PullRequest(**{"number": 3, "title": "t", "head": "issue-7", "base": "main",
                          "head_sha": B, **kw})  # fmt: skip


BOOK = load_playbook()


def test_a_ready_pr_whose_facts_hold_is_landed() -> None:
    assert stale(ready(), pr(), "open", BOOK) is None


def test_a_closed_issue_is_never_merged() -> None:
    got = stale(ready(), pr(), "closed", BOOK)
    assert got is not None and got[0] == "needs-human" and "issue #7 is closed" in got[1]


def test_a_push_after_review_goes_back_to_test() -> None:
    got = stale(ready(), pr(head_sha=C), "open", BOOK)
    assert got == ("test", f"PR #3 changed after its review: its head is {C[:12]}, not "
                           f"{B[:12]}; tested again")  # fmt: skip


def test_a_head_the_tests_did_not_see_goes_back_to_test() -> None:
    got = stale(ready(tested_sha=A), pr(), "open", BOOK)
    assert got is not None and got[0] == "test"
    assert f"moved since its test: tested {A[:12]}, its head is {B[:12]}" in got[1]


def test_an_approval_older_than_the_head_goes_back_to_review() -> None:
    old = [{"stage": "review", "outcome": "approve", "sha": A},
           {"stage": "review", "outcome": "request-changes", "sha": B}]  # fmt: skip
    got = stale(ready(verdicts=old), pr(), "open", BOOK)
    assert got is not None and got[0] == "review"
    assert f"approval of PR #3 was of {A[:12]}, older than its head {B[:12]}" in got[1]
    none = stale(ready(verdicts=[]), pr(), "open", BOOK)
    assert none == ("review", "no approval of PR #3 is on record; reviewed again")
    # reviews off: no approval is asked for
    assert stale(ready(verdicts=[]), pr(), "open", BOOK, reviews=False) is None
