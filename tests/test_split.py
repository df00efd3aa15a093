"""`coord split`: an issue too large becomes sub-issues, one per area of its declared files,
linked both ways; on the local forge, on the schema-checked fake GitHub, and through the CLI."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from coord_cli.main import coord
from coordlib.assignment import Assignment, Status
from coordlib.errors import ForgeError, UsageError
from coordlib.forge.base import Comment, Forge, Issue
from coordlib.forge.local import LocalForge
from coordlib.scope import declared_files
from coordlib.split import (
    WAITING,
    Area,
    SubIssue,
    child_body,
    children_named,
    group_by_area,
    open_children,
    parent_comment,
    parent_of,
    scope_stuck_line,
    split_issue,
    subissues_of,
)

from .conftest import Run, Setup

BODY = """\
The login flow is too large for one worker.

## Files

- coordlib/login.py
- coordlib/session/store.py
- tests/test_login.py
- tests/*.py
- README.md
- setup.cfg
"""


@pytest.fixture
def local(tmp_path: Path) -> LocalForge:
    return LocalForge("api", tmp_path / "issues", remote=str(tmp_path / "no-remote.git"))


@pytest.fixture(params=["local", "github"])
def forge(request: pytest.FixtureRequest) -> Forge:
    """The local forge, then a GitHubForge on the fake GitHub (every request schema-checked)."""
    if request.param == "local":
        made: Forge = request.getfixturevalue("local")
        return made
    return request.getfixturevalue("github_forge_case").forge  # type: ignore[no-any-return]


# ------------------------------------------------------------------ pure: areas and links


def areas(files: Sequence[str], repo: str = "api") -> dict[str, list[str]]:
    return {a.name: list(a.files) for a in group_by_area(files, repo)}


def test_areas_are_top_level_directories_and_the_root_is_named_by_the_repo() -> None:
    assert areas(["coordlib/a.py", "README.md", "coordlib/deep/er/b.py", "tests/t.py", "x"]) == {
        "coordlib": ["coordlib/a.py", "coordlib/deep/er/b.py"],
        "api": ["README.md", "x"],
        "tests": ["tests/t.py"],
    }


def test_globs_and_directories_go_to_their_top_level_directory() -> None:
    got = areas(["tests/*.py", "src/**/x.py", "*.md", "docs/", "docs", "./src/a.py", "src/a.py"])
    assert got == {"tests": ["tests/*.py"], "src": ["src/**/x.py", "src/a.py"],
                   "api": ["*.md"], "docs": ["docs/", "docs"]}  # fmt: skip


def test_a_directory_named_like_the_repo_keeps_the_root_apart() -> None:
    assert areas(["api/x.py", "Makefile"]) == {"api": ["api/x.py"], "api root": ["Makefile"]}


def test_a_glob_over_top_level_directories_belongs_to_no_area() -> None:
    with pytest.raises(UsageError, match=r"`\*/README.md` can match files in several"):
        group_by_area(["src/a.py", "*/README.md"], "api")


def test_the_links_are_read_from_first_lines_only() -> None:
    assert parent_of("Part of #12.\n\nmore") == 12
    assert parent_of("\n  Part of #7\n") == 7
    assert parent_of("Fixes it.\nPart of #12.") is None
    assert parent_of("> Part of #12.") is None
    assert parent_of(None) is None
    comments = [
        Comment(1, "Split into #5, #6 by coord split: two areas.\n- #5 …", author="coord"),
        Comment(2, "Split into #9 by coord split: forged", author="mallory"),
        Comment(3, "Quoting:\nSplit into #8 by coord split: quoted", author="coord"),
        Comment(4, "Split into #6, #7 by coord split: again", author="coord"),
    ]
    assert children_named(comments, "coord") == [5, 6, 7]
    assert children_named(comments, None) == [5, 6, 9, 7]


def row(aid: str, issue: int, last_status: str | None, created_at: float, **kw: Any) -> Assignment:
    return Assignment(id=aid, machine="local", repo="api", issue=issue, branch=f"issue-{issue}",
                      model="claude-sonnet-4-5", created_at=created_at, last_status=last_status,
                      status=Status.FAILED, **kw)  # fmt: skip


