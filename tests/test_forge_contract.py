"""One contract for every forge: the same tests run against LocalForge and GitHubForge.

Each test gets a `ForgeCase`: a forge serving one repository, the git URL of that
repository's remote, and a clone of it to push branches from.  Merges are checked by
looking at the remote's history with git, not by trusting what the forge says.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coordlib.errors import ForgeError, MergeConflictError, NotFoundError
from coordlib.forge import Forge, LocalForge, MergeMethod
from coordlib.testing import make_git_repo
from coordlib.testing.gitrepo import git

from .conftest import Run
from .forge_case import ForgeCase

NASTY = [
    "plain words",
    "**bold** _it_ `code`\n\n- a list\n- [ ] a task\n\n```sh\necho hi\n```\n",
    '<!-- coord:{"id": "a1"} -->',
    'status <!-- coord:{"id": "a1", "stage": "review"} --> done\n',
    "ünïcödé ✓ 日本語 🚀",
    "$(rm -rf /) `rm -rf /` ; | && > /tmp/x 'single' \"double\" \\back\\slash $HOME ${X}",
    "---\nnot: front matter\n---\n",
]


@pytest.fixture
def local_forge_case(tmp_path: Path) -> ForgeCase:
    """A LocalForge over a fresh repo whose bare origin is the forge's remote."""
    repo = make_git_repo(tmp_path / "api")
    assert repo.origin is not None
    forge = LocalForge("api", tmp_path / ".coord" / "issues" / "api", remote=repo.origin)
    return ForgeCase(forge=forge, remote_url=str(repo.origin), work=repo.path)


@pytest.fixture(params=["local", "github"])
def forge_case(request: pytest.FixtureRequest, arun: Run[Any]) -> Iterator[ForgeCase]:
    """Every forge under test, one at a time."""
    case: ForgeCase = request.getfixturevalue(f"{request.param}_forge_case")
    yield case
    if request.param == "local":  # the github fixture closes its own forge
        arun(case.forge.close())


def remote_git(case: ForgeCase, *args: str) -> str:
    """Run git in the clone after fetching, so `origin/<branch>` is the remote's state."""
    git("fetch", "-q", "origin", cwd=case.work)
    return git(*args, cwd=case.work)


def parents(case: ForgeCase, sha: str) -> list[str]:
    return remote_git(case, "rev-list", "--parents", "-n1", sha).split()[1:]


def settled_mergeable(arun: Run[Any], forge: Forge, number: int) -> bool:
    """Return `mergeable` once the forge has computed it (GitHub may say None at first)."""
    for _ in range(50):
        value = arun(forge.get_pr(number)).mergeable
        if value is not None:
            return bool(value)
        time.sleep(0.1)
    raise AssertionError(f"mergeable of #{number} stayed None")


# --- issues ----------------------------------------------------------------------------


def test_create_and_get_issue(forge_case: ForgeCase, arun: Run[Any]) -> None:
    forge = forge_case.forge
    made = arun(forge.create_issue("Fix login redirect", body="It loops.", labels=["bug"]))
    assert made.number > 0
    assert (made.title, made.body, made.state, set(made.labels)) == (
        "Fix login redirect",
        "It loops.",
        "open",
        {"bug"},
    )
    got = arun(forge.get_issue(made.number))
    assert (got.number, got.title, got.body, got.state) == (
        made.number,
        made.title,
        "It loops.",
        "open",
    )
    assert set(got.labels) == {"bug"}
    assert got.comments == ()
    assert got.created_at and got.updated_at
    assert json.loads(json.dumps(got.to_dict()))["number"] == made.number


def test_issue_numbers_are_distinct_and_increasing(forge_case: ForgeCase, arun: Run[Any]) -> None:
    numbers = [arun(forge_case.forge.create_issue(f"issue {i}")).number for i in range(3)]
    assert numbers == sorted(set(numbers))


