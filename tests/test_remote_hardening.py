"""Three holes in the remote side, each shown closed against real components.

1. The prompt reaches ``claude -p`` on stdin from briefing.md, never as an argument: a
   briefing that starts with "-" is not an option, one of 200 KB is not "Argument list
   too long", and no user can read it in ``ps``.
2. `LocalTransport` starts every command from an SSH login's environment: the tmux server
   it starts (and so every session and launcher) never sees the coordinator's secrets.
3. Every verb of coord-run (and its launcher) checks every argument (ids, numbers,
   choices) before it uses any, and so does `remote_argv` on the Python side: an id is
   never evaluated, never leaves the runs dir, and a bad argument exits 2 having touched
   nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from coordlib import Status
from coordlib.assignment import ID_PATTERN
from coordlib.errors import ProtocolError, UsageError
from coordlib.runtime.answers import parse_clean, parse_status
from coordlib.runtime.local import login_env
from coordlib.runtime.protocol import (
    ExitCode,
    ExitReason,
    check_args,
    launcher_hash,
    launcher_script,
    remote_argv,
    remote_script,
)
from coordlib.testing.model_server import ModelServer, Scenario, Turn, claude_env, text, tool

from .conftest import FAKE_CLAUDE, Setup


def arun(coro: Any) -> Any:
    return asyncio.run(coro)


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def worker_pid(run_dir: str) -> int | None:
    """The worker's pid once the launcher has started it (setsid execs it in place)."""
    try:
        pid = int((Path(run_dir) / "worker.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"fake_claude.py" in cmdline else None


def prompt_log_entry(log: Path) -> dict[str, Any] | None:
    """The fake worker's first FAKE_CLAUDE_PROMPT_LOG record, once it has written one."""
    lines = log.read_text().splitlines() if log.exists() else []
    return json.loads(lines[0]) if lines else None


# ======================================================== 1. the prompt travels on stdin

LIST_BRIEFING = "- fix the login check\n- add a test for expired tokens\n"
BIG_BRIEFING = "".join(f"line {i:06d}: keep every byte of this briefing\n" for i in range(4800))
FLAG_BRIEFING = "--dangerously-skip-permissions"


def test_real_cli_reads_briefings_no_argument_could_carry(
    setup: Setup, claude_cli: Path, model_server: Callable[..., ModelServer]
) -> None:
    assert len(BIG_BRIEFING.encode()) > 200_000  # past Linux's 128 KiB for one argument
    server = model_server(Scenario([
        Turn([tool("Bash", command="git commit -q --allow-empty -m 'Read the briefing'",
                   description="Record it")]),
        Turn([text("STATUS: done\nRead the briefing.")]),
    ]))  # fmt: skip
    env = claude_env(server.url, setup.root / "home", max_retries=1, base={})
    env["ANTHROPIC_API_KEY"] = "${TEST_WORKER_API_KEY}"  # a secret is a reference, never a literal
    setup.add_local("local", claude_command=str(claude_cli), env=env, max_workers=3)
    # Unconfined: this is about how a briefing travels.  (Three confined workers sharing one
    # home that run their first command at the same instant meet the CLI's sandbox race, one
    # time in ten: see the README's threat model.)
    setup.worker.update(stall_timeout=60, result_grace=5, confine=False)
    briefings = {"list": LIST_BRIEFING, "big": BIG_BRIEFING, "flag": FLAG_BRIEFING}

    async def go() -> dict[str, Any]:
        async with setup.coordinator(environ={"TEST_WORKER_API_KEY": "sk-test-hardening"}) as c:
            started = await asyncio.gather(*(
                c.assign("local", "api", n, title=name, briefing=briefing)
                for n, (name, briefing) in enumerate(briefings.items(), 1)
            ))  # fmt: skip
            done = await asyncio.gather(*(c.wait(a.id, timeout=120) for a in started))
            return dict(zip(briefings, done, strict=True))

    results = arun(go())
    for name, row in results.items():
        assert row.status == Status.DONE, (name, row.error, row.failure_class)
    # The model saw each briefing whole, byte for byte, as the user's message.
    sent = []
    for r in server.requests:
        if r.method == "POST" and isinstance(r.body, dict) and r.body.get("tools"):
            content = r.body["messages"][0]["content"]
            blocks = [content] if isinstance(content, str) else content
            sent += [b if isinstance(b, str) else b.get("text") for b in blocks]
    for name, briefing in briefings.items():
        assert briefing in sent, name
    # The flag-shaped briefing was text: the CLI ran with its ordinary permissions.
    events = Path(results["flag"].run_dir).joinpath("events.jsonl").read_text().splitlines()
    init = json.loads(events[0])
    assert init["subtype"] == "init" and init["permissionMode"] != "bypassPermissions", init


def test_the_prompt_is_never_on_the_workers_command_line(setup: Setup) -> None:
    marker = f"briefing-marker-{secrets.token_hex(6)}"
    briefing = f"- {marker}\n- then $(touch PWNED) and `id`\n"
    log = setup.root / "prompt.jsonl"
    setup.add_local(
        "local", env={"FAKE_CLAUDE_SCENARIO": "stall", "FAKE_CLAUDE_PROMPT_LOG": str(log)}
    )

    async def go() -> tuple[list[bytes], Any]:
        async with setup.coordinator() as c:
            a = await c.assign("local", "api", 5, title="Listed", briefing=briefing)
            pid = await asyncio.to_thread(wait_for, lambda: worker_pid(a.run_dir), 20, "worker")
            own = Path(f"/proc/{pid}/cmdline").read_bytes()
            everyone = []
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                with contextlib.suppress(OSError):  # ended meanwhile
                    everyone.append(cmdline.read_bytes())
            for _ in range(200):  # the worker writes it once it has read its prompt
                if prompt_log_entry(log):
                    break
                await asyncio.sleep(0.05)
            stopped = await c.stop(a.id)
            return [own, *everyone], stopped

    cmdlines, stopped = arun(go())
    assert [c for c in cmdlines if marker.encode() in c] == []  # the worker's own is first
    entry = prompt_log_entry(log)
    assert entry and (entry["source"], entry["prompt"]) == ("stdin", briefing)
    assert stopped.status == Status.STOPPED
    assert not list(setup.root.rglob("PWNED"))


def run_fake(
    cwd: Path, *args: str, stdin: bytes | None
) -> tuple[subprocess.CompletedProcess[bytes], Path]:
    cwd.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=cwd, check=True)
    log = cwd / "prompt.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_CLAUDE_")}
    proc = subprocess.run(
        [sys.executable, str(FAKE_CLAUDE), "-p", *args],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        cwd=cwd,
        env=env | {"FAKE_CLAUDE_PROMPT_LOG": str(log)},
        capture_output=True,
        timeout=30,
        check=False,
    )
    return proc, log


