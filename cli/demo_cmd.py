"""``coord demo``: issues taken all the way to merged on a throwaway repo, shown live
(``--spine``: several workers in parallel, the run protocol alone)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from coordlib.terminal import printable

from .main import coord, fail, run
from .output import styled, use_color

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
@click.option(
    "--spine", is_flag=True, help="Only the spine: several workers in parallel, no pipeline."
)
@click.option(
    "--workers",
    "-n",
    type=click.IntRange(1, 12),
    default=3,
    show_default=True,
    help="Workers of the --spine demo.",
)
@click.option("--dir", "root", type=click.Path(file_okay=False), help="Where to build it.")
@click.option("--live", is_flag=True, help="Use the real `claude` CLI on your own account.")
@click.option(
    "--stand-in",
    "stand_in",
    is_flag=True,
    help="Use the scripted stand-in worker (the --spine demo).",
)
@click.option("--tmux-socket", default="coord-demo", hidden=True)
def demo(spine: bool, workers: int, root: str | None, live: bool, stand_in: bool,
         tmux_socket: str) -> None:  # fmt: skip
    """Take five issues all the way to merged on a throwaway repo, shown live.

    Real `claude -p` workers (offline, against coordlib's scripted model: no account, no
    tokens) work, test, open PRs, review each other's, fix what fails or what a review
    asks, and the merge queue lands them, a conflict resolved on the way.

    \b
    Examples:
      coord demo
      coord demo --spine -n 4
      coord demo --live          # the real model, on your account
    """
    from coordlib.demo import find_cli

    if live and stand_in:
        raise click.UsageError("--live and --stand-in exclude each other")
    claude = None if stand_in else find_cli()
    if live and claude is None:
        fail("--live needs the Claude Code CLI: npm install -g @anthropic-ai/claude-code")
    mode = "live" if live else "scripted" if claude else "stand-in"
    if not spine and mode != "stand-in":
        assert claude is not None
        _pipeline_demo(root, mode, claude, tmux_socket)
        return
    if not spine and not stand_in:
        click.echo(
            "coord demo: the pipeline demo needs the Claude Code CLI (bootstrap installs "
            "it when npm is there);\nshowing the spine instead: workers in parallel.\n"
        )
    if mode == "scripted":
        from coordlib.demo import scripted_model

        with scripted_model(workers) as url:
            _run_demo(workers, root, mode, claude, tmux_socket, url)
    else:
        _run_demo(workers, root, mode, claude, tmux_socket, None)


def _pipeline_demo(root: str | None, mode: str, claude: str, tmux_socket: str) -> None:
    import contextlib
    import time

    from coordlib.demo_pipeline import STORIES, make_pipeline_demo, run_pipeline_demo

    from .demo_show import Show, table

    with contextlib.ExitStack() as stack:
        url = None
        if mode == "scripted":
            from coordlib.demo_pipeline import demo_scenarios
            from coordlib.testing.model_server import ModelServer

            server = ModelServer(demo_scenarios()).start()
            stack.callback(server.stop)
            url = server.url
        ws = make_pipeline_demo(Path(root) if root else None, mode=mode, claude=claude,
                                model_url=url, tmux_socket=tmux_socket)  # fmt: skip
        click.echo(_SAYS_PIPELINE[mode].format(claude=claude))
        _say_confined()
        click.echo(f"workspace {ws.root}\n")
        for n, story in enumerate(STORIES, 1):
            click.echo(f"  #{n}  {story.title:<24} {story.shows}")
        click.echo("")
        show = Show(color=use_color())
        t0 = time.monotonic()
        pipelines = run(lambda: run_pipeline_demo(
            ws, environ=_os_environ(), on_pass=show.turn, on_event=show.event))  # fmt: skip
        click.echo("")
        for line in table(ws, pipelines, time.monotonic() - t0,
                          f"{_coord_command()} --config {ws.config_path}"):  # fmt: skip
            click.echo(line)


_SAYS_PIPELINE = {
    "scripted": (
        "coord demo: five issues, from work to merged. Each worker is the real Claude Code CLI "
        "({claude}),\noffline, against coordlib's bundled scripted model: real tool calls, "
        "tests, commits, PRs,\nreviews and merges; no account, no tokens. `coord demo --live` "
        "uses your account."
    ),
    "live": "coord demo --live: five issues, from work to merged, by real `claude -p` workers "
    "({claude}) on YOUR account (costs tokens).",
}


def _say_confined() -> None:
    from coordlib.demo import can_confine

    if can_confine():
        click.echo("each worker is confined in Claude Code's sandbox (worker.confine)")
    else:
        fix = "apt-get install bubblewrap socat, or ./scripts/bootstrap as root"
        click.echo(f"workers run UNCONFINED here: bubblewrap and socat are missing ({fix})")


def _run_demo(workers: int, root: str | None, mode: str, claude: str | None, tmux_socket: str,
              model_url: str | None) -> None:  # fmt: skip
    from coordlib.demo import make_demo, run_demo
    from coordlib.event_view import format_event

    ws = make_demo(Path(root) if root else None, mode=mode, workers=workers,
                   tmux_socket=tmux_socket, claude=claude, model_url=model_url)  # fmt: skip
    click.echo(_SAYS[mode].format(claude=claude))
    _say_confined()
    click.echo(f"workspace {ws.root}\n")

    def label(i: int, a: Assignment) -> str:
        return styled(f"{a.id:<14}", fg=_COLORS[i % len(_COLORS)])

    def started(assignments: list[Assignment]) -> None:
        for i, a in enumerate(assignments):
            title = printable(a.title)
            click.echo(f"{label(i, a)} started on {a.machine}: #{a.issue} {title} -> {a.branch}",
                       color=use_color())  # fmt: skip

    def shown(i: int, a: Assignment, event: Event) -> None:
        line = format_event(event)
        if line is not None:
            click.echo(f"{label(i, a)} {printable(line)}", color=use_color())

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
