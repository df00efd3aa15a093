"""Shared fixtures: real sshd and git from coordlib.testing, configs, isolated tmux sockets."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

import coordlib.testing
from coordlib.testing import GitRepo, SSHServer, make_git_repo

pytest_plugins = ["coordlib.testing.plugin", "tests.fakegithub.plugin"]


@pytest.fixture(autouse=True, scope="session")
def _hypothesis_regex_compiled_early() -> None:
    """Import hypothesis's regex module before any test runs.

    Debian 12's Python (3.11.2) raises "SystemError: AST constructor recursion depth mismatch"
    when code is compiled while the recursion limit differs from when the compiler started
    (fixed in later 3.11 releases); hypothesis raises the limit while it runs a test, and
    imports this module (compiled through pytest's assertion rewriting) the first time a
    `from_regex` strategy is drawn.  CI met it once; importing it up front avoids it.
    """
    import hypothesis.strategies._internal.regex  # noqa: F401


FAKE_CLAUDE = Path(coordlib.testing.__file__).with_name("fake_claude.py")


@pytest.fixture(autouse=True, scope="session")
def _config_cache_of_our_own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the config parse cache of the suite's thousands of configs out of ~/.cache."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture
def tmux_socket() -> Iterator[str]:
    """A tmux socket name of this test's own; its server is killed afterwards."""
    name = f"ct{secrets.token_hex(4)}"
    yield name
    subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True, check=False)


def ssh_machine(
    server: SSHServer, name: str, workdir: Path, socket: str, **extra: Any
) -> dict[str, Any]:
    """Describe a machine reached through server, as coordinator.yml says it."""
    return {
        "name": name,
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "identity_file": str(server.client_key),
        "known_hosts": str(server.known_hosts),
        "workdir": str(workdir),
        "tmux_socket": socket,
        "claude_command": f"{sys.executable} {FAKE_CLAUDE}",
        **extra,
    }


def local_machine(name: str, workdir: Path, socket: str, **extra: Any) -> dict[str, Any]:
    """Describe the local machine, as coordinator.yml says it."""
    return {
        "name": name,
        "host": "localhost",
        "workdir": str(workdir),
        "tmux_socket": socket,
        "claude_command": f"{sys.executable} {FAKE_CLAUDE}",
        **extra,
    }


class Setup:
    """A test's config, repo and paths; `write()` puts coordinator.yml on disk."""

    def __init__(self, root: Path, repo: GitRepo, socket: str) -> None:
        self.root = root
        self.repo = repo
        self.socket = socket
        self.machines: list[dict[str, Any]] = []
        self.worker: dict[str, Any] = {"result_grace": 2, "poll_interval": 0.2, "stall_timeout": 30}
        self.extra: dict[str, Any] = {}

    @property
    def config_path(self) -> Path:
        return self.root / "coordinator.yml"

    def add_local(self, name: str = "local", **extra: Any) -> dict[str, Any]:
        m = local_machine(name, self.root / f"wd-{name}", self.socket, **extra)
        m.setdefault("repo_paths", {"api": str(self.repo.path)})
        self.machines.append(m)
        return m

    def add_ssh(self, server: SSHServer, name: str = "remote", **extra: Any) -> dict[str, Any]:
        m = ssh_machine(server, name, self.root / f"wd-{name}", self.socket, **extra)
        m.setdefault("repo_paths", {"api": str(self.repo.path)})
        self.machines.append(m)
        return m

    def write(self) -> Path:
        data = {
            "repos": [{"name": "api", "default_branch": "main", "test_command": "true"}],
            "machines": self.machines,
            "worker": self.worker,
            **self.extra,
        }
        self.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
        return self.config_path

    def coordinator(self, **kwargs: Any) -> Any:
        from coordlib import Coordinator

        return Coordinator.from_path(self.write(), **kwargs)


@pytest.fixture
def setup(tmp_path: Path, tmux_socket: str) -> Setup:
    """A fresh repo with origin, and a config builder around it."""
    repo = make_git_repo(tmp_path / "api")
    return Setup(tmp_path, repo, tmux_socket)


@pytest.fixture
def run_coord() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real `coord` CLI in a subprocess."""

    def run(
        *args: str,
        config: Path,
        timeout: float = 120,
        env: dict[str, str] | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "coord_cli", "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            check=check,
        )

    return run


T = TypeVar("T")
Run = Callable[[Awaitable[T]], T]


@pytest.fixture
def arun() -> Iterator[Run[Any]]:
    """Run coroutines on one event loop kept for the whole test (a forge's clients stay
    bound to the loop that made them)."""
    loop = asyncio.new_event_loop()
    try:
        yield loop.run_until_complete
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
