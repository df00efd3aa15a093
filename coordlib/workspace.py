"""`coord run-app ID`: start (or stop) the workspace's run script in an assignment's worktree.

The run script is ``repos[].workspace.run`` (or ``run:`` in the repo's ``.coord/workspace.yml``)
as the worktree's workspace had it when it was made; it runs in tmux session
``coord-app-<id>`` on the machine's workers' socket, with a port range of its own from the
machine's pool (``COORD_PORT``, ``COORD_PORTS``), its output in the run dir's ``app.log``.
One remote command each way (`app` in ``runtime/app.sh``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import CommandError, MachineError, UsageError
from .runtime.answers import failure_reason, parse_frame
from .runtime.protocol import remote_argv

if TYPE_CHECKING:
    from .context import Context

__all__ = ["AppState", "run_app"]

_PORTS = re.compile(r"([0-9]{1,5})-([0-9]{1,5})")
_STATES = ("started", "running", "stopped", "not_running")


@dataclass(frozen=True)
class AppState:
    """What became of an assignment's app: started, running (already), stopped, not_running."""

    id: str
    machine: str
    state: str
    ports: tuple[int, int] | None = None
    session: str | None = None
    attach: str | None = None  # the command that shows it (tmux attach, over ssh when remote)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready state (``coord run-app --json``)."""
        return {"id": self.id, "machine": self.machine, "state": self.state,
                "ports": list(self.ports) if self.ports else None, "session": self.session,
                "attach": self.attach}  # fmt: skip


async def run_app(ctx: Context, id: str, *, stop: bool = False) -> AppState:
    """Start (or, with `stop`, stop) assignment `id`'s app; see the module."""
    a = ctx.board.assignment(id)
    if not a.worktree:
        raise UsageError(f"assignment {a.id} has no worktree to run an app in")
    m = ctx.config.machine(a.machine)
    argv = remote_argv("app", m.workdir, a.id, a.worktree, m.tmux_socket,
                       "stop" if stop else "start")  # fmt: skip
    try:
        done = await ctx.machines.get(m.name).run(argv, timeout=60.0, what="app")
    except CommandError as exc:
        raise MachineError(f"{a.id}: {failure_reason(exc.stderr) or exc}", machine=m.name) from exc
    records = parse_frame(done.stdout, "app", machine=m.name).records
    text = records[0].text if records else ""
    said = dict(w.split("=", 1) for w in text.split() if "=" in w)
    state = said.get("state", "")
    if state not in _STATES:
        raise MachineError(f"{a.id}: the app verb said {state[:40]!r}", machine=m.name)
    ports = _PORTS.fullmatch(said.get("ports", ""))
    span = (int(ports[1]), int(ports[2])) if ports else None
    session = f"coord-app-{a.id}" if state in ("started", "running") else None
    attach = None
    if session is not None:
        tmux = f"tmux -L {m.tmux_socket} attach -t {session}"
        attach = tmux if m.is_local else f"ssh -t {m.host} {tmux}"
    return AppState(a.id, m.name, state, span, session, attach)
