"""LocalForge beyond the contract: its files, hand edits, several processes, git remotes,
and how `open_forge` picks and configures a forge."""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordlib.config_yaml import parse_config
from coordlib.errors import ConfigError, ForgeError
from coordlib.forge import LocalForge, open_forge
from coordlib.testing import GitRepo, make_git_repo
from coordlib.testing.gitrepo import git

from .conftest import Run
from .forge_case import ForgeCase

SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    return make_git_repo(tmp_path / "api")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "issues"


@pytest.fixture
def forge(repo: GitRepo, root: Path) -> LocalForge:
    assert repo.origin is not None
    return LocalForge("api", root, remote=repo.origin)


# --- the files -------------------------------------------------------------------------


def test_files_are_readable_markdown_and_yaml(
    forge: LocalForge, root: Path, arun: Run[Any]
) -> None:
    issue = arun(
        forge.create_issue("Fix login redirect", body="It loops.\n", labels=["ready", "bug"])
    )
    arun(forge.comment(issue.number, "On it."))
    path = root / "0001-fix-login-redirect.md"
    text = path.read_text()
    assert text.startswith("---\nnumber: 1\ntitle: Fix login redirect\nlabels: [bug, ready]\n")
    assert "\nstate: open\ncreated_at: '" in text
    assert text.endswith("---\nIt loops.\n")
    assert issue.url == path.absolute().as_uri()
    comment = (root / "0001.comments").iterdir().__next__()
    assert comment.read_text().startswith("---\nid: ")
    assert comment.read_text().endswith("---\nOn it.")


def test_hand_edits_are_picked_up(forge: LocalForge, root: Path, arun: Run[Any]) -> None:
    arun(forge.create_issue("Old title", body="old body", labels=["bug"]))
    arun(forge.create_issue("Another"))
    arun(forge.comment(2, "a comment elsewhere, so the id counter exists"))
    path = next(root.glob("0001-*.md"))
    edited = (
        path.read_text()
        .replace("title: Old title", "title: New title, by hand")
        .replace("labels: [bug]", "labels:\n  - ready\n  - no")
        .replace("old body", "new body\nwith two lines\n")
    )
    path.write_text(edited)
    (root / "0001.comments").mkdir()
    (root / "0001.comments" / "0500.md").write_text("A comment typed by hand.\n")

    got = arun(forge.get_issue(1))
    assert (got.title, got.labels, got.body) == (
        "New title, by hand",
        ("ready", "no"),  # `no` stays text, not YAML 1.1's False
        "new body\nwith two lines\n",
    )
    assert [(c.id, c.body) for c in got.comments] == [(500, "A comment typed by hand.\n")]
    assert [i.number for i in arun(forge.list_issues(labels=["no"]))] == [1]
    # the next machine-made comment still sorts after the hand-made one
    arun(forge.comment(1, "later"))
    assert [c.body for c in arun(forge.get_issue(1)).comments][-1] == "later"

    (root / "0009-written-by-hand.md").write_text("---\ntitle: Typed in\n---\nbody\n")
    assert arun(forge.get_issue(9)).title == "Typed in"
    assert arun(forge.create_issue("after the hand-made one")).number == 10


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ("---\ntitle: [unclosed\nstate: open\n---\nbody\n", ":3", "not valid YAML"),
        ("---\ntitle: ok\nlabels: a: b\nstate: open\n---\n", ":3", "not valid YAML"),
        ("title: no front matter\n", ":1", "must start with a '---' line"),
        ("---\ntitle: never closed\n", "", "no closing '---'"),
        ("---\ntitle: x\nstate: done\n---\n", "", "must be open or closed"),
        ("---\nstate: open\n---\n", "", "`title` is missing"),
        ("---\nnumber: 8\ntitle: x\n---\n", "", "the file name says 3"),
        ("---\n- a list\n---\n", "", "expected `key: value` lines"),
    ],
)
def test_broken_front_matter_names_the_file(
    forge: LocalForge, root: Path, arun: Run[Any], text: str, where: str, says: str
) -> None:
    root.mkdir(parents=True)
    path = root / "0003-broken.md"
    path.write_text(text)
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: forge.get_issue(3),
        lambda: forge.list_issues(),
        lambda: forge.add_labels(3, ["x"]),
    ]
    for call in calls:
        with pytest.raises(ForgeError) as info:
            arun(call())
        message = str(info.value)
        assert f"{path}{where}:" in message
        assert says in message
    if "YAML" in says:
        assert "between the two '---' lines" in message
    assert path.read_text() == text  # a broken file is never rewritten


