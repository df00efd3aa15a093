"""Test support for coordlib and for users' own scripts: real sshd, real git repos, and
the real Claude Code CLI against a scripted model server.

Use it as a pytest plugin (``pytest_plugins = ["coordlib.testing.plugin"]``) or
call the functions directly.  Nothing here is imported by the rest of coordlib.
"""

from .claude_cli import CLAUDE_CODE_VERSION, find_claude, install_claude
from .gitrepo import GitRepo, make_git_repo
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
from .sshd import SSHServer, start_sshd

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
