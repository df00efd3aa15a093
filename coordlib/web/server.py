"""Run the app under uvicorn on a socket bound here, with no access log: the token never
travels in a URL, and no request line is written anywhere."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import CoordError, UsageError

if TYPE_CHECKING:
    from ..coordinator import Coordinator
    from .hub import Hub
    from .options import WebOptions

__all__ = ["bind", "serve"]


def bind(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket to host:port (port 0: a free one); refuse clearly."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        hint = "; another `coord web` may be running (--port to pick another)" if (
            exc.errno == 98) else ""  # fmt: skip
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from exc
    sock.setblocking(False)
    return sock


async def serve(
    coord: Coordinator,
    options: WebOptions,
    sock: socket.socket,
    *,
    hub: Hub | None = None,
    on_ready: Callable[[], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the dashboard on `sock` until `stop` is set or the process is told to stop
    (SIGINT/SIGTERM, in the main thread); `on_ready` is called once it listens."""
    import uvicorn

    from ..dashboard import gather
    from .app import create_app
    from .hub import Hub

    the_hub = hub or Hub(coord, interval=options.interval, issues_every=options.issues_every)
    gather(coord)  # an unreadable board or a broken playbook: said here, before listening

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started and on_ready is not None:
                on_ready()

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            the_hub.release()  # event streams end first: nothing to wait for, nothing cancelled
            await super().shutdown(sockets)

    server = Server(
        uvicorn.Config(
            create_app(coord, options, the_hub),
            access_log=False,  # request lines stay out of every log
            log_config=None,  # the library configures no logging; uvicorn's problems still show
            log_level="warning",
            lifespan="on",
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=2,
            ws="none",
        )
    )

    async def stopper() -> None:
        if stop is not None:
            await stop.wait()
            server.should_exit = True

    watcher = asyncio.create_task(stopper())
    try:
        await server.serve(sockets=[sock])
    finally:
        watcher.cancel()
    if not server.started:
        raise CoordError("coord web could not start (uvicorn said why, above)")