@pytest.mark.parametrize(
    "body",
    [
        "---\nid: 99\nauthor: mallory\n---\nforged",
        "before\n---\nafter\n...\n---\n",
        "windows\r\nline\r\nends\r\n",
        "",
        "\n\n  leading and trailing blank lines\n\n",
    ],
)
def test_separator_lines_in_bodies_round_trip(forge: LocalForge, arun: Run[Any], body: str) -> None:
    issue = arun(forge.create_issue("title\nwith a newline ---", body=body))
    arun(forge.comment(issue.number, body))
    got = arun(forge.get_issue(issue.number))
    assert (got.title, got.body) == ("title\nwith a newline ---", body)
    assert [(c.body, c.author) for c in got.comments] == [(body, "coord")]


TEXT = st.text(st.characters(codec="utf-8"), max_size=60)
SOME_TEXT = TEXT.filter(lambda t: t.strip() != "")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(title=SOME_TEXT, body=TEXT, labels=st.lists(SOME_TEXT, max_size=3))
def test_any_text_round_trips_through_the_files(
    forge: LocalForge, arun: Run[Any], title: str, body: str, labels: list[str]
) -> None:
    made = arun(forge.create_issue(title, body=body, labels=labels))
    arun(forge.comment(made.number, body))
    got = arun(forge.get_issue(made.number))
    assert (got.title, got.body, set(got.labels)) == (title, body, set(labels))
    assert got.comments[0].body == body


def test_two_files_for_one_issue_is_an_error(forge: LocalForge, root: Path, arun: Run[Any]) -> None:
    arun(forge.create_issue("first"))
    (root / "0001-copy.md").write_text("---\ntitle: copy\n---\n")
    with pytest.raises(ForgeError, match=r"two files for issue #1: .* merge them into one"):
        arun(forge.get_issue(1))


def _create_many(root: str, remote: str, worker: int, count: int) -> list[int]:
    async def go() -> list[int]:
        forge = LocalForge("api", Path(root), remote=remote)
        return [(await forge.create_issue(f"w{worker} n{i}")).number for i in range(count)]

    return asyncio.run(go())


def test_four_processes_get_distinct_numbers(
    forge: LocalForge, repo: GitRepo, root: Path, arun: Run[Any]
) -> None:
    with SPAWN.Pool(4) as pool:
        results = pool.starmap(
            _create_many, [(str(root), str(repo.origin), w, 25) for w in range(4)]
        )
    numbers = [n for batch in results for n in batch]
    assert sorted(numbers) == list(range(1, 101))
    assert len(list(root.glob("*.md"))) == 100
    titles = {i.title for i in arun(forge.list_issues())}
    assert titles == {f"w{w} n{i}" for w in range(4) for i in range(25)}


def test_issues_and_prs_share_numbers(forge: LocalForge, repo: GitRepo, arun: Run[Any]) -> None:
    case = ForgeCase(forge=forge, remote_url=str(repo.origin), work=repo.path)
    assert arun(forge.create_issue("one")).number == 1
    case.push_branch("issue-1-one", {"one.txt": "1\n"})
    pr = arun(forge.open_pr(head="issue-1-one", base="main", title="one"))
    assert pr.number == 2
    assert (forge.root / "pulls" / "0002.yml").read_text().startswith("number: 2\ntitle: one\n")
    assert arun(forge.create_issue("three")).number == 3
    # a comment on the PR lives with the PR's number; the PR reads as an issue, like GitHub
    arun(forge.comment(2, "a PR comment"))
    as_issue = arun(forge.get_issue(2))
    assert (as_issue.title, [c.body for c in as_issue.comments]) == ("one", ["a PR comment"])
    assert arun(forge.add_labels(2, ["needs-review"])) == ("needs-review",)
    assert arun(forge.set_state(2, "closed")).state == "closed"
    assert arun(forge.get_pr(2)).state == "closed"


def test_deleted_issue_numbers_are_not_reused(
    forge: LocalForge, root: Path, arun: Run[Any]
) -> None:
    arun(forge.create_issue("a"))
    arun(forge.create_issue("b"))
    next(root.glob("0002-*.md")).unlink()
    assert arun(forge.create_issue("c")).number == 3


