"""`coord demo`: five issues taken all the way to merged, by real `claude -p` workers.

A throwaway repo with a small test suite (`python3 -m unittest`) and five issues, each of
which shows part of the product:

1. *Add a farewell*: the work's test fails; a fix worker one tier up mends it.
2. *Shout the greeting*: the review asks for changes; the fix answers; a second review
   approves.
3. and 4. *Changelog entries*: both append to CHANGELOG.md, so they conflict in the merge
   queue's stack; the one set aside goes to a conflict-fix worker, which merges the default
   branch in, keeps both lines, and goes through test and review again.
5. *Document greet()*: the plain path, work → test → PR → review → ready.

The merge queue waits until every issue is ready (``merge.batch_wait``), stacks the ready
PRs on main, tests the stack once, and lands it as a batch; then the conflict's fix lands.

The workers are the real Claude Code CLI, offline, against coordlib's scripted model
(`demo_scenarios` is what it answers, by issue, stage and round), or on the user's own
account (``--live``, where the model does the work for real).  `run_demo` drives it with
`Coordinator.run` (what ``coord run --until-idle`` runs) and tells its caller what happens
through callbacks: the library prints nothing.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .testing.gitrepo import make_git_repo

if TYPE_CHECKING:
    from .assignment import Assignment
    from .pipeline.state import Pipeline
    from .runloop import LoopPass
    from .stream import Event
    from .testing.model_server import Scenario

__all__ = ["STORIES", "Story", "demo_scenarios", "make_pipeline_demo", "run_pipeline_demo"]

FILES = {
    "greet.py": 'def greet(name):\n    return "hello " + name\n',
    "test_greet.py": (
        "import unittest\n\nfrom greet import greet\n\n\nclass GreetTest(unittest.TestCase):\n"
        '    def test_greet(self):\n        self.assertEqual(greet("ada"), "hello ada")\n'
    ),
    "CHANGELOG.md": "# Changelog\n\n## Unreleased\n",
    "README.md": "# demo\n\nA throwaway repository made by `coord demo`.\n",
    # Without it, the tests' bytecode is left untracked and each run ends `uncommitted`.
    ".gitignore": "__pycache__/\n",
}
TEST_COMMAND = "python3 -m unittest -q"


@dataclass(frozen=True)
class Story:
    """One demo issue, and what it shows."""

    title: str
    body: str
    shows: str


STORIES: tuple[Story, ...] = (
    Story("Add a farewell",
          "Add `farewell(name)` beside `greet`: it returns `goodbye <name>`. With a test.\n\n"
          "Files: farewell.py, test_farewell.py",
          "a test fails; a fix one tier up mends it"),
    Story("Shout the greeting",
          "Add `shout(name)`: the greeting, shouted. With a test.\n\n"
          "Files: shout.py, test_shout.py",
          "the review asks for changes; a second review approves"),
    Story("Changelog: farewell()",
          "Note `farewell()` under Unreleased in the changelog.\n\nFiles: CHANGELOG.md",
          "conflicts with #4 in the merge queue"),
    Story("Changelog: shout()",
          "Note `shout()` under Unreleased in the changelog.\n\nFiles: CHANGELOG.md",
          "conflicts with #3 in the merge queue"),
    Story("Document greet()",
          "Say in the README how to call `greet()`.\n\nFiles: README.md",
          "the plain path"),
)  # fmt: skip


def _marker(name: str) -> str:
    """The scripted model picks its script by the last such marker in the prompt."""
    return f"<!-- [scenario:{name}] -->"


# -- what the scripted model answers --------------------------------------------------------

FAREWELL_TEST = (
    "import unittest\n\nfrom farewell import farewell\n\n\n"
    "class FarewellTest(unittest.TestCase):\n    def test_farewell(self):\n"
    '        self.assertEqual(farewell("ada"), "goodbye ada")\n'
)
SHOUT = "from greet import greet\n\n\ndef shout(name):\n    return greet(name).upper()\n"
SHOUT_TEST = (
    "import unittest\n\nfrom shout import shout\n\n\nclass ShoutTest(unittest.TestCase):\n"
    '    def test_shout(self):\n        self.assertEqual(shout("ada"), "HELLO ADA")\n'
)
# A conflict fix as a person would make it: merge main in, keep both sides' lines.
UNION_MERGE = (
    "git fetch -q origin && { git merge -q origin/main >/dev/null 2>&1 || true; } && "
    'b=$(mktemp) && t=$(mktemp) && git show :1:CHANGELOG.md > "$b" && '
    'git show :3:CHANGELOG.md > "$t" && git show :2:CHANGELOG.md > CHANGELOG.md && '
    'git merge-file --union CHANGELOG.md "$b" "$t"; rm -f "$b" "$t"; '
    "git add CHANGELOG.md && git commit -q --no-edit && " + TEST_COMMAND
)


def demo_scenarios() -> dict[str, Scenario]:
    """The scripted model's answers, by ``demo-<issue>-<stage>-<round>`` (work: round 0)."""
    from .testing.model_server import Scenario, Turn, text, tool

    def say(line: str, *blocks: Any, delay: float = 0.3) -> Turn:
        return Turn([text(line), *blocks], delay=delay)

    def bash(command: str, what: str) -> Any:
        return tool("Bash", command=command, description=what)

    def done(summary: str) -> Turn:
        return Turn([text(f"STATUS: done\n{summary}")], delay=0.2)

    def review(verdict: str, findings: tuple[str, str]) -> Scenario:
        return Scenario([
            say("STATUS: reading the change", bash("git log --oneline -3 && " + TEST_COMMAND,
                                                   "Read the change and run the tests")),
            Turn([text(f"{findings[0]}\nVERDICT: {verdict}\n{findings[1]}")], delay=0.2),
        ])  # fmt: skip

    approve = review("approve", ("The change does what the issue asks; the tests pass.",
                                 "1. Nothing blocking."))  # fmt: skip

    def changelog(line: str, n: int) -> Scenario:
        return Scenario([
            say("STATUS: adding the changelog line",
                bash(f"printf -- '- {line}\\n' >> CHANGELOG.md && "
                     f"git commit -qam 'Changelog: {line.split()[0]}'", "Append and commit")),
            done(f"Noted {line.split()[0]} in CHANGELOG.md."),
        ])  # fmt: skip

    conflict_fix = Scenario([
        say("STATUS: merging main in; keeping both changelog lines",
            bash(UNION_MERGE, "Merge origin/main, keep both sides, commit, test")),
        done("Merged main in; CHANGELOG.md keeps both entries."),
    ])  # fmt: skip
    return {
        "demo-1-work-0": Scenario([
            say("STATUS: writing farewell() and its test",
                tool("Write", file_path="farewell.py",
                     content='def farewell(name):\n    return "bye " + name\n')),
            say("STATUS: the test", tool("Write", file_path="test_farewell.py",
                                         content=FAREWELL_TEST)),
            say("STATUS: committing", bash("git add farewell.py test_farewell.py && "
                                           "git commit -qm 'Add farewell()'", "Commit")),
            done("Added farewell() and its test."),
        ]),
        "demo-1-fix-1": Scenario([
            say("STATUS: the test expects goodbye; fixing farewell()",
                bash("sed -i 's/\"bye \"/\"goodbye \"/' farewell.py && " + TEST_COMMAND +
                     " && git commit -qam 'farewell() says goodbye'", "Fix, test, commit")),
            done("farewell() now says goodbye; the tests pass."),
        ]),
        "demo-1-review-1": approve,
        "demo-2-work-0": Scenario([
            say("STATUS: writing shout() and its test",
                tool("Write", file_path="shout.py", content=SHOUT)),
            say("STATUS: the test", tool("Write", file_path="test_shout.py", content=SHOUT_TEST)),
            say("STATUS: testing and committing",
                bash(TEST_COMMAND + " && git add shout.py test_shout.py && "
                     "git commit -qm 'Add shout()'", "Test and commit")),
            done("Added shout() and its test."),
        ]),
        "demo-2-review-0": review("request-changes", (
            "A shout without an exclamation mark is no shout.",
            "1. shout.py:5 end the shout with \"!\".\n2. test_shout.py:9 expect \"HELLO ADA!\".",
        )),
        "demo-2-fix-1": Scenario([
            say("STATUS: adding the exclamation mark, as the review asks",
                bash("sed -i 's/upper()$/upper() + \"!\"/' shout.py && "
                     "sed -i 's/\"HELLO ADA\"/\"HELLO ADA!\"/' test_shout.py && " + TEST_COMMAND +
                     " && git commit -qam 'A shout ends with !'", "Fix, test, commit")),
            done("shout() ends with '!' and its test says so."),
        ]),
        "demo-2-review-1": approve,
        "demo-3-work-0": changelog("farewell(name) says goodbye", 3),
        "demo-4-work-0": changelog("shout(name) shouts the greeting", 4),
        **{f"demo-{n}-review-0": approve for n in (3, 4, 5)},
        # Whichever of 3 and 4 lands second no longer merges: its fix merges main in.
        **{f"demo-{n}-fix-1": conflict_fix for n in (3, 4)},
        **{f"demo-{n}-review-1": approve for n in (3, 4)},
        "demo-5-work-0": Scenario([
            say("STATUS: documenting greet()",
                bash("printf '\\n## Usage\\n\\n    from greet import greet\\n    "
                     "greet(\"ada\")  # hello ada\\n' >> README.md && "
                     "git commit -qam 'Document greet()'", "Document and commit")),
            done("The README says how to call greet()."),
        ]),
    }  # fmt: skip


