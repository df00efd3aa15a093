"""GitHub-specific behaviour of GitHubForge, against the schema-checked fake GitHub.

The shared forge behaviour is in tests/test_forge_contract.py; here: where the token comes
from and where it never goes, rate limits waited out, retries capped, errors mapped, a
GitHub Enterprise base URL, and how many requests each operation costs.
"""

from __future__ import annotations

import asyncio
import logging
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from coordlib.errors import ForgeAuthError, ForgeError, MergeConflictError, NotFoundError
from coordlib.forge.github import GitHubForge, resolve_token
from tests.fakegithub.server import FakeGitHub
from tests.forge_case import ForgeCase


@pytest.fixture
def case(github_forge_case: ForgeCase) -> ForgeCase:
    return github_forge_case


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()


def run(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    return loop.run_until_complete(coro)


def forge_for(server: FakeGitHub, case: ForgeCase, **kwargs: Any) -> GitHubForge:
    forge = case.forge
    assert isinstance(forge, GitHubForge)
    options: dict[str, Any] = {"token": server.token, "write_interval": 0, "retry_backoff": 0}
    made = GitHubForge(forge.repo, forge.slug, api_url=server.api_url, **{**options, **kwargs})
    case.cleanup.append(lambda: asyncio.run(made.close()))
    return made


def fake_gh(tmp_path: Path, script: str) -> dict[str, str]:
    """Put a `gh` stand-in on a PATH of its own; return an environment using it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gh = bin_dir / "gh"
    gh.write_text(f"#!/bin/sh\n{script}\n")
    gh.chmod(gh.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}


# --- the token ---------------------------------------------------------------------------


def test_token_comes_from_github_token_then_gh_token_then_gh(tmp_path: Path) -> None:
    env = fake_gh(tmp_path, 'echo "$@" > "$0.args"; echo gho_from_gh')
    both = {**env, "GITHUB_TOKEN": "ghp_first", "GH_TOKEN": "ghp_second"}
    assert resolve_token(both) == "ghp_first"
    assert resolve_token({**env, "GH_TOKEN": "ghp_second", "GITHUB_TOKEN": " "}) == "ghp_second"
    assert resolve_token(env) == "gho_from_gh"
    assert (tmp_path / "bin" / "gh.args").read_text().split() == [
        "auth", "token", "--hostname", "github.com",
    ]  # fmt: skip
    resolve_token(env, api_url="https://ghe.example.com/api/v3")
    assert "ghe.example.com" in (tmp_path / "bin" / "gh.args").read_text()


def test_no_token_says_the_three_ways_to_give_one(tmp_path: Path) -> None:
    env = fake_gh(tmp_path, "echo 'not logged in' >&2; exit 1")
    assert resolve_token(env) is None
    assert resolve_token({"PATH": str(tmp_path / "empty")}) is None
    with pytest.raises(ForgeAuthError) as info:
        GitHubForge("api", "acme/api", environ=env)
    text = str(info.value)
    assert "acme/api" in text
    assert all(way in text for way in ("GITHUB_TOKEN", "GH_TOKEN", "gh auth login"))
    assert isinstance(info.value, PermissionError)


def test_the_token_never_shows_in_errors_repr_or_logs(
    fake_github: FakeGitHub, case: ForgeCase, loop: Any, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "ghp_" + "S3cr3tT0k3n" * 3
    fake_github.add_token(secret, "coord-bot")
    caplog.set_level(logging.DEBUG)
    good = forge_for(fake_github, case, token=None, environ={"GITHUB_TOKEN": secret})
    run(loop, good.create_issue("visible"))
    run(loop, good.get_issue(1))
    bad = forge_for(fake_github, case, token=secret[::-1])
    with pytest.raises(ForgeAuthError) as info:
        run(loop, bad.get_issue(1))
    assert info.value.status == 401
    assert "Bad credentials" in str(info.value) and "gh auth login" in str(info.value)
    texts = [str(info.value), repr(info.value.__cause__), repr(good), repr(bad), caplog.text]
    assert "ghp_S3cr3t" not in " ".join(texts)
    assert secret[::-1] not in " ".join(texts)
    assert any("GET" in r.getMessage() for r in caplog.records)  # PyGithub did log requests


# --- rate limits and retries ----------------------------------------------------------


def test_primary_rate_limit_is_waited_out(
    fake_github: FakeGitHub, case: ForgeCase, loop: Any
) -> None:
    messages: list[str] = []
    forge = forge_for(fake_github, case, on_wait=messages.append)
    made = run(loop, forge.create_issue("survives the limit"))
    fake_github.rate_limit_next(1, kind="primary", retry_after=1)
    started = time.monotonic()
    assert run(loop, forge.get_issue(made.number)).title == "survives the limit"
    assert time.monotonic() - started >= 0.9
    assert len(messages) == 1
    assert re.fullmatch(
        r"GitHub rate limit: waiting \d+ s until \d\d:\d\d:\d\d \(get issue #1 on acme/\w+\)",
        messages[0],
    )


def test_secondary_rate_limits_are_waited_out_each_time(
    fake_github: FakeGitHub, case: ForgeCase, loop: Any
) -> None:
    messages: list[str] = []
    forge = forge_for(fake_github, case, on_wait=messages.append)
    fake_github.rate_limit_next(1, kind="secondary", retry_after=1, status=403)
    fake_github.rate_limit_next(1, kind="secondary", retry_after=1, status=429)
    made = run(loop, forge.create_issue("after two limits"))
    assert made.title == "after two limits"
    assert [m.split(":")[0] for m in messages] == ["GitHub secondary rate limit"] * 2
    assert "waiting 1 s" in messages[0]
    assert len(run(loop, forge.list_issues())) == 1  # created once, not three times


def test_a_wait_beyond_the_cap_raises_and_without_on_wait_logs(
    fake_github: FakeGitHub, case: ForgeCase, loop: Any, caplog: pytest.LogCaptureFixture
) -> None:
    capped = forge_for(fake_github, case, max_rate_limit_wait=5)
    fake_github.rate_limit_next(1, kind="secondary", retry_after=60)
    started = time.monotonic()
    with pytest.raises(ForgeError) as info:
        run(loop, capped.list_issues())
    assert time.monotonic() - started < 2
    assert info.value.status == 403
    assert "max_rate_limit_wait=5 s" in str(info.value)
    quiet = forge_for(fake_github, case)
    fake_github.rate_limit_next(1, kind="primary", retry_after=0)
    with caplog.at_level(logging.WARNING, logger="coordlib.forge.github"):
        assert run(loop, quiet.list_issues()) == []
    assert "GitHub rate limit: waiting" in caplog.text


def test_server_errors_are_retried_a_few_times_only(
    fake_github: FakeGitHub, case: ForgeCase, loop: Any
) -> None:
    forge = forge_for(fake_github, case, max_retries=2)
    made = run(loop, forge.create_issue("flaky"))
    fake_github.fail_next(2, status=502)
    before = fake_github.count()
    assert run(loop, forge.get_issue(made.number)).title == "flaky"
    assert fake_github.count(before) == 3
    fake_github.fail_next(3, status=503)
    before = fake_github.count()
    with pytest.raises(ForgeError) as info:
        run(loop, forge.get_issue(made.number))
    assert fake_github.count(before) == 3
    assert info.value.status == 503
    assert "after 2 retries" in str(info.value)


def test_a_post_is_not_retried(fake_github: FakeGitHub, case: ForgeCase, loop: Any) -> None:
    forge = forge_for(fake_github, case, max_retries=3)
    fake_github.fail_next(1, status=502)
    before = fake_github.count()
    with pytest.raises(ForgeError) as info:
        run(loop, forge.create_issue("maybe made, maybe not"))
    assert (info.value.status, fake_github.count(before)) == (502, 1)


def test_an_unreachable_server_is_a_forge_error(loop: Any) -> None:
    forge = GitHubForge(
        "api", "acme/api", api_url="http://127.0.0.1:9/api/v3", token="t", retry_backoff=0
    )
    with pytest.raises(ForgeError) as info:
        run(loop, forge.list_issues())
    assert "http://127.0.0.1:9/api/v3" in str(info.value)
    run(loop, forge.close())


# --- errors -------------------------------------------------------------------------------


def test_errors_say_what_where_and_what_to_do(
    fake_github: FakeGitHub, case: ForgeCase, loop: Any
) -> None:
    forge = forge_for(fake_github, case)
    with pytest.raises(NotFoundError) as missing:
        run(loop, forge.get_pr(41))
    assert str(missing.value).startswith(f"GitHub {forge.slug}: cannot get pull request #41")
    fake_github.fail_next(1, status=403)
    with pytest.raises(ForgeAuthError) as denied:
        run(loop, forge.list_issues())
    assert "Resource not accessible" in str(denied.value)
    assert "needs read and write access" in str(denied.value)
    with pytest.raises(ForgeError) as refused:
        run(loop, forge.open_pr(head="main", base="main", title="nothing"))
    assert refused.value.status == 422
    assert "No commits between main and main" in str(refused.value)
    with pytest.raises(ValueError, match="state must be one of"):
        run(loop, forge.list_issues(state="merged"))


def test_merge_conflicts_map_to_merge_conflict_error(
    fake_github: FakeGitHub, case: ForgeCase, loop: Any
) -> None:
    forge = forge_for(fake_github, case)
    case.push_branch("issue-1-a", {"README.md": "# a\n"})
    case.push_branch("issue-2-b", {"README.md": "# b\n"})
    a = run(loop, forge.open_pr(head="issue-1-a", base="main", title="a"))
    b = run(loop, forge.open_pr(head="issue-2-b", base="main", title="b"))
    fake_github.fail_next(1, status=409, message="Head branch was modified. Review and try again.")
    with pytest.raises(MergeConflictError) as moved:
        run(loop, forge.merge(a.number))
    assert "head branch moved" in str(moved.value)
    run(loop, forge.merge(a.number))
    with pytest.raises(MergeConflictError) as conflict:
        run(loop, forge.merge(b.number, method="squash"))
    assert conflict.value.paths == ("README.md",)
    assert "merge or rebase main into issue-2-b" in str(conflict.value)
    with pytest.raises(ForgeError, match="merged already") as again:
        run(loop, forge.merge(a.number))
    assert not isinstance(again.value, MergeConflictError)


def test_self_approval_refused_by_github_is_explained(
    fake_github: FakeGitHub, case: ForgeCase, loop: Any
) -> None:
    fake_github.forbid_self_review = True
    case.push_branch("issue-3-own", {"own.txt": "own\n"})
    pr = run(loop, case.forge.open_pr(head="issue-3-own", base="main", title="mine"))
    with pytest.raises(ForgeError, match="another account's token"):
        run(loop, case.forge.review(pr.number, "APPROVE", "lgtm"))
    assert run(loop, case.forge.review(pr.number, "COMMENT", "a note")).state == "COMMENTED"


# --- the enterprise base URL and request economy ----------------------------------------


def test_enterprise_base_url_with_prefix_and_trailing_slash(
    fake_github: FakeGitHub, case: ForgeCase, loop: Any
) -> None:
    forge = forge_for(fake_github, case)
    slashed = GitHubForge(forge.repo, forge.slug, api_url=fake_github.api_url + "/", token="x")
    assert slashed.api_url == fake_github.api_url
    assert "api_url='http://127.0.0.1" in repr(slashed)
    run(loop, slashed.close())
    for n in range(101):
        fake_github.add_issue(forge.slug, f"issue {n}")
    before = fake_github.count()
    assert [i.number for i in run(loop, forge.list_issues())] == list(range(1, 102))
    assert fake_github.count(before) == 2  # 100 a page, the next page from the Link header
    assert {e.path.split("?")[0] for e in fake_github.exchanges[-2:]} == {
        f"/repos/{forge.slug}/issues"
    }


def test_get_pr_gathers_check_runs_and_commit_statuses(
    fake_github: FakeGitHub, case: ForgeCase, loop: Any
) -> None:
    sha = case.push_branch("issue-6-ci", {"ci.txt": "ci\n"})
    pr = run(loop, case.forge.open_pr(head="issue-6-ci", base="main", title="ci"))
    base = f"{fake_github.api_url}/repos/{case.forge.slug}"  # type: ignore[attr-defined]
    auth = {"Authorization": f"Bearer {fake_github.token}"}
    for body in (
        {"name": "tests", "head_sha": sha, "status": "in_progress"},
        {"name": "lint", "head_sha": sha, "status": "completed", "conclusion": "success"},
    ):
        assert requests.post(f"{base}/check-runs", json=body, headers=auth, timeout=10).ok
    for state in ("pending", "failure"):
        body = {"state": state, "context": "ci/build"}
        assert requests.post(f"{base}/statuses/{sha}", json=body, headers=auth, timeout=10).ok
    checks = {
        (c.name, c.status, c.conclusion) for c in run(loop, case.forge.get_pr(pr.number)).checks
    }
    assert checks == {
        ("tests", "in_progress", None),
        ("lint", "completed", "success"),
        ("ci/build", "completed", "failure"),
    }


def test_each_operation_costs_few_requests(
    fake_github: FakeGitHub, case: ForgeCase, loop: Any
) -> None:
    forge = case.forge
    costs: dict[str, int] = {}

    def cost(name: str, coro: Any) -> Any:
        before = fake_github.count()
        result = run(loop, coro)
        costs[name] = fake_github.count(before)
        return result

    issue = cost("create_issue", forge.create_issue("count me", labels=["ready"]))
    cost("get_issue (no comments)", forge.get_issue(issue.number))
    cost("comment", forge.comment(issue.number, "hi"))
    cost("get_issue (with comments)", forge.get_issue(issue.number))
    cost("list_issues", forge.list_issues(labels=["ready"]))
    cost("add_labels", forge.add_labels(issue.number, ["bug"]))
    cost("remove_label", forge.remove_label(issue.number, "bug"))
    cost("remove_label (absent)", forge.remove_label(issue.number, "bug"))
    cost("set_state", forge.set_state(issue.number, "closed"))
    case.push_branch("issue-1-count", {"c.txt": "c\n"})
    pr = cost("open_pr", forge.open_pr(head="issue-1-count", base="main", title="c"))
    cost("open_pr (already open)", forge.open_pr(head="issue-1-count", base="main", title="c"))
    cost("list_prs", forge.list_prs(head="issue-1-count"))
    cost("review", forge.review(pr.number, "COMMENT", "note"))
    cost("get_pr", forge.get_pr(pr.number))
    cost("branches", forge.branches("issue-1-"))
    cost("merge", forge.merge(pr.number, method="squash"))
    assert costs == {
        "create_issue": 1,
        "get_issue (no comments)": 1,
        "comment": 1,
        "get_issue (with comments)": 2,
        "list_issues": 1,
        "add_labels": 1,
        "remove_label": 1,
        "remove_label (absent)": 2,
        "set_state": 1,
        "open_pr": 1,
        "open_pr (already open)": 2,
        "list_prs": 1,
        "review": 1,
        "get_pr": 4,
        "branches": 1,
        "merge": 1,
    }


def test_calls_on_one_forge_run_concurrently_without_blocking_the_loop(
    fake_github: FakeGitHub, case: ForgeCase, loop: Any
) -> None:
    forge = case.forge
    # Enough requests in flight that a loop left free ticks many times meanwhile, even on a
    # loaded machine (with 6, a fast answer left room for only 2 or 3 ticks: a flaky test).
    numbers = [run(loop, forge.create_issue(f"n{i}")).number for i in range(6)] * 4
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    async def both() -> list[Any]:
        task = asyncio.ensure_future(ticker())
        try:
            return await asyncio.gather(*(forge.get_issue(n) for n in numbers))
        finally:
            task.cancel()

    got = run(loop, both())
    assert [i.number for i in got] == numbers
    assert ticks > 3  # the loop kept running while requests were in flight


def test_writes_are_spaced_by_write_interval(
    fake_github: FakeGitHub, case: ForgeCase, loop: Any
) -> None:
    forge = forge_for(fake_github, case, write_interval=0.3)
    started = time.monotonic()
    for n in range(3):
        run(loop, forge.create_issue(f"spaced {n}"))
    run(loop, forge.list_issues())  # reads are not spaced
    assert 0.55 < time.monotonic() - started < 2


def test_a_pull_request_reads_as_an_issue_with_its_comments(
    fake_github: FakeGitHub, case: ForgeCase, loop: Any
) -> None:
    case.push_branch("issue-9-talk", {"t.txt": "t\n"})
    pr = run(loop, case.forge.open_pr(head="issue-9-talk", base="main", title="talk"))
    run(loop, case.forge.comment(pr.number, "on the PR"))
    issue = run(loop, case.forge.get_issue(pr.number))
    assert (issue.title, [c.body for c in issue.comments]) == ("talk", ["on the PR"])
    assert run(loop, case.forge.list_issues(state="all")) == []
