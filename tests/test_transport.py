"""Both transports behind one interface, against real sshd and real subprocesses."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from coordlib import AuthError, CommandError, CommandTimeout, UnreachableError
from coordlib.runtime.local import LocalTransport
from coordlib.runtime.ssh import SSHTarget, SSHTransport
from coordlib.runtime.transport import Transport
from coordlib.testing import SSHServer


def target(server: SSHServer, **kw: Any) -> SSHTarget:
    return SSHTarget(
        name="m",
        host=server.host,
        port=server.port,
        user=server.user,
        identity_file=str(server.client_key),
        known_hosts=str(server.known_hosts),
        **kw,
    )


@pytest.fixture(params=["local", "ssh"])
def transport(request: pytest.FixtureRequest) -> Transport:
    if request.param == "local":
        return LocalTransport("local")
    return SSHTransport(target(request.getfixturevalue("sshd")))


def test_run_check_input_timeout_stream_upload(transport: Transport, tmp_path: Path) -> None:
    async def go() -> None:
        try:
            r = await transport.run(
                ["bash", "-c", "printf '%s|' \"$@\"; cat", "x", "a b", "$(c)"],
                input=b"stdin bytes\n",
            )
            assert r.out == "a b|$(c)|stdin bytes\n"
            r = await transport.run(["bash", "-c", "echo oops >&2; exit 7"], check=False)
            assert (r.returncode, r.err) == (7, "oops\n")
            with pytest.raises(CommandError, match="status 7: oops") as info:
                await transport.run(["bash", "-c", "echo oops >&2; exit 7"], what="probe")
            assert info.value.returncode == 7 and info.value.machine == transport.name
            with pytest.raises(CommandTimeout):
                await transport.run(["sleep", "5"], timeout=0.3)
            chunks = [
                c
                async for c in transport.stream(
                    ["bash", "-c", "for i in 1 2 3; do echo $i; sleep 0.05; done"]
                )
            ]
            assert b"".join(chunks) == b"1\n2\n3\n"
            target_file = tmp_path / "up" / "file.txt"
            await transport.upload(b"payload", str(target_file))
            assert target_file.read_bytes() == b"payload"
            assert target_file.stat().st_mode & 0o777 == 0o600
        finally:
            await transport.close()

    asyncio.run(go())


def test_one_connection_and_bounded_channels_under_default_sshd_limits(sshd_factory: Any) -> None:
    # sshd's defaults: MaxSessions 10 channels per connection, MaxStartups 10:30:100.
    server = sshd_factory(max_sessions=10, max_startups="10:30:100")
    t = SSHTransport(target(server))

    async def go() -> list[str]:
        try:
            results = await asyncio.gather(
                *(t.run(["bash", "-c", f"sleep 0.2; echo {i}"]) for i in range(40))
            )
            return [r.out.strip() for r in results]
        finally:
            await t.close()

    assert asyncio.run(go()) == [str(i) for i in range(40)]
    assert t.stats["connects"] == 1 and t.stats["commands"] == 40


def test_many_machines_pace_their_handshakes(sshd_factory: Any) -> None:
    server = sshd_factory(max_startups="10:30:100")
    transports = [SSHTransport(target(server)) for _ in range(30)]

    async def go() -> None:
        try:
            await asyncio.gather(*(t.run(["true"]) for t in transports))
        finally:
            await asyncio.gather(*(t.close() for t in transports))

    asyncio.run(go())


def test_wrong_key_is_an_auth_error_never_retried(sshd: SSHServer, tmp_path: Path) -> None:
    import subprocess

    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    t = SSHTransport(
        target(sshd)
        if False
        else SSHTarget(
            name="m",
            host=sshd.host,
            port=sshd.port,
            user=sshd.user,
            identity_file=str(other),
            known_hosts=str(sshd.known_hosts),
        )
    )

    with pytest.raises(AuthError, match="refused the key"):
        asyncio.run(t.run(["true"]))
    assert t.stats["connects"] == 1


def test_connection_refused_is_unreachable_quickly() -> None:
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = SSHTransport(SSHTarget(name="gone", host="127.0.0.1", port=port))
    t0 = time.monotonic()
    with pytest.raises(UnreachableError, match="gone: cannot connect"):
        asyncio.run(t.run(["true"]))
    assert time.monotonic() - t0 < 5