def test_list_issues_filters_by_state_and_every_label(
    forge_case: ForgeCase, arun: Run[Any]
) -> None:
    forge = forge_case.forge
    a = arun(forge.create_issue("only a", labels=["a"]))
    ab = arun(forge.create_issue("a and b", labels=["a", "b"]))
    b = arun(forge.create_issue("only b", labels=["b"]))
    done = arun(forge.create_issue("closed a b", labels=["a", "b"]))
    arun(forge.set_state(done.number, "closed"))

    def numbers(**kwargs: Any) -> list[int]:
        return [i.number for i in arun(forge.list_issues(**kwargs))]

    assert numbers() == [a.number, ab.number, b.number]
    assert numbers(labels=["a"]) == [a.number, ab.number]
    assert numbers(labels=["a", "b"]) == [ab.number]
    assert numbers(labels=["a", "nope"]) == []
    assert numbers(state="closed") == [done.number]
    assert numbers(state="all") == [a.number, ab.number, b.number, done.number]
    assert numbers(state="all", labels=["b", "a"]) == [ab.number, done.number]
    listed = arun(forge.list_issues())[0]
    assert listed.comments == ()


def test_pull_requests_are_never_listed_as_issues(forge_case: ForgeCase, arun: Run[Any]) -> None:
    forge = forge_case.forge
    issue = arun(forge.create_issue("real issue"))
    forge_case.push_branch("issue-1-x", {"x.txt": "x\n"})
    pr = arun(forge.open_pr(head="issue-1-x", base="main", title="a PR"))
    assert pr.number != issue.number
    listed = [i.number for i in arun(forge.list_issues(state="all"))]
    assert listed == [issue.number]


@pytest.mark.parametrize("text", NASTY, ids=range(len(NASTY)))
def test_issue_text_round_trips(forge_case: ForgeCase, arun: Run[Any], text: str) -> None:
    forge = forge_case.forge
    title = text.strip().splitlines()[0] or "title"
    made = arun(forge.create_issue(title, body=text, labels=["needs-review"]))
    got = arun(forge.get_issue(made.number))
    assert (got.title, got.body) == (title, text)
    comment = arun(forge.comment(made.number, text))
    assert comment.body == text
    assert arun(forge.get_issue(made.number)).comments[-1].body == text


def test_comments_come_back_in_order(forge_case: ForgeCase, arun: Run[Any]) -> None:
    forge = forge_case.forge
    issue = arun(forge.create_issue("talk"))
    bodies = [f"comment {i}\n\n> quoted\n" for i in range(4)]
    made = [arun(forge.comment(issue.number, body)) for body in bodies]
    assert len({c.id for c in made}) == 4
    got = arun(forge.get_issue(issue.number)).comments
    assert [c.body for c in got] == bodies
    assert [c.id for c in got] == [c.id for c in made]
    assert all(c.created_at for c in got)
    marker = '<!-- coord:{"id": "a1"} -->\nRunning on `gpu-box`.'
    arun(forge.comment(issue.number, marker))
    assert arun(forge.get_issue(issue.number)).comments[-1].body == marker


def test_labels_add_is_idempotent_and_remove_tolerates_absent(
    forge_case: ForgeCase, arun: Run[Any]
) -> None:
    forge = forge_case.forge
    issue = arun(forge.create_issue("labels", labels=["bug"]))
    assert set(arun(forge.add_labels(issue.number, ["ready", "bug"]))) == {"bug", "ready"}
    assert set(arun(forge.add_labels(issue.number, iter(["ready"])))) == {"bug", "ready"}
    assert set(arun(forge.get_issue(issue.number)).labels) == {"bug", "ready"}
    assert set(arun(forge.remove_label(issue.number, "bug"))) == {"ready"}
    assert set(arun(forge.remove_label(issue.number, "never-there"))) == {"ready"}
    assert set(arun(forge.get_issue(issue.number)).labels) == {"ready"}
    assert arun(forge.remove_label(issue.number, "ready")) == ()


def test_close_and_reopen(forge_case: ForgeCase, arun: Run[Any]) -> None:
    forge = forge_case.forge
    issue = arun(forge.create_issue("toggle"))
    assert arun(forge.set_state(issue.number, "closed")).state == "closed"
    assert arun(forge.get_issue(issue.number)).state == "closed"
    assert arun(forge.set_state(issue.number, "open")).state == "open"
    assert arun(forge.get_issue(issue.number)).state == "open"