STREAM = ["--output-format", "stream-json", "--verbose", "--model", "m"]


def test_the_fake_worker_reads_its_prompt_from_stdin_or_its_argument(tmp_path: Path) -> None:
    proc, log = run_fake(tmp_path / "stdin", *STREAM, stdin=b"- from stdin\n\n")
    assert proc.returncode == 0, proc.stderr
    entry = prompt_log_entry(log) or {}
    assert (entry["prompt"], entry["source"]) == ("- from stdin\n\n", "stdin")
    proc, log = run_fake(tmp_path / "argv", "from argv", *STREAM, stdin=b"ignored")
    assert proc.returncode == 0, proc.stderr
    entry = prompt_log_entry(log) or {}
    assert (entry["prompt"], entry["source"]) == ("from argv", "argv")
    proc, log = run_fake(tmp_path / "none", *STREAM, stdin=None)  # /dev/null: no prompt
    assert proc.returncode == 1 and b"Input must be provided" in proc.stderr


# ======================================================== 2. the environment of local commands


def test_login_env_keeps_only_what_an_ssh_login_gets(monkeypatch: pytest.MonkeyPatch) -> None:
    login = {
        "HOME": "/home/u", "USER": "u", "LOGNAME": "u", "PATH": "/usr/bin", "SHELL": "/bin/bash",
        "LANG": "C.UTF-8", "LANGUAGE": "en", "LC_ALL": "C", "LC_CTYPE": "C.UTF-8", "TZ": "UTC",
        "TMPDIR": "/tmp/x", "TMUX_TMPDIR": "/tmp/t",
    }  # fmt: skip
    rest = {
        "GITHUB_TOKEN": "ghp_x", "ANTHROPIC_API_KEY": "sk-x", "SSH_AUTH_SOCK": "/tmp/agent",
        "AWS_SECRET_ACCESS_KEY": "x", "TMUX": "/tmp/tmux-0/default,1,0", "PYTHONPATH": "/x",
        "LD_PRELOAD": "/x.so", "BASH_ENV": "/x", "ENV": "/x", "XLC_ALL": "x", "home": "/x",
        "IS_SANDBOX": "1", "CLAUDE_CONFIG_DIR": "/x",
    }  # fmt: skip
    assert login_env({**rest, **login}) == login
    assert login_env({}) == {}
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_from_the_coordinator")
    monkeypatch.setenv("LC_TIME", "C")
    assert "GITHUB_TOKEN" not in login_env() and login_env()["LC_TIME"] == "C"  # os.environ


