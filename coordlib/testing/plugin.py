"""pytest plugin: ``sshd``, ``git_repo``, ``claude_cli`` and ``model_server`` fixtures.

They are backed by real OpenSSH, git, and the pinned real Claude Code CLI talking to a
scripted model server on loopback.  Enable it with
``pytest_plugins = ["coordlib.testing.plugin"]``.  When the environment variable ``CI``
is set, a missing sshd or CLI fails the test instead of skipping it: in CI a skipped
real-component test proves nothing.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from .claude_cli import install_claude
from .gitrepo import GitRepo, make_git_repo
from .model_server import ModelServer, Scenario
from .sshd import SSHDUnavailable, SSHServer, start_sshd


def _short_dir(prefix: str) -> Path:
    # Unix socket paths are limited to 108 bytes, so keep server dirs short.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run every real-component test)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def sshd() -> Iterator[SSHServer]:
    """A real sshd on a loopback port for the whole session, with throwaway keys."""
    try:
        server = start_sshd(_short_dir("coord-sshd-"))
    except SSHDUnavailable as exc:
        _unavailable(str(exc))
        raise AssertionError("unreachable") from exc
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sshd_factory() -> Iterator[Callable[..., SSHServer]]:
    """Start extra sshd servers for one test (stopped at its end)."""
    servers: list[SSHServer] = []

    def start(**kwargs: object) -> SSHServer:
        try:
            server = start_sshd(_short_dir("coord-sshd-"), **kwargs)  # type: ignore[arg-type]
        except SSHDUnavailable as exc:
            _unavailable(str(exc))
            raise AssertionError("unreachable") from exc
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def git_repo(tmp_path: Path) -> GitRepo:
    """A git repo with one commit and a bare origin beside it."""
    return make_git_repo(tmp_path / "repo")


@pytest.fixture(scope="session")
def claude_cli() -> Path:
    """The pinned real ``claude`` executable, installed with npm on first use."""
    try:
        return install_claude()
    except RuntimeError as exc:
        _unavailable(f"Claude Code CLI unavailable: {exc}")
        raise AssertionError("unreachable") from exc


@pytest.fixture
def model_server() -> Iterator[Callable[..., ModelServer]]:
    """Start scripted model servers for one test: ``model_server(scenario, faults=[...])``."""
    servers: list[ModelServer] = []

    def start(
        scenario: Scenario | Mapping[str, Scenario] | None = None, **kwargs: Any
    ) -> ModelServer:
        server = ModelServer(scenario, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
