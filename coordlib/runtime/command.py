"""Remote commands as values, and the one place where they are quoted.

A command is an argv list (built by `coordlib.runtime.protocol`, which checks every
argument of a verb against its declaration).  `LocalTransport` executes it directly;
`SSHTransport` turns it into the single string an SSH exec request carries with `join`,
which quotes every word.  User text (titles, briefings) never becomes part of a
command: briefings travel on stdin into files (and from there to the worker's
stdin), titles only reach branch names through `slugify`, which keeps ``[a-z0-9-]``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["LaunchSpec", "branch_name", "encode_env", "join", "quote", "slugify"]


def quote(word: str) -> str:
    """Quote one word for a POSIX shell."""
    if "\0" in word:
        raise ValueError("a NUL byte cannot be passed in a command argument")
    return shlex.quote(word)


def join(argv: Sequence[str]) -> str:
    """Quote every word of argv and join them into one shell command line."""
    return " ".join(quote(word) for word in argv)


def slugify(text: str, *, max_length: int = 40) -> str:
    """Reduce text to ``[a-z0-9-]``: lowercase words joined by single hyphens."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if len(slug) > max_length:
        slug = (
            slug[:max_length].rsplit("-", 1)[0] if "-" in slug[:max_length] else slug[:max_length]
        )
    return slug.strip("-")


def branch_name(issue: int, title: str) -> str:
    """Name the branch for an issue: ``issue-<N>-<slug>``."""
    slug = slugify(title)
    return f"issue-{issue}-{slug}" if slug else f"issue-{issue}"


@dataclass(frozen=True)
class LaunchSpec:
    """What the launcher needs to start the worker, rendered as a sourced shell file."""

    worktree: str
    command: Sequence[str]  # the claude command, e.g. ["claude"]
    args: Sequence[str]  # everything after ``-p`` (the prompt comes on stdin)
    stall_ms: int
    max_runtime_ms: int
    grace_ms: int
    poll_seconds: float
    base: str = ""  # the repo's base branch: the run's outcome counts its commits against it
    # The workspace (a fresh worktree's): the setup script, its timeout (s), the files carried
    # from the main checkout `main`; and the ports any worktree's run gets (0: none).
    setup: bool = False  # prepare the worktree before the worker starts (copy, setup)
    setup_script: str = ""  # the config's; "" leaves it to the repo's .coord/workspace.yml
    archive_script: str = ""  # the same, for what `coord clean` runs before removing it
    run_script: str = ""  # and for what `coord run-app` starts in it
    setup_timeout: int = 0  # 0: the config's or the repo file's, else 600
    copy: Sequence[str] = ()
    main: str = ""
    ports: int = 0
    # Confinement (worker.confine): the launcher writes the sandbox settings from these.
    confine: bool = False
    deny_read: Sequence[str] = ()  # more paths no worker reads ("~/" is the worker's home)
    domains: Sequence[str] = ()  # what its Bash may reach through the sandbox's proxy

    def render(self) -> str:
        """Return the launch.env text, every value quoted here."""

        def array(words: Sequence[str]) -> str:
            return "(" + " ".join(quote(w) for w in words) + ")"

        return (
            f"COORD_WORKTREE={quote(self.worktree)}\n"
            f"COORD_CMD={array(self.command)}\n"
            f"COORD_ARGS={array(self.args)}\n"
            f"COORD_STALL_MS={int(self.stall_ms)}\n"
            f"COORD_MAXRT_MS={int(self.max_runtime_ms)}\n"
            f"COORD_GRACE_MS={int(self.grace_ms)}\n"
            f"COORD_POLL={quote(format(self.poll_seconds, 'g'))}\n"
            f"COORD_BASE={quote(self.base)}\n"
            f"COORD_WS={int(self.setup)}\n"
            f"COORD_WS_SETUP={quote(self.setup_script)}\n"
            f"COORD_WS_ARCHIVE={quote(self.archive_script)}\n"
            f"COORD_WS_RUN={quote(self.run_script)}\n"
            f"COORD_WS_TIMEOUT={int(self.setup_timeout) or ''}\n"
            f"COORD_WS_COPY={array(self.copy)}\n"
            f"COORD_WS_MAIN={quote(self.main)}\n"
            f"COORD_WS_PORTS={int(self.ports)}\n"
            f"COORD_CONFINE={int(self.confine)}\n"
            f"COORD_DENY_READ={array(self.deny_read)}\n"
            f"COORD_DOMAINS={array(self.domains)}\n"
            "COORD_END=1\n"  # the last line: a file cut short is refused by the launcher
        )


def encode_env(env: Mapping[str, str]) -> bytes:
    """Encode the worker's environment for the launcher's FIFO: NUL-separated, ending ``=END``."""
    out = bytearray()
    for name, value in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"bad environment variable name {name!r}")
        if "\0" in value:
            raise ValueError(f"environment variable {name} contains a NUL byte")
        out += f"{name}={value}".encode() + b"\0"
    out += b"=END\0"
    return bytes(out)