def test_a_local_worker_and_its_tmux_server_never_see_the_coordinators_environment(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    planted = f"ghp_planted{secrets.token_hex(8)}"
    monkeypatch.setenv("COORD_TEST_PLANTED", planted)
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "stall"})

    def tmux(*args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", setup.socket, *args], capture_output=True, text=True, check=True
        ).stdout

    async def go() -> dict[str, bytes | str]:
        async with setup.coordinator() as c:
            a = await c.assign("local", "api", 6, title="Env", briefing="Look around.")
            pid = await asyncio.to_thread(wait_for, lambda: worker_pid(a.run_dir), 20, "worker")
            launcher = (Path(a.run_dir) / "launcher.pid").read_text().split()[0]
            server = tmux("display-message", "-p", "#{pid}").strip()
            seen: dict[str, bytes | str] = {
                "show-environment -g": tmux("show-environment", "-g"),
                "tmux server": Path(f"/proc/{server}/environ").read_bytes(),
                "launcher": Path(f"/proc/{launcher}/environ").read_bytes(),
                "worker": Path(f"/proc/{pid}/environ").read_bytes(),
            }
            await c.stop(a.id)
            return seen

    seen = arun(go())
    assert "PATH=" in str(seen["show-environment -g"])  # the server's environment was read
    for where, env in seen.items():
        data = env.encode() if isinstance(env, str) else env
        assert b"COORD_TEST_PLANTED" not in data and planted.encode() not in data, where


# ======================================================== 3. every argument of every verb checked

