"""``coord assign``, ``status``, ``watch``, ``wait``, ``log``, ``stop``, ``resume``, ``retry``,
``continue`` and ``resume-stuck``."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click

from .main import State, coord, pass_state, run
from .output import echo, echo_json

if TYPE_CHECKING:
    from coordlib.assignment import Assignment
    from coordlib.coordinator import StatusReport
    from coordlib.monitor import MachineStatus


@coord.command()
@click.argument("machine")
@click.argument("repo")
@click.argument("issue", type=click.IntRange(min=0))
@click.option("--model", "-m", help="Model tier (haiku, sonnet, opus) or a full model id.")
@click.option("--briefing", "-b", help="The briefing text (default: rendered from a template).")
@click.option(
    "--briefing-file",
    "-f",
    type=click.File("r"),
    help="Read the briefing from a file (- for stdin).",
)
@click.option("--title", "-t", help="The issue's title (names the branch).")
@click.option("--dry-run", is_flag=True, help="Show what would run; start nothing.")
@click.option(
    "--force", is_flag=True, help="Dispatch even if the issue is claimed or the machine full."
)
@click.option(
    "--no-pipeline", is_flag=True, help="Run the work alone: `coord notify` will not carry it on."
)
@click.option("--json", "as_json", is_flag=True, help="Print the assignment as JSON.")
@pass_state
def assign(
    state: State,
    machine: str,
    repo: str,
    issue: int,
    model: str | None,
    briefing: str | None,
    briefing_file: Any,
    title: str | None,
    dry_run: bool,
    force: bool,
    no_pipeline: bool,
    as_json: bool,
) -> None:
    """Start a worker on MACHINE for ISSUE of REPO (the pipeline's work stage)."""
    if briefing is not None and briefing_file is not None:
        raise click.UsageError("give --briefing or --briefing-file, not both")
    if briefing_file is not None:
        briefing = briefing_file.read()

    async def go() -> Assignment:
        async with state.coordinator() as c:
            return await c.assign(
                machine, repo, issue, model=model, briefing=briefing, title=title,
                dry_run=dry_run, force=force, pipeline=not no_pipeline,
            )  # fmt: skip

    a = run(go)
    if as_json:
        data = a.to_dict()
        echo_json(
            {
                k: data[k]
                for k in (
                    "id",
                    "machine",
                    "repo",
                    "issue",
                    "branch",
                    "model",
                    "status",
                    "title",
                    "tier",
                    "worktree",
                    "run_dir",
                )
            }
            | (
                {"argv": a.extra.get("argv"), "briefing": a.extra.get("briefing")}
                if dry_run
                else {}
            )
        )
        return
    if dry_run:
        echo(f"would start {a.id} on {a.machine}: {a.repo}#{a.issue} on branch {a.branch}")
        echo(f"  model   {a.model}")
        echo(f"  worktree {a.worktree}")
        echo(f"  command {' '.join(a.extra.get('argv', []))}")
        echo("  briefing:")
        for line in str(a.extra.get("briefing", "")).splitlines():
            echo(f"    {line}".rstrip())
        return
    echo(f"{a.id} {a.status} on {a.machine}: {a.repo}#{a.issue} {a.branch} ({a.model})")
    echo(f"  follow it with `coord watch {a.id}`")


def _age(ts: float | None) -> str:
    from coordlib.contacts import format_age

    return format_age(time.time() - ts) if ts else "-"


_NOTE_WIDTH = 80


def _cut(text: str, width: int = _NOTE_WIDTH) -> str:
    """Cut text to width at a word boundary, marked with an ellipsis."""
    if len(text) <= width:
        return text
    head = text[: width - 1]
    space = head.rfind(" ")
    return (head[:space] if space > width // 2 else head).rstrip(" ,;:") + "…"


def _machine_line(m: MachineStatus) -> str:
    if m.reachable:
        return f"{m.name:<16} up      {m.running} running"
    seen = f"; last contact {_age(m.seen_at)} ago" if m.seen_at else ""
    why = (m.error or "").removeprefix(f"{m.name}: ")  # the line starts with the name
    return f"{m.name:<16} {m.state.upper():<7} {why}{seen}"


def _print_status(report: StatusReport, *, show_all: bool = False) -> None:
    lines = [_machine_line(m) for m in report.machines]
    refused = {a.id for a in report.assignments if a.failure_class == "dispatch_failed"}
    shown = report.assignments if show_all else [a for a in report.assignments
                                                 if a.id not in refused]  # fmt: skip
    if not shown:
        lines += ["", "no assignments; start one with `coord assign MACHINE REPO ISSUE`"]
    else:
        lines += ["", f"{'ID':<22} {'MACHINE':<12} {'ISSUE':<18} {'STATUS':<9} "
                      f"{'AGE':>5} {'TURNS':>5} {'COST':>8}  NOTE"]  # fmt: skip
        lines += [_status_line(a, report.unreachable(a)) for a in shown]
    if refused and not show_all:
        lines += ["", f"({len(refused)} dispatch(es) that never started are not shown: "
                      f"coord status --all)"]  # fmt: skip
    costs: dict[str, float] = {}
    for a in report.assignments:
        if a.cost_usd:
            key = f"{a.repo}#{a.issue}"
            costs[key] = costs.get(key, 0.0) + a.cost_usd
    if costs:
        each = ", ".join(f"{k} ${v:.2f}" for k, v in sorted(costs.items(), key=lambda x: -x[1]))
        lines += ["", f"cost by issue: {each} (total ${sum(costs.values()):.2f})"[:400]]
    echo("\n".join(lines))  # one write: a big board is hundreds of lines


def _status_line(a: Assignment, down: MachineStatus | None = None) -> str:
    cost = f"${a.cost_usd:.4f}" if a.cost_usd is not None else "-"
    turns = str(a.num_turns) if a.num_turns is not None else "-"
    status = str(a.status)
    if down is not None and not a.is_terminal:
        # Last known: the machine did not answer, so this is what it said last time.
        status += "?"
        seen = f"; last contact {_age(down.seen_at)} ago" if down.seen_at else ""
        note = f"{down.name} did not answer ({down.state}){seen}"
    elif a.status == "done":
        note = a.last_status or ""
    elif a.status == "queued":
        until = a.not_before or 0.0
        note = f"rate limited; continues after {time.strftime('%H:%M:%S', time.localtime(until))}"
    elif a.is_terminal:
        note = a.failure_class or a.exit_reason or ""
        if a.error and a.status != "done":
            note = f"{note}: {a.error}" if note else a.error
    else:
        note = " | ".join(x for x in (a.last_status, a.last_tool and f"[tool] {a.last_tool}") if x)
    issue = f"{a.repo}#{a.issue}"
    return (
        f"{a.id:<22} {a.machine:<12} {issue:<18} {status:<9} "
        f"{_age(a.started_at or a.created_at):>5} {turns:>5} {cost:>8}  {_cut(note)}"
    )


@coord.command()
@click.option("--machine", help="Only this machine.")
@click.option("--history", is_flag=True, help="Include archived assignments.")
@click.option("--all", "show_all", is_flag=True, help="Also dispatches that never started.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON contract.")
@pass_state
def status(state: State, machine: str | None, history: bool, show_all: bool,
           as_json: bool) -> None:  # fmt: skip
    """Ask every machine once and show every assignment."""
    heard = None
    if not as_json and sys.stderr.isatty():
        # On a terminal, each machine as it answers: a hung one holds up no other's news.
        def heard(m: MachineStatus) -> None:
            said = "answered" if m.reachable else f"{m.state}: {m.error}"
            echo(f"coord: {m.name} {said} ({m.seconds or 0:.1f} s)", err=True)

    async def go() -> StatusReport:
        async with state.coordinator() as c:
            return await c.status(machine=machine, history=history, on_machine=heard)

    report = run(go)
    if as_json:
        echo_json(report.to_dict())
    else:
        _print_status(report, show_all=show_all)


@coord.command()
@click.argument("id")
@click.option("--all", "verbose", is_flag=True, help="Show every event, not the filtered view.")
@pass_state
def watch(state: State, id: str, verbose: bool) -> None:
    """Follow a worker's events live until it ends."""
    from coordlib.event_view import format_event

    async def go() -> Assignment:
        async with state.coordinator() as c:
            async for event in c.watch(id):
                line = format_event(event, verbose=verbose)
                if line is not None:
                    echo(line)
            return c.get(id)

    a = run(go)
    echo(f"-- {a.id} {a.status}" + (f" ({a.failure_class})" if a.failure_class else ""))


@coord.command()
@click.argument("id")
@click.option(
    "--timeout", type=float, default=None, help="Give up after this many seconds (exit 2)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the assignment as JSON.")
@pass_state
def wait(state: State, id: str, timeout: float | None, as_json: bool) -> None:
    """Wait for a worker to end: exit 0 when done, 1 otherwise, 2 on timeout."""
    from coordlib.errors import WaitTimeout

    async def go() -> Assignment:
        async with state.coordinator() as c:
            return await c.wait(id, timeout=timeout)

    try:
        a = run(go)
    except WaitTimeout as exc:
        echo(f"coord: {exc}", err=True)
        sys.exit(2)
    if as_json:
        echo_json(a.to_dict())
    else:
        tail = f" ({a.failure_class})" if a.failure_class else ""
        echo(f"{a.id} {a.status}{tail}")
    sys.exit(0 if a.status == "done" else 1)


@coord.command()
@click.argument("id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the run ends.")
@click.option("--stderr", is_flag=True, help="Show the worker's stderr instead of its events.")
@pass_state
def log(state: State, id: str, follow: bool, stderr: bool) -> None:
    """Print a worker's raw stream-json output (or its stderr)."""
    out = sys.stdout.buffer  # (click.get_binary_stream is deprecated from click 8.5)
    # Raw bytes for a pipe or a file; on a terminal, control characters are made visible.
    shown = _Visible() if out.isatty() else bytes

    async def go() -> None:
        async with state.coordinator() as c:
            async for chunk in c.log(id, follow=follow, stderr=stderr):
                out.write(shown(chunk))
                out.flush()

    run(go)


class _Visible:
    """Bytes in, the same text out with its control characters made visible."""

    def __init__(self) -> None:
        import codecs

        # Incremental: a chunk may end inside a character.
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def __call__(self, chunk: bytes) -> bytes:
        from coordlib.terminal import printable

        return printable(self._decoder.decode(chunk)).encode()


@coord.command()
@click.argument("id")
@pass_state
def stop(state: State, id: str) -> None:
    """Stop a worker: its whole process group is killed, its worktree kept."""

    async def go() -> Assignment:
        async with state.coordinator() as c:
            return await c.stop(id)

    a = run(go)
    echo(f"{a.id} {a.status}")


@coord.command()
@click.option(
    "--from-forge", is_flag=True, help="First restore assignments from the issues' trail."
)
@click.option("--json", "as_json", is_flag=True, help="Print what was repaired as JSON.")
@pass_state
def resume(state: State, from_forge: bool, as_json: bool) -> None:
    """Rebuild the board from what the machines report, and repair it."""
    from coordlib.coordinator import ResumeReport

    async def go() -> ResumeReport:
        async with state.coordinator() as c:
            return await c.resume(from_forge=from_forge)

    report = run(go)
    if as_json:
        echo_json(report.to_dict())
        return
    for aid in report.restored:
        echo(f"{aid}: restored from the forge's trail")
    for skip in report.skipped:
        echo(f"{skip.repo}#{skip.issue}: skipped the marker in comment {skip.comment}: "
             f"{skip.reason}")  # fmt: skip
    for aid, old, new in report.changed:
        echo(f"{aid}: {old} -> {new}")
    for m in report.unreachable:
        echo(f"{m.name}: unreachable ({m.error}); its assignments stay as they are")
    for name, ids in report.orphans.items():
        echo(f"{name}: runs not on the board: {', '.join(ids)}")
    if report.orphans and not from_forge:
        echo("  if the board was lost, `coord resume --from-forge` puts these back from the "
             "issues' trail")  # fmt: skip
    for a in report.continued:
        echo(f"{a.continues}: rate limit over, continued as {a.id}")
    for aid, stage in report.posted:
        echo(f"{aid}: posted its {stage} comment on the issue")
    if not (
        report.changed
        or report.unreachable
        or report.orphans
        or report.continued
        or report.restored
        or report.skipped
        or report.posted
    ):
        echo("board matches the machines; nothing to repair")


def _started(a: Assignment, what: str) -> None:
    echo(f"{a.id} {a.status} on {a.machine}: {a.repo}#{a.issue} {a.branch} ({a.model})")
    echo(f"  {what}; follow it with `coord watch {a.id}`")


@coord.command()
@click.argument("id")
@click.option("--machine", help="Run the new attempt here (default: the same machine).")
@click.option("--model", "-m", help="Model tier or id for the new attempt (default: the same).")
@click.option("--force", is_flag=True, help="Dispatch even if the machine is full.")
@click.option("--json", "as_json", is_flag=True, help="Print the new assignment as JSON.")
@pass_state
def retry(state: State, id: str, machine: str | None, model: str | None, force: bool,
          as_json: bool) -> None:  # fmt: skip
    """Start an ended assignment's issue again, as a new attempt on a fresh branch."""

    async def go() -> Assignment:
        async with state.coordinator() as c:
            return await c.retry(id, machine=machine, model=model, force=force)

    a = run(go)
    if as_json:
        echo_json(a.to_dict())
        return
    _started(a, f"attempt {a.attempt} of {a.repo}#{a.issue} (retries {a.extra.get('retry_of')})")


@coord.command("continue")
@click.argument("id")
@click.option("--guidance", "-g", help="What the worker should do now (default: carry on).")
@click.option("--model", "-m", help="Continue with this model tier or id (default: the same).")
@click.option("--json", "as_json", is_flag=True, help="Print the new assignment as JSON.")
@pass_state
def continue_(state: State, id: str, guidance: str | None, model: str | None,
              as_json: bool) -> None:  # fmt: skip
    """Continue a queued (rate-limited) assignment's session now, even one held after a restore."""

    async def go() -> Assignment:
        async with state.coordinator() as c:
            return await c.continue_(id, guidance=guidance, model=model)

    a = run(go)
    if as_json:
        echo_json(a.to_dict())
        return
    _started(a, f"continues {a.extra.get('continues')}")


@coord.command("resume-stuck")
@click.argument("id")
@click.option("--guidance", "-g", required=True, help="What the worker should do now.")
@click.option("--model", "-m", help="Continue with this model tier or id (default: the same).")
@click.option("--json", "as_json", is_flag=True, help="Print the new assignment as JSON.")
@pass_state
def resume_stuck(state: State, id: str, guidance: str, model: str | None, as_json: bool) -> None:
    """Stop a stuck worker and continue its session with guidance, in the same worktree."""

    async def go() -> Assignment:
        async with state.coordinator() as c:
            return await c.resume_stuck(id, guidance, model=model)

    a = run(go)
    if as_json:
        echo_json(a.to_dict())
        return
    _started(a, f"continues session {a.session_id} of {a.extra.get('continues')}")
