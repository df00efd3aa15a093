"""The fake GitHub itself: it enforces GitHub's OpenAPI description and serves real git."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from github import Auth, BadCredentialsException, Github

from coordlib.testing.gitrepo import git
from tests.fakegithub.gitstore import BareRepo, MergeConflict
from tests.fakegithub.openapi import OpenAPI
from tests.fakegithub.plugin import fail_on_violations, seed_repo
from tests.fakegithub.server import VIOLATION_STATUS, FakeGitHub, shared_openapi

SLUG = "acme/api"


def api(server: FakeGitHub, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    """Send one raw API request with the server's token."""
    headers = {"Authorization": f"token {server.token}", **kw.pop("headers", {})}
    return requests.request(
        method, f"{server.api_url}{path}", json=body, headers=headers, timeout=10, **kw
    )


def pygithub(server: FakeGitHub, **kwargs: Any) -> Github:
    return Github(
        base_url=server.api_url,
        auth=Auth.Token(kwargs.pop("token", server.token)),
        seconds_between_requests=None,
        seconds_between_writes=None,
        lazy=True,
        **kwargs,
    )


@pytest.fixture
def seeded(fake_github: FakeGitHub, tmp_path: Path) -> Path:
    """The fake with repository acme/api holding one commit on main; returns a clone."""
    return seed_repo(fake_github, SLUG, tmp_path / "work")


def test_the_subset_names_its_source() -> None:
    doc = json.loads((Path(__file__).parent / "fakegithub" / "openapi_subset.json").read_text())
    assert doc["info"]["x-source"].startswith("npm @octokit/openapi@")
    assert sum(len(item) for item in doc["paths"].values()) >= 25


def test_rejects_a_request_body_that_breaks_the_schema(
    fake_github: FakeGitHub, seeded: Path
) -> None:
    answer = api(fake_github, "POST", f"/repos/{SLUG}/issues", {"title": "x", "labels": "bug"})
    assert answer.status_code == VIOLATION_STATUS
    assert "request body at labels" in answer.json()["message"]
    missing = api(fake_github, "POST", f"/repos/{SLUG}/issues/1/comments", {"text": "x"})
    assert missing.status_code == VIOLATION_STATUS
    violations = fake_github.take_violations()
    assert len(violations) == 2
    assert "'body' is a required property" in violations[1]


def test_rejects_undocumented_query_parameters(fake_github: FakeGitHub, seeded: Path) -> None:
    answer = api(fake_github, "GET", f"/repos/{SLUG}/issues", params={"state": "done"})
    assert answer.status_code == VIOLATION_STATUS
    answer = api(
        fake_github, "GET", f"/repos/{SLUG}/git/matching-refs/heads/x", params={"per_page": "100"}
    )
    assert answer.status_code == VIOLATION_STATUS
    violations = fake_github.take_violations()
    assert "query parameter 'state'" in violations[0]
    assert "undocumented query parameter 'per_page'" in violations[1]


def test_an_unknown_route_fails_loudly_and_fails_the_test(
    fake_github: FakeGitHub, seeded: Path
) -> None:
    hooks = api(fake_github, "GET", f"/repos/{SLUG}/hooks")
    assert hooks.status_code == VIOLATION_STATUS
    assert hooks.headers["X-Fake-GitHub-Violation"] == "1"
    outside = requests.get(f"{fake_github.url}/repos/{SLUG}", timeout=10)
    assert outside.status_code == VIOLATION_STATUS
    assert len(fake_github.violations) == 2
    assert "unimplemented route: GET /repos/acme/api/hooks" in fake_github.violations[0]
    with pytest.raises(pytest.fail.Exception, match="2 violation"):
        fail_on_violations(fake_github)
    assert fake_github.violations == []


def test_a_bad_token_gets_githubs_401(fake_github: FakeGitHub, seeded: Path) -> None:
    with pytest.raises(BadCredentialsException) as info:
        pygithub(fake_github, token="ghp_wrong").get_repo(SLUG).get_issue(1).title  # noqa: B018
    assert info.value.status == 401
    assert info.value.data["message"] == "Bad credentials"
    assert "documentation_url" in info.value.data
    anonymous = requests.get(f"{fake_github.api_url}/repos/{SLUG}", timeout=10)
    assert (anonymous.status_code, anonymous.json()["message"]) == (401, "Requires authentication")


def test_pagination_links_keep_the_enterprise_prefix(fake_github: FakeGitHub, seeded: Path) -> None:
    pygithub(fake_github).get_repo(SLUG).create_issue("issue 0")
    for n in range(1, 45):
        fake_github.add_issue(SLUG, f"issue {n}")
    before = fake_github.count()
    numbers = [i.number for i in pygithub(fake_github, per_page=20).get_repo(SLUG).get_issues()]
    assert sorted(numbers) == list(range(1, 46))
    assert fake_github.count(before) == 3
    page = api(fake_github, "GET", f"/repos/{SLUG}/issues", params={"per_page": "20"})
    links = requests.utils.parse_header_links(page.headers["Link"])
    assert {link["rel"] for link in links} == {"next", "last"}
    assert all(link["url"].startswith(f"{fake_github.api_url}/repos/") for link in links)
    assert page.json()[0]["url"].startswith(fake_github.api_url + "/")