# -- the workspace ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineDemo:
    """Where the demo lives and what runs its workers."""

    root: Path
    config_path: Path
    repo_path: Path
    origin: Path
    mode: str  # "scripted" | "live"
    claude: str
    environ: dict[str, str]


def make_pipeline_demo(
    root: Path | None = None,
    *,
    mode: str = "scripted",
    claude: str,
    model_url: str | None = None,
    tmux_socket: str = "coord-demo",
) -> PipelineDemo:
    """Create the demo repo (with a bare origin), its briefing templates and its config."""
    from .demo import can_confine, scripted_env

    if mode not in ("scripted", "live"):
        raise ValueError(f"unknown demo mode {mode!r}")
    root = Path(tempfile.mkdtemp(prefix="coord-demo-")) if root is None else root
    root.mkdir(parents=True, exist_ok=True)
    repo = make_git_repo(root / "demo", files=FILES)
    assert repo.origin is not None
    machine: dict[str, Any] = {
        "name": "local", "host": "localhost", "workdir": str(root / "work"),
        "tmux_socket": tmux_socket, "max_workers": len(STORIES),
        "repo_paths": {"demo": str(repo.path)}, "claude_command": claude,
    }  # fmt: skip
    environ: dict[str, str] = {}
    config: dict[str, Any] = {
        "repos": [{"name": "demo", "default_branch": "main", "url": str(repo.origin),
                   "test_command": TEST_COMMAND}],
        "machines": [machine],
        "models": {"default": "haiku"},
        "concurrency": {"max_workers": len(STORIES)},
        "worker": {"stall_timeout": "5m", "max_runtime": "20m", "result_grace": 5,
                   "poll_interval": 0.2, "confine": can_confine()},
        "merge": {"batch_size": len(STORIES), "batch_wait": True},
        "board": {"path": str(root / "board.json")},
    }  # fmt: skip
    if mode == "scripted":
        machine["env"] = scripted_env(model_url, root, environ)
        config["briefings"] = {"dir": str(_marked_briefings(root / "briefings"))}
    config_path = root / "coordinator.yml"
    config_path.write_text(
        "# Written by `coord demo`: one local machine, one throwaway repo, the pipeline.\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    return PipelineDemo(root, config_path, repo.path, repo.origin, mode, claude, environ)


def _marked_briefings(where: Path) -> Path:
    """The shipped review, fix and conflict briefings, each ending with the scripted model's
    marker for its issue, stage and round (the work's marker is in the issue's body)."""
    where.mkdir(parents=True, exist_ok=True)
    shipped = resources.files("coordlib") / "briefings"
    mark = _marker("demo-{{ issue.number }}-{{ stage }}-{{ round }}")
    for name in ("review", "fix", "conflict"):
        text = (shipped / f"{name}.md.j2").read_text(encoding="utf-8")
        (where / f"{name}.md.j2").write_text(f"{text.rstrip()}\n\n{mark}\n", encoding="utf-8")
    return where


# -- running it -------------------------------------------------------------------------------


async def run_pipeline_demo(
    ws: PipelineDemo,
    *,
    environ: Mapping[str, str] | None = None,
    on_pass: Callable[[LoopPass], None] = lambda turn: None,
    on_event: Callable[[Assignment, Event], None] = lambda a, event: None,
) -> list[Pipeline]:
    """Open the five issues, assign each (it enters the pipeline), and run the loop until
    nothing runs or waits.  `on_pass` hears every pass (its moves and merges), `on_event`
    each worker's events as they happen.  Return the issues' pipelines as they ended."""
    from .coordinator import Coordinator

    env = {**(os.environ if environ is None else environ), **ws.environ}
    async with Coordinator.from_path(ws.config_path, environ=env) as c:
        forge = c.forge("demo")
        numbers = []
        for n, story in enumerate(STORIES, 1):
            marker = f"\n\n{_marker(f'demo-{n}-work-0')}" if ws.mode == "scripted" else ""
            made = await forge.create_issue(story.title, body=story.body + marker,
                                            labels=["status:ready"])  # fmt: skip
            numbers.append(made.number)
        watching: set[str] = set()
        watchers: list[asyncio.Task[None]] = []

        async def follow(a: Assignment) -> None:
            async for event in c.watch(a.id):
                on_event(a, event)

        def watch_new(ids: list[str]) -> None:
            for aid in ids:
                if aid not in watching:
                    watching.add(aid)
                    watchers.append(asyncio.create_task(follow(c.get(aid))))

        started = await asyncio.gather(*(c.assign("local", "demo", n) for n in numbers))
        watch_new([a.id for a in started])

        def heard(turn: LoopPass) -> None:
            watch_new(turn.report.dispatched)
            on_pass(turn)

        try:
            await c.run(interval=30, until_idle=True, on_pass=heard)
        finally:
            for t in watchers:
                t.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        by_issue = {p.issue: p for p in c.pipelines() if p.repo == "demo"}
        return [by_issue[n] for n in numbers if n in by_issue]
