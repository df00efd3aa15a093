"""pytest plugin: ``fake_github`` (a schema-checked fake GitHub) and ``github_forge_case``.

Enable it with ``pytest_plugins = ["tests.fakegithub.plugin"]``.  A test using
``fake_github`` fails at teardown if any request or response broke GitHub's OpenAPI
description or hit a route the fake does not serve.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordlib.forge.github import GitHubForge
from coordlib.testing.gitrepo import git
from tests.forge_case import ForgeCase

from .server import FakeGitHub

OWNER = "acme"


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    """A fake GitHub on a loopback port for one test; violations fail the test."""
    root = Path(tempfile.mkdtemp(prefix="fakegh-", dir="/tmp"))
    server = FakeGitHub(root).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    fail_on_violations(server)


def fail_on_violations(server: FakeGitHub) -> None:
    """Fail the current test if the server recorded any violation (and forget them)."""
    violations = server.take_violations()
    if violations:
        listed = "\n  ".join(violations)
        pytest.fail(f"fake GitHub recorded {len(violations)} violation(s):\n  {listed}")


def seed_repo(server: FakeGitHub, slug: str, work: Path, branch: str = "main") -> Path:
    """Create repository `slug`, push one commit on `branch` over HTTP; return the clone."""
    server.create_repo(slug, default_branch=branch)
    git("init", "-q", "-b", branch, str(work))
    (work / "README.md").write_text("# demo\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "initial commit", cwd=work)
    git("remote", "add", "origin", server.git_url(slug), cwd=work)
    git("push", "-q", "-u", "origin", branch, cwd=work)
    return work


@pytest.fixture
def github_forge_case(fake_github: FakeGitHub, tmp_path: Path) -> Iterator[ForgeCase]:
    """A GitHubForge on a fresh fake repository with one commit on main, and a clone."""
    name = f"api{secrets.token_hex(3)}"
    slug = f"{OWNER}/{name}"
    work = seed_repo(fake_github, slug, tmp_path / "work")
    forge = GitHubForge(
        name,
        slug,
        api_url=fake_github.api_url,
        token=fake_github.token,
        write_interval=0,
        retry_backoff=0,
    )
    case = ForgeCase(forge=forge, remote_url=fake_github.git_url(slug), work=work)
    yield case
    for cleanup in case.cleanup:
        cleanup()
    asyncio.run(forge.close())
