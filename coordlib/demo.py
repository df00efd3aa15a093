"""A throwaway workspace for ``coord demo``: a small repo, a few issues, a local-only config."""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from .testing.gitrepo import make_git_repo

__all__ = ["DEMO_ISSUES", "DemoWorkspace", "make_demo"]

DEMO_ISSUES: tuple[tuple[int, str], ...] = (
    (1, "Add a greeting to the README"),
    (2, "Write a CONTRIBUTING note"),
    (3, "Add a changelog entry"),
)

_FILES = {
    "README.md": "# demo\n\nA throwaway repository made by `coord demo`.\n",
    "greet.py": 'def greet(name):\n    return "hello " + name\n',
}


@dataclass(frozen=True)
class DemoWorkspace:
    """Where the demo lives and which issues it runs."""

    root: Path
    config_path: Path
    repo_path: Path
    issues: tuple[tuple[int, str], ...]
    live: bool


def make_demo(
    root: Path | None = None,
    *,
    live: bool = False,
    workers: int = 3,
    tmux_socket: str = "coord-demo",
) -> DemoWorkspace:
    """Create the demo repo (with a bare origin) and a coordinator.yml for the local machine.

    Without ``live`` the workers are the bundled scripted stand-in for ``claude -p``
    (`coordlib.testing.fake_claude`), which needs no model and no account; with it they
    are the real ``claude`` on the user's own account.
    """
    root = Path(tempfile.mkdtemp(prefix="coord-demo-")) if root is None else root
    root.mkdir(parents=True, exist_ok=True)
    repo = make_git_repo(root / "demo", files=_FILES)
    issues = tuple(
        DEMO_ISSUES[i % len(DEMO_ISSUES)] if i < len(DEMO_ISSUES) else (i + 1, f"Demo task {i + 1}")
        for i in range(workers)
    )
    fake = Path(__file__).with_name("testing") / "fake_claude.py"
    machine: dict[str, object] = {
        "name": "local",
        "host": "localhost",
        "workdir": str(root / "work"),
        "tmux_socket": tmux_socket,
        "max_workers": max(workers, 1),
        "repo_paths": {"demo": str(repo.path)},
        "claude_command": "claude" if live else f"{sys.executable} {fake}",
    }
    if not live:
        machine["env"] = {"FAKE_CLAUDE_SCENARIO": "slow", "FAKE_CLAUDE_DELAY": "1.5"}
    config = {
        "repos": [
            {
                "name": "demo",
                "default_branch": "main",
                "test_command": "python -m py_compile greet.py",
            }
        ],
        "machines": [machine],
        "models": {"default": "haiku"},
        "concurrency": {"max_workers": max(workers, 1)},
        "worker": {
            "stall_timeout": "5m",
            "max_runtime": "20m",
            "result_grace": 10,
            "poll_interval": 0.5,
        },
        "board": {"path": str(root / "board.json")},
    }
    header = "# Written by `coord demo`: one local machine, one throwaway repo.\n" + (
        "# Workers: the real claude CLI on your account.\n"
        if live
        else "# Workers: coordlib's scripted stand-in for claude -p (no model, no account).\n"
    )
    config_path = root / "coordinator.yml"
    config_path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    return DemoWorkspace(root, config_path, repo.path, issues, live)
