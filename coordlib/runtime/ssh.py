"""`SSHTransport`: a machine reached over SSH with asyncssh, one connection per machine.

What FACTS.md measured shapes this module: every remote command starts a login
shell on the far side (so callers batch work into few commands), sshd allows 10
channels per connection by default (so channels are bounded below that), its
``MaxStartups`` drops bursts of handshakes (so handshakes are bounded
process-wide), and asyncssh never notices a dead peer without keepalives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from ..errors import AuthError, CommandTimeout, HostKeyError, MachineError, UnreachableError
from .command import join
from .transport import CompletedCommand, Transport

__all__ = ["HostKeyInfo", "SSHTarget", "SSHTransport", "fetch_host_key"]

# Concurrent handshakes: at most MAX_HANDSHAKES to any one sshd (its default MaxStartups,
# 10:30:100, starts dropping past 10 at once), and MAX_HANDSHAKES_TOTAL in all, which bounds
# this process's own work (a handshake costs ~7 ms of CPU here) when a fleet is asked at once.
MAX_HANDSHAKES = 8
MAX_HANDSHAKES_TOTAL = 64
_HANDSHAKES: dict[asyncio.AbstractEventLoop, dict[tuple[str, int] | None, asyncio.Semaphore]] = {}
# Below sshd's default MaxSessions 10: one channel stays free for a keepalive or a retry.
MAX_CHANNELS = 8


@contextlib.asynccontextmanager
async def _handshake_slot(host: str, port: int) -> AsyncIterator[None]:
    """Hold one of the handshake slots for `host`:`port`, and one of the process's."""
    loop = asyncio.get_running_loop()
    slots = _HANDSHAKES.get(loop)
    if slots is None:
        for old in [lp for lp in _HANDSHAKES if lp.is_closed()]:
            del _HANDSHAKES[old]
        slots = _HANDSHAKES[loop] = {None: asyncio.Semaphore(MAX_HANDSHAKES_TOTAL)}
    one = slots.get((host, port))
    if one is None:
        one = slots[(host, port)] = asyncio.Semaphore(MAX_HANDSHAKES)
    async with one, slots[None]:
        yield


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to connect: host, port, user, key and known_hosts file."""

    name: str
    host: str
    port: int = 22
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts
    connect_timeout: float = 10.0
    keepalive_interval: float = 5.0
    keepalive_count_max: int = 3

    @property
    def known_hosts_path(self) -> Path:
        """Return the known_hosts file this machine's key is checked against."""
        return Path(os.path.expanduser(self.known_hosts or "~/.ssh/known_hosts"))

    @property
    def host_pattern(self) -> str:
        """Return the host as known_hosts writes it (``[host]:port`` off port 22)."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


_TRANSIENT = (OSError, asyncssh.ConnectionLost, asyncio.TimeoutError)


class SSHTransport(Transport):
    """Run commands on a machine over one reused asyncssh connection."""

    def __init__(self, target: SSHTarget, *, max_channels: int = MAX_CHANNELS) -> None:
        super().__init__(target.name)
        self.target = target
        self._conn: asyncssh.SSHClientConnection | None = None
        self._connecting = asyncio.Lock()
        self._channels = asyncio.Semaphore(max_channels)

    # ------------------------------------------------------------ connection
    async def connect(self) -> asyncssh.SSHClientConnection:
        """Return the open connection, opening it (with retries) when needed."""
        async with self._connecting:
            if self._conn is not None and not _is_closed(self._conn):
                return self._conn
            self._conn = None
            try:
                async for attempt in AsyncRetrying(
                    # A refused or reset connection is worth another try; a connect that
                    # already ran out its timeout is not (it would triple the wait).
                    retry=retry_if_exception_type(_TRANSIENT)
                    & retry_if_not_exception_type(TimeoutError),
                    stop=stop_after_attempt(3),
                    wait=wait_exponential(multiplier=0.2, max=2.0),
                    reraise=True,
                ):
                    with attempt:
                        conn = await self._open()
            except asyncssh.HostKeyNotVerifiable as exc:
                raise self._host_key_error() from exc
            except asyncssh.PermissionDenied as exc:
                user = self.target.user or "the default user"
                raise AuthError(
                    f"{self.target.host}:{self.target.port} refused the key for {user} "
                    f"(check identity_file and the machine's authorized_keys)",
                    machine=self.name,
                ) from exc
            except (*_TRANSIENT, asyncssh.Error) as exc:
                if isinstance(exc, TimeoutError):
                    reason, why = "timeout", f"no answer within {self.target.connect_timeout:g} s"
                else:
                    refused = isinstance(exc, ConnectionRefusedError)
                    reason, why = ("refused" if refused else "unreachable"), _describe(exc)
                raise UnreachableError(
                    f"cannot connect to {self.target.host}:{self.target.port}: {why}",
                    machine=self.name,
                    reason=reason,
                ) from exc
            self._conn = conn
            return conn

    async def _open(self) -> asyncssh.SSHClientConnection:
        t = self.target
        options: dict[str, Any] = {
            "port": t.port,
            "known_hosts": _load_known_hosts(t.known_hosts_path),
            "connect_timeout": t.connect_timeout,
            "keepalive_interval": t.keepalive_interval,
            "keepalive_count_max": t.keepalive_count_max,
        }
        if t.user:
            options["username"] = t.user
        if t.identity_file:
            options["client_keys"] = [os.path.expanduser(t.identity_file)]
        async with _handshake_slot(t.host, t.port):
            self.stats["connects"] += 1
            return await asyncssh.connect(t.host, **options)

    def _host_key_error(self) -> HostKeyError:
        t = self.target
        known = _load_known_hosts(t.known_hosts_path)
        keys, *_ = known.match(t.host, "", t.port)
        if keys:
            return HostKeyError(
                f"the host key of {t.host_pattern} CHANGED since it was recorded in "
                f"{t.known_hosts_path}; if the machine was reinstalled, run "
                f"`coord trust {self.name} --replace`, otherwise investigate",
                machine=self.name,
            )
        return HostKeyError(
            f"the host key of {t.host_pattern} is not in {t.known_hosts_path}; "
            f"check its fingerprint and trust it with `coord trust {self.name}`",
            machine=self.name,
        )

    async def close(self) -> None:
        """Close the connection; the next command opens a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await conn.wait_closed()

    # ------------------------------------------------------------ commands
    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = 60.0,
        check: bool = True,
        what: str | None = None,
    ) -> CompletedCommand:
        """Run argv on the machine; raise `CommandError` on failure when check is true."""
        command = join(argv)
        async with self._channels:
            for attempt in (1, 2):
                conn = await self.connect()
                try:
                    self.stats["commands"] += 1
                    proc = await conn.create_process(command, encoding=None)
                except (asyncssh.ChannelOpenError, asyncssh.ConnectionLost, OSError) as exc:
                    # The command never started, so it is safe to try once more.
                    await self._drop(conn)
                    if attempt == 2:
                        raise UnreachableError(
                            f"cannot open a channel: {_describe(exc)}", machine=self.name
                        ) from exc
                    continue
                try:
                    if input is not None:
                        proc.stdin.write(input)
                    proc.stdin.write_eof()
                    result = await asyncio.wait_for(proc.wait(), timeout)
                except TimeoutError:
                    proc.close()
                    raise CommandTimeout(
                        f"{what or 'command'} did not finish within {timeout:g} s",
                        machine=self.name,
                    ) from None
                except (asyncssh.ConnectionLost, asyncssh.DisconnectError, OSError) as exc:
                    await self._drop(conn)
                    raise UnreachableError(
                        f"connection lost while running {what or 'a command'}: {_describe(exc)}",
                        machine=self.name,
                        command_sent=True,
                        reason="lost",
                    ) from exc
                except BaseException:
                    proc.close()
                    raise
                if result.exit_status is None and result.exit_signal is None:
                    await self._drop(conn)
                    raise UnreachableError(
                        f"connection lost while running {what or 'a command'}",
                        machine=self.name,
                        command_sent=True,
                        reason="lost",
                    )
                code = result.exit_status if result.exit_status is not None else 255
                out = _as_bytes(result.stdout)
                err = _as_bytes(result.stderr)
                return self._checked(CompletedCommand(list(argv), code, out, err), check, what)
        raise AssertionError("unreachable")  # pragma: no cover

    async def stream(self, argv: Sequence[str]) -> AsyncIterator[bytes]:
        """Yield argv's stdout as it arrives; raise `UnreachableError` if the link drops."""
        command = join(argv)
        async with self._channels:
            conn = await self.connect()
            try:
                self.stats["commands"] += 1
                proc = await conn.create_process(command, encoding=None, stdin=asyncssh.DEVNULL)
            except (asyncssh.ChannelOpenError, asyncssh.ConnectionLost, OSError) as exc:
                await self._drop(conn)
                raise UnreachableError(
                    f"cannot open a channel: {_describe(exc)}", machine=self.name
                ) from exc
            try:
                yield b""  # running: see `Transport.stream`
                while True:
                    try:
                        chunk = await proc.stdout.read(65536)
                    except (asyncssh.ConnectionLost, asyncssh.DisconnectError, OSError) as exc:
                        await self._drop(conn)
                        raise UnreachableError(
                            f"connection lost while streaming: {_describe(exc)}",
                            machine=self.name,
                            command_sent=True,
                            reason="lost",
                        ) from exc
                    if not chunk:
                        break
                    yield chunk
                await proc.wait_closed()
                if proc.exit_status is None and proc.exit_signal is None:
                    await self._drop(conn)
                    raise UnreachableError(
                        "connection lost while streaming",
                        machine=self.name,
                        command_sent=True,
                        reason="lost",
                    )
                if proc.exit_status:
                    err = _as_bytes(await proc.stderr.read())
                    self._checked(
                        CompletedCommand(list(argv), proc.exit_status, b"", err), True, None
                    )
            finally:
                proc.close()

    async def upload(self, data: bytes, path: str, *, mode: int = 0o600) -> None:
        """Write data to path on the machine over SFTP (``~/`` is the login dir), atomically."""
        conn = await self.connect()
        if path.startswith("~/"):
            path = path[2:]
        parent = posixpath.dirname(path)
        tmp = f"{path}.coord-tmp"
        try:
            async with self._channels, conn.start_sftp_client() as sftp:
                if parent:
                    await sftp.makedirs(parent, exist_ok=True)
                attrs = asyncssh.SFTPAttrs(permissions=mode)
                async with sftp.open(tmp, "wb", attrs=attrs) as f:
                    await f.write(data)
                await sftp.posix_rename(tmp, path)
        except asyncssh.SFTPError as exc:
            raise MachineError(f"cannot upload {path}: {exc.reason}", machine=self.name) from exc
        except (asyncssh.ConnectionLost, asyncssh.ChannelOpenError, OSError) as exc:
            await self._drop(conn)
            raise UnreachableError(
                f"connection lost during upload: {_describe(exc)}", machine=self.name
            ) from exc

    async def _drop(self, conn: asyncssh.SSHClientConnection) -> None:
        if self._conn is conn:
            self._conn = None
        conn.abort()


