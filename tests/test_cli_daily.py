"""The CLI as people use it all day, next to gh and git: finding your way (--version, whole
summaries, Examples, unknown verbs, completion), reading the fleet (show, status filters and
--check), colour and terminals (a real pty where it matters), --json where scripts need it,
exit codes, and errors that say the right thing first and whole."""

from __future__ import annotations

import json
import os
import pty
import re
import secrets
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from coord_cli import main as cli_main
from coord_cli.main import coord
from coordlib._version import __version__
from coordlib.testing import make_git_repo

from .conftest import Setup

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def invoke(config: Path | None, *args: str, env: dict[str, str] | None = None) -> Result:
    argv = (["--config", str(config)] if config is not None else []) + list(args)
    result = CliRunner().invoke(coord, argv, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def coord_cli(config: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coord_cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})  # fmt: skip


def in_pty(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    """Run argv with stdout and stderr on a terminal; return what it wrote there."""
    main, sub = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sub, stderr=sub,
                            env={**os.environ, **(env or {})}, close_fds=True)  # fmt: skip
    os.close(sub)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # the other side closed: it has exited
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
    finally:
        proc.wait(timeout=10)
        os.close(main)
    return out.decode(errors="replace")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Setup, Path, dict[str, str]]]:
    """A board with a done run (api#1), a failed one (api#2) and a running one (web#3)."""
    root = tmp_path_factory.mktemp("daily")
    socket = f"cd{secrets.token_hex(4)}"
    setup = Setup(root, make_git_repo(root / "api"), socket)
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok", "FAKE_CLAUDE_DELAY": "600"})
    config = setup.write()
    ids: dict[str, str] = {}
    try:
        runs = (("done", 1, "ok"), ("failed", 2, "fail"), ("running", 3, "slow"))
        for name, n, scenario in runs:
            out = invoke(config, "assign", "local", "api", str(n), "--title", name, "--briefing",
                         f"[fake:{scenario}] {name}", "--no-pipeline", "--json")  # fmt: skip
            assert out.exit_code == 0, out.output
            ids[name] = json.loads(out.stdout)["id"]
            if name != "running":
                invoke(config, "wait", ids[name], "--timeout", "30")
            time.sleep(0.05)  # distinct creation times: newest first is well defined
        yield setup, config, ids
    finally:
        invoke(config, "stop", ids.get("running", "none"))
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)


# -- finding your way --------------------------------------------------------------------------


def test_version_flag() -> None:
    out = invoke(None, "--version")
    assert out.exit_code == 0 and out.stdout.strip() == f"coord {__version__}"


def test_every_summary_is_whole_in_help_and_every_verb_has_examples() -> None:
    helped = invoke(None, "--help")
    assert helped.exit_code == 0
    for name in cli_main._COMMAND_MODULES:
        cmd = coord.get_command(click_ctx(), name)
        assert cmd is not None
        summary = cmd.get_short_help_str(limit=500)
        assert summary and not summary.endswith("..."), name
        assert summary in " ".join(helped.stdout.split()), (name, summary)
        text = invoke(None, name, "--help").stdout
        assert "Examples:" in text, f"`coord {name} --help` has no Examples section"


def click_ctx() -> object:
    import click

    return click.Context(coord)


def test_an_unknown_verb_lists_the_verbs() -> None:
    out = invoke(None, "frobnicate")
    assert out.exit_code == 2
    assert "no command 'frobnicate'" in out.output and "Did you mean" not in out.output
    for verb in ("assign", "status", "merge", "report", "show"):
        assert verb in out.output
    near = invoke(None, "stauts")
    assert near.exit_code == 2 and "Did you mean 'status'?" in near.output


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str) -> None:
    out = invoke(None, "completion", shell)
    assert out.exit_code == 0 and "_COORD_COMPLETE" in out.stdout


