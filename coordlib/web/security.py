"""Who may talk to ``coord web``, and how it knows: pure checks, no I/O but the token file.

- **The token.** Actions (stop, retry, bounce, merge, approve) need ``Authorization: Bearer
  <token>``.  A cross-site form or ``<img>`` cannot set that header, and a cross-origin
  ``fetch`` that sets it needs a CORS preflight this server never grants: that is the CSRF
  defence.  The page gets the token from the URL's fragment (``#token=…``), which browsers
  never send to a server (so it is in no request line and no log), and keeps it in
  sessionStorage.  Tokens are compared with `hmac.compare_digest`.
- **The Host header.** Every request's Host must name the address the server is bound to
  (``localhost`` too, for a loopback address), or one the person allowed: a DNS-rebinding
  page reaches the server under its own name and is refused, reads included.
- **The Origin header**, when a browser sends one with an action, must be one of those too.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import socket
import stat
from collections.abc import Iterable
from pathlib import Path

from ..errors import UsageError

__all__ = [
    "LOOPBACK_NAMES",
    "allowed_hosts",
    "bearer_ok",
    "host_allowed",
    "is_loopback",
    "load_token",
    "new_token",
    "origin_allowed",
]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_WILDCARDS = ("0.0.0.0", "::", "")
_MIN_TOKEN = 16  # characters: a shorter one is guessable


def new_token() -> str:
    """Return a fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def load_token(path: str | os.PathLike[str]) -> str:
    """Read the token from its file (the first line, stripped); refuse a short one, and one
    that other users can read."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--token-file {p}: {exc.strerror or exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(f"--token-file {p} can be read by other users; `chmod 600 {p}`")
    token = (text.splitlines() or [""])[0].strip()
    if len(token) < _MIN_TOKEN or any(c.isspace() for c in token):
        raise UsageError(
            f"--token-file {p}: the token must be one line of at least {_MIN_TOKEN} "
            "characters with no spaces (e.g. `python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))' > FILE`)"
        )
    return token


def is_loopback(host: str) -> bool:
    """Tell whether host names this machine's loopback interface only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def allowed_hosts(host: str, port: int, extra: Iterable[str] = ()) -> frozenset[str]:
    """Return the Host header values to accept for a server bound to host:port.

    The bound address itself; for a loopback one, every loopback name too; for a wildcard
    (0.0.0.0, ::), this machine's names; and each of `extra` (a name, or name:port).
    """
    names = {host}
    if is_loopback(host):
        names.update(LOOPBACK_NAMES)
    if host in _WILDCARDS:
        names.update(LOOPBACK_NAMES)
        names.update({socket.gethostname(), socket.getfqdn()})
    out: set[str] = set()
    for name in (n for n in names if n not in _WILDCARDS):
        out.add(f"{_bracket(name)}:{port}".lower())
        if port == 80:
            out.add(_bracket(name).lower())
    for name in (n.strip().lower() for n in extra):
        if (name.startswith("[") and not name.endswith("]")) or name.count(":") == 1:
            out.add(name)  # it names its port
        elif name:
            out.add(f"{_bracket(name)}:{port}")
    return frozenset(out)


def host_allowed(header: str | None, allowed: frozenset[str]) -> bool:
    """Tell whether a request's Host header is one of `allowed`."""
    return header is not None and header.strip().lower() in allowed


def origin_allowed(header: str | None, allowed: frozenset[str]) -> bool:
    """Tell whether an Origin header (absent: not a browser's cross-site request) is ours."""
    if header is None:
        return True
    scheme, sep, rest = header.strip().lower().partition("://")
    return bool(sep) and scheme in ("http", "https") and rest in allowed


def bearer_ok(header: str | None, token: str) -> bool:
    """Tell whether an Authorization header carries exactly ``Bearer <token>``."""
    if not header or not token:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))
