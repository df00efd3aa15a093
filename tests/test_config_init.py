"""Tests for `coord init`'s library half: finding git repos and the commented template."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from coordlib.config_init import discover_repos, render_init_config
from coordlib.config_yaml import parse_config
from coordlib.errors import ConfigError


def git_init(path: Path, branch: str) -> Path:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", branch, str(path)], check=True)
    return path


def test_discover_and_render_init_config(tmp_path: Path) -> None:
    src = tmp_path / "src"
    alpha = git_init(src / "alpha", "trunk")
    beta = git_init(src / "my beta!", "trunk")
    (src / "notes").mkdir()
    (src / "README").write_text("not a repo")
    worktree = src / "gamma"
    worktree.mkdir()
    (worktree / ".git").write_text("gitdir: /elsewhere\n")  # linked worktrees have a .git file

    found = discover_repos([src, alpha, src])
    assert found == [alpha, worktree, beta] == sorted(found)
    assert discover_repos([alpha]) == [alpha]

    text = render_init_config([alpha, beta], machine_name="laptop")
    config = parse_config(text, path=tmp_path / "coordinator.yml")
    assert list(config.repos) == ["alpha", "my-beta"]
    assert config.repo("alpha").default_branch == "trunk"
    assert config.repo("my-beta").default_branch == "trunk"
    machine = config.machine("laptop")
    assert machine.is_local
    assert machine.repo_path("alpha") == str(alpha)
    assert machine.repo_path("my-beta") == str(beta)
    assert config.board.path == tmp_path / ".coord" / "board.json"
    for knob in ("models", "stall_timeout", "identity_file", "user:", "host:"):
        assert knob in text


def test_init_config_falls_back_to_main_and_handles_no_repos(tmp_path: Path) -> None:
    not_a_repo = tmp_path / "plain"
    not_a_repo.mkdir()
    config = parse_config(render_init_config([not_a_repo]))
    assert config.repo("plain").default_branch == "main"
    empty = parse_config(render_init_config([]))
    assert empty.repos == {}
    assert list(empty.machines) == ["local"]
    with pytest.raises(ConfigError, match="not a valid machine name"):
        render_init_config([], machine_name="my laptop")


def test_init_config_ssh_example_parses_once_uncommented(tmp_path: Path) -> None:
    text = render_init_config([git_init(tmp_path / "api", "main")])
    start = text.index("  # A machine reached over SSH")
    end = text.index("\n\n", start)
    example = text[start:end].splitlines()[1:]
    uncommented = "\n".join(line.replace("  # ", "  ", 1) for line in example)
    config = parse_config(text[:start] + uncommented + text[end:])
    gpu = config.machine("gpu-box")
    assert (gpu.host, gpu.user, gpu.port, gpu.max_workers) == ("gpu-box.example.com", "me", 22, 4)
    assert gpu.identity_file is not None and gpu.identity_file.endswith("/.ssh/id_ed25519")
    assert dict(gpu.env) == {"ANTHROPIC_API_KEY": "${ANTHROPIC_API_KEY}"}


def test_discover_repos_rejects_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        discover_repos([tmp_path / "nope"])
