"""Done means done: what every run left behind, checked on the machine as it ended.

The real Claude Code CLI (against the scripted model server) claims done without a commit,
leaves files uncommitted, and edits a file its issue did not declare; the pipeline sends an
empty or uncommitted work run to its fix stage with the facts and never tests an empty
branch; the merge queue refuses a PR whose issue was closed; `resume` never continues the
work of a closed issue.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coordlib import Status
from coordlib.testing.model_server import ModelServer, Scenario, Turn, text, tool

from .conftest import Setup
from .test_merge import merge, origin_log, push_unreviewed, ready
from .test_pipeline import arun, coordinator, drive, forge_of, new_issue, pipeline_setup
from .test_real_claude import SECRET, worker_env

COMMIT = "git add -A && git commit -q -m 'Do the work'"
SCENARIOS = {
    # says it is done, changed nothing
    "empty": Scenario([Turn([text("STATUS: done\nEverything the issue asks for is done.")])]),
    # writes two files, commits neither
    "dirty": Scenario(
        [
            Turn([tool("Write", file_path="dirty.txt", content="work in progress\n")]),
            Turn([tool("Write", file_path="notes/todo.md", content="- finish it\n")]),
            Turn([text("STATUS: done\nWrote dirty.txt.")]),
        ]
    ),
    # commits the declared file and one it never declared
    "stray": Scenario(
        [
            Turn([tool("Write", file_path="hello.txt", content="hello\n")]),
            Turn([tool("Write", file_path="setup.cfg", content="[tool]\n")]),
            Turn([tool("Bash", command=COMMIT, description="Commit")]),
            Turn([text("STATUS: done\nAdded hello.txt.")]),
        ]
    ),
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


def test_the_real_cli_done_empty_uncommitted_and_an_undeclared_file(
    setup: Setup, claude_cli: Path, model_server: Callable[..., ModelServer]
) -> None:
    server = model_server(SCENARIOS)
    setup.add_local("local", claude_command=str(claude_cli),
                    env=worker_env(server, setup.root / "home"), max_workers=4)  # fmt: skip
    setup.worker.update(stall_timeout=30, result_grace=5)

    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        async with setup.coordinator(environ={"TEST_WORKER_API_KEY": SECRET}) as c:
            forge = c.forge("api")
            bodies = {
                "empty": "[scenario:empty] Add a greeting.",
                "dirty": "[scenario:dirty] Add a greeting.",
                "stray": "[scenario:stray] Add a greeting.\n\n## Files\n\n- `hello.txt`\n",
            }
            issues = {k: await forge.create_issue(f"Case {k}", body=b) for k, b in bodies.items()}
            started = await asyncio.gather(*(c.assign("local", "api", i.number)
                                             for i in issues.values()))  # fmt: skip
            ended = await asyncio.gather(*(c.wait(a.id, timeout=90) for a in started))
            await c.status()  # the trail of each ending is posted
            trail = {k: await forge.get_issue(i.number) for k, i in issues.items()}
            return dict(zip(bodies, ended, strict=True)), trail

    ended, trail = arun(go())
    empty, dirty, stray = ended["empty"], ended["dirty"], ended["stray"]

    # It said it was done; it made no commit: not done.
    assert (empty.status, empty.failure_class) == (Status.FAILED, "done_empty"), empty.error
    assert "made no commit on " + empty.branch in (empty.error or "")
    assert empty.outcome["commits"] == 0 and empty.outcome["ahead"] == 0
    assert "ended as **failed** (done_empty)" in trail["empty"].comments[-1].body

    # It left two files uncommitted: not done; they stay in the worktree, and a rescue ref
    # in the machine's clone holds them (the worktree and its index untouched).
    assert (dirty.status, dirty.failure_class) == (Status.FAILED, "uncommitted"), dirty.error
    facts = dirty.outcome
    assert facts["dirty"] == 2 and facts["untracked"] == 2
    assert sorted(facts["uncommitted"]) == ["dirty.txt", "notes/todo.md"]
    assert facts["rescue"] == f"refs/coord/rescue/{dirty.id}"
    repo = setup.repo.path
    assert git(repo, "show", f"{facts['rescue']}:dirty.txt") == "work in progress\n"
    assert git(repo, "show", f"{facts['rescue']}:notes/todo.md") == "- finish it\n"
    assert git(repo, "rev-parse", f"{facts['rescue']}^") == git(repo, "rev-parse", dirty.branch)
    wt = Path(dirty.worktree)
    assert (wt / "dirty.txt").read_text() == "work in progress\n"
    assert git(wt, "status", "--porcelain") == "?? dirty.txt\n?? notes/\n"
    said = trail["dirty"].comments[-1].body
    assert "(uncommitted)" in said and f"saved at `{facts['rescue']}`" in said

    # It committed, and changed a file the issue did not declare: done, and flagged.
    assert stray.status == Status.DONE, stray.error
    assert stray.files_declared == ["hello.txt"]
    assert stray.outcome["outside"] == ["setup.cfg"] and stray.outcome["commits"] == 1
    assert sorted(stray.outcome["files"]) == ["hello.txt", "setup.cfg"]
    assert "outside the issue's declared files: setup.cfg" in trail["stray"].comments[-1].body


def test_an_empty_work_run_goes_to_fix_with_the_facts_and_is_never_tested(setup: Setup) -> None:
    machine = pipeline_setup(setup, None, review="[fake:approve]",
                             fix="[fake:ok:hello from the fix]")  # fmt: skip

    async def go() -> tuple[Any, list[Any]]:
        async with coordinator(setup) as c:
            n = await new_issue(c, "Write a greeting. [fake:empty]")
            await c.assign(machine, "api", n)
            p = await drive(c, "api", n)
            return p, c.assignments(history=True)

    p, rows = arun(go())
    assert p.stage == "ready-to-merge", p
    moves = [(m["from"], m["outcome"], m["to"]) for m in p.moves]
    assert moves[0] == ("work", "empty", "fix")
    [work] = [r for r in rows if r.id in p.assignments["work"]]
    assert work.failure_class == "done_empty"
    # The fix was told what was found; the only test ran on the fix's commit.
    fix = next(r for r in rows if r.stage == "fix")
    briefing = (Path(fix.run_dir) / "briefing.md").read_text()
    assert f"The work run {work.id} it reported success but made no commit" in briefing
    tests = [v for v in p.verdicts if v["stage"] == "test"]
    assert [v["outcome"] for v in tests] == ["passed"]


def test_an_uncommitted_fix_is_fixed_again_in_the_same_worktree(setup: Setup) -> None:
    # Round 1's fix leaves its change uncommitted; round 2's fix (same worktree) commits it.
    machine = pipeline_setup(
        setup, None, review="[fake:{{ 'request_changes' if round == 0 else 'approve' }}]",
        fix="[fake:{{ 'dirty' if round == 1 else 'ok' }}:hello again]",
    )  # fmt: skip

    async def go() -> tuple[Any, list[Any]]:
        async with coordinator(setup) as c:
            n = await new_issue(c, "Write a greeting. [fake:ok:hello]")
            await c.assign(machine, "api", n)
            p = await drive(c, "api", n)
            return p, c.assignments(history=True)

    p, rows = arun(go())
    fixes = [r for r in rows if r.stage == "fix"]
    assert [f.failure_class for f in fixes] == ["uncommitted", None]
    assert fixes[0].outcome["rescue"] == f"refs/coord/rescue/{fixes[0].id}"
    assert ("fix", "uncommitted", "fix") in [(m["from"], m["outcome"], m["to"]) for m in p.moves]
    assert p.stage == "ready-to-merge", p


def test_the_merge_queue_refuses_the_pr_of_a_closed_issue(setup: Setup) -> None:
    machine = pipeline_setup(setup, None, review="[fake:approve]", max_workers=6)
    [n] = ready(setup, machine, ["feature-1.txt"])
    arun(forge_of(setup).set_state(n, "closed"))  # a person closed it after the approval

    report, pipelines = merge(setup)
    assert report.test_runs == 0 and not report.batches
    assert f"issue #{n} is closed" in report.waiting[0]["why"]
    [p] = pipelines
    assert p.stage == "needs-human" and f"issue #{n} is closed" in (p.reason or "")
    assert origin_log(setup) == ["initial commit"]


def test_a_closed_issue_gets_no_next_stage(setup: Setup) -> None:
    machine = pipeline_setup(setup, None, review="[fake:approve]")

    async def go() -> Any:
        async with coordinator(setup) as c:
            n = await new_issue(c, "Write a greeting. [fake:ok:hello]")
            a = await c.assign(machine, "api", n)
            await c.forge("api").set_state(n, "closed")  # closed while its worker runs
            await c.wait(a.id, timeout=30)
            for _ in range(3):
                await c.advance()
            return c.board.pipeline("api", n), c.assignments(history=True)

    p, rows = arun(go())
    assert p.stage == "needs-human", p
    assert f"issue #{p.issue} of api is closed: no pull request" in (p.reason or "")
    assert len(rows) == 1 and p.pr is None  # the work only: no PR, no reviewer


def test_resume_never_continues_the_work_of_a_closed_issue(setup: Setup) -> None:
    setup.add_local("local", env={
        "FAKE_CLAUDE_SCENARIO": "error_result", "FAKE_CLAUDE_ERROR_STATUS": "429",
        "FAKE_CLAUDE_RETRY_DELAY_MS": "100", "CLAUDE_CODE_MAX_RETRIES": "1",
    })  # fmt: skip

    async def go() -> tuple[Any, Any]:
        async with setup.coordinator() as c:
            n = (await c.forge("api").create_issue("Limited")).number
            a = await c.assign("local", "api", n, pipeline=False)
            for _ in range(100):
                await c.status()
                if c.get(a.id).status == Status.QUEUED:
                    break
                await asyncio.sleep(0.1)
            await c.forge("api").set_state(n, "closed")
            await asyncio.sleep(max(0.0, (c.get(a.id).not_before or 0) - time.time()) + 0.1)
            report = await c.resume()
            return report, c.get(a.id)

    report, row = arun(go())
    assert report.continued == [] and row.status == Status.QUEUED
    assert row.held and f"issue #{row.issue} is closed: not continued" in row.held


def test_the_merge_queue_refuses_an_approval_older_than_the_head(setup: Setup) -> None:
    # A commit reached the PR and its tests (the board says tested at the new head: say a
    # by-hand `coord test` after a crash), but the approval on record is of the old head.
    machine = pipeline_setup(setup, None, review="[fake:approve]", max_workers=6)
    [n] = ready(setup, machine, ["feature-1.txt"])
    push_unreviewed(setup, n)

    async def retested() -> tuple[str, str]:
        async with coordinator(setup) as c:
            p = c.board.pipeline("api", n)
            assert p is not None and p.pr is not None
            head = (await c.forge("api").get_pr(p.pr)).head_sha

            def apply(q: Any, txn: Any) -> None:
                q.head_sha = q.tested_sha = head

            c.board.pipeline_change("api", n, apply)
            return str(p.head_sha), head

    approved, head = arun(retested())
    report, pipelines = merge(setup)
    assert report.test_runs == 0 and not report.batches
    why = report.waiting[0]["why"]
    assert f"the approval of PR #{pipelines[0].pr} was of {approved[:12]}" in why
    assert f"older than its head {head[:12]}" in why
    assert pipelines[0].stage == "review" and origin_log(setup) == ["initial commit"]
