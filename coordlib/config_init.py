"""`coord init`: find the git repos to work on, write a commented coordinator.yml for them,
and name the commands from there to a first dispatch.

Every default value the template shows is read from the config dataclasses, so the file
written says what an empty file would mean.  What each checkout is (its origin, its default
branch, what keeps it from taking work) is read by `coordlib.config_check`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from .config import (
    NAME_CHARS,
    BoardConfig,
    ConcurrencyConfig,
    Config,
    MachineConfig,
    ModelsConfig,
    RepoConfig,
    SSHConfig,
    WorkerConfig,
    field_defaults,
    format_duration,
    is_valid_name,
)
from .config_check import RepoCheck, check_repo
from .errors import ConfigError
from .runtime.command import join

__all__ = ["FORGES", "discover_repos", "next_commands", "render_init_config"]

FORGES = ("github", "local")
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


def render_init_config(
    repos: Sequence[Path | RepoCheck], *, machine_name: str = "local", forge: str = "local"
) -> str:
    """Return a commented single-machine coordinator.yml listing `repos`.

    A repo given as a path is looked at with `check_repo` for its default branch and origin.
    With ``forge="github"``, each repo whose origin is on github.com gets its issues and pull
    requests there (`github: owner/name`); every other repo uses the local forge.
    """
    if not is_valid_name(machine_name):
        raise ConfigError(
            f"{machine_name!r} is not a valid machine name", hint=f"use only {NAME_CHARS}"
        )
    if forge not in FORGES:
        raise ConfigError(f"{forge!r} is not a forge", hint=f"use {_or_list(list(FORGES))}")
    named: list[tuple[str, RepoCheck]] = []
    taken: set[str] = set()
    fallback = field_defaults(RepoConfig)["default_branch"]
    for given in repos:
        if isinstance(given, RepoCheck):
            checked = given
        else:
            checked = check_repo(given, fallback_branch=fallback)
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", checked.path.name).strip("-") or "repo"
        name, n = base, 1
        while name in taken or not is_valid_name(name):
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        named.append((name, checked))
    on_github = forge == "github" and any(c.github for _, c in named)
    example = named[0][0] if named else "api"
    machine = field_defaults(MachineConfig)
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
    for name, checked in named:
        lines += [
            f"  - name: {_yaml_text(name)}",
            f"    default_branch: {_yaml_text(checked.default_branch)}",
            *_forge_lines(checked.github, github=forge == "github"),
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
        lines += [f"      {_yaml_text(name)}: {_yaml_text(str(c.path))}" for name, c in named]
    lines += [
        "  # A machine reached over SSH (its host key must be in ~/.ssh/known_hosts):",
        "  # - name: gpu-box",
        "  #   host: gpu-box.example.com",
        "  #   user: me",
        "  #   port: 22",
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
    if on_github:
        from .forge import DEFAULT_GITHUB_API

        lines += [
            "github:",
            _noted(f"  api_url: {DEFAULT_GITHUB_API}", "GitHub Enterprise: https://HOST/api/v3"),
            "  # the token: GITHUB_TOKEN, GH_TOKEN or `gh auth token`; never written here",
            "",
        ]
    return "\n".join(lines)


def _forge_lines(slug: str | None, *, github: bool) -> list[str]:
    """Return a repo's forge lines: GitHub when asked and its origin is there, else local."""
    if slug is None:
        return ["    # github: owner/name       # where pull requests go; omit for the local forge"]
    if github:
        return [
            _noted("    forge: github", "issues and pull requests on GitHub"),
            _noted(f"    github: {_yaml_text(slug)}", "its origin"),
        ]
    return [_noted(f"    # github: {_yaml_text(slug)}", "its origin; uncomment to use GitHub")]


def next_commands(
    config: Config, *, repo: str | None = None, config_path: str | None = None
) -> list[tuple[str, str]]:
    """Return the three commands from a new config to a first dispatch, each with what it does.

    `repo` names the repo to show (default: the config's first); `config_path` is passed as
    ``--config`` for a file the usual lookup would not find.
    """
    coord = ["coord", *(["--config", config_path] if config_path else [])]
    remote = next((m for m in config.machines.values() if not m.is_local), None)
    if remote is not None:
        first = (join([*coord, "trust", remote.name]), f"check and record {remote.name}'s host key")
    else:
        first = (join([*coord, "status"]), "see that the machines answer")
    name = repo if repo is not None else next(iter(config.repos), None)
    if name is None:
        where = "REPO: a repo you add under `repos:`"
        target, forge = "REPO", f"open an issue ({where})"
    else:
        settings = config.repo(name)
        kind = settings.forge or ("github" if settings.github else "local")
        target = name
        forge = (
            f"open an issue on GitHub ({settings.github})"
            if kind == "github"
            else "open an issue on the local forge"
        )
    serving = [m for m in config.machines.values() if not m.repos or target in m.repos]
    machine = (serving or list(config.machines.values()))[0].name
    return [
        first,
        (join([*coord, "issue", "new", target, "--title", "Your first task"]), forge),
        (join([*coord, "assign", machine, target, "N"]), "start a worker on it (N: its number)"),
    ]
