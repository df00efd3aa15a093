"""The ``/coordinator`` slash command for Claude Code, shipped with coordlib.

`install_slash_command` writes it into a project's ``.claude/commands/coordinator.md``
(``coord init --slash-command``); inside Claude Code, ``/coordinator triage`` then guides
setup, triage, dispatch, monitoring, tests and PRs through the ``coord`` CLI with ``--json``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .atomic import write_atomic
from .errors import UsageError

__all__ = ["SLASH_COMMAND_PATH", "install_slash_command", "slash_command_text"]

# Where Claude Code looks for a project's own slash commands, relative to the project.
SLASH_COMMAND_PATH = Path(".claude") / "commands" / "coordinator.md"


def slash_command_text() -> str:
    """Return the slash command's Markdown, as shipped."""
    return (resources.files(__package__) / "commands" / "coordinator.md").read_text("utf-8")


def install_slash_command(project: str | Path, *, force: bool = False) -> tuple[Path, bool]:
    """Write the slash command into `project`; return its path and whether it was written.

    The same text already there is left alone (False); a different file is kept unless
    `force`, so a command the user edited is never overwritten silently.
    """
    target = Path(project) / SLASH_COMMAND_PATH
    text = slash_command_text()
    if target.exists():
        if target.read_text("utf-8", errors="replace") == text:
            return target, False
        if not force:
            raise UsageError(
                f"{target} exists and differs from coordlib's /coordinator; pass --force to "
                "replace it (or keep yours)"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, text.encode(), mode=0o644)
    return target, True
