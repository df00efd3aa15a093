"""coord clean: worktrees and run dirs of ended work go; changes, main checkouts and live work stay.

Real git worktrees, real tmux and the fake worker, on the local machine and over sshd.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordlib import CoordError, Status, UsageError
from coordlib.runtime.layout import Layout
from coordlib.testing import SSHServer
from coordlib.testing.gitrepo import git

from .conftest import Setup


def arun(coro: Any) -> Any:
    return asyncio.run(coro)


def worktrees(repo: Path) -> str:
    return git("worktree", "list", "--porcelain", cwd=repo)


@pytest.mark.parametrize("kind", ["local", "ssh"])
def test_clean_removes_worktree_and_run_dir_and_keeps_the_branch(
    kind: str, setup: Setup, request: pytest.FixtureRequest
) -> None:
    env = {"FAKE_CLAUDE_SCENARIO": "ok"}
    if kind == "ssh":
        setup.add_ssh(request.getfixturevalue("sshd"), "m", env=env)
    else:
        setup.add_local("m", env=env)
    wd = setup.root / "wd-m"

    async def go() -> None:
        async with setup.coordinator() as c:
            a = await c.wait((await c.assign("m", "api", 5, title="tidy")).id, timeout=30)
            assert a.status == Status.DONE
            wt, run = wd / "worktrees" / "api" / a.id, wd / "runs" / a.id
            assert wt.is_dir() and run.is_dir()

            assert (await c.clean()).runs == []  # it ended moments ago: not 7 days

            dry = await c.clean(older_than=0, dry_run=True)
            assert [(r.id, r.worktree, r.run) for r in dry.runs] == [
                (a.id, "would_remove", "would_remove")
            ]
            assert wt.is_dir() and run.is_dir()
            assert "cleaned" not in c.get(a.id).extra

            before = c.transport("m").stats["commands"]
            report = await c.clean(older_than=0)
            assert c.transport("m").stats["commands"] - before == 1  # one per machine
            assert [(r.id, r.worktree, r.run) for r in report.runs] == [
                (a.id, "removed", "removed")
            ]
            assert not wt.exists() and not run.exists()
            assert str(wt) not in worktrees(setup.repo.path)
            # The branch, with the worker's commit, stays in the machine's clone.
            assert setup.repo.log(a.branch)[0].startswith("coord:")
            mark = c.get(a.id).extra["cleaned"]
            assert mark["worktree"] == "removed" and mark["run"] == "removed"
            assert c.get(a.id).status == Status.DONE  # the outcome stays on the board

            assert (await c.clean(older_than=0)).runs == []  # nothing left to do
            with pytest.raises(CoordError, match="removed by `coord clean`"):
                async for _ in c.log(a.id):
                    pass

    arun(go())


def test_a_worktree_with_changes_is_kept_until_they_are_gone(setup: Setup) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"})

    async def go() -> None:
        async with setup.coordinator() as c:
            a = await c.wait((await c.assign("local", "api", 6, title="edit")).id, timeout=30)
            wt = Path(a.worktree)
            (wt / "notes.txt").write_text("mine, not committed\n")  # untracked
            (wt / "README.md").write_text("changed\n")  # a tracked file, modified

            report = await c.clean(older_than=0)
            (r,) = report.runs
            assert (r.worktree, r.run) == ("kept", "removed")
            assert "2 uncommitted or untracked file(s)" in r.note
            assert (wt / "notes.txt").read_text() == "mine, not committed\n"
            assert (wt / "README.md").read_text() == "changed\n"
            assert "cleaned" not in c.get(a.id).extra  # tried again next time

            git("checkout", "README.md", cwd=wt)
            (wt / "notes.txt").unlink()
            (r,) = (await c.clean(older_than=0)).runs
            assert (r.worktree, r.run) == ("removed", "missing")
            assert not wt.exists()
            assert c.get(a.id).extra["cleaned"]["worktree"] == "removed"

    arun(go())


def test_main_checkouts_and_live_work_are_never_touched(setup: Setup) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "stall"})

    async def go() -> None:
        async with setup.coordinator() as c:
            live = await c.assign("local", "api", 7, title="still going")
            with pytest.raises(UsageError, match=f"{live.id} is running.*coord stop"):
                await c.clean(live.id)
            # Rows as a damaged or hand-edited board might hold them: an ended one whose
            # worktree is the main checkout, and one that shares the live worktree.
            base = {k: v for k, v in c.board.get(live.id).items() if k != "extra"}
            with c.board.transaction() as txn:
                for aid, wt in (("api-1-main", str(setup.repo.path)), ("api-2-old", live.worktree)):
                    txn.insert({**base, "id": aid, "status": "failed", "worktree": wt,
                                "run_dir": "", "finished_at": 1.0})  # fmt: skip

            by_id = {r.id: r for r in (await c.clean(older_than=0)).runs}
            assert set(by_id) == {"api-1-main", "api-2-old"}  # never the live one
            assert by_id["api-1-main"].worktree == "refused"
            assert "coord removes only worktrees it made" in by_id["api-1-main"].note
            assert by_id["api-2-old"].worktree == "in_use"
            assert live.id in by_id["api-2-old"].note
            assert Path(live.worktree).is_dir() and Path(live.run_dir).is_dir()
            assert (setup.repo.path / ".git").is_dir()
            assert git("status", "--porcelain", cwd=setup.repo.path) == ""
            assert (await c.status()).assignments[0].status == Status.RUNNING
            await c.stop(live.id)

    arun(go())


def test_a_main_checkout_inside_the_workdir_is_still_refused(setup: Setup) -> None:
    # Even under workdir/worktrees, only a linked worktree goes: git is asked, not the path.
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"})
    clone = setup.root / "wd-local" / "worktrees" / "api" / "a-clone"
    clone.parent.mkdir(parents=True)
    git("clone", "-q", str(setup.repo.path), str(clone), cwd=setup.root)

    async def go() -> None:
        async with setup.coordinator() as c:
            a = await c.wait((await c.assign("local", "api", 8, title="x")).id, timeout=30)
            with c.board.transaction() as txn:
                txn.update(a.id, {"worktree": str(clone)})
            (r,) = (await c.clean(a.id)).runs
            assert r.worktree == "refused" and "main checkout" in r.note
            assert (clone / ".git").is_dir()

    arun(go())


def test_archived_rows_are_cleaned_and_marked_in_the_history(setup: Setup) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"})
    setup.extra["board"] = {"keep_finished": 0}  # every ended row goes to the history

    async def go() -> None:
        async with setup.coordinator() as c:
            a = await c.wait((await c.assign("local", "api", 9, title="old")).id, timeout=30)
            await c.status()
            assert a.id not in {r["id"] for r in c.board.all()}
            (r,) = (await c.clean(older_than=0)).runs
            assert (r.id, r.worktree, r.run) == (a.id, "removed", "removed")
            (row,) = [x for x in c.board.history() if x["id"] == a.id]
            assert row["extra"]["cleaned"]["run"] == "removed"
            assert row["status"] == "done"
            assert (await c.clean(older_than=0)).runs == []

    arun(go())


def test_cli_clean_reports_and_a_dead_machine_fails_alone(
    setup: Setup, sshd: SSHServer, run_coord: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"})
    config = setup.write()
    done = run_coord("assign", "local", "api", "3", "--title", "cli", config=config, check=True)
    aid = done.stdout.split()[0]
    run_coord("wait", aid, config=config, check=True)

    bad = run_coord("clean", "--older-than", "soon", config=config)
    assert bad.returncode == 2 and "not a duration" in bad.stderr

    dry = run_coord("clean", "--older-than", "0", "-n", config=config, check=True)
    assert "would remove 1 worktree(s) and 1 run dir(s) of 1 ended assignment(s)" in dry.stdout

    # A second machine that cannot be reached, with ended work on the board.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    setup.add_ssh(sshd, "dead")["port"] = dead_port
    config = setup.write()

    async def add_dead_row() -> None:
        async with setup.coordinator() as c:
            row = {k: v for k, v in c.board.get(aid).items() if k != "extra"}
            c.board.insert({**row, "id": "api-4-dead", "machine": "dead", "issue": 4})

    arun(add_dead_row())
    out = run_coord("clean", "--older-than", "0", "--json", config=config)
    assert out.returncode == 1
    report = json.loads(out.stdout)
    by_id = {r["id"]: r for r in report["runs"]}
    assert (by_id[aid]["worktree"], by_id[aid]["run"]) == ("removed", "removed")
    assert by_id["api-4-dead"]["worktree"] == "unreachable"
    assert "cannot connect" in report["errors"]["dead"]


def test_work_that_no_branch_holds_and_live_processes_keep_a_worktree(setup: Setup) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"})
    setup.machines[0]["workdir"] += "/"  # a trailing slash in the config changes nothing

    async def go() -> None:
        async with setup.coordinator() as c:
            a = await c.wait((await c.assign("local", "api", 10, title="d")).id, timeout=30)
            b = await c.wait((await c.assign("local", "api", 11, title="e")).id, timeout=30)
            wt_a, wt_b = Path(a.worktree.replace("//", "/")), Path(b.worktree.replace("//", "/"))
            # a: a commit on a detached HEAD, which no branch would keep once it is gone.
            git("checkout", "-q", "--detach", cwd=wt_a)
            git("commit", "-q", "--allow-empty", "-m", "only here", cwd=wt_a)
            # b: its worker outlived the launcher (still running in the worktree).
            straggler = subprocess.Popen(["sleep", "60"], cwd=wt_b)
            run_b = setup.root / "wd-local" / "runs" / b.id
            (run_b / "worker.pid").write_text(f"{straggler.pid}\n")
            try:
                by_id = {r.id: r for r in (await c.clean(older_than=0)).runs}
                assert by_id[a.id].worktree == "kept" and "detached" in by_id[a.id].note
                assert (by_id[b.id].worktree, by_id[b.id].run) == ("kept", "running")
                assert f"pid {straggler.pid}" in by_id[b.id].note
                assert wt_a.is_dir() and wt_b.is_dir() and run_b.is_dir()
            finally:
                straggler.kill()
                straggler.wait()

            git("checkout", "-q", a.branch, cwd=wt_a)
            by_id = {r.id: r for r in (await c.clean(older_than=0)).runs}
            assert by_id[a.id].worktree == "removed" and by_id[b.id].worktree == "removed"

    arun(go())


def test_a_held_worktree_lock_or_a_symlink_out_keeps_it(setup: Setup, tmp_path: Path) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"})
    wd = setup.root / "wd-local"

    async def go() -> None:
        async with setup.coordinator() as c:
            a = await c.wait((await c.assign("local", "api", 12, title="f")).id, timeout=30)
            b = await c.wait((await c.assign("local", "api", 13, title="g")).id, timeout=30)
            # a: a worker about to start holds the worktree's lock.
            lock = Layout(str(wd)).worktree_lock(a.worktree)
            holder = subprocess.Popen(["flock", lock, "sleep", "60"])
            # b: its path is a symlink to a linked worktree of the user's, elsewhere.
            mine = tmp_path / "my-own-worktree"
            git("worktree", "add", "-q", "-b", "mine", str(mine), cwd=setup.repo.path)
            git("worktree", "remove", b.worktree, cwd=setup.repo.path)
            Path(b.worktree).symlink_to(mine)
            try:
                for _ in range(50):  # until flock holds it
                    if Path(lock).exists():
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.2)
                by_id = {r.id: r for r in (await c.clean(older_than=0)).runs}
                assert by_id[a.id].worktree == "kept"
                assert "a worker is still running in it" in by_id[a.id].note
                assert by_id[b.id].worktree == "refused" and "symlink" in by_id[b.id].note
                assert Path(a.worktree).is_dir() and (mine / ".git").exists()
            finally:
                holder.kill()
                holder.wait()

    arun(go())


def test_any_process_working_in_a_worktree_keeps_it(setup: Setup) -> None:
    # Not the worker (its pid file says nothing of it): a daemon it left, or a person's
    # shell, in a subdirectory.
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"})

    async def go() -> None:
        async with setup.coordinator() as c:
            a = await c.wait((await c.assign("local", "api", 14, title="h")).id, timeout=30)
            sub = Path(a.worktree) / "deep"
            sub.mkdir()
            (sub / ".gitkeep").touch()
            git("add", "deep/.gitkeep", cwd=a.worktree)
            git("commit", "-qm", "a dir", cwd=a.worktree)
            lingering = subprocess.Popen(["sleep", "60"], cwd=sub)
            try:
                (r,) = (await c.clean(older_than=0)).runs
                assert r.worktree == "kept" and str(lingering.pid) in r.note
                assert sub.is_dir()
            finally:
                lingering.kill()
                lingering.wait()
            (r,) = (await c.clean(older_than=0)).runs
            assert r.worktree == "removed"

    arun(go())
