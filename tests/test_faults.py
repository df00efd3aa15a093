"""Watchdogs, dropped connections, a killed coordinator, host keys: the faults that lose work."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from click.testing import CliRunner

from coord_cli.main import coord
from coordlib import HostKeyError, Status
from coordlib.testing import SSHServer

from .conftest import Setup


def arun(coro: Any) -> Any:
    return asyncio.run(coro)


def test_stall_watchdog_kills_a_silent_worker(setup: Setup) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "stall"})
    setup.worker["stall_timeout"] = 1.5

    async def go() -> Any:
        async with setup.coordinator() as c:
            a = await c.assign("local", "api", 1, title="stall")
            return await c.wait(a.id, timeout=30)

    a = arun(go())
    assert a.status == Status.FAILED
    assert (a.exit_reason, a.failure_class) == ("stalled", "stalled")
    assert a.last_status == "STATUS: thinking" or a.last_status


def test_result_grace_kills_a_lingering_worker_and_counts_as_done(setup: Setup) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "linger"})
    setup.worker["result_grace"] = 1

    async def go() -> Any:
        async with setup.coordinator() as c:
            a = await c.assign("local", "api", 2, title="linger")
            return await c.wait(a.id, timeout=30)

    a = arun(go())
    assert a.status == Status.DONE and a.failure_class is None
    assert a.exit_reason == "result_grace_kill"
    assert a.cost_usd is not None


def test_max_runtime_watchdog(setup: Setup) -> None:
    setup.add_local(
        "local",
        env={
            "FAKE_CLAUDE_SCENARIO": "events",
            "FAKE_CLAUDE_EVENTS": "100000",
            "FAKE_CLAUDE_RATE": "20",
        },
    )
    setup.worker["max_runtime"] = 1.5

    async def go() -> Any:
        async with setup.coordinator() as c:
            a = await c.assign("local", "api", 3, title="forever")
            return await c.wait(a.id, timeout=30)

    a = arun(go())
    assert (a.status, a.failure_class, a.exit_reason) == (Status.FAILED, "timed_out", "timed_out")


def test_crash_without_result_is_classified(setup: Setup) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "fail"})

    async def go() -> Any:
        async with setup.coordinator() as c:
            a = await c.assign("local", "api", 4, title="crash")
            return await c.wait(a.id, timeout=30)

    a = arun(go())
    assert (a.status, a.failure_class, a.exit_code) == (Status.FAILED, "crashed", 3)


@pytest.mark.chaos
def test_watch_survives_sshd_restarts_without_losing_or_doubling(
    setup: Setup, sshd_factory: Any
) -> None:
    server: SSHServer = sshd_factory()
    n = 300
    setup.add_ssh(
        server,
        "remote",
        env={
            "FAKE_CLAUDE_SCENARIO": "events",
            "FAKE_CLAUDE_EVENTS": str(n),
            "FAKE_CLAUDE_RATE": "60",
        },
    )

    def chaos(stop: threading.Event) -> None:
        for _ in range(3):
            if stop.wait(1.0):
                return
            server.restart()

    async def go() -> list[int]:
        async with setup.coordinator() as c:
            a = await c.assign("remote", "api", 11, title="events")
            stop = threading.Event()
            t = threading.Thread(target=chaos, args=(stop,))
            t.start()
            seqs: list[int] = []
            try:
                async for line in c.watch_lines(a.id):
                    data = json.loads(line)
                    if "seq" in data:
                        seqs.append(data["seq"])
            finally:
                stop.set()
                t.join()
            return seqs

    seqs = arun(go())
    assert seqs == list(range(n)) or seqs == list(range(1, n + 1))


def test_resume_after_the_coordinator_is_killed_mid_run(
    setup: Setup, sshd: SSHServer, run_coord: Any
) -> None:
    setup.add_ssh(sshd, "remote", env={"FAKE_CLAUDE_SCENARIO": "slow", "FAKE_CLAUDE_DELAY": "2"})
    config = setup.write()
    out = run_coord("assign", "remote", "api", "21", "--title", "survive", "--json", config=config)
    assert out.returncode == 0, out.stderr
    aid = json.loads(out.stdout)["id"]
    # A coordinator watching it is SIGKILLed mid-run.
    watcher = subprocess.Popen(
        [sys.executable, "-m", "coord_cli", "--config", str(config), "watch", aid],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    watcher.send_signal(signal.SIGKILL)
    watcher.wait()
    time.sleep(3.5)  # the worker finishes while nobody watches
    res = run_coord("resume", "--json", config=config)
    assert res.returncode == 0, res.stderr
    changed = json.loads(res.stdout)["changed"]
    assert {"id": aid, "from": "running", "to": "done"} in changed
    st = json.loads(run_coord("status", "--json", config=config).stdout)
    row = next(a for a in st["assignments"] if a["id"] == aid)
    assert row["status"] == "done" and row["num_turns"] and row["cost_usd"]
    # A second resume has nothing left to repair.
    again = json.loads(run_coord("resume", "--json", config=config).stdout)
    assert again["changed"] == []


def test_resume_marks_a_vanished_run_lost_and_allows_a_new_dispatch(setup: Setup) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "stall"})

    async def go() -> Any:
        async with setup.coordinator() as c:
            a = await c.assign("local", "api", 31, title="reboot")
            # The machine "reboots": the tmux server and every launcher die, no exit.json.
            subprocess.run(["tmux", "-L", setup.socket, "kill-server"], check=True)
            await asyncio.sleep(0.5)
            report = await c.resume()
            lost = c.get(a.id)
            b = await c.assign("local", "api", 32, title="fresh")
            await c.stop(b.id)
            return report, lost

    _report, lost = arun(go())
    assert lost.status in (Status.LOST, Status.STOPPED)  # HUP may reach the launcher first
    if lost.status == Status.LOST:
        assert lost.error and "launcher" in lost.error


def test_kill_during_assign_leaves_a_board_resume_repairs(setup: Setup, run_coord: Any) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"})
    config = setup.write()
    # Kill `coord assign` at several points of its life; the board must always be repairable.
    for delay in (0.05, 0.3, 0.6, 1.0):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "coord_cli",
                "--config",
                str(config),
                "assign",
                "local",
                "api",
                str(int(delay * 100)),
                "--title",
                "k",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    time.sleep(2)
    res = run_coord("resume", "--json", config=config)
    assert res.returncode == 0, res.stderr
    st = json.loads(run_coord("status", "--json", config=config).stdout)
    for row in st["assignments"]:
        assert row["status"] in ("done", "lost", "failed"), row
    # No issue was dispatched twice.
    issues = [r["issue"] for r in st["assignments"]]
    assert len(issues) == len(set(issues))


def test_unknown_host_key_is_refused_until_trusted(
    setup: Setup, sshd: SSHServer, tmp_path: Any
) -> None:
    known = tmp_path / "known_hosts_empty"
    setup.add_ssh(sshd, "remote", known_hosts=str(known), env={"FAKE_CLAUDE_SCENARIO": "ok"})
    config = setup.write()

    async def probe() -> Any:
        async with setup.coordinator() as c:
            return await c.status()

    report = arun(probe())
    assert not report.machines[0].reachable
    assert "coord trust remote" in (report.machines[0].error or "")

    async def assign() -> Any:
        async with setup.coordinator() as c:
            return await c.assign("remote", "api", 1, title="x")

    with pytest.raises(HostKeyError, match="coord trust remote"):
        arun(assign())

    runner = CliRunner()
    out = runner.invoke(coord, ["--config", str(config), "trust", "remote"], input="n\n")
    assert out.exit_code != 0 and "SHA256:" in out.output
    out = runner.invoke(coord, ["--config", str(config), "trust", "remote", "--yes"])
    assert out.exit_code == 0, out.output
    assert sshd.host_key_line.split()[1] in known.read_text()
    assert arun(probe()).machines[0].reachable

    # A changed key is refused loudly, and only --replace accepts it.
    known.write_text(
        f"[127.0.0.1]:{sshd.port} ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
    )
    report = arun(probe())
    assert "CHANGED" in (report.machines[0].error or "")
    out = runner.invoke(coord, ["--config", str(config), "trust", "remote", "--yes"])
    assert out.exit_code != 0 and "replace" in out.output
    out = runner.invoke(coord, ["--config", str(config), "trust", "remote", "--yes", "--replace"])
    assert out.exit_code == 0, out.output
    assert arun(probe()).machines[0].reachable
    assert os.stat(known).st_mode & 0o077 == 0


def test_dispatch_starts_again_when_the_tmux_server_was_exiting(
    setup: Setup, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client that connects while the machine's tmux server exits (its last session just
    # ended) gets "server exited unexpectedly" and nothing starts.  Seen in a burst of
    # dispatches; a shim makes it happen on the first try, every time.
    import shutil

    real = shutil.which("tmux")
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "tmux").write_text(
        "#!/bin/bash\n"
        f'if [[ " $* " == *" new-session "* ]] && [ ! -e "{shims}/failed-once" ]; then\n'
        f'    : > "{shims}/failed-once"\n'
        '    echo "server exited unexpectedly" >&2\n'
        "    exit 1\n"
        "fi\n"
        f'exec {real} "$@"\n'
    )
    (shims / "tmux").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"})

    async def go() -> Any:
        async with setup.coordinator() as c:
            a = await c.assign("local", "api", 31, title="again")
            return a, await c.wait(a.id, timeout=30)

    a, done = asyncio.run(go())
    assert (shims / "failed-once").exists()
    assert a.status == Status.RUNNING and done.status == Status.DONE
    launches = (setup.root / "wd-local" / "runs" / a.id / "launcher.log").read_text()
    assert launches.count("environment stream incomplete") == 0  # one launcher, not two


def test_an_idle_launcher_polls_without_forking_stat(
    setup: Setup, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each poll used to fork a `stat` for the events file's size: with many workers per
    # machine, a steady drain on the CPU.  A shim on PATH counts any call.
    import shutil

    shims = tmp_path / "shims"
    shims.mkdir()
    calls = tmp_path / "stat-calls"
    (shims / "stat").write_text(
        f'#!/bin/bash\necho "$*" >> "{calls}"\nexec {shutil.which("stat")} "$@"\n'
    )
    (shims / "stat").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    setup.worker["poll_interval"] = 0.1
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "slow", "FAKE_CLAUDE_DELAY": "2"})

    async def go() -> Any:
        async with setup.coordinator() as c:
            a = await c.assign("local", "api", 32, title="idle")
            return await c.wait(a.id, timeout=30)

    done = asyncio.run(go())
    assert done.status == Status.DONE  # the events were seen: the result was folded
    assert not calls.exists(), calls.read_text()


def test_a_status_during_another_tasks_dispatch_leaves_the_row_pending(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two `wait`s in one process (asyncio.gather): one continues a queued session while
    # the other's status probes.  The new row is on the board before its run dir exists
    # on the machine; it was taken for lost, and the worker then ran unrecorded.
    from coordlib.runtime.local import LocalTransport

    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"})
    real_run = LocalTransport.run
    sending = asyncio.Event()

    async def slow_dispatch(self: Any, argv: Any, **kwargs: Any) -> Any:
        if argv[5:6] == ["dispatch"]:  # bash --norc -c SCRIPT coord-run VERB ...
            sending.set()
            await asyncio.sleep(1.0)
        return await real_run(self, argv, **kwargs)

    monkeypatch.setattr(LocalTransport, "run", slow_dispatch)

    async def go() -> Any:
        async with setup.coordinator() as c:
            task = asyncio.create_task(c.assign("local", "api", 33, title="slow start"))
            await sending.wait()
            report = await c.status()
            (row,) = report.assignments
            assert row.status == Status.PENDING, (row.status, row.error)
            a = await task
            assert a.status == Status.RUNNING
            return await c.wait(a.id, timeout=30)

    assert asyncio.run(go()).status == Status.DONE
