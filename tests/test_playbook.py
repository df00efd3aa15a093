"""Playbooks: the shipped one, a user's edited copy, and every mistake named by file:line."""

from __future__ import annotations

import configparser
import dataclasses
import json
import os
from pathlib import Path

import pytest

from coordlib.errors import ConfigError
from coordlib.playbook import (
    DEFAULT_PLAYBOOK,
    ENDS,
    NEEDS_HUMAN,
    READY,
    Playbook,
    Stage,
    load_playbook,
    parse_playbook,
)

ROOT = Path(__file__).resolve().parent.parent

# The smallest useful playbook; each broken one below changes a line or two of it.
BASE = """\
name: p
start: work
stages:
  work:
    run: worker
    briefing: work
    tools: [Read]
    next: {done: pr}
  pr:
    run: pr
    next: {opened: ready-to-merge}
"""


def edit(changes: dict[int, str]) -> str:
    """Return BASE with line n (1-based) replaced by changes[n] ("" drops it; "\\n" adds)."""
    lines = BASE.splitlines()
    for n, text in changes.items():
        lines[n - 1] = text
    return "\n".join(line for line in lines if line) + "\n"


# --- the shipped playbook ----------------------------------------------------------------------


def test_the_shipped_playbook_has_the_issue_to_pr_stages() -> None:
    pb = load_playbook()
    assert pb.path == DEFAULT_PLAYBOOK
    assert (pb.name, pb.max_rounds, pb.start) == ("issue-to-pr", 3, "work")
    assert list(pb.stages) == ["work", "test", "pr", "review", "fix"]
    assert {n: s.run for n, s in pb.stages.items()} == {
        "work": "worker",
        "test": "test",
        "pr": "pr",
        "review": "worker",
        "fix": "worker",
    }
    edit_tools = ("Read", "Edit", "Write", "Bash", "Glob", "Grep")
    assert pb.stage("work") == Stage(
        "work",
        "worker",
        briefing="work",
        model="label",
        tools=edit_tools,
        next={"done": "test", "failed": NEEDS_HUMAN, "empty": "fix", "uncommitted": "fix"},
    )
    assert pb.stage("fix").next["empty"] == "fix" and pb.stage("fix").next["uncommitted"] == "fix"
    review = pb.stage("review")
    assert (review.briefing, review.model, review.verdict, review.round) == (
        "review",
        "reviewer",
        True,
        False,
    )
    assert "Edit" not in review.tools and "Write" not in review.tools
    fix = pb.stage("fix")
    assert (fix.briefing, fix.model, fix.tools, fix.round) == ("fix", "escalate", edit_tools, True)
    assert pb.stage("test").briefing is None and pb.stage("test").tools == ()
    lines = DEFAULT_PLAYBOOK.read_text().splitlines()
    for name, stage in pb.stages.items():
        assert lines[stage.line - 1] == f"  {name}:"


@pytest.mark.parametrize(
    ("stage", "outcome", "then"),
    [
        ("work", "done", "test"),
        ("work", "failed", NEEDS_HUMAN),
        ("work", "empty", "fix"),
        ("work", "uncommitted", "fix"),
        ("test", "passed", "pr"),
        ("test", "failed", "fix"),
        ("pr", "opened", "review"),
        ("review", "approve", READY),
        ("review", "request-changes", "fix"),
        ("review", "no-verdict", "review"),
        ("review", "failed", NEEDS_HUMAN),
        ("fix", "done", "test"),
        ("fix", "failed", NEEDS_HUMAN),
    ],
)
def test_the_shipped_transitions(stage: str, outcome: str, then: str) -> None:
    assert load_playbook().after(stage, outcome) == then


def test_every_outcome_of_every_stage_leads_somewhere() -> None:
    pb = load_playbook()
    for stage in pb.stages.values():
        assert tuple(stage.next) == stage.outcomes()
        assert all(t in pb.stages or t in ENDS for t in stage.next.values())


def test_the_playbooks_folder_links_to_the_shipped_file() -> None:
    link = ROOT / "playbooks" / "issue-to-pr.yml"
    assert link.is_symlink()
    assert os.readlink(link) == "../coordlib/playbooks/issue-to-pr.yml"
    assert link.resolve() == DEFAULT_PLAYBOOK.resolve()
    assert load_playbook(link).to_dict() == load_playbook().to_dict()


def test_the_package_ships_the_playbook() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert "playbooks/*.yml" in cfg["options.package_data"]["coordlib"]
    assert DEFAULT_PLAYBOOK.is_file() and not DEFAULT_PLAYBOOK.is_symlink()


def test_to_dict_is_json_and_reads_back_as_the_same_playbook() -> None:
    pb = load_playbook()
    text = json.dumps(pb.to_dict())
    again = parse_playbook(text, "<json>")
    assert again == pb and again.path is None
    assert json.loads(text)["stages"]["review"]["next"]["no-verdict"] == "review"