def _is_closed(conn: asyncssh.SSHClientConnection) -> bool:
    return conn._transport is None or conn._transport.is_closing()


def _as_bytes(data: Any) -> bytes:
    if data is None:
        return b""
    return data if isinstance(data, bytes) else str(data).encode()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, asyncio.TimeoutError) and not text:
        return "timed out"
    return text or type(exc).__name__


def _load_known_hosts(path: Path) -> asyncssh.SSHKnownHosts:
    if path.is_file():
        return asyncssh.read_known_hosts(str(path))
    return asyncssh.import_known_hosts("")


# ---------------------------------------------------------------- trust
@dataclass(frozen=True)
class HostKeyInfo:
    """A machine's host key as presented, and what known_hosts says about it."""

    pattern: str
    algorithm: str
    fingerprint: str
    line: str  # the known_hosts line that trusts it
    state: str  # "unknown" | "trusted" | "changed"


async def fetch_host_key(target: SSHTarget) -> HostKeyInfo:
    """Ask the machine for its host key without authenticating, and compare with known_hosts."""
    try:
        key = await asyncio.wait_for(
            asyncssh.get_server_host_key(target.host, target.port), target.connect_timeout
        )
    except (TimeoutError, OSError, asyncssh.Error) as exc:
        raise UnreachableError(
            f"cannot reach {target.host}:{target.port}: {_describe(exc)}", machine=target.name
        ) from exc
    if key is None:
        raise UnreachableError("the server sent no host key", machine=target.name)
    public = key.export_public_key("openssh").decode().strip()
    algorithm, blob = public.split()[:2]
    known = _load_known_hosts(target.known_hosts_path)
    keys, *_ = known.match(target.host, "", target.port)
    state = "unknown"
    if keys:
        state = "trusted" if any(k == key for k in keys) else "changed"
    return HostKeyInfo(
        pattern=target.host_pattern,
        algorithm=algorithm,
        fingerprint=key.get_fingerprint("sha256"),
        line=f"{target.host_pattern} {algorithm} {blob}",
        state=state,
    )
