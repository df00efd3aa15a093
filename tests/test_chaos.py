"""Fault tests at full size (marker ``chaos``): the faults that lose or duplicate work.

1. sshd killed and restarted 5 times during a `watch` of 1,000 events.
2. The coordinator SIGKILLed at 10 points of assign -> run -> record, then `coord resume`,
   `coord status` and `coord wait`; and a resume racing a dead coordinator's dispatch.
3. SIGKILL at random moments of a process writing the board in a loop.
4. The worker machine reboots; `coord retry` starts the issue on another machine.
5. The run dir's disk full before dispatch, and filling up during the run.
6. Hypothesis fuzzing of the command builder through bash, dash and the real launcher.
7. Bursts of 50 assignments against one sshd with OpenSSH's default limits.

Everything is real: OpenSSH ``sshd`` on loopback, tmux on the test's own socket, git with a
bare origin, the scripted worker, the ``coord`` CLI (in this process through click's runner,
or in processes of its own where processes are the point).  Precise kill points come from
hooks outside coordlib: a driver process that patches a few functions to stop at a named
point, and shims for ``git``/``tmux``/``mkfifo`` on the worker's PATH (sshd ``SetEnv``) that
hold the remote half of a dispatch at a named point until the test releases it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import coordlib
from coord_cli.main import coord
from coordlib import CoordError, Coordinator
from coordlib.board import Board
from coordlib.runtime.answers import parse_status
from coordlib.runtime.builders import Want, status_command
from coordlib.runtime.command import LaunchSpec, encode_env, join
from coordlib.runtime.protocol import Scope, launcher_script, remote_script
from coordlib.testing import SSHServer

from .conftest import Setup
from .test_command import TEXT, WORD

pytestmark = pytest.mark.chaos

REPO_ROOT = Path(coordlib.__file__).resolve().parent.parent
# Subprocesses import coordlib from this checkout, wherever they run.
SUB_ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
BRIEFING = "Work on the issue.\n"
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
# sshd options for the test's own servers.  SHLVL=1 makes bash skip ~/.bashrc for the
# command (it reads it only for a top-level shell): root's .bashrc here costs ~0.2-0.5 s per
# remote command, which this file would pay a few hundred times.
FAST_SHELL = "SetEnv SHLVL=1\n"


def run_dirs(workdir: Path) -> list[Path]:
    """The run directories under workdir/runs (not the .live index)."""
    return [p for p in (workdir / "runs").iterdir() if not p.name.startswith(".")]


def arun(coro: Any) -> Any:
    return asyncio.run(coro)


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll check until it returns something truthy; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def board_rows(config: Path) -> list[dict[str, Any]]:
    """Read the live rows straight from board.json, as any outside reader would."""
    path = config.parent / ".coord" / "board.json"
    if not path.exists():
        return []
    data = json.loads(path.read_bytes())  # must always be valid JSON
    return list(data.get("assignments", {}).values())


def write_config(setup: Setup) -> Path:
    """Write setup's coordinator.yml, naming the repo's origin (no machine may be local)."""
    path = setup.write()
    data = yaml.safe_load(path.read_text())
    for repo in data["repos"]:
        repo.setdefault("url", str(setup.repo.origin))
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def coord_proc(*args: str, config: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real `coord` CLI in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "coord_cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=SUB_ENV,
        cwd=REPO_ROOT,
        check=False,
    )


def coord_cli(*args: str, config: Path) -> Result:
    """Run the real `coord` CLI in this process (a process start costs ~1 s on a busy box)."""
    return CliRunner().invoke(coord, ["--config", str(config), *args], catch_exceptions=False)


def coord_json(*args: str, config: Path) -> Any:
    out = coord_cli(*args, "--json", config=config)
    assert out.exit_code == 0, f"coord {' '.join(args)}: {out.stderr}"
    return json.loads(out.stdout)


def tmux_sessions(socket: str) -> list[str]:
    out = subprocess.run(
        ["tmux", "-L", socket, "list-sessions", "-F", "#{session_name}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.split() if out.returncode == 0 else []


def branches(repo: Path, issue: int) -> list[str]:
    out = subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "for-each-ref",
            "--format=%(refname:short)",
            f"refs/heads/issue-{issue}-*",
            f"refs/heads/issue-{issue}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def pid_alive(pid: int) -> bool:
    """Tell whether pid runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat.rsplit(") ", 1)[1].startswith("Z")


def kill_run_processes(run_dir: Path) -> None:
    """SIGKILL a run's launcher and its worker's process group, as a power cut would."""
    pids = []
    with contextlib.suppress(OSError, ValueError):
        pids.append(int((run_dir / "launcher.pid").read_text().split()[0]))
        os.kill(pids[-1], signal.SIGKILL)
    with contextlib.suppress(OSError, ValueError):
        pids.append(int((run_dir / "worker.pid").read_text().split()[0]))
        os.killpg(pids[-1], signal.SIGKILL)
    # After a reboot there are no zombies either.  PID 1 of this VM reaps orphans only about
    # once a second, and `kill -0` (the launcher's liveness test) succeeds on a zombie.
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), what="reaping")


# ======================== 1. sshd restarted 5 times during a watch


def test_watch_of_1000_events_survives_five_sshd_restarts(
    setup: Setup, sshd_factory: Callable[..., SSHServer]
) -> None:
    server = sshd_factory(extra_config=FAST_SHELL)
    n, restarts = 1000, 5
    env = {
        "FAKE_CLAUDE_SCENARIO": "events",
        "FAKE_CLAUDE_EVENTS": str(n),
        "FAKE_CLAUDE_RATE": "125",
    }
    setup.add_ssh(server, "remote", env=env)
    config = write_config(setup)
    stopped_at: list[float] = []
    seqs: list[int] = []
    events: list[Path] = []  # the run's events.jsonl, once known

    def chaos(stop: threading.Event) -> None:
        # Restart at points of the worker's progress (lines in events.jsonl), so each one
        # lands while lines are still to come, however slow this machine is today.
        for k in range(1, restarts + 1):
            while not events or events[0].read_bytes().count(b"\n") < k * n // (restarts + 2):
                if stop.wait(0.01):
                    return
            stopped_at.append(time.monotonic())
            server.stop()  # every session dies with it, as in an outage
            time.sleep(0.1)
            server.start()

    async def go() -> tuple[list[int], list[float], Any, Any]:
        async with Coordinator.from_path(config) as c:
            a = await c.assign("remote", "api", 11, title="events", briefing=BRIEFING)
            events.append(Path(a.run_dir) / "events.jsonl")
            stop = threading.Event()
            t = threading.Thread(target=chaos, args=(stop,))
            t.start()
            seen_at: list[float] = []
            last_uuid = None
            try:
                async for event in c.watch(a.id):
                    raw = getattr(event, "raw", {})
                    if "seq" in raw and raw.get("uuid") != last_uuid:  # a line, not a block
                        last_uuid = raw["uuid"]
                        seqs.append(raw["seq"])
                        seen_at.append(time.monotonic())
            finally:
                stop.set()
                t.join()
            return seqs, seen_at, c.get(a.id), c.transport("remote").stats

    seqs, seen_at, a, stats = arun(go())
    assert len(stopped_at) == restarts, "the run ended before every restart happened"
    assert seen_at[-1] > stopped_at[-1], "the last outage was not during the watch"
    assert stats["connects"] > restarts  # the watch really reconnected each time
    dupes = sorted({s for s in seqs if seqs.count(s) > 1})
    missing = sorted(set(range(1, n + 1)) - set(seqs))
    assert seqs == list(range(1, n + 1)), f"missing {missing[:20]}, doubled {dupes[:20]}"
    # watch ended because the run ended, and recorded its outcome
    assert a.status == "done" and a.exit_reason == "exited", a