def test_missing_issue_or_pr_is_not_found(forge_case: ForgeCase, arun: Run[Any]) -> None:
    forge = forge_case.forge
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: forge.get_issue(9999),
        lambda: forge.comment(9999, "hi"),
        lambda: forge.add_labels(9999, ["x"]),
        lambda: forge.remove_label(9999, "x"),
        lambda: forge.set_state(9999, "closed"),
        lambda: forge.get_pr(9999),
        lambda: forge.review(9999, "APPROVE", "ok"),
        lambda: forge.merge(9999),
    ]
    for call in calls:
        with pytest.raises(NotFoundError) as info:
            arun(call())
        assert isinstance(info.value, KeyError)
        assert "9999" in str(info.value)


# --- pull requests ---------------------------------------------------------------------


def test_open_pr_and_get_it_back(forge_case: ForgeCase, arun: Run[Any]) -> None:
    forge = forge_case.forge
    sha = forge_case.push_branch("issue-3-greet", {"greet.txt": "hello\n"})
    body = 'Closes #3\n\n<!-- coord:{"id": "a1"} -->\n$(whoami) `id`'
    pr = arun(forge.open_pr(head="issue-3-greet", base="main", title="Greet", body=body))
    assert (pr.head, pr.base, pr.title, pr.body, pr.state, pr.merged) == (
        "issue-3-greet",
        "main",
        "Greet",
        body,
        "open",
        False,
    )
    got = arun(forge.get_pr(pr.number))
    assert (got.number, got.head, got.base, got.body, got.head_sha) == (
        pr.number,
        "issue-3-greet",
        "main",
        body,
        sha,
    )
    assert got.merge_sha is None
    assert settled_mergeable(arun, forge, pr.number) is True

    again = arun(forge.open_pr(head="issue-3-greet", base="main", title="Greet again"))
    assert again.number == pr.number
    assert [p.number for p in arun(forge.list_prs())] == [pr.number]

    newer = forge_case.push_branch("issue-3-greet", {"greet.txt": "hi\n"}, base="issue-3-greet")
    assert arun(forge.get_pr(pr.number)).head_sha == newer


def test_open_pr_needs_a_pushed_head(forge_case: ForgeCase, arun: Run[Any]) -> None:
    with pytest.raises(ForgeError) as info:
        arun(forge_case.forge.open_pr(head="never-pushed", base="main", title="x"))
    assert not isinstance(info.value, NotFoundError)
    assert info.value.status == 422
    assert "never-pushed" in str(info.value) and "push it first" in str(info.value)
    assert arun(forge_case.forge.list_prs(state="all")) == []


def test_unknown_states_are_refused(forge_case: ForgeCase, arun: Run[Any]) -> None:
    forge = forge_case.forge
    issue = arun(forge.create_issue("state"))
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: forge.list_issues(state="opened"),
        lambda: forge.list_prs(state="merged"),
        lambda: forge.set_state(issue.number, "all"),
    ]
    for call in calls:  # a caller's mistake, not the forge's refusal
        with pytest.raises(ValueError, match="state"):
            arun(call())
    assert arun(forge.get_issue(issue.number)).state == "open"


def test_mergeable_is_computed_for_real(forge_case: ForgeCase, arun: Run[Any]) -> None:
    forge = forge_case.forge
    forge_case.push_branch("issue-1-a", {"README.md": "# from a\n"})
    forge_case.push_branch("issue-2-b", {"README.md": "# from b\n"})
    forge_case.push_branch("issue-3-c", {"other.txt": "c\n"})
    a = arun(forge.open_pr(head="issue-1-a", base="main", title="a"))
    b = arun(forge.open_pr(head="issue-2-b", base="main", title="b"))
    c = arun(forge.open_pr(head="issue-3-c", base="main", title="c"))
    assert settled_mergeable(arun, forge, b.number) is True
    arun(forge.merge(a.number))
    assert settled_mergeable(arun, forge, b.number) is False
    assert settled_mergeable(arun, forge, c.number) is True