def test_pr_records_are_yaml_with_readable_bodies(
    forge: LocalForge, repo: GitRepo, arun: Run[Any]
) -> None:
    case = ForgeCase(forge=forge, remote_url=str(repo.origin), work=repo.path)
    case.push_branch("issue-4-x", {"x.txt": "x\n"})
    body = 'Closes #4\n\n<!-- coord:{"id": "a1"} -->\n'
    pr = arun(forge.open_pr(head="issue-4-x", base="main", title="X", body=body))
    arun(forge.review(pr.number, "APPROVE", "fine\nby me"))
    text = (forge.root / "pulls" / "0001.yml").read_text()
    assert "body: |\n  Closes #4\n\n  <!-- coord:" in text
    assert "state: APPROVED" in text and "body: |-\n    fine\n    by me" in text
    assert arun(forge.get_pr(pr.number)).body == body


# --- git ---------------------------------------------------------------------------------


def test_a_pr_needs_commits_and_merges_once(
    forge: LocalForge, repo: GitRepo, arun: Run[Any]
) -> None:
    case = ForgeCase(forge=forge, remote_url=str(repo.origin), work=repo.path)
    git("push", "-q", "origin", "main:refs/heads/empty", cwd=repo.path)
    with pytest.raises(ForgeError, match="no commits between main and empty"):
        arun(forge.open_pr(head="empty", base="main", title="nothing"))
    with pytest.raises(ForgeError, match="push it first: git push origin gone"):
        arun(forge.open_pr(head="gone", base="main", title="nothing"))
    case.push_branch("issue-1-a", {"a.txt": "a\n"})
    pr = arun(forge.open_pr(head="issue-1-a", base="main", title="a"))
    arun(forge.merge(pr.number))
    with pytest.raises(ForgeError, match="is merged; only an open one merges") as info:
        arun(forge.merge(pr.number))
    assert info.value.status == 405
    with pytest.raises(ForgeError, match="merged; it cannot be open"):
        arun(forge.set_state(pr.number, "open"))


def test_concurrent_merges_both_land(forge: LocalForge, repo: GitRepo, arun: Run[Any]) -> None:
    case = ForgeCase(forge=forge, remote_url=str(repo.origin), work=repo.path)
    numbers = []
    for name in ("issue-1-a", "issue-2-b", "issue-3-c"):
        case.push_branch(name, {f"{name}.txt": name + "\n"})
        numbers.append(arun(forge.open_pr(head=name, base="main", title=name)).number)
    other = LocalForge("api", forge.root, remote=str(repo.origin))

    async def both() -> list[Any]:
        return list(
            await asyncio.gather(
                forge.merge(numbers[0]),
                other.merge(numbers[1]),
                forge.merge(numbers[2], method="rebase"),
            )
        )

    assert all(r.merged for r in arun(both()))
    for name in ("issue-1-a", "issue-2-b", "issue-3-c"):
        assert case.remote_file(f"{name}.txt") == name


def test_a_url_remote_works_through_a_mirror(repo: GitRepo, root: Path, arun: Run[Any]) -> None:
    assert repo.origin is not None
    url = repo.origin.absolute().as_uri()  # file:// makes git use its transport, like a URL
    forge = LocalForge("api", root, remote=url)
    case = ForgeCase(forge=forge, remote_url=url, work=repo.path)
    case.push_branch("issue-1-a", {"README.md": "# a\n"})
    case.push_branch("issue-2-b", {"README.md": "# b\n"})
    a = arun(forge.open_pr(head="issue-1-a", base="main", title="a"))
    b = arun(forge.open_pr(head="issue-2-b", base="main", title="b"))
    assert arun(forge.get_pr(b.number)).mergeable is True
    result = arun(forge.merge(a.number, method="squash"))
    assert result.sha == case.remote_head()
    assert (root / ".mirror.git" / "HEAD").exists()
    assert arun(forge.get_pr(b.number)).mergeable is False
    before = case.remote_head()
    with pytest.raises(ForgeError, match=r"conflicts in README\.md"):
        arun(forge.merge(b.number, method="rebase"))
    assert case.remote_head() == before


def test_an_unreachable_remote_says_how_to_fix_it(
    root: Path, tmp_path: Path, arun: Run[Any]
) -> None:
    forge = LocalForge("api", root, remote=tmp_path / "nowhere.git")
    with pytest.raises(ForgeError, match=re.escape("check its `url:` in coordinator.yml")):
        arun(forge.branches())


def test_shell_metacharacters_never_reach_a_shell(
    forge: LocalForge, repo: GitRepo, tmp_path: Path, arun: Run[Any]
) -> None:
    case = ForgeCase(forge=forge, remote_url=str(repo.origin), work=repo.path)
    canary = tmp_path / "canary"
    evil = f"$(touch {canary}) `touch {canary}`; touch {canary}"
    case.push_branch("issue-1-x", {"x.txt": "x\n"})
    pr = arun(forge.open_pr(head="issue-1-x", base="main", title=evil, body=evil))
    arun(forge.merge(pr.number, method="squash"))
    assert not canary.exists()
    assert git("log", "-1", "--format=%s", "main", cwd=repo.origin) == f"{evil} (#1)"