def test_rate_limit_headers_come_with_every_answer(fake_github: FakeGitHub, seeded: Path) -> None:
    gh = pygithub(fake_github)
    gh.get_repo(SLUG).get_issues(state="all").totalCount  # noqa: B018
    before = fake_github.count()
    remaining, limit = gh.rate_limiting
    assert (limit, fake_github.count(before)) == (5000, 0)
    assert remaining < limit
    fake_github.rate_limit_next(1, kind="primary", retry_after=30)
    fake_github.rate_limit_next(1, kind="secondary", retry_after=7, status=429)
    primary = api(fake_github, "GET", f"/repos/{SLUG}")
    assert primary.status_code == 403
    assert primary.headers["X-RateLimit-Remaining"] == "0"
    assert primary.json()["message"].startswith("API rate limit exceeded")
    secondary = api(fake_github, "GET", f"/repos/{SLUG}")
    assert (secondary.status_code, secondary.headers["Retry-After"]) == (429, "7")


def test_git_push_and_fetch_go_through_http_backend(
    fake_github: FakeGitHub, seeded: Path, tmp_path: Path
) -> None:
    (seeded / "big.bin").write_bytes(bytes(range(256)) * 8000)  # 2 MB: a chunked push
    git("checkout", "-q", "-b", "issue-4-big", cwd=seeded)
    git("add", "-A", cwd=seeded)
    git("commit", "-q", "-m", "big file", cwd=seeded)
    git("push", "-q", "origin", "issue-4-big", cwd=seeded)
    head = git("rev-parse", "HEAD", cwd=seeded)
    branches = api(fake_github, "GET", f"/repos/{SLUG}/branches").json()
    assert {b["name"]: b["commit"]["sha"] for b in branches}["issue-4-big"] == head
    refs = api(fake_github, "GET", f"/repos/{SLUG}/git/matching-refs/heads%2Fissue-4-").json()
    assert [r["ref"] for r in refs] == ["refs/heads/issue-4-big"]
    clone = tmp_path / "clone"
    git("clone", "-q", "-b", "issue-4-big", fake_github.git_url(SLUG), str(clone))
    assert (clone / "big.bin").read_bytes() == (seeded / "big.bin").read_bytes()
    missing = requests.get(f"{fake_github.url}/acme/nope.git/info/refs", timeout=10)
    assert missing.status_code == 404


def test_validator_catches_invalid_responses() -> None:
    spec = shared_openapi()
    op, params = spec.match("get", "/repos/acme/api/issues/7") or (None, {})
    assert op is not None and params == {"owner": "acme", "repo": "api", "issue_number": "7"}
    assert spec.check_response(op, 200, b'{"number": 7}', "application/json")
    problems = spec.check_response(op, 200, b'{"number": "7"}', "application/json")
    assert problems[0].endswith("at number: '7' is not of type 'integer'")
    assert any("'id' is a required property" in p for p in problems)
    assert "status 201 is not documented" in spec.check_response(op, 201, b"{}", "")[0]
    assert spec.check_response(op, 404, b'{"message": "Not Found"}', "application/json") == []
    assert spec.check_response(op, 404, b"not json", "application/json")


def test_validator_handles_nullable_refs_and_one_of() -> None:
    spec = OpenAPI()
    op, _ = spec.match("get", "/repos/acme/api/pulls") or (None, {})
    assert op is not None
    good = spec.check_response(op, 200, b"[]", "application/json")
    assert good == []
    # milestone is a nullable $ref: null passes, a string does not
    schema = "/components/schemas/issue/properties/milestone"
    assert list(spec.validator(schema).iter_errors(None)) == []
    assert list(spec.validator(schema).iter_errors("v1"))
    # labels items are oneOf string | object
    labels = "/components/schemas/issue/properties/labels"
    assert list(spec.validator(labels).iter_errors(["bug", {"name": "x"}])) == []
    assert list(spec.validator(labels).iter_errors([3]))


def test_an_invalid_response_from_the_fake_is_refused(
    fake_github: FakeGitHub, seeded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = fake_github.issue_json
    monkeypatch.setattr(
        fake_github, "issue_json", lambda repo, rec: {**original(repo, rec), "locked": "no"}
    )
    answer = api(fake_github, "POST", f"/repos/{SLUG}/issues", {"title": "t"})
    assert answer.status_code == VIOLATION_STATUS
    assert "201 response at locked" in fake_github.take_violations()[0]


def test_merge_tree_reports_conflicting_paths(tmp_path: Path) -> None:
    bare = BareRepo(tmp_path / "r.git")
    work = tmp_path / "w"
    git("init", "-q", "-b", "main", str(work))
    for name, files in [("main", {"a.txt": "base\n", "b.txt": "b\n"})]:
        for path, text in files.items():
            (work / path).write_text(text)
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", name, cwd=work)
    for branch, text in [("one", "one\n"), ("two", "two\n")]:
        git("checkout", "-q", "-b", branch, "main", cwd=work)
        (work / "a.txt").write_text(text)
        git("commit", "-q", "-am", branch, cwd=work)
    git("push", "-q", str(bare.path), "main", "one", "two", cwd=work)
    one, two = bare.branch("one"), bare.branch("two")
    assert one and two
    assert bare.mergeable(one, two) is False
    bare.merge("main", one, "merge", "merge one")
    with pytest.raises(MergeConflict) as info:
        bare.merge("main", two, "rebase", "unused")
    assert info.value.paths == ("a.txt",)
