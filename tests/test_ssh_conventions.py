"""OpenSSH's conventions, as a new user with a ``~/.ssh/config`` and an ssh-agent meets them.

Against real sshd, the real ssh-agent and ssh-add, and OpenSSH's own ``ssh`` and
``ssh-keygen`` as the judges of what a known_hosts file trusts.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coordlib import AuthError, HostKeyError, MachineError, UnreachableError
from coordlib.runtime.known_hosts import fetch_host_key, trust_host_key
from coordlib.runtime.ssh import SSHTarget, SSHTransport
from coordlib.testing import SSHServer
from coordlib.testing.sshd import free_port
from tests.conftest import Setup

RunCoord = Callable[..., subprocess.CompletedProcess[str]]
pytestmark = pytest.mark.ssh


def ssh_config(path: Path, *blocks: tuple[str, dict[str, object]]) -> Path:
    """Write an OpenSSH client config of ``Host`` blocks and return its path."""
    lines: list[str] = []
    for alias, options in blocks:
        lines.append(f"Host {alias}")
        lines += [f"    {key} {value}" for key, value in options.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def box(server: SSHServer, **more: object) -> tuple[str, dict[str, object]]:
    """A ``Host box`` block that reaches server by its address, port, user and key."""
    return "box", {
        "HostName": server.host,
        "Port": server.port,
        "User": server.user,
        "IdentityFile": server.client_key,
        **more,
    }


def run(target: SSHTarget, argv: list[str]) -> str:
    """Run argv on target over a fresh connection and return its stdout."""

    async def go() -> str:
        t = SSHTransport(target)
        try:
            return (await t.run(argv)).out
        finally:
            await t.close()

    return asyncio.run(go())


def openssh_trusts(known: Path, name: str) -> set[str]:
    """Return the key blobs OpenSSH's `ssh-keygen -F` finds for name in known."""
    out = subprocess.run(
        ["ssh-keygen", "-F", name, "-f", str(known)], capture_output=True, text=True
    ).stdout
    return {line.split()[2] for line in out.splitlines() if line and not line.startswith("#")}


