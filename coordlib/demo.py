"""A throwaway workspace for ``coord demo``: a small repo, a few issues, a local-only config.

The demo runs in one of three modes, and says which:

``scripted``  the real Claude Code CLI, offline, against coordlib's bundled scripted model
              (`coordlib.testing.model_server`): real tool calls, real commits, no account.
``stand-in``  no CLI installed: coordlib's scripted stand-in for ``claude -p``
              (`coordlib.testing.fake_claude`), which speaks the same stream-json.
``live``      the real CLI on the user's own account (it costs tokens).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from .testing.gitrepo import make_git_repo

if TYPE_CHECKING:
    from .assignment import Assignment
    from .stream import Event
    from .testing.model_server import Scenario

__all__ = [
    "DEMO_API_KEY_VAR",
    "DEMO_ISSUES",
    "DemoIssue",
    "DemoWorkspace",
    "can_confine",
    "find_cli",
    "make_demo",
    "run_demo",
    "scripted_env",
    "scripted_model",
]

# The scripted model accepts any key; it still travels as a secret reference, as a real one would.
DEMO_API_KEY_VAR = "COORD_DEMO_API_KEY"


@dataclass(frozen=True)
class DemoIssue:
    """One demo issue and what the scripted model does for it."""

    title: str
    body: str
    file: str
    content: str


DEMO_ISSUES: tuple[DemoIssue, ...] = (
    DemoIssue(
        "Add a greeting to the README",
        "The README should greet whoever opens the repo. Keep it to one line.\n\n"
        "Files: `README.md`",
        "README.md",
        "# demo\n\nA throwaway repository made by `coord demo`.\n\nHello, and welcome!\n",
    ),
    DemoIssue(
        "Write a CONTRIBUTING note",
        "Say in a few lines how to propose a change.\n\nFiles: `CONTRIBUTING.md`",
        "CONTRIBUTING.md",
        "# Contributing\n\nOpen an issue, then a pull request that closes it.\n",
    ),
    DemoIssue(
        "Add a changelog entry",
        "Start a changelog with an entry for this release.\n\nFiles: `CHANGELOG.md`",
        "CHANGELOG.md",
        "# Changelog\n\n## 0.1.0\n\n- First release.\n",
    ),
)

_FILES = {
    "README.md": "# demo\n\nA throwaway repository made by `coord demo`.\n",
    "greet.py": 'def greet(name):\n    return "hello " + name\n',
}


@dataclass(frozen=True)
class DemoWorkspace:
    """Where the demo lives, what it runs, and how."""

    root: Path
    config_path: Path
    repo_path: Path
    issues: tuple[DemoIssue, ...]
    mode: str  # "scripted" | "stand-in" | "live"
    claude: str | None = None  # the CLI the workers run, when it is the real one
    environ: dict[str, str] = field(default_factory=dict)  # for the Coordinator

    @property
    def live(self) -> bool:
        """Tell whether the workers use the user's own account."""
        return self.mode == "live"


def find_cli() -> str | None:
    """Return the Claude Code CLI to use: the pinned one coordlib installed, else ``claude``."""
    from .testing.claude_cli import find_claude

    pinned = find_claude()
    return str(pinned) if pinned is not None else shutil.which("claude")


def can_confine() -> bool:
    """Can this machine confine the demo's workers (bubblewrap and socat, worker.confine)?

    Without them the demo runs its workers unconfined (and says so) rather than not at all.
    """
    return shutil.which("bwrap") is not None and shutil.which("socat") is not None


def demo_issues(workers: int) -> tuple[DemoIssue, ...]:
    """The issues for `workers` workers: the three above, then numbered small tasks."""
    extra = tuple(
        DemoIssue(
            f"Demo task {i + 1}",
            f"Write a short note for task {i + 1}.\n\nFiles: `notes/task-{i + 1}.md`",
            f"notes/task-{i + 1}.md",
            f"# Task {i + 1}\n\nDone by a coord demo worker.\n",
        )
        for i in range(len(DEMO_ISSUES), workers)
    )
    return (DEMO_ISSUES + extra)[:workers]


def scenario_name(number: int) -> str:
    """The scripted model's scenario for demo issue `number` (1-based)."""
    return f"demo-{number}"


def demo_scenarios(issues: tuple[DemoIssue, ...]) -> dict[str, Scenario]:
    """What the scripted model does for each issue: look, write the file, test, commit."""
    from .testing.model_server import Scenario, Turn, text, tool

    scenarios: dict[str, Scenario] = {}
    for n, issue in enumerate(issues, 1):
        scenarios[scenario_name(n)] = Scenario(
            [
                Turn([text("STATUS: reading the repo"), tool("Bash", command="git ls-files")],
                     delay=0.6),
                Turn([text(f"STATUS: writing {issue.file}"),
                      tool("Write", file_path=issue.file, content=issue.content)], delay=0.8),
                Turn([text("STATUS: testing and committing"),
                      tool("Bash", command=f"python3 -m py_compile greet.py && git add -A && "
                                           f"git commit -q -m 'demo: {issue.title}'",
                           description="Test, then commit")], delay=0.8),
                Turn([text(f"STATUS: done\nWrote {issue.file} and committed it.")], delay=0.3),
            ]
        )  # fmt: skip
    return scenarios