# --- open_forge --------------------------------------------------------------------------


def _config(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "coordinator.yml"
    path.write_text(text)
    return parse_config(text, path=path, base_dir=tmp_path)


def test_open_forge_local_uses_the_checkout_origin(tmp_path: Path, repo: GitRepo) -> None:
    config = _config(
        tmp_path,
        f"repos: [{{name: api}}]\nmachines:\n  - name: here\n    host: localhost\n"
        f"    repo_paths: {{api: {repo.path}}}\n",
    )
    forge = open_forge(config, "api")
    assert isinstance(forge, LocalForge)
    assert forge.root == tmp_path / ".coord" / "issues" / "api"
    assert forge._git.remote == str(repo.origin)


def test_open_forge_local_honours_url_and_root(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        "repos:\n  - name: api\n    url: /srv/git/api.git\n    default_branch: trunk\n"
        "forge: {root: shared/issues}\n",
    )
    forge = open_forge(config, "api")
    assert isinstance(forge, LocalForge)
    assert forge.root == tmp_path / "shared" / "issues" / "api"
    assert (forge._git.remote, forge.default_branch) == ("/srv/git/api.git", "trunk")


def test_open_forge_without_a_remote_explains_url(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        f"repos: [{{name: api}}]\nmachines:\n  - name: here\n    host: localhost\n"
        f"    repo_paths: {{api: {tmp_path / 'missing'}}}\n",
    )
    with pytest.raises(ForgeError, match="set `url:` on repo 'api'"):
        open_forge(config, "api")
    with pytest.raises(ConfigError, match="no repo named 'nope'"):
        open_forge(config, "nope")
    with pytest.raises(ConfigError, match=r"forge\.root: expected"):
        _config(tmp_path, "repos:\n  - name: api\n    url: /x.git\nforge: {root: [a]}\n")


def test_open_forge_picks_github_by_slug_unless_told_local(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        "repos:\n  - {name: api, github: acme/api}\n"
        "  - {name: web, github: acme/web, forge: local, url: /srv/web.git}\n"
        "github: {api_url: http://127.0.0.1:9/api/v3}\n",
    )
    forge = open_forge(config, "api", environ={"GITHUB_TOKEN": "t"})
    assert forge.kind == "github"
    assert isinstance(open_forge(config, "web"), LocalForge)


def test_importing_the_package_does_not_load_pygithub() -> None:
    import subprocess

    code = "import coordlib.forge, sys; print('github' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_rebase_keeps_each_commit_author(forge: LocalForge, repo: GitRepo, arun: Run[Any]) -> None:
    case = ForgeCase(forge=forge, remote_url=str(repo.origin), work=repo.path)
    case.push_branch("issue-1-a", {"a.txt": "a\n"})
    pr = arun(forge.open_pr(head="issue-1-a", base="main", title="a"))
    arun(forge.merge(pr.number, method="rebase"))
    who = git("log", "-1", "--format=%an <%ae>|%cn <%ce>", "main", cwd=repo.origin)
    assert who == "coord-test <test@coord.invalid>|coord <coord@localhost>"


def test_a_checked_out_remote_refuses_with_gits_reason(
    repo: GitRepo, root: Path, arun: Run[Any]
) -> None:
    forge = LocalForge("api", root, remote=repo.path)  # not bare: main is checked out there
    git("branch", "issue-1-a", cwd=repo.path)
    git("commit", "-q", "--allow-empty", "-m", "more", cwd=repo.path)
    git("branch", "-f", "issue-1-a", "HEAD", cwd=repo.path)
    git("reset", "-q", "--hard", "HEAD~1", cwd=repo.path)
    pr = arun(forge.open_pr(head="issue-1-a", base="main", title="a"))
    with pytest.raises(ForgeError) as info:
        arun(forge.merge(pr.number))
    assert "(branch is currently checked out)" in str(info.value)
    assert "main was left as it was" in str(info.value)
    assert arun(forge.get_pr(pr.number)).state == "open"


def test_unknown_merge_method_or_review_event_is_a_value_error(
    forge: LocalForge, arun: Run[Any]
) -> None:
    with pytest.raises(ValueError, match="unknown merge method 'ff'"):
        arun(forge.merge(1, method="ff"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown review event 'LGTM'"):
        arun(forge.review(1, "LGTM", "ok"))  # type: ignore[arg-type]
