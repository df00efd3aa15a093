"""A fake GitHub: REST API checked against GitHub's OpenAPI description, and real git over HTTP.

``FakeGitHub`` serves the API under a GitHub Enterprise-style prefix (``/api/v3``) and each
repository's bare git repo at ``/{owner}/{repo}.git`` through ``git http-backend``, so
``git push`` and ``git fetch`` work against it.  Pull requests, branches and merges read and
write those bare repos with real git.

Every API exchange is checked against ``openapi_subset.json`` (see
``scripts/extract_github_openapi.py``): an unknown route, a request that breaks the
description or a response that breaks it is recorded in ``violations`` and answered with
status 599 and the reason, so the client fails loudly and the ``fake_github`` fixture fails
the test.  Hooks let tests simulate what GitHub does under load: ``rate_limit_next``
(primary or secondary rate limits) and ``fail_next`` (502/503).
"""

from __future__ import annotations

import itertools
import json
import math
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from . import checks, pulls  # noqa: F401 - they register their routes
from .gitstore import BareRepo, http_backend
from .model import DOCS, ApiError, IssueRecord, Label, Repo, now_iso
from .openapi import OpenAPI
from .routes import ROUTES, Context
from .shapes import Shapes

VIOLATION_STATUS = 599

_openapi_lock = threading.Lock()
_openapi: OpenAPI | None = None


def shared_openapi() -> OpenAPI:
    """Load the OpenAPI subset once per process (validators are cached on it)."""
    global _openapi
    with _openapi_lock:
        if _openapi is None:
            _openapi = OpenAPI()
        return _openapi


@dataclass
class Exchange:
    """One API request as the server saw it."""

    method: str
    path: str  # below the API prefix, with the query string
    status: int


