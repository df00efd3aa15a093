"""`coord report`: every figure from a board built by hand, the hands-off rule on its own,
the edges (an empty board, --since, bad arguments, no moves), and the figures of a real
pipeline run taken to merged by the stand-in worker."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from coord_cli.main import coord
from coordlib.assignment import Assignment, Status
from coordlib.board import Board
from coordlib.board_pipelines import PIPELINES
from coordlib.errors import UsageError
from coordlib.metrics import build_report, hands_off, nearest_rank, parse_since
from coordlib.metrics_format import render_markdown, render_text
from coordlib.pipeline.state import Pipeline

from .conftest import Setup

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC: the board's first row
NOW = T0 + 10_000.0
SLOTS = {"m1": 2, "m2": 1}
KEYS = {
    "issues", "merged", "in_flight", "ready_to_merge", "needs_human", "merge_rate",
    "hands_off", "hands_off_unknown", "hands_off_share", "rounds_mean", "rounds_max",
    "reviews_per_issue", "fix_runs_per_issue", "cost_usd", "cost_per_merged_usd",
    "cost_by_tier", "dispatch_to_merge_p50_s", "dispatch_to_merge_p90_s",
}  # fmt: skip


def run(
    id: str,
    machine: str,
    stage: str | None,
    created: float,
    busy: float | None,
    *,
    tier: str = "haiku",
    cost: float | None = None,
    outcome: tuple[str, str] | None = None,
    failure: str | None = None,
    status: Status = Status.DONE,
) -> Assignment:
    """A run of `busy` seconds (None: it never started) starting 10 s after its creation;
    one with a failure class failed."""
    repo, issue = id.split("-")[:2]
    a = Assignment(id=id, machine=machine, repo=repo, issue=int(issue), branch=f"b{issue}",
                   model=f"claude-{tier}", tier=tier, stage=stage, created_at=created,
                   cost_usd=cost, failure_class=failure, status=status)  # fmt: skip
    if busy is not None:
        a.started_at = created + 10
        a.finished_at = a.started_at + busy if status != Status.RUNNING else None
    if status == Status.DONE and (failure or busy is None):
        a.status = Status.FAILED
    if outcome is not None:
        a.outcome = {"start": outcome[0], "head": outcome[1], "commits": 1}
    return a


def verdict(stage: str, outcome: str, at: float) -> dict[str, Any]:
    return {"stage": stage, "outcome": outcome, "at": at}


def landed(at: float) -> dict[str, Any]:
    return {"at": at, "from": "ready-to-merge", "to": "merged", "outcome": "landed"}


def pipelines() -> list[Pipeline]:
    rc, ok = "request-changes", "approve"
    return [
        # api#1: work, review (changes), fix, review (approve), merged; all by its workers.
        Pipeline(repo="api", issue=1, stage="merged", round=1, created_at=T0, updated_at=T0 + 950,
                 assignments={"work": ["api-1-w"], "review": ["api-1-r", "api-1-s"],
                              "fix": ["api-1-f"]},
                 verdicts=[verdict("test", "passed", T0 + 300), verdict("review", rc, T0 + 400),
                           verdict("review", ok, T0 + 800), verdict("merge", "landed", T0 + 900)],
                 moves=[{"at": T0 + 400, "from": "review", "to": "fix", "outcome": rc},
                        landed(T0 + 900)],
                 costs={"api-1-w": ["haiku", 0.5], "api-1-r": ["sonnet", 0.25],
                        "api-1-f": ["haiku", 0.75], "api-1-s": ["sonnet", 0.25]},
                 head_sha="h2", tested_sha="h2", merged_sha="m1"),
        # api#2: merged, but a person pushed to the branch after the work (h9, not h5).
        Pipeline(repo="api", issue=2, stage="merged", created_at=T0 + 100,
                 updated_at=T0 + 2100, assignments={"work": ["api-2-w"], "review": ["api-2-r"]},
                 verdicts=[verdict("review", ok, T0 + 1500)], moves=[landed(T0 + 2100)],
                 costs={"api-2-w": ["sonnet", 1.0], "api-2-r": ["opus", 0.5]}, head_sha="h9"),
        # web#3: merged with no moves kept (the landing verdict dates it); its work run left
        # no outcome facts (an older coordlib), and its fix's cost is not recorded yet.
        Pipeline(repo="web", issue=3, stage="merged", round=2, created_at=T0 + 300,
                 updated_at=T0 + 3250, assignments={"work": ["web-3-w"], "fix": ["web-3-f"]},
                 verdicts=[verdict("merge", "landed", T0 + 3250)],
                 costs={"web-3-w": ["haiku", 0.25]}, head_sha="h7"),
        Pipeline(repo="web", issue=4, stage="needs-human", round=3, created_at=T0 + 400,
                 updated_at=T0 + 5000, assignments={"work": ["web-4-w"],
                                                    "fix": ["web-4-f", "web-4-g", "web-4-h"]},
                 verdicts=[verdict("review", rc, T0 + 4000 + i) for i in range(3)],
                 costs={"web-4-w": ["haiku", 2.0]}, reason="past the cap of 3"),
        Pipeline(repo="api", issue=5, stage="ready-to-merge", created_at=T0 + 5500,
                 updated_at=T0 + 6000, assignments={"work": ["api-5-w"]},
                 verdicts=[verdict("review", ok, T0 + 5900)], costs={"api-5-w": ["sonnet", 0.3]}),
        Pipeline(repo="api", issue=6, stage="work", created_at=T0 + 8990, updated_at=T0 + 8990,
                 assignments={"work": ["api-6-w"]}),
    ]  # fmt: skip


def assignments() -> list[Assignment]:
    return [
        run("api-1-w", "m1", "work", T0, 300, outcome=("s0", "h1")),
        run("api-1-r", "m2", "review", T0 + 320, 60, tier="sonnet"),
        run("api-1-f", "m1", "fix", T0 + 420, 200, outcome=("h1", "h2")),
        run("api-1-s", "m2", "review", T0 + 700, 90, tier="sonnet", outcome=("h2", "h2")),
        run("api-2-w", "m1", "work", T0 + 100, 1000, tier="sonnet", outcome=("s0", "h5")),
        run("api-2-r", "m2", "review", T0 + 1200, 100, tier="opus"),
        run("web-3-w", "m2", "work", T0 + 250, 400),
        run("web-3-f", "m2", "fix", T0 + 1000, 100, cost=0.125, outcome=("h6", "h7")),
        run("web-4-w", "m1", "work", T0 + 400, 500, failure="uncommitted"),
        run("web-4-f", "m1", "fix", T0 + 2000, 50, failure="done_empty"),
        run("web-4-g", "m1", "fix", T0 + 2500, 50, failure="done_empty"),
        run("web-4-h", "m1", "fix", T0 + 3000, 50),
        run("api-5-w", "m2", "work", T0 + 5500, 300, tier="sonnet"),
        run("api-6-w", "m1", "work", T0 + 8990, None, status=Status.RUNNING),
        # Outside any pipeline: a plain run that stalled, and a dispatch that never started.
        run("api-7-x", "m2", None, T0 + 7000, 600, tier="opus", cost=0.2, failure="stalled"),
        run("api-8-x", "m1", None, T0 + 7500, None, failure="dispatch_failed"),
    ]


def rows() -> list[Assignment]:
    out = assignments()
    running = next(a for a in out if a.id == "api-6-w")
    running.started_at = T0 + 9000  # it runs still: busy until now
    return out


OVERALL = {
    "issues": 6, "merged": 3, "in_flight": 1, "ready_to_merge": 1, "needs_human": 1,
    "merge_rate": 0.75, "hands_off": 1, "hands_off_unknown": 1, "hands_off_share": 0.3333,
    "rounds_mean": 1.0, "rounds_max": 3, "reviews_per_issue": 1.1667,
    "fix_runs_per_issue": 0.8333, "cost_usd": 6.125, "cost_per_merged_usd": 1.2083,
    "cost_by_tier": {"haiku": 3.625, "opus": 0.7, "sonnet": 1.8},
    "dispatch_to_merge_p50_s": 2000.0, "dispatch_to_merge_p90_s": 3000.0,
}  # fmt: skip
API = {
    "issues": 4, "merged": 2, "in_flight": 1, "ready_to_merge": 1, "needs_human": 0,
    "merge_rate": 1.0, "hands_off": 1, "hands_off_unknown": 0, "hands_off_share": 0.5,
    "rounds_mean": 0.25, "rounds_max": 1, "reviews_per_issue": 1.0, "fix_runs_per_issue": 0.25,
    "cost_usd": 3.75, "cost_per_merged_usd": 1.625,
    "cost_by_tier": {"haiku": 1.25, "opus": 0.7, "sonnet": 1.8},
    "dispatch_to_merge_p50_s": 900.0, "dispatch_to_merge_p90_s": 2000.0,
}  # fmt: skip
WEB = {
    "issues": 2, "merged": 1, "in_flight": 0, "ready_to_merge": 0, "needs_human": 1,
    "merge_rate": 0.5, "hands_off": 0, "hands_off_unknown": 1, "hands_off_share": 0.0,
    "rounds_mean": 2.5, "rounds_max": 3, "reviews_per_issue": 1.5, "fix_runs_per_issue": 2.0,
    "cost_usd": 2.375, "cost_per_merged_usd": 0.375, "cost_by_tier": {"haiku": 2.375},
    "dispatch_to_merge_p50_s": 3000.0, "dispatch_to_merge_p90_s": 3000.0,
}  # fmt: skip
# m1: 300 + 200 + 1000 + 500 + 50 + 50 + 50 + 1000 (api-6-w, running since T0+9000) = 3150
# m2: 60 + 90 + 100 + 400 + 100 + 300 + 600 = 1650; the window is 10000 s from T0.
MACHINES = [
    {"name": "m2", "slots": 1, "runs": 7, "busy_seconds": 1650.0, "utilisation": 0.165},
    {"name": "m1", "slots": 2, "runs": 8, "busy_seconds": 3150.0, "utilisation": 0.1575},
]
FAILURES = {"done_empty": 2, "dispatch_failed": 1, "stalled": 1, "uncommitted": 1}


def test_every_figure_of_a_board_built_by_hand() -> None:
    got = build_report(pipelines(), rows(), now=NOW, slots=SLOTS, default_slots=8).to_dict()
    assert set(got["overall"]) == KEYS
    assert got == {"since": None, "until": NOW, "start": T0, "overall": OVERALL,
                   "repos": {"api": API, "web": WEB}, "machines": MACHINES,
                   "failures": FAILURES}  # fmt: skip


def test_the_text_and_markdown_forms_show_the_figures() -> None:
    report = build_report(pipelines(), rows(), now=NOW, slots=SLOTS, default_slots=8)
    text, md = render_text(report), render_markdown(report)
    lines = text.splitlines()
    assert lines[0] == (
        "coord report: everything on the board, 2023-11-14 22:13 UTC to 2023-11-15 01:00 UTC"
    )
    assert lines[2:4] == ["Issues", " " * 27 + "overall        api       web"]
    cells = {c[0]: c[1:] for c in (re.split(r"\s{2,}", ln.strip()) for ln in lines) if c[0]}
    assert cells["merged"] == ["3", "2", "1"]
    assert cells["needs human"] == ["1", "0", "1"]
    assert cells["merge rate"] == ["75.0%", "100.0%", "50.0%"]
    assert cells["hands-off"] == ["1 (33.3%)", "1 (50.0%)", "0 (0.0%)"]
    assert cells["hands-off unknown"] == ["1", "0", "1"]
    assert cells["rounds mean / max"] == ["1 / 3", "0.25 / 1", "2.5 / 3"]
    assert cells["reviews per issue"] == ["1.1667", "1", "1.5"]
    assert cells["fix runs per issue"] == ["0.8333", "0.25", "2"]
    assert cells["spent"] == ["$6.12", "$3.75", "$2.38"]  # cents, as `coord done` shows them
    assert cells["per merged issue"] == ["$1.21", "$1.62", "$0.38"]
    assert cells["dispatch to merge p50"] == ["33m20s", "15m00s", "50m00s"]
    assert cells["dispatch to merge p90"] == ["50m00s", "33m20s", "50m00s"]
    assert cells["haiku"] == ["$3.62", "$1.25", "$2.38"] and cells["opus"][-1] == "-"
    assert cells["m2"] == ["1", "7", "27m30s", "16.5%"]
    assert cells["m1"] == ["2", "8", "52m30s", "15.8%"]
    assert cells["done_empty"] == ["2"] and cells["uncommitted"] == ["1"]
    # Columns line up: every row of the first table is as wide as its header.
    table = lines[3:19]
    assert len({len(ln) for ln in table}) == 1, table
    assert md.startswith("## coord report: everything on the board")
    assert "|  | overall | api | web |" in md and "|---|--:|--:|--:|" in md
    assert "| merge rate | 75.0% | 100.0% | 50.0% |" in md
    assert "| hands-off | 1 (33.3%) | 1 (50.0%) | 0 (0.0%) |" in md
    assert "| per merged issue | $1.21 | $1.62 | $0.38 |" in md
    assert "| m2 | 1 | 7 | 27m30s | 16.5% |" in md
    assert "| dispatch_failed | 1 |" in md
    assert "### Spend by tier" in md and "### Machines" in md and "### Failures" in md


# --- the hands-off rule on its own ---------------------------------------------------------


def _chain(*facts: tuple[str, str] | None, stages: tuple[str, ...] = ()) -> list[Assignment]:
    return [
        run(f"api-1-{i}", "m1", (stages[i] if i < len(stages) else "fix"), T0 + i, 10,
            outcome=f)
        for i, f in enumerate(facts)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("runs", "landed_head", "expected"),
    [
        (_chain(("s", "a"), ("a", "b")), "b", True),
        (_chain(("s", "a"), ("a", "b")), None, True),  # no landed head recorded: the chain
        (_chain(("s", "a"), ("x", "b")), "b", False),  # someone committed x after a
        (_chain(("s", "a"), ("a", "b")), "c", False),  # someone committed after b
        (_chain(("s", "a"), ("a", "a"), ("a", "b")), "b", True),  # a fix that made nothing
        (_chain(("s", "a"), ("z", "z"), ("a", "b")), "b", True),  # only movers must chain
        (_chain(("s", "a"), ("q", "q"), stages=("work", "review")), "a", True),
        (_chain(("s", "a"), None), "a", None),  # a run without outcome facts: unknown
        (_chain(("s", "a"), None, stages=("work", "review")), "a", True),  # a review's: no
        (_chain(("s", "s")), "s", False),  # no worker moved the branch
        ([], "a", False),
    ],
)
def test_hands_off_needs_the_runs_heads_to_chain_to_what_landed(
    runs: list[Assignment], landed_head: str | None, expected: bool | None
) -> None:
    assert hands_off(runs, landed_head) is expected


def test_hands_off_orders_runs_by_creation_and_skips_runs_that_never_started() -> None:
    first, second = _chain(("s", "a"), ("a", "b"))
    never = run("api-1-9", "m1", "fix", T0 + 5, None, failure="dispatch_failed")
    assert hands_off([second, never, first], "b") is True


def test_nearest_rank_is_always_one_of_the_values() -> None:
    assert nearest_rank([4.0, 1.0, 3.0, 2.0], 50) == 2.0
    assert nearest_rank([1.0, 2.0, 3.0, 4.0], 90) == 4.0
    assert nearest_rank([7.0], 90) == 7.0
    assert nearest_rank(range(1, 11), 90) == 9
    assert nearest_rank([], 50) is None


# --- edges -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30m", 1800),
        ("24h", 86400),
        ("7d", 7 * 86400),
        ("2w", 14 * 86400),
        ("1d12h", 36 * 3600),
        (" 90s ", 90),
    ],
)
def test_since_takes_spans_of_time(text: str, seconds: int) -> None:
    assert parse_since(text, now=NOW) == NOW - seconds


@pytest.mark.parametrize("text", ["", "7", "7x", "-1d", "1.5h", "0d", "d7", "yesterday"])
def test_a_bad_since_says_the_forms_it_takes(text: str) -> None:
    with pytest.raises(UsageError, match=r"30m, 24h, 7d, 2w"):
        parse_since(text, now=NOW)


def test_an_empty_board() -> None:
    got = build_report([], [], now=NOW, slots=SLOTS, default_slots=8)
    assert got.to_dict() == {
        "since": None, "until": NOW, "start": None,
        "overall": {**dict.fromkeys(KEYS), "issues": 0, "merged": 0, "in_flight": 0,
                    "ready_to_merge": 0, "needs_human": 0, "hands_off": 0,
                    "hands_off_unknown": 0, "cost_usd": 0.0, "cost_by_tier": {}},
        "repos": {}, "failures": {},
        "machines": [{"name": "m1", "slots": 2, "runs": 0, "busy_seconds": 0.0,
                      "utilisation": None},
                     {"name": "m2", "slots": 1, "runs": 0, "busy_seconds": 0.0,
                      "utilisation": None}],
    }  # fmt: skip
    assert "the board is empty" in render_text(got)
    assert "| merge rate | - |" in render_markdown(got) and "| none | 0 |" in render_markdown(got)


def test_since_keeps_what_merged_or_moved_in_the_window() -> None:
    since = T0 + 5400  # after api#1..web#4 last moved; api#5 and api#6 moved since
    got = build_report(pipelines(), rows(), now=NOW, since=since, slots=SLOTS, default_slots=8)
    o = got.overall
    assert (o.issues, o.merged, o.ready_to_merge, o.in_flight, o.needs_human) == (2, 0, 1, 1, 0)
    assert o.merge_rate is None and o.hands_off_share is None and o.cost_per_merged_usd is None
    assert o.cost_usd == 0.5 and o.cost_by_tier == {"opus": 0.2, "sonnet": 0.3}
    assert list(got.repos) == ["api"] and got.failures == {"dispatch_failed": 1, "stalled": 1}
    # The busy time is clipped to the window: only api-5-w, api-6-w and api-7-x ran in it.
    assert [(m.name, m.runs, m.busy_seconds) for m in got.machines] == [
        ("m2", 2, 900.0), ("m1", 1, 1000.0)]  # fmt: skip
    assert got.start == since and got.machines[0].utilisation == round(900 / 4600, 4)
    # api#1 last moved before T0+1000: out.  api-2-w ran from T0+110 to T0+1110: in part.
    late = build_report(pipelines(), rows(), now=NOW, since=T0 + 1000, slots=SLOTS)
    assert late.overall.merged == 2 and late.repos["api"].merged == 1
    assert next(m for m in late.machines if m.name == "m1").busy_seconds == 110 + 150 + 1000


def test_a_pipeline_with_no_moves() -> None:
    bare = Pipeline(repo="api", issue=9, stage="merged", created_at=T0, updated_at=T0 + 50)
    stuck = Pipeline(repo="api", issue=10, stage="needs-human", round=1, created_at=T0,
                     updated_at=T0 + 60)  # fmt: skip
    got = build_report([bare, stuck], [], now=NOW).overall
    assert (got.merged, got.needs_human, got.merge_rate) == (1, 1, 0.5)
    assert got.dispatch_to_merge_p50_s is None and got.dispatch_to_merge_p90_s is None
    assert (got.hands_off, got.hands_off_unknown, got.cost_per_merged_usd) == (0, 0, 0.0)


# --- through the CLI ---------------------------------------------------------------------


def board_config(tmp_path: Path) -> Path:
    """Write a config of two repos and two machines, and the hand-built board beside it."""
    config = tmp_path / "coordinator.yml"
    config.write_text(yaml.safe_dump({
        "repos": [{"name": "api"}, {"name": "web"}],
        "machines": [{"name": "m1", "host": "localhost", "max_workers": 2},
                     {"name": "m2", "host": "localhost", "max_workers": 1}],
        "board": {"path": "board.json", "keep_finished": 4},
    }))  # fmt: skip
    board = Board(tmp_path / "board.json", keep_finished=4)  # most rows go to the history
    for a in rows():
        board.insert(a.to_dict())
    with board.transaction() as txn:
        for p in pipelines():
            txn.docs(PIPELINES).put(p.to_dict())
    assert len(board.history()) > 4
    return config


def coord_report(config: Path, *args: str) -> Result:
    return CliRunner().invoke(coord, ["--config", str(config), "report", *args])


def test_report_json_through_the_cli(tmp_path: Path) -> None:
    config = board_config(tmp_path)
    result = coord_report(config, "--json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    assert got["since"] is None and got["start"] == T0 and got["until"] > NOW
    assert got["overall"] == OVERALL and got["repos"] == {"api": API, "web": WEB}
    assert got["failures"] == FAILURES
    assert {m["name"]: m["runs"] for m in got["machines"]} == {"m1": 8, "m2": 7}
    one = json.loads(coord_report(config, "--json", "--repo", "web").output)
    assert one["overall"] == WEB and list(one["repos"]) == ["web"]
    assert one["failures"] == {"done_empty": 2, "uncommitted": 1}
    text = coord_report(config, "--since", "100000w")
    assert text.exit_code == 0 and "merge rate" in text.output and "75.0%" in text.output
    md = coord_report(config, "--markdown", "--repo", "api")
    assert md.exit_code == 0 and "|  | api |" in md.output and "| merged | 2 |" in md.output


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--since", "7x"], "30m, 24h, 7d, 2w"),
        (["--repo", "wbe"], "did you mean 'web'? repos: api, web"),
        (["--json", "--markdown"], "not both"),
    ],
)
def test_bad_arguments_are_usage_errors(tmp_path: Path, args: list[str], said: str) -> None:
    result = coord_report(board_config(tmp_path), *args)
    assert result.exit_code == 2 and said in result.output, result.output


# --- a real pipeline run, taken to merged ------------------------------------------------


def test_the_figures_of_two_issues_taken_to_merged(setup: Setup) -> None:
    from .test_merge import merge, ready
    from .test_pipeline import REVIEW_BY_ROUND, arun, coordinator, pipeline_setup

    machine = pipeline_setup(setup, None, review=REVIEW_BY_ROUND, max_workers=6,
                             fix="[fake:ok:fix-{{ issue.number }}.txt=fixed]")  # fmt: skip
    ready(setup, machine, ["feature-1.txt", "feature-2.txt"])
    report, merged = merge(setup)
    assert [p.stage for p in merged] == ["merged", "merged"], report

    async def board_rows() -> list[Assignment]:
        async with coordinator(setup) as c:
            return list(c.assignments(history=True))

    runs = arun(board_rows())
    result = CliRunner().invoke(coord, ["--config", str(setup.config_path), "report", "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    spent = sum(a.cost_usd or 0.0 for a in runs)
    assert spent > 0 and len(runs) == 8  # per issue: work, review, fix, review
    o = got["overall"]
    assert (o["issues"], o["merged"], o["in_flight"], o["needs_human"]) == (2, 2, 0, 0)
    assert o["merge_rate"] == 1.0 and o["cost_usd"] == round(spent, 4)
    assert o["cost_per_merged_usd"] == round(spent / 2, 4)
    assert (o["rounds_mean"], o["rounds_max"]) == (1.0, 1)
    assert o["reviews_per_issue"] == 2.0 and o["fix_runs_per_issue"] == 1.0
    tiers: dict[str, float] = {}
    for a in runs:
        tiers[a.tier] = tiers.get(a.tier, 0.0) + (a.cost_usd or 0.0)
    assert o["cost_by_tier"] == {k: round(v, 4) for k, v in sorted(tiers.items())}
    # Only its workers committed (each run's outcome facts chain), so both are hands-off.
    assert (o["hands_off"], o["hands_off_unknown"], o["hands_off_share"]) == (2, 0, 1.0)
    assert 0 < o["dispatch_to_merge_p50_s"] <= o["dispatch_to_merge_p90_s"]
    assert got["repos"] == {"api": o}
    [m] = got["machines"]
    assert m["name"] == "local" and m["runs"] == 8 and m["slots"] == 6
    assert m["busy_seconds"] > 0 and 0 < m["utilisation"] <= 1
