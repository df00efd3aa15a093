"""The Starlette app of ``coord web``: pages, JSON, server-sent events and actions.

Routes (every one behind the Host check of `Guard`; see `coordlib.web.security`):

    GET  /                         the board: each repo's columns, the machines, the spend
    GET  /a/{id}                   one assignment and its live filtered stream
    GET  /cost                     the spend per tier over time, and per issue
    GET  /fragment/board           the board's body (the page swaps it in on each snapshot)
    GET  /fragment/a/{id}          an assignment's header, likewise
    GET  /api/board                the latest snapshot as JSON (`Dashboard.to_dict`)
    GET  /api/cost                 the spend as JSON, with hourly and daily series
    GET  /api/a/{id}               one assignment as JSON
    GET  /api/board/stream         SSE: an event each time a snapshot is published
    GET  /api/a/{id}/stream        SSE: the run's lines (id = byte offset; Last-Event-ID or
                                   ?after= resumes; ?all=1 for every event)
    POST /api/actions/{action}     stop, retry, bounce, merge, approve (Bearer token, JSON)
    GET  /static/…                 the pages' JS and CSS, from the package
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..assignment import Assignment, check_id
from ..dashboard import COLUMNS, Action, state_of
from ..errors import AssignmentNotFound, ClaimError, CoordError, UsageError
from .actions import perform
from .hub import Hub
from .security import bearer_ok, host_allowed, origin_allowed
from .tails import StreamLine
from .views import render

if TYPE_CHECKING:
    from ..coordinator import Coordinator
    from .options import WebOptions

__all__ = ["SECURITY_HEADERS", "Guard", "create_app"]

STATIC = Path(__file__).with_name("static")
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
_KEEPALIVE = 15.0  # seconds between SSE comments on a quiet stream
_BODY_MAX = 64 * 1024


class Guard:
    """Refuse a request whose Host header is not ours (DNS rebinding); add the security
    headers to every response."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host")
        if not host_allowed(host, self.hosts):
            refused = JSONResponse(
                {"ok": False, "error": f"coord web does not answer for Host {host!r}; "
                 "use the address it printed, or start it with --allow-host NAME"},
                status_code=403,
            )  # fmt: skip
            await refused(scope, receive, self._send(send))
            return
        await self.app(scope, receive, self._send(send))

    @staticmethod
    def _send(send: Send) -> Send:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in SECURITY_HEADERS.items():
                    headers.setdefault(k, v)
            await send(message)

        return with_headers


def _sse(event: str, data: Any, id: int | None = None) -> bytes:
    head = f"id: {id}\n" if id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _actions_of(hub: Hub, a: Assignment) -> list[str]:
    """The actions an assignment's page offers: its card's, when the card is about it."""
    card = hub.latest().card_of(a.id)
    if card is not None and card.assignment == a.id:
        return list(card.actions)
    state = state_of(a)
    if state in ("pending", "running", "stuck"):
        return [Action.STOP]
    return [Action.RETRY] if state in ("failed", "stopped", "lost", "queued") else []


