"""A scripted Anthropic Messages API on loopback that drives the real Claude Code CLI offline.

A :class:`Scenario` is data: a list of :class:`Turn`, each a list of blocks made with
:func:`text` and :func:`tool`.  The server answers ``POST /v1/messages`` (streaming SSE or
plain JSON, as asked) with the turn whose index is the number of assistant messages already
in the request, so retries and ``--resume`` replay the same choice (the CLI's own filler
message "No response requested.", sent on resuming after a failure, is not counted).
Requests without ``tools`` (title generation and other side requests) get a short text and
use up no turn; past the last turn every answer is the text "done".

Several named scenarios can share one server.  The last ``[scenario:NAME]`` marker in the
first user message picks one (the last, because the CLI puts its context, CLAUDE.md
included, before the prompt); without a marker the ``"default"`` scenario answers (an empty
one, "done" to everything, if none was given).  An unknown name gets a 400.

Faults are data too (:meth:`Fault.error`, :meth:`Fault.cut`, :meth:`Fault.hang`), set on a
turn or on the whole server, each for its first ``times`` matching requests or for every
one::

    scenario = Scenario([
        Turn([text("STATUS: writing"), tool("Write", file_path=str(repo / "x"), content="hi")]),
        Turn([text("Wrote x.")], fault=Fault.error(529, times=1)),
    ])
    with ModelServer(scenario) as server:
        env = claude_env(server.url, tmp_path / "home")
        ...  # run `claude -p PROMPT ...` in repo with env and stdin from /dev/null
        assert server.count() == 3  # turn 0, turn 1 failed once, turn 1 again

The scenario types and the pure request-to-reply functions are in
`coordlib.testing.scenarios`; this module serves them (and re-exports the types).

Run it as a process (coordlib's demo does) with
``python -m coordlib.testing.model_server --port 0 --scenario FILE.json``: the first line
on stdout is its URL, and it serves until killed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import select
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .claude_cli import claude_env  # re-exported: the environment that points the CLI here
from .scenarios import (
    DEFAULT,
    Block,
    Fault,
    Scenario,
    Text,
    ToolUse,
    Turn,
    build_message,
    error_body,
    load_server_file,
    redact_headers,
    redacted,
    scenario_name,
    sse_events,
    text,
    tool,
    turn_index,
)

__all__ = [  # the scenario types are defined in `scenarios` and served from here too
    "Fault",
    "ModelServer",
    "RecordedRequest",
    "Scenario",
    "Text",
    "ToolUse",
    "Turn",
    "claude_env",
    "load_server_file",
    "redacted",
    "text",
    "tool",
]

FINAL_TEXT = "done"
SIDE_TEXT = "Scripted reply"


# --- the server ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received, and what it chose to do with it."""

    method: str
    path: str  # without the query
    query: str
    headers: Mapping[str, str]  # lower-cased names; credentials redacted
    body: Any  # parsed JSON, the raw text if not JSON, or None if empty
    time: float  # time.time() at arrival
    scenario: str | None = None  # for POST /v1/messages
    turn: int | None = None  # assistant messages in the request; None for side requests
    outcome: str = ""  # "message", "side", "final", "error 529", "cut", "hang", "not found", ...

    @property
    def stream(self) -> bool:
        """Return whether the request asked for a streamed reply."""
        return isinstance(self.body, dict) and bool(self.body.get("stream"))

    @property
    def has_tools(self) -> bool:
        """Return whether the request offered tools (a side request offers none)."""
        return isinstance(self.body, dict) and bool(self.body.get("tools"))


@dataclass
class _Plan:
    outcome: str
    scenario: str | None = None
    turn: int | None = None
    delay: float = 0.0
    fault: Fault | None = None
    blocks: Sequence[Block] = ()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    app: ModelServer


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.server.app._opened(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.app._closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.app._serve(self)

    do_HEAD = do_GET
    do_POST = do_GET
    do_PUT = do_GET
    do_DELETE = do_GET
    do_PATCH = do_GET
    do_OPTIONS = do_GET

    def read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def send_json(self, status: int, data: Any, headers: Mapping[str, str] | None = None) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.send_header("request-id", "req_" + uuid.uuid4().hex[:24])
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)