def openssh_connects(config: Path, known: Path) -> subprocess.CompletedProcess[str]:
    """Run OpenSSH's own `ssh box true` with config, checking host keys strictly against known."""
    return subprocess.run(
        ["ssh", "-F", str(config), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
         "box", "true"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def key_blob(server: SSHServer) -> str:
    return server.host_key_line.split()[1]


# --- a Host alias: HostName, Port, User and IdentityFile from the ssh config ----------------


def test_an_alias_alone_reaches_the_machine_through_the_ssh_config(
    sshd: SSHServer, tmp_path: Path
) -> None:
    config = ssh_config(tmp_path / "ssh_config", box(sshd))
    target = SSHTarget(
        name="m", host="box", known_hosts=str(sshd.known_hosts), ssh_config=str(config)
    )
    end = target.endpoint()
    assert (end.host, end.port, end.user) == (sshd.host, sshd.port, sshd.user)
    assert end.host_pattern == f"[{sshd.host}]:{sshd.port}"
    assert run(target, ["echo", "over the alias"]) == "over the alias\n"


def test_what_coordinator_yml_sets_wins_over_the_ssh_config(
    sshd: SSHServer, tmp_path: Path
) -> None:
    nowhere = free_port()
    config = ssh_config(tmp_path / "ssh_config", box(sshd, Port=nowhere))  # first value wins
    base = {"name": "m", "host": "box", "known_hosts": str(sshd.known_hosts)}
    with pytest.raises(UnreachableError) as info:
        run(SSHTarget(**base, ssh_config=str(config)), ["true"])  # type: ignore[arg-type]
    # The message names where the connection really went, and why it went there.
    assert f"cannot connect to {sshd.host}:{nowhere} (Host box in {config})" in str(info.value)
    assert info.value.reason == "refused"
    explicit = SSHTarget(**base, port=sshd.port, ssh_config=str(config))  # type: ignore[arg-type]
    assert run(explicit, ["echo", "port from coordinator.yml"]) == "port from coordinator.yml\n"


def test_proxyjump_from_the_ssh_config_is_followed(
    sshd: SSHServer, sshd_factory: Callable[..., SSHServer], tmp_path: Path
) -> None:
    inner = sshd_factory()
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts.read_text() + inner.known_hosts.read_text())
    config = ssh_config(
        tmp_path / "ssh_config",
        ("jump", {"HostName": sshd.host, "Port": sshd.port, "User": sshd.user,
                  "IdentityFile": sshd.client_key, "UserKnownHostsFile": known}),
        box(inner, ProxyJump="jump", UserKnownHostsFile=known),
    )  # fmt: skip
    target = SSHTarget(name="m", host="box", ssh_config=str(config))
    assert run(target, ["echo", "through the jump host"]) == "through the jump host\n"
    # `coord trust` asks through the jump host too: it finds the inner machine's key trusted.
    info = asyncio.run(fetch_host_key(target))
    assert info.state == "trusted" and info.pattern == f"[{inner.host}]:{inner.port}"

    # The jump host's key unknown: the message says it may be the jump host's.
    stranger = tmp_path / "jump_known_hosts"
    stranger.write_text(inner.known_hosts.read_text())
    config.write_text(
        config.read_text().replace(
            f"UserKnownHostsFile {known}", f"UserKnownHostsFile {stranger}", 1
        )
    )
    with pytest.raises(HostKeyError, match="or of ProxyJump jump"):
        run(target, ["true"])


# --- coord trust records the key where the connection (and OpenSSH) will look -----------


def test_trust_and_status_agree_on_an_alias_in_the_users_ssh_config(
    sshd: SSHServer, setup: Setup, tmp_path: Path, run_coord: RunCoord
) -> None:
    home = tmp_path / "home"
    config = ssh_config(home / ".ssh" / "config", box(sshd))
    machine = setup.add_ssh(sshd, "box")
    for key in ("port", "user", "identity_file", "known_hosts"):
        del machine[key]  # coordinator.yml names the alias, nothing more
    machine["host"] = "box"
    coordinator_yml = setup.write()
    coordinator_yml.write_text(coordinator_yml.read_text().replace(
        "test_command: 'true'", f"test_command: 'true'\n  url: {setup.repo.origin}"))  # fmt: skip
    env = {"HOME": str(home)}

    before = run_coord("status", "--json", config=coordinator_yml, env=env)
    (row,) = json.loads(before.stdout)["machines"]
    assert f"the host key of {sshd.host}:{sshd.port}" in row["error"], row
    assert "coord trust box" in row["error"]

    res = run_coord("trust", "box", "--yes", "--json", config=coordinator_yml, env=env)
    assert res.returncode == 0, res.stderr
    known = home / ".ssh" / "known_hosts"
    facts = json.loads(res.stdout)
    assert facts["host"] == sshd.host and facts["port"] == sshd.port, facts
    assert facts["known_hosts"] == str(known) and facts["recorded"], facts
    # Recorded under the HostName and port, as OpenSSH records and looks it up.
    assert openssh_trusts(known, f"[{sshd.host}]:{sshd.port}") == {key_blob(sshd)}
    assert openssh_trusts(known, "box") == set()
    assert openssh_connects(config, known).returncode == 0

    after = run_coord("status", "--json", config=coordinator_yml, env=env)
    assert after.returncode == 0, after.stderr
    (row,) = json.loads(after.stdout)["machines"]
    assert row["reachable"], row
    again = run_coord("trust", "box", "--json", config=coordinator_yml, env=env)
    assert json.loads(again.stdout)["state"] == "trusted", again.stderr
    # And work goes there through the alias: a dispatch, then its end.
    assigned = run_coord("assign", "box", "api", "1", "--title", "Over the alias", "--json",
                         config=coordinator_yml, env=env)  # fmt: skip
    assert assigned.returncode == 0, assigned.stderr
    waited = run_coord("wait", json.loads(assigned.stdout)["id"], config=coordinator_yml,
                       env=env, timeout=120)  # fmt: skip
    assert waited.returncode == 0, waited.stdout + waited.stderr


def test_trust_records_under_the_host_key_alias(sshd: SSHServer, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    config = ssh_config(tmp_path / "ssh_config", box(sshd, HostKeyAlias="box-key"))
    target = SSHTarget(name="m", host="box", known_hosts=str(known), ssh_config=str(config))
    with pytest.raises(HostKeyError, match="recorded as box-key"):
        run(target, ["true"])
    info = asyncio.run(fetch_host_key(target))
    assert (info.state, info.pattern) == ("unknown", "box-key")
    assert trust_host_key(target, info) == known
    assert known.read_text() == f"box-key {sshd.host_key_line}\n"
    assert openssh_connects(config, known).returncode == 0  # OpenSSH reads it the same way
    assert run(target, ["echo", "aliased key"]) == "aliased key\n"


# --- UserKnownHostsFile ---------------------------------------------------------------


def test_user_known_hosts_file_is_read_and_written_when_coordinator_yml_names_none(
    sshd: SSHServer, tmp_path: Path
) -> None:
    known = tmp_path / "elsewhere" / "known_hosts"
    config = ssh_config(tmp_path / "ssh_config", box(sshd, UserKnownHostsFile=known))
    target = SSHTarget(name="m", host="box", ssh_config=str(config))
    assert target.known_hosts_path == known
    with pytest.raises(HostKeyError) as info:
        run(target, ["true"])
    message = str(info.value)
    assert f"{sshd.host}:{sshd.port} (Host box in {config})" in message
    assert f"is not in {known}" in message and "coord trust m" in message

    trust_host_key(target, asyncio.run(fetch_host_key(target)))
    assert openssh_trusts(known, f"[{sshd.host}]:{sshd.port}") == {key_blob(sshd)}
    assert run(target, ["echo", "trusted"]) == "trusted\n"

    # known_hosts in coordinator.yml wins: an empty file there trusts nothing.
    empty = tmp_path / "empty_known_hosts"
    empty.touch()
    with pytest.raises(HostKeyError, match=f"is not in {empty}"):
        run(
            SSHTarget(name="m", host="box", known_hosts=str(empty), ssh_config=str(config)),
            ["true"],
        )


def test_user_known_hosts_file_dev_null_never_turns_host_key_checks_off(
    sshd: SSHServer, tmp_path: Path
) -> None:
    config = ssh_config(tmp_path / "ssh_config", box(sshd, UserKnownHostsFile="/dev/null"))
    target = SSHTarget(name="m", host="box", ssh_config=str(config))
    with pytest.raises(HostKeyError, match="is not in /dev/null"):
        run(target, ["true"])
    info = asyncio.run(fetch_host_key(target))
    with pytest.raises(MachineError, match="set known_hosts for this machine"):
        trust_host_key(target, info)
    assert Path("/dev/null").is_char_device()


def test_a_broken_ssh_config_is_a_machine_error_naming_the_file(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host box\n    Port not-a-number\n")
    with pytest.raises(MachineError) as info:
        SSHTarget(name="m", host="box", ssh_config=str(config)).endpoint()
    assert str(config) in str(info.value) and "ssh -G box" in str(info.value)


# --- ssh-agent beside identity_file -------------------------------------------------------


@pytest.fixture
def agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path, str], None]]:
    """A real ssh-agent of this test's own on SSH_AUTH_SOCK; call it to add a key."""
    if shutil.which("ssh-agent") is None:
        pytest.fail("ssh-agent not found: apt-get install openssh-client")
    scratch = Path(tempfile.mkdtemp(prefix="coord-agent-", dir="/tmp"))  # short socket path
    sock = scratch / "agent.sock"
    proc = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(200):
        if sock.exists():
            break
        asyncio.run(asyncio.sleep(0.01))
    monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))

    def add(key: Path, passphrase: str) -> None:
        askpass = scratch / "askpass"
        askpass.write_text(f"#!/bin/sh\necho '{passphrase}'\n")
        askpass.chmod(0o700)
        env = {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"}
        subprocess.run(
            ["ssh-add", str(key)], env=env, check=True, capture_output=True,
            stdin=subprocess.DEVNULL, timeout=30,
        )  # fmt: skip

    try:
        yield add
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(scratch, ignore_errors=True)


def keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "t", "-f", str(path)],
        check=True,
    )
    return path


