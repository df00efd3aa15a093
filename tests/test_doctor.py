"""`coord doctor`: one remote command per machine, at once, each bounded; what it finds kept
on the board, where every dispatch (but a continued session) consults it.

1. The answer parser and the refusal rule, from literal bytes and values.
2. Real machines: a healthy one over sshd (the real Claude Code CLI, logged in by an API key
   that never shows), one whose claude is not logged in, tools missing, a full disk (a small
   tmpfs on the workdir), a host key not trusted, and hosts that do not answer.
3. `coord assign` refused on a machine the doctor found unhealthy, and allowed with --force.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coordlib import Status, UnhealthyMachineError
from coordlib.doctor import DOCTOR, MachineHealth, latest, refusal, store
from coordlib.errors import ProtocolError, UsageError
from coordlib.runtime.builders import doctor_command
from coordlib.runtime.command import encode_env
from coordlib.runtime.machine_answers import Check, parse_doctor
from coordlib.runtime.protocol import DOCTOR_CHECKS, HEADER, DispatchMode
from coordlib.testing import SSHServer
from coordlib.testing.sshd import free_port

from .conftest import Setup

Run = Callable[..., subprocess.CompletedProcess[str]]
MACHINE_SH = (Path(__file__).resolve().parent.parent / "coordlib/runtime/machine.sh").read_text()


def arun(coro: Any) -> Any:
    return asyncio.run(coro)


def doctor_json(
    run_coord: Run, setup: Setup, *args: str, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    done = run_coord("doctor", *args, "--json", config=setup.write(), **kwargs)
    assert done.stdout.strip(), done.stderr
    return done.returncode, {m["name"]: m for m in json.loads(done.stdout)["machines"]}


def checks(machine: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in machine["checks"]}


# ======================================================== 1. the parser and the rule


def test_the_scripts_checks_are_the_declared_ones() -> None:
    code = "\n".join(line.split(" # ")[0] for line in MACHINE_SH.splitlines())
    named = set(re.findall(r'\bdoctor_says "?([\w.$]+)', code))
    named |= set(re.findall(r"\bdoctor_tool (\w+) ", code))
    assert named == {*DOCTOR_CHECKS, "$name", "repo.$i"}  # ($name: doctor_tool's)


def test_a_doctors_answer_parses_and_names_the_repos() -> None:
    data = (
        b"motd\ncoord-run 2 doctor\n"
        b"check git ok git version 2.39.5\n"
        b"check disk fail 12 MiB free on / (for /w), under the 1.0 GiB asked for\n"
        b"check worker_user warn workers run as root (the login user)\n"
        b"check repo.1 fail /src/web is not a git checkout\n"
        b"check claude ok claude: 2.1.197 \x1b[31m(Claude Code)\n"
        b"end\n"
    )
    found = parse_doctor(data, ["api", "web"], machine="box")
    assert [(c.name, c.level, c.ok) for c in found] == [
        ("git", "ok", True), ("disk", "fail", False), ("worker_user", "warn", True),
        ("repo:web", "fail", False), ("claude", "ok", True),
    ]  # fmt: skip
    assert found[-1].detail == "claude: 2.1.197 ?[31m(Claude Code)"  # no raw escape kept
    assert found[0].to_dict() == {"name": "git", "ok": True, "detail": "git version 2.39.5",
                                  "level": "ok"}  # fmt: skip


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"check rm ok x\n", "unknown check"),
        (b"check git maybe x\n", "bad check line"),
        (b"check git ok a\ncheck git ok b\n", "answered twice"),
        (b"check repo.2 ok /x\n", "unknown check"),  # only two repos were asked about
        (b"check repo.01 ok /x\n", "unknown check"),
        (b"step 0 state=ok 0\n\n", "unexpected line"),
        (b"check git ok x\n", "incomplete"),  # no end
    ],
)
def test_a_doctors_answer_that_is_not_one_is_refused(body: bytes, match: str) -> None:
    data = b"coord-run 2 doctor\n" + body + (b"end\n" if match != "incomplete" else b"")
    with pytest.raises(ProtocolError, match=match):
        parse_doctor(data, ["api", "web"], machine="box")


def test_the_doctor_command_carries_the_env_on_stdin_only() -> None:
    secret = "sk-ant-" + secrets.token_hex(8)
    argv, payload = doctor_command("~/.coord", 1024, ["~/src/my api"], ["npx", "claude"],
                                   {"ANTHROPIC_API_KEY": secret})  # fmt: skip
    assert argv[4:] == [HEADER, "doctor", "~/.coord", "1024", "~/src/my api"]
    assert not any(secret in word for word in argv)
    assert payload == b"npx\0claude\0\0" + encode_env({"ANTHROPIC_API_KEY": secret})
    for bad in ([], [""], ["a\0b"]):
        with pytest.raises(UsageError, match="remote command doctor"):
            doctor_command("w", 1, [], bad, {})
    with pytest.raises(UsageError, match="repo path"):
        doctor_command("w", 1, ["-x"], ["claude"], {})


def health(name: str, age: float, *failing: str) -> MachineHealth:
    fails = [Check(n, "fail", f"{n} is broken") for n in failing]
    return MachineHealth(name, time.time() - age, [Check("git", "ok", "2.39"), *fails])


def test_the_refusal_names_the_failing_checks_and_the_way_out() -> None:
    now = time.time()
    why = refusal(health("box", 330, "claude_login", "disk"), repo="api", now=now)
    assert why is not None
    assert "unhealthy 5m ago" in why and "claude_login: claude_login is broken" in why
    assert "disk: disk is broken" in why
    assert "`coord doctor box` checks it again, `--force` dispatches anyway" in why
    assert refusal(health("box", 300), repo="api", now=now) is None  # healthy
    assert refusal(None, repo="api", now=now) is None  # never examined
    assert refusal(health("box", 25 * 3600, "claude"), repo="api", now=now) is None  # too old
    # A repo's check refuses that repo's work only.
    assert refusal(health("box", 60, "repo:web"), repo="api", now=now) is None
    assert "repo:web" in (refusal(health("box", 60, "repo:web"), repo="web", now=now) or "")


def test_results_are_kept_on_the_board_one_per_machine(setup: Setup) -> None:
    setup.add_local("local")
    c = setup.coordinator()
    store(c.board, [health("local", 0, "tmux"), health("other", 10)])
    store(c.board, [health("local", 0)])  # the latest replaces the one before
    kept = latest(c.board)
    assert set(kept) == {"local", "other"} and kept["local"].healthy
    assert [d["key"] for d in c.board.docs(DOCTOR)] == ["local", "other"]


# ======================================================== 2. real machines


def test_a_healthy_machine_over_ssh_and_its_api_key_never_shows(
    setup: Setup, sshd: SSHServer, claude_cli: Path, run_coord: Run
) -> None:
    secret = "sk-ant-test-" + secrets.token_hex(12)
    home = setup.root / "worker-home"
    home.mkdir()
    setup.add_ssh(sshd, "box", claude_command=str(claude_cli),
                  env={"ANTHROPIC_API_KEY": "${TEST_DOCTOR_KEY}", "HOME": str(home)})  # fmt: skip
    t0 = time.monotonic()
    code, said = doctor_json(run_coord, setup, env={"TEST_DOCTOR_KEY": secret})
    box = said["box"]
    assert (code, box["healthy"]) == (0, True), box
    found = checks(box)
    assert list(found) == ["reachable", "env", *DOCTOR_CHECKS, "repo:api"]
    assert found["reachable"]["detail"].startswith(f"{sshd.host}: answered in")
    assert found["env"]["detail"] == "sends ANTHROPIC_API_KEY, HOME"
    assert found["git"]["detail"].startswith("git version ")
    assert found["tmux"]["detail"].startswith("tmux ")
    assert "util-linux" in found["flock"]["detail"]
    assert found["claude"]["detail"].endswith("2.1.197 (Claude Code)")
    assert found["claude_login"]["ok"] and "ANTHROPIC_API_KEY" in found["claude_login"]["detail"]
    assert "not made yet" in found["workdir"]["detail"] and found["disk"]["ok"]
    assert found["repo:api"] == {"name": "repo:api", "ok": True, "level": "ok",
                                 "detail": str(setup.repo.path)}  # fmt: skip
    assert time.monotonic() - t0 < 60
    # The key is used, and nowhere kept or shown: not on the board, not in the output.
    board = (setup.root / ".coord" / "board.json").read_text()
    assert secret not in board
    assert json.loads(board)["doctor"]["1"]["healthy"] is True
    text = run_coord("doctor", "box", config=setup.write(), env={"TEST_DOCTOR_KEY": secret})
    assert text.returncode == 0, text.stderr
    assert secret not in text.stdout + text.stderr
    assert "box  healthy" in text.stdout and "ok    claude_login" in text.stdout


def test_a_claude_that_is_not_logged_in(
    setup: Setup, sshd: SSHServer, claude_cli: Path, run_coord: Run
) -> None:
    empty = setup.root / "empty-home"  # no credentials file, and no key in the machine's env
    empty.mkdir()
    setup.add_ssh(sshd, "box", claude_command=str(claude_cli), env={"HOME": str(empty)})
    code, said = doctor_json(run_coord, setup)
    login = checks(said["box"])["claude_login"]
    assert (code, said["box"]["healthy"], login["ok"]) == (1, False, False), login
    assert login["detail"] == "not logged in, as claude auth status says"
    assert "ANTHROPIC_API_KEY" in login["fix"] and "machines.box.env" in login["fix"]
    text = run_coord("doctor", config=setup.write())
    assert text.returncode == 1
    assert "FAIL  claude_login" in text.stdout and "fix: give it an API key" in text.stdout
    assert "box: 1 failing check(s): claude_login" in text.stdout


def path_without(tmp: Path, *missing: str) -> str:
    """A PATH of one directory that links every program of this PATH but `missing`."""
    bin_dir = tmp / "restricted-bin"
    bin_dir.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        with contextlib.suppress(OSError):
            for entry in os.scandir(d):
                target = bin_dir / entry.name
                if entry.name not in missing and not target.exists():
                    target.symlink_to(entry.path)
    assert not any((bin_dir / m).exists() for m in missing)
    return str(bin_dir)


def test_missing_tools_fail_their_checks(
    setup: Setup, sshd: SSHServer, claude_cli: Path, run_coord: Run
) -> None:
    # The local machine's commands start from the coordinator's PATH: here one without tmux.
    home = setup.root / "worker-home"
    home.mkdir()
    setup.add_local("local", claude_command=str(claude_cli),
                    env={"ANTHROPIC_API_KEY": "${TEST_DOCTOR_KEY}", "HOME": str(home)})  # fmt: skip
    # Over SSH: a claude_command that is nowhere; and one found only on the PATH the
    # machine's env gives its workers (the doctor looks where a worker would).
    setup.add_ssh(sshd, "nowhere", claude_command="claude-not-installed-here")
    setup.add_ssh(sshd, "onpath", claude_command=claude_cli.name,
                  env={"PATH": f"{claude_cli.parent}:/usr/bin:/bin"})  # fmt: skip
    restricted = {"PATH": path_without(setup.root, "tmux"), "TEST_DOCTOR_KEY": "sk-test-x"}
    code, said = doctor_json(run_coord, setup, env=restricted)
    assert code == 1
    local = checks(said["local"])
    assert local["tmux"]["ok"] is False and local["tmux"]["detail"].startswith("not installed")
    assert "apt-get install tmux" in local["tmux"]["fix"]
    assert local["git"]["ok"] and local["claude"]["ok"]
    assert [c["name"] for c in said["local"]["checks"] if not c["ok"]] == ["tmux"]
    nowhere = checks(said["nowhere"])
    assert nowhere["claude"]["ok"] is False, nowhere["claude"]
    assert nowhere["claude"]["detail"] == (
        "claude-not-installed-here is not on the PATH a worker gets"
    )
    assert "npm install -g @anthropic-ai/claude-code" in nowhere["claude"]["fix"]
    assert nowhere["claude_login"]["detail"] == "claude cannot run"
    assert nowhere["tmux"]["ok"] and nowhere["git"]["ok"]
    assert checks(said["onpath"])["claude"]["detail"].endswith("(Claude Code)")


@contextlib.contextmanager
def small_disk(where: Path) -> Iterator[bool]:
    """Mount a 2 MiB file system on `where` (tmpfs, else a loop file); False if neither would."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
                             capture_output=True, check=False).returncode == 0  # fmt: skip
    image = where.with_suffix(".img")
    if not mounted and shutil.which("mkfs.ext4"):
        subprocess.run(["truncate", "-s", "8M", str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=False)
        mounted = subprocess.run(["mount", "-o", "loop", str(image), str(where)],
                                 capture_output=True, check=False).returncode == 0  # fmt: skip
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(where)], check=False)
            if os.path.ismount(where):
                subprocess.run(["umount", "-l", str(where)], check=False)
        image.unlink(missing_ok=True)


