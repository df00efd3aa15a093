"""Claims that hold across coordinators: two `coord` processes with boards (and clones) of
their own race for the same issues, and every issue is dispatched exactly once, because a
dispatch first creates its branch on origin, which refuses a branch it already has."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from coordlib.testing import make_git_repo
from coordlib.testing.gitrepo import git

from .conftest import FAKE_CLAUDE

RACE = """
import asyncio, json, sys
from coordlib import Coordinator
from coordlib.errors import CoordError

async def main():
    async with Coordinator.from_path(sys.argv[1]) as c:
        async def one(n):
            try:
                a = await c.assign("local", "api", n, pipeline=False)
                return {"issue": n, "id": a.id, "branch": a.branch}
            except CoordError as exc:
                return {"issue": n, "error": type(exc).__name__ + ": " + str(exc)}
        print(json.dumps(await asyncio.gather(*(one(n) for n in range(1, 6)))))

asyncio.run(main())
"""


def config(root: Path, name: str, clone: Path, forge: Path, socket: str) -> Path:
    path = root / f"{name}.yml"
    path.write_text(yaml.safe_dump({
        "repos": [{"name": "api", "default_branch": "main", "test_command": "true"}],
        "machines": [{"name": "local", "host": "localhost", "workdir": str(root / f"wd-{name}"),
                      "tmux_socket": socket, "max_workers": 8,
                      "claude_command": f"{sys.executable} {FAKE_CLAUDE}",
                      "env": {"FAKE_CLAUDE_SCENARIO": "ok"},
                      "repo_paths": {"api": str(clone)}}],
        "concurrency": {"max_workers": 8},
        "forge": {"root": str(forge)},  # one forge: the same issues for both
        "board": {"path": str(root / f"board-{name}.json")},  # boards of their own
    }))  # fmt: skip
    return path


def test_two_coordinators_never_dispatch_one_issue_twice(tmp_path: Path, tmux_socket: str) -> None:
    repo = make_git_repo(tmp_path / "api")
    assert repo.origin is not None
    other = tmp_path / "api-laptop2"
    git("clone", "-q", str(repo.origin), str(other))  # the other person's clone
    forge = tmp_path / "issues"
    one = config(tmp_path, "alice", repo.path, forge, tmux_socket)
    two = config(tmp_path, "bob", other, forge, tmux_socket + "b")

    make = ("import asyncio, sys\nfrom coordlib import Coordinator\n"
            "async def main():\n    async with Coordinator.from_path(sys.argv[1]) as c:\n"
            "        for n in range(5):\n"
            "            await c.forge('api').create_issue(f'Task {n}')\n"
            "asyncio.run(main())\n")  # fmt: skip
    subprocess.run([sys.executable, "-c", make, str(one)], check=True)
    racers = [subprocess.Popen([sys.executable, "-c", RACE, str(cfg)], text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
              for cfg in (one, two)]  # fmt: skip
    try:
        outs = [p.communicate(timeout=120) for p in racers]
    finally:
        for socket in (tmux_socket, tmux_socket + "b"):
            subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)
    results = [r for out, err in outs for r in json.loads(out or "[]")]
    assert len(results) == 10, outs
    started = [r for r in results if "id" in r]
    assert sorted(r["issue"] for r in started) == [1, 2, 3, 4, 5], (results, outs)
    refused = [r for r in results if "error" in r]
    assert len(refused) == 5
    assert all(r["error"].startswith("ClaimError") for r in refused), refused
    # Each winner's branch is on origin, and only there once.
    heads = git("ls-remote", "--heads", str(repo.origin))
    for r in started:
        assert heads.count(f"refs/heads/{r['branch']}") == 1
