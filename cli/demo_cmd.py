"""``coord demo``: several workers in parallel on a throwaway repo, shown live."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from coordlib.terminal import printable

from .main import coord, fail, run

if TYPE_CHECKING:
    from coordlib.assignment import Assignment
    from coordlib.stream import Event

_COLORS = ("cyan", "magenta", "yellow", "green", "blue", "red")

_SAYS = {
    "scripted": (
        "coord demo: the real Claude Code CLI ({claude}) runs each worker, offline, against "
        "coordlib's bundled\nscripted model: real tool calls, real commits, no account and no "
        "tokens. `coord demo --live` uses your account."
    ),
    "stand-in": (
        "coord demo: the Claude Code CLI is not installed, so the workers are coordlib's "
        "scripted stand-in\n(coordlib.testing.fake_claude): same stream-json, real files and "
        "commits, no model. Install the CLI\n(`python3 -m coordlib.testing.claude_cli install`, "
        "needs npm) to see real `claude -p` workers."
    ),
    "live": "coord demo --live: real `claude -p` workers ({claude}) on YOUR account "
    "(costs tokens).",
}


@coord.command()
@click.option("--workers", "-n", type=click.IntRange(1, 12), default=3, show_default=True)
@click.option("--dir", "root", type=click.Path(file_okay=False), help="Where to build it.")
@click.option("--live", is_flag=True, help="Use the real `claude` CLI on your own account.")
@click.option("--stand-in", "stand_in", is_flag=True, help="Use the scripted stand-in worker.")
@click.option("--tmux-socket", default="coord-demo", hidden=True)
def demo(workers: int, root: str | None, live: bool, stand_in: bool, tmux_socket: str) -> None:
    """Run several workers in parallel on a throwaway repo and show them live."""
    from coordlib.demo import find_cli

    if live and stand_in:
        raise click.UsageError("--live and --stand-in exclude each other")
    claude = None if stand_in else find_cli()
    if live and claude is None:
        fail("--live needs the Claude Code CLI: npm install -g @anthropic-ai/claude-code")
    mode = "live" if live else "scripted" if claude else "stand-in"
    if mode == "scripted":
        from coordlib.demo import scripted_model

        with scripted_model(workers) as url:
            _run_demo(workers, root, mode, claude, tmux_socket, url)
    else:
        _run_demo(workers, root, mode, claude, tmux_socket, None)


def _run_demo(workers: int, root: str | None, mode: str, claude: str | None, tmux_socket: str,
              model_url: str | None) -> None:  # fmt: skip
    from coordlib.demo import make_demo, run_demo
    from coordlib.event_view import format_event

    ws = make_demo(Path(root) if root else None, mode=mode, workers=workers,
                   tmux_socket=tmux_socket, claude=claude, model_url=model_url)  # fmt: skip
    click.echo(_SAYS[mode].format(claude=claude))
    click.echo(f"workspace {ws.root}\n")

    def label(i: int, a: Assignment) -> str:
        return click.style(f"{a.id:<14}", fg=_COLORS[i % len(_COLORS)])

    def started(assignments: list[Assignment]) -> None:
        for i, a in enumerate(assignments):
            title = printable(a.title)
            click.echo(f"{label(i, a)} started on {a.machine}: #{a.issue} {title} -> {a.branch}")

    def shown(i: int, a: Assignment, event: Event) -> None:
        line = format_event(event)
        if line is not None:
            click.echo(f"{label(i, a)} {printable(line)}")

    done = run(lambda: run_demo(ws, environ=_os_environ(), on_started=started, on_event=shown))
    click.echo("")
    for a in done:
        cost = f"${a.cost_usd:.4f}" if a.cost_usd is not None else "-"
        click.echo(
            f"{a.id:<14} {a.status:<7} {a.num_turns or 0} turns {cost:>9}  branch {a.branch}"
        )
    if mode == "scripted":
        click.echo("(the cost is what the CLI computes from the scripted model's token counts)")
    cfg = f"{_coord_command()} --config {ws.config_path}"
    click.echo(f"\nbranches:     git -C {ws.repo_path} log --oneline --all")
    click.echo(f"the board:    {cfg} status")
    click.echo(f"the trail:    {cfg} issue show demo 1   (briefing and result, as comments)")
    click.echo(f"the issues:   {cfg} issues")
    click.echo(f"tidy up:      {cfg} clean --older-than 0   (branches stay)")


def _coord_command() -> str:
    """How to run coord again: by name when PATH finds this one, else as it was started."""
    import shutil
    import sys

    me = sys.argv[0]
    if os.path.basename(me) != "coord":
        return "coord"  # started some other way (python -m, a test runner)
    found = shutil.which("coord")
    return "coord" if found and os.path.realpath(found) == os.path.realpath(me) else me


def _os_environ() -> dict[str, str]:
    return dict(os.environ)