def test_a_playbook_is_frozen_and_hashable() -> None:
    pb = load_playbook()
    with pytest.raises(dataclasses.FrozenInstanceError):
        pb.start = "fix"  # type: ignore[misc]
    with pytest.raises(TypeError):
        pb.stage("work").next["done"] = "pr"  # type: ignore[index]
    assert hash(pb) == hash(load_playbook())


# --- a user's copy -----------------------------------------------------------------------------


def test_a_copy_without_review_loads(tmp_path: Path) -> None:
    text = DEFAULT_PLAYBOOK.read_text()
    head, rest = text.split("  review:\n")
    _, fix = rest.split("  fix:\n")
    text = (head + "  fix:\n" + fix).replace("{opened: review}", "{opened: ready-to-merge}")
    path = tmp_path / "no-review.yml"
    path.write_text(text.replace("name: issue-to-pr", "name: no-review"))
    pb = load_playbook(path)
    assert (pb.name, pb.path) == ("no-review", path)
    assert list(pb.stages) == ["work", "test", "pr", "fix"]
    assert pb.after("pr", "opened") == READY
    assert pb.after("test", "failed") == "fix"


def test_left_out_failures_go_to_a_person() -> None:
    pb = parse_playbook(BASE)
    assert isinstance(pb, Playbook) and pb.max_rounds == 3
    assert pb.after("work", "failed") == NEEDS_HUMAN
    text = edit(
        {
            8: "    verdict: true",
            9: "    next: {approve: pr, request-changes: work}\n  pr:",
        }
    )
    assert parse_playbook(text).after("work", "no-verdict") == NEEDS_HUMAN


def test_anchors_and_merge_keys_work_as_in_yaml() -> None:
    text = edit(
        {
            4: "  work: &worker",
            8: "    next: {done: again}",
            9: "  again:\n    <<: *worker\n    briefing: fix\n    next: {done: pr}\n  pr:",
        }
    )
    pb = parse_playbook(text)
    again = pb.stage("again")
    assert (again.briefing, again.tools, again.line) == ("fix", ("Read",), 9)
    assert pb.after("work", "done") == "again" and pb.after("again", "done") == "pr"


def test_asking_for_what_is_not_there_names_the_playbook(tmp_path: Path) -> None:
    pb = load_playbook()
    with pytest.raises(ConfigError, match=r"playbook 'issue-to-pr': no stage 'reveiw'") as exc:
        pb.stage("reveiw")
    assert exc.value.path == str(DEFAULT_PLAYBOOK) and "did you mean 'review'" in str(exc.value)
    with pytest.raises(ConfigError, match=r"stage 'test' has no outcome 'done'") as exc:
        pb.after("test", "done")
    assert exc.value.line == pb.stage("test").line and "passed, failed" in str(exc.value)
    with pytest.raises(ConfigError, match="no stage 'needs-human'"):
        pb.after(NEEDS_HUMAN, "done")


def test_a_missing_or_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no playbook here") as exc:
        load_playbook(tmp_path / "nope.yml")
    assert exc.value.path == str(tmp_path / "nope.yml") and exc.value.hint
    bad = tmp_path / "latin1.yml"
    bad.write_bytes(b"name: p\nstart: w\xe9rk\n")
    with pytest.raises(ConfigError, match=r"latin1.yml:2: not UTF-8 text"):
        load_playbook(bad)
    with pytest.raises(ConfigError, match="cannot read the playbook"):
        load_playbook(tmp_path)


# --- every mistake, with its file:line and key -------------------------------------------------