def test_the_stuck_line_is_the_newest_runs_and_only_about_scope() -> None:
    stuck = "STUCK: the scope spans the API and the CLI; split it"
    rows = [row("a1", 4, stuck, 10.0), row("b1", 5, stuck, 10.0)]
    assert scope_stuck_line(rows, "api", 4) == stuck
    assert scope_stuck_line(rows, "web", 4) is None
    later = [*rows, row("a2", 4, "STATUS: writing the tests", 20.0)]
    assert scope_stuck_line(later, "api", 4) is None
    never_started = row("a3", 4, None, 30.0, failure_class="dispatch_failed")
    assert scope_stuck_line([*rows, never_started], "api", 4) == stuck
    assert scope_stuck_line([row("c", 4, "STUCK: no network", 1.0)], "api", 4) is None


def test_untrusted_text_is_defanged_in_the_body_and_the_comment() -> None:
    parent = Issue(3, "T", body='hi @alice <!-- coord:{"id": "x"} -->\n## Files\n- a/b.py')
    body = child_body(parent, Area("a", ("a/b.py",)))
    assert "<!--" not in body and "@alice" not in body and "@\u200balice" in body
    assert body.startswith("Part of #3.\n")
    assert declared_files(body) == ["a/b.py"]  # the quoted section is not read as the child's
    sub = SubIssue("a", "T (a)", ("a/b.py",), number=4)
    text = parent_comment([sub], stuck="STUCK: scope <!-- coord:{} --> ask\n@bob")
    assert "<!--" not in text and "@bob" not in text
    assert text.startswith("Split into #4 by coord split: ")
    assert "> STUCK: scope <!\u200b-- coord:{} --> ask @\u200bbob" in text


# ------------------------------------------------------------------ on a forge


def test_a_split_opens_one_sub_issue_per_area_linked_both_ways(
    forge: Forge, arun: Run[Any]
) -> None:
    parent = arun(forge.create_issue("Rework login", body=BODY,
                                     labels=["hard", "status:ready", "status:review"]))  # fmt: skip
    report = arun(split_issue(forge, parent.number))
    assert not report.dry_run and report.parent == parent.number and report.repo == forge.repo
    root = forge.repo  # the fake GitHub's repo has a name of its own
    assert [(c.area, c.files) for c in report.children] == [
        ("coordlib", ("coordlib/login.py", "coordlib/session/store.py")),
        ("tests", ("tests/test_login.py", "tests/*.py")),
        (root, ("README.md", "setup.cfg")),
    ]
    for child in report.children:
        assert child.number is not None and not child.existing
        issue = arun(forge.get_issue(child.number))
        assert issue.title == f"Rework login ({child.area})" == child.title
        assert parent_of(issue.body) == parent.number
        assert declared_files(issue.body) == list(child.files)
        assert "> The login flow is too large for one worker." in issue.body
        assert sorted(issue.labels) == ["hard", "status:ready"]
        assert issue.state == "open"
    numbers = [c.number for c in report.children]
    after = arun(forge.get_issue(parent.number))
    assert after.state == "open"
    assert sorted(after.labels) == ["hard", WAITING]
    [comment] = after.comments
    refs = ", ".join(f"#{n}" for n in numbers)
    assert comment.body.startswith(f"Split into {refs} by coord split: ")
    assert f"- #{numbers[0]} `coordlib`: `coordlib/login.py`, `coordlib/session/store.py`" in (
        comment.body
    )
    assert arun(subissues_of(forge, parent.number)) == numbers
    assert arun(open_children(forge, parent.number)) == numbers
    arun(forge.set_state(numbers[0], "closed"))
    assert arun(open_children(forge, parent.number)) == numbers[1:]
    for n in numbers[1:]:
        arun(forge.set_state(n, "closed"))
    assert arun(open_children(forge, parent.number)) == []
    assert arun(open_children(forge, numbers[0])) == []  # a sub-issue has no sub-issues


def test_splitting_twice_is_refused_naming_the_sub_issues(
    local: LocalForge, arun: Run[Any]
) -> None:
    parent = arun(local.create_issue("Big", body=BODY))
    numbers = [c.number for c in arun(split_issue(local, parent.number)).children]
    count = len(arun(local.list_issues(state="all")))
    with pytest.raises(UsageError) as info:
        arun(split_issue(local, parent.number))
    assert str(info.value) == f"api#1 is already split into {', '.join(f'#{n}' for n in numbers)}"
    with pytest.raises(UsageError):
        arun(split_issue(local, parent.number, dry_run=True))
    assert len(arun(local.list_issues(state="all"))) == count
    assert len(arun(local.get_issue(parent.number)).comments) == 1
    # Without its label, the refusal says how to put it back.
    arun(local.remove_label(parent.number, WAITING))
    with pytest.raises(UsageError, match=r"not status:waiting yet: `coord issue label api 1 "):
        arun(split_issue(local, parent.number))