def fill(directory: Path) -> None:
    with open(directory / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:  # until ENOSPC: full
            f.write(b"\0" * 65536)


def test_a_full_disk_under_the_workdir_fails_the_disk_check(
    setup: Setup, claude_cli: Path, run_coord: Run
) -> None:
    setup.add_local("local", claude_command=str(claude_cli))
    workdir = setup.root / "wd-local"
    with small_disk(workdir) as mounted:
        if mounted:
            code, said = doctor_json(run_coord, setup, "--min-free", "1M")
            disk = checks(said["local"])["disk"]
            assert disk["ok"], disk  # 2 MiB free of 2: above the 1 MiB asked for
            fill(workdir)
            code, said = doctor_json(run_coord, setup, "--min-free", "1M")
        else:  # no mount here: ask for more than the disk has, which is full by that measure
            free = shutil.disk_usage(workdir).free // 1024 // 1024
            code, said = doctor_json(run_coord, setup, "--min-free", f"{free + 1024}M")
        disk = checks(said["local"])["disk"]
        assert (code, disk["ok"], said["local"]["healthy"]) == (1, False, False), disk
        assert "free on" in disk["detail"] and "asked for" in disk["detail"]
        assert "coord clean" in disk["fix"]
        # The workdir itself is there and writable: only its room is short.
        assert checks(said["local"])["workdir"]["ok"]


def test_an_untrusted_host_key_is_a_failing_host_key_check(
    setup: Setup, sshd: SSHServer, run_coord: Run
) -> None:
    empty = setup.root / "known_hosts_empty"
    empty.write_text("")
    setup.add_ssh(sshd, "stranger", known_hosts=str(empty))
    code, said = doctor_json(run_coord, setup)
    found = said["stranger"]["checks"]
    assert code == 1 and [c["name"] for c in found] == ["host_key"], found
    assert "coord trust stranger" in found[0]["detail"]


def test_hosts_that_do_not_answer_are_reported_and_hold_up_no_other(
    setup: Setup, sshd: SSHServer, claude_cli: Path, run_coord: Run
) -> None:
    silent = socket.socket()  # accepts connections (the kernel does) and never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        setup.add_ssh(sshd, "up", claude_command=str(claude_cli))
        setup.add_ssh(sshd, "closed", port=free_port())
        setup.add_ssh(sshd, "silent", port=silent.getsockname()[1], connect_timeout=2)
        t0 = time.monotonic()
        code, said = doctor_json(run_coord, setup, "--timeout", "20")
        elapsed = time.monotonic() - t0
    finally:
        silent.close()
    assert code == 1 and elapsed < 30, elapsed
    assert checks(said["up"])["reachable"]["ok"] and checks(said["up"])["tmux"]["ok"]
    closed = said["closed"]["checks"][0]
    assert (closed["name"], closed["ok"]) == ("reachable", False)
    assert closed["detail"].startswith("refused: cannot connect to 127.0.0.1:"), closed
    quiet = said["silent"]["checks"][0]
    assert (quiet["name"], quiet["ok"]) == ("reachable", False)
    assert quiet["detail"].startswith("timeout: "), quiet
    assert "sshd listens" in closed["fix"]


def test_a_live_run_whose_launcher_is_gone_is_a_stale_run(setup: Setup, run_coord: Run) -> None:
    setup.add_local("local")
    wd = setup.root / "wd-local"
    (wd / "runs" / ".live").mkdir(parents=True)
    for rid in ("api-1-dead", "api-2-done"):
        (wd / "runs" / rid).mkdir()
        (wd / "runs" / ".live" / rid).touch()
        (wd / "runs" / rid / "launcher.pid").write_text("999999 not-this-boot 1\n")
    (wd / "runs" / "api-2-done" / "exit.json").write_text('{"exit_code":0}\n')
    (wd / "worktrees" / "api" / "api-1-dead").mkdir(parents=True)
    (wd / "worktrees" / "api" / "api-1-dead" / "f").write_bytes(b"x" * 300_000)
    _, said = doctor_json(run_coord, setup)
    found = checks(said["local"])
    assert found["stale_runs"]["level"] == "warn" and found["stale_runs"]["ok"]
    assert found["stale_runs"]["detail"].endswith("with no exit.json: api-1-dead")
    assert found["worktrees"]["detail"].startswith("1 worktree(s), ")
    assert found["worktrees"]["detail"].endswith(f"in {wd}/worktrees")


# ======================================================== 3. dispatch consults it


def test_assign_is_refused_on_an_unhealthy_machine_and_force_overrides(
    setup: Setup, run_coord: Run
) -> None:
    # The fake claude answers no --version: the doctor finds claude unusable.
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"})
    config = setup.write()
    code, said = doctor_json(run_coord, setup)
    assert (code, said["local"]["healthy"]) == (1, False)
    assert [c["name"] for c in said["local"]["checks"] if not c["ok"]] == ["claude", "claude_login"]
    refused = run_coord("assign", "local", "api", "1", "--title", "One", "--no-pipeline",
                        config=config)  # fmt: skip
    assert refused.returncode == 1, refused.stderr
    assert "unhealthy" in refused.stderr and "claude: " in refused.stderr
    assert "`coord doctor local` checks it again, `--force` dispatches anyway" in refused.stderr
    assert not (setup.root / "wd-local" / "runs").exists()  # nothing was started
    forced = run_coord("assign", "local", "api", "1", "--title", "One", "--no-pipeline",
                       "--force", "--json", config=config)  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    a = json.loads(forced.stdout)
    done = run_coord("wait", a["id"], "--timeout", "60", config=config)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_start_but_a_continued_session_consults_the_latest_result(setup: Setup) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"})

    async def go() -> list[Any]:
        async with setup.coordinator() as c:
            store(c.board, [health("local", 0, "tmux")])
            with pytest.raises(UnhealthyMachineError, match="tmux: tmux is broken"):
                await c.assign("local", "api", 1, title="One", pipeline=False)
            # An old finding, or one about another repo, refuses nothing.
            store(c.board, [health("local", 2 * 86400, "tmux")])
            c._dispatcher._doctored = None  # (a burst shares one read: a new burst here)
            first = await c.assign("local", "api", 1, title="One", pipeline=False)
            store(c.board, [health("local", 0, "repo:web")])
            c._dispatcher._doctored = None
            second = await c.assign("local", "api", 2, title="Two", pipeline=False)
            done = [await c.wait(a.id, timeout=30) for a in (first, second)]
            # A retry is a new start: refused while the machine is unhealthy.
            store(c.board, [health("local", 0, "disk")])
            c._dispatcher._doctored = None
            with pytest.raises(UnhealthyMachineError, match="disk"):
                await c.retry(first.id)
            # The pipeline's stages (a review, a fix) start through the same place.
            with pytest.raises(UnhealthyMachineError, match="disk"):
                await c._dispatcher.start_stage(
                    stage="review", machine="local", repo="api", issue=1, title="One",
                    branch=first.branch, model="haiku", tools="Read", briefing="Review it.",
                    mode=DispatchMode.REVIEW,
                )  # fmt: skip
            assert len(c.assignments()) == 2  # nothing refused was claimed
            # And `coord plan` proposes nothing there, saying why.
            for title in ("One", "Two", "Three"):  # (#1 and #2 have branches: claimed)
                await c.forge("api").create_issue(title, labels=["status:ready"])
            planned = await c.plan()
            assert not planned.proposals, planned.proposals
            why = {s["issue"]: s["why"] for s in planned.skipped}
            assert "disk" in why[3], planned.skipped
            return done

    assert [a.status for a in arun(go())] == [Status.DONE, Status.DONE]
