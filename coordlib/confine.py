"""What a confined worker may use: its tool list (`worker.confine`).

The launcher on the machine writes the sandbox settings (``runtime/confine.sh``); here is the
coordinator's part, the ``--allowedTools`` the CLI is started with.  The sandbox covers Bash
only, so the file-writing tools are held to the worktree by the CLI's own permission rules,
and a stage that only reads (a review) gets none of them at all.
"""

from __future__ import annotations

__all__ = ["EDITING_TOOLS", "confined_tool_args", "editing"]

# The Claude Code tools that write files.
EDITING_TOOLS = frozenset({"Edit", "Write", "MultiEdit", "NotebookEdit"})


def editing(tool: str) -> bool:
    """Is tool (a bare name or a rule such as ``Edit(src/**)``) one that writes files?"""
    return tool.split("(", 1)[0].strip() in EDITING_TOOLS


def confined_tool_args(tools: str, *, reads_only: bool = False) -> list[str]:
    """Return the tool arguments of a confined worker, from an ``--allowedTools`` list.

    A bare file-writing tool becomes ``NAME(./**)`` (a rule of the user's stays as given); a
    worker that only reads (`reads_only`) keeps none of them, and they are disallowed outright.
    """
    out: list[str] = []
    for tool in (t.strip() for t in tools.split(",")):
        if not tool or (reads_only and editing(tool)):
            continue
        out.append(f"{tool}(./**)" if tool in EDITING_TOOLS else tool)
    args = ["--allowedTools", ",".join(out)]
    if reads_only:
        args += ["--disallowedTools", ",".join(sorted(EDITING_TOOLS))]
    return args
