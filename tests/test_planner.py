"""The planner: pure decisions from fixtures (dependencies, capabilities, overlaps, limits,
stale machines, claims, pauses), then `coord plan` → `coord approve` end to end over sshd."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from coord_cli.main import coord
from coordlib.planner import Candidate, InFlight, MachineView, PlanInput, capabilities_asked, plan
from coordlib.testing import SSHServer
from coordlib.testing.model_server import ModelServer

from .conftest import Setup
from .test_pipeline import arun


def machine(
    name: str, free: int = 2, *, repos: tuple[str, ...] = ("api", "web"),
    caps: tuple[str, ...] = (), healthy: bool = True, why: str = "",
) -> MachineView:  # fmt: skip
    return MachineView(name, frozenset(repos), frozenset(caps), free=free, slots=max(free, 2),
                       healthy=healthy, why_not=why)  # fmt: skip


def run_plan(**kw: Any) -> tuple[dict[tuple[str, int], str], dict[tuple[str, int], str]]:
    base: dict[str, Any] = {"machines": [machine("m1")], "fleet_free": 8,
                            "repo_order": ["api", "web"]}  # fmt: skip
    proposals, skipped = plan(PlanInput(**{**base, **kw}))
    return ({(p.repo, p.issue): p.machine for p in proposals},
            {(s.repo, s.issue): s.why for s in skipped})  # fmt: skip


def test_upstream_first_and_a_repo_waits_while_its_upstream_has_work_in_flight() -> None:
    got, left = run_plan(candidates=[Candidate("web", 1), Candidate("api", 2)])
    assert list(got) == [("api", 2), ("web", 1)]  # upstream first, whatever the numbers
    waits = {"web": "waits for upstream api: api-3-x is not merged"}
    got, left = run_plan(candidates=[Candidate("web", 1)], upstream_busy=waits)
    assert not got and "waits for upstream api" in left[("web", 1)]


def test_capabilities_pick_the_machine_or_say_none_has_them() -> None:
    machines = [machine("cpu", 4), machine("gpu", 1, caps=("gpu",))]
    got, _ = run_plan(candidates=[Candidate("api", 1, labels=("needs:gpu",)),
                                  Candidate("api", 2)], machines=machines)  # fmt: skip
    assert got == {("api", 1): "gpu", ("api", 2): "cpu"}  # the roomier one for plain work
    _, left = run_plan(candidates=[Candidate("api", 3, labels=("needs:tpu",))], machines=machines)
    assert "no machine serving api has tpu" in left[("api", 3)]
    assert capabilities_asked(["needs:gpu", "needs:", "bug"]) == {"gpu"}


def test_two_workers_are_never_given_the_same_file() -> None:
    busy = [InFlight("api", 9, "api-9-abcd", frozenset({"src/app.py"}))]
    got, left = run_plan(
        candidates=[Candidate("api", 1, files=("src/app.py",)),
                    Candidate("api", 2, files=("docs/",)),
                    Candidate("api", 3, files=("docs/a.md",)),
                    Candidate("api", 4, files=("tests/t.py",))],
        in_flight=busy,
    )  # fmt: skip
    assert left[("api", 1)] == "would change src/app.py, which api-9-abcd is changing"
    assert ("api", 2) in got and "the proposal for api#2" in left[("api", 3)]  # docs/ covers it
    assert ("api", 4) in got


def test_slots_the_fleet_and_unhealthy_machines_limit_the_plan() -> None:
    cands = [Candidate("api", n) for n in (1, 2, 3)]
    got, left = run_plan(candidates=cands, machines=[machine("m1", 2)])
    assert len(got) == 2 and left[("api", 3)] == "no free slot on m1"
    got, left = run_plan(candidates=cands, machines=[machine("m1", 5)], fleet_free=1)
    assert len(got) == 1 and "fleet is full" in left[("api", 2)]
    got, left = run_plan(candidates=cands[:1], machines=[
        machine("m1", healthy=False, why="stale (timeout; last answered 900 s ago)")])  # fmt: skip
    assert not got and left[("api", 1)] == "m1: stale (timeout; last answered 900 s ago)"
    _, left = run_plan(candidates=cands[:1], machines=[machine("m1", repos=("web",))])
    assert "no machine serves api" in left[("api", 1)]


def test_claims_pauses_and_the_model_by_label() -> None:
    _, left = run_plan(candidates=[Candidate("api", 1)],
                       claimed={("api", 1): "branch issue-1-x is on the remote"})  # fmt: skip
    assert left[("api", 1)] == "claimed: branch issue-1-x is on the remote"
    _, left = run_plan(candidates=[Candidate("api", 1)], paused="the session spent $50")
    assert left[("api", 1)] == "dispatch is paused: the session spent $50"
    proposals, _ = plan(PlanInput(candidates=[Candidate("api", 1, labels=("chore",)),
                                              Candidate("api", 2)],
                                  machines=[machine("m1")], fleet_free=4,
                                  model_labels={"chore": "haiku"}))  # fmt: skip
    assert [(p.model, "label chore" in p.why) for p in proposals] == [
        ("haiku", True), ("sonnet", False)]  # fmt: skip


def test_plan_then_approve_over_sshd(setup: Setup, sshd: SSHServer) -> None:
    setup.add_local("local", max_workers=1, env={"FAKE_CLAUDE_SCENARIO": "slow",
                                                 "FAKE_CLAUDE_DELAY": "30"})  # fmt: skip
    setup.add_ssh(sshd, "gpubox", capabilities=["gpu"], max_workers=2,
                  env={"FAKE_CLAUDE_SCENARIO": "slow", "FAKE_CLAUDE_DELAY": "30"})  # fmt: skip
    config = setup.write()

    async def issues() -> list[int]:
        from coordlib import Coordinator

        async with Coordinator.from_path(config) as c:
            forge = c.forge("api")
            made = [
                await forge.create_issue("Kernel", body="Files: cuda/k.cu",
                                         labels=["status:ready", "needs:gpu"]),
                await forge.create_issue("Docs", body="Files: docs/a.md", labels=["status:ready"]),
                await forge.create_issue("Docs again", body="Files: docs/a.md",
                                         labels=["status:ready"]),
                await forge.create_issue("Later", labels=["status:ready"]),
                await forge.create_issue("Not ready"),
            ]  # fmt: skip
            return [i.number for i in made]

    kernel, docs, docs2, later, _ = arun(issues())
    cli = CliRunner()
    planned = cli.invoke(coord, ["--config", str(config), "plan", "--json"])
    assert planned.exit_code == 0, planned.output
    got = json.loads(planned.stdout)
    by = {p["issue"]: p for p in got["proposals"]}
    assert set(by) == {kernel, docs, later}
    assert by[kernel]["machine"] == "gpubox" and "has gpu" in by[kernel]["why"]
    assert all(set(p) >= {"id", "repo", "issue", "machine", "model", "why"}
               for p in got["proposals"])  # fmt: skip
    skipped = {s["issue"]: s["why"] for s in got["skipped"]}
    assert "would change docs/a.md" in skipped[docs2]
    # Between plan and approve the kernel issue gets claimed by hand: its proposal is refused.
    pid = by[kernel]["id"]
    hand = cli.invoke(coord, ["--config", str(config), "assign", "gpubox", "api", str(kernel),
                              "--no-pipeline"])  # fmt: skip
    assert hand.exit_code == 0, hand.output
    approved = cli.invoke(coord, ["--config", str(config), "approve", "--all", "--json"])
    assert approved.exit_code == 0, approved.output
    results = {r["id"]: r for r in json.loads(approved.stdout)["approved"]}
    assert "claimed" in results[pid]["refused"]
    started = [r for r in results.values() if "assignment" in r]
    assert sorted(r["issue"] for r in started) == sorted([docs, later])
    status = json.loads(cli.invoke(coord, ["--config", str(config), "status", "--json"]).stdout)
    where = {a["issue"]: a["machine"] for a in status["assignments"]}
    assert where[kernel] == "gpubox" and len(where) == 3
    for a in status["assignments"]:
        cli.invoke(coord, ["--config", str(config), "stop", a["id"]])


def test_a_retry_goes_to_another_machine_that_can_take_it(setup: Setup) -> None:
    setup.add_local("first", env={"FAKE_CLAUDE_SCENARIO": "fail"})
    setup.add_local("second", env={"FAKE_CLAUDE_SCENARIO": "ok"})
    setup.machines[1]["workdir"] = str(setup.root / "wd-second")
    config = setup.write()

    async def go() -> tuple[Any, Any]:
        from coordlib import Coordinator

        async with Coordinator.from_path(config) as c:
            a = await c.assign("first", "api", 4, title="Flaky", pipeline=False)
            failed = await c.wait(a.id, timeout=30)
            again = await c.retry(failed.id)  # no --machine: another one that can take it
            return again, await c.wait(again.id, timeout=30)

    again, done = arun(go())
    assert again.machine == "second" and done.status == "done"


def test_retry_machine_prefers_another_healthy_roomy_capable_one() -> None:
    from coordlib.assignment import Assignment
    from coordlib.config_yaml import parse_config
    from coordlib.planner import retry_machine

    config = parse_config(
        "repos: [{name: api}, {name: web}]\nmachines:\n"
        "  - {name: a, host: localhost, max_workers: 2}\n"
        "  - {name: b, host: localhost, max_workers: 2, capabilities: [gpu]}\n"
        "  - {name: c, host: localhost, max_workers: 3, capabilities: [gpu]}\n"
        "  - {name: d, host: localhost, max_workers: 9, repos: [web]}\n",
        path="x.yml",
    )
    prev = Assignment(id="api-1-x", machine="a", repo="api", issue=1, branch="b", model="m")
    busy = [Assignment(id=f"api-{n}-y", machine="c", repo="api", issue=n, branch="b",
                       model="m", status="running") for n in (2, 3)]  # fmt: skip

    def fresh(name: str) -> bool:
        return False

    assert retry_machine(config, prev, ["needs:gpu"], busy, fresh) == "b"  # c is busier
    assert retry_machine(config, prev, [], [], fresh) == "c"  # roomiest; d has no api
    stale = {"b", "c"}.__contains__
    assert retry_machine(config, prev, ["needs:gpu"], [], stale) == "a"  # none: same


def test_auto_reassign_moves_a_run_a_machine_failed_to_another(setup: Setup) -> None:
    setup.add_local("broken", claude_command="/nonexistent/claude")
    setup.add_local("second", env={"FAKE_CLAUDE_SCENARIO": "ok"})
    setup.machines[1]["workdir"] = str(setup.root / "wd-second")
    setup.extra["concurrency"] = {"auto_reassign": True}
    config = setup.write()

    async def go() -> list[Any]:
        import asyncio

        from coordlib import Coordinator

        async with Coordinator.from_path(config) as c:
            first = await c.assign("broken", "api", 6, title="Anywhere", pipeline=False)
            for _ in range(100):
                await c.advance()
                rows = c.assignments(history=True)
                moved = [a for a in rows if a.extra.get("retry_of") == first.id]
                if moved and moved[0].is_terminal:
                    break
                await asyncio.sleep(0.2)
            return [c.get(first.id), *moved]

    first, moved = arun(go())
    assert first.failure_class == "claude_not_found"
    assert moved.machine == "second" and moved.status == "done" and moved.attempt == 2


def test_status_shows_live_workers_changing_the_same_files(setup: Setup) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "stall"}, max_workers=3)
    config = setup.write()

    async def go() -> list[str]:
        from coordlib import Coordinator

        async with Coordinator.from_path(config) as c:
            forge = c.forge("api")
            ids = []
            for title, files in (("One", "src/app.py, docs/"), ("Two", "src/app.py"),
                                 ("Three", "tests/t.py")):  # fmt: skip
                n = (await forge.create_issue(title, body=f"Files: {files}")).number
                ids.append((await c.assign("local", "api", n, pipeline=False)).id)
            return ids

    one, two, three = arun(go())
    try:
        data = json.loads(CliRunner().invoke(coord, ["--config", str(config), "status",
                                                     "--json"]).stdout)  # fmt: skip
        assert data["overlaps"] == [{"a": one, "b": two, "files": ["src/app.py"]}]
        text = CliRunner().invoke(coord, ["--config", str(config), "status"]).stdout
        assert f"{one} and {two}: src/app.py" in text and three not in text.split("overlaps")[1]
    finally:
        for aid in (one, two, three):
            CliRunner().invoke(coord, ["--config", str(config), "stop", aid])


def test_approve_warns_of_a_checkout_behind_origin_and_auto_pull_catches_it_up(
    setup: Setup,
) -> None:
    from coordlib.testing.gitrepo import git

    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"}, max_workers=4)
    config = setup.write()
    assert setup.repo.origin is not None
    other = setup.root / "elsewhere"
    git("clone", "-q", str(setup.repo.origin), str(other))
    git("commit", "-q", "--allow-empty", "-m", "moved on", cwd=other)
    git("push", "-q", "origin", "main", cwd=other)  # origin is one commit ahead of the checkout

    async def issues() -> None:
        from coordlib import Coordinator

        async with Coordinator.from_path(config) as c:
            for title in ("First", "Second"):
                await c.forge("api").create_issue(title, labels=["status:ready"])

    arun(issues())
    cli = CliRunner()

    def approve(*flags: str) -> list[dict[str, Any]]:
        assert cli.invoke(coord, ["--config", str(config), "plan"]).exit_code == 0
        out = cli.invoke(coord, ["--config", str(config), "approve", *flags, "--json"])
        assert out.exit_code == 0, out.output
        return list(json.loads(out.stdout)["approved"])

    first = approve("p1")
    assert "is 1 commit(s) behind origin/main" in first[0]["checkout"]
    assert "--auto-pull" in first[0]["checkout"]
    assert setup.repo.log("main")[0] == "initial commit"  # warned, not touched
    second = approve("p1", "--auto-pull")
    assert "pulled 1 commit(s) of origin/main" in second[0]["checkout"]
    assert setup.repo.log("main")[0] == "moved on"


def test_plan_then_approve_on_two_sshd_machines_with_the_real_cli(
    setup: Setup,
    sshd_factory: Callable[..., SSHServer],
    claude_cli: Path,
    model_server: Callable[..., ModelServer],
) -> None:
    """The real `claude -p` on two sshd machines (clones of their own): the gpu issue goes
    to the machine with the capability, the other to the roomier one; both work and commit."""
    from coordlib.testing.gitrepo import git
    from coordlib.testing.model_server import Scenario, Turn, text, tool

    from .test_real_claude import SECRET, worker_env

    commit = Scenario([
        Turn([tool("Bash", command="echo done > work.txt && git add work.txt && "
                                   "git commit -qm 'Do the work'", description="Work, commit")]),
        Turn([text("STATUS: done\nDid it.")]),
    ])  # fmt: skip
    server = model_server({"work": commit})
    env = worker_env(server, setup.root / "home")
    clone = setup.root / "clone-b"
    assert setup.repo.origin is not None
    git("clone", "-q", str(setup.repo.origin), str(clone))
    setup.add_ssh(sshd_factory(), "cpu", claude_command=str(claude_cli), env=env, max_workers=3)
    setup.add_ssh(sshd_factory(), "gpu", claude_command=str(claude_cli), env=env, max_workers=1,
                  capabilities=["gpu"], tmux_socket=setup.socket + "g",
                  repo_paths={"api": str(clone)})  # fmt: skip
    setup.worker.update(stall_timeout=60, result_grace=5)
    config = setup.write()
    config.write_text(config.read_text().replace(
        "test_command: 'true'", f"test_command: 'true'\n  url: {setup.repo.origin}"))  # fmt: skip

    async def go() -> tuple[dict[str, Any], list[Any]]:
        from coordlib import Coordinator

        async with Coordinator.from_path(config, environ={"TEST_WORKER_API_KEY": SECRET}) as c:
            forge = c.forge("api")
            kernel = await forge.create_issue("Kernel", body="[scenario:work]\n\nFiles: k.cu",
                                              labels=["status:ready", "needs:gpu"])  # fmt: skip
            docs = await forge.create_issue("Docs", body="[scenario:work]\n\nFiles: docs/a.md",
                                            labels=["status:ready"])  # fmt: skip
            planned = await c.plan()
            done = await c.approve([p["id"] for p in planned.proposals])
            rows = [await c.wait(r["assignment"], timeout=120) for r in done]
            return {p["issue"]: p["machine"] for p in planned.proposals} | {
                "kernel": kernel.number, "docs": docs.number}, rows  # fmt: skip

    try:
        where, rows = arun(go())
    finally:
        subprocess.run(["tmux", "-L", setup.socket + "g", "kill-server"], capture_output=True)
    assert where[where["kernel"]] == "gpu" and where[where["docs"]] == "cpu"
    assert all(a.status == "done" and a.outcome["commits"] == 1 for a in rows), rows