class FakeGitHub(Shapes):
    """A threaded HTTP server playing GitHub's REST API and git smart HTTP."""

    def __init__(
        self,
        root: Path,
        *,
        token: str | None = None,
        login: str = "coord-bot",
        prefix: str = "/api/v3",
        openapi: OpenAPI | None = None,
    ) -> None:
        self.root = root
        self.token = token or f"ghp_fake{secrets.token_hex(16)}"
        self.tokens: dict[str, str] = {self.token: login}
        self.associations: dict[str, str] = {}
        self.login = login
        self.prefix = prefix
        self.openapi = openapi or shared_openapi()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.violations: list[str] = []
        self.exchanges: list[Exchange] = []
        self.forbid_self_review = False  # GitHub refuses approving your own PR; opt in
        self._ids = itertools.count(1001)
        self._lock = threading.RLock()
        # (kind, status, retry_after, message) for the next requests
        self._injected: list[tuple[str, int, float, str | None]] = []
        self._rate_limit = 5000
        self._rate_used = 0
        self._rate_reset = int(time.time()) + 3600
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> FakeGitHub:
        """Listen on a free loopback port and serve in a background thread."""
        app = self

        class _Handler(_RequestHandler):
            server_app = app

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="fake-github",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def api_url(self) -> str:
        """The base URL a client passes to PyGithub (`Github(base_url=...)`)."""
        return f"{self.url}{self.prefix}"

    def git_url(self, slug: str) -> str:
        """The URL `git clone` / `git push` use for repository `owner/name`."""
        return f"{self.url}/{slug}.git"

    # -- test hooks ------------------------------------------------------------
    def create_repo(self, slug: str, *, default_branch: str = "main") -> Repo:
        """Create an empty repository `owner/name` (push to `git_url(slug)` to fill it)."""
        owner, name = slug.split("/")
        with self._lock:
            repo = Repo(
                owner=owner,
                name=name,
                id=self.next_id(),
                git=BareRepo(self.root / owner / f"{name}.git", default_branch),
                default_branch=default_branch,
                created_at=now_iso(),
            )
            self.repos[(owner.lower(), name.lower())] = repo
            return repo

    def add_issue(
        self, slug: str, title: str, *, body: str = "", labels: tuple[str, ...] = ()
    ) -> int:
        """Create an issue directly in the model (no request); return its number."""
        with self._lock:
            repo = self.repos[tuple(slug.lower().split("/"))]  # type: ignore[index]
            for name in labels:
                repo.labels.setdefault(name.lower(), Label(id=self.next_id(), name=name))
            stamp = now_iso()
            number = len(repo.issues) + 1
            repo.issues[number] = IssueRecord(
                number=number,
                id=self.next_id(),
                title=title,
                body=body,
                user=self.login,
                created_at=stamp,
                updated_at=stamp,
                labels=[repo.labels[n.lower()].name for n in labels],
            )
            return number

    def add_token(self, token: str, login: str, *, association: str | None = None) -> None:
        """Accept another token, acting as user `login` (`association`: e.g. NONE, outside)."""
        self.tokens[token] = login
        if association is not None:
            self.associations[login] = association

    def rate_limit_next(
        self, n: int = 1, *, kind: str = "primary", retry_after: float = 1, status: int = 403
    ) -> None:
        """Answer the next n API requests with a primary or secondary rate limit error."""
        if kind not in ("primary", "secondary"):
            raise ValueError(kind)
        with self._lock:
            self._injected += [(kind, status, retry_after, None)] * n

    def fail_next(self, n: int = 1, *, status: int = 502, message: str | None = None) -> None:
        """Answer the next n API requests with an error: 502, 503, a 403, a 409..."""
        with self._lock:
            self._injected += [("error", status, 0.0, message)] * n

    def take_violations(self) -> list[str]:
        """Return and forget the violations recorded so far."""
        with self._lock:
            out, self.violations = self.violations, []
            return out

    def count(self, since: int = 0) -> int:
        """Return how many API requests arrived since `since` (an earlier count)."""
        return len(self.exchanges) - since

    def next_id(self) -> int:
        return next(self._ids)

    # -- request handling ------------------------------------------------------------
    def handle_api(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer one API request (path below the prefix); validate both directions."""
        path, _, query_string = raw_path.partition("?")
        query_lists = urllib.parse.parse_qs(query_string, keep_blank_values=True)
        out_headers: dict[str, str] = {}
        with self._lock:
            self._rate_used += 1
            limit_headers = self._limit_headers()
            injected = self._injected.pop(0) if self._injected else None
        matched = self.openapi.match(method, path)
        if matched is None:
            return self._violation(
                method, raw_path, f"unimplemented route: {method} {path} (not in the subset)"
            )
        op, params = matched
        route = ROUTES.get((op.method, op.template))
        if route is None:
            return self._violation(
                method, raw_path, f"unimplemented route: {op.name} (in the subset, no handler)"
            )
        problems = self.openapi.check_request(
            op, params, query_lists, body, headers.get("content-type", "")
        )
        if problems:
            return self._violation(method, raw_path, *problems)
        try:
            login = self._authenticate(headers.get("authorization", ""))
            if injected is not None:
                raise self._injected_error(*injected)
            ctx = Context(
                app=self,
                params=params,
                query={k: v[0] for k, v in query_lists.items()},
                body=json.loads(body) if body.strip() else None,
                login=login,
                path=path,
                headers=out_headers,
            )
            with self._lock:
                status, data = route(ctx)
        except ApiError as exc:
            status, data = exc.status, exc.body
            out_headers |= exc.headers
        payload = b"" if data is None else json.dumps(data).encode()
        content_type = "application/json; charset=utf-8"
        problems = self.openapi.check_response(op, status, payload, content_type)
        if problems:
            return self._violation(method, raw_path, *problems)
        if "x-ratelimit-remaining" not in {k.lower() for k in out_headers}:
            out_headers |= limit_headers
        out_headers["Content-Type"] = content_type
        self._log(method, raw_path, status)
        return status, out_headers, payload

    def _log(self, method: str, raw_path: str, status: int) -> None:
        with self._lock:
            self.exchanges.append(Exchange(method, raw_path, status))

    def _violation(
        self, method: str, raw_path: str, *problems: str
    ) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.violations += problems
        self._log(method, raw_path, VIOLATION_STATUS)
        body = {"message": "fake GitHub: " + "; ".join(problems), "documentation_url": DOCS}
        return (
            VIOLATION_STATUS,
            {"Content-Type": "application/json", "X-Fake-GitHub-Violation": "1"},
            json.dumps(body).encode(),
        )

    def _authenticate(self, header: str) -> str:
        scheme, _, token = header.partition(" ")
        if not header:
            raise ApiError(401, "Requires authentication")
        if scheme.lower() not in ("token", "bearer") or token.strip() not in self.tokens:
            raise ApiError(401, "Bad credentials")
        return self.tokens[token.strip()]

    def _limit_headers(self, remaining: int | None = None) -> dict[str, str]:
        if self._rate_used >= self._rate_limit or time.time() > self._rate_reset:
            self._rate_used, self._rate_reset = 1, int(time.time()) + 3600
        left = self._rate_limit - self._rate_used if remaining is None else remaining
        return {
            "X-RateLimit-Limit": str(self._rate_limit),
            "X-RateLimit-Remaining": str(left),
            "X-RateLimit-Reset": str(self._rate_reset),
            "X-RateLimit-Used": str(self._rate_limit - left),
            "X-RateLimit-Resource": "core",
        }

    def _injected_error(
        self, kind: str, status: int, retry_after: float, message: str | None
    ) -> ApiError:
        if kind == "primary":
            headers = self._limit_headers(remaining=0)
            headers["X-RateLimit-Reset"] = str(math.ceil(time.time() + retry_after))
            return ApiError(
                status,
                f"API rate limit exceeded for user ID 1. "
                f"If you reach out to GitHub Support for help, please include "
                f"the request ID {secrets.token_hex(4).upper()}.",
                headers=headers,
            )
        if kind == "secondary":
            return ApiError(
                status,
                "You have exceeded a secondary rate limit. Please wait a "
                "few minutes before you try again.",
                headers={"Retry-After": str(math.ceil(retry_after))},
            )
        default = {
            403: "Resource not accessible by personal access token",
            503: "Service Unavailable",
        }.get(status, "Server Error")
        return ApiError(status, message or default)

    def handle_git(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Serve git smart HTTP for `/{owner}/{repo}.git/...` through git http-backend."""
        path, _, query = raw_path.partition("?")
        parts = urllib.parse.unquote(path).lstrip("/").split("/", 2)
        key = (parts[0].lower(), parts[1].removesuffix(".git").lower()) if len(parts) == 3 else None
        if key is None or key not in self.repos:
            return 404, {"Content-Type": "text/plain"}, b"Repository not found.\n"
        repo = self.repos[key]
        path_info = f"/{repo.owner}/{repo.name}.git/{parts[2]}"
        status, cgi_headers, payload = http_backend(
            self.root, method, path_info, query, headers, body
        )
        if parts[2] == "git-receive-pack" and status == 200:
            repo.pushed_at = now_iso()
        return status, dict(cgi_headers), payload


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes
    server_app: FakeGitHub

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        app = self.server_app
        body = self._body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            if self.path.startswith(app.prefix + "/") or self.path == app.prefix:
                status, out, payload = app.handle_api(
                    self.command, self.path[len(app.prefix) :] or "/", headers, body
                )
            elif ".git/" in self.path:
                status, out, payload = app.handle_git(self.command, self.path, headers, body)
            else:
                status, out, payload = app._violation(
                    self.command,
                    self.path,
                    f"unimplemented route: {self.command} {self.path} "
                    f"(outside {app.prefix} and not a git URL)",
                )
        except Exception as exc:  # a bug in the fake: fail loudly, never hang the client
            status, out, payload = app._violation(
                self.command,
                self.path,
                f"fake GitHub crashed on {self.command} {self.path}: {type(exc).__name__}: {exc}",
            )
        self.send_response(status, _REASONS.get(status))
        for name, value in out.items():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


_REASONS = {VIOLATION_STATUS: "Fake GitHub Violation", 422: "Unprocessable Entity"}
