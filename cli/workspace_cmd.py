"""``coord run-app``: start (or stop) the workspace's run script in an assignment's worktree."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .complete import complete_ids
from .main import State, coord, pass_state, run
from .output import echo, echo_json

if TYPE_CHECKING:
    from coordlib.workspace import AppState


@coord.command(
    "run-app", short_help="Start the workspace's run script (a dev server) in a worktree."
)
@click.argument("id", shell_complete=complete_ids)
@click.option("--stop", is_flag=True, help="Stop it, and give its ports back.")
@click.option("--json", "as_json", is_flag=True, help="Print what happened as JSON.")
@pass_state
def run_app(state: State, id: str, stop: bool, as_json: bool) -> None:
    """Start the workspace's run script (repos[].workspace.run, or run: in the repo's
    .coord/workspace.yml) in assignment ID's worktree, in a tmux session of its own on its
    machine, with ports of its own ($COORD_PORT, $COORD_PORTS); output in the run dir's
    app.log.  Starting it again while it runs says where it is.

    \b
    Examples:
      coord run-app api-42-1f3a          # then open http://gpu-box:$COORD_PORT
      coord run-app api-42-1f3a --stop
    """

    async def go() -> AppState:
        async with state.coordinator() as c:
            return await c.run_app(id, stop=stop)

    got = run(go)
    if as_json:
        echo_json(got.to_dict())
        return
    if got.state in ("stopped", "not_running"):
        echo(f"{got.id}: app {'stopped' if got.state == 'stopped' else 'was not running'}"
             f" on {got.machine}")  # fmt: skip
        return
    ports = f"ports {got.ports[0]}-{got.ports[1]} (COORD_PORT={got.ports[0]})" if got.ports else ""
    verb = "started" if got.state == "started" else "already running"
    echo(f"{got.id}: app {verb} on {got.machine}, {ports}")
    echo(f"  look:  {got.attach}")
    echo(f"  stop:  coord run-app {got.id} --stop")