def test_completion_offers_ids_machines_and_repos(
    fleet: tuple[Setup, Path, dict[str, str]],
) -> None:
    _, config, ids = fleet

    def complete(*words: str) -> list[str]:
        line = ["coord", "--config", str(config), *words]
        env = {**os.environ, "_COORD_COMPLETE": "bash_complete", "COMP_WORDS": " ".join(line),
               "COMP_CWORD": str(len(line) - 1)}  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "coord_cli"], env=env, capture_output=True,
                              text=True, timeout=30)  # fmt: skip
        return [x.split(",", 1)[1] for x in done.stdout.splitlines() if "," in x]

    assert set(ids.values()) <= set(complete("show", ""))
    assert complete("assign", "lo") == ["local"]
    assert complete("assign", "local", "") == ["api"]


# -- reading the fleet ---------------------------------------------------------------------------


def test_show_one_assignment(fleet: tuple[Setup, Path, dict[str, str]]) -> None:
    _, config, ids = fleet
    text = invoke(config, "show", ids["done"])
    assert text.exit_code == 0, text.output
    for said in (ids["done"], "done", "branch    issue-1-done", "worktree", "run dir",
                 "STATUS: done", "coord pipeline api#1"):  # fmt: skip
        assert said in text.stdout, said
    data = json.loads(invoke(config, "show", ids["failed"], "--json").stdout)
    assert data["id"] == ids["failed"] and data["state"] == "failed"
    assert any(f"coord retry {ids['failed']}" in x for x in data["next"])
    done = json.loads(invoke(config, "show", ids["done"], "--json").stdout)
    assert done["extra"]["outcome"]["commits"] == 1  # what the run left, as the machine saw it


def test_status_filters_newest_first_and_a_summary(
    fleet: tuple[Setup, Path, dict[str, str]],
) -> None:
    _, config, ids = fleet
    every = json.loads(invoke(config, "status", "--json").stdout)["assignments"]
    assert [a["id"] for a in every] == [ids["running"], ids["failed"], ids["done"]]  # newest first
    failed = json.loads(invoke(config, "status", "--json", "--state", "failed").stdout)
    assert [a["id"] for a in failed["assignments"]] == [ids["failed"]]
    one = json.loads(invoke(config, "status", "--json", "--limit", "1").stdout)
    assert [a["id"] for a in one["assignments"]] == [ids["running"]]
    recent = invoke(config, "status", "--json", "--since", "1h", "--state", "done").stdout
    assert [a["id"] for a in json.loads(recent)["assignments"]] == [ids["done"]]
    text = invoke(config, "status").stdout
    assert "3 assignments: 1 running, 1 done, 1 failed; 1 machine up" in text
    bad = invoke(config, "status", "--repo", "nosuch")
    assert bad.exit_code == 1 and "nosuch" in bad.output


def test_status_check_exits_1_on_a_failed_run_or_a_machine_down(
    fleet: tuple[Setup, Path, dict[str, str]],
) -> None:
    _, config, _ = fleet
    assert invoke(config, "status", "--check").exit_code == 1  # the failed run
    assert invoke(config, "status", "--check", "--state", "done").exit_code == 0


def test_status_colours_failures_only_where_wanted(
    fleet: tuple[Setup, Path, dict[str, str]],
) -> None:
    _, config, _ = fleet
    always = invoke(config, "--color", "always", "status").stdout
    assert "\x1b[31mfailed" in always  # red
    assert not ANSI.search(invoke(config, "status").stdout)  # piped: none
    assert not ANSI.search(invoke(config, "--color", "never", "status").stdout)
    on_tty = in_pty([sys.executable, "-m", "coord_cli", "--config", str(config), "status"])
    assert "\x1b[31mfailed" in on_tty
    no_color = in_pty([sys.executable, "-m", "coord_cli", "--config", str(config), "status"],
                      env={"NO_COLOR": "1"})  # fmt: skip
    assert "failed" in no_color and not ANSI.search(no_color)


# -- long work shows progress --------------------------------------------------------------------


