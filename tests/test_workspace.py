"""Workspaces ready to work in: a setup script before the worker (and its failure before any
token), a private port range per live worktree, files carried from the main checkout (never
into git), the repo's own .coord/workspace.yml, and archive before clean.  Over sshd."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

from coordlib import Coordinator, Status
from coordlib.testing import SSHServer
from coordlib.testing.gitrepo import git

from .conftest import Setup


def _repo_config(setup: Setup, workspace: dict[str, Any]) -> Path:
    config = setup.write()
    data = config.read_text().replace(
        "test_command: 'true'",
        "test_command: 'true'\n  workspace: " + json.dumps(workspace),
    )
    config.write_text(data)
    return config


def _commit_to_main(setup: Setup, files: dict[str, str]) -> None:
    repo = setup.repo.path
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
        git("add", name, cwd=repo)
    git("commit", "-qm", "workspace files", cwd=repo)
    git("push", "-q", "origin", "main", cwd=repo)


def test_setup_runs_before_the_worker_with_ports_and_copied_files(
    setup: Setup, sshd: SSHServer
) -> None:
    _commit_to_main(setup, {".gitignore": ".setup-marker\n"})
    (setup.repo.path / ".env").write_text("SECRET_URL=postgres://local\n")  # untracked, unignored
    setup.add_ssh(sshd, "box", env={"FAKE_CLAUDE_SCENARIO": "ok"})
    config = _repo_config(setup, {
        "setup": 'echo "installed on $COORD_PORT" > .setup-marker',
        "copy": [".env"], "ports": 5, "archive": "cp .setup-marker $COORD_ARCHIVE_DIR/archived",
        "run": 'echo "serving $COORD_PORTS"; exec python3 -m http.server "$COORD_PORT" '
               "--bind 127.0.0.1",
    })  # fmt: skip

    async def go() -> Any:
        async with Coordinator.from_path(config) as c:
            a = await c.assign("box", "api", 1, title="Sees [fake:sees:.setup-marker]",
                               pipeline=False)  # fmt: skip
            return await c.wait(a.id, timeout=60)

    a = asyncio.run(go())
    assert a.status == Status.DONE, (a.failure_class, a.error)
    first, last = a.ports
    assert last - first == 4 and first >= 20000
    wt = Path(a.worktree)
    said = (wt / "fake_claude_output.txt").read_text()
    assert said == f"saw .setup-marker: installed on {first}\nports: {first}-{last}\n"
    assert a.setup is not None and a.setup["exit"] == 0 and a.setup["seconds"] >= 0
    # .env came along, and the worker's `git add -A` did not take it.
    assert (wt / ".env").read_text() == "SECRET_URL=postgres://local\n"
    committed = git("show", "--name-only", "--format=", "HEAD", cwd=wt).split()
    assert committed == ["fake_claude_output.txt"], committed
    # The range went back to the pool when the run ended.
    assert list((setup.root / "wd-box" / "ports").iterdir()) == []

    # The run script: a dev server of its own, on a range of its own, until stopped.
    async def app(stop: bool = False) -> Any:
        async with Coordinator.from_path(config) as c:
            return await c.run_app(a.id, stop=stop)

    started = asyncio.run(app())
    assert started.state == "started" and started.ports is not None, started
    assert "tmux -L" in started.attach and started.session == f"coord-app-{a.id}"
    assert asyncio.run(app()).state == "running"  # once is enough
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", started.ports[0]), timeout=1):
                break
        except OSError:
            assert time.monotonic() < deadline, (Path(a.run_dir) / "app.log").read_text()
            time.sleep(0.2)
    assert asyncio.run(app(stop=True)).state == "stopped"
    assert list((setup.root / "wd-box" / "ports").iterdir()) == []

    async def clean() -> Any:
        async with Coordinator.from_path(config) as c:
            return await c.clean(a.id, rescue=True)

    (r,) = asyncio.run(clean()).runs
    assert (r.worktree, r.archive) == ("removed", 0)
    archived = setup.root / "wd-box" / "archives" / a.id / "archived"  # $COORD_ARCHIVE_DIR
    assert archived.read_text() == f"installed on {first}\n"


def test_a_failing_setup_ends_the_run_before_any_worker_starts(
    setup: Setup, sshd: SSHServer
) -> None:
    prompts = setup.root / "prompts.jsonl"
    setup.add_ssh(sshd, "box", env={"FAKE_CLAUDE_SCENARIO": "ok",
                                    "FAKE_CLAUDE_PROMPT_LOG": str(prompts)})  # fmt: skip
    failing = "echo resolving; echo 'npm ERR! no such package' >&2; exit 3"
    config = _repo_config(setup, {"setup": failing})

    async def go() -> Any:
        async with Coordinator.from_path(config) as c:
            a = await c.assign("box", "api", 2, title="Never starts", pipeline=False)
            return await c.wait(a.id, timeout=60)

    a = asyncio.run(go())
    assert (a.status, a.failure_class) == (Status.FAILED, "setup_failed")
    assert "exited 3" in a.error and "npm ERR! no such package" in a.error
    assert not prompts.exists()  # no worker, so no model request either
    assert a.setup["exit"] == 3 and "resolving" in a.setup["tail"]
    assert list((setup.root / "wd-box" / "ports").iterdir()) == []


def test_concurrent_workers_get_ports_that_never_collide_and_are_reused(
    setup: Setup, sshd: SSHServer
) -> None:
    setup.add_ssh(sshd, "box", max_workers=3,
                  env={"FAKE_CLAUDE_SCENARIO": "serve", "FAKE_CLAUDE_DELAY": "3"})  # fmt: skip
    config = _repo_config(setup, {"ports": 3})

    async def go() -> tuple[list[Any], Any]:
        async with Coordinator.from_path(config) as c:
            both = [await c.assign("box", "api", n, title=f"Serve {n}", pipeline=False)
                    for n in (3, 4)]  # fmt: skip
            done = [await c.wait(a.id, timeout=60) for a in both]
            third = await c.assign("box", "api", 5, title="Serve again", pipeline=False)
            return done, await c.wait(third.id, timeout=60)

    (one, two), third = asyncio.run(go())
    assert one.status == two.status == third.status == Status.DONE, (one.error, two.error)
    assert one.ports != two.ports and third.ports in (one.ports, two.ports)
    served = {Path(a.worktree, "fake_claude_output.txt").read_text() for a in (one, two)}
    assert served == {f"served on {one.ports[0]}\n", f"served on {two.ports[0]}\n"}


def test_the_repos_own_workspace_file_fills_what_the_config_leaves(
    setup: Setup, sshd: SSHServer
) -> None:
    _commit_to_main(setup, {
        ".gitignore": "made-by-setup\n",
        ".coord/workspace.yml": (
            "# the maintainers' own\n"
            "setup: |\n"
            "  echo first > made-by-setup\n"
            "  echo \"second $COORD_PORTS\" >> made-by-setup\n"
            "timeout: 30\n"
        ),
    })  # fmt: skip
    setup.add_ssh(sshd, "box", env={"FAKE_CLAUDE_SCENARIO": "ok"})
    config = _repo_config(setup, {"ports": 2})  # the config wins where it speaks

    async def go() -> Any:
        async with Coordinator.from_path(config) as c:
            a = await c.assign("box", "api", 6, title="Sees [fake:sees:made-by-setup]",
                               pipeline=False)  # fmt: skip
            return await c.wait(a.id, timeout=60)

    a = asyncio.run(go())
    assert a.status == Status.DONE, a.error
    assert a.ports[1] - a.ports[0] == 1
    said = Path(a.worktree, "fake_claude_output.txt").read_text()
    assert f"saw made-by-setup: first\nsecond {a.ports[0]}-{a.ports[1]}" in said
