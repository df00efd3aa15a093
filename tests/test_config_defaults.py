"""Each config default is stated once, in its dataclass: the reader and `coord init` follow it.

The strongest check changes one field's default at a time (the `dataclasses.Field` the
reader and the template consult) and expects both to follow; a default written out again
anywhere else would not.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import coordlib
from coordlib.config import (
    BoardConfig,
    ConcurrencyConfig,
    Config,
    MachineConfig,
    ModelsConfig,
    RepoConfig,
    SSHConfig,
    WorkerConfig,
    WorkspaceConfig,
    field_defaults,
    format_duration,
    parse_duration,
)
from coordlib.config_init import render_init_config
from coordlib.config_yaml import parse_config

MINIMAL = "repos: [api]\nmachines: [{name: m, host: h}]\n"

# Where each section's dataclass sits in a parsed config with repo "api" and machine "m".
SECTIONS: dict[type[Any], Callable[[Config], Any]] = {
    RepoConfig: lambda c: c.repo("api"),
    MachineConfig: lambda c: c.machine("m"),
    SSHConfig: lambda c: c.ssh,
    ConcurrencyConfig: lambda c: c.concurrency,
    ModelsConfig: lambda c: c.models,
    WorkerConfig: lambda c: c.worker,
    BoardConfig: lambda c: c.board,
}

# A value unlike each default that is not a number or a boolean, valid where the reader
# checks it.  Numbers and booleans get one by rule (`_unlike`).
OTHER: dict[str, Any] = {
    "RepoConfig.github": "acme/other",
    "RepoConfig.forge": "local",
    "RepoConfig.default_branch": "trunk",
    "RepoConfig.build_command": "make all",
    "RepoConfig.test_command": "make check",
    "RepoConfig.url": "git@example.com:acme/api.git",
    "RepoConfig.workspace": WorkspaceConfig(setup="make deps", ports=4, copy=(".env",)),
    "MachineConfig.port": 2222,
    "MachineConfig.user": "me",
    "MachineConfig.identity_file": "/keys/id",
    "MachineConfig.known_hosts": "/keys/known_hosts",
    "MachineConfig.workdir": "/scratch/coord",
    "MachineConfig.claude_command": "npx claude",
    "MachineConfig.tmux_socket": "elsewhere",
    "MachineConfig.connect_timeout": 30.0,
    "ModelsConfig.default": "haiku",
    "ModelsConfig.escalation": ("sonnet", "opus"),
    "ModelsConfig.ids": {"haiku": "claude-h", "sonnet": "claude-s", "opus": "claude-o"},
    "WorkerConfig.allowed_tools": "Read,Grep",
    "WorkerConfig.max_turns": 7,
    "BoardConfig.path": Path("state/board.json"),
}


def _unlike(name: str, default: Any) -> Any:
    if name in OTHER:
        return OTHER[name]
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default + 90.0  # whole seconds: `coord init` writes durations such as 1h1m30s
    raise AssertionError(f"add a value unlike the default of {name} ({default!r}) to OTHER")


def _defaulted() -> list[Any]:
    """Return a param per field with a default, leaving out the empty lists and mappings."""
    params = []
    for cls in SECTIONS:
        defaults = field_defaults(cls)
        for f in dataclasses.fields(cls):
            # an absent list is an empty list: nothing to restate
            if f.name in defaults and defaults[f.name] not in ((), {}):
                params.append(pytest.param(cls, f, id=f"{cls.__name__}.{f.name}"))
    return params


def _patch(monkeypatch: pytest.MonkeyPatch, cls: type[Any], f: dataclasses.Field[Any]) -> Any:
    value = _unlike(f"{cls.__name__}.{f.name}", field_defaults(cls)[f.name])
    if f.default is dataclasses.MISSING:
        monkeypatch.setattr(f, "default_factory", lambda: value)
    else:
        monkeypatch.setattr(f, "default", value)
    return value


@pytest.mark.parametrize(("cls", "f"), _defaulted())
def test_the_reader_takes_each_default_from_its_field(
    cls: type[Any], f: dataclasses.Field[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = _patch(monkeypatch, cls, f)
    expected = tmp_path / value if isinstance(value, Path) else value
    read = getattr(SECTIONS[cls](parse_config(MINIMAL, base_dir=tmp_path)), f.name)
    assert read == expected, f"the reader states its own default for {cls.__name__}.{f.name}"


@pytest.mark.parametrize(("cls", "f"), _defaulted())
def test_init_writes_each_default_from_its_field(
    cls: type[Any], f: dataclasses.Field[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = _patch(monkeypatch, cls, f)
    expected = tmp_path / value if isinstance(value, Path) else value
    (tmp_path / "api").mkdir()  # not a git repo: its branch is the default
    text = render_init_config([tmp_path / "api"], machine_name="m")
    read = getattr(SECTIONS[cls](parse_config(text, base_dir=tmp_path)), f.name)
    assert read == expected, f"`coord init` states its own default for {cls.__name__}.{f.name}"


def test_an_empty_config_is_the_dataclass_defaults(tmp_path: Path) -> None:
    board = BoardConfig(path=tmp_path / BoardConfig().path)  # relative to the config's folder
    assert parse_config("", base_dir=tmp_path) == Config(board=board)
    config = parse_config(MINIMAL, base_dir=tmp_path)
    assert config.repo("api") == RepoConfig(name="api")
    assert config.machine("m") == MachineConfig(name="m", host="h")


def test_the_init_template_holds_the_dataclass_defaults(tmp_path: Path) -> None:
    (tmp_path / "api").mkdir()
    text = render_init_config([tmp_path / "api"], machine_name="m")
    config = parse_config(text, base_dir=tmp_path)
    assert (config.concurrency, config.models, config.worker) == (
        ConcurrencyConfig(),
        ModelsConfig(),
        WorkerConfig(),
    )
    assert config.board == BoardConfig(path=tmp_path / BoardConfig().path)
    assert config.repo("api") == RepoConfig(name="api")
    local = MachineConfig(name="m", host="localhost", repo_paths={"api": str(tmp_path / "api")})
    assert config.machine("m") == local
    assert "stall_timeout: 10m " in text and "max_runtime: 2h " in text  # as a person writes it


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(600, "10m"), (7200, "2h"), (30, "30s"), (5400, "1h30m"), (86400, "1d"), (90061, "1d1h1m1s"),
     (0, "0s"), (0.5, "0.5s"), (2.25, "2.25s")],
)  # fmt: skip
def test_format_duration_reads_back(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_config_imports_none_of_the_modules_that_use_it() -> None:
    """The model depends on nothing that reads, loads or writes it: no import circle.  (The
    values it re-exports, config_values, import nothing of the config's at all.)"""
    from .test_structure import parse

    for name, allowed in (("config.py", {"config_values"}), ("config_values.py", set())):
        imported: set[str] = set()
        for node in ast.walk(parse(Path(coordlib.__file__).with_name(name))):
            if isinstance(node, ast.ImportFrom):
                imported |= {node.module or "", *(alias.name for alias in node.names)}
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
        bad = {m for m in imported if ("config" in m or "yaml" in m) and m not in allowed}
        assert not bad, (name, sorted(imported))
