"""Remote commands as values, and the one place where they are quoted.

A command is an argv list.  `LocalTransport` executes it directly; `SSHTransport`
turns it into the single string an SSH exec request carries with `join`, which
quotes every word.  User text (titles, briefings) never becomes part of a
command: briefings travel on stdin into files (and from there to the worker's
stdin), titles only reach branch names through `slugify`, which keeps ``[a-z0-9-]``.
`remote_argv` checks every argument of a verb against the protocol declared here
before it builds the command.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..assignment import check_id
from ..errors import UsageError

__all__ = [
    "LaunchSpec",
    "branch_name",
    "check_args",
    "encode_env",
    "join",
    "quote",
    "remote_argv",
    "remote_script",
    "script_hash",
    "slugify",
]


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


_SCRIPT: str | None = None


def remote_script() -> str:
    """Return the text of the coord-run script that runs on worker machines."""
    global _SCRIPT
    if _SCRIPT is None:
        # A plain file read: importlib.resources costs more to import than this whole read.
        _SCRIPT = Path(__file__).with_name("remote.sh").read_text("utf-8")
    return _SCRIPT


def script_hash() -> str:
    """Return a short hash that versions the installed launcher."""
    import hashlib  # only dispatches need it: not imported by every `coord status`

    return hashlib.sha256(remote_script().encode()).hexdigest()[:12]


def remote_argv(verb: str, *args: str) -> list[str]:
    """Build the argv that runs one coord-run verb on a machine; raise `UsageError` if bad."""
    check_args(verb, args)
    # --norc: sshd's login shell has already read ~/.bashrc once; without it the inner bash
    # (which also looks started by sshd) reads it again, ~200 ms a command with pyenv.
    return ["bash", "--norc", "-c", remote_script(), "coord-run", verb, *args]


# ------------------------------------------------------------------ the verbs' arguments
# Declared once here; remote.sh checks the same shapes again (valid_id, valid_num, need_*),
# since a machine must not trust whoever sent the command.  Ids become paths and array
# keys there, numbers go into bash arithmetic, and a word starting with "-" could reach
# git or tmux as an option.

_NUMBER = re.compile(r"0|[1-9][0-9]{0,17}")  # no leading zero: bash reads 010 as octal
_BRANCH = re.compile(r"(?=.{1,200}\Z)issue-[0-9]+(-[a-z0-9]+)*")  # issue-<N>[-<slug>][-r<K>]
_BASE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}")
_SOCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_HASH = re.compile(r"[0-9a-f]{1,64}")
_TAIL_FILES = ("events.jsonl", "stderr.log", "launcher.log")

Check = Callable[[str, str, str], None]  # (verb, what, value) -> None, or raise UsageError


def _refuse(verb: str, what: str, value: str, should: str) -> UsageError:
    shown = value if len(value) <= 80 else value[:80] + "…"
    return UsageError(f"remote command {verb}: {what} {shown!r} is not {should}")


def _path(verb: str, what: str, value: str) -> None:
    if not value or value.startswith("-"):
        raise _refuse(verb, what, value, "a path (empty, or would read as an option)")


def _id(verb: str, what: str, value: str) -> None:
    check_id(value, f"remote command {verb}: {what}")


def _shaped(pattern: re.Pattern[str], should: str) -> Check:
    def check(verb: str, what: str, value: str) -> None:
        if not pattern.fullmatch(value):
            raise _refuse(verb, what, value, should)

    return check


def _one_of(*choices: str) -> Check:
    return _shaped(re.compile("|".join(map(re.escape, choices))), "one of " + ", ".join(choices))


_number = _shaped(_NUMBER, "a plain decimal number")

# verb -> its fixed arguments, in order: (what, check)
_VERBS: dict[str, tuple[tuple[str, Check], ...]] = {
    "dispatch": (
        ("workdir", _path),
        ("assignment id", _id),
        ("repo path", _path),
        ("worktree", _path),
        ("branch", _shaped(_BRANCH, "a branch coord names (issue-<N>[-<slug>][-r<K>])")),
        ("base branch", _shaped(_BASE, "a plain branch name")),
        ("tmux socket", _shaped(_SOCKET, "a tmux socket name (letters, digits, _ . -)")),
        ("launcher hash", _shaped(_HASH, "a hex hash")),
        ("briefing size", _number),
        ("spec size", _number),
        ("launch.env size", _number),
        ("mode", _one_of("new", "continue")),
    ),
    "status": (("workdir", _path), ("tmux socket", _shaped(_SOCKET, "a tmux socket name"))),
    "stop": (("workdir", _path), ("assignment id", _id)),
    "tail": (
        ("workdir", _path),
        ("assignment id", _id),
        ("offset", _number),
        ("file", _one_of(*_TAIL_FILES)),
        ("follow", _one_of("0", "1")),
    ),
    "clean": (
        ("workdir", _path),
        ("mode", _one_of("remove", "check")),
        ("keep_runs", _one_of("0", "1")),
    ),
}


def check_args(verb: str, args: Sequence[str]) -> None:
    """Check the arguments of one coord-run verb; raise `UsageError` naming the bad one."""
    fixed = _VERBS.get(verb)
    if fixed is None:
        raise UsageError(f"unknown remote command {verb!r} (expected one of {', '.join(_VERBS)})")
    if len(args) < len(fixed) or (verb != "status" and len(args) != len(fixed)):
        raise UsageError(
            f"remote command {verb} takes {len(fixed)} arguments "
            f"({', '.join(what for what, _ in fixed)}), not {len(args)}"
        )
    for (what, check), value in zip(fixed, args, strict=False):
        check(verb, what, value)
    if verb == "status":  # then [live|all] [ID:OFFSET:MAX ...]
        wants = list(args[len(fixed) :])
        if wants and wants[0] in ("live", "all"):
            wants.pop(0)
        for want in wants:
            _status_want(want)


def _status_want(want: str) -> None:
    parts = want.split(":")
    if len(parts) != 3:
        raise _refuse("status", "run", want, "ID:OFFSET:MAX")
    _id("status", "assignment id", parts[0])
    _number("status", "offset", parts[1])
    _number("status", "byte limit", parts[2])


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
