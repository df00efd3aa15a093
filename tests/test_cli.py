"""The ``coord`` CLI through click's CliRunner, against the local machine with fake workers.

These pin the JSON contracts scripts rely on, the exit codes, and the shape of the
human-readable lines that matter (``watch``).
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from coord_cli.main import coord
from coordlib._version import __version__
from coordlib.testing import make_git_repo

from .conftest import Setup

STATUSES = {"pending", "running", "done", "failed", "stopped", "lost"}
MACHINE_KEYS = {"name", "reachable", "state", "seen_at", "error", "running", "stale", "disk"}
ASSIGNMENT_KEYS = {
    "id", "machine", "repo", "issue", "branch", "model", "status", "cost_usd", "num_turns",
    "session_id", "exit_reason", "failure_class", "reachable",
}  # fmt: skip
ASSIGN_KEYS = {"id", "machine", "repo", "issue", "branch", "model", "status"}


def invoke(config: Path | None, *args: str, input: str | None = None) -> Result:
    """Run ``coord [--config config] args`` in-process; a crash is a test failure."""
    argv = (["--config", str(config)] if config is not None else []) + list(args)
    result = CliRunner().invoke(coord, argv, input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def ok(config: Path | None, *args: str, input: str | None = None) -> Result:
    """Like `invoke`, but the command must exit 0."""
    result = invoke(config, *args, input=input)
    assert result.exit_code == 0, (args, result.output)
    return result


def status_json(config: Path, *args: str) -> dict[str, object]:
    data = json.loads(ok(config, "status", "--json", *args).stdout)
    assert set(data) == {"confined", "machines", "assignments", "overlaps"}
    assert data["confined"] is True  # worker.confine, on by default
    for m in data["machines"]:
        assert set(m) == MACHINE_KEYS, m
    for a in data["assignments"]:
        assert set(a) >= ASSIGNMENT_KEYS, sorted(ASSIGNMENT_KEYS - set(a))
        assert a["status"] in STATUSES
    return data


def row(config: Path, aid: str) -> dict[str, object]:
    rows = status_json(config)["assignments"]
    assert isinstance(rows, list)
    return next(a for a in rows if a["id"] == aid)


# ------------------------------------------------------------------ one finished `ok` run


@dataclass
class OkRun:
    setup: Setup
    config: Path
    assign: Result
    wait: Result
    id: str


@pytest.fixture(scope="module")
def ok_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OkRun]:
    """`coord assign ... --json` then `coord wait`, once for the tests that read the result."""
    root = tmp_path_factory.mktemp("cli")
    socket = f"ct{secrets.token_hex(4)}"
    setup = Setup(root, make_git_repo(root / "api"), socket)
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"})
    config = setup.write()
    try:
        assigned = ok(config, "assign", "local", "api", "12", "--title", "Add a greeting", "--json")
        aid = json.loads(assigned.stdout)["id"]
        waited = invoke(config, "wait", aid, "--timeout", "30")
        yield OkRun(setup, config, assigned, waited, aid)
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)


def test_assign_json_contract(ok_run: OkRun) -> None:
    data = json.loads(ok_run.assign.stdout)  # exactly one JSON document
    assert set(data) >= ASSIGN_KEYS
    assert data["id"] == ok_run.id
    assert data["machine"] == "local"
    assert data["repo"] == "api"
    assert data["issue"] == 12
    assert data["branch"] == "issue-12-add-a-greeting"
    assert data["model"].startswith("claude-")
    assert data["status"] == "running"
    assert "argv" not in data  # only a dry run shows the command


def test_wait_exits_0_when_done(ok_run: OkRun) -> None:
    assert ok_run.wait.exit_code == 0, ok_run.wait.output
    assert ok_run.wait.stdout.strip() == f"{ok_run.id} done"


def test_status_json_contract(ok_run: OkRun) -> None:
    data = status_json(ok_run.config)
    [machine] = data["machines"]
    assert isinstance(machine.pop("seen_at"), float)  # epoch seconds of the answer just received
    # The workdir's disk use and the room left, as measured in the background (or not yet).
    disk = machine.pop("disk")
    assert disk is None or set(disk) == {"used_kb", "free_kb", "at"}
    assert machine == {
        "name": "local",
        "reachable": True,
        "state": "up",
        "error": None,
        "running": 0,
        "stale": False,
    }
    a = row(ok_run.config, ok_run.id)
    assert a["status"] == "done"
    assert a["failure_class"] is None
    assert a["exit_reason"] in ("exited", "result_grace_kill")
    assert isinstance(a["cost_usd"], float) and a["cost_usd"] > 0
    assert isinstance(a["num_turns"], int) and a["num_turns"] > 0
    assert isinstance(a["session_id"], str) and a["session_id"]
    assert (a["machine"], a["repo"], a["issue"]) == ("local", "api", 12)
    assert a["branch"] == "issue-12-add-a-greeting"


def test_status_for_one_machine_and_as_text(ok_run: OkRun) -> None:
    data = status_json(ok_run.config, "--machine", "local")
    assert [m["name"] for m in data["machines"]] == ["local"]
    assert [a["id"] for a in data["assignments"]] == [ok_run.id]

    text = ok(ok_run.config, "status").stdout
    assert re.search(r"^local\s+up\s+0 running(; disk \S+ used by coord, \S+ free)?$", text,
                     re.M), text  # fmt: skip
    assert re.search(rf"^{re.escape(ok_run.id)}\s+local\s+api#12\s+done\b", text, re.M), text


def test_status_unknown_machine_suggests_the_nearest(ok_run: OkRun) -> None:
    result = invoke(ok_run.config, "status", "--machine", "locl")
    assert result.exit_code == 1
    assert "no machine named 'locl'" in result.stderr
    assert "did you mean 'local'?" in result.stderr
    assert result.stdout == ""


def test_watch_shows_the_filtered_view_and_the_outcome(ok_run: OkRun) -> None:
    result = ok(ok_run.config, "watch", ok_run.id)
    lines = result.stdout.splitlines()
    assert any(ln.startswith("[tool] Write ") for ln in lines), lines
    assert any(ln.startswith("[tool] Bash ") for ln in lines), lines
    assert any(ln.startswith("[status] ") for ln in lines), lines
    assert any(re.match(r"\[result\] ok\b.*\bturns?\b", ln) for ln in lines), lines
    assert lines[-1] == f"-- {ok_run.id} done"
    # The filtered view hides the assistant's text and the tool results.
    assert not any(ln.startswith(("[text]", "[tool-result]")) for ln in lines)

    everything = ok(ok_run.config, "watch", ok_run.id, "--all").stdout.splitlines()
    assert len(everything) > len(lines)
    assert set(lines) <= set(everything)
    assert any(ln.startswith("[tool-result]") for ln in everything), everything


def test_log_prints_the_raw_json_lines(ok_run: OkRun) -> None:
    result = ok(ok_run.config, "log", ok_run.id)
    assert result.stdout_bytes.endswith(b"\n")
    events = [json.loads(line) for line in result.stdout_bytes.splitlines()]
    assert events[0]["type"] == "system" and events[0]["subtype"] == "init"
    assert events[-1]["type"] == "result"
    assert any(e["type"] == "assistant" for e in events)
    # Byte for byte what the worker wrote.
    run_dir = ok_run.setup.root / "wd-local" / "runs" / ok_run.id
    assert result.stdout_bytes == (run_dir / "events.jsonl").read_bytes()

    stderr = ok(ok_run.config, "log", ok_run.id, "--stderr")
    assert stderr.stdout_bytes == (run_dir / "stderr.log").read_bytes()


def test_resume_on_a_clean_board_has_nothing_to_repair(ok_run: OkRun) -> None:
    assert ok(ok_run.config, "resume").stdout.strip() == (
        "board matches the machines; nothing to repair"
    )
    assert json.loads(ok(ok_run.config, "resume", "--json").stdout) == {
        "changed": [],
        "unreachable": [],
        "orphans": {},
        "still_running": [],
        "continued": [],
        "restored": [],
        "skipped": [],
        "posted": [],
    }


@pytest.mark.parametrize("command", ["watch", "wait", "log", "stop", "clean", "show"])
def test_unknown_assignment_id(ok_run: OkRun, command: str) -> None:
    result = invoke(ok_run.config, command, "api-999-zzzz")
    assert result.exit_code == 2  # usage: not "ended, not done" (wait's 1)
    assert "api-999-zzzz" in result.stderr
    assert result.stderr.startswith("coord: error: ")


# ------------------------------------------------------------------ runs of their own


def test_assign_dry_run_starts_nothing(setup: Setup) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"})
    config = setup.write()
    result = ok(config, "assign", "local", "api", "3", "--title", "Try it", "--dry-run", "--json")
    data = json.loads(result.stdout)
    assert ASSIGN_KEYS | {"argv"} <= set(data)
    assert data["branch"] == "issue-3-try-it"
    assert data["status"] == "pending"
    argv = data["argv"]
    assert isinstance(argv, list) and all(isinstance(w, str) for w in argv)
    assert "-p" in argv and "--model" in argv and data["model"] in argv
    # Nothing on the machine, nothing on the board.
    assert not (setup.root / "wd-local").exists()
    assert status_json(config)["assignments"] == []
    assert "issue-3-try-it" not in setup.repo.branches()

    text = ok(config, "assign", "local", "api", "3", "--title", "Try it", "--dry-run").stdout
    assert text.startswith("would start api-3-")
    assert not (setup.root / "wd-local").exists()


def test_watch_follows_a_live_run_to_its_end(setup: Setup) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "slow", "FAKE_CLAUDE_DELAY": "1"})
    config = setup.write()
    aid = json.loads(ok(config, "assign", "local", "api", "21", "-t", "t21", "--json").stdout)["id"]
    assert row(config, aid)["status"] == "running"
    lines = ok(config, "watch", aid).stdout.splitlines()
    assert lines[0].startswith("[init] ")
    assert any(ln.startswith("[tool] Write ") for ln in lines), lines
    assert any(re.match(r"\[result\] ok\b", ln) for ln in lines), lines
    assert lines[-1] == f"-- {aid} done"
    # watch recorded the outcome: the board says done without another wait.
    assert row(config, aid)["status"] == "done"
    followed = ok(config, "log", aid, "--follow").stdout_bytes.splitlines()
    assert json.loads(followed[-1])["type"] == "result"


def test_assign_unknown_repo_suggests_the_nearest(setup: Setup) -> None:
    setup.add_local("local")
    result = invoke(setup.write(), "assign", "local", "apx", "1", "--json")
    assert result.exit_code == 1
    assert "did you mean 'api'?" in result.stderr
    assert result.stdout == ""


def test_wait_exits_1_when_the_worker_fails(setup: Setup) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "fail"})
    config = setup.write()
    aid = json.loads(ok(config, "assign", "local", "api", "5", "-t", "t5", "--json").stdout)["id"]
    waited = invoke(config, "wait", aid, "--timeout", "30")
    assert waited.exit_code == 1, waited.output
    assert waited.stdout.startswith(f"{aid} failed")

    again = invoke(config, "wait", aid, "--json")
    assert again.exit_code == 1
    data = json.loads(again.stdout)
    assert data["id"] == aid and data["status"] == "failed" and data["failure_class"]

    a = row(config, aid)
    assert a["status"] == "failed" and a["failure_class"] and a["exit_reason"] == "exited"
    assert "simulated crash" in ok(config, "log", aid, "--stderr").stdout


def test_wait_times_out_with_2_and_stop_stops(setup: Setup) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "stall"})
    config = setup.write()
    aid = json.loads(ok(config, "assign", "local", "api", "9", "-t", "t9", "--json").stdout)["id"]
    waited = invoke(config, "wait", aid, "--timeout", "0.5")
    assert waited.exit_code == 2, waited.output
    assert aid in waited.stderr and "still running" in waited.stderr
    assert waited.stdout == ""
    assert row(config, aid)["status"] == "running"

    stopped = ok(config, "stop", aid)
    assert stopped.stdout.strip() == f"{aid} stopped"
    a = row(config, aid)
    assert a["status"] == "stopped" and a["exit_reason"] == "stopped"
    sessions = subprocess.run(["tmux", "-L", setup.socket, "ls"], capture_output=True, text=True)
    assert f"coord-{aid}" not in sessions.stdout
    # Stopping a stopped run is a no-op that says so.
    again = ok(config, "stop", aid).stdout.strip()
    assert again.startswith(f"{aid} had already ended: stopped") and "nothing to stop" in again


# ------------------------------------------------------------------ setting up


def test_version() -> None:
    assert ok(None, "version").stdout == f"coord {__version__}\n"


def test_config_as_yaml_and_json(setup: Setup) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok", "SECRET_TOKEN": "${MY_TOKEN}"})
    config = setup.write()
    text = ok(config, "config").stdout
    assert text.startswith(f"# {config}\n")
    assert "localhost" in text

    data = json.loads(ok(config, "config", "--json").stdout)
    assert "machines" in data and "repos" in data
    local = data["machines"]["local"]
    assert local["host"] == "localhost"
    assert local["repo_paths"] == {"api": str(setup.repo.path)}
    assert local["env"]["SECRET_TOKEN"] == "${MY_TOKEN}"  # a reference, never resolved
    assert data["repos"]["api"]["default_branch"] == "main"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (
            "repos:\n  - name: api\nmachines:\n  - name: a\n   host: b\nworker: {}\n",
            5,
            "YAML syntax error",
        ),
        ("machines:\n  - name: a\n    hots: x\n", 3, "did you mean 'host'?"),
    ],
    ids=["yaml-syntax", "unknown-key"],
)
def test_broken_config_names_file_and_line(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    path = tmp_path / "coordinator.yml"
    path.write_text(text)
    for args in (["config"], ["config", "--json"], ["status", "--json"]):
        result = invoke(path, *args)
        assert result.exit_code == 1, result.output
        assert f"{path}:{line}: " in result.stderr
        assert words in result.stderr
        assert result.stdout == ""


def test_missing_config_file(tmp_path: Path) -> None:
    result = invoke(tmp_path / "nope.yml", "config")
    assert result.exit_code == 1
    assert "nope.yml does not exist" in result.stderr


def test_init_writes_a_config_that_loads(tmp_path: Path) -> None:
    search = tmp_path / "src"
    repo = make_git_repo(search / "widget")
    (search / "not-a-repo").mkdir()
    out = tmp_path / "conf" / "coordinator.yml"
    out.parent.mkdir()

    result = ok(None, "init", "--yes", "--search", str(search), "--path", str(out))
    assert f"wrote {out} with 1 repo(s)" in result.stdout
    data = json.loads(ok(out, "config", "--json").stdout)
    assert list(data["repos"]) == ["widget"]
    assert data["machines"]["local"]["host"] == "localhost"
    assert data["machines"]["local"]["repo_paths"] == {"widget": str(repo.path)}

    written = out.read_text()
    again = invoke(None, "init", "--yes", "--search", str(search), "--path", str(out))
    assert again.exit_code == 1
    assert "already exists" in again.stderr and "--force" in again.stderr
    assert out.read_text() == written

    forced = ok(None, "init", "--yes", "--force", "--search", str(tmp_path), "--path", str(out))
    assert "with 0 repo(s)" in forced.stdout
    assert json.loads(ok(out, "config", "--json").stdout)["repos"] == {}


def test_init_asks_which_repos(tmp_path: Path) -> None:
    make_git_repo(tmp_path / "src" / "alpha", with_origin=False)
    make_git_repo(tmp_path / "src" / "beta", with_origin=False)
    out = tmp_path / "coordinator.yml"
    result = ok(None, "init", "--search", str(tmp_path / "src"), "--path", str(out), input="2\n")
    assert "1. " in result.stdout and "2. " in result.stdout
    assert list(json.loads(ok(out, "config", "--json").stdout)["repos"]) == ["beta"]


def test_commands_load_on_use_and_the_map_names_each_module() -> None:
    import importlib

    from coord_cli import main as cli_main

    for module in set(cli_main._COMMAND_MODULES.values()):
        importlib.import_module(f"coord_cli.{module}")
    registered = {
        name: command.callback.__module__
        for name, command in coord.commands.items()
        if command.callback is not None
    }
    assert registered == {n: f"coord_cli.{m}" for n, m in cli_main._COMMAND_MODULES.items()}
    # A command imports its own module only.
    code = (
        "import sys; from click.testing import CliRunner; from coord_cli.main import coord; "
        "CliRunner().invoke(coord, ['version']); "
        "print(sorted(m for m in sys.modules if m.startswith('coord_cli.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    # (cli.output is the one shared way of printing.)
    assert (
        done.stdout.strip() == "['coord_cli.main', 'coord_cli.output', 'coord_cli.setup_cmds']"
    ), done.stderr


def test_a_mistyped_command_suggests_the_nearest() -> None:
    # In a fresh process, where no command module is loaded yet.
    done = subprocess.run(
        [sys.executable, "-m", "coord_cli", "stauts"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "Did you mean 'status'?" in done.stderr