CANARY = "CANARY"
HOSTILE = [
    f"$(touch {CANARY})",
    f"`touch {CANARY}`",
    f"a[$(touch {CANARY})]",
    f"maxb[$(touch {CANARY})]",
    f"want[`touch {CANARY}`]",
    f"api-1-abcd[$(touch {CANARY})]",
    f"0:0:a[$(touch {CANARY})]",
    "../..",
    "../victim",
    "api-1-abcd/../../victim",
    "api-1-abcd/",
    ".",
    "..",
    "",
    " ",
    "a\nb",
    "api-1-abcd\n",
    "\nend\n",
    "-x",
    "--help",
    "-1",
    "1+1",
    "2*3",
    "1e3",
    "0x10",
    "010",
    "08",
    "1 ",
    " 1",
    "9" * 30,
    "\u0661\u0662",  # Arabic-Indic digits: Python's \d would take them
    "ab\u00e9",
    "a" * 101,
    "A" * 5000,
    "a b",
    "a:b",
    "api-1-abcd:0",
    "api-1-abcd:0:1:2",
    "x=$(touch CANARY)",
    "$HOME",
    "${IFS}",
    "*",
    "issue-1;touch CANARY",
    "issue-1-A",
    "main..x",
    "-main",
    "ABC",
    "new ",
    "events.jsonl/../../x",
    "2",
]
VALUE = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40),
    st.lists(st.sampled_from(HOSTILE), min_size=2, max_size=3).map("".join),
)
RUN = "api-1-abcd"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A workdir with one ended run, a victim dir beside runs/, and an empty cwd."""
    root = tmp_path_factory.mktemp("hostile")
    run = root / "wd" / "runs" / RUN
    run.mkdir(parents=True)
    (run / "events.jsonl").write_text('{"type":"system"}\n')
    (run / "exit.json").write_text('{"exit_code":0,"reason":"exited"}\n')
    (root / "wd" / "runs" / ".live").mkdir()
    (root / "wd" / "victim").mkdir()
    (root / "cwd").mkdir()
    yield root
    assert not list(root.rglob(CANARY))


def valid_args(root: Path) -> dict[str, list[str]]:
    """Arguments each verb accepts, in the sandbox; the fuzz spoils one at a time."""
    wd = str(root / "wd")
    return {
        "dispatch": [wd, RUN, str(root / "repo"), f"{wd}/worktrees/api/{RUN}", "issue-1-x-r2",
                     "main", "ct-none", launcher_hash(), "10", "20", "30", "40", "new"],
        "status": [wd, "ct-none", "live", RUN, "0", "100", "1"],
        "stop": [wd, RUN],
        "tail": [wd, RUN, "0", "events.jsonl", "0"],
        "clean": [wd, "check", "1", "0"],
    }  # fmt: skip


# (verb, index of the argument, how the value goes in): every checked argument
POSITIONS = [
    *(("dispatch", i, "{}") for i in range(13)),
    *((verb, 0, "{}") for verb in ("status", "stop", "tail", "clean")),  # workdirs
    *(("status", i, "{}") for i in range(1, 7)),  # socket, scope, then id offset limit files
    ("stop", 1, "{}"),
    *(("tail", i, "{}") for i in (1, 2, 3, 4)),
    ("clean", 1, "{}"),
    ("clean", 2, "{}"),
    ("clean", 3, "{}"),
]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def coord_run(
    root: Path, verb: str, *args: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    """Run one verb of the real script through real bash, with no Python check in front."""
    return _bash(root, [remote_script(), "coord-run", verb, *args], stdin)


def coord_launcher(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run the real launcher, as tmux does, with whatever arguments."""
    return _bash(root, [launcher_script(), "coord-launcher", *args], b"")


def _bash(root: Path, args: list[str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["bash", "--norc", "-c", *args],
        input=stdin,
        cwd=root / "cwd",
        env={"PATH": os.environ["PATH"], "HOME": str(root), "LANG": "C.UTF-8"},
        capture_output=True,
        timeout=30,
        check=False,
    )


def python_refuses(verb: str, args: list[str]) -> bool:
    try:
        check_args(verb, args)
    except UsageError:
        return True
    return False


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=VALUE)
@example(value=f"maxb[$(touch {CANARY})]")
@example(value="../victim")
@example(value="a\nb")
@example(value="1+1")
@example(value="-x")
@example(value="A" * 5000)
def test_every_verb_refuses_a_hostile_argument_and_touches_nothing(
    sandbox: Path, value: str
) -> None:
    before = snapshot(sandbox)
    for verb, index, shape in POSITIONS:
        args = valid_args(sandbox)[verb]
        args[index] = shape.format(value)
        if not python_refuses(verb, args):
            continue  # a value this argument may take (a number where one is wanted, ...)
        done = coord_run(sandbox, verb, *args)
        assert not list(sandbox.rglob(CANARY)), (verb, index, args)
        assert (done.returncode, done.stdout) == (ExitCode.USAGE, b""), (verb, index, args)
        assert done.stderr.startswith(f"coord-run: {verb}: ".encode()), done.stderr
        assert b"\n" not in done.stderr.rstrip(b"\n"), done.stderr  # one line, nothing raw
    # clean gets its ids on stdin: a bad one is refused by its own record.
    if not ID_PATTERN.fullmatch(value):
        done = coord_run(sandbox, "clean", str(sandbox / "wd"), "remove", "0", "0",
                         stdin=value.encode() + b"\0\0")  # fmt: skip
        assert done.returncode == 0, done.stderr
        (line,) = parse_clean(done.stdout).values()
        assert (line["run"], line["note"]) == ("refused", "not a run id"), line
    # The launcher (started by dispatch inside tmux) takes a run dir named by an id.
    if not ID_PATTERN.fullmatch(value) and "/" not in value:
        done = coord_launcher(sandbox, str(sandbox / "wd" / "runs") + "/" + value)
        assert done.returncode in (ExitCode.USAGE, ExitCode.NO_RUN), done.stderr
        assert done.stderr.startswith(b"coord-run: run: "), done.stderr
    for args in ([], ["a", "b"]):
        done = coord_launcher(sandbox, *args)
        assert done.returncode == ExitCode.USAGE, done.stderr
    assert snapshot(sandbox) == before
    assert not list(sandbox.rglob(CANARY))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.from_regex(ID_PATTERN, fullmatch=True).filter(lambda v: v != RUN))
