"""Every error coordlib raises, as one tree rooted at `CoordError`.

::

    CoordError
    ├── ConfigError            coordinator.yml is missing or wrong (file:line, key, nearest)
    ├── BoardError             the board file is unreadable or from a newer schema
    ├── AssignmentNotFound     no assignment (live or archived) has that id  (also KeyError)
    ├── ClaimError             the issue already has a live assignment
    ├── UsageError             asked for something that cannot be done as asked (a bad
    │                          argument, or work in the wrong state)  (also ValueError)
    ├── MissingDependencyError an optional part needs a package that is not installed
    │                          (names the pip command)  (also ImportError)
    ├── MachineError           something went wrong on or on the way to a machine
    │   ├── UnreachableError   could not connect (refused, timed out, DNS, connection lost)
    │   ├── AuthError          the machine refused our credentials (never retried)
    │   ├── HostKeyError       unknown or changed host key (never retried; `coord trust`)
    │   ├── CommandError       a remote command exited non-zero (carries argv, exit status,
    │   │                      stdout, stderr, like subprocess.CalledProcessError)
    │   ├── CommandTimeout     a remote command ran past its timeout  (also TimeoutError)
    │   ├── DispatchError      a worker could not be started (worktree, tmux, launcher)
    │   ├── BrainError         `coord plan --brain` got no ranking (a failed run, no answer)
    │   ├── UnhealthyMachineError  the machine's latest `coord doctor` found it unhealthy: no
    │   │                      new work starts there (`coord doctor MACHINE`; `--force`)
    │   └── ProtocolError      a machine's answer is not in the remote protocol's format
    │                          (runtime/protocol.py)  (also ValueError)
    ├── PipelineError          a pipeline stage could not run (a test or push that did not start)
    │   └── IssueClosedError   the issue was closed: no more work starts for it
    ├── WaitTimeout            `wait` gave up before the assignment ended  (also TimeoutError)
    └── ForgeError             the forge (local issues, GitHub) refused or failed a request
        ├── NotFoundError      no such issue, pull request or repository  (also KeyError)
        ├── MergeConflictError a pull request does not merge cleanly (carries the paths)
        └── ForgeAuthError     no token, a bad token, or no access  (also PermissionError)

Every message says what happened, where, and what to do about it.  Third-party
errors (asyncssh, yaml, jinja2, OSError) are converted where they enter, with
``raise ... from exc`` so the cause stays visible.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AssignmentNotFound",
    "AuthError",
    "BoardError",
    "BrainError",
    "ClaimError",
    "CommandError",
    "CommandTimeout",
    "ConfigError",
    "CoordError",
    "DispatchError",
    "ForgeAuthError",
    "ForgeError",
    "HostKeyError",
    "IssueClosedError",
    "MachineError",
    "MergeConflictError",
    "MissingDependencyError",
    "NotFoundError",
    "PipelineError",
    "ProtocolError",
    "UnhealthyMachineError",
    "UnreachableError",
    "UsageError",
    "WaitTimeout",
]


class CoordError(Exception):
    """Root of every error coordlib raises."""


class ConfigError(CoordError, ValueError):
    """The configuration file is missing, malformed or inconsistent."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.key = key
        self.hint = hint
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        text = f"{where}{message}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)
        self.message = message


class BoardError(CoordError):
    """The board file cannot be read or written."""


class AssignmentNotFound(CoordError, KeyError):
    """No assignment matches the given id."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "assignment not found"


class ClaimError(CoordError):
    """The issue is already claimed by a live assignment."""


class PipelineError(CoordError):
    """A pipeline stage could not run (a test or push that failed to start, a bad state)."""


class IssueClosedError(PipelineError):
    """The issue was closed: no more work starts for it (reopen it to go on)."""


class UsageError(CoordError, ValueError):
    """A request that cannot be carried out as asked: a bad argument, or the wrong state."""


class MissingDependencyError(CoordError, ImportError):
    """An optional part of coordlib (``coord web``) needs a package that is not installed;
    the message names the command that installs it."""


class MachineError(CoordError):
    """Something failed on a machine or on the way to it."""

    def __init__(self, message: str, *, machine: str | None = None) -> None:
        self.machine = machine
        super().__init__(f"{machine}: {message}" if machine else message)


class UnreachableError(MachineError, ConnectionError):
    """The machine could not be reached.

    `command_sent` tells whether a command had reached the machine when the link was lost
    (it may have run); when false, nothing was started there.  `reason` says how it failed:
    ``timeout`` (no answer in time: a hung or stopped machine), ``refused`` (nothing listens),
    ``lost`` (the connection dropped) or ``unreachable`` (anything else: DNS, routing).
    """

    def __init__(
        self,
        message: str,
        *,
        machine: str | None = None,
        command_sent: bool = False,
        reason: str = "unreachable",
    ) -> None:
        self.command_sent = command_sent
        self.reason = reason
        super().__init__(message, machine=machine)


class AuthError(MachineError, PermissionError):
    """The machine refused our credentials."""


class HostKeyError(MachineError):
    """The machine's host key is unknown or has changed."""


class CommandError(MachineError):
    """A command on a machine exited with a non-zero status."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stdout: str,
        stderr: str,
        *,
        machine: str | None = None,
        what: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = (stderr or stdout).strip().splitlines()
        tail = detail[-1] if detail else "no output"
        label = what or (self.argv[0] if self.argv else "command")
        super().__init__(f"{label} exited with status {returncode}: {tail}", machine=machine)


class CommandTimeout(MachineError, TimeoutError):
    """A command on a machine ran past its timeout."""


class DispatchError(MachineError):
    """A worker could not be started."""


class BrainError(MachineError):
    """`coord plan --brain` got no ranking: its run failed, or gave no answer in time."""


class UnhealthyMachineError(MachineError):
    """The machine's latest `coord doctor` (within a day) found it unhealthy: no new work
    starts there until a doctor finds it healthy again, or `--force` is given."""


class ProtocolError(MachineError, ValueError):
    """A machine answered a remote command in a form the protocol does not allow."""


class WaitTimeout(CoordError, TimeoutError):
    """Waiting for an assignment gave up before it ended."""


class ForgeError(CoordError):
    """The forge (local issues folder, or GitHub) refused or failed a request."""

    def __init__(
        self, message: str, *, forge: str | None = None, status: int | None = None
    ) -> None:
        self.forge = forge
        self.status = status
        super().__init__(f"{forge}: {message}" if forge else message)


class NotFoundError(ForgeError, KeyError):
    """An issue, pull request or repository does not exist on the forge."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class MergeConflictError(ForgeError):
    """A pull request cannot be merged cleanly; `paths` names the conflicting files."""

    def __init__(
        self, message: str, *, forge: str | None = None, paths: tuple[str, ...] = ()
    ) -> None:
        self.paths = paths
        super().__init__(message, forge=forge, status=409)


class ForgeAuthError(ForgeError, PermissionError):
    """The forge rejected the credentials (no token, a bad token, or no access)."""
