"""``coord tui``: the dashboard in the terminal (board, machines, spend; keys act on cards)."""

from __future__ import annotations

import importlib.util

import click

from .main import State, coord, fail, pass_state, run


@coord.command(short_help="Show the dashboard in the terminal: the board, machines, spend.")
@click.option("--interval", type=click.FloatRange(min=0.5), default=5.0, show_default=True,
              help="Seconds between two status passes over the machines.")  # fmt: skip
@pass_state
def tui(state: State, interval: float) -> None:
    """Show each repo's issues in the pipeline's columns, the machines and today's spend,
    refreshed by one status pass every --interval seconds; act on the selected card.

    \b
    Keys:
      j/k     select the next/previous card
      Enter   the card's stage action (its first valid one)
      w       watch its worker's live events (Esc: back)
      s r m   stop, retry, merge it
      q       quit (workers keep running)

    \b
    Examples:
      coord tui
      coord tui --interval 10
    """
    if importlib.util.find_spec("textual") is None:
        fail("coord tui needs textual, which is not installed: pip install 'coordlib[tui]'")
    from .tui_app import TuiApp

    async def go() -> None:
        async with state.coordinator() as c:
            await TuiApp(c, interval=interval).run_async()

    run(go)