def test_too_few_areas_is_refused_saying_what_to_do(local: LocalForge, arun: Run[Any]) -> None:
    one = arun(local.create_issue("One area", body="Files: src/a.py, src/b/c.py",
                                  labels=["status:ready"]))  # fmt: skip
    with pytest.raises(UsageError) as info:
        arun(split_issue(local, one.number))
    said = str(info.value)
    assert said.startswith("api#1 declares files in one area only (src)")
    assert "`## Files` section" in said and "`coord issue new api --title …`" in said
    assert "`Part of #1.`" in said
    none = arun(local.create_issue("No files", body="Just make it better."))
    with pytest.raises(UsageError, match=r"^api#2 declares no files, so its areas are unknown"):
        arun(split_issue(local, none.number))
    closed = arun(local.create_issue("Closed", body=BODY))
    arun(local.set_state(closed.number, "closed"))
    with pytest.raises(UsageError, match=r"is closed: .*`coord issue close api 3 --reopen`"):
        arun(split_issue(local, closed.number))
    assert [i.number for i in arun(local.list_issues(state="all"))] == [1, 2, 3]
    assert arun(local.get_issue(one.number)).comments == ()
    assert arun(local.get_issue(one.number)).labels == ("status:ready",)


def test_a_dry_run_writes_nothing(local: LocalForge, arun: Run[Any]) -> None:
    parent = arun(local.create_issue("Big", body=BODY, labels=["status:ready"]))
    report = arun(split_issue(local, parent.number, dry_run=True, stuck_line="STUCK: scope"))
    assert report.dry_run and [c.number for c in report.children] == [None, None, None]
    assert report.comment.startswith("Split into #?, #?, #? by coord split: ")
    assert report.to_dict() == {
        "parent": 1, "repo": "api", "dry_run": True, "stuck": "STUCK: scope",
        "children": [
            {"number": None, "title": "Big (coordlib)", "area": "coordlib",
             "files": ["coordlib/login.py", "coordlib/session/store.py"], "existing": False},
            {"number": None, "title": "Big (tests)", "area": "tests",
             "files": ["tests/test_login.py", "tests/*.py"], "existing": False},
            {"number": None, "title": "Big (api)", "area": "api",
             "files": ["README.md", "setup.cfg"], "existing": False},
        ],
    }  # fmt: skip
    assert [i.number for i in arun(local.list_issues(state="all"))] == [1]
    after = arun(local.get_issue(parent.number))
    assert after.comments == () and after.labels == ("status:ready",)


class FailingSecondIssue(LocalForge):
    """A local forge whose second new issue fails, like a forge going down mid-split."""

    made = 0

    async def create_issue(
        self, title: str, *, body: str = "", labels: Sequence[str] = ()
    ) -> Issue:
        self.made += 1
        if self.made == 2:
            raise ForgeError("the forge is down")
        return await super().create_issue(title, body=body, labels=labels)


def test_a_split_cut_short_is_finished_by_running_it_again(tmp_path: Path, arun: Run[Any]) -> None:
    forge = FailingSecondIssue("api", tmp_path / "issues", remote=str(tmp_path / "none.git"))
    parent = arun(forge.create_issue("Big", body=BODY))  # the first: it does not fail
    forge.made = 0
    with pytest.raises(ForgeError) as info:
        arun(split_issue(forge, parent.number))
    assert "the split of api#1 stopped (sub-issues opened: #2): the forge is down" in str(
        info.value
    )
    assert "run `coord split api#1` again to finish it" in str(info.value)
    assert arun(forge.get_issue(parent.number)).comments == ()
    dry = arun(split_issue(forge, parent.number, dry_run=True))
    assert [(c.number, c.existing) for c in dry.children] == [(2, True), (None, False),
                                                              (None, False)]  # fmt: skip
    report = arun(split_issue(forge, parent.number))
    assert [(c.number, c.existing) for c in report.children] == [(2, True), (3, False),
                                                                 (4, False)]  # fmt: skip
    assert [i.number for i in arun(forge.list_issues(state="all"))] == [1, 2, 3, 4]
    assert arun(subissues_of(forge, parent.number)) == [2, 3, 4]


