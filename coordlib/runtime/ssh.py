"""`SSHTransport`: a machine reached over SSH with asyncssh, one connection per machine.

What FACTS.md measured shapes this module: every remote command starts a login
shell on the far side (so callers batch work into few commands), sshd allows 10
channels per connection by default (so channels are bounded below that), its
``MaxStartups`` drops bursts of handshakes (so handshakes are bounded
process-wide), and asyncssh never notices a dead peer without keepalives.

OpenSSH's conventions hold as they do for ``ssh HOST``: only what coordinator.yml sets is
passed on, so ``~/.ssh/config`` fills in the rest (``HostName``, ``Port``, ``User``,
``ProxyJump``, ``IdentityFile``, ``UserKnownHostsFile``, ``HostKeyAlias``), ssh-agent's keys
are offered beside an ``identity_file``, and host keys are looked up and recorded under the
name OpenSSH uses: the resolved ``HostName`` (``[host]:port`` off port 22), or the
``HostKeyAlias``.  `SSHTarget.endpoint` resolves the config the way the connection does, so
`coord trust`, the connection and every message agree on where a machine is.
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

__all__ = ["Endpoint", "HostKeyInfo", "SSHTarget", "SSHTransport"]

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
class Endpoint:
    """Where a machine's connection goes once the ssh config has filled in what coordinator.yml
    left out, and which known_hosts entries vouch for it."""

    alias: str  # the host as coordinator.yml names it
    host: str  # the ssh config's HostName for it, else the alias
    port: int
    user: str
    host_key_alias: str | None
    known_hosts: tuple[Path, ...]  # checked together; `coord trust` writes the first
    ssh_config: str | None  # the ssh config file read, if any
    proxy_jump: str | None = None  # the ssh config's ProxyJump: reached through these hosts

    @property
    def address(self) -> str:
        """Return ``host:port`` (``[host]:port`` for an IPv6 address)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def where(self) -> str:
        """Return the address for messages, saying which ssh config turned the alias into it."""
        if self.alias == self.host or not self.ssh_config:
            return self.address
        return f"{self.address} (Host {self.alias} in {self.ssh_config})"

    @property
    def host_pattern(self) -> str:
        """Return the name known_hosts records the key under, as OpenSSH writes it."""
        if self.host_key_alias:
            return self.host_key_alias
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def load_known_hosts(self) -> asyncssh.SSHKnownHosts:
        """Read the known_hosts files that exist (with none, nothing is trusted)."""
        return asyncssh.read_known_hosts([str(p) for p in self.known_hosts if p.is_file()])

    def trusted_keys(self) -> list[asyncssh.SSHKey]:
        """Return the keys known_hosts trusts for this endpoint, matched as the connection is."""
        name = self.host_key_alias or self.host
        found = self.load_known_hosts().match(name, "", None if self.port == 22 else self.port)
        return list(found[0])


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to connect, as coordinator.yml says; the ssh config fills in the rest.

    None (or unset) means "not given": the ssh config's value applies, else OpenSSH's default.
    """

    name: str
    host: str  # a name, an address, or a ``Host`` alias of the ssh config
    port: int | None = None  # None: the ssh config's Port, else 22
    user: str | None = None  # None: the ssh config's User, else the local user
    identity_file: str | None = None  # offered alongside ssh-agent's keys
    known_hosts: str | None = None  # None: UserKnownHostsFile, else ~/.ssh/known_hosts
    connect_timeout: float = 10.0
    keepalive_interval: float = 5.0
    keepalive_count_max: int = 3
    ssh_config: str | None = None  # None: ~/.ssh/config, when there is one

    def config_paths(self) -> list[str]:
        """Return the ssh config files to read (none when ~/.ssh/config does not exist)."""
        if self.ssh_config is not None:
            return [os.path.expanduser(self.ssh_config)]
        default = os.path.expanduser("~/.ssh/config")
        return [default] if os.access(default, os.R_OK) else []

    def endpoint(self) -> Endpoint:
        """Resolve this target through the ssh config, as asyncssh's connection will."""
        paths = self.config_paths()
        try:
            # The same options object `asyncssh.connect` builds, minus the keys: reading the
            # config through it makes the answer the connection's own.  (It never connects:
            # its empty known_hosts trusts nothing; the connection reads the real ones.)
            opts = asyncssh.SSHClientConnectionOptions(
                config=paths,
                host=self.host,
                port=self.port if self.port is not None else (),
                username=self.user or (),
                client_keys=None,
                known_hosts=(),
            )
        except (OSError, ValueError) as exc:
            where = paths[0] if paths else "the ssh config"
            raise MachineError(
                f"cannot read {where}: {_describe(exc)}; fix it (`ssh -G {self.host}` shows "
                f"how OpenSSH reads it)",
                machine=self.name,
            ) from exc
        if self.known_hosts:
            files = [self.known_hosts]
        else:
            # UserKnownHostsFile `none` reads as []: host keys are still checked, here.
            files = list(_config_list(opts, "UserKnownHostsFile")) or ["~/.ssh/known_hosts"]
            files += _config_list(opts, "GlobalKnownHostsFile")
        return Endpoint(
            alias=self.host,
            host=str(opts.host),
            port=int(opts.port),
            user=str(opts.username),
            host_key_alias=opts.host_key_alias or None,
            known_hosts=tuple(Path(os.path.expanduser(f)) for f in files),
            ssh_config=paths[0] if paths else None,
            proxy_jump=opts.tunnel if isinstance(opts.tunnel, str) else None,
        )

    @property
    def known_hosts_path(self) -> Path:
        """Return the known_hosts file `coord trust` records this machine's key in."""
        if self.known_hosts:
            return Path(os.path.expanduser(self.known_hosts))
        return self.endpoint().known_hosts[0]

    @property
    def host_pattern(self) -> str:
        """Return the name known_hosts records the key under (``[host]:port`` off port 22)."""
        return self.endpoint().host_pattern