def create_app(coord: Coordinator, options: WebOptions, hub: Hub | None = None) -> Starlette:
    """Build the app serving `coord`'s board; it starts (and stops) the hub with itself."""
    the_hub = hub or Hub(coord, interval=options.interval, issues_every=options.issues_every)
    hosts = options.hosts

    def assignment(request: Request) -> Assignment:
        return coord.get(check_id(request.path_params["aid"]))

    def page(name: str, **context: Any) -> HTMLResponse:
        snap = the_hub.latest()
        return HTMLResponse(render(name, snap=snap, columns=COLUMNS, version=the_hub.version,
                                   **context))  # fmt: skip

    async def board(request: Request) -> Response:
        return page("board.html", title="board")

    async def board_fragment(request: Request) -> Response:
        return page("_board.html")

    async def assignment_page(request: Request) -> Response:
        a = assignment(request)
        return page("assignment.html", a=a, state=state_of(a), actions=_actions_of(the_hub, a),
                    title=a.id)  # fmt: skip

    async def assignment_fragment(request: Request) -> Response:
        a = assignment(request)
        return page("_assignment.html", a=a, state=state_of(a), actions=_actions_of(the_hub, a))

    async def cost_page(request: Request) -> Response:
        return page("cost.html", title="cost")

    async def api_board(request: Request) -> Response:
        return JSONResponse({**the_hub.latest().to_dict(), "version": the_hub.version})

    async def api_cost(request: Request) -> Response:
        spend = the_hub.latest().spend
        return JSONResponse({**spend.to_dict(), "hourly": spend.series(3600),
                             "daily": spend.series(86400)})  # fmt: skip

    async def api_assignment(request: Request) -> Response:
        a = assignment(request)
        return JSONResponse({**a.to_dict(), "state": state_of(a),
                             "actions": _actions_of(the_hub, a)})  # fmt: skip

    async def board_stream(request: Request) -> Response:
        async def events() -> AsyncIterator[bytes]:
            seen = the_hub.version
            yield b"retry: 3000\n\n" + _sse("board", {"version": seen})
            while not the_hub.stopping:
                now = await the_hub.changed(seen, timeout=_KEEPALIVE)
                if now == seen:
                    yield b": keepalive\n\n"
                    continue
                seen = now
                yield _sse("board", {"version": now})

        return _stream(events())

    async def assignment_stream(request: Request) -> Response:
        aid = assignment(request).id
        everything = request.query_params.get("all") in ("1", "true")
        after = _resume_offset(request)

        async def events() -> AsyncIterator[bytes]:
            yield b"retry: 3000\n\n"
            lines = the_hub.tails.follow(aid, after, idle=_KEEPALIVE)
            async with contextlib.aclosing(lines):
                async for item in lines:
                    if item is None:
                        yield b": keepalive\n\n"
                    elif isinstance(item, int):
                        yield _sse("gap", {"dropped": item})
                    else:
                        shown = _line(item, everything)
                        if shown is not None:
                            yield _sse("line", shown, id=item.offset)
            if the_hub.stopping:
                return  # the browser reconnects to whoever serves next, from its last line
            row = coord.get(aid)
            tail = the_hub.tails.tails.get(aid)
            error = tail.error if tail is not None else None
            if tail is not None and not tail.lines and not row.is_terminal and error is None:
                # Nothing to read yet (its run is not on the machine yet): the next viewer
                # starts a fresh tail rather than this empty one.
                tail.error = error = f"{aid} has no events on {row.machine} yet"
            yield _sse("end", {"status": str(row.status), "state": state_of(row),
                               "error": error})  # fmt: skip

        return _stream(events())

    async def act(request: Request) -> Response:
        if not origin_allowed(request.headers.get("origin"), hosts):
            return _refuse("this request comes from another site's page")
        if not bearer_ok(request.headers.get("authorization"), options.token):
            return _refuse("actions need the token coord web printed at start (open the "
                           "address it printed, with #token=…)")  # fmt: skip
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"ok": False, "error": "send JSON"}, status_code=415)
        raw = await request.body()
        try:
            body = json.loads(raw) if len(raw) <= _BODY_MAX else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse({"ok": False, "error": "send one JSON object"}, status_code=400)
        try:
            done = await perform(coord, request.path_params["action"], body)
        except (UsageError, AssignmentNotFound, ClaimError) as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=409)
        except CoordError as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=502)
        finally:
            the_hub.poke()
        return JSONResponse({"ok": True, **done})

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse({"ok": False, "error": str(exc)}, status_code=404)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await the_hub.start()
        try:
            yield
        finally:
            await the_hub.close()

    app = Starlette(
        routes=[
            Route("/", board),
            Route("/a/{aid}", assignment_page),
            Route("/cost", cost_page),
            Route("/fragment/board", board_fragment),
            Route("/fragment/a/{aid}", assignment_fragment),
            Route("/api/board", api_board),
            Route("/api/cost", api_cost),
            Route("/api/a/{aid}", api_assignment),
            Route("/api/board/stream", board_stream),
            Route("/api/a/{aid}/stream", assignment_stream),
            Route("/api/actions/{action}", act, methods=["POST"]),
            Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"),
        ],
        exception_handlers={AssignmentNotFound: not_found, UsageError: not_found},
        lifespan=lifespan,
    )
    app.state.hub = the_hub
    app.add_middleware(Guard, hosts=hosts)
    return app


def _resume_offset(request: Request) -> int:
    """Where a stream resumes: the Last-Event-ID a reconnecting browser sends, else ?after=."""
    for value in (request.headers.get("last-event-id"), request.query_params.get("after")):
        if value is not None and value.strip().isdigit():
            return int(value.strip())
    return 0


def _line(item: StreamLine, everything: bool) -> dict[str, Any] | None:
    entries = item.visible(everything)
    if not entries:
        return None
    return {"at": item.at, "entries": [{"kind": e.kind, "text": e.text} for e in entries]}


def _refuse(why: str) -> Response:
    return JSONResponse({"ok": False, "error": f"refused: {why}"}, status_code=403)


def _stream(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"cache-control": "no-cache, no-store", "x-accel-buffering": "no"},
    )
