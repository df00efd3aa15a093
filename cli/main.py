"""The ``coord`` group, shared options, and the one place errors become exit codes.

Heavy imports (asyncssh, the coordinator) happen inside commands so that
``coord --help`` starts fast.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .output import COLOR_MODES, echo, set_color

if TYPE_CHECKING:
    from coordlib.coordinator import Coordinator

T = TypeVar("T")

EXIT_ERROR = 1
EXIT_USAGE = 2


class State:
    """What the group's options say, handed to every command."""

    def __init__(self, config: str | None) -> None:
        self.config = config

    def coordinator(self) -> Coordinator:
        """Build the coordinator from the config found by the usual lookup."""
        from coordlib.coordinator import Coordinator

        return Coordinator.from_path(self.config, notify=_notify)


def _notify(message: str) -> None:
    echo(f"coord: {message}", err=True)


pass_state = click.make_pass_decorator(State)


def run(factory: Callable[[], Awaitable[T]]) -> T:
    """Run one coroutine to completion: the CLI's only event loop."""

    import asyncio

    async def main() -> T:
        return await factory()

    return asyncio.run(main())


def fail(message: str, code: int = EXIT_ERROR) -> None:
    """Print message on stderr and exit with code."""
    echo(f"coord: {message}", err=True)
    sys.exit(code)


# Each command's module, imported when the command is used: `coord status` loads only
# run_cmds.  (`coord --help` lists them all, so it loads them all.)
_COMMAND_MODULES = {
    "assign": "run_cmds",
    "status": "status_cmds",
    "watch": "run_cmds",
    "wait": "run_cmds",
    "log": "run_cmds",
    "stop": "run_cmds",
    "resume": "run_cmds",
    "retry": "run_cmds",
    "resume-stuck": "run_cmds",
    "continue": "run_cmds",
    "clean": "clean_cmd",
    "run-app": "workspace_cmd",
    "issue": "issue_cmds",
    "issues": "issue_cmds",
    "version": "setup_cmds",
    "init": "setup_cmds",
    "config": "setup_cmds",
    "trust": "setup_cmds",
    "demo": "demo_cmd",
    "test": "pipeline_cmds",
    "pr": "pipeline_cmds",
    "fix": "pipeline_cmds",
    "bounce": "pipeline_cmds",
    "notify": "pipeline_cmds",
    "run": "pipeline_cmds",
    "done": "pipeline_cmds",
    "pipeline": "pipeline_cmds",
    "merge": "pipeline_cmds",
    "report": "report_cmd",
    "split": "split_cmd",
    "show": "status_cmds",
    "plan": "plan_cmds",
    "approve": "plan_cmds",
    "completion": "complete",
    "doctor": "machine_cmds",
    "setup": "machine_cmds",
    "web": "web_cmd",
    "tui": "tui_cmd",
}


class CoordGroup(click.Group):
    """A group that turns coordlib errors into one clear line and an exit code.

    Its commands live in modules of their own, imported on first use.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*_COMMAND_MODULES, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = _COMMAND_MODULES.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            importlib.import_module(f"{__package__}.{module}")  # its decorators register it
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = click.utils.make_str(args[0]) if args else ""
        if args and name not in self.commands and name not in _COMMAND_MODULES:
            if name.startswith("-"):
                return super().resolve_command(ctx, args)
            # Every verb listed, and a suggestion only when one is really near: "did you
            # mean 'trust'" for `coord test` sent people the wrong way.
            import difflib

            verbs = self.list_commands(ctx)
            near = difflib.get_close_matches(name, verbs, n=1, cutoff=0.8)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            ctx.fail(f"no command {name!r}.{hint} The commands are: {', '.join(verbs)} "
                     f"(`coord --help` says what each does).")  # fmt: skip
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands with their whole one-line summaries (click cuts them at 45)."""
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=200)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        from coordlib.errors import AssignmentNotFound, CoordError, UsageError

        try:
            return super().invoke(ctx)
        except (AssignmentNotFound, UsageError) as exc:
            fail(f"error: {exc}", EXIT_USAGE)  # asked for what cannot be: a usage error
        except CoordError as exc:
            fail(f"error: {exc}")
        except KeyboardInterrupt:
            fail("interrupted; workers keep running (`coord status`, `coord resume`)", 130)


def _version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from coordlib import __version__

        click.echo(f"coord {__version__}")
        ctx.exit()


@click.group(cls=CoordGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "-c",
    type=click.Path(dir_okay=False),
    default=None,
    help="coordinator.yml to use "
    "(default: $COORD_CONFIG, ./coordinator.yml, ~/.coord/coordinator.yml).",
)
@click.option(
    "--color",
    type=click.Choice(COLOR_MODES),
    default="auto",
    show_default=True,
    help="Colour the output: auto is a terminal unless NO_COLOR is set.",
)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_version,
              help="Print coord's version and exit.")  # fmt: skip
@click.pass_context
def coord(ctx: click.Context, config: str | None, color: str) -> None:
    """Coordinate many Claude Code workers across machines and repos.

    \b
    Examples:
      coord demo                              # five issues to merged, on a throwaway repo
      coord assign gpu-box api 42             # a worker for issue 42, into the pipeline
      coord run                               # carry every issue on, as workers end
      coord status --state running            # what runs where
      coord completion bash >> ~/.bashrc      # tab completion of verbs, ids, machines
    """
    set_color(color)
    ctx.obj = State(config)


__all__ = ["coord", "main"]


def main() -> None:
    """Entry point of the ``coord`` console script."""
    coord(prog_name="coord")
