"""Test support for coordlib and for users' own scripts: real sshd, real git repos, and
the real Claude Code CLI against a scripted model server.

Use it as a pytest plugin (``pytest_plugins = ["coordlib.testing.plugin"]``) or
call the functions directly.  Nothing here is imported by the rest of coordlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .gitrepo import GitRepo, make_git_repo
from .sshd import SSHServer, start_sshd

if TYPE_CHECKING:
    from .claude_cli import CLAUDE_CODE_VERSION, find_claude, install_claude
    from .model_server import (
        Fault,
        ModelServer,
        RecordedRequest,
        Scenario,
        Text,
        ToolUse,
        Turn,
        claude_env,
        text,
        tool,
    )

# Imported on first use, so that `python -m coordlib.testing.model_server` (and claude_cli)
# does not find its own module already imported and warn about running it twice.
_LAZY = {
    **dict.fromkeys(["CLAUDE_CODE_VERSION", "find_claude", "install_claude"], "claude_cli"),
    **dict.fromkeys(
        [
            *("Fault", "ModelServer", "RecordedRequest", "Scenario", "Text", "ToolUse", "Turn"),
            *("claude_env", "text", "tool"),
        ],
        "model_server",
    ),
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = [
    "CLAUDE_CODE_VERSION",
    "Fault",
    "GitRepo",
    "ModelServer",
    "RecordedRequest",
    "SSHServer",
    "Scenario",
    "Text",
    "ToolUse",
    "Turn",
    "claude_env",
    "find_claude",
    "install_claude",
    "make_git_repo",
    "start_sshd",
    "text",
    "tool",
]