# ======================== 2. the coordinator SIGKILLed at 10 points

# Holds the remote half of a dispatch at a named point: when $CTL/arm.POINT exists the shim
# removes it, writes the dispatch script's pid to $CTL/reached.POINT and waits for
# $CTL/release.POINT.  Unarmed, it is the real program.
SHIM = r"""#!/bin/bash
CTL=@CTL@
real=/usr/bin/${0##*/}
hold() {
    [ -e "$CTL/arm.$1" ] || return 0
    rm -f "$CTL/arm.$1"
    echo "$PPID" >"$CTL/reached.$1.tmp" && mv "$CTL/reached.$1.tmp" "$CTL/reached.$1"
    while [ ! -e "$CTL/release.$1" ]; do sleep 0.02; done
}
case "${0##*/} $*" in
    "git -C "*" worktree add "*)
        hold before_worktree; "$real" "$@"; rc=$?; hold worktree_created; exit $rc ;;
    "mkfifo "*) hold run_files_written ;;
    "tmux -L "*" new-session "*) "$real" "$@"; rc=$?; hold tmux_up; exit $rc ;;
esac
exec "$real" "$@"
"""

# Drives one assign -> wait cycle; with a point named, it stops there (writing
# $CTL/reached.POINT) and sleeps until the test SIGKILLs it.
DRIVER = r"""
import asyncio, json, os, sys, time
from pathlib import Path

config, machine, issue, point, ctl = sys.argv[1:6]
from coordlib import Coordinator
from coordlib.runtime.ssh import SSHTransport

def pause():
    (ctl_dir / f"reached.{point}").write_text(str(os.getpid()))
    time.sleep(3600)

ctl_dir = Path(ctl)
mine = {}
real_replace = os.replace
def replace(src, dst):
    if os.fspath(src).endswith("board.json.tmp"):
        if point == "claim_mid_write":
            pause()  # the temp file is written and fsynced, the board not yet replaced
        if point == "record_mid_write" and "id" in mine:
            rows = json.loads(Path(src).read_bytes())["assignments"].values()
            if any(r["id"] == mine["id"] and r["status"] != "running" for r in rows):
                pause()
    return real_replace(src, dst)
os.replace = replace

real_run = SSHTransport.run
async def run(self, argv, **kw):
    if kw.get("what") == "dispatch" and point == "before_dispatch":
        pause()  # the pending row is on the board, the machine not yet touched
    result = await real_run(self, argv, **kw)
    if kw.get("what") == "dispatch" and point == "dispatch_returned":
        pause()  # the run is up, the board still says pending
    return result
SSHTransport.run = run

async def main():
    async with Coordinator.from_path(config) as c:
        a = await c.assign(machine, "api", int(issue), title=f"kill {point}",
                           briefing="Work on the issue.\n")
        mine["id"] = a.id
        await c.wait(a.id, timeout=60)
asyncio.run(main())
"""

REMOTE_POINTS = ("before_worktree", "worktree_created", "run_files_written", "tmux_up")
HOOK_POINTS = ("claim_mid_write", "before_dispatch", "dispatch_returned", "record_mid_write")
KILL_POINTS = [
    "claim_mid_write",  # inside the claim transaction: temp file written, not renamed
    "before_dispatch",  # pending row written, no remote command yet
    "before_worktree",  # remote: fetched, worktree not yet added
    "worktree_created",  # remote: worktree and branch exist, no run dir
    "run_files_written",  # remote: briefing/spec/launch.env written, no tmux session
    "tmux_up",  # remote: tmux session up, launcher blocked on the env FIFO
    "dispatch_returned",  # the run is up, the board still says pending
    "first_event",  # board running, the worker has written its first events
    "result_no_exit",  # the result is in events.jsonl, exit.json not yet written
    "record_mid_write",  # the transaction recording the outcome: temp written, not renamed
]