def test_reviews_are_listed_in_order(forge_case: ForgeCase, arun: Run[Any]) -> None:
    forge = forge_case.forge
    forge_case.push_branch("issue-5-r", {"r.txt": "r\n"})
    pr = arun(forge.open_pr(head="issue-5-r", base="main", title="review me"))
    assert arun(forge.get_pr(pr.number)).reviews == ()
    first = arun(forge.review(pr.number, "REQUEST_CHANGES", "Please add tests.\n\n- [ ] tests"))
    second = arun(forge.review(pr.number, "APPROVE", 'LGTM <!-- coord:{"id": "a1"} -->'))
    assert (first.state, second.state) == ("CHANGES_REQUESTED", "APPROVED")
    reviews = arun(forge.get_pr(pr.number)).reviews
    assert [(r.id, r.state, r.body) for r in reviews] == [
        (first.id, "CHANGES_REQUESTED", "Please add tests.\n\n- [ ] tests"),
        (second.id, "APPROVED", 'LGTM <!-- coord:{"id": "a1"} -->'),
    ]
    assert arun(forge.list_prs())[0].reviews == ()


@pytest.mark.parametrize("method", ["merge", "squash", "rebase"])
def test_merge_methods_shape_the_remote_history(
    forge_case: ForgeCase, arun: Run[Any], method: MergeMethod
) -> None:
    forge = forge_case.forge
    base_before = forge_case.remote_head()
    forge_case.push_branch("issue-7-two", {"one.txt": "one\n"}, message="first step")
    head = forge_case.push_branch(
        "issue-7-two", {"two.txt": "two\n"}, base="issue-7-two", message="second step"
    )
    pr = arun(forge.open_pr(head="issue-7-two", base="main", title="Two steps"))

    result = arun(forge.merge(pr.number, method=method))

    tip = forge_case.remote_head()
    assert result.merged is True
    assert result.sha == tip
    assert forge_case.remote_file("one.txt") == "one"
    assert forge_case.remote_file("two.txt") == "two"
    new = remote_git(forge_case, "rev-list", "--reverse", f"{base_before}..{tip}").split()
    if method == "merge":
        assert parents(forge_case, tip) == [base_before, head]
    elif method == "squash":
        assert new == [tip]
        assert parents(forge_case, tip) == [base_before]
    else:
        assert len(new) == 2
        assert parents(forge_case, new[0]) == [base_before]
        assert parents(forge_case, new[1]) == [new[0]]
        subjects = remote_git(
            forge_case, "log", "--reverse", "--format=%s", f"{base_before}..{tip}"
        )
        assert subjects.splitlines() == ["first step", "second step"]

    merged = arun(forge.get_pr(pr.number))
    assert (merged.state, merged.merged, merged.merge_sha) == ("merged", True, tip)
    assert [p.number for p in arun(forge.list_prs(state="closed"))] == [pr.number]
    assert arun(forge.list_prs()) == []


def test_merge_message_is_used(forge_case: ForgeCase, arun: Run[Any]) -> None:
    forge = forge_case.forge
    forge_case.push_branch("issue-8-m", {"m.txt": "m\n"})
    pr = arun(forge.open_pr(head="issue-8-m", base="main", title="with message"))
    arun(forge.merge(pr.number, method="squash", message="Squashed: the m file"))
    assert "Squashed: the m file" in remote_git(
        forge_case, "log", "-1", "--format=%B", "origin/main"
    )


def test_conflicting_pr_raises_and_leaves_base_alone(forge_case: ForgeCase, arun: Run[Any]) -> None:
    forge = forge_case.forge
    forge_case.push_branch("issue-1-a", {"README.md": "# from a\n"})
    forge_case.push_branch("issue-2-b", {"README.md": "# from b\n", "extra.txt": "e\n"})
    a = arun(forge.open_pr(head="issue-1-a", base="main", title="a"))
    b = arun(forge.open_pr(head="issue-2-b", base="main", title="b"))
    arun(forge.merge(a.number))
    base = forge_case.remote_head()
    for method in ("merge", "squash", "rebase"):
        with pytest.raises(MergeConflictError) as info:
            arun(forge.merge(b.number, method=method))  # type: ignore[arg-type]
        assert "README.md" in info.value.paths
        assert "extra.txt" not in info.value.paths
        assert forge_case.remote_head() == base
    still = arun(forge.get_pr(b.number))
    assert (still.state, still.merged) == ("open", False)
    assert forge_case.remote_file("README.md") == "# from a"