@example(value="A")
@example(value="9_-")
@example(value="z" * 100)
def test_the_script_takes_every_id_the_python_check_takes(sandbox: Path, value: str) -> None:
    wd = str(sandbox / "wd")
    for verb, args, code in (
        ("stop", [wd, value], ExitCode.NO_RUN),
        ("tail", [wd, value, "0", "events.jsonl", "0"], ExitCode.NO_RUN),
        ("status", [wd, "ct-none", "live", value, "0", "10", "1"], ExitCode.OK),
    ):
        check_args(verb, args)
        done = coord_run(sandbox, verb, *args)
        assert done.returncode == code, (verb, value, done.stderr)
        if verb == "status":
            assert parse_status(done.stdout).missing == {value}


@pytest.mark.parametrize(
    "want",
    [
        (RUN, "0", f"maxb[$(touch {CANARY})]"),
        (RUN, f"want[$(touch {CANARY})]", "10"),
        (f"x$(touch {CANARY})", "0", "10"),
    ],
)
def test_the_status_probe_never_evaluates_an_id_an_offset_or_a_limit(
    tmp_path: Path, want: tuple[str, str, str]
) -> None:
    # Before: ((n > maxb[$id])) evaluated the limit, and the id inside it, as arithmetic
    # (whose array subscripts run $(…)); $((size - off)) did the same with the offset.
    for name in (RUN, f"x$(touch {CANARY})"):
        run = tmp_path / "wd" / "runs" / name
        run.mkdir(parents=True)
        (run / "events.jsonl").write_text('{"type":"system"}\n')
        (run / "exit.json").write_text('{"exit_code":0,"reason":"exited"}\n')
    (tmp_path / "cwd").mkdir()
    done = coord_run(tmp_path, "status", str(tmp_path / "wd"), "ct-none", "all", *want)
    assert not list(tmp_path.rglob(CANARY))
    assert (done.returncode, done.stdout) == (ExitCode.USAGE, b""), done.stderr
    assert done.stderr.startswith(b"coord-run: status: "), done.stderr


def test_stop_and_tail_never_leave_the_runs_dir(sandbox: Path) -> None:
    victim = sandbox / "wd" / "victim"
    for verb, args in (("stop", ["../victim"]), ("tail", ["../victim", "0", "events.jsonl", "0"])):
        done = coord_run(sandbox, verb, str(sandbox / "wd"), *args)
        assert done.returncode == ExitCode.USAGE and b"not an assignment id" in done.stderr
    assert list(victim.iterdir()) == []


def test_status_passes_over_run_dirs_whose_names_are_not_ids(tmp_path: Path) -> None:
    runs = tmp_path / "wd" / "runs"
    for name in (RUN, "x\nmissing forged", f"a[$(touch {CANARY})]", "-rf", "a b", "é"):
        (runs / name).mkdir(parents=True)
        (runs / name / "exit.json").write_text('{"exit_code":0,"reason":"exited"}\n')
    (tmp_path / "cwd").mkdir()
    done = coord_run(tmp_path, "status", str(tmp_path / "wd"), "ct-none", "all")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert [ln for ln in lines if ln.startswith(("run ", "missing "))] == [
        f"run {RUN} alive=0 size=-1 dispatching=0"
    ]
    assert not list(tmp_path.rglob(CANARY))


