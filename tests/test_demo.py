"""The README's main-job command and the example script run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from coord_cli.main import coord


def _branches(repo: Path) -> list[str]:
    return subprocess.run(
        ["git", "-C", str(repo), "branch", "--list", "--format=%(refname:short)", "issue-*"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip


def test_coord_demo_takes_five_issues_to_merged(
    tmp_path: Path, tmux_socket: str, claude_cli: Path
) -> None:
    """The README's main job: real `claude -p` workers against the scripted model take five
    issues through work, test, PR, review and fix to merged, a conflict resolved on the way."""
    t0 = time.monotonic()
    out = CliRunner().invoke(coord, ["demo", "--dir", str(tmp_path / "d"),
                                     "--tmux-socket", tmux_socket])  # fmt: skip
    took = time.monotonic() - t0
    assert out.exit_code == 0, out.output
    print(f"\ncoord demo took {took:.1f} s")
    # It says plainly what it runs.
    assert "the real Claude Code CLI" in out.output and "scripted model" in out.output
    assert str(claude_cli) in out.output
    config = tmp_path / "d" / "coordinator.yml"
    got = CliRunner().invoke(coord, ["--config", str(config), "pipeline", "--json"])
    by = {p["issue"]: p for p in json.loads(got.output)["pipelines"]}
    assert sorted(by) == [1, 2, 3, 4, 5]
    assert {p["stage"] for p in by.values()} == {"merged"}, got.output
    moves = {n: [(m["from"], m["outcome"], m["to"]) for m in p["moves"]] for n, p in by.items()}
    # 1: its test failed once; the fix, one tier up, mended it.
    assert ("test", "failed", "fix") in moves[1] and by[1]["round"] == 1
    rows = json.loads(
        CliRunner()
        .invoke(coord, ["--config", str(config), "status", "--history", "--all", "--json"])
        .output
    )
    tiers = {a["id"]: a["tier"] for a in rows["assignments"]}  # fmt: skip
    [fix] = by[1]["assignments"]["fix"]
    assert tiers[fix] == "sonnet" and tiers[by[1]["assignments"]["work"][0]] == "haiku"
    # 2: a review asked for changes, a second approved.
    assert [v["outcome"] for v in by[2]["verdicts"] if v["stage"] == "review"] == [
        "request-changes", "approve"]  # fmt: skip
    # 3 and 4 conflicted: the one set aside was merged with main by a conflict-fix worker.
    conflicted = [n for n in (3, 4) if any(o == "conflict" for _, o, _ in moves[n])]
    assert len(conflicted) == 1 and by[conflicted[0]]["round"] == 1
    # The queue landed a batch: several PRs tested together and landed as one commit.
    landed: dict[str, list[int]] = {}
    for n, p in by.items():
        landed.setdefault(p["merged_sha"], []).append(n)
    assert max(len(v) for v in landed.values()) >= 2, landed
    # The default branch, as merged, passes its tests; both changelog lines are there.
    clone = tmp_path / "check"
    subprocess.run(["git", "clone", "-q", str(tmp_path / "d" / "demo.git"), str(clone)],
                   check=True)  # fmt: skip
    tests = subprocess.run([sys.executable, "-m", "unittest", "-q"], cwd=clone,
                           capture_output=True, text=True)  # fmt: skip
    assert tests.returncode == 0 and "Ran 3 tests" in tests.stderr, tests.stderr
    changelog = (clone / "CHANGELOG.md").read_text()
    assert "farewell(name) says goodbye" in changelog and "shout(name) shouts" in changelog
    # The table, and where to look; the trail of each issue ends with its landing.
    assert out.output.count(" merged ") >= 5 and "issue show demo 1" in out.output
    shown = CliRunner().invoke(coord, ["--config", str(config), "issue", "show", "demo", "1"])
    assert "**coord** dispatched" in shown.output and "merged PR #" in shown.output


def test_coord_demo_spine_runs_the_real_cli_against_the_scripted_model(
    tmp_path: Path, tmux_socket: str, claude_cli: Path
) -> None:
    out = CliRunner().invoke(coord, ["demo", "--spine", "--dir", str(tmp_path / "d"), "-n", "4",
                                     "--tmux-socket", tmux_socket])  # fmt: skip
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
