"""Shell completion: ``coord completion bash|zsh|fish`` prints the script, and arguments
complete from what this coordinator knows (assignment ids from the board, machines and repos
from the config).  A completion never fails out loud: no config, no board, no answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .main import coord

if TYPE_CHECKING:
    from coordlib.config import Config

__all__ = ["complete_ids", "complete_machines", "complete_repos"]

SHELLS = ("bash", "zsh", "fish")


def _config(ctx: click.Context) -> Config | None:
    from coordlib.config import find_config
    from coordlib.config_load import load_config

    try:
        path = ctx.find_root().params.get("config")
        return load_config(find_config(path))
    except Exception:  # a completion says nothing rather than fail the shell's line
        return None


def complete_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Assignment ids from the board, newest first."""
    from click.shell_completion import CompletionItem

    from coordlib.board import Board

    config = _config(ctx)
    if config is None:
        return []
    try:
        rows = Board(config.board.path).assignments()
    except Exception:
        return []
    rows.sort(key=lambda a: a.created_at, reverse=True)
    return [CompletionItem(a.id, help=f"{a.repo}#{a.issue} {a.status} on {a.machine}")
            for a in rows if a.id.startswith(incomplete)]  # fmt: skip


def complete_machines(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """The config's machines."""
    config = _config(ctx)
    return [m for m in (config.machines if config else ()) if m.startswith(incomplete)]


def complete_repos(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """The config's repos."""
    config = _config(ctx)
    return [r for r in (config.repos if config else ()) if r.startswith(incomplete)]


@coord.command(short_help="Print the shell completion script (bash, zsh, fish).")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the script that makes SHELL complete coord's verbs, options, assignment ids,
    machines and repos.  Load it from your shell's start-up file.

    \b
    Examples:
      coord completion bash >> ~/.bashrc
      coord completion zsh > "${fpath[1]}/_coord"
      coord completion fish > ~/.config/fish/completions/coord.fish
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None  # every one of SHELLS is click's
    click.echo(cls(coord, {}, "coord", "_COORD_COMPLETE").source())
