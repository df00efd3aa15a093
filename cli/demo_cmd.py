"""``coord demo``: several workers in parallel on a throwaway repo, shown live."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .main import coord, fail, run

if TYPE_CHECKING:
    from coordlib.assignment import Assignment
    from coordlib.coordinator import Coordinator

_COLORS = ("cyan", "magenta", "yellow", "green", "blue", "red")


@coord.command()
@click.option("--workers", "-n", type=click.IntRange(1, 12), default=3, show_default=True)
@click.option("--dir", "root", type=click.Path(file_okay=False), help="Where to build it.")
@click.option("--live", is_flag=True, help="Use the real `claude` CLI on your own account.")
@click.option("--tmux-socket", default="coord-demo", hidden=True)
def demo(workers: int, root: str | None, live: bool, tmux_socket: str) -> None:
    """Run several workers in parallel on a throwaway repo and show them live."""
    from coordlib.coordinator import Coordinator
    from coordlib.demo import make_demo

    if live and shutil.which("claude") is None:
        fail("--live needs the Claude Code CLI: npm install -g @anthropic-ai/claude-code")
    ws = make_demo(
        Path(root) if root else None, live=live, workers=workers, tmux_socket=tmux_socket
    )
    if live:
        click.echo(
            "coord demo --live: real `claude -p` workers on YOUR account (this costs tokens)."
        )
    else:
        click.echo(
            "coord demo: scripted stand-in workers (coordlib.testing.fake_claude) that speak "
            "claude's stream-json,\nwrite a file and commit — no model, no account. "
            "`coord demo --live` uses the real CLI."
        )
    click.echo(f"workspace {ws.root}\n")

    async def go() -> list[Assignment]:
        async with Coordinator.from_path(ws.config_path) as c:
            started = await asyncio.gather(
                *(c.assign("local", "demo", n, title=t) for n, t in ws.issues)
            )
            for i, a in enumerate(started):
                label = click.style(f"{a.id:<14}", fg=_COLORS[i % len(_COLORS)])
                click.echo(f"{label} started on {a.machine}: #{a.issue} {a.title} -> {a.branch}")
            await asyncio.gather(*(_show(c, a, i) for i, a in enumerate(started)))
            return [c.get(a.id) for a in started]

    done = run(go)
    click.echo("")
    for a in done:
        cost = f"${a.cost_usd:.4f}" if a.cost_usd is not None else "-"
        click.echo(
            f"{a.id:<14} {a.status:<7} {a.num_turns or 0} turns {cost:>9}  branch {a.branch}"
        )
    click.echo(f"\nbranches in {ws.repo_path}:  git -C {ws.repo_path} log --oneline --all")
    click.echo(f"look around:  coord --config {ws.config_path} status")


async def _show(c: Coordinator, a: Assignment, i: int) -> None:
    from coordlib.stream import format_event

    label = click.style(f"{a.id:<14}", fg=_COLORS[i % len(_COLORS)])
    async for event in c.watch(a.id):
        line = format_event(event)
        if line is not None:
            click.echo(f"{label} {line}")