class ModelServer:
    """A scripted Messages API server (on 127.0.0.1 unless `host` says), in a background thread.

    `host` ``0.0.0.0`` (or one of this machine's addresses) lets workers on other machines
    reach it: the scripted model has no secrets, but it answers anyone who can connect.
    """

    def __init__(
        self,
        scenario: Scenario | Mapping[str, Scenario] | None = None,
        *,
        faults: Sequence[Fault] = (),
        side_text: str = SIDE_TEXT,
        final_text: str = FINAL_TEXT,
        port: int = 0,
        log: Path | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        if scenario is None:
            scenario = Scenario()
        self.scenarios: dict[str, Scenario] = (
            {DEFAULT: scenario} if isinstance(scenario, Scenario) else dict(scenario)
        )
        self.side_text = side_text
        self.final_text = final_text
        self._port = port
        self._host = host
        self._log = log
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._faults: list[Fault] = list(faults)
        self._used: dict[object, int] = {}  # fault key -> requests it has failed
        self._records: list[RecordedRequest] = []
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> ModelServer:
        """Listen on the host (127.0.0.1 by default) and serve in a daemon thread; return self.

        After :meth:`stop` it starts again on the same port, so a test can take the API
        down and bring it back under a running CLI.
        """
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer((self._host, self._port), _Handler)
        httpd.app = self
        self._port = int(httpd.server_address[1])
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop every open connection, hanging ones included."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """Return the port it listens (or, once stopped, listened) on."""
        if not self._port:
            raise RuntimeError("ModelServer is not started: call start() first")
        return self._port

    @property
    def url(self) -> str:
        """Return the base URL, e.g. "http://127.0.0.1:41234" (for ANTHROPIC_BASE_URL)."""
        host = "127.0.0.1" if self._host in ("0.0.0.0", "") else self._host
        return f"http://{host}:{self.port}"

    # faults at run time

    def set_faults(self, faults: Sequence[Fault]) -> None:
        """Replace the server-wide faults (their counts start afresh)."""
        with self._lock:
            self._faults = list(faults)
            self._used = {k: v for k, v in self._used.items() if not _is_server_key(k)}

    def add_fault(self, fault: Fault) -> None:
        """Add a server-wide fault after the existing ones."""
        with self._lock:
            self._faults.append(fault)

    # recording

    @property
    def requests(self) -> list[RecordedRequest]:
        """Return every request received so far, oldest first."""
        with self._lock:
            return list(self._records)

    def count(self, path: str = "/v1/messages", method: str = "POST") -> int:
        """Return how many requests had this path (query ignored) and method."""
        with self._lock:
            return sum(1 for r in self._records if r.path == path and r.method == method)

    def wait_for(
        self, predicate: Callable[[list[RecordedRequest]], bool], timeout: float = 30
    ) -> list[RecordedRequest]:
        """Block until predicate(requests) holds; return the requests (TimeoutError if not)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self._records)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching requests within {timeout} s")
                self._changed.wait(left)
            return list(self._records)

    def clear(self) -> None:
        """Forget the recorded requests and how often each fault fired."""
        with self._lock:
            self._records.clear()
            self._used.clear()

    # internals

    def _opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def _closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _take(self, key: object, fault: Fault) -> bool:
        # Called with the lock held: charge the fault if it has requests left to fail.
        used = self._used.get(key, 0)
        if fault.times is not None and used >= fault.times:
            return False
        self._used[key] = used + 1
        return True

    def _plan(self, body: dict[str, Any]) -> _Plan:
        # Called with the lock held: the scripted answer, then the first fault with requests
        # left to fail (server-wide ones before the turn's own).
        plan, turn_fault = self._script(body)
        if plan.fault is not None:
            return plan
        candidates: list[tuple[object, Fault]] = [
            (("server", i), f) for i, f in enumerate(self._faults)
        ]
        if turn_fault is not None:
            candidates.append((("turn", plan.scenario, plan.turn), turn_fault))
        for key, fault in candidates:
            if self._take(key, fault):
                plan.outcome, plan.fault = _outcome(fault), fault
                break
        return plan

    def _script(self, body: dict[str, Any]) -> tuple[_Plan, Fault | None]:
        if not body.get("tools"):
            return _Plan("side", blocks=[Text(self.side_text)]), None
        name = scenario_name(body)
        index = turn_index(body)
        scenario = self.scenarios.get(name)
        if scenario is None:
            if name != DEFAULT:
                known = ", ".join(sorted(self.scenarios)) or "none"
                bad = Fault.error(400, message=f"no scenario named {name!r} (known: {known})")
                return _Plan("error 400", scenario=name, fault=bad), None
            scenario = Scenario()
        if index >= len(scenario.turns):
            return _Plan("final", scenario=name, turn=index, blocks=[Text(self.final_text)]), None
        turn = scenario.turns[index]
        plan = _Plan("message", scenario=name, turn=index, delay=turn.delay, blocks=turn.content)
        return plan, turn.fault

    def _record(self, record: RecordedRequest) -> None:
        with self._changed:
            self._records.append(record)
            self._changed.notify_all()
        if self._log is not None:
            line = {
                "method": record.method,
                "path": record.path,
                "scenario": record.scenario,
                "turn": record.turn,
                "outcome": record.outcome,
                "time": record.time,
            }
            with open(self._log, "a") as fh:
                fh.write(json.dumps(line) + "\n")

    def _serve(self, h: _Handler) -> None:
        arrived = time.time()
        parts = urlsplit(h.path)
        raw = h.read_body()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        base = {
            "method": h.command,
            "path": parts.path,
            "query": parts.query,
            "headers": redact_headers(h.headers.items()),
            "body": body,
            "time": arrived,
        }
        route = (h.command, parts.path.rstrip("/") or "/")
        if route in (("GET", "/"), ("HEAD", "/")):
            self._record(RecordedRequest(**base, outcome="ok"))
            h.send_json(200, {"ok": True})
        elif route == ("POST", "/v1/messages/count_tokens"):
            self._record(RecordedRequest(**base, outcome="count_tokens"))
            h.send_json(200, {"input_tokens": max(1, len(raw) // 4)})
        elif route == ("POST", "/v1/messages") and isinstance(body, dict):
            with self._lock:
                plan = self._plan(body)
            self._record(
                RecordedRequest(
                    **base, scenario=plan.scenario, turn=plan.turn, outcome=plan.outcome
                )
            )
            self._answer(h, body, plan, input_tokens=max(1, len(raw) // 4))
        elif route == ("POST", "/v1/messages"):
            self._record(RecordedRequest(**base, outcome="error 400"))
            h.send_json(400, error_body(400, "request body is not a JSON object"))
        else:
            self._record(RecordedRequest(**base, outcome="not found"))
            h.send_json(404, error_body(404, f"no route for {h.command} {parts.path}"))

    def _answer(self, h: _Handler, body: dict[str, Any], plan: _Plan, input_tokens: int) -> None:
        if plan.delay and self._stopping.wait(plan.delay):
            h.close_connection = True
            return
        fault = plan.fault
        if fault is not None and fault.kind == "hang":
            self._hold(h)
            return
        if fault is not None and fault.kind == "error":
            headers: dict[str, str] = {}
            if fault.retry_after is not None:
                headers["retry-after"] = f"{math.ceil(fault.retry_after)}"
                headers["retry-after-ms"] = f"{int(fault.retry_after * 1000)}"
            h.send_json(
                fault.status,
                error_body(fault.status, fault.message, fault.error_type),
                headers,
            )
            return
        message = build_message(
            plan.blocks,
            model=str(body.get("model") or "claude-scripted"),
            input_tokens=input_tokens,
            seed=f"{plan.scenario}/{plan.turn}/{plan.outcome}",
        )
        if not body.get("stream"):
            if fault is not None:  # a cut with nothing streamed: drop the connection
                h.close_connection = True
                return
            h.send_json(200, message)
            return
        h.send_response(200)
        h.send_header("content-type", "text/event-stream; charset=utf-8")
        h.send_header("cache-control", "no-cache")
        h.send_header("transfer-encoding", "chunked")
        h.send_header("request-id", "req_" + uuid.uuid4().hex[:24])
        h.end_headers()
        events = sse_events(message)
        limit = fault.after_events if fault is not None else len(events)
        for name, data in events[:limit]:
            chunk = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
            h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            h.wfile.flush()
        if fault is not None:
            # No terminating chunk: the client sees the body end early, as on a real cut.
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            return
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()

    def _hold(self, h: _Handler) -> None:
        # Wait for the server to stop or the client to hang up, whichever comes first.
        h.close_connection = True
        while not self._stopping.wait(0.1):
            with contextlib.suppress(OSError, ValueError):
                readable, _, _ = select.select([h.connection], [], [], 0)
                if readable and not h.connection.recv(1, socket.MSG_PEEK):
                    return


def _is_server_key(key: object) -> bool:
    return isinstance(key, tuple) and len(key) == 2 and key[0] == "server"


def _outcome(fault: Fault) -> str:
    return f"error {fault.status}" if fault.kind == "error" else fault.kind


# --- as a process ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a scenario file until killed; print the URL as the first line."""
    parser = argparse.ArgumentParser(prog="python -m coordlib.testing.model_server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (0.0.0.0: reachable from other machines; default 127.0.0.1)",
    )
    parser.add_argument(
        "--scenario",
        type=Path,
        help='JSON: one scenario {"turns": [...]}, or {"scenarios": {NAME: ...}, "faults": [...]}',
    )
    parser.add_argument("--log", type=Path, help="append one JSON line per request here")
    args = parser.parse_args(argv)
    scenarios, faults = load_server_file(args.scenario) if args.scenario else ({}, [])
    server = ModelServer(
        scenarios, faults=faults, port=args.port, log=args.log, host=args.host
    ).start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(server.url, flush=True)
    while not done.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