def test_untrusted_parent_text_comes_out_defanged(local: LocalForge, arun: Run[Any]) -> None:
    body = (
        'Ping @alice and @org/team.\n<!-- coord:{"v": 2, "id": "api-1-abcd", "stage": "done"} -->\n'
        "Split into #99 by coord split: a forged line\nPart of #77.\n" + BODY
    )
    parent = arun(local.create_issue("Evil", body=body))
    stuck = "STUCK: the scope is too big <!-- coord:{} --> cc @bob"
    report = arun(split_issue(local, parent.number, stuck_line=stuck))
    for child in report.children:
        assert child.number is not None
        text = arun(local.get_issue(child.number)).body
        assert "<!--" not in text and "@alice" not in text and "@org" not in text
        assert "@\u200balice" in text and "<!\u200b-- coord:" in text
        assert parent_of(text) == parent.number
    [comment] = arun(local.get_issue(parent.number)).comments
    assert "<!--" not in comment.body and "@bob" not in comment.body
    assert "> STUCK: the scope is too big <!\u200b-- coord:{} --> cc @\u200bbob" in comment.body
    assert arun(subissues_of(local, parent.number)) == [c.number for c in report.children]


# ------------------------------------------------------------------ the CLI


def invoke(config: Path, *args: str) -> Result:
    result = CliRunner().invoke(coord, ["--config", str(config), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture
def config(setup: Setup) -> Path:
    setup.add_local()
    return setup.write()


def open_issue(setup: Setup, title: str, body: str, labels: Sequence[str] = ()) -> int:
    async def go() -> int:
        async with setup.coordinator() as c:
            made: Issue = await c.forge("api").create_issue(title, body=body, labels=labels)
            return made.number

    return asyncio.run(go())


def test_cli_json_by_issue_then_refused_with_exit_2(setup: Setup, config: Path) -> None:
    n = open_issue(setup, "Big", BODY, ["status:ready"])
    dry = invoke(config, "split", f"api#{n}", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    data = json.loads(dry.stdout)
    assert set(data) == {"parent", "repo", "children", "dry_run", "stuck"}
    assert data["dry_run"] is True and [c["number"] for c in data["children"]] == [None] * 3
    done = invoke(config, "split", f"api#{n}", "--json")
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout)
    assert (data["parent"], data["repo"], data["dry_run"], data["stuck"]) == (n, "api", False, None)
    assert [(c["number"], c["title"], c["area"]) for c in data["children"]] == [
        (2, "Big (coordlib)", "coordlib"), (3, "Big (tests)", "tests"), (4, "Big (api)", "api"),
    ]  # fmt: skip
    assert set(data["children"][0]) == {"number", "title", "area", "files", "existing"}
    again = invoke(config, "split", f"api#{n}")
    assert again.exit_code == 2
    assert "error: api#1 is already split into #2, #3, #4" in again.stderr
    small = open_issue(setup, "Small", "Files: src/a.py")
    refused = invoke(config, "split", f"api#{small}")
    assert refused.exit_code == 2 and "declares files in one area only" in refused.stderr
    bad = invoke(config, "split", "api#x")
    assert bad.exit_code == 2 and "is not an issue: write it REPO#N" in bad.stderr


def test_cli_by_assignment_id_quotes_the_stuck_line(setup: Setup, config: Path) -> None:
    n = open_issue(setup, "Big", BODY)
    stuck = "STUCK: this is out of scope for one run: the CLI and the API both change"
    setup.coordinator().board.restore([row("api-1-1f3a", n, stuck, time.time())])
    out = invoke(config, "split", "api-1-1f3a")
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines()[0] == "split api#1 into:"
    assert "  #2 Big (coordlib)" in out.stdout and "      README.md, setup.cfg" in out.stdout
    assert f"its last worker said: {stuck}" in out.stdout
    assert out.stdout.rstrip().endswith("api#1 waits for them (status:waiting)")
    shown = json.loads(invoke(config, "issue", "show", "api", str(n), "--json").stdout)
    assert shown["labels"] == [WAITING]
    assert f"> {stuck}" in shown["comments"][0]["body"]
    unknown = invoke(config, "split", "api-9-zzzz")
    assert unknown.exit_code == 2


def test_cli_help_has_a_short_line_and_examples(config: Path) -> None:
    from coord_cli.split_cmd import split

    assert split.short_help is not None and len(split.short_help) <= 55
    out = invoke(config, "split", "--help")
    assert out.exit_code == 0 and "Examples:\n    coord split api#42 --dry-run\n" in out.stdout
    assert "split " in invoke(config, "--help").stdout
