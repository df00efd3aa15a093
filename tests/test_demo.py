"""The README's main-job command and the example script run end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from coord_cli.main import coord


def _branches(repo: Path) -> list[str]:
    return subprocess.run(
        ["git", "-C", str(repo), "branch", "--list", "--format=%(refname:short)", "issue-*"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip


def test_coord_demo_runs_the_real_cli_against_the_scripted_model(
    tmp_path: Path, tmux_socket: str, claude_cli: Path
) -> None:
    out = CliRunner().invoke(
        coord, ["demo", "--dir", str(tmp_path / "d"), "-n", "4", "--tmux-socket", tmux_socket]
    )
    assert out.exit_code == 0, out.output
    # It says plainly what it runs.
    assert "the real Claude Code CLI" in out.output and "scripted model" in out.output
    assert str(claude_cli) in out.output
    assert out.output.count("[result] ok") == 4
    assert out.output.count(" done ") == 4
    assert out.output.count("[tool] Write") == 4
    assert len(_branches(tmp_path / "d" / "demo")) == 4
    # The demo leaves the same trail real work does: briefing and result on each issue.
    config = tmp_path / "d" / "coordinator.yml"
    shown = CliRunner().invoke(coord, ["--config", str(config), "issue", "show", "demo", "1"])
    assert "**coord** dispatched" in shown.output and "is done on branch" in shown.output


def test_coord_demo_runs_workers_in_parallel_and_reports(tmp_path: Path, tmux_socket: str) -> None:
    out = CliRunner().invoke(
        coord,
        ["demo", "--stand-in", "--dir", str(tmp_path / "d"), "-n", "3",
         "--tmux-socket", tmux_socket],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "scripted stand-in" in out.output  # it says plainly what it runs
    assert out.output.count("[result] ok") == 3
    assert out.output.count(" done ") == 3
    branches = subprocess.run(
        [
            "git",
            "-C",
            str(tmp_path / "d" / "demo"),
            "branch",
            "--list",
            "--format=%(refname:short)",
            "issue-*",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(branches) == 3


def test_example_script(tmp_path: Path) -> None:
    script = Path(__file__).parents[1] / "examples" / "two_workers.py"
    res = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "TMPDIR": str(tmp_path),
        },
    )
    subprocess.run(["tmux", "-L", "coord-example", "kill-server"], capture_output=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count(": done (ok)") == 2


def test_the_example_config_parses() -> None:
    from coordlib.config import resolve_env
    from coordlib.config_load import load_config

    config = load_config(Path(__file__).parents[1] / "coordinator.example.yml")
    assert list(config.machines) == ["laptop", "gpu-box", "builder"]
    assert config.machine("laptop").is_local and not config.machine("gpu-box").is_local
    env = resolve_env(
        config.machine("gpu-box").env, {"ANTHROPIC_API_KEY": "sk-x"}, machine="gpu-box"
    )
    assert env["ANTHROPIC_API_KEY"] == "sk-x"