def test_wait_shows_a_live_line_on_a_terminal_and_nothing_when_piped(setup: Setup) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "slow", "FAKE_CLAUDE_DELAY": "2"})
    config = setup.write()
    aid = json.loads(invoke(config, "assign", "local", "api", "5", "--title", "Slow",
                            "--no-pipeline", "--json").stdout)["id"]  # fmt: skip
    shown = in_pty([sys.executable, "-m", "coord_cli", "--config", str(config), "wait", aid])
    assert "\r\x1b[2K" in shown and "turns" in shown and f"{aid} done" in shown
    again = json.loads(invoke(config, "assign", "local", "api", "6", "--title", "Slow too",
                              "--no-pipeline", "--json").stdout)["id"]  # fmt: skip
    piped = coord_cli(config, "wait", again)
    assert piped.returncode == 0 and piped.stdout == f"{again} done\n"


def test_resume_shows_each_machine_as_it_answers_on_a_terminal(setup: Setup) -> None:
    setup.add_local("local")
    config = setup.write()
    shown = in_pty([sys.executable, "-m", "coord_cli", "--config", str(config), "resume"])
    assert "coord: local answered" in shown
    assert "coord: local" not in coord_cli(config, "resume").stderr


# -- --json and exit codes -----------------------------------------------------------------------


def test_watch_json_is_one_event_a_line(fleet: tuple[Setup, Path, dict[str, str]]) -> None:
    _, config, ids = fleet
    out = invoke(config, "watch", ids["done"], "--json")
    assert out.exit_code == 0
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert events and all(set(e) == {"id", "kind", "line", "event"} for e in events)
    assert {"tooluse", "result"} <= {e["kind"] for e in events}


def test_stop_says_a_run_already_ended_and_has_json(
    fleet: tuple[Setup, Path, dict[str, str]],
) -> None:
    _, config, ids = fleet
    out = invoke(config, "stop", ids["done"])
    assert out.exit_code == 0 and "had already ended: done" in out.stdout
    data = json.loads(invoke(config, "stop", ids["failed"], "--json").stdout)
    assert data["already_ended"] is True and data["status"] == "failed"


def test_an_unknown_id_is_a_usage_error(fleet: tuple[Setup, Path, dict[str, str]]) -> None:
    _, config, _ = fleet
    for verb in ("show", "wait", "stop", "retry"):
        assert invoke(config, verb, "api-999-none").exit_code == 2, verb


# -- errors in the right order, and whole ---------------------------------------------------------


def test_assign_names_an_unknown_machine_before_asking_the_forge(tmp_path: Path) -> None:
    setup = Setup(tmp_path, make_git_repo(tmp_path / "api"), "x")
    setup.add_local("local")
    config = setup.write()
    # A forge that cannot answer: had it been asked first, its error would show instead.
    url = "test_command: 'true'\n  url: /nonexistent/origin.git"
    text = config.read_text().replace("test_command: 'true'", url)
    config.write_text(text)
    out = invoke(config, "assign", "nosuch", "api", "1")
    assert out.exit_code == 1 and "nosuch" in out.output and "local" in out.output
    assert "git" not in out.output


def test_a_git_error_keeps_its_first_line(tmp_path: Path) -> None:
    import asyncio

    from coordlib.errors import ForgeError
    from coordlib.forge.local import LocalForge

    forge = LocalForge("api", tmp_path / "issues", remote=str(tmp_path / "nothing-here.git"))
    with pytest.raises(ForgeError) as caught:
        asyncio.run(forge.branches("issue-"))
    said = str(caught.value)
    assert "does not appear to be a git repository" in said, said
    assert "the repository exists" in said  # its second line is kept too


def test_the_demo_respects_no_color_on_a_terminal(tmp_path: Path, tmux_socket: str) -> None:
    argv = [sys.executable, "-m", "coord_cli", "demo", "--spine", "--stand-in", "-n", "1",
            "--dir", str(tmp_path / "d"), "--tmux-socket", tmux_socket]  # fmt: skip
    plain = in_pty(argv, env={"NO_COLOR": "1"}, timeout=120)
    assert "[result] ok" in plain and not ANSI.search(plain)