def test_merging_closes_the_issues_it_names(forge_case: ForgeCase, arun: Run[Any]) -> None:
    forge = forge_case.forge
    fixed = arun(forge.create_issue("named in the PR body"))
    in_commit = arun(forge.create_issue("named in a commit message"))
    other = arun(forge.create_issue("unrelated"))
    branch = f"issue-{fixed.number}-fix"
    forge_case.push_branch(
        branch, {"fix.txt": "fixed\n"}, message=f"Fix both\n\nFixes #{in_commit.number}"
    )
    body = f"Does the thing.\n\nCloses #{fixed.number}\n"
    pr = arun(forge.open_pr(head=branch, base="main", title="Fix it", body=body))
    assert arun(forge.get_issue(fixed.number)).state == "open"
    arun(forge.merge(pr.number, method="squash"))
    assert arun(forge.get_issue(fixed.number)).state == "closed"
    assert arun(forge.get_issue(in_commit.number)).state == "closed"
    assert arun(forge.get_issue(other.number)).state == "open"


def test_merging_into_another_branch_closes_nothing(forge_case: ForgeCase, arun: Run[Any]) -> None:
    forge = forge_case.forge
    issue = arun(forge.create_issue("stays open"))
    forge_case.push_branch("release", {"release.txt": "r\n"})
    forge_case.push_branch("issue-9-r", {"r.txt": "r\n"}, base="release")
    body = f"Closes #{issue.number}"
    pr = arun(forge.open_pr(head="issue-9-r", base="release", title="into release", body=body))
    arun(forge.merge(pr.number))
    assert forge_case.remote_file("r.txt", "release") == "r"
    assert arun(forge.get_issue(issue.number)).state == "open"


def test_list_prs_by_state_and_head(forge_case: ForgeCase, arun: Run[Any]) -> None:
    forge = forge_case.forge
    forge_case.push_branch("issue-1-a", {"a.txt": "a\n"})
    forge_case.push_branch("issue-2-b", {"b.txt": "b\n"})
    a = arun(forge.open_pr(head="issue-1-a", base="main", title="a"))
    b = arun(forge.open_pr(head="issue-2-b", base="main", title="b"))
    arun(forge.merge(a.number))

    def numbers(**kwargs: Any) -> list[int]:
        return sorted(p.number for p in arun(forge.list_prs(**kwargs)))

    assert numbers() == [b.number]
    assert numbers(state="closed") == [a.number]
    assert numbers(state="all") == sorted([a.number, b.number])
    assert numbers(state="all", head="issue-1-a") == [a.number]
    assert numbers(head="issue-1-a") == []
    assert numbers(head="issue-2-b") == [b.number]
    assert numbers(state="all", head="nothing") == []
    listed = arun(forge.list_prs(head="issue-2-b"))[0]
    assert (listed.head, listed.base, listed.title, listed.state) == (
        "issue-2-b",
        "main",
        "b",
        "open",
    )


# --- branches --------------------------------------------------------------------------


def test_branches_by_prefix(forge_case: ForgeCase, arun: Run[Any]) -> None:
    forge = forge_case.forge
    one = forge_case.push_branch("issue-1-a", {"a.txt": "a\n"})
    twelve = forge_case.push_branch("issue-12-b", {"b.txt": "b\n"})
    forge_case.push_branch("feature-x", {"x.txt": "x\n"})

    everything = arun(forge.branches())
    names = [b.name for b in everything]
    assert names == sorted(names)
    assert {"main", "issue-1-a", "issue-12-b", "feature-x"} <= set(names)
    assert {b.name: b.sha for b in everything}["main"] == forge_case.remote_head()

    assert [(b.name, b.sha) for b in arun(forge.branches("issue-1-"))] == [("issue-1-a", one)]
    assert [b.name for b in arun(forge.branches("issue-"))] == ["issue-1-a", "issue-12-b"]
    assert [(b.name, b.sha) for b in arun(forge.issue_branches(12))] == [("issue-12-b", twelve)]
    assert arun(forge.issue_branches(2)) == []
    assert arun(forge.branches("nope-")) == []
