"""What ``coord web`` is told: where to listen, the token, how often to poll."""

from __future__ import annotations

from dataclasses import dataclass, field

from .security import allowed_hosts, is_loopback

__all__ = ["DEFAULT_HOST", "DEFAULT_INTERVAL", "DEFAULT_PORT", "WebOptions"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7434
DEFAULT_INTERVAL = 5.0


@dataclass(frozen=True)
class WebOptions:
    """The server's settings.  `port` is the one actually bound (after a port 0 is chosen).

    `allow_hosts` adds Host header values to accept besides the bound address's own (a name
    a reverse proxy or a LAN uses).  `issues_every` paces the forge reads (default: every
    minute, or every `interval` if longer).
    """

    token: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    interval: float = DEFAULT_INTERVAL
    issues_every: float | None = None
    allow_hosts: tuple[str, ...] = field(default_factory=tuple)

    @property
    def loopback(self) -> bool:
        """Tell whether only this machine can reach the server."""
        return is_loopback(self.host)

    @property
    def hosts(self) -> frozenset[str]:
        """Return the Host header values the server accepts."""
        return allowed_hosts(self.host, self.port, self.allow_hosts)

    @property
    def url(self) -> str:
        """Return the board's address, without the token."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        host = "127.0.0.1" if host in ("0.0.0.0", "[::]") else host
        return f"http://{host}:{self.port}/"

    def __repr__(self) -> str:  # the token stays out of logs and tracebacks
        return (f"WebOptions(host={self.host!r}, port={self.port}, interval={self.interval}, "
                f"token=<{len(self.token)} chars>)")  # fmt: skip