@pytest.mark.parametrize(
    "line", [b"run ../x alive=1 size=1\n", b"run a[$(id)] alive=1\n", b"missing ../../etc\n"]
)
def test_a_probe_naming_a_run_by_anything_but_an_id_is_malformed(line: bytes) -> None:
    header = b"coord-run 2 status boot=b now=1\n"
    with pytest.raises(ProtocolError, match="bad id"):
        parse_status(header + line + b"exit \nend\n")


def test_the_launcher_refuses_limits_that_are_not_numbers(tmp_path: Path) -> None:
    run = tmp_path / "wd" / "runs" / RUN
    run.mkdir(parents=True)
    (tmp_path / "cwd").mkdir()
    (run / "launch.env").write_text(
        f"COORD_WORKTREE={tmp_path}\nCOORD_CMD=(true)\nCOORD_ARGS=()\n"
        f"COORD_STALL_MS='a[$(touch {CANARY})]'\nCOORD_MAXRT_MS=1000\nCOORD_GRACE_MS=1000\n"
        "COORD_POLL=0.1\n"
    )
    done = coord_launcher(tmp_path, str(run))
    assert done.returncode == ExitCode.LAUNCH_BAD_ENV
    assert json.loads((run / "exit.json").read_text())["reason"] == ExitReason.CRASHED
    assert "not a number" in (run / "launcher.log").read_text()
    assert not list(tmp_path.rglob(CANARY))


# ------------------------------------------------------------------ the Python-side check

GOOD = {
    "dispatch": ["~/.coord", "api-42-1f3a", "~/src/my repo", "~/.coord/worktrees/api/api-42-1f3a",
                 "issue-42-fix-login", "main", "coord", "0123456789ab", "10", "0", "300", "9000",
                 "new"],
    "status": ["~/.coord", "coord", "live", "api-42-1f3a", "0", "8388608", "1", "b_2", "17", "1",
               "0"],
    "stop": ["~/.coord", "api-42-1f3a"],
    "tail": ["~/.coord", "api-42-1f3a", "1024", "stderr.log", "1"],
    "clean": ["/home/u/.coord", "remove", "0", "1"],
    "await": ["~/.coord", "30", "api-42-1f3a", "b_2"],
    "sync": ["~/src/api", "main", "1"],
}  # fmt: skip

# (verb, index, bad values) for every argument that has a shape
BAD = [
    ("dispatch", 0, ["", "-rf"]),
    ("dispatch", 1, ["", "../x", "a b", "-a", "_a", "a.b", "a" * 101, "a\n", "$(id)"]),
    ("dispatch", 2, ["", "--upload-pack=x"]),
    ("dispatch", 3, ["", "-x"]),
    ("dispatch", 4, ["main", "issue-", "issue-x", "issue-1-", "issue-1--x", "issue-1-A",
                     "issue-1-x;id", "issue-1\n", "issue-\u0661", "-issue-1",
                     "issue-1-" + "a" * 200]),
    ("dispatch", 5, ["", "-main", "--upload-pack=touch x", "a b", "a\n", "ma$(id)"]),
    ("dispatch", 6, ["", "-L", "a/b", "../x", "a b"]),
    ("dispatch", 7, ["", "ABC", "../../x", "g" * 12, "a" * 65]),
    *(("dispatch", i, ["", "-1", "1+1", "010", "1.5", "0x1", "\u0661", "9" * 19])
      for i in (8, 9, 10, 11)),
    ("dispatch", 12, ["", "old", "New", "continue "]),
    ("status", 1, ["", "-x", "a/b"]),
    ("status", 2, ["", "ALL", "Live", "api-1", "live "]),
    *(("status", i, ["", "api-1:0:1", "../x", "a b", "-a", "a" * 101, "$(id)"]) for i in (3, 7)),
    *(("status", i, ["", "-1", "1+1", "01", "a[$(id)]", "0:1"]) for i in (4, 5, 8, 9)),
    *(("status", i, ["", "2", "01", "yes", "$(id)"]) for i in (6, 10)),
    ("stop", 1, ["", "../victim", ".", "a/b", "-a"]),
    ("tail", 1, ["", "..", "a/../b"]),
    ("tail", 2, ["", "-1", "1+1", "01"]),
    ("tail", 3, ["", "exit.json", "../events.jsonl", "events.jsonl "]),
    ("tail", 4, ["", "2", "yes", "01"]),
    ("clean", 1, ["", "rm", "REMOVE"]),
    ("clean", 2, ["", "2", "true"]),
    ("clean", 3, ["", "2", "yes", "01"]),
    ("await", 1, ["", "0", "-1", "1.5", "01", "9" * 10, "1+1"]),
    ("await", 2, ["", "../x", "a b", "-a", "$(id)"]),
    ("sync", 0, ["", "-rf"]),
    ("sync", 1, ["", "-main", "--upload-pack=touch x", "a b"]),
    ("sync", 2, ["", "2", "yes"]),
]  # fmt: skip


