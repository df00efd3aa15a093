"""The issue-to-PR pipeline end to end on the local forge: real git, tmux and sshd, with the
scripted stand-in for `claude -p` picking its part from a marker each stage's briefing carries.

Each stage's briefing template (the test's own `briefings.dir`) names the fake's scenario:
the work takes it from the issue body, a review asks for changes or approves by round, a
fix writes what its round says.  The repo's test_command fails on the word "broken".
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from coordlib import Status
from coordlib.errors import ClaimError, CoordError
from coordlib.forge.local import LocalForge
from coordlib.testing import SSHServer

from .conftest import Setup

TEST_COMMAND = "test -f fake_claude_output.txt && ! grep -q broken fake_claude_output.txt"


def arun(coro: Any) -> Any:
    return asyncio.run(coro)


def pipeline_setup(
    setup: Setup, sshd: SSHServer | None, *, review: str, fix: str = "", **machine: Any
) -> str:
    """Configure the machine, the repo's test and the stage templates; return the machine."""
    briefings = setup.root / "briefings"
    briefings.mkdir(exist_ok=True)
    (briefings / "review.md.j2").write_text(
        "Review round {{ round }} of {{ branch }} for #{{ issue.number }}.\n" + review + "\n"
    )
    (briefings / "fix.md.j2").write_text(
        "Fix round {{ round }}.\n{{ review }}\n{{ failures }}\n{{ guidance }}\n"
        + (fix or "[fake:ok:fixed in round {{ round }}]")
        + "\n"
    )
    if sshd is not None:
        setup.add_ssh(sshd, "remote", **machine)
        name = "remote"
    else:
        setup.add_local("local", **machine)
        name = "local"
    setup.extra["briefings"] = {"dir": str(briefings)}
    setup.extra.setdefault("models", {"default": "haiku"})
    setup.write()
    cfg = setup.config_path.read_text().replace(
        "test_command: 'true'",
        f"test_command: {json.dumps(TEST_COMMAND)}\n  url: {json.dumps(str(setup.repo.origin))}",
    )
    setup.config_path.write_text(cfg)
    return name


def coordinator(setup: Setup, **kwargs: Any) -> Any:
    from coordlib import Coordinator

    return Coordinator.from_path(setup.config_path, **kwargs)


async def new_issue(c: Any, body: str, title: str = "Add a greeting") -> int:
    issue = await c.forge("api").create_issue(title, body=body)
    return int(issue.number)


