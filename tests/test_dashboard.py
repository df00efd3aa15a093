"""The dashboard snapshot (`coordlib.dashboard`): columns, cards, actions, machines, spend."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from coordlib.assignment import Assignment, Status
from coordlib.dashboard import (
    COLUMNS,
    Action,
    Dashboard,
    actions_for,
    build,
    column_of_stage,
    gather,
    state_of,
)
from coordlib.forge.base import Issue
from coordlib.monitor import MachineStatus
from coordlib.pipeline.state import Pipeline
from coordlib.runtime.answers import Disk

from .conftest import Setup

NOW = 1_750_000_000.0


def row(id: str, issue: int, status: Status = Status.RUNNING, **kw: Any) -> Assignment:
    fields: dict[str, Any] = {
        "machine": "gpu", "repo": "api", "branch": f"issue-{issue}", "model": "claude-haiku-4-5",
        "tier": "haiku", "created_at": NOW - 600, "title": f"issue {issue}",
    }  # fmt: skip
    fields.update(kw)
    return Assignment(id=id, issue=issue, status=status, **fields)


def pipe(issue: int, stage: str, **kw: Any) -> Pipeline:
    return Pipeline(repo="api", issue=issue, stage=stage, title=f"pipe {issue}", **kw)


def columns(d: Dashboard, repo: str = "api") -> dict[str, list[int]]:
    r = next(x for x in d.repos if x.repo == repo)
    return {name: [c.issue for c in cards] for name, cards in r.columns.items() if cards}


def test_the_columns_are_the_sections_of_coord_issues() -> None:
    assert COLUMNS == ("New", "Refining", "Pending", "In progress", "Review", "Ready to merge",
                       "Done", "Needs human")  # fmt: skip


@pytest.mark.parametrize(
    ("stage", "column"),
    [("work", "In progress"), ("test", "In progress"), ("pr", "In progress"),
     ("fix", "In progress"), ("review", "Review"), ("ready-to-merge", "Ready to merge"),
     ("needs-human", "Needs human"), ("merged", "Done")],
)  # fmt: skip
def test_each_pipeline_stage_has_its_column(stage: str, column: str) -> None:
    assert column_of_stage(stage) == column
    assert column_of_stage("audit", review_stages=["audit"]) == "Review"


def test_cards_come_from_pipelines_then_assignments_then_the_forge() -> None:
    a1 = row("api-1-aaaa", 1, stage="work")
    a2 = row("api-2-bbbb", 2, Status.DONE, finished_at=NOW - 60, cost_usd=0.5)
    a3 = row("api-3-cccc", 3, Status.FAILED, finished_at=NOW - 30)
    a4 = row("api-4-dddd", 4)  # no pipeline, live
    p1 = pipe(1, "work", current="api-1-aaaa", assignments={"work": ["api-1-aaaa"]})
    p2 = pipe(2, "ready-to-merge", pr=7, assignments={"work": ["api-2-bbbb"]},
              costs={"api-2-bbbb": ["haiku", 0.5]})  # fmt: skip
    p5 = pipe(5, "needs-human", reason="STUCK: need a key")
    issues = {"api": [
        Issue(1, "one, as the forge has it"), Issue(6, "fresh"),
        Issue(7, "refine me", labels=("status:refining",)),
        Issue(8, "ready", labels=("status:ready",)),
        Issue(9, "old", state="closed"),
    ]}  # fmt: skip
    d = build(repos=["api"], assignments=[a1, a2, a3, a4], pipelines=[p1, p2, p5],
              issues=issues, now=NOW)  # fmt: skip
    assert columns(d) == {
        "New": [6], "Refining": [7], "Pending": [3, 8], "In progress": [1, 4],
        "Ready to merge": [2], "Done": [9], "Needs human": [5],
    }  # fmt: skip
    one = d.card("api", 1)
    assert one is not None and one.title == "one, as the forge has it"
    assert one.assignment == "api-1-aaaa" and one.state == "running" and one.machine == "gpu"
    human = d.card("api", 5)
    assert human is not None and human.needs_human == "STUCK: need a key"
    ready = d.card("api", 2)
    assert ready is not None and ready.pr == 7 and ready.cost_usd == 0.5
    assert d.card_of("api-4-dddd") == d.card("api", 4)


def test_a_review_stage_goes_to_review_and_its_ended_review_can_be_bounced() -> None:
    w = row("api-1-work", 1, Status.DONE, stage="work", created_at=NOW - 900)
    r = row("api-1-rev", 1, Status.DONE, stage="review", created_at=NOW - 300,
            result="VERDICT: approve")  # fmt: skip
    p = pipe(1, "ready-to-merge", pr=3,
             assignments={"work": ["api-1-work"], "review": ["api-1-rev"]})  # fmt: skip
    live_review = row("api-2-rev", 2, Status.RUNNING, stage="review")
    p2 = pipe(2, "review", current="api-2-rev", assignments={"review": ["api-2-rev"]})
    d = build(repos=["api"], assignments=[w, r, live_review], pipelines=[p, p2], now=NOW)
    one, two = d.card("api", 1), d.card("api", 2)
    assert one is not None and two is not None
    assert one.column == "Ready to merge" and one.review == "api-1-rev"
    assert one.actions == ("bounce", "merge")
    assert two.column == "Review" and two.actions == ("stop",)


@pytest.mark.parametrize(
    ("column", "state", "extra", "want"),
    [
        ("In progress", "running", {}, ("stop",)),
        ("In progress", "stuck", {}, ("stop",)),
        ("In progress", "pending", {}, ("stop",)),
        ("Pending", "failed", {}, ("retry",)),
        ("Pending", "lost", {}, ("retry",)),
        ("In progress", "queued", {}, ("retry",)),
        ("Done", "done", {}, ()),
        ("Done", "failed", {"review": "r1"}, ()),
        ("Needs human", "done", {}, ("retry",)),
        ("Needs human", "done", {"review": "r1"}, ("retry", "bounce")),
        ("Ready to merge", "done", {"stage": "ready-to-merge", "pr": 4}, ("merge",)),
        ("Ready to merge", "done", {"stage": "ready-to-merge"}, ()),  # no PR: nothing to land
        ("Pending", None, {"proposal": "p1"}, ("approve",)),
        ("New", None, {"proposal": "p2"}, ("approve",)),
        ("In progress", "running", {"proposal": "p1"}, ("stop",)),
        ("New", None, {}, ()),
    ],
)  # fmt: skip
def test_which_actions_each_card_allows(
    column: str, state: str | None, extra: dict[str, Any], want: tuple[str, ...]
) -> None:
    assert actions_for(column, state=state, **extra) == want
    assert all(x in set(Action) for x in want)


def test_a_stored_proposal_makes_a_pending_issue_approvable() -> None:
    issues = {"api": [Issue(8, "ready", labels=("status:ready",))]}
    proposals = [{"id": "p1", "repo": "api", "issue": 8, "machine": "gpu"},
                 {"id": "p0", "repo": "api", "issue": 9, "superseded": True}]  # fmt: skip
    d = build(repos=["api"], assignments=[], issues=issues, proposals=proposals, now=NOW)
    card = d.card("api", 8)
    assert card is not None and card.proposal == "p1" and card.actions == ("approve",)


def test_a_live_worker_that_wrote_stuck_reads_as_stuck() -> None:
    a = row("api-1-aaaa", 1, last_status="STUCK: which API key?")
    assert state_of(a) == "stuck"
    assert state_of(row("api-2-bbbb", 2, Status.DONE, last_status="STUCK: x")) == "done"


def test_machines_from_the_status_pass_or_unknown_before_one() -> None:
    a = row("api-1-aaaa", 1)
    before = build(repos=["api"], assignments=[a], machine_names=["gpu", "mac"], now=NOW)
    assert [(m.name, m.reachable, m.running) for m in before.machines] == [
        ("gpu", None, 1), ("mac", None, 0)]  # fmt: skip
    seen = [
        MachineStatus("gpu", True, running=1, seen_at=NOW, disk=Disk(2048, 10_000_000, NOW)),
        MachineStatus("mac", False, "mac: no answer within 10 s", state="timeout", stale=True),
    ]
    after = build(repos=["api"], assignments=[a], machines=seen, now=NOW, polled_at=NOW)
    gpu, mac = after.machines
    assert (gpu.reachable, gpu.running, gpu.disk_used_kb, gpu.disk_free_kb) == (
        True, 1, 2048, 10_000_000)  # fmt: skip
    assert (mac.reachable, mac.state, mac.stale, mac.disk_used_kb) == (False, "timeout", True,
                                                                       None)  # fmt: skip


def test_spend_today_per_issue_per_tier_and_in_time() -> None:
    midnight = time.mktime((*time.localtime(NOW)[:3], 0, 0, 0, 0, 0, -1))
    rows = [
        row("api-1-a", 1, Status.DONE, cost_usd=0.25, created_at=midnight + 3600),
        row("api-1-b", 1, Status.DONE, cost_usd=0.5, tier="sonnet", created_at=midnight + 7300),
        row("api-2-c", 2, Status.DONE, cost_usd=1.0, created_at=midnight - 3600),  # yesterday
        row("api-3-d", 3, Status.FAILED, cost_usd=None),
    ]
    archived = [{"id": "api-9-z", "repo": "api", "issue": 9, "cost_usd": 2.0, "tier": "opus",
                 "created_at": midnight - 86400 * 3, "status": "done"}]  # fmt: skip
    d = build(repos=["api"], assignments=rows, history=archived, now=NOW)
    s = d.spend
    assert s.today_usd == 0.75 and s.total_usd == 3.75
    assert s.by_issue == {"api#1": 0.75, "api#2": 1.0, "api#9": 2.0}
    assert s.by_tier == {"haiku": 1.25, "opus": 2.0, "sonnet": 0.5}
    assert [p.assignment for p in s.points] == ["api-9-z", "api-2-c", "api-1-a", "api-1-b"]
    hourly = s.series(3600)
    assert [b["usd"] for b in hourly] == [2.0, 1.0, 0.25, 0.5]
    daily = s.series(86400)
    assert sum(b["usd"] for b in daily) == 3.75
    assert daily[-1]["by_tier"] == {"haiku": 0.25, "sonnet": 0.5} or len(daily) >= 3
    with pytest.raises(ValueError):
        s.series(0)


def test_the_done_column_shows_the_newest_and_counts_the_rest() -> None:
    rows = [row(f"api-{n}-x", n, Status.DONE, finished_at=NOW - n) for n in range(1, 31)]
    d = build(repos=["api"], assignments=rows, now=NOW, done_shown=5)
    r = d.repos[0]
    assert [c.issue for c in r.columns["Done"]] == [1, 2, 3, 4, 5]
    assert r.hidden == {"Done": 25}


def test_to_dict_is_json_with_every_column_in_order() -> None:
    p = pipe(1, "review", current="api-1-r", assignments={"review": ["api-1-r"]})
    d = build(repos=["api", "web"], assignments=[row("api-1-r", 1, stage="review")],
              pipelines=[p], machine_names=["gpu"], now=NOW)  # fmt: skip
    data = json.loads(json.dumps(d.to_dict()))
    assert data["columns"] == list(COLUMNS)
    assert [r["repo"] for r in data["repos"]] == ["api", "web"]
    api = data["repos"][0]
    assert [c["name"] for c in api["columns"]] == list(COLUMNS)
    review = next(c for c in api["columns"] if c["name"] == "Review")
    card = review["cards"][0]
    assert card["key"] == "api#1" and card["actions"] == ["stop"] and card["age_s"] == 600.0
    assert data["machines"][0]["name"] == "gpu" and data["machines"][0]["reachable"] is None


def test_gather_reads_a_real_board(setup: Setup) -> None:
    """From a Coordinator: its board's rows and pipelines and the playbook's review stage."""
    setup.add_local("local")
    c = setup.coordinator()
    c.board.insert(row("api-5-eeee", 5, machine="local", stage="review").to_dict()
                   | {"created_at": time.time()})  # fmt: skip
    with c.board.transaction() as txn:
        from coordlib.board_pipelines import put_pipeline

        put_pipeline(txn, pipe(5, "review", current="api-5-eeee",
                               assignments={"review": ["api-5-eeee"]}))  # fmt: skip
    d = gather(c)
    card = d.card("api", 5)
    assert card is not None and card.column == "Review" and card.actions == ("stop",)
    assert [m.name for m in d.machines] == ["local"] and d.machines[0].running == 1
    assert d.errors == []
