"""Cleanup that follows the forge: merged work (merge and squash alike) goes whatever its age,
unmerged work waits for the age rule, and `--rescue` saves a dirty worktree's work at
``refs/coord/rescue/<id>`` before removing it (nothing lost)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coordlib.testing.gitrepo import git

from .conftest import Setup


def test_clean_follows_the_forge_and_rescue_keeps_dirty_work(
    setup: Setup, run_coord: Callable[..., Any]
) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"}, max_workers=4)
    config = setup.write()
    repo = setup.repo.path

    async def work() -> dict[str, Any]:
        from coordlib import Coordinator

        async with Coordinator.from_path(config) as c:
            forge = c.forge("api")
            rows = {}
            for name in ("merged", "squashed", "open", "dirty"):
                n = (await forge.create_issue(f"The {name} one",
                                              body=f"[fake:ok:{name}.txt=x]")).number  # fmt: skip
                a = await c.assign("local", "api", n, pipeline=False)
                rows[name] = await c.wait(a.id, timeout=60)
            for name in ("merged", "squashed", "open"):
                branch = rows[name].branch
                git("push", "-q", "-f", "origin", branch, cwd=repo)
                pr = await forge.open_pr(head=branch, base="main", title=rows[name].title)
                if name != "open":
                    await forge.merge(pr.number, method="merge" if name == "merged" else "squash")
            return {k: (a.id, a.worktree) for k, a in rows.items()}

    rows = asyncio.run(work())
    # The dirty one: its worker left work behind, uncommitted (and a file no one tracks).
    dirty_id, dirty_wt = rows["dirty"]
    Path(dirty_wt, "dirty.txt").write_text("edited, never committed\n")
    Path(dirty_wt, "notes.txt").write_text("mine\n")

    out = run_coord("clean", "--json", config=config)  # the default age: 7 days
    assert out.returncode == 0, out.stderr
    got = {r["id"]: r for r in json.loads(out.stdout)["runs"]}
    assert set(got) == {rows["merged"][0], rows["squashed"][0]}  # young, yet merged
    assert all(r["worktree"] == "removed" and r["merged"] for r in got.values()), got
    assert not Path(rows["squashed"][1]).exists()  # git's ancestry could not have told
    assert Path(rows["open"][1]).is_dir() and Path(dirty_wt).is_dir()

    out = run_coord("clean", "--older-than", "0", "--json", config=config)
    got = {r["id"]: r for r in json.loads(out.stdout)["runs"]}
    assert got[rows["open"][0]]["worktree"] == "removed" and not got[rows["open"][0]]["merged"]
    assert got[dirty_id]["worktree"] == "kept" and "clean --rescue" in got[dirty_id]["note"]

    dry = run_coord("clean", "--older-than", "0", "--rescue", "-n", config=config)
    assert "would save its work at refs/coord/rescue/" in dry.stdout, dry.stdout
    assert Path(dirty_wt, "notes.txt").is_file()

    out = run_coord("clean", "--older-than", "0", "--rescue", "--json", config=config)
    (r,) = json.loads(out.stdout)["runs"]
    assert (r["id"], r["worktree"], r["rescue"]) == (
        dirty_id, "removed", f"refs/coord/rescue/{dirty_id}")  # fmt: skip
    assert not Path(dirty_wt).exists()
    # Nothing lost: the rescue ref holds both files, on top of the worker's commit.
    ref = f"refs/coord/rescue/{dirty_id}"
    show = git("show", f"{ref}:dirty.txt", cwd=repo)
    assert "edited, never committed" in show
    assert git("show", f"{ref}:notes.txt", cwd=repo) == "mine"
    text = run_coord("clean", "--older-than", "0", config=config).stdout
    assert "removed 0 worktree(s)" in text


def test_done_cleans_the_sessions_merged_work(setup: Setup) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"})
    config = setup.write()

    async def go() -> tuple[dict[str, Any], str, str]:
        from coordlib import Coordinator

        async with Coordinator.from_path(config) as c:
            forge = c.forge("api")
            n = (await forge.create_issue("Merge me")).number
            a = await c.wait((await c.assign("local", "api", n, pipeline=False)).id, timeout=60)
            git("push", "-q", "-f", "origin", a.branch, cwd=setup.repo.path)
            pr = await forge.open_pr(head=a.branch, base="main", title="Merge me")
            await forge.merge(pr.number, method="rebase")
            kept = await c.wait((await c.assign("local", "api", n + 1)).id, timeout=60)
            return await c.done(), a.worktree or "", kept.worktree or ""

    summary, merged_wt, kept_wt = asyncio.run(go())
    assert summary["cleaned"]["worktrees"] == 1 and not Path(merged_wt).exists()
    assert Path(kept_wt).is_dir()  # not merged, and young: it stays
