"""The /coordinator slash command: shipped with the package, installed by `coord init
--slash-command`, and every `coord` command line it teaches exists as written."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from coord_cli import main as cli_main
from coord_cli.main import coord
from coordlib.errors import UsageError
from coordlib.slash import SLASH_COMMAND_PATH, install_slash_command, slash_command_text


def test_init_installs_it_once_and_never_overwrites_an_edited_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    first = runner.invoke(coord, ["init", "--slash-command"])
    assert first.exit_code == 0, first.output
    target = tmp_path / ".claude" / "commands" / "coordinator.md"
    assert target.read_text() == slash_command_text() and "installed" in first.output
    assert target.stat().st_mode & 0o777 == 0o644  # a project file, to commit
    assert not (tmp_path / "coordinator.yml").exists()  # only the command
    again = runner.invoke(coord, ["init", "--slash-command"])
    assert again.exit_code == 0 and "already up to date" in again.output
    target.write_text("my own /coordinator\n")
    kept = runner.invoke(coord, ["init", "--slash-command"])
    assert kept.exit_code != 0 and "--force" in kept.output
    assert target.read_text() == "my own /coordinator\n"
    assert runner.invoke(coord, ["init", "--slash-command", "--force"]).exit_code == 0
    assert target.read_text() == slash_command_text()
    with pytest.raises(UsageError):
        (tmp_path / SLASH_COMMAND_PATH).write_text("edited")
        install_slash_command(tmp_path)


def test_its_front_matter_is_what_claude_code_reads() -> None:
    text = slash_command_text()
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["description"] and "$ARGUMENTS" in body
    assert meta["allowed-tools"].startswith("Bash(coord:*)")  # coord, and reading, only


def test_every_coord_command_line_it_teaches_exists() -> None:
    ctx = click.Context(coord)
    taught = [t for t in re.findall(r"`(coord [^`]+)`", slash_command_text()) if "…" not in t[:8]]
    assert len(taught) > 20
    for line in taught:
        words = line.split()[1:]
        name = words[0]
        assert name in cli_main._COMMAND_MODULES, line
        command = coord.get_command(ctx, name)
        assert command is not None, line
        if isinstance(command, click.Group) and len(words) > 1 and words[1] in command.commands:
            command = command.commands[words[1]]
        known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        for flag in (w.split("=")[0] for w in words if w.startswith("--")):
            assert flag in known, f"{line}: {flag} is not an option of coord {name}"
