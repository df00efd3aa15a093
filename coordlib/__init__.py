"""coordlib: coordinate many Claude Code workers across machines and repos.

The public surface is listed in ``__all__``.  Names load lazily so that the
``coord`` CLI starts fast: importing coordlib does not import asyncssh.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    AssignmentNotFound,
    AuthError,
    BoardError,
    BrainError,
    ClaimError,
    CommandError,
    CommandTimeout,
    ConfigError,
    CoordError,
    DispatchError,
    ForgeAuthError,
    ForgeError,
    HostKeyError,
    IssueClosedError,
    MachineError,
    MergeConflictError,
    MissingDependencyError,
    NotFoundError,
    PipelineError,
    ProtocolError,
    UnhealthyMachineError,
    UnreachableError,
    UsageError,
    WaitTimeout,
)

if TYPE_CHECKING:
    from .assignment import Assignment, Status
    from .board import Board
    from .config import Config
    from .config_load import load_config
    from .coordinator import Coordinator
    from .event_view import format_event
    from .forge.base import Comment, Forge, Issue, PullRequest
    from .monitor import MachineStatus, ResumeReport, StatusReport
    from .progress import RunProgress
    from .runtime.local import LocalTransport
    from .runtime.ssh import SSHTarget, SSHTransport
    from .runtime.transport import CompletedCommand, Transport
    from .stream import parse_line

__all__ = [
    "Assignment",
    "AssignmentNotFound",
    "AuthError",
    "Board",
    "BoardError",
    "BrainError",
    "ClaimError",
    "CommandError",
    "CommandTimeout",
    "Comment",
    "CompletedCommand",
    "Config",
    "ConfigError",
    "CoordError",
    "Coordinator",
    "DispatchError",
    "Forge",
    "ForgeAuthError",
    "ForgeError",
    "HostKeyError",
    "Issue",
    "IssueClosedError",
    "LocalTransport",
    "MachineError",
    "MachineStatus",
    "MergeConflictError",
    "MissingDependencyError",
    "NotFoundError",
    "PipelineError",
    "ProtocolError",
    "PullRequest",
    "ResumeReport",
    "RunProgress",
    "SSHTarget",
    "SSHTransport",
    "Status",
    "StatusReport",
    "Transport",
    "UnhealthyMachineError",
    "UnreachableError",
    "UsageError",
    "WaitTimeout",
    "__version__",
    "format_event",
    "load_config",
    "parse_line",
]

_LAZY = {
    "Assignment": ".assignment",
    "Status": ".assignment",
    "Board": ".board",
    "Config": ".config",
    "load_config": ".config_load",
    "Coordinator": ".coordinator",
    "MachineStatus": ".monitor",
    "ResumeReport": ".monitor",
    "StatusReport": ".monitor",
    "Comment": ".forge.base",
    "Forge": ".forge.base",
    "Issue": ".forge.base",
    "PullRequest": ".forge.base",
    "RunProgress": ".progress",
    "LocalTransport": ".runtime.local",
    "SSHTarget": ".runtime.ssh",
    "SSHTransport": ".runtime.ssh",
    "CompletedCommand": ".runtime.transport",
    "Transport": ".runtime.transport",
    "format_event": ".event_view",
    "parse_line": ".stream",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'coordlib' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
