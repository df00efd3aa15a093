"""``coord doctor`` and ``coord setup``: the machines themselves, before any work."""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Any

import click

from .complete import complete_machines
from .main import EXIT_ERROR, State, coord, pass_state, run
from .output import echo, echo_json, echo_styled, styled

if TYPE_CHECKING:
    from coordlib.doctor import MachineHealth
    from coordlib.machine_setup import MachineSetup, SetupReport

_UNITS = {"": 1024, "k": 1, "m": 1024, "g": 1024**2, "t": 1024**3}  # to KiB; bare: MiB


def _size_kb(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """Read a size such as 1G, 512M, 2GiB or 800 (MiB) as KiB."""
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", value.lower())
    if m is None:
        raise click.BadParameter(f"{value!r} is not a size (e.g. 1G, 512M, 2GiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _seconds(ctx: click.Context, param: click.Parameter, value: str) -> float:
    from coordlib.config import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if seconds <= 0:
        raise click.BadParameter("give a time above zero (e.g. 60, 90s, 2m)")
    return seconds


_LEVEL = {"ok": ("ok", "green"), "warn": ("warn", "yellow"), "fail": ("FAIL", "red")}


@coord.command(short_help="Check each machine's health: tools, claude login, disk, stale runs.")
@click.argument("machines", nargs=-1, shell_complete=complete_machines)
@click.option(
    "--min-free",
    callback=_size_kb,
    default=None,
    metavar="SIZE",
    help="Fail the disk check under this much free (default 1G; 512M, 2GiB, …).",
)
@click.option(
    "--timeout",
    default="60s",
    show_default=True,
    callback=_seconds,
    help="The longest a machine may take to answer, its connection aside.",
)
@click.option("--json", "as_json", is_flag=True, help="Print {machines: [{name, healthy, …}]}.")
@pass_state
def doctor(
    state: State, machines: tuple[str, ...], min_free: int | None, timeout: float, as_json: bool
) -> None:
    """Check the health of MACHINES (default: every machine), one command each, at once.

    Each check says ok, warn or FAIL: the connection (and its host key), bash, git, tmux,
    flock, claude runnable and logged in (without spending a token), free disk under the
    workdir, the worktrees there, stale runs, which user the workers run as, and each repo
    checked out.  The machine's env reaches the check as it reaches a worker (the API key
    is never shown).  Each result is kept on the board: `assign`, `approve` and the pipeline
    then refuse a machine found unhealthy within the last day (`--force` overrides).  Exit
    status 1 when a machine is unhealthy.

    \b
    Examples:
      coord doctor                       # every machine
      coord doctor gpu-box --min-free 5G
      coord doctor --json | jq '.machines[] | select(.healthy | not) | .name'
    """

    def heard(health: MachineHealth) -> None:
        word = "healthy" if health.healthy else "UNHEALTHY"
        echo(f"coord: {health.name} answered: {word}", err=True)

    async def go() -> list[MachineHealth]:
        async with state.coordinator() as c:
            return await c.doctor(
                machines, min_free_kb=min_free, timeout=timeout,
                on_machine=heard if not as_json and sys.stderr.isatty() else None,
            )  # fmt: skip

    results = run(go)
    if as_json:
        echo_json({"machines": [h.to_dict() for h in results]})
    else:
        for health in results:
            _print_health(health)
    if not all(h.healthy for h in results):
        raise SystemExit(EXIT_ERROR)


def _print_health(health: MachineHealth) -> None:
    word, colour = ("healthy", "green") if health.healthy else ("UNHEALTHY", "red")
    echo_styled(f"{styled(health.name, bold=True)}  {styled(word, fg=colour)}")
    width = max((len(c.name) for c in health.checks), default=0)
    for c in health.checks:
        label, fg = _LEVEL.get(c.level, ("?", None))
        echo_styled(f"  {styled(f'{label:<4}', fg=fg)}  {styled(c.name.ljust(width))}  "
                    f"{styled(c.detail)}".rstrip())  # fmt: skip
        if c.fix and c.level != "ok":
            echo(f"  {'':<4}  {'':<{width}}  fix: {c.fix}")
    failing = [c.name for c in health.failing]
    if failing:
        echo(f"{health.name}: {len(failing)} failing check(s): {', '.join(failing)}; "
             f"`coord doctor {health.name}` again once fixed")  # fmt: skip


_STATE = {
    "ok": ("ok", "green"),
    "changed": ("changed", "cyan"),
    "would_change": ("would change", "yellow"),
    "failed": ("FAILED", "red"),
    "manual": ("by hand", "yellow"),
    "skipped": ("skipped", None),
}


@coord.command(short_help="Set machines up from a playbook: tools, workdir, clones (idempotent).")
@click.argument("machines", nargs=-1, required=True, shell_complete=complete_machines)
@click.option("--dry-run", "-n", is_flag=True, help="Only check; change nothing.")
@click.option("--playbook", "-p", type=click.Path(dir_okay=False), default=None,
              help="Your own setup playbook (default: the shipped setup-machine.yml).")  # fmt: skip
@click.option("--enable", multiple=True, metavar="STEP",
              help="Run a step the playbook has off (e.g. worker-user).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_state
def setup(
    state: State,
    machines: tuple[str, ...],
    dry_run: bool,
    playbook: str | None,
    enable: tuple[str, ...],
    as_json: bool,
) -> None:
    """Set MACHINES up: check each step of the setup playbook, and do what can be done.

    One command per machine runs every step: its check, and where that fails, its run
    (then the check again): git, tmux, flock and claude there (with versions), claude
    logged in, the workdir made, each repo the machine works on cloned (from the repo's
    url, or its GitHub URL).  What only a person can do is listed at the end.  A second
    run changes nothing.  Exit status 1 when a step failed or is left to do by hand.

    \b
    Examples:
      coord setup gpu-box -n                  # what it would do
      coord setup gpu-box cpu-1
      coord setup gpu-box --enable worker-user
      coord setup gpu-box --playbook my-setup.yml
    """

    def heard(done: MachineSetup) -> None:
        said = f"error: {done.error}" if done.error else f"{len(done.steps)} step(s)"
        echo(f"coord: {done.name} answered: {said}", err=True)

    async def go() -> SetupReport:
        async with state.coordinator() as c:
            return await c.setup_machine(
                machines, playbook=playbook, dry_run=dry_run, enable=enable,
                on_machine=heard if not as_json and sys.stderr.isatty() else None,
            )  # fmt: skip

    report = run(go)
    if as_json:
        echo_json(report.to_dict())
    else:
        _print_setup(report)
    if any(m.error or any(s.state in ("failed", "manual") for s in m.steps)
           for m in report.machines):  # fmt: skip
        raise SystemExit(EXIT_ERROR)


def _print_setup(report: SetupReport) -> None:
    by_hand: list[tuple[str, Any]] = []
    for m in report.machines:
        echo_styled(styled(m.name, bold=True) + (" (dry run)" if report.dry_run else ""))
        if m.error:
            echo(f"coord: {m.name}: not set up: {m.error}", err=True)
            continue
        width = max((len(s.name) for s in m.steps), default=0)
        for s in m.steps:
            label, fg = _STATE.get(s.state, (s.state, None))
            echo_styled(f"  {styled(f'{label:<12}', fg=fg)}  {styled(s.name.ljust(width))}  "
                        f"{styled(s.detail)}".rstrip())  # fmt: skip
            if s.manual and s.state in ("manual", "failed"):
                by_hand.append((m.name, s))
        counts = {k: sum(1 for s in m.steps if s.state == k) for k in _STATE}
        said = [f"{counts['ok']} ok", f"{counts['changed']} changed"]
        said += [f"{counts[k]} {_STATE[k][0].lower()}" for k in
                 ("would_change", "failed", "manual", "skipped") if counts[k]]  # fmt: skip
        echo(f"{m.name}: {', '.join(said)}" + (" (ready)" if m.ready else ""))
    if by_hand:
        echo("To do by hand:")
        for name, s in by_hand:
            echo(f"  {name}: {s.name}: {s.manual}")
    if not report.dry_run:  # a doctor's earlier finding may predate what this changed
        names = " ".join(m.name for m in report.machines)
        echo(f"Next: `coord doctor {names}` checks the whole of each machine again")
