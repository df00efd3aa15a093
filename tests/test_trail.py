"""Issues drive the work: briefings from the issue, claims, the trail on the forge, and
`resume --from-forge`, on the local forge with real tmux and git (stand-in worker)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from coordlib import ClaimError, Status
from coordlib.errors import NotFoundError
from coordlib.markers import neutralise
from coordlib.testing.gitrepo import git
from coordlib.trail import parse_markers

from .conftest import Setup


def arun(coro: Any) -> Any:
    return asyncio.run(coro)


def new_issue(run_coord: Any, config: Path, title: str, body: str = "", *labels: str) -> int:
    args = ["issue", "new", "api", "--title", title, "--body", body, "--json"]
    for label in labels:
        args += ["--label", label]
    out = run_coord(*args, config=config)
    assert out.returncode == 0, out.stderr
    return int(json.loads(out.stdout)["number"])


def show(run_coord: Any, config: Path, number: int) -> dict[str, Any]:
    out = run_coord("issue", "show", "api", str(number), "--json", config=config)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


@pytest.fixture
def local(setup: Setup) -> Path:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"}, max_workers=4)
    return setup.write()


def test_the_work_briefing_comes_from_the_issue_and_leaves_a_trail(
    setup: Setup, local: Path, run_coord: Any
) -> None:
    body = "Change `src/greet.py` so it greets.\n\n<!-- keep me -->"
    n = new_issue(run_coord, local, "Greet `$USER`; $(touch PWNED)", body, "bug", "status:ready")

    async def go() -> Any:
        async with setup.coordinator() as c:
            # no title, no briefing: the issue says; out of the pipeline, done is done
            a = await c.assign("local", "api", n, pipeline=False)
            return await c.wait(a.id, timeout=30)

    a = arun(go())
    assert a.status == Status.DONE
    assert a.title == "Greet `$USER`; $(touch PWNED)"
    assert a.branch == f"issue-{n}-greet-user-touch-pwned"
    briefing = (setup.root / "wd-local" / "runs" / a.id / "briefing.md").read_text()
    assert "Change `src/greet.py` so it greets." in briefing
    assert "## Files in scope\n\n- `src/greet.py`" in briefing
    assert "STATUS:" in briefing and "STUCK:" in briefing
    assert "test with: `true`" in briefing.lower()
    assert not list(setup.root.rglob("PWNED"))

    issue = show(run_coord, local, n)
    bodies = [c["body"] for c in issue["comments"]]
    assert len(bodies) == 2
    # The briefing itself is on the issue; the HTML comment it quotes from the issue is
    # neutralised, so it can hide nothing of coord's comment.
    assert neutralise(briefing.strip()) in bodies[0] and "<!-- keep me" not in bodies[0]
    markers = parse_markers(bodies)
    assert [m["stage"] for m in markers] == ["dispatch", "done"]
    assert markers[0]["id"] == a.id and markers[0]["machine"] == "local"
    assert markers[0]["branch"] == a.branch and markers[0]["model"] == a.model
    assert "is done on branch" in bodies[1]
    assert "status:done" in issue["labels"] and "status:ready" not in issue["labels"]
    assert "status:in-progress" not in issue["labels"] and "bug" in issue["labels"]

    board = json.loads(run_coord("status", "--json", config=local).stdout)
    row = next(x for x in board["assignments"] if x["id"] == a.id)
    assert row["status"] == "done"


def test_a_failure_puts_the_issue_back_to_ready(setup: Setup, run_coord: Any) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "fail"})
    config = setup.write()
    n = new_issue(run_coord, config, "Will crash")

    async def go() -> Any:
        async with setup.coordinator() as c:
            a = await c.assign("local", "api", n, pipeline=False)  # test_pipeline.py: in it
            return await c.wait(a.id, timeout=30)

    a = arun(go())
    assert a.status == Status.FAILED
    issue = show(run_coord, config, n)
    assert [m["stage"] for m in parse_markers(c["body"] for c in issue["comments"])] == [
        "dispatch",
        "failed",
    ]
    assert "ended as **failed** (crashed)" in issue["comments"][1]["body"]
    assert "status:ready" in issue["labels"] and "status:in-progress" not in issue["labels"]


def test_other_workers_files_are_in_the_do_not_touch_list(setup: Setup, run_coord: Any) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "linger"}, max_workers=4)
    setup.worker["result_grace"] = 30
    config = setup.write()
    first = new_issue(run_coord, config, "First")
    second = new_issue(run_coord, config, "Second", "Touch `docs/b.md`.")

    async def go() -> str:
        async with setup.coordinator() as c:
            a = await c.assign("local", "api", first)
            for _ in range(100):  # until its Write shows up in the board's fold
                await c.status()
                if c.get(a.id).files_touched:
                    break
                await asyncio.sleep(0.1)
            assert c.get(a.id).files_touched == ["fake_claude_output.txt"]
            b = await c.assign("local", "api", second, dry_run=True)
            await c.stop(a.id)
            return str(b.extra["briefing"])

    briefing = arun(go())
    assert "## Do not touch" in briefing
    assert "- `fake_claude_output.txt` (issue-1-first)" in briefing
    assert "- `docs/b.md`" in briefing


def test_claims_refuse_live_work_and_unmerged_remote_branches(
    setup: Setup, local: Path, run_coord: Any
) -> None:
    n = new_issue(run_coord, local, "Claimed")
    # Someone pushed a branch for this issue by hand.
    git("checkout", "-q", "-b", f"issue-{n}-by-hand", cwd=setup.repo.path)
    (setup.repo.path / "x.txt").write_text("x\n")
    git("add", "x.txt", cwd=setup.repo.path)
    git("commit", "-q", "-m", "by hand", cwd=setup.repo.path)
    git("push", "-q", "origin", f"issue-{n}-by-hand", cwd=setup.repo.path)
    git("checkout", "-q", "main", cwd=setup.repo.path)

    out = run_coord("assign", "local", "api", str(n), config=local)
    assert out.returncode == 1
    assert f"unmerged remote branch issue-{n}-by-hand" in out.stderr and "--force" in out.stderr

    forced = run_coord("assign", "local", "api", str(n), "--force", "--json", config=local)
    assert forced.returncode == 0, forced.stderr
    aid = json.loads(forced.stdout)["id"]

    async def live() -> None:
        async with setup.coordinator() as c:
            with pytest.raises(ClaimError, match=f"already has live assignment {aid}"):
                await c.assign("local", "api", n, force=False)
            await c.wait(aid, timeout=30)

    arun(live())


def test_an_issue_not_on_the_forge_needs_a_title(setup: Setup, local: Path) -> None:
    async def go() -> None:
        async with setup.coordinator() as c:
            with pytest.raises(NotFoundError, match="coord issue new api"):
                await c.assign("local", "api", 99)
            a = await c.assign("local", "api", 99, title="Untracked work")
            assert a.extra["trail"] == {"off": "the issue is not on the forge"}
            await c.wait(a.id, timeout=30)

    arun(go())


def test_resume_from_forge_rebuilds_a_lost_board(setup: Setup, run_coord: Any) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"}, max_workers=4)
    setup.machines[0]["env"] = {"FAKE_CLAUDE_SCENARIO": "ok"}
    config = setup.write()
    done_n = new_issue(run_coord, config, "Finished before the loss")
    live_n = new_issue(run_coord, config, "Running through the loss")

    async def before() -> tuple[Any, Any]:
        async with setup.coordinator() as c:
            a = await c.assign("local", "api", done_n)
            a = await c.wait(a.id, timeout=30)
        setup.machines[0]["env"] = {"FAKE_CLAUDE_SCENARIO": "slow", "FAKE_CLAUDE_DELAY": "3"}
        async with setup.coordinator() as c:
            b = await c.assign("local", "api", live_n)
            return a, b

    a, b = arun(before())
    board = setup.root / ".coord" / "board.json"
    board.unlink()  # the laptop's disk died; the machines and the forge remember
    out = run_coord("resume", "--from-forge", "--json", config=config)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert sorted(report["restored"]) == sorted([a.id, b.id])

    async def after() -> tuple[Any, Any]:
        async with setup.coordinator() as c:
            return c.get(a.id), await c.wait(b.id, timeout=30)

    ra, rb = arun(after())
    assert ra.status == Status.DONE and ra.branch == a.branch and ra.machine == "local"
    assert rb.status == Status.DONE and rb.session_id and rb.num_turns
    # Nothing was posted twice, and the restored run's ending was posted once.
    comments = show(run_coord, config, live_n)["comments"]
    assert [m["stage"] for m in parse_markers(c["body"] for c in comments)] == [
        "dispatch",
        "done",
    ]
    # A second resume finds nothing more to restore.
    again = json.loads(run_coord("resume", "--from-forge", "--json", config=config).stdout)
    assert again["restored"] == []


def test_issues_shows_pipeline_sections(setup: Setup, local: Path, run_coord: Any) -> None:
    new_issue(run_coord, local, "Fresh")
    new_issue(run_coord, local, "Thinking", "", "status:refining")
    new_issue(run_coord, local, "Ready to go", "", "status:ready")
    closed = new_issue(run_coord, local, "Old")
    assert run_coord("issue", "close", "api", str(closed), config=local).returncode == 0
    out = run_coord("issues", "--json", config=local)
    assert out.returncode == 0, out.stderr
    sections = json.loads(out.stdout)["api"]
    titles = {k: [i["title"] for i in v] for k, v in sections.items()}
    assert titles == {
        "New": ["Fresh"],
        "Refining": ["Thinking"],
        "Pending": ["Ready to go"],
        "In progress": [],
        "Review": [],
        "Ready to merge": [],
        "Done": ["Old"],
        "Needs human": [],
    }
    text = run_coord("issues", "api", config=local).stdout
    assert "Pending (1)" in text and "Ready to go" in text

    label = run_coord("issue", "label", "api", "1", "status:ready", "--remove", "nope",
                      config=local)  # fmt: skip
    assert label.returncode == 0 and "status:ready" in label.stdout
    gone = run_coord("issue", "label", "api", "1", "--remove", "status:ready", config=local)
    assert "(no labels)" in gone.stdout


def test_the_trail_on_github(
    setup: Setup, fake_github: Any, run_coord: Any, tmp_path: Path
) -> None:
    """The same flow against GitHub: unmodified PyGithub, a fake that checks every exchange
    against GitHub's OpenAPI description, and real pushes through git http-backend."""
    from tests.fakegithub.plugin import seed_repo

    work = seed_repo(fake_github, "acme/api", tmp_path / "gh-clone")
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"},
                    repo_paths={"api": str(work)})  # fmt: skip
    setup.extra["github"] = {"api_url": fake_github.api_url, "write_interval": 0}
    config = setup.write()
    data = yaml.safe_load(config.read_text())
    data["repos"][0]["github"] = "acme/api"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {"GITHUB_TOKEN": fake_github.token}

    out = run_coord("issue", "new", "api", "--title", "Greet on GitHub", "--label",
                    "status:ready", "--json", config=config, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    n = json.loads(out.stdout)["number"]

    # Out of the pipeline (where test and PR would come next), a done worker's issue is done.
    assigned = run_coord("assign", "local", "api", str(n), "--json", "--no-pipeline",
                         config=config, env=env)  # fmt: skip
    assert assigned.returncode == 0, assigned.stderr
    aid = json.loads(assigned.stdout)["id"]
    waited = run_coord("wait", aid, config=config, env=env)
    assert waited.returncode == 0, waited.stdout + waited.stderr

    issue = json.loads(run_coord("issue", "show", "api", str(n), "--json", config=config,
                                 env=env).stdout)  # fmt: skip
    markers = parse_markers(c["body"] for c in issue["comments"])
    assert [(m["stage"], m["id"]) for m in markers] == [("dispatch", aid), ("done", aid)]
    assert "status:done" in issue["labels"] and "status:in-progress" not in issue["labels"]

    # The worker's branch pushed to GitHub claims the issue for a second dispatch.
    git("push", "-q", "origin", f"issue-{n}-greet-on-github",
        cwd=setup.root / "wd-local" / "worktrees" / "api" / aid)  # fmt: skip
    again = run_coord("assign", "local", "api", str(n), config=config, env=env)
    assert again.returncode == 1
    assert f"unmerged remote branch issue-{n}-greet-on-github (an earlier coord assignment)" in (
        again.stderr
    )

    # A lost board comes back from GitHub's comments.
    (setup.root / ".coord" / "board.json").unlink()
    resumed = run_coord("resume", "--from-forge", "--json", config=config, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["restored"] == [aid]
    status = json.loads(run_coord("status", "--json", config=config, env=env).stdout)
    assert [(a["id"], a["status"]) for a in status["assignments"]] == [(aid, "done")]

    # Without a token the forge says how to give one, and nothing is dispatched.
    bare = {k: v for k, v in os.environ.items() if k not in ("GITHUB_TOKEN", "GH_TOKEN")}
    bare["PATH"] = "/usr/bin:/bin"  # no `gh` either
    no_token = subprocess.run(
        [sys.executable, "-m", "coord_cli", "--config", str(config), "issue", "list", "api"],
        capture_output=True, text=True, env=bare, timeout=60,
    )  # fmt: skip
    assert no_token.returncode == 1
    assert "GITHUB_TOKEN" in no_token.stderr and "GH_TOKEN" in no_token.stderr
