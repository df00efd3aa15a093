"""`coord trust`: ask a machine for its host key, then record it in known_hosts, or replace it.

The key is fetched and recorded the way the connection will check it (`Endpoint`): from the
ssh config's HostName and Port, under the name OpenSSH records (the HostKeyAlias, else the
host, ``[host]:port`` off port 22), in the first of its known_hosts files.

OpenSSH writes entries plain (``host,alias key``) or hashed (``|1|salt|hash key``, Debian's
and Ubuntu's default, ``HashKnownHosts yes``); replacing a key must drop both, and keep
everything else as it was: other hosts, ``@cert-authority`` and ``@revoked`` lines, comments.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import write_atomic
from ..errors import HostKeyError, MachineError, UnreachableError

if TYPE_CHECKING:
    from .ssh import HostKeyInfo, SSHTarget

__all__ = ["fetch_host_key", "trust_host_key"]


async def fetch_host_key(target: SSHTarget) -> HostKeyInfo:
    """Ask the machine for its host key without authenticating, and compare with known_hosts.

    The machine is reached as the connection reaches it (the ssh config's HostName, Port,
    ProxyJump), and the key is looked up under the name the connection checks.
    """
    import asyncssh

    from .ssh import HostKeyInfo, _describe

    end = target.endpoint()
    port = target.port if target.port is not None else ()
    try:
        key = await asyncio.wait_for(
            asyncssh.get_server_host_key(target.host, port, config=target.config_paths()),
            target.connect_timeout,
        )
    except (TimeoutError, OSError, asyncssh.Error) as exc:
        raise UnreachableError(
            f"cannot reach {end.where}: {_describe(exc)}", machine=target.name
        ) from exc
    if key is None:
        raise UnreachableError(f"{end.where} sent no host key", machine=target.name)
    algorithm, blob = key.export_public_key("openssh").decode().split()[:2]
    keys = end.trusted_keys()
    state = "trusted" if key in keys else "changed" if keys else "unknown"
    return HostKeyInfo(
        pattern=end.host_pattern,
        algorithm=algorithm,
        fingerprint=key.get_fingerprint("sha256"),
        line=f"{end.host_pattern} {algorithm} {blob}",
        state=state,
    )


def trust_host_key(target: SSHTarget, info: HostKeyInfo, *, replace: bool = False) -> Path:
    """Record info's key in the machine's known_hosts file and return the file's path.

    With `replace`, every entry trusting a key for the host goes first, whether plain
    (the host is taken out of a comma-separated list) or hashed (``HashKnownHosts yes``,
    Debian's default).  ``@cert-authority`` and ``@revoked`` lines and other hosts' entries
    stay as they were.  The new entry is hashed when the file already hashes its entries.
    """
    path = target.known_hosts_path
    if info.state == "trusted":
        return path
    if info.state == "changed" and not replace:
        raise HostKeyError(
            f"{info.pattern} presents a different key than {path} records; "
            f"pass --replace only if you know why it changed",
            machine=target.name,
        )
    # Write through a symlink (dotfiles kept elsewhere), never over it.
    real = Path(os.path.realpath(path))
    if real.exists() and not real.is_file():  # `UserKnownHostsFile /dev/null`, say
        raise MachineError(
            f"{path} is not a file that can hold host keys; set known_hosts for this "
            f"machine in coordinator.yml, then run `coord trust {target.name}` again",
            machine=target.name,
        )
    try:
        text = real.read_text(errors="surrogateescape") if real.is_file() else ""
    except OSError as exc:
        raise MachineError(
            f"cannot read {path}: {exc.strerror or exc}; check its permissions",
            machine=target.name,
        ) from exc
    lines = text.splitlines()
    hashing = any(entry[0].startswith("|") for entry in map(_entry, lines) if entry)
    if replace:
        lines = _without_host(lines, info, path, target.name)
    key = info.line.split(" ", 1)[1]
    lines.append(f"{_hashed(info.pattern) if hashing else info.pattern} {key}")
    try:
        real.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(real, "".join(line + "\n" for line in lines).encode(errors="surrogateescape"))
    except OSError as exc:
        raise MachineError(
            f"cannot write {path}: {exc.strerror or exc}; check its permissions",
            machine=target.name,
        ) from exc
    return path


# The host field of a known_hosts entry and the rest of its line, spacing kept.
_HOSTS = re.compile(r"\s*(\S+)(.*)", re.DOTALL)
# Host fields asyncssh reads as patterns rather than exact names (hashed ones aside).
_WILDCARDS = frozenset("*?!/")


def _entry(line: str) -> tuple[str, str] | None:
    """Return the host field and the rest of a line that trusts a key, else None.

    Blank lines, comments and ``@cert-authority``/``@revoked`` lines trust no key of their
    own host, so they are never entries here.
    """
    match = _HOSTS.match(line)
    if match is None or match[1][0] in "#@":
        return None
    return match[1], match[2]


def _without_host(lines: list[str], info: HostKeyInfo, path: Path, machine: str) -> list[str]:
    """Return lines without the entries that trust a key for info's host pattern."""
    # OpenSSH lowercases a host name before it writes or hashes it; asyncssh takes it as is.
    spellings = {info.pattern, info.pattern.lower()}
    kept: list[str] = []
    for number, line in enumerate(lines, 1):
        entry = _entry(line)
        if entry is None:
            kept.append(line)
            continue
        hosts, rest = entry
        if hosts.startswith("|"):
            if not any(_hash_names(hosts, name) for name in spellings):
                kept.append(line)
            continue
        names = hosts.split(",")
        others = [name for name in names if name.lower() != info.pattern.lower()]
        if not others:
            continue
        if len(others) < len(names):
            hosts = ",".join(others)
            line = hosts + rest  # the key stays trusted for the other names
        if _WILDCARDS.intersection(hosts):
            _refuse_pattern(line, number, hosts, info, path, machine)
        kept.append(line)
    return kept


def _refuse_pattern(
    line: str, number: int, hosts: str, info: HostKeyInfo, path: Path, machine: str
) -> None:
    """Raise if a wildcard entry would keep trusting another key for info's host."""
    import asyncssh  # only here: a wildcard entry for the host is rare

    try:
        keys = asyncssh.import_known_hosts(line).match(info.pattern, "", None)[0]
    except ValueError:
        return  # asyncssh cannot read the line, so it trusts nothing through it
    if any(k.get_fingerprint("sha256") != info.fingerprint for k in keys):
        raise HostKeyError(
            f"{path}:{number} trusts another key for {info.pattern} through the pattern "
            f"{hosts!r}; narrow or remove that line, then run `coord trust {machine} "
            f"--replace` again",
            machine=machine,
        )


def _hash_names(field: str, name: str) -> bool:
    """Tell whether the hashed host field (``|1|salt|hash``) is the hash of name."""
    try:
        _, magic, salt, digest = field.split("|")
        if magic != "1":
            return False
        mac = hmac.new(base64.b64decode(salt, validate=True), name.encode(), hashlib.sha1)
        return hmac.compare_digest(mac.digest(), base64.b64decode(digest, validate=True))
    except (ValueError, binascii.Error):
        return False


def _hashed(name: str) -> str:
    """Return name as a hashed known_hosts host field, as ``ssh-keygen -H`` writes it."""
    salt = os.urandom(20)
    mac = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(mac).decode()}"
