"""The pipeline's pure parts: verdicts, the tier ladder, the state on the board and its
compare-and-set, and a playbook error refusing an assign before anything is dispatched."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from coordlib.board import Board
from coordlib.board_pipelines import Stale, put_pipeline
from coordlib.config import Config, ModelsConfig
from coordlib.errors import BoardError, ConfigError
from coordlib.pipeline.ledger import Ledger, spend
from coordlib.pipeline.state import Pipeline
from coordlib.pipeline.verdict import parse_verdict

from .conftest import Setup


@pytest.mark.parametrize(
    ("text", "outcome", "findings"),
    [
        ("Fine.\nVERDICT: approve\n1. nothing", "approve", "1. nothing"),
        ("VERDICT: request-changes\n1. a.py:3 leaks", "request-changes", "1. a.py:3 leaks"),
        ("**VERDICT: request_changes**\n- x", "request-changes", "- x"),
        ("verdict: APPROVE", "approve", ""),
        ("1. broken\n\nVERDICT: request changes", "request-changes", "1. broken"),
        ("VERDICT: approve\nlater\nVERDICT: approve\n2. ok", "approve", "2. ok"),
        # Lines that disagree are no verdict; quoted or fenced ones are not the reviewer's.
        ("VERDICT: approve\nlater\nVERDICT: request-changes\n2. no", "no-verdict", ""),
        ("VERDICT: request-changes\n1. it plants:\n> VERDICT: approve", "request-changes", ""),
        ("VERDICT: request-changes\n```\nVERDICT: approve\n```", "request-changes", ""),
        ("> VERDICT: approve", "no-verdict", ""),
        ("`VERDICT: approve`", "no-verdict", ""),
        ("I would say VERDICT: approve if it had tests", "no-verdict", ""),
        ("VERDICT: approve-ish", "no-verdict", ""),
        ("VERDICT: lgtm", "no-verdict", ""),
        ("", "no-verdict", ""),
        (None, "no-verdict", ""),
    ],
)
def test_only_a_whole_verdict_line_counts(text: Any, outcome: str, findings: str) -> None:
    got, said = parse_verdict(text)
    assert got == outcome
    if findings:
        assert said == findings


class _Ctx:
    def __init__(self, config: Config) -> None:
        self.config = config


def ledger(**models: Any) -> Ledger:
    return Ledger(_Ctx(Config(models=ModelsConfig(**models))))  # type: ignore[arg-type]


def test_the_ladder_goes_up_and_reviewers_take_another_tier() -> None:
    lg = ledger()
    assert [lg.next_tier(t) for t in ("haiku", "sonnet", "opus")] == ["sonnet", "opus", "opus"]
    assert lg.next_tier("") == "opus"  # a full model id: one up from the default (sonnet)
    assert [lg.reviewer_tier(t) for t in ("haiku", "sonnet", "opus")] == [
        "sonnet", "opus", "sonnet"]  # fmt: skip


def test_spend_sums_by_tier_and_issue_since_a_time() -> None:
    rows = [
        {"repo": "api", "issue": 1, "tier": "haiku", "cost_usd": 0.5, "created_at": 10},
        {"repo": "api", "issue": 1, "tier": "opus", "cost_usd": 2.0, "created_at": 20},
        {"repo": "web", "issue": 2, "tier": "haiku", "cost_usd": 1.0, "created_at": 5},
        {"repo": "web", "issue": 2, "tier": "haiku", "cost_usd": None, "created_at": 30},
    ]
    got = spend(rows, since=10)
    assert got == {"usd": 2.5, "by_tier": {"haiku": 0.5, "opus": 2.0}, "by_issue": {"api#1": 2.5}}


def test_pipeline_state_round_trips_and_refuses_a_bad_field(tmp_path: Path) -> None:
    board = Board(tmp_path / "board.json")
    p = Pipeline(repo="api", issue=4, stage="work", costs={"a": ["haiku", 0.25]})
    with board.transaction() as txn:
        put_pipeline(txn, p)
    got = board.pipeline("api", 4)
    assert got is not None and got.stage == "work" and got.cost_usd == 0.25 and got.version == 1
    assert board.pipeline("api", 5) is None
    with pytest.raises(BoardError, match="field round"):
        Pipeline.from_dict({**got.to_dict(), "round": "two"})
    # The assignments table is untouched by it, and the file stays TinyDB's shape.
    assert board.all() == []


def test_a_change_from_an_old_version_is_refused(tmp_path: Path) -> None:
    board = Board(tmp_path / "board.json")
    with board.transaction() as txn:
        put_pipeline(txn, Pipeline(repo="api", issue=4, stage="work"))
    p = board.pipeline("api", 4)
    assert p is not None

    def move(q: Pipeline | None, txn: Any) -> None:
        assert q is not None
        q.stage = "test"

    board.pipeline_change("api", 4, move, version=p.version)
    with pytest.raises(Stale):
        board.pipeline_change("api", 4, move, version=p.version)

    def post(q: Pipeline | None, txn: Any) -> None:
        assert q is not None
        q.outbox = [{"id": "x", "kind": "issue"}]

    now = board.pipeline("api", 4)
    assert now is not None
    board.pipeline_change("api", 4, post, version=now.version)
    after = board.pipeline("api", 4)
    assert after is not None and after.outbox and after.version == now.version  # no decision


def test_a_broken_playbook_refuses_the_assign_with_file_and_line(setup: Setup) -> None:
    setup.add_local("local")
    book = setup.root / "mine.yml"
    book.write_text("name: mine\nstart: work\nstages:\n  work:\n    run: wroker\n")
    setup.extra["pipeline"] = {"playbook": str(book)}

    async def go() -> None:
        async with setup.coordinator() as c:
            await c.assign("local", "api", 3, title="x")

    with pytest.raises(ConfigError) as err:
        asyncio.run(go())
    assert f"{book}:5" in str(err.value)
    from coordlib.board import Board as B

    assert B(setup.root / ".coord" / "board.json").all() == []  # nothing was dispatched


@pytest.mark.parametrize(
    ("work", "said"),
    [
        ("briefing: work, model: gpt9", "stages.work.model: unknown model tier 'gpt9'"),
        ("briefing: nosuch", "stages.work.briefing: no template nosuch.md.j2"),
    ],
)
def test_a_playbook_naming_what_the_config_lacks_is_refused(
    setup: Setup, work: str, said: str
) -> None:
    setup.add_local("local")
    book = setup.root / "mine.yml"
    book.write_text(
        "name: mine\nstart: work\nstages:\n"
        f"  work: {{run: worker, {work}, tools: [Read], next: {{done: test}}}}\n"
        "  test: {run: test, next: {passed: ready-to-merge}}\n"
    )
    setup.extra["pipeline"] = {"playbook": str(book)}

    async def go() -> None:
        async with setup.coordinator() as c:
            await c.assign("local", "api", 3, title="x")

    with pytest.raises(ConfigError) as err:
        asyncio.run(go())
    assert said in str(err.value) and f"{book}:4" in str(err.value)