def _config_list(opts: asyncssh.SSHClientConnectionOptions, option: str) -> list[str]:
    value = opts.config.get(option, [])
    return [str(v) for v in value] if isinstance(value, list) else []


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
            # Read again for each new connection: an edited ~/.ssh/config applies next time.
            end = self.target.endpoint()
            key = self.target.identity_file
            if key and not os.access(os.path.expanduser(key), os.R_OK):
                raise AuthError(
                    f"identity_file {key} cannot be read; fix the path in coordinator.yml, "
                    f"or remove it to use ssh-agent and the ssh config's IdentityFile",
                    machine=self.name,
                )
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
                        conn = await self._open(end)
            except asyncssh.HostKeyNotVerifiable as exc:
                raise self._host_key_error(end, exc) from exc
            except asyncssh.PermissionDenied as exc:
                raise self._auth_error(end) from exc
            except asyncssh.KeyImportError as exc:
                what = f"identity_file {key}" if key else f"an IdentityFile of {end.ssh_config}"
                raise AuthError(
                    f"cannot use {what}: {_describe(exc)}; point it at an OpenSSH private key",
                    machine=self.name,
                ) from exc
            except (*_TRANSIENT, asyncssh.Error) as exc:
                if isinstance(exc, TimeoutError):
                    reason, why = "timeout", f"no answer within {self.target.connect_timeout:g} s"
                else:
                    refused = isinstance(exc, ConnectionRefusedError)
                    reason, why = ("refused" if refused else "unreachable"), _describe(exc)
                raise UnreachableError(
                    f"cannot connect to {end.where}: {why}", machine=self.name, reason=reason
                ) from exc
            self._conn = conn
            return conn

    async def _open(self, end: Endpoint) -> asyncssh.SSHClientConnection:
        t = self.target
        # Only what coordinator.yml sets is passed: the ssh config (the same file `end` was
        # read from) fills in the rest.  known_hosts is always given, so the host key is
        # always checked, even where the ssh config says `UserKnownHostsFile none`.
        options: dict[str, Any] = {
            "config": t.config_paths(),
            "known_hosts": end.load_known_hosts(),
            "connect_timeout": t.connect_timeout,
            "keepalive_interval": t.keepalive_interval,
            "keepalive_count_max": t.keepalive_count_max,
        }
        if t.port is not None:
            options["port"] = t.port
        if t.user:
            options["username"] = t.user
        if t.identity_file:
            # ssh-agent's keys are offered too (asyncssh asks SSH_AUTH_SOCK, or the ssh
            # config's IdentityAgent); a passphrase-protected file is skipped rather than
            # fatal, since the agent can hold it unlocked, as `ssh -i` does.
            options["client_keys"] = [os.path.expanduser(t.identity_file)]
            options["ignore_encrypted"] = True
        async with _handshake_slot(end.host, end.port):
            self.stats["connects"] += 1
            return await asyncssh.connect(t.host, **options)

    def _host_key_error(self, end: Endpoint, exc: Exception) -> HostKeyError:
        files = ", ".join(map(str, end.known_hosts))
        named = "" if end.host_pattern == end.address else f" (recorded as {end.host_pattern})"
        if end.proxy_jump:  # the jump host's own key may be the one refused: say whose it was
            named += f" or of ProxyJump {end.proxy_jump} ({_describe(exc)})"
        if end.trusted_keys():
            return HostKeyError(
                f"the host key of {end.where}{named} CHANGED since it was recorded in "
                f"{files}; if the machine was reinstalled, run "
                f"`coord trust {self.name} --replace`, otherwise investigate",
                machine=self.name,
            )
        return HostKeyError(
            f"the host key of {end.where}{named} is not in {files}; "
            f"check its fingerprint and trust it with `coord trust {self.name}`",
            machine=self.name,
        )

    def _auth_error(self, end: Endpoint) -> AuthError:
        key = self.target.identity_file
        text = (
            f"{end.where} refused the key for {end.user}; check identity_file, the keys "
            f"ssh-agent holds and the machine's authorized_keys"
        )
        if key and _needs_passphrase(os.path.expanduser(key)):
            text += f" ({key} has a passphrase, which coord never asks for: `ssh-add {key}`)"
        return AuthError(text, machine=self.name)

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


def _needs_passphrase(path: str) -> bool:
    try:
        asyncssh.read_private_key(path)
    except asyncssh.KeyImportError as exc:
        return "passphrase" in str(exc).lower()
    except OSError:
        return False
    return False


# ---------------------------------------------------------------- trust
@dataclass(frozen=True)
class HostKeyInfo:
    """A machine's host key as presented, and what known_hosts says about it."""

    pattern: str
    algorithm: str
    fingerprint: str
    line: str  # the known_hosts line that trusts it
    state: str  # "unknown" | "trusted" | "changed"