@pytest.fixture
def locked_key_server(
    sshd_factory: Callable[..., SSHServer], tmp_path: Path
) -> tuple[SSHServer, Path]:
    """An sshd that accepts only a passphrase-protected key, and that key."""
    server = sshd_factory()
    locked = keygen(tmp_path / "locked", passphrase="secret")
    (server.dir / "authorized_keys").write_text(Path(f"{locked}.pub").read_text())
    return server, locked


def locked_target(server: SSHServer, identity_file: Path | None) -> SSHTarget:
    return SSHTarget(
        name="m",
        host=server.host,
        port=server.port,
        user=server.user,
        identity_file=None if identity_file is None else str(identity_file),
        known_hosts=str(server.known_hosts),
        ssh_config="/dev/null",  # nothing from the ssh config: the agent alone must do it
    )


def test_the_agent_unlocks_a_passphrase_protected_identity_file(
    locked_key_server: tuple[SSHServer, Path], agent: Callable[[Path, str], None]
) -> None:
    server, locked = locked_key_server
    agent(locked, "secret")
    assert run(locked_target(server, locked), ["echo", "agent"]) == "agent\n"


def test_the_agent_is_used_beside_another_identity_file(
    locked_key_server: tuple[SSHServer, Path], agent: Callable[[Path, str], None], tmp_path: Path
) -> None:
    server, locked = locked_key_server
    agent(locked, "secret")
    other = keygen(tmp_path / "other")  # not authorized on the machine
    assert run(locked_target(server, other), ["echo", "agent too"]) == "agent too\n"
    assert run(locked_target(server, None), ["echo", "agent only"]) == "agent only\n"


def test_a_locked_key_without_an_agent_is_an_auth_error_that_says_ssh_add(
    locked_key_server: tuple[SSHServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, locked = locked_key_server
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    t = SSHTransport(locked_target(server, locked))
    with pytest.raises(AuthError) as info:
        asyncio.run(t.run(["true"]))
    message = str(info.value)
    assert f"{server.host}:{server.port} refused the key for {server.user}" in message
    assert f"ssh-add {locked}" in message
    assert t.stats["connects"] == 1  # never retried


def test_an_unreadable_or_broken_identity_file_is_an_auth_error(
    sshd: SSHServer, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-key"
    kw: dict[str, Any] = {"known_hosts": str(sshd.known_hosts), "ssh_config": "/dev/null"}
    target = SSHTarget(name="m", host=sshd.host, port=sshd.port, identity_file=str(missing), **kw)
    with pytest.raises(AuthError, match=f"identity_file {missing} cannot be read"):
        run(target, ["true"])
    missing.write_text("not a key\n")
    with pytest.raises(AuthError, match=f"cannot use identity_file {missing}: "):
        run(target, ["true"])