@pytest.mark.parametrize("verb", sorted(GOOD))
def test_remote_argv_takes_the_arguments_each_verb_declares(verb: str) -> None:
    argv = remote_argv(verb, *GOOD[verb])
    assert argv[:3] == ["bash", "--norc", "-c"] and argv[4:] == ["coord-run", verb, *GOOD[verb]]


def test_remote_argv_status_takes_no_runs_or_any_number_of_them() -> None:
    assert remote_argv("status", "~/.coord", "coord", "all")[-1] == "all"
    assert remote_argv("status", "~/.coord", "coord", "live", "api-1", "0", "10", "0")[-4:] == [
        "api-1", "0", "10", "0"
    ]  # fmt: skip
    assert remote_argv("dispatch", *GOOD["dispatch"][:4], "issue-7", *GOOD["dispatch"][5:])
    assert remote_argv("dispatch", *GOOD["dispatch"][:4], "issue-7-r3", *GOOD["dispatch"][5:])


@pytest.mark.parametrize(("verb", "index", "values"), BAD, ids=lambda x: str(x)[:20])
def test_remote_argv_refuses_a_bad_argument(verb: str, index: int, values: list[str]) -> None:
    for value in values:
        args = list(GOOD[verb])
        args[index] = value
        with pytest.raises(UsageError, match=f"remote command {verb}"):
            remote_argv(verb, *args)


@pytest.mark.parametrize(
    ("verb", "args"),
    [
        ("run", ["/x/runs/api-1"]),  # started by dispatch inside tmux, never sent
        ("rm", []),
        ("", []),
        ("stop", ["~/.coord"]),
        ("stop", ["~/.coord", "api-1", "extra"]),
        ("tail", GOOD["tail"][:3]),
        ("dispatch", GOOD["dispatch"][:-1]),
        ("clean", GOOD["clean"] + ["x"]),
        ("status", ["~/.coord"]),
        ("status", ["~/.coord", "coord"]),  # the scope is no longer optional
        ("status", [*GOOD["status"], "api-1"]),  # a run asked about is id offset limit files
        ("status", [*GOOD["status"], "api-1", "0"]),
        ("status", [*GOOD["status"], "api-1", "0", "10"]),  # ... and whether to list files
    ],
)
def test_remote_argv_refuses_unknown_verbs_and_wrong_counts(verb: str, args: list[str]) -> None:
    with pytest.raises(UsageError):
        remote_argv(verb, *args)


@settings(max_examples=100, deadline=None)
@given(value=VALUE)
def test_the_python_check_takes_an_id_exactly_when_id_pattern_does(value: str) -> None:
    ok = bool(ID_PATTERN.fullmatch(value))
    for verb, index in (("stop", 1), ("tail", 1), ("dispatch", 1)):
        args = list(GOOD[verb])
        args[index] = value
        assert python_refuses(verb, args) is not ok, (verb, value)
    assert python_refuses("status", ["~/.coord", "coord", "live", value, "0", "1", "0"]) is not ok
