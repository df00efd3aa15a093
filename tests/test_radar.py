"""The file-conflict radar and the disk probe: what live branches really change, and how much
disk coordlib uses on a machine, read by the status pass itself (no extra remote command)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from click.testing import CliRunner

from coord_cli.main import coord
from coordlib.assignment import Assignment
from coordlib.runtime.answers import changed_paths, parse_status
from coordlib.testing import SSHServer

from .conftest import Setup
from .test_pipeline import arun


def test_changed_paths_keeps_plain_relative_paths_only() -> None:
    payload = b'src/a.py\n/etc/passwd\n../x\nsrc/../../y\n"q\\303\\251.txt"\ndocs/b.md\n\n'
    assert changed_paths(payload) == ("src/a.py", "docs/b.md")
    assert changed_paths(b"".join(b"f%d\n" % i for i in range(500))) == tuple(
        f"f{i}" for i in range(200)
    )
    assert changed_paths(None) == ()


def test_a_status_answer_carries_files_and_disk_records() -> None:
    data = (b"coord-run 2 status boot=b now=1.5\n"
            b"run api-1 alive=1 size=0 dispatching=0\nexit \nevents 0 0\n\n"
            b"files 14\nsrc/a.py\nb.md\n\n"
            b"disk used_kb=120 free_kb=9000 at=17\nend\n")  # fmt: skip
    probe = parse_status(data)
    assert probe.runs["api-1"].files == ("src/a.py", "b.md")
    assert probe.disk is not None and (probe.disk.used_kb, probe.disk.free_kb) == (120, 9000)


def test_the_radar_reads_a_branch_once_then_only_after_it_did_something(setup: Setup) -> None:
    from coordlib.monitor import RADAR_EVERY, Monitor

    mon = Monitor.__new__(Monitor)
    mon._radar = {}
    a = Assignment(id="api-1-x", machine="m", repo="api", issue=1, branch="b", model="m",
                   status="running", events_offset=10)  # fmt: skip
    assert mon._radar_due(a, now=100.0)  # never read: now
    assert not mon._radar_due(a, now=100.0 + RADAR_EVERY + 1)  # nothing new since
    a.events_offset = 99
    assert not mon._radar_due(a, now=101.0)  # something new, but too soon
    assert mon._radar_due(a, now=100.0 + RADAR_EVERY + 1)
    reviewer = Assignment(id="api-1-r", machine="m", repo="api", issue=1, branch="b", model="m",
                          status="running", reads_only=True)  # fmt: skip
    assert not mon._radar_due(reviewer, now=0.0)


def _git(wt: str, *args: str) -> None:
    subprocess.run(["git", "-C", wt, *args], check=True, capture_output=True)


def test_status_finds_what_live_branches_really_change_over_sshd(
    setup: Setup, sshd: SSHServer
) -> None:
    """Two workers change the same file with Bash (no edit tool says so, no issue declares
    it): the status pass reads it on the machine, `coord status` shows the overlap, the
    planner keeps a third issue that declares the file off both, and the disk is reported."""
    setup.add_ssh(sshd, "box", max_workers=3, env={"FAKE_CLAUDE_SCENARIO": "stall"})
    setup.add_local("local", max_workers=1)  # (the local forge's origin lives here)
    config = setup.write()

    async def start() -> tuple[list[Assignment], int]:
        from coordlib import Coordinator

        async with Coordinator.from_path(config) as c:
            forge = c.forge("api")
            rows = []
            for title in ("One", "Two"):
                n = (await forge.create_issue(title)).number
                rows.append(await c.assign("box", "api", n, pipeline=False))
            third = await forge.create_issue("Three", body="Files: src/shared.py",
                                             labels=["status:ready"])  # fmt: skip
            return rows, third.number

    (one, two), third = arun(start())
    cli = CliRunner()
    try:
        assert one.worktree and two.worktree
        # The first commits its change; the second leaves it in the worktree, untracked.
        for wt in (one.worktree, two.worktree):
            Path(wt, "src").mkdir()
            Path(wt, "src", "shared.py").write_text("x = 1\n")
        _git(one.worktree, "add", "src/shared.py")
        _git(one.worktree, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "w")
        Path(two.worktree, "README.md").write_text("changed, not committed\n")

        deadline = time.monotonic() + 60
        while True:
            out = cli.invoke(coord, ["--config", str(config), "status", "--json"])
            assert out.exit_code == 0, out.output
            data = json.loads(out.stdout)
            box = data["machines"][0]
            if (data["overlaps"] and box["disk"] is not None) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert data["overlaps"] == [{"a": one.id, "b": two.id, "files": ["src/shared.py"]}]
        rows = {a["id"]: a for a in data["assignments"]}
        assert rows[one.id]["files_changed"] == ["src/shared.py"]
        assert sorted(rows[two.id]["files_changed"]) == ["README.md", "src/shared.py"]
        assert box["disk"]["used_kb"] > 0 and box["disk"]["free_kb"] > 0, box
        assert box["stale"] is False

        planned = cli.invoke(coord, ["--config", str(config), "plan", "--json"])
        assert planned.exit_code == 0, planned.output
        skipped = {s["issue"]: s["why"] for s in json.loads(planned.stdout)["skipped"]}
        assert "src/shared.py" in skipped[third], skipped
    finally:
        for aid in (one.id, two.id):
            cli.invoke(coord, ["--config", str(config), "stop", aid])


def test_a_machine_that_misses_stale_threshold_passes_is_stale_until_it_answers(
    setup: Setup, sshd: SSHServer
) -> None:
    m = setup.add_ssh(sshd, "box")
    setup.extra["concurrency"] = {"stale_threshold": 2}
    good = setup.write().read_text()
    m["host"], m["port"] = "127.0.0.1", 1  # nothing listens there
    config = setup.write()
    cli = CliRunner()

    def box() -> dict[str, object]:
        out = cli.invoke(coord, ["--config", str(config), "status", "--json"])
        return dict(json.loads(out.stdout)["machines"][0])

    assert box()["stale"] is False and box()["stale"] is True  # missed 1, then 2 passes
    config.write_text(good)
    assert box()["reachable"] is True and box()["stale"] is False
