"""Start a real OpenSSH ``sshd`` on a loopback port with throwaway keys."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SSHDUnavailable", "SSHServer", "free_port", "start_sshd"]

SSHD = "/usr/sbin/sshd"


class SSHDUnavailable(RuntimeError):
    """OpenSSH's sshd or ssh-keygen is not installed here."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SSHServer:
    """A running sshd: where it listens and the files a client needs to reach it."""

    dir: Path
    port: int
    user: str
    client_key: Path  # private key authorized to log in
    known_hosts: Path  # a known_hosts file that trusts this server
    host_key_line: str  # "<alg> <base64>" of the server's host key
    host: str = "127.0.0.1"
    max_startups: str = "200:30:400"
    max_sessions: int = 100
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def config_path(self) -> Path:
        """Return the sshd_config file."""
        return self.dir / "sshd_config"

    def start(self) -> None:
        """Start sshd (again, on the same port) and wait until it accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            return
        log = open(self.dir / "sshd.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.config_path)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"sshd exited with {self.proc.returncode}: "
                    f"{(self.dir / 'sshd.log').read_text()[-2000:]}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.5) as s,
            ):
                if s.recv(4).startswith(b"SSH-"):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not start listening on port {self.port}")

    def stop(self) -> None:
        """Kill sshd (and with it every session it serves)."""
        if self.proc is None:
            return
        # Its per-connection children would keep sessions alive; a real outage drops them.
        subprocess.run(["pkill", "-KILL", "-P", str(self.proc.pid)], check=False)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        """Stop and start sshd on the same port."""
        self.stop()
        self.start()


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "coord-test", "-f", str(path)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def start_sshd(
    directory: Path,
    *,
    port: int | None = None,
    max_startups: str = "200:30:400",
    max_sessions: int = 100,
    extra_config: str = "",
) -> SSHServer:
    """Write a throwaway sshd config with fresh keys under directory and start sshd."""
    if not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None:
        raise SSHDUnavailable(f"{SSHD} not found: apt-get install openssh-server")
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    host_key = directory / "host_ed25519"
    client_key = directory / "client_ed25519"
    for key in (host_key, client_key):
        if not key.exists():
            _keygen(key)
    authorized = directory / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    port = port or free_port()
    user = (
        os.environ.get("USER")
        or subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    )
    lines = [
        f"ListenAddress 127.0.0.1:{port}",
        f"HostKey {host_key}",
        f"PidFile {directory / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized}",
        "StrictModes no",
        "UsePAM no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "Subsystem sftp internal-sftp",
        f"MaxStartups {max_startups}",
        f"MaxSessions {max_sessions}",
        "LogLevel ERROR",
    ]
    (directory / "sshd_config").write_text("\n".join(lines) + "\n" + extra_config)
    alg, blob = Path(f"{host_key}.pub").read_text().split()[:2]
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {alg} {blob}\n")
    server = SSHServer(
        dir=directory,
        port=port,
        user=user,
        client_key=client_key,
        known_hosts=known_hosts,
        host_key_line=f"{alg} {blob}",
        max_startups=max_startups,
        max_sessions=max_sessions,
    )
    server.start()
    return server
