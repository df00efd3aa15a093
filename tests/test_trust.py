"""Tests for `coord trust`: recording a machine's host key, and replacing one that changed."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import asyncssh
import pytest

from coordlib.errors import HostKeyError
from coordlib.runtime.known_hosts import trust_host_key
from coordlib.runtime.ssh import HostKeyInfo, SSHTarget
from coordlib.testing import SSHServer
from tests.conftest import Setup

RunCoord = Callable[..., subprocess.CompletedProcess[str]]


def new_key() -> str:
    """Return a fresh ed25519 public key as "<alg> <base64>"."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


def hashed(tmp_path: Path, line: str) -> str:
    """Return line with its host hashed by OpenSSH's own `ssh-keygen -H`."""
    scratch = tmp_path / "to-hash"
    scratch.write_text(line + "\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(scratch)], check=True, capture_output=True)
    return scratch.read_text().strip()


def trusted_by_openssh(known: Path, pattern: str) -> set[str]:
    """Return the keys (base64) OpenSSH's `ssh-keygen -F` finds trusted for pattern in known."""
    out = subprocess.run(
        ["ssh-keygen", "-F", pattern, "-f", str(known)], capture_output=True, text=True
    ).stdout
    return {
        line.split()[2]
        for line in out.splitlines()
        if line.strip() and not line.startswith(("#", "@"))
    }


def info_for(target: SSHTarget, key: str, state: str = "changed") -> HostKeyInfo:
    """Return what `fetch_host_key` would say about a machine presenting key."""
    public = asyncssh.import_public_key(key)
    return HostKeyInfo(
        pattern=target.host_pattern,
        algorithm=key.split()[0],
        fingerprint=public.get_fingerprint("sha256"),
        line=f"{target.host_pattern} {key}",
        state=state,
    )


def trusted_by_asyncssh(target: SSHTarget) -> list[str]:
    """Return the keys coordlib's own connections would accept from target."""
    known = asyncssh.read_known_hosts(str(target.known_hosts_path))
    keys = known.match(target.host, "", target.port)[0]
    return [" ".join(k.export_public_key("openssh").decode().split()[:2]) for k in keys]


# --- through the CLI, against a real sshd ------------------------------------------------


def test_replace_drops_the_old_key_hashed_and_plain(
    setup: Setup, sshd: SSHServer, tmp_path: Path, run_coord: RunCoord
) -> None:
    pattern = f"[127.0.0.1]:{sshd.port}"
    old, other, ca = new_key(), new_key(), new_key()
    unrelated = [
        "# kept as written",
        hashed(tmp_path, f"other.example.com {other}"),
        f"other.example.com,10.0.0.9 {other}",
        f"@cert-authority *.example.com {ca}",
        f"@revoked {pattern} {old}",
    ]
    known = tmp_path / "known_hosts"
    known.write_text(
        "\n".join(
            [
                unrelated[0],
                hashed(tmp_path, f"{pattern} {old}"),  # what Debian's ssh writes
                unrelated[1],
                f"{pattern},old-alias {old}",
                unrelated[2],
                f"{pattern} {old}",
                *unrelated[3:],
            ]
        )
        + "\n"
    )
    known.chmod(0o644)
    assert trusted_by_openssh(known, pattern) == {old.split()[1]}
    setup.add_ssh(sshd, "remote", known_hosts=str(known))
    config = setup.write()

    refused = run_coord("status", "--json", config=config)
    assert "CHANGED" in json.loads(refused.stdout)["machines"][0]["error"]

    res = run_coord("trust", "remote", "--replace", "--yes", config=config)
    assert res.returncode == 0, res.stderr
    assert "WARNING: this is NOT the key recorded" in res.stderr

    assert trusted_by_openssh(known, pattern) == {sshd.host_key_line.split()[1]}
    lines = known.read_text().splitlines()
    for line in unrelated:
        assert line in lines
    assert f"old-alias {old}" in lines  # the other name of the list keeps its key
    assert {line for line in lines if old in line} == {
        f"@revoked {pattern} {old}",
        f"old-alias {old}",
    }
    assert lines[-1].startswith("|1|")  # the file hashes its hosts, so the new one is too
    assert known.stat().st_mode & 0o777 == 0o600

    status = run_coord("status", "--json", config=config)
    assert status.returncode == 0, status.stderr
    (machine,) = json.loads(status.stdout)["machines"]
    assert machine["reachable"], machine


# --- the library function, on files alone ------------------------------------------------


@pytest.fixture
def target(tmp_path: Path) -> SSHTarget:
    return SSHTarget(name="box", host="box.example.com", known_hosts=str(tmp_path / "kh"))


def test_replace_on_port_22_keeps_other_ports(target: SSHTarget) -> None:
    old, other_port, new = new_key(), new_key(), new_key()
    target.known_hosts_path.write_text(
        f"box.example.com {old}\n[box.example.com]:2222 {other_port}\nBOX.example.com {old}\n"
    )
    trust_host_key(target, info_for(target, new), replace=True)
    assert target.known_hosts_path.read_text().splitlines() == [
        f"[box.example.com]:2222 {other_port}",
        f"box.example.com {new}",
    ]
    assert trusted_by_asyncssh(target) == [new]


def test_a_new_entry_in_a_hashed_file_is_hashed_and_matches(
    target: SSHTarget, tmp_path: Path
) -> None:
    old, new = new_key(), new_key()
    target.known_hosts_path.write_text(hashed(tmp_path, f"box.example.com {old}") + "\n")
    trust_host_key(target, info_for(target, new), replace=True)
    (line,) = target.known_hosts_path.read_text().splitlines()
    assert line.startswith("|1|") and "box.example.com" not in line
    assert trusted_by_asyncssh(target) == [new]
    assert trusted_by_openssh(target.known_hosts_path, "box.example.com") == {new.split()[1]}


def test_a_wildcard_entry_with_the_old_key_is_named_not_edited(target: SSHTarget) -> None:
    old, new = new_key(), new_key()
    text = f"box.example.com {old}\n*.example.com,!gw.example.com {old}\n"
    target.known_hosts_path.write_text(text)
    with pytest.raises(HostKeyError) as info:
        trust_host_key(target, info_for(target, new), replace=True)
    message = str(info.value)
    assert f"{target.known_hosts_path}:2 trusts another key for box.example.com" in message
    assert "coord trust box --replace" in message
    assert target.known_hosts_path.read_text() == text  # nothing written


def test_a_wildcard_entry_that_excludes_the_host_is_kept(target: SSHTarget) -> None:
    old, new = new_key(), new_key()
    target.known_hosts_path.write_text(f"*.example.com,!box.example.com {old}\n")
    trust_host_key(target, info_for(target, new, state="unknown"), replace=True)
    assert target.known_hosts_path.read_text().splitlines() == [
        f"*.example.com,!box.example.com {old}",
        f"box.example.com {new}",
    ]


def test_known_hosts_through_a_symlink_stays_a_symlink(target: SSHTarget, tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "known_hosts"
    real.parent.mkdir()
    real.write_text(f"box.example.com {new_key()}\n")
    real.chmod(0o644)
    target.known_hosts_path.symlink_to(real)
    new = new_key()
    trust_host_key(target, info_for(target, new), replace=True)
    assert target.known_hosts_path.is_symlink()
    assert real.read_text() == f"box.example.com {new}\n"
    assert real.stat().st_mode & 0o777 == 0o600


def test_a_first_key_makes_a_private_file(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        target = SSHTarget(name="box", host="box", known_hosts=str(tmp_path / "ssh" / "kh"))
        key = new_key()
        trust_host_key(target, info_for(target, key, state="unknown"))
    finally:
        os.umask(old)
    assert target.known_hosts_path.read_text() == f"box {key}\n"
    assert target.known_hosts_path.stat().st_mode & 0o777 == 0o600
    assert target.known_hosts_path.parent.stat().st_mode & 0o777 == 0o700


def test_without_replace_a_changed_key_is_refused(target: SSHTarget) -> None:
    text = f"box.example.com {new_key()}\n"
    target.known_hosts_path.write_text(text)
    with pytest.raises(HostKeyError, match="pass --replace"):
        trust_host_key(target, info_for(target, new_key()))
    assert target.known_hosts_path.read_text() == text