def make_demo(
    root: Path | None = None,
    *,
    mode: str = "stand-in",
    workers: int = 3,
    tmux_socket: str = "coord-demo",
    claude: str | None = None,
    model_url: str | None = None,
) -> DemoWorkspace:
    """Create the demo repo (with a bare origin) and a coordinator.yml for the local machine.

    ``scripted`` needs `claude` (the CLI) and `model_url` (a running scripted model
    server, see `demo_scenarios`); ``live`` needs `claude`; ``stand-in`` needs nothing.
    The issues are not created here: the caller opens them on the demo repo's forge, so
    the demo leaves the same trail real work does.
    """
    if mode not in ("scripted", "stand-in", "live"):
        raise ValueError(f"unknown demo mode {mode!r}")
    root = Path(tempfile.mkdtemp(prefix="coord-demo-")) if root is None else root
    root.mkdir(parents=True, exist_ok=True)
    repo = make_git_repo(root / "demo", files=_FILES)
    issues = demo_issues(workers)
    machine: dict[str, object] = {
        "name": "local",
        "host": "localhost",
        "workdir": str(root / "work"),
        "tmux_socket": tmux_socket,
        "max_workers": max(workers, 1),
        "repo_paths": {"demo": str(repo.path)},
    }
    environ: dict[str, str] = {}
    if mode == "stand-in":
        fake = Path(__file__).with_name("testing") / "fake_claude.py"
        machine["claude_command"] = f"{sys.executable} {fake}"
        machine["env"] = {"FAKE_CLAUDE_SCENARIO": "slow", "FAKE_CLAUDE_DELAY": "1.5"}
    else:
        if not claude:
            raise ValueError(f"the {mode} demo needs the Claude Code CLI")
        machine["claude_command"] = claude
    if mode == "scripted":
        machine["env"] = scripted_env(model_url, root, environ)
    config = {
        "repos": [
            {
                "name": "demo",
                "default_branch": "main",
                "test_command": "python3 -m py_compile greet.py",
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
            "confine": can_confine(),
        },
        "board": {"path": str(root / "board.json")},
    }
    header = {
        "scripted": "# Workers: the real claude CLI, offline, against coordlib's scripted model.\n",
        "stand-in": "# Workers: coordlib's stand-in for claude -p (no model, no account).\n",
        "live": "# Workers: the real claude CLI on your account.\n",
    }[mode]
    config_path = root / "coordinator.yml"
    config_path.write_text(
        "# Written by `coord demo`: one local machine, one throwaway repo.\n"
        + header
        + yaml.safe_dump(config, sort_keys=False)
    )
    return DemoWorkspace(root, config_path, repo.path, issues, mode, claude, environ)


def scripted_env(model_url: str | None, root: Path, environ: dict[str, str]) -> dict[str, str]:
    """The machine's `env:` for workers against the scripted model at `model_url` (offline,
    their Claude config under `root`); the key the model accepts goes into `environ`."""
    from .testing.model_server import claude_env

    if not model_url:
        raise ValueError("the scripted demo needs the scripted model's URL")
    env = claude_env(model_url, root / "claude-home", base={})
    env["ANTHROPIC_API_KEY"] = "${" + DEMO_API_KEY_VAR + "}"  # a secret reference, as real ones
    environ[DEMO_API_KEY_VAR] = "sk-coord-demo-offline"
    return env


@contextmanager
def scripted_model(workers: int) -> Iterator[str]:
    """Run the bundled scripted model for a demo of `workers` issues; yield its URL."""
    from .testing.model_server import ModelServer

    server = ModelServer(demo_scenarios(demo_issues(workers))).start()
    try:
        yield server.url
    finally:
        server.stop()


async def run_demo(
    ws: DemoWorkspace,
    *,
    environ: Mapping[str, str] | None = None,
    on_started: Callable[[list[Assignment]], None] = lambda started: None,
    on_event: Callable[[int, Assignment, Event], None] = lambda i, a, event: None,
) -> list[Assignment]:
    """Open the demo's issues on its forge, assign one worker to each, and follow them.

    `on_started` hears the assignments once all have started; `on_event(i, a, event)` each
    event of worker i as it happens.  Return the assignments as they ended.
    """
    from .coordinator import Coordinator

    env = {**(os.environ if environ is None else environ), **ws.environ}
    async with Coordinator.from_path(ws.config_path, environ=env) as c:
        forge = c.forge("demo")
        numbers = []
        for n, issue in enumerate(ws.issues, 1):
            # The scripted model picks its script from this hidden marker in the briefing.
            marker = f"\n\n<!-- [scenario:{scenario_name(n)}] -->" if ws.mode == "scripted" else ""
            made = await forge.create_issue(issue.title, body=issue.body + marker,
                                            labels=["status:ready"])  # fmt: skip
            numbers.append(made.number)
        started = list(await asyncio.gather(*(c.assign("local", "demo", n) for n in numbers)))
        on_started(started)

        async def follow(i: int, a: Assignment) -> None:
            async for event in c.watch(a.id):
                on_event(i, a, event)

        await asyncio.gather(*(follow(i, a) for i, a in enumerate(started)))
        return [c.get(a.id) for a in started]