BROKEN = [
    # (id, text, line, key, words in the message)
    ("syntax", edit({7: "    tools: [Read"}), 8, None, "YAML syntax error"),
    ("indent", edit({6: "     briefing: work"}), 6, None, "YAML syntax error"),
    ("control-char", edit({1: "name: p\x07"}), 1, None, "YAML error"),
    ("empty", "# nothing yet\n", 1, None, "the playbook is empty"),
    ("not-a-mapping", "- work\n- pr\n", 1, None, "expected a mapping of playbook keys"),
    ("unknown-top", BASE + "max_round: 2\n", 12, "max_round", "did you mean 'max_rounds'"),
    ("twice-top", edit({2: "start: work\nname: q"}), 3, "name", "given twice (also on line 1)"),
    ("no-name", edit({1: ""}), 1, "name", "missing; every playbook needs one"),
    ("bad-name", edit({1: "name: my playbook"}), 1, "name", "not a valid name"),
    ("no-start", edit({2: ""}), 1, "start", "missing"),
    ("no-stages", "name: p\nstart: work\n", 1, "stages", "missing"),
    ("no-stages-at-all", "name: p\nstart: work\nstages: {}\n", 3, "stages", "no stages"),
    ("stages-list", "name: p\nstart: work\nstages: [work]\n", 3, "stages", "expected a mapping"),
    ("rounds-zero", BASE + "max_rounds: 0\n", 12, "max_rounds", "an integer of at least 1"),
    ("rounds-text", BASE + "max_rounds: three\n", 12, "max_rounds", "got 'three'"),
    ("stage-name", edit({9: "  p r:"}), 9, "stages.p r", "not a valid name"),
    ("stage-is-end", edit({9: "  needs-human:"}), 9, "stages.needs-human", "an end of"),
    ("stage-twice", edit({9: "  work:"}), 9, "stages.work", "given twice (also on line 4)"),
    ("unknown-key", edit({7: "    tool: [Read]"}), 7, "stages.work.tool", "did you mean 'tools'"),
    ("key-twice", edit({6: "    run: pr"}), 6, "stages.work.run", "given twice (also on line 5)"),
    ("stage-scalar", edit({9: "  pr: 1", 10: "", 11: ""}), 9, "stages.pr", "a mapping"),
    ("stage-null", edit({10: "", 11: ""}), 9, "stages.pr.run", "missing"),
    ("no-run", edit({10: ""}), 10, "stages.pr.run", "missing; every stage needs one"),
    ("bad-run", edit({10: "    run: tests"}), 10, "stages.pr.run", "did you mean 'test'"),
    ("no-briefing", edit({6: ""}), 5, "stages.work.briefing", "missing; every worker stage"),
    ("bad-briefing", edit({6: "    briefing: ../work"}), 6, "stages.work.briefing", "template's"),
    ("pr-briefing", BASE + "    briefing: pr\n", 12, "stages.pr.briefing", "only worker stages"),
    ("pr-model", BASE + "    model: opus\n", 12, "stages.pr.model", "only worker stages"),
    ("no-tools", edit({7: ""}), 5, "stages.work.tools", "missing; every worker stage"),
    ("no-tools-listed", edit({7: "    tools: []"}), 7, "stages.work.tools", "empty"),
    ("tools-scalar", edit({7: "    tools: Read"}), 7, "stages.work.tools", "write [Read]"),
    ("bad-tool", edit({7: "    tools: [Read, rm -rf]"}), 7, "stages.work.tools[1]", "tool name"),
    ("tool-twice", edit({7: "    tools: [Read, Read]"}), 7, "stages.work.tools[1]", "twice"),
    ("test-tools", BASE + "    tools: [Read]\n", 12, "stages.pr.tools", "only worker stages"),
    ("bad-model", edit({7: "    tools: [Read]\n    model: opus 4"}), 8, "stages.work.model", ""),
    ("pr-verdict", BASE + "    verdict: true\n", 12, "stages.pr.verdict", "only worker"),
    ("verdict-word", edit({7: "    tools: [Read]\n    verdict: sure"}), 8, "", "true or false"),
    ("pr-round", BASE + "    round: true\n", 12, "stages.pr.round", "only worker stages"),
    ("no-next", edit({11: ""}), 10, "stages.pr.next", "missing; every stage needs one"),
    ("next-list", edit({11: "    next: [ready-to-merge]"}), 11, "stages.pr.next", "a mapping"),
    (
        "bad-outcome",
        edit({8: "    next: {done: pr, approve: pr}"}),
        8,
        "stages.work.next.approve",
        "outcomes of a worker stage: done, failed",
    ),
    ("outcome-twice", edit({8: "    next: {done: pr, done: work}"}), 8, "", "given twice"),
    ("no-opened", edit({11: "    next: {}"}), 11, "stages.pr.next", "nowhere to go after opened"),
    (
        "no-approve",
        edit({7: "    tools: [Read]\n    verdict: true", 8: "    next: {request-changes: pr}"}),
        9,
        "stages.work.next",
        "after approve",
    ),
    ("bad-target", edit({8: "    next: {done: prr}"}), 8, "stages.work.next.done", "mean 'pr'"),
    ("empty-target", edit({8: "    next: {done: }"}), 8, "stages.work.next.done", "a string"),
    ("bad-start", edit({2: "start: wrok"}), 2, "start", "did you mean 'work'"),
    ("start-at-end", edit({2: "start: ready-to-merge"}), 2, "start", "unknown stage"),
    (
        "unreachable",
        BASE + "  extra:\n    run: test\n    next: {passed: pr}\n",
        12,
        "stages.extra",
        "not reachable from start 'work'",
    ),
    (
        "never-ready",
        edit({11: "    next: {opened: needs-human}"}),
        3,
        "stages",
        "no outcome leads to ready-to-merge",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "key", "words"), [case[1:] for case in BROKEN], ids=[c[0] for c in BROKEN]
)
def test_a_mistake_is_named_by_file_line_and_key(
    text: str, line: int, key: str | None, words: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_playbook(text, "my.yml")
    error = exc.value
    assert str(error).startswith(f"my.yml:{line}: "), str(error)
    if key:
        assert error.key == key and error.message.startswith(f"{key}: "), str(error)
    assert words in str(error)
    assert error.hint, f"no fix offered: {error}"


def test_a_file_is_named_by_its_path(tmp_path: Path) -> None:
    path = tmp_path / "pb.yml"
    path.write_text(edit({8: "    next: {done: rp}"}))
    with pytest.raises(ConfigError, match=rf"^{path}:8: stages\.work\.next\.done: unknown stage"):
        load_playbook(path)
