"""What the coordinator's parts share: the config, the board, one transport per machine, one
forge per repo, the trail, and a way to tell a person things.

The dispatcher, the monitor and the cleaner each get this `Context`, never the coordinator
itself, so none of them can reach into another.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import MachineError
from .runtime.local import LocalTransport

if TYPE_CHECKING:  # imported where used: asyncssh alone costs ~200 ms to import
    from .board import Board
    from .config import Config
    from .forge.base import Forge
    from .runtime.ssh import SSHTarget
    from .runtime.transport import Transport
    from .trail import Trail

__all__ = ["Context", "Forges", "Machines"]


class Machines:
    """One transport per machine, made on first use: one connection each, closed together."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._open: dict[str, Transport] = {}

    def get(self, name: str) -> Transport:
        """Return the one transport for machine `name`."""
        t = self._open.get(name)
        if t is None:
            m = self.config.machine(name)
            if m.is_local:
                t = LocalTransport(m.name)
            else:
                from .runtime.ssh import SSHTransport

                t = SSHTransport(self.ssh_target(m.name))
            self._open[name] = t
        return t

    def ssh_target(self, name: str) -> SSHTarget:
        """Return where machine `name` is reached over SSH (for `coord trust`)."""
        m = self.config.machine(name)
        if m.is_local:
            raise MachineError(
                "is the local machine: there is no host key to trust", machine=m.name
            )
        from .runtime.ssh import SSHTarget

        ssh = self.config.ssh
        return SSHTarget(
            name=m.name,
            host=m.host,
            port=m.port,
            user=m.user,
            identity_file=m.identity_file,
            known_hosts=m.known_hosts,
            connect_timeout=m.connect_timeout or ssh.connect_timeout,
            keepalive_interval=ssh.keepalive_interval,
            keepalive_count_max=ssh.keepalive_count,
        )

    async def close(self) -> None:
        """Close every connection; the machines may be used again afterwards."""
        open_, self._open = list(self._open.values()), {}
        await asyncio.gather(*(t.close() for t in open_), return_exceptions=True)


class Forges:
    """One forge per repo (local or GitHub, as the config says), made on first use."""

    def __init__(
        self, config: Config, environ: Mapping[str, str], notify: Callable[[str], None]
    ) -> None:
        self.config = config
        self.environ = environ
        self.notify = notify
        self._open: dict[str, Forge] = {}

    def get(self, repo: str) -> Forge:
        """Return the forge serving `repo`."""
        f = self._open.get(repo)
        if f is None:
            from .forge import open_forge

            f = open_forge(self.config, repo, environ=self.environ, on_wait=self.notify)
            self._open[repo] = f
        return f

    async def close(self) -> None:
        """Release every forge's connections and threads."""
        open_, self._open = list(self._open.values()), {}
        await asyncio.gather(*(f.close() for f in open_), return_exceptions=True)


@dataclass
class Context:
    """What the dispatcher, the monitor and the cleaner share."""

    config: Config
    board: Board
    machines: Machines
    forges: Forges
    trail: Trail
    notify: Callable[[str], None]
    environ: Mapping[str, str]
    host: str = field(default_factory=socket.gethostname)
    # Ids on the board whose dispatch this process is sending right now: a status meanwhile
    # must not take their missing run for a lost one.
    sending: set[str] = field(default_factory=set)