class KillRig:
    """A machine whose dispatches can be held, and a driver that can be stopped, at a point."""

    def __init__(self, setup: Setup, server: SSHServer, ctl: Path) -> None:
        self.setup = setup
        self.server = server
        self.ctl = ctl
        self.config = write_config(setup)
        self.workdirs = {m["name"]: Path(m["workdir"]) for m in setup.machines}
        self.driver = ctl / "driver.py"
        self.driver.write_text(DRIVER)

    def row(self, issue: int) -> dict[str, Any] | None:
        rows = [r for r in board_rows(self.config) if r["issue"] == issue]
        assert len(rows) <= 1, rows
        return rows[0] if rows else None

    def run_dir(self, machine: str, aid: str) -> Path:
        return self.workdirs[machine] / "runs" / aid

    def kill_at(self, point: str, machine: str, issue: int, *, release: bool = True) -> None:
        if point in REMOTE_POINTS:
            (self.ctl / f"arm.{point}").touch()
        proc = subprocess.Popen(
            [
                sys.executable,
                str(self.driver),
                str(self.config),
                machine,
                str(issue),
                point,
                str(self.ctl),
            ],
            env=SUB_ENV,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            reached = self.ctl / f"reached.{point}"
            if point in REMOTE_POINTS or point in HOOK_POINTS:
                wait_for(lambda: reached.exists() or proc.poll() is not None, what=point)
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            elif point == "first_event":
                wait_for(lambda: self._first_event(machine, issue), what=point)
            elif point == "result_no_exit":
                wait_for(lambda: self._result_no_exit(machine, issue), what=point)
            self._check_held_state(point, machine, issue)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stderr:
                proc.stderr.close()
        if point in REMOTE_POINTS and release:
            self.release(point)

    def release(self, point: str) -> None:
        """Let a held remote dispatch carry on (its coordinator is dead) and wait for its end."""
        dispatch_pid = int((self.ctl / f"reached.{point}").read_text())
        (self.ctl / f"release.{point}").touch()
        wait_for(lambda: not pid_alive(dispatch_pid), what="the remote dispatch to end")

    def _check_held_state(self, point: str, machine: str, issue: int) -> None:
        """Check the point was hit where it says: the board and machine as they are then."""
        row = self.row(issue)
        if point == "claim_mid_write":
            assert row is None
            tmp = json.loads((self.config.parent / ".coord" / "board.json.tmp").read_bytes())
            assert [r for r in tmp["assignments"].values() if r["issue"] == issue]
            return
        assert row is not None, point
        wd = self.workdirs[machine]
        run = self.run_dir(machine, row["id"])
        worktree = wd / "worktrees" / "api" / row["id"]
        session = f"coord-{row['id']}" in tmux_sessions(self.setup.socket)
        have = (worktree.exists(), (run / "spec.json").exists(), session)
        expected = {
            "before_dispatch": ("pending", (False, False, False)),
            "before_worktree": ("pending", (False, False, False)),
            "worktree_created": ("pending", (True, False, False)),
            "run_files_written": ("pending", (True, True, False)),
            "tmux_up": ("pending", (True, True, True)),
            "dispatch_returned": ("pending", (True, True, True)),
            "first_event": ("running", (True, True, True)),
            "result_no_exit": ("running", (True, True, True)),
            "record_mid_write": ("running", (True, True, True)),
        }[point]
        assert row["status"] == expected[0], (point, row["status"])
        if point in ("dispatch_returned", "first_event", "result_no_exit", "record_mid_write"):
            # The run is up, or (on a slow day, or by design for the last) it has ended.
            have = (*have[:2], have[2] or (run / "exit.json").exists())
        if point == "record_mid_write":
            assert (run / "exit.json").exists()
        assert have == expected[1], (point, have)
        if point == "tmux_up":  # the launcher waits for its environment: no worker yet
            assert (run / "env.fifo").exists() and not (run / "worker.pid").exists()

    def _first_event(self, machine: str, issue: int) -> bool:
        row = self.row(issue)
        if not row or row["status"] != "running":
            return False
        events = self.run_dir(machine, row["id"]) / "events.jsonl"
        data = events.read_bytes() if events.exists() else b""
        return b'"type":"system"' in data and b'"type":"result"' not in data

    def _result_no_exit(self, machine: str, issue: int) -> bool:
        row = self.row(issue)
        if not row or row["status"] != "running":
            return False
        run = self.run_dir(machine, row["id"])
        events = run / "events.jsonl"
        return (
            events.exists()
            and b'"type":"result"' in events.read_bytes()
            and not (run / "exit.json").exists()
        )

    def check_consistent(self, issues: dict[int, str]) -> dict[int, dict[str, Any]]:
        """Check board against machines after resume + status; return each issue's row."""
        report = coord_json("status", config=self.config)
        assert all(m["reachable"] for m in report["machines"]), report["machines"]
        rows = report["assignments"]
        by_issue: dict[int, dict[str, Any]] = {}
        sessions = set(tmux_sessions(self.setup.socket))
        for row in rows:
            assert row["issue"] not in by_issue, f"issue {row['issue']} dispatched twice: {rows}"
            by_issue[row["issue"]] = row
            run = self.run_dir(row["machine"], row["id"])
            # No ghost: a live row has its run, with a live launcher.
            assert row["status"] != "pending", row
            if row["status"] == "running":
                # Its launcher is alive in its tmux session, or it ended since the probe.
                pid = int((run / "launcher.pid").read_text().split()[0])
                up = pid_alive(pid) and f"coord-{row['id']}" in sessions
                assert up or (run / "exit.json").exists(), (row, sessions)
            if row["status"] == "lost":
                assert row["failure_class"] == "lost" and row["error"], row
        for issue, point in issues.items():
            # One worktree, one branch, one run dir, one tmux session per issue, at most.
            prefix = f"api-{issue}-"
            for wd in self.workdirs.values():
                wts = list((wd / "worktrees" / "api").glob(prefix + "*"))
                runs = list((wd / "runs").glob(prefix + "*"))
                assert len(wts) <= 1 and len(runs) <= 1, (point, wts, runs)
                for run in runs:  # no run the board does not know
                    assert issue in by_issue and by_issue[issue]["id"] == run.name, (point, run)
            assert len(branches(self.setup.repo.path, issue)) <= 1, point
            assert len([s for s in sessions if s.startswith("coord-" + prefix)]) <= 1, point
        return by_issue


@pytest.fixture
def kill_rig(
    setup: Setup, sshd_factory: Callable[..., SSHServer], tmp_path: Path
) -> Iterator[KillRig]:
    shims = tmp_path / "shims"
    ctl = tmp_path / "ctl"
    shims.mkdir()
    ctl.mkdir()
    for name in ("git", "tmux", "mkfifo"):
        (shims / name).write_text(SHIM.replace("@CTL@", str(ctl)))
        (shims / name).chmod(0o755)
    server = sshd_factory(extra_config=f"SetEnv SHLVL=1 PATH={shims}:{BASE_PATH}\n")
    setup.worker.update(result_grace=2.5, poll_interval=0.1)  # the result_no_exit window
    setup.extra["concurrency"] = {"max_workers": 50}
    setup.add_ssh(server, "box", max_workers=20, env={"FAKE_CLAUDE_SCENARIO": "linger"})
    setup.add_ssh(
        server,
        "slowbox",
        max_workers=20,
        env={"FAKE_CLAUDE_SCENARIO": "slow", "FAKE_CLAUDE_DELAY": "2"},
    )
    setup.add_ssh(server, "stallbox", max_workers=20, env={"FAKE_CLAUDE_SCENARIO": "stall"})
    rig = KillRig(setup, server, ctl)
    try:
        yield rig
    finally:
        for point in REMOTE_POINTS:  # never leave a held dispatch behind
            (ctl / f"release.{point}").touch()


def test_coordinator_killed_at_ten_points_of_the_cycle(kill_rig: KillRig) -> None:
    rig = kill_rig
    issues: dict[int, str] = {}
    ids: dict[int, str] = {}
    for n, point in enumerate(KILL_POINTS, start=100):
        machine = "slowbox" if point in ("first_event", "dispatch_returned") else "box"
        rig.kill_at(point, machine, n)
        issues[n] = point
        res = coord_cli("resume", "--json", config=rig.config)
        assert res.exit_code == 0, (point, res.stderr)
        rows = rig.check_consistent(issues)
        row = rows.get(n)
        if point == "claim_mid_write":
            # The claim never landed: the board is as it was, and the issue is free.
            assert row is None
            a = coord_json(
                "assign",
                "box",
                "api",
                str(n),
                "--title",
                "again",
                "--briefing",
                BRIEFING,
                config=rig.config,
            )
            ids[n] = a["id"]
        elif point == "before_dispatch":
            # Nothing reached the machine: the pending row is settled, not left claiming.
            assert row is not None and row["status"] == "lost", row
            ids[n] = row["id"]
        else:
            assert row is not None and row["status"] in ("running", "done"), (point, row)
            ids[n] = row["id"]
    # A later `coord wait` records every outcome.
    for n, aid in ids.items():
        done = coord_cli("wait", aid, "--timeout", "30", "--json", config=rig.config)
        final = json.loads(done.stdout)
        expected = "lost" if issues[n] == "before_dispatch" else "done"
        assert (done.exit_code, final["status"]) == (int(expected != "done"), expected), (
            issues[n],
            final,
            done.stderr,
        )
        if expected == "done":
            assert final["cost_usd"] and final["num_turns"], (issues[n], final)
    rows = rig.check_consistent(issues)
    assert sorted(rows) == sorted(issues)
    assert coord_json("resume", config=rig.config)["changed"] == []  # nothing left to repair


def test_resume_while_a_killed_coordinators_dispatch_still_runs_remotely(
    kill_rig: KillRig,
) -> None:
    # The coordinator dies while its dispatch is still on its way on the machine (held
    # here before `git worktree add`; in life: queued behind another dispatch's repo lock
    # for up to 120 s, or a slow `git fetch`).  `coord resume` runs before the machine is
    # done.  Before 913166b the row was settled as lost ("run directory is gone"), the dead
    # coordinator's pid taken as proof that nothing was in flight; the machine then
    # started the worker anyway, status never looked at the lost row again, and `coord
    # retry` (or an assign with another title) started a second worker on the same issue.
    rig = kill_rig
    rig.kill_at("before_worktree", "stallbox", 200, release=False)
    assert coord_cli("resume", config=rig.config).exit_code == 0
    rig.release("before_worktree")  # the machine finishes the dispatch: a worker starts
    report = coord_json("status", config=rig.config)
    row = next(r for r in report["assignments"] if r["issue"] == 200)
    assert row["status"] == "running", row
    # The issue is not free while its worker runs: neither a retry nor a new assign starts.
    again = coord_cli("retry", row["id"], "--json", config=rig.config)
    assert again.exit_code != 0, f"dispatched twice: {row} and {again.stdout}"
    other = coord_cli(
        "assign",
        "stallbox",
        "api",
        "200",
        "--title",
        "other",
        "--briefing",
        BRIEFING,
        config=rig.config,
    )
    assert other.exit_code != 0 and "already has live assignment" in other.stderr
    assert len(run_dirs(rig.workdirs["stallbox"])) == 1


# ======================== 3. SIGKILL in the middle of board writes


def _board_writer(path: Path, start: int, report_fd: int) -> None:
    """Loop: each transaction bumps a counter and adds a finished row (archiving the oldest)."""
    board = Board(path, keep_finished=3)
    pad = "x" * 20_000  # big enough that a kill lands inside a write, not only between
    i = start
    while True:
        with board.transaction() as txn:
            if "counter" not in txn:
                txn.insert({"id": "counter", "status": "running", "n": 0})
            txn.update("counter", {"n": i})
            txn.insert({"id": f"r{i}", "status": "done", "finished_at": float(i), "pad": pad})
        os.write(report_fd, b"%d\n" % i)
        i += 1


def test_sigkill_mid_board_write_leaves_old_or_new_state(tmp_path: Path) -> None:
    path = tmp_path / "board.json"
    history = tmp_path / "board.history.jsonl"
    tmp = tmp_path / "board.json.tmp"
    rng = random.Random(1234)
    committed = 0  # the last n a writer reported as written
    landed_mid_write = 0
    for cycle in range(45):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            try:
                os.close(r)
                _board_writer(path, committed + 1, w)
            finally:
                os._exit(1)
        os.close(w)
        # Once it has written once (however slow the disk is today), kill it: at a random
        # moment, the moment its next temp file appears, or the moment history grows.
        first = select.select([r], [], [], 30)[0] and os.read(r, 64)
        size = history.stat().st_size if history.exists() else 0
        deadline = time.monotonic() + 5
        if cycle % 3 == 0:
            time.sleep(rng.uniform(0, 0.03))
        elif cycle % 3 == 1:
            while not tmp.exists() and time.monotonic() < deadline:
                pass
        else:
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    if history.stat().st_size > size:
                        break
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with os.fdopen(r, "rb") as reports:
            done = ((first or b"") + reports.read()).split()
        committed = int(done[-1]) if done else committed
        landed_mid_write += tmp.exists()

        # The live file is valid JSON and holds the state before or after the cut-off write.
        data = json.loads(path.read_bytes()) if path.exists() else {"assignments": {}}
        live = {row["id"]: row for row in data["assignments"].values()}
        n = live["counter"]["n"] if "counter" in live else 0
        assert n in (committed, committed + 1), (n, committed)
        finished = {i for i in live if i != "counter"}
        assert finished == {f"r{i}" for i in range(max(1, n - 2), n + 1)}, (n, sorted(finished))
        # History loads; every finished row is live or archived, none lost, none invented.
        # (A kill can tear an append: Linux stops a large write() at a page boundary on
        # SIGKILL.  The torn record is still live, so it is archived again; readers skip
        # the torn line, and the next append starts on a new line.)
        archived = Board(path, keep_finished=3).history()
        assert {row["id"] for row in archived} | finished == {f"r{i}" for i in range(1, n + 1)}
        for line in history.read_bytes().splitlines() if history.exists() else []:
            try:
                record = json.loads(line)
            except ValueError:  # a cut-off record (from its start), nothing glued to it
                assert b'{"id":"r'.startswith(line[:8]), line[:80]
                continue
            assert record["id"].startswith("r"), line[:80]
        committed = n
    assert committed >= 40, "the writers hardly wrote anything"
    assert landed_mid_write, "no kill landed inside a transaction's write"

    # A torn last line (a power cut mid-append) never breaks loading, and the next
    # append starts on a line of its own.
    board = Board(tmp_path / "again" / "board.json", keep_finished=0)
    board.insert({"id": "first", "status": "done", "finished_at": 1.0})  # archived at once
    with open(board.history_path, "ab") as f:
        f.write(b'{"id":"torn","status":"do')
    board.insert({"id": "after-torn", "status": "done", "finished_at": 2.0})
    lines = board.history_path.read_bytes().splitlines()
    assert lines[1:] == [b'{"id":"torn","status":"do', lines[2]] and json.loads(lines[2])
    assert [row["id"] for row in board.history()] == ["first", "after-torn"]


def test_status_history_lists_a_record_once_after_a_crash_mid_archive(setup: Setup) -> None:
    setup.add_local("local")
    config = write_config(setup)
    board = Board(config.parent / ".coord" / "board.json")
    row = {
        "id": "api-1-abcd",
        "machine": "local",
        "repo": "api",
        "issue": 1,
        "branch": "b",
        "model": "m",
        "status": "done",
        "finished_at": 1.0,
    }
    board.insert(row)
    # What a SIGKILL right after `_append_history` leaves: archived, and still live.
    board.history_path.write_text(json.dumps(row) + "\n")
    report = coord_json("status", "--history", config=config)
    ids = [a["id"] for a in report["assignments"]]
    assert ids == ["api-1-abcd"], ids


# ======================== 4. the worker machine reboots


def test_machine_reboot_marks_the_run_lost_and_retry_starts_it_on_another_machine(
    setup: Setup, sshd_factory: Callable[..., SSHServer], tmp_path: Path
) -> None:
    box_a = sshd_factory(extra_config=FAST_SHELL)
    box_b = sshd_factory(extra_config=FAST_SHELL)
    clone_b = tmp_path / "clone-b"  # machine b has its own clone
    subprocess.run(["git", "clone", "-q", str(setup.repo.origin), str(clone_b)], check=True)
    socket_b = setup.socket + "b"
    setup.add_ssh(box_a, "a", env={"FAKE_CLAUDE_SCENARIO": "stall"})
    setup.add_ssh(
        box_b,
        "b",
        tmux_socket=socket_b,
        repo_paths={"api": str(clone_b)},
        env={"FAKE_CLAUDE_SCENARIO": "ok"},
    )
    config = write_config(setup)
    try:
        a = coord_json(
            "assign", "a", "api", "7", "--title", "reboot me", "--briefing", BRIEFING, config=config
        )
        run_a = Path(a["run_dir"])
        wait_for(lambda: b"STATUS" in (run_a / "events.jsonl").read_bytes(), what="a working run")

        # Machine a "reboots": sshd dies with every session, then every process of the run
        # dies at once (SIGKILL, so nobody writes an exit record), tmux with them.
        box_a.stop()
        kill_run_processes(run_a)
        subprocess.run(
            ["tmux", "-L", setup.socket, "kill-server"], check=False, capture_output=True
        )
        box_a.start()

        report = coord_json("status", config=config)
        assert all(m["reachable"] for m in report["machines"]), report["machines"]
        lost = next(r for r in report["assignments"] if r["id"] == a["id"])
        assert (lost["status"], lost["failure_class"], lost["exit_reason"]) == (
            "lost",
            "lost",
            "launcher_gone",
        ), lost
        assert lost["error"] and "launcher" in lost["error"], lost
        assert not (run_a / "exit.json").exists()

        out = coord_cli("retry", a["id"], "--machine", "b", "--json", config=config)
        assert out.exit_code == 0, out.stderr
        new = json.loads(out.stdout)
        assert new["machine"] == "b" and new["id"] != a["id"] and new["issue"] == 7
        done = coord_json("wait", new["id"], "--timeout", "60", config=config)
        assert done["status"] == "done", done

        # The two are linked on the board, the lost one stays lost, nothing is doubled.
        c = Coordinator.from_path(config)
        old_row, new_row = c.get(a["id"]), c.get(new["id"])
        assert new_row.extra.get("retry_of") == a["id"] and new_row.attempt == old_row.attempt + 1
        assert old_row.extra.get("retried_by") == new["id"] and old_row.status == "lost"
        rows = [r for r in c.assignments() if r.issue == 7]
        assert sorted(r.id for r in rows) == sorted([a["id"], new["id"]])
        assert new_row.branch != old_row.branch
        assert branches(clone_b, 7) == [new_row.branch]
        assert Path(new_row.worktree).is_dir() and Path(old_row.worktree).is_dir()
        assert tmux_sessions(setup.socket) == []  # nothing restarted on the rebooted machine
    finally:
        subprocess.run(["tmux", "-L", socket_b, "kill-server"], check=False, capture_output=True)


def test_a_dead_launcher_that_nobody_reaped_is_not_alive(tmp_path: Path) -> None:
    # Where nobody reaps orphans (a container whose PID 1 does not wait(); on this VM PID 1
    # reaps only about once a second) a dead launcher stays a zombie, and its run shows
    # `running` for as long: seen above before the reboot test waited for reaping.  Here
    # the zombie is a child of this process that has exited and is not waited for yet.
    run = tmp_path / "runs" / "api-1-abcd"
    run.mkdir(parents=True)
    (run / "events.jsonl").touch()
    zombie = subprocess.Popen(["true"])
    try:
        wait_for(lambda: not pid_alive(zombie.pid), what="a zombie")
        stat = Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(") ", 1)[1].split()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        (run / "launcher.pid").write_text(f"{zombie.pid} {boot} {stat[19]}\n")
        out = subprocess.run(
            status_command(str(tmp_path), "ct-none", Scope.ALL, [Want("api-1-abcd", 0, 10)]),
            capture_output=True,
            check=True,
        )
        assert not parse_status(out.stdout).runs["api-1-abcd"].alive
    finally:
        zombie.wait()


# ======================== 5. the run dir's disk is full


@pytest.fixture
def small_disk(tmp_path: Path, tmux_socket: str) -> Iterator[Path]:
    """A 2 MB tmpfs for the machine's workdir; unmounted afterwards, whatever happened."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs (root needed): {mounted.stderr.decode().strip()}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must run every real-component test)")
        pytest.skip(reason)
    try:
        yield mnt
    finally:
        # tmux panes and workers have their cwd in there: end them before unmounting.
        subprocess.run(["tmux", "-L", tmux_socket, "kill-server"], capture_output=True, check=False)
        for _ in range(50):
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path, name: str = "filler") -> Path:
    """Fill disk to the last byte and return the file that did it."""
    path = disk / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return path


def disk_machine(setup: Setup, disk: Path, **env: str) -> Path:
    m = setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok", **env})
    m["workdir"] = str(disk / "wd")
    return write_config(setup)


def check_nothing_half_written(config: Path, issue: int) -> dict[str, Any]:
    """The board is valid, and the issue's row is settled: no live row claims it."""
    rows = [r for r in board_rows(config) if r["issue"] == issue]
    assert len(rows) == 1, rows
    assert rows[0]["status"] in ("failed", "lost"), rows[0]
    assert rows[0]["error"], rows[0]
    return rows[0]


def assign_on_full_disk(setup: Setup, disk: Path, issue: int) -> tuple[Path, Result, Path]:
    config = disk_machine(setup, disk)
    filler = fill(disk)
    out = coord_cli(
        "assign",
        "local",
        "api",
        str(issue),
        "--title",
        "full disk",
        "--briefing",
        BRIEFING,
        config=config,
    )
    return config, out, filler


def test_disk_full_before_dispatch_fails_cleanly_and_a_later_dispatch_works(
    setup: Setup, small_disk: Path
) -> None:
    config, out, filler = assign_on_full_disk(setup, small_disk, 5)
    assert out.exit_code == 1 and "could not start" in out.stderr, (out.stdout, out.stderr)
    row = check_nothing_half_written(config, 5)
    assert (row["status"], row["failure_class"]) == ("failed", "dispatch_failed"), row
    assert not Path(row["run_dir"]).exists() and not Path(row["worktree"]).exists()
    # Space is freed; the issue starts again (as a retry: a fresh branch).
    filler.unlink()
    again = coord_json("retry", row["id"], config=config)
    assert coord_json("wait", again["id"], "--timeout", "30", config=config)["status"] == "done"


def test_disk_full_dispatch_error_names_the_cause(setup: Setup, small_disk: Path) -> None:
    config, out, _ = assign_on_full_disk(setup, small_disk, 5)
    assert out.exit_code == 1
    row = check_nothing_half_written(config, 5)
    assert re.search(r"No space left on device|disk full", row["error"]), row["error"]
    assert re.search(r"No space left on device|disk full", out.stderr), out.stderr


def test_disk_full_same_assign_works_once_space_is_freed(setup: Setup, small_disk: Path) -> None:
    config, out, filler = assign_on_full_disk(setup, small_disk, 5)
    assert out.exit_code == 1
    filler.unlink()
    assert branches(setup.repo.path, 5) == []  # the failed dispatch left nothing behind
    again = coord_json(
        "assign", "local", "api", "5", "--title", "full disk", "--briefing", BRIEFING, config=config
    )
    assert coord_json("wait", again["id"], "--timeout", "30", config=config)["status"] == "done"


def run_until_the_disk_fills(setup: Setup, disk: Path) -> tuple[Path, dict[str, Any], Path]:
    # The worker writes events at 150/s for 2 s; the disk fills after its first few.
    config = disk_machine(
        setup, disk, FAKE_CLAUDE_SCENARIO="events", FAKE_CLAUDE_EVENTS="300", FAKE_CLAUDE_RATE="150"
    )
    a = coord_json(
        "assign", "local", "api", "6", "--title", "fills up", "--briefing", BRIEFING, config=config
    )
    run = Path(a["run_dir"])
    wait_for(lambda: b"tick 3" in (run / "events.jsonl").read_bytes(), what="events")
    filler = fill(disk)
    out = coord_cli("wait", a["id"], "--timeout", "30", "--json", config=config)
    assert out.exit_code == 1, out.stdout  # it ended, and not as done
    return config, json.loads(out.stdout), filler


def test_disk_fills_during_the_run_ends_it_and_a_later_dispatch_works(
    setup: Setup, small_disk: Path
) -> None:
    config, ended, filler = run_until_the_disk_fills(setup, small_disk)
    row = check_nothing_half_written(config, 6)
    assert row["id"] == ended["id"] and row["finished_at"]
    assert coord_json("status", config=config)["assignments"][0]["status"] == row["status"]
    filler.unlink()
    again = coord_json("retry", row["id"], config=config)
    assert coord_json("wait", again["id"], "--timeout", "30", config=config)["status"] == "done"


def test_disk_fills_during_the_run_is_reported_as_a_full_disk(
    setup: Setup, small_disk: Path
) -> None:
    _, ended, _ = run_until_the_disk_fills(setup, small_disk)
    assert ended["status"] == "failed", ended
    assert "disk" in (ended["error"] or "") or "space" in (ended["error"] or ""), ended["error"]


# ======================== 6. fuzzing the command builder
# (through real shells and the real launcher)
#
# tests/test_command.py fuzzes `join`, `slugify`, `LaunchSpec.render` and `encode_env` one by
# one.  Here the pieces are fuzzed as they are put together: a whole `remote_argv` through the
# login shells sshd may use (bash, dash), and the real launcher (launcher.sh) handing the
# briefing and arguments to the worker, then a whole hostile dispatch over SSH.

SANDBOX_CANARY = "PWNED"  # the fragments of test_command touch this, relative to the cwd


@pytest.fixture(scope="module")
def shell_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty cwd for the shells, and a `bash` on PATH that prints its argv, NUL-separated."""
    root = tmp_path_factory.mktemp("shells")
    shim = root / "bin"
    shim.mkdir()
    (shim / "bash").write_text("#!/bin/sh\nprintf '%s\\0' \"$@\"\n")
    (shim / "bash").chmod(0o755)
    cwd = root / "cwd"
    cwd.mkdir()
    yield root
    assert list(cwd.iterdir()) == [], "something ran in the sandbox"


VERB = st.one_of(st.sampled_from(["dispatch", "status", "stop", "tail", "clean"]), WORD)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(verb=VERB, args=st.lists(WORD, max_size=12))
@example(
    verb="dispatch",
    args=[
        "~/.coord",
        "api-1-abcd",
        "~/src/my repo",
        "~/.coord/worktrees/api/$(touch PWNED)",
        "issue-1-x",
        "main",
        "coord",
        "abc123",
        "10",
        "20",
        "30",
        "9000",
        "new",
    ],
)
@example(
    verb="status",
    args=["~/.coord", "coord", "live", "api-1-abcd", "0", "8388608", "'\n`touch PWNED`"],
)
def test_remote_argv_reaches_the_program_exactly_through_bash_and_dash(
    shell_sandbox: Path, verb: str, args: list[str]
) -> None:
    # remote_argv's shape without its argument check (test_remote_hardening fuzzes that).
    argv = ["bash", "--norc", "-c", remote_script(), "coord-run", verb, *args]
    line = join(argv)  # what the SSH exec request carries
    env = {"PATH": f"{shell_sandbox / 'bin'}:{BASE_PATH}", "HOME": str(shell_sandbox)}
    for login_shell in ("/bin/bash", "/bin/dash"):  # what sshd runs it with
        out = subprocess.run(
            [login_shell, "-c", line],
            capture_output=True,
            env=env,
            cwd=shell_sandbox / "cwd",
            check=False,
        )
        assert out.returncode == 0, (login_shell, out.stderr)
        got = out.stdout.split(b"\0")[:-1]
        assert got == [w.encode() for w in argv[1:]], login_shell
    assert not (shell_sandbox / "cwd" / SANDBOX_CANARY).exists()


def run_launcher(
    root: Path, briefing: bytes, args: list[str], worktree_name: str
) -> tuple[list[bytes], bytes, dict[str, Any]]:
    """Start the real launcher on a prepared run dir; its worker prints its argv, then stdin."""
    base = Path(tempfile.mkdtemp(dir=root))
    run = base / "runs" / "api-1-abcd"
    run.mkdir(parents=True)
    worktree = base / worktree_name
    worktree.mkdir()
    spec = LaunchSpec(
        worktree=str(worktree),
        command=["sh", "-c", 'printf "%s\\0" "$@" && exec cat', "sh"],
        args=args,
        stall_ms=20_000,
        max_runtime_ms=20_000,
        grace_ms=5_000,
        poll_seconds=0.02,
    )
    (run / "launch.env").write_text(spec.render())
    (run / "briefing.md").write_bytes(briefing)
    (run / "events.jsonl").touch()
    os.mkfifo(run / "env.fifo")
    proc = subprocess.Popen(
        ["bash", "-c", launcher_script(), "coord-launcher", str(run)],
        cwd=root / "cwd",
        stdin=subprocess.DEVNULL,
        env={"PATH": BASE_PATH, "HOME": str(root)},
    )
    try:
        fd = wait_for(
            lambda: _open_fifo(run / "env.fifo") or proc.poll() is not None,
            10,
            "the launcher to read its environment",
        )
        if fd is not True:
            os.write(fd, encode_env({"COORD_FUZZ": "$(touch PWNED)"}))
            os.close(fd)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    exit_record = json.loads((run / "exit.json").read_text())
    *argv, prompt = (run / "events.jsonl").read_bytes().split(b"\0", len(args) + 1)
    shutil.rmtree(base)
    return argv, prompt, exit_record


def _open_fifo(path: Path) -> int | None:
    try:
        return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: no reader yet
        return None


DIR_NAME = TEXT.filter(lambda s: "/" not in s and s not in ("", ".", "..", "runs")).filter(
    lambda s: len(s.encode()) <= 200
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(briefing=WORD, args=st.lists(WORD, max_size=6), worktree_name=DIR_NAME)
@example(
    briefing="Fix it.\n$(touch PWNED)\n`touch PWNED`; touch PWNED\n'\"\\",
    args=["--model", "x'; touch PWNED; '", "--allowedTools", "Read,Edit,Write,Bash", ""],
    worktree_name="wt $(touch PWNED) `touch PWNED` 'q' \"d\" ; & | é\n\t",
)
def test_the_launcher_hands_briefing_and_arguments_to_the_worker_exactly(
    shell_sandbox: Path, briefing: str, args: list[str], worktree_name: str
) -> None:
    argv, prompt, exit_record = run_launcher(shell_sandbox, briefing.encode(), args, worktree_name)
    assert exit_record["exit_code"] == 0 and exit_record["reason"] == "exited", exit_record
    assert argv == [b"-p", *(a.encode() for a in args)]
    assert prompt == briefing.encode()  # on stdin, byte for byte
    assert not (shell_sandbox / "cwd" / SANDBOX_CANARY).exists()


def test_the_launcher_keeps_a_briefings_trailing_newlines(shell_sandbox: Path) -> None:
    # A `-p "$(cat briefing.md)"` drops them (fixed in 913166b).
    argv, prompt, _ = run_launcher(shell_sandbox, b"Fix it.\n\n", [], "wt")
    assert (argv, prompt) == ([b"-p"], b"Fix it.\n\n")


def test_a_briefing_with_a_nul_byte_is_refused_before_anything_starts(setup: Setup) -> None:
    # No argument can carry a NUL; the launcher's `$(cat …)` used to drop it silently.
    setup.add_local("local")
    config = write_config(setup)

    async def go() -> None:
        async with Coordinator.from_path(config) as c:
            await c.assign("local", "api", 9, title="nul", briefing="before\0after")

    try:
        with pytest.raises((CoordError, ValueError), match="NUL"):
            arun(go())
        assert board_rows(config) == []
    finally:
        subprocess.run(
            ["tmux", "-L", setup.socket, "kill-server"], capture_output=True, check=False
        )


@pytest.fixture(scope="module")
def planner(tmp_path_factory: pytest.TempPathFactory) -> Coordinator:
    """A coordinator for planning only: nothing here touches a machine or the board."""
    root = tmp_path_factory.mktemp("plan")
    config = root / "coordinator.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "repos": [
                    {"name": "api", "default_branch": "main", "url": str(root / "origin.git")}
                ],
                "machines": [
                    {
                        "name": "box",
                        "host": "127.0.0.1",
                        "port": 2222,
                        "workdir": "~/.coord",
                        "repo_paths": {"api": "~/src/api"},
                    }
                ],
            }
        )
    )
    return Coordinator.from_path(config)


@settings(max_examples=150, deadline=None)
@given(
    title=st.one_of(WORD, st.text()),
    briefing=st.one_of(WORD, TEXT),  # a NUL in a briefing is refused: see above
    issue=st.integers(min_value=0, max_value=10**9),
)
@example(title="x\0$(touch PWNED)", briefing="a\n$(touch PWNED)\n", issue=1)
def test_user_text_reaches_the_dispatch_command_only_as_a_slug(
    planner: Coordinator, title: str, briefing: str, issue: int
) -> None:
    a, text, launch = planner.plan_assignment("box", "api", issue, title=title, briefing=briefing)
    assert text == briefing  # it travels on stdin, into a file
    assert re.fullmatch(r"[a-z0-9-]+", a.id) and a.id.startswith(f"api-{issue}-")
    assert re.fullmatch(rf"issue-{issue}(-[a-z0-9]+)*", a.branch), a.branch
    assert a.worktree == f"~/.coord/worktrees/api/{a.id}" and a.run_dir == f"~/.coord/runs/{a.id}"
    # Every word of the command line that dispatch sends is config, a number or the slug.
    words = [a.id, "~/src/api", a.worktree, a.branch, "main", "coord", "new"]
    assert all(re.fullmatch(r"[A-Za-z0-9_./~-]+", w) for w in words), words
    assert a.extra["argv"] == [*launch.command, "-p", *launch.args]  # the prompt: on stdin
    assert launch.worktree == a.worktree  # the launcher's only path is ours, not the user's


CANARY = "CANARY-chaos"
# Every kind of shell syntax, in a string that can also be a path component (no "/").
EVIL = (
    f"x $(touch {CANARY}) `touch {CANARY}` ; touch {CANARY} | touch {CANARY} & "
    f"'q' \"d\" \\ * ? ~ {{a,b}} $HOME ${{IFS}} #c"
)


def hostile_dispatch(
    setup: Setup, server: SSHServer, tmp_path: Path, workdir_name: str, *, within: float = 60
) -> dict[str, Any]:
    """Dispatch with shell syntax in every user-given text and path; return the outcome."""
    repo = tmp_path / f"repo {EVIL}"
    subprocess.run(["git", "clone", "-q", str(setup.repo.origin), str(repo)], check=True)
    argv_log = tmp_path / "argv.log"
    setup.add_ssh(
        server,
        "remote",
        repo_paths={"api": str(repo)},
        env={
            "FAKE_CLAUDE_SCENARIO": "ok",
            "FAKE_CLAUDE_ARGV_LOG": str(argv_log),
            "FAKE_CLAUDE_PROMPT_LOG": str(tmp_path / "prompt.log"),
            "EVIL": EVIL.replace("$", "$$"),
        },
    )  # $$: a literal $
    setup.machines[-1]["workdir"] = str(tmp_path / workdir_name)
    config = write_config(setup)
    briefing = f"Fix it.\n{EVIL}\n\tindented\r\nlast line {EVIL}"

    async def assign() -> dict[str, Any]:
        async with Coordinator.from_path(config) as c:
            a = await asyncio.wait_for(
                c.assign("remote", "api", 13, title=EVIL, briefing=briefing), within
            )
            return a.to_dict()

    try:
        a = arun(assign())
    except TimeoutError:
        unblock_env_fifos(tmp_path / workdir_name)
        raise AssertionError("the dispatch hung: its launcher never read its environment") from None
    assert a["title"] == EVIL and re.fullmatch(r"issue-13(-[a-z0-9]+)*", a["branch"]), a
    out = coord_cli("wait", a["id"], "--timeout", "30", "--json", config=config)
    done: dict[str, Any] = json.loads(out.stdout)
    run = Path(done["run_dir"])
    for where in (tmp_path, Path.home(), REPO_ROOT, Path("/tmp")):
        found = list(where.rglob(CANARY)) if where == tmp_path else list(where.glob(CANARY))
        assert not found, found
    assert done["status"] == "done", (done, (run / "launcher.log").read_text())
    spec = json.loads((run / "spec.json").read_text())
    assert spec["title"] == EVIL and spec["env"]["EVIL"] == EVIL
    worker_argv = json.loads(argv_log.read_text().splitlines()[-1])
    assert briefing not in worker_argv
    prompt = json.loads((tmp_path / "prompt.log").read_text().splitlines()[-1])
    assert (prompt["source"], prompt["prompt"]) == ("stdin", briefing)
    assert Path(done["worktree"]).is_dir()
    assert branches(repo, 13) == [a["branch"]]
    return done


def unblock_env_fifos(workdir: Path) -> None:
    """Read every env FIFO nobody reads, so a dispatch blocked writing one can end."""
    for fifo in workdir.glob("runs/*/env.fifo"):
        with contextlib.suppress(OSError):
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            time.sleep(0.2)
            with contextlib.suppress(OSError):
                os.read(fd, 1 << 16)
            os.close(fd)


def test_a_dispatch_with_shell_syntax_everywhere_runs_exactly_what_was_asked(
    setup: Setup, sshd_factory: Callable[..., SSHServer], tmp_path: Path
) -> None:
    server = sshd_factory(extra_config=FAST_SHELL)
    hostile_dispatch(setup, server, tmp_path, f"wd {EVIL}")


def test_a_dispatch_runs_when_the_machines_shell_is_sh_and_paths_are_not_ascii(
    setup: Setup, sshd_factory: Callable[..., SSHServer], tmp_path: Path
) -> None:
    # The account's login shell is /bin/sh, so tmux runs commands with it; sshd passes no
    # LANG, so bash's %q quoted any non-ASCII byte as $'\ooo', which dash does not read
    # (before 913166b).  A home like /home/josé did it: the dispatch hung, then timed out.
    server = sshd_factory(extra_config="SetEnv SHLVL=1 SHELL=/bin/sh\n")
    hostile_dispatch(setup, server, tmp_path, "wd josé", within=30)


# ======================== 7. a burst of 50 assignments, default sshd limits


@pytest.fixture
def default_limits_sshd(sshd_factory: Callable[..., SSHServer]) -> SSHServer:
    """An sshd with OpenSSH's defaults, set explicitly: the 11th concurrent channel of a
    connection fails, and past 10 unauthenticated connections it drops 30 % of new ones."""
    server = sshd_factory(max_startups="10:30:100", max_sessions=10, extra_config=FAST_SHELL)
    config = server.config_path.read_text()
    assert "MaxStartups 10:30:100" in config and "MaxSessions 10\n" in config
    return server


def burst_setup(setup: Setup, server: SSHServer) -> Path:
    setup.extra["concurrency"] = {"max_workers": 200}
    setup.add_ssh(server, "box", max_workers=200, env={"FAKE_CLAUDE_SCENARIO": "ok"})
    return write_config(setup)


async def wait_all(c: Coordinator, ids: set[str], timeout: float = 90) -> dict[str, Any]:
    """Poll status (one probe for all) until every id has ended; return the rows by id."""
    deadline = time.monotonic() + timeout
    while True:
        report = await c.status()
        rows = {a.id: a for a in report.assignments if a.id in ids}
        if all(a.is_terminal for a in rows.values()) and len(rows) == len(ids):
            return rows
        assert time.monotonic() < deadline, {a.id: a.status for a in rows.values()}
        await asyncio.sleep(0.5)


def check_burst(setup: Setup, config: Path, ids: set[str], issues: range) -> None:
    async def go() -> dict[str, Any]:
        async with Coordinator.from_path(config) as c:
            return await wait_all(c, ids)

    rows = arun(go())
    assert {a.status for a in rows.values()} == {"done"}, {
        a.id: (a.status, a.error) for a in rows.values() if a.status != "done"
    }
    on_board = [r for r in board_rows(config) if r["issue"] in issues]
    assert sorted(r["issue"] for r in on_board) == list(issues)  # each once, none twice
    assert len({r["worktree"] for r in on_board}) == len(issues)
    workdir = Path(setup.machines[0]["workdir"])
    assert len(run_dirs(workdir)) == len(issues)
    for n in issues:
        assert len(branches(setup.repo.path, n)) == 1, n


def test_a_burst_of_50_assignments_from_one_coordinator_against_default_sshd_limits(
    setup: Setup, default_limits_sshd: SSHServer
) -> None:
    config = burst_setup(setup, default_limits_sshd)
    issues = range(1, 51)

    async def go() -> tuple[list[Any], Any]:
        async with Coordinator.from_path(config) as c:
            results = await asyncio.gather(
                *(c.assign("box", "api", n, title=f"burst {n}", briefing=BRIEFING) for n in issues),
                return_exceptions=True,
            )
            return results, dict(c.transport("box").stats)

    results, stats = arun(go())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    assert stats["connects"] == 1, stats  # one connection, its channels kept under 10
    check_burst(setup, config, {a.id for a in results}, issues)


def test_a_burst_of_50_assignments_from_5_concurrent_cli_processes(
    setup: Setup, default_limits_sshd: SSHServer
) -> None:
    config = burst_setup(setup, default_limits_sshd)
    issues = range(101, 151)
    outcomes: dict[int, subprocess.CompletedProcess[str]] = {}

    def one_process_at_a_time(mine: range) -> None:
        for n in mine:
            outcomes[n] = coord_proc(
                "assign",
                "box",
                "api",
                str(n),
                "--title",
                f"burst {n}",
                "--briefing",
                BRIEFING,
                "--json",
                config=config,
            )

    threads = [
        threading.Thread(target=one_process_at_a_time, args=(issues[k::5],)) for k in range(5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = {n: o.stderr for n, o in outcomes.items() if o.returncode != 0}
    assert not failed, failed
    ids = {json.loads(o.stdout)["id"] for o in outcomes.values()}
    check_burst(setup, config, ids, issues)
