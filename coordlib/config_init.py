"""`coord init`: find the git repos to work on and write a commented coordinator.yml for them.

Every default value the template shows is read from the config dataclasses, so the file
written says what an empty file would mean.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .config import (
    NAME_CHARS,
    BoardConfig,
    ConcurrencyConfig,
    MachineConfig,
    ModelsConfig,
    RepoConfig,
    SSHConfig,
    WorkerConfig,
    field_defaults,
    format_duration,
    is_valid_name,
)
from .errors import ConfigError

__all__ = ["discover_repos", "render_init_config"]

_COMMENT_COLUMN = 29


def discover_repos(dirs: Sequence[Path]) -> list[Path]:
    """Return the git repos among `dirs` and their direct children, sorted."""
    found: set[Path] = set()
    for given in dirs:
        root = Path(given).expanduser().absolute()
        if not root.is_dir():
            raise ConfigError(
                f"{root} is not a directory", hint="pass directories that hold git repos"
            )
        if _is_git_repo(root):
            found.add(root)
            continue  # its children are its own files (or submodules), not separate repos
        try:
            children = [c for c in root.iterdir() if c.is_dir()]
        except OSError:
            continue
        found.update(c for c in children if _is_git_repo(c))
    return sorted(found)


def _is_git_repo(path: Path) -> bool:
    git = path / ".git"
    return git.is_dir() or git.is_file()  # a file: worktrees and submodules


def _default_branch(repo: Path, fallback: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), "symbolic-ref", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return fallback
    branch = done.stdout.strip()
    return branch if done.returncode == 0 and branch else fallback


def _yaml_text(value: str) -> str:
    """Return `value` as a YAML scalar that reads back as this exact string."""
    import yaml

    if re.fullmatch(r"[A-Za-z0-9_./~-]+", value) and yaml.safe_load(value) == value:
        return value
    return json.dumps(value)  # a JSON string is a valid double-quoted YAML scalar


def _noted(text: str, comment: str, column: int = _COMMENT_COLUMN) -> str:
    """Return `text` with `# comment` after it, aligned at `column` when it fits."""
    return f"{text}{' ' * max(column - len(text), 3)}# {comment}"


def _flow_list(items: Sequence[str]) -> str:
    return "[" + ", ".join(_yaml_text(item) for item in items) + "]"


def _or_list(items: Sequence[str]) -> str:
    return ", ".join(items[:-1]) + f" or {items[-1]}" if len(items) > 1 else "".join(items)


def render_init_config(repos: Sequence[Path], *, machine_name: str = "local") -> str:
    """Return a commented single-machine coordinator.yml listing `repos`."""
    if not is_valid_name(machine_name):
        raise ConfigError(
            f"{machine_name!r} is not a valid machine name", hint=f"use only {NAME_CHARS}"
        )
    named: list[tuple[str, Path]] = []
    taken: set[str] = set()
    for given in repos:
        path = Path(given).expanduser().absolute()
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", path.name).strip("-") or "repo"
        name, n = base, 1
        while name in taken or not is_valid_name(name):
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        named.append((name, path))
    example = named[0][0] if named else "api"
    repo, machine = field_defaults(RepoConfig), field_defaults(MachineConfig)
    concurrency, models = field_defaults(ConcurrencyConfig), field_defaults(ModelsConfig)
    worker, board = field_defaults(WorkerConfig), field_defaults(BoardConfig)
    ssh = field_defaults(SSHConfig)
    ladder: tuple[str, ...] = models["escalation"]
    top, bottom = ladder[-1], ladder[0]
    lines = [
        "# coordinator.yml, written by `coord init`. Only a machine's name and host are required.",
        "# Secrets never live here: a machine's env refers to the coordinator's environment,",
        "# e.g. `ANTHROPIC_API_KEY: ${ANTHROPIC_API_KEY}`, after `export ANTHROPIC_API_KEY=…`.",
        "",
        "repos:" if named else "repos: []   # add repos as `- name: api` entries",
    ]
    for name, path in named:
        branch = _default_branch(path, repo["default_branch"])
        lines += [
            f"  - name: {_yaml_text(name)}",
            f"    default_branch: {_yaml_text(branch)}",
            "    # github: owner/name       # where pull requests go; omit for the local forge",
            "    # test_command: make test  # run before a pull request is opened",
            "    # depends_on: [other-repo]",
        ]
    lines += [
        "",
        "machines:",
        f"  - name: {machine_name}",
        _noted("    host: localhost", "localhost runs workers here, without SSH"),
        _noted(f"    max_workers: {machine['max_workers']}", "workers at once on this machine"),
    ]
    if named:
        lines.append(_noted("    repo_paths:", "where each repo is checked out on this machine"))
        lines += [f"      {_yaml_text(name)}: {_yaml_text(str(path))}" for name, path in named]
    lines += [
        "  # A machine reached over SSH (its host key must be in ~/.ssh/known_hosts):",
        "  # - name: gpu-box",
        "  #   host: gpu-box.example.com",
        "  #   user: me",
        f"  #   port: {machine['port']}",
        "  #   identity_file: ~/.ssh/id_ed25519",
        "  #   max_workers: 4",
        "  #   capabilities: [gpu]",
        "  #   connect_timeout: 30s       # this machine only; default: ssh.connect_timeout",
        f"  #   repos: [{example}]    # default: all, at ~/src/<repo> unless repo_paths says",
        "  #   env:",
        "  #     ANTHROPIC_API_KEY: ${ANTHROPIC_API_KEY}",
        "",
        "ssh:",
        _noted(
            f"  connect_timeout: {format_duration(ssh['connect_timeout'])}",
            "a machine silent this long is reported `timeout`",
        ),
        _noted(
            f"  keepalive_interval: {format_duration(ssh['keepalive_interval'])}",
            "a dead connection is noticed after",
        ),
        _noted(f"  keepalive_count: {ssh['keepalive_count']}", "... this many missed keepalives"),
        "",
        "concurrency:",
        _noted(
            f"  max_workers: {concurrency['max_workers']}", "workers at once across all machines"
        ),
        f"  max_retries: {concurrency['max_retries']}",
        "",
        "models:",
        _noted(
            f"  default: {_yaml_text(models['default'])}",
            f"tier for new work: {_or_list(list(models['ids']))}",
        ),
        _noted(f"  escalation: {_flow_list(ladder)}", "each failed fix moves one tier up"),
        _noted(f"  # labels: {{hard: {top}, chore: {bottom}}}", "issue label → tier", 41),
        _noted(f"  # ids: {{{top}: {models['ids'][top]}}}", "tier → model id", 41),
        "",
        "worker:",
        _noted(
            f"  stall_timeout: {format_duration(worker['stall_timeout'])}",
            "no output for this long: the worker is stopped",
        ),
        _noted(f"  max_runtime: {format_duration(worker['max_runtime'])}", "hard limit per run"),
        _noted(
            f"  result_grace: {format_duration(worker['result_grace'])}",
            "time to exit after its final result",
        ),
        f"  allowed_tools: {_yaml_text(worker['allowed_tools'])}",
        "",
        "board:",
        _noted(f"  path: {_yaml_text(str(board['path']))}", "relative to this file"),
        "",
    ]
    return "\n".join(lines)