async def drive(c: Any, repo: str, issue: int, *, limit: float = 90.0) -> Any:
    """Pass after pass until the issue's pipeline ends."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        await c.advance()
        p = c.board.pipeline(repo, issue)
        if p is not None and p.ended and not p.outbox:
            return p
        await asyncio.sleep(0.3)
    raise AssertionError(f"the pipeline did not end: {c.board.pipeline(repo, issue)}")


def through(setup: Setup, machine: str, body: str, **kwargs: Any) -> Any:
    """Open an issue with `body`, assign it, and pass until its pipeline ends; return it."""

    async def go() -> Any:
        async with coordinator(setup, **kwargs) as c:
            n = await new_issue(c, body)
            await c.assign(machine, "api", n)
            return await drive(c, "api", n)

    return arun(go())


def forge_of(setup: Setup) -> LocalForge:
    return LocalForge(
        "api", setup.root / ".coord" / "issues" / "api", remote=str(setup.repo.origin)
    )


REVIEW_BY_ROUND = "[fake:{{ 'request_changes' if round == 0 else 'approve' }}]"


@pytest.mark.parametrize("over", ["local", "ssh"])
def test_issue_to_ready_to_merge(setup: Setup, over: str, request: pytest.FixtureRequest) -> None:
    """work → test → pr → review (changes) → fix → test → pr → review (approve) → ready."""
    sshd = request.getfixturevalue("sshd") if over == "ssh" else None
    machine = pipeline_setup(setup, sshd, review=REVIEW_BY_ROUND)

    async def go() -> tuple[Any, Any, list[Any]]:
        async with coordinator(setup) as c:
            n = await new_issue(c, "Write a greeting. [fake:ok:hello]")
            await c.assign(machine, "api", n, model="haiku")
            p = await drive(c, "api", n)
            again = await c.advance()  # idempotent: a pass right after changes nothing
            rows = c.assignments(history=True)
            return p, again, rows

    p, again, rows = arun(go())
    assert p.stage == "ready-to-merge", p
    assert p.round == 1 and p.pr is not None
    assert not again.moves and not again.dispatched
    by_stage = {s: len(ids) for s, ids in p.assignments.items()}
    assert by_stage == {"work": 1, "review": 2, "fix": 1}
    reviews = [r for r in rows if r.stage == "review"]
    assert all(r.model == "claude-sonnet-4-5" for r in reviews)  # another tier than the author's
    assert all(r.argv[r.argv.index("--allowedTools") + 1] == "Read,Glob,Grep,Bash" for r in reviews)
    assert [v["outcome"] for v in p.verdicts if v["stage"] == "test"] == ["passed", "passed"]
    assert [v["outcome"] for v in p.verdicts if v["stage"] == "review"] == [
        "request-changes", "approve"]  # fmt: skip
    assert p.cost_usd > 0 and set(p.cost_by_tier()) == {"haiku", "sonnet"}

    # The branch, with the work and the fix, is on the remote; main is untouched.
    log = subprocess.run(["git", "-C", str(setup.repo.origin), "log", "--format=%s", p.branch],
                         capture_output=True, text=True, check=True).stdout.split("\n")  # fmt: skip
    assert sum(1 for x in log if x.startswith("coord:")) == 2
    assert setup.repo.log("main") == ["initial commit"]

    async def trail() -> tuple[Any, Any]:
        forge = forge_of(setup)
        return await forge.get_pr(p.pr), await forge.get_issue(p.issue)

    pr, issue = arun(trail())
    assert f"Closes #{p.issue}" in pr.body
    assert [r.state for r in pr.reviews] == ["COMMENTED", "COMMENTED"]
    assert "**request changes**" in pr.reviews[0].body and "**approve**" in pr.reviews[1].body
    assert "status:ready-to-merge" in issue.labels
    assert not {"status:in-progress", "status:review", "status:done"} & set(issue.labels)
    bodies = [c.body for c in issue.comments]
    assert any("It is ready to merge" in b for b in bodies)
    assert sum("It is ready to merge" in b for b in bodies) == 1


def test_failed_test_escalates_the_fix(setup: Setup) -> None:
    machine = pipeline_setup(setup, None, review="[fake:approve]")

    async def go() -> tuple[Any, list[Any]]:
        async with coordinator(setup) as c:
            n = await new_issue(c, "Write it. [fake:ok:broken]")
            await c.assign(machine, "api", n, model="haiku")
            p = await drive(c, "api", n)
            return p, c.assignments(history=True)

    p, rows = arun(go())
    assert p.stage == "ready-to-merge", p
    tests = [v for v in p.verdicts if v["stage"] == "test"]
    assert [v["outcome"] for v in tests] == ["failed", "passed"]
    assert tests[0]["exit_code"] != 0 and tests[0]["log"].endswith("output.log")
    fix = next(r for r in rows if r.stage == "fix")
    assert fix.tier == "sonnet"  # haiku's test failed: one step up
    review = next(r for r in rows if r.stage == "review")
    assert review.tier == "opus"  # a tier other than the (escalated) author's


def test_the_cap_hands_the_issue_to_a_person(setup: Setup) -> None:
    setup.extra["reviews"] = {"max_rounds": 1}
    machine = pipeline_setup(setup, None, review="[fake:request_changes]")

    p = through(setup, machine, "Write it. [fake:ok:hello]")
    assert p.stage == "needs-human" and p.round == 1
    assert "cap of 1" in (p.reason or "")
    issue = arun(forge_of(setup).get_issue(p.issue))
    assert "status:needs-human" in issue.labels
    assert any("needs a person" in c.body and "cap of 1" in c.body for c in issue.comments)


def test_a_reviewer_without_a_verdict_is_asked_once_more(setup: Setup) -> None:
    machine = pipeline_setup(setup, None, review="[fake:no_verdict]")

    p = through(setup, machine, "Write it. [fake:ok:hello]")
    assert p.stage == "needs-human"
    assert len(p.assignments["review"]) == 2
    assert "no VERDICT line twice" in (p.reason or "")


def test_a_stuck_worker_asks_a_person_and_fires_the_hook(setup: Setup) -> None:
    out = setup.root / "stuck.json"
    setup.extra["hooks"] = {"on_stuck": [f"cat > {out}"], "on_stage": ["exit 3"]}
    machine = pipeline_setup(setup, None, review="[fake:approve]")
    told: list[str] = []

    p = through(setup, machine, "Do it. [fake:stuck]", notify=told.append)
    assert p.stage == "needs-human"
    assert "STUCK: I need the staging API key" in (p.reason or "")
    payload = json.loads(out.read_text())
    assert payload["event"] == "on_stuck" and payload["issue"] == p.issue
    assert "STUCK:" in payload["line"]
    assert any("exit 3" in m for m in told)  # a failing hook is reported, nothing stops
    issue = arun(forge_of(setup).get_issue(p.issue))
    assert any("STUCK: I need the staging API key" in c.body for c in issue.comments)


def test_the_issue_budget_stops_fixing(setup: Setup) -> None:
    setup.extra["budget"] = {"per_issue_usd": 0.000001}
    machine = pipeline_setup(setup, None, review="[fake:approve]")

    p = through(setup, machine, "Write it. [fake:ok:broken]")
    assert p.stage == "needs-human" and p.round == 0
    assert "budget.per_issue_usd" in (p.reason or "")
    assert "fix" not in p.assignments


def test_two_passes_at_once_act_once(setup: Setup) -> None:
    machine = pipeline_setup(setup, None, review=REVIEW_BY_ROUND)

    async def go() -> tuple[Any, Any]:
        async with coordinator(setup) as c1, coordinator(setup) as c2:
            n = await new_issue(c1, "Write it. [fake:ok:hello]")
            await c1.assign(machine, "api", n)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                reports = await asyncio.gather(c1.advance(), c2.advance())
                errors = [e for r in reports for e in r.errors]
                assert not errors, errors
                p = c1.board.pipeline("api", n)
                if p is not None and p.ended and not p.outbox:
                    break
                await asyncio.sleep(0.2)
            return c1.board.pipeline("api", n), await c1.forge("api").get_issue(n)

    p, issue = arun(go())
    assert p.stage == "ready-to-merge", p
    assert {s: len(ids) for s, ids in p.assignments.items()} == {"work": 1, "review": 2, "fix": 1}
    bodies = [c.body for c in issue.comments]
    assert sum("It is ready to merge" in b for b in bodies) == 1
    pr = arun(forge_of(setup).get_pr(p.pr))
    assert len(pr.reviews) == 2


def test_by_hand_test_pr_fix_and_bounce(setup: Setup, run_coord: Any) -> None:
    machine = pipeline_setup(setup, None, review="[fake:approve]")

    async def start() -> tuple[int, Any]:
        async with coordinator(setup) as c:
            n = await new_issue(c, "Write it. [fake:ok:hello]")
            a = await c.assign(machine, "api", n, pipeline=False)
            return n, await c.wait(a.id, timeout=30)

    n, a = arun(start())
    assert a.status == Status.DONE
    cfg = setup.config_path
    r = run_coord("test", a.id, "--json", config=cfg)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["passed"] is True and out["stage"] == "pr" and len(out["sha"]) == 40
    r = run_coord("pipeline", f"api#{n}", "--json", config=cfg)
    assert json.loads(r.stdout)["pipelines"][0]["stage"] == "pr"  # by hand: one stage only
    r = run_coord("test", a.id, "--failed", "--reason", "the page 500s", "--json", config=cfg)
    assert r.returncode == 1 and json.loads(r.stdout)["passed"] is False
    r = run_coord("test", a.id, "--passed", config=cfg)
    assert r.returncode == 0, r.stderr
    r = run_coord("pr", a.id, "--json", config=cfg)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert isinstance(out["pr"], int) and out["review"]
    review_id = out["review"]

    async def wait_review() -> Any:
        async with coordinator(setup) as c:
            return await c.wait(review_id, timeout=30)

    assert arun(wait_review()).status == Status.DONE
    r = run_coord("bounce", review_id, "--reason", "rename the file", "--json", config=cfg)
    assert r.returncode == 0, r.stderr
    fix = json.loads(r.stdout)
    assert fix["extra"]["stage"] == "fix" and fix["branch"] == a.branch
    r = run_coord("pipeline", f"api#{n}", "--json", config=cfg)
    p = json.loads(r.stdout)["pipelines"][0]
    # round 1 was the by-hand --failed verdict (test → fix); the bounce is round 2
    assert p["stage"] == "fix" and p["findings"] == "rename the file" and p["round"] == 2
    r = run_coord("notify", "--json", config=cfg)
    assert r.returncode == 0, r.stderr


def test_a_killed_run_is_picked_up_where_it_was(setup: Setup) -> None:
    machine = pipeline_setup(setup, None, review=REVIEW_BY_ROUND)

    async def start() -> int:
        async with coordinator(setup) as c:
            n = await new_issue(c, "Write it. [fake:ok:hello]")
            await c.assign(machine, "api", n)
            return n

    n = arun(start())
    cmd = [sys.executable, "-m", "coord_cli", "--config", str(setup.config_path), "run",
           "--interval", "0.3", "--until-idle"]  # fmt: skip
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)  # fmt: skip
    # Kill it once the pipeline is past its first stage.
    deadline = time.monotonic() + 60
    from coordlib.board import Board

    board = Board(setup.root / ".coord" / "board.json")
    while time.monotonic() < deadline:
        p = board.pipeline("api", n)
        if p is not None and p.stage not in ("work",):
            break
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    p = board.pipeline("api", n)
    assert p is not None and p.stage == "merged", p and p.to_dict()  # lands the ready too
    assert {s: len(ids) for s, ids in p.assignments.items()} == {"work": 1, "review": 2, "fix": 1}


@pytest.mark.parametrize("identities", [1, 2])
def test_the_pipeline_on_github(
    setup: Setup, fake_github: Any, tmp_path: Any, identities: int
) -> None:
    """The same pipeline against GitHub (every exchange checked against GitHub's OpenAPI
    description, pushes through git http-backend).  GitHub refuses an approval from the PR's
    own author: with one token the verdicts are COMMENT reviews that say them; with a second
    identity they are real REQUEST_CHANGES and APPROVE reviews."""
    import yaml

    from coordlib import Coordinator
    from tests.fakegithub.plugin import seed_repo

    fake_github.forbid_self_review = True
    work = seed_repo(fake_github, "acme/api", tmp_path / "gh-clone")
    setup.add_local("local", repo_paths={"api": str(work)})
    briefings = setup.root / "briefings"
    briefings.mkdir()
    (briefings / "review.md.j2").write_text(f"Review {{{{ branch }}}}.\n{REVIEW_BY_ROUND}\n")
    (briefings / "fix.md.j2").write_text("Fix.\n{{ review }}\n[fake:ok:fixed]\n")
    setup.extra["github"] = {"api_url": fake_github.api_url, "write_interval": 0}
    setup.extra["briefings"] = {"dir": str(briefings)}
    env = {"GITHUB_TOKEN": fake_github.token}
    if identities == 2:
        fake_github.add_token("ghp_reviewer_token_0123456789", "review-bot")
        setup.extra["reviews"] = {"github_token_env": "GH_REVIEW_TOKEN"}
        env["GH_REVIEW_TOKEN"] = "ghp_reviewer_token_0123456789"
    config = setup.write()
    data = yaml.safe_load(config.read_text())
    data["repos"][0].update(github="acme/api", test_command=TEST_COMMAND)
    config.write_text(yaml.safe_dump(data, sort_keys=False))

    async def go() -> tuple[Any, Any, Any]:
        async with Coordinator.from_path(config, environ=env) as c:
            forge = c.forge("api")
            issue = await forge.create_issue("Greet on GitHub", body="[fake:ok:hello]")
            await c.assign("local", "api", issue.number)
            p = await drive(c, "api", issue.number)
            return p, await forge.get_pr(p.pr), await forge.get_issue(issue.number)

    p, pr, issue = arun(go())
    assert p.stage == "ready-to-merge", p
    assert f"Closes #{issue.number}" in pr.body and pr.head == p.branch
    if identities == 1:
        assert [r.state for r in pr.reviews] == ["COMMENTED", "COMMENTED"]
        assert "**request changes**" in pr.reviews[0].body
        assert all(r.author == "coord-bot" for r in pr.reviews)
    else:
        assert [r.state for r in pr.reviews] == ["CHANGES_REQUESTED", "APPROVED"]
        assert all(r.author == "review-bot" for r in pr.reviews)
    assert "status:ready-to-merge" in issue.labels
    assert sum("It is ready to merge" in c.body for c in issue.comments) == 1


def test_clean_keeps_the_worktree_a_pipeline_still_needs(setup: Setup) -> None:
    machine = pipeline_setup(setup, None, review="[fake:stall]")

    async def go() -> tuple[Any, Any]:
        async with coordinator(setup) as c:
            n = await new_issue(c, "Write it. [fake:ok:hello]")
            a = await c.assign(machine, "api", n)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                await c.advance()
                p = c.board.pipeline("api", n)
                if p is not None and p.stage == "review" and p.current:
                    break
                await asyncio.sleep(0.3)
            report = await c.clean(older_than=0)
            await c.stop(p.current)
            return a, report

    a, report = arun(go())
    row = next(r for r in report.runs if r.id == a.id)
    assert row.worktree == "in_use" and "pipeline of api#" in row.note
    assert Path(a.worktree).is_dir()


def test_a_failed_worker_asks_a_person(setup: Setup) -> None:
    machine = pipeline_setup(setup, None, review="[fake:approve]")

    p = through(setup, machine, "Crash. [fake:fail]")
    assert p.stage == "needs-human" and "work stage ended with failed" in (p.reason or "")
    issue = arun(forge_of(setup).get_issue(p.issue))
    assert [x for x in issue.labels if x.startswith("status:")] == ["status:needs-human"]


def test_a_retry_is_adopted_with_its_fresh_branch(setup: Setup) -> None:
    machine = pipeline_setup(setup, None, review="[fake:approve]")

    async def go() -> tuple[Any, Any]:
        async with coordinator(setup) as c:
            n = await new_issue(c, "Crash first. [fake:fail]")
            a = await c.assign(machine, "api", n)
            await c.wait(a.id, timeout=30)
            b = await c.retry(a.id, briefing="Now do it. [fake:ok:hello]")
            return b, await drive(c, "api", n)

    b, p = arun(go())
    assert p.stage == "ready-to-merge", p
    assert p.branch == b.branch and b.branch.endswith("-r2")
    assert p.current is None and b.id in p.assignments["work"]


def test_by_hand_stages_wait_for_a_live_worker(setup: Setup) -> None:
    machine = pipeline_setup(setup, None, review="[fake:approve]")

    async def go() -> tuple[str, str]:
        async with coordinator(setup) as c:
            n = await new_issue(c, "Hang. [fake:stall]")
            a = await c.assign(machine, "api", n)
            with pytest.raises(ClaimError, match="stop it first") as err:
                await c.test(a.id)
            p = c.board.pipeline("api", n)
            await c.stop(a.id)
            return str(err.value), p.stage if p else ""

    said, stage = arun(go())
    assert "waits for" in said and stage == "work"  # refused: nothing moved


def test_the_session_budget_pauses_dispatch_until_done(setup: Setup) -> None:
    report_dir = setup.root / ".coord" / "reports"
    setup.extra["budget"] = {"session_usd": 0.000001}
    setup.extra["hooks"] = {"on_session_end": ["summary_report"]}
    machine = pipeline_setup(setup, None, review="[fake:approve]")

    async def go() -> tuple[Any, Any, Any, Any]:
        async with coordinator(setup) as c:
            await c.advance()  # the session starts with the first pass
            n = await new_issue(c, "Write it. [fake:ok:hello]")
            await c.assign(machine, "api", n)
            paused = None
            for _ in range(100):
                paused = await c.advance()
                if paused.idle:
                    break
                await asyncio.sleep(0.2)
            before = c.board.pipeline("api", n)
            summary = await c.done()
            after = await drive(c, "api", n)
            return paused, before, summary, after

    paused, p, summary, after = arun(go())
    assert paused.paused and "budget.session_usd" in paused.paused
    assert paused.idle and "review" not in (p.assignments if p else {})  # nothing started
    assert summary["cost_usd"] > 0 and f"api#{after.issue}" in summary["cost_by_issue"]
    assert list(report_dir.glob("summary-*.md"))  # the built-in hook wrote its report
    assert after.stage == "ready-to-merge"  # a new session: dispatch goes on


class _Killed(BaseException):
    """Stands for the coordinator dying (SIGKILL) at that point."""


def test_an_assign_killed_after_its_dispatch_still_enters_the_pipeline(setup: Setup) -> None:
    machine = pipeline_setup(setup, None, review="[fake:approve]")

    async def kill_it() -> int:
        async with coordinator(setup) as c:
            n = await new_issue(c, "Write it. [fake:ok:hello]")

            async def die(*args: Any, **kwargs: Any) -> Any:
                raise _Killed

            c.forge("api").comment = die  # dies posting the briefing: the worker runs already
            with pytest.raises(_Killed):
                await c.assign(machine, "api", n)
            return n

    n = arun(kill_it())

    async def carry_on() -> Any:
        async with coordinator(setup) as c:
            p = c.board.pipeline("api", n)
            assert p is not None and p.current is not None  # entered with the claim
            return await drive(c, "api", n)

    p = arun(carry_on())
    assert p.stage == "ready-to-merge", p


def test_an_assign_that_never_started_leaves_the_issue_to_a_person(setup: Setup) -> None:
    pipeline_setup(setup, None, review="[fake:approve]", env={"KEY": "${COORD_TEST_NOT_SET}"})

    async def go() -> Any:
        async with coordinator(setup) as c:
            n = await new_issue(c, "Write it. [fake:ok:hello]")
            with pytest.raises(CoordError, match="COORD_TEST_NOT_SET"):
                await c.assign("local", "api", n)
            return await drive(c, "api", n)

    p = arun(go())
    assert p.stage == "needs-human" and "dispatch_failed" in (p.reason or "")
