"""``coord assign``, ``watch``, ``wait``, ``log``, ``stop``, ``resume``, ``retry``,
``continue`` and ``resume-stuck`` (``status`` and ``show`` are in status_cmds)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click

from coordlib.terminal import printable

from .complete import complete_ids, complete_machines, complete_repos
from .main import State, coord, pass_state, run
from .output import echo, echo_json

if TYPE_CHECKING:
    from coordlib.assignment import Assignment
    from coordlib.monitor import MachineStatus


@coord.command(short_help="Start a worker for an issue (the pipeline's work stage).")
@click.argument("machine", shell_complete=complete_machines)
@click.argument("repo", shell_complete=complete_repos)
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
    """Start a worker on MACHINE for ISSUE of REPO (the pipeline's work stage).

    The issue is read from the repo's forge (its title names the branch, a label can pick
    the tier, the briefing quotes it) and claimed; the worker starts in a worktree of its
    own under tmux, with one remote command.

    \b
    Examples:
      coord assign gpu-box api 42
      coord assign local api 42 --model opus --no-pipeline
      coord assign local api 7 --title "Fix the login check" --briefing-file brief.md
      coord assign local api 42 --dry-run      # the briefing it would send
    """
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


@coord.command(short_help="Follow a worker's events live until it ends.")
@click.argument("id", shell_complete=complete_ids)
@click.option("--all", "verbose", is_flag=True, help="Show every event, not the filtered view.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per event: {id, kind, line, event}.")  # fmt: skip
@pass_state
def watch(state: State, id: str, verbose: bool, as_json: bool) -> None:
    """Follow a worker's events live until it ends: its tool calls, STATUS lines, retries and
    result (--all: every event).  A dropped connection is resumed where it left off.

    \b
    Examples:
      coord watch api-42-1f3a
      coord watch api-42 --json | jq -r 'select(.kind == "progress") | .line'
    """
    import json

    from coordlib.event_view import format_event

    async def go() -> Assignment:
        async with state.coordinator() as c:
            aid = c.get(id).id
            async for event in c.watch(id):
                line = format_event(event, verbose=verbose)
                if line is None:
                    continue
                if as_json:
                    raw = getattr(event, "raw", None)
                    click.echo(json.dumps({"id": aid, "kind": type(event).__name__.lower(),
                                           "line": line, "event": raw}))  # fmt: skip
                else:
                    echo(line)
            return c.get(id)

    a = run(go)
    if not as_json:
        echo(f"-- {a.id} {a.status}" + (f" ({a.failure_class})" if a.failure_class else ""))


@coord.command(short_help="Wait for a worker to end: exit 0 done, 1 otherwise, 2 timeout.")
@click.argument("id", shell_complete=complete_ids)
@click.option(
    "--timeout", type=float, default=None, help="Give up after this many seconds (exit 2)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the assignment as JSON.")
@pass_state
def wait(state: State, id: str, timeout: float | None, as_json: bool) -> None:
    """Wait for a worker to end: exit 0 when it is done, 1 when it ended otherwise, 2 on
    timeout.  On a terminal a live line shows its status, turns, last STATUS line and age;
    piped, it stays quiet.  A rate-limited run is continued when its wait is over.

    \b
    Examples:
      coord wait api-42-1f3a && coord pr api-42-1f3a
      coord wait api-42 --timeout 600 --json > result.json
    """
    from coordlib.errors import WaitTimeout

    live = sys.stdout.isatty() and not as_json

    def update(a: Assignment) -> None:
        note = _cut_line(a.last_status or (f"[tool] {a.last_tool}" if a.last_tool else ""))
        age = time.time() - (a.started_at or a.created_at)
        line = f"{a.id} {a.status}  {a.num_turns or 0} turns  {int(age)}s  {note}"
        click.echo(f"\r\x1b[2K{printable(line)[: _line_width()]}", nl=False)

    async def go() -> Assignment:
        async with state.coordinator() as c:
            return await c.wait(id, timeout=timeout, on_update=update if live else None)

    try:
        a = run(go)
    except WaitTimeout as exc:
        if live:
            click.echo("\r\x1b[2K", nl=False)
        echo(f"coord: {exc}", err=True)
        sys.exit(2)
    if live:
        click.echo("\r\x1b[2K", nl=False)
    if as_json:
        echo_json(a.to_dict())
    else:
        tail = f" ({a.failure_class})" if a.failure_class else ""
        echo(f"{a.id} {a.status}{tail}")
    sys.exit(0 if a.status == "done" else 1)


def _cut_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def _line_width() -> int:
    import shutil

    return max(20, shutil.get_terminal_size((100, 20)).columns - 1)


@coord.command(short_help="Print a worker's raw stream-json output (or stderr).")
@click.argument("id", shell_complete=complete_ids)
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the run ends.")
@click.option("--stderr", is_flag=True, help="Show the worker's stderr instead of its events.")
@pass_state
def log(state: State, id: str, follow: bool, stderr: bool) -> None:
    """Print a worker's raw stream-json output (or its stderr), from its machine.

    \b
    Examples:
      coord log api-42-1f3a | jq -c 'select(.type == "result")'
      coord log api-42 --stderr
      coord log api-42 -f
    """
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


@coord.command(short_help="Stop a worker; its worktree is kept.")
@click.argument("id", shell_complete=complete_ids)
@click.option("--json", "as_json", is_flag=True, help="Print the assignment as JSON.")
@pass_state
def stop(state: State, id: str, as_json: bool) -> None:
    """Stop a worker: its whole process group is killed, its worktree kept.  A run that has
    already ended is left as it is, and `stop` says so.

    \b
    Examples:
      coord stop api-42-1f3a
      coord stop api-42 --json | jq .status
    """

    async def go() -> tuple[Assignment, bool]:
        async with state.coordinator() as c:
            before = c.get(id)
            if before.is_terminal:
                return before, True
            return await c.stop(id), False

    a, ended = run(go)
    if as_json:
        echo_json({**a.to_dict(), "already_ended": ended})
    elif ended:
        when = time.strftime("%H:%M:%S", time.localtime(a.finished_at)) if a.finished_at else "?"
        why = f" ({a.failure_class})" if a.failure_class else ""
        echo(f"{a.id} had already ended: {a.status}{why} at {when}; nothing to stop")
    else:
        echo(f"{a.id} {a.status}")


@coord.command(short_help="Rebuild the board from the machines, and repair it.")
@click.option(
    "--from-forge", is_flag=True, help="First restore assignments from the issues' trail."
)
@click.option("--json", "as_json", is_flag=True, help="Print what was repaired as JSON.")
@pass_state
def resume(state: State, from_forge: bool, as_json: bool) -> None:
    """Rebuild the board from what the machines report, and repair it: runs that ended
    while nobody watched, runs the board lost (--from-forge: from the issues' trail), rate
    limits that are over, trail comments that could not be posted.  On a terminal each
    machine is shown as it answers.

    \b
    Examples:
      coord resume
      coord resume --from-forge --json
    """
    from coordlib.coordinator import ResumeReport

    heard = _heard if not as_json and sys.stderr.isatty() else None

    async def go() -> ResumeReport:
        async with state.coordinator() as c:
            return await c.resume(from_forge=from_forge, on_machine=heard)

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


def _heard(m: MachineStatus) -> None:
    """A machine's answer as it comes (on a terminal): one slow machine blanks nothing."""
    said = "answered" if m.reachable else f"{m.state}: {m.error}"
    echo(f"coord: {m.name} {said} ({m.seconds or 0:.1f} s)", err=True)


def _started(a: Assignment, what: str) -> None:
    echo(f"{a.id} {a.status} on {a.machine}: {a.repo}#{a.issue} {a.branch} ({a.model})")
    echo(f"  {what}; follow it with `coord watch {a.id}`")


@coord.command(short_help="Start an ended assignment's issue again, on a fresh branch.")
@click.argument("id", shell_complete=complete_ids)
@click.option("--machine", shell_complete=complete_machines,
              help="Run the new attempt here (default: another that can take it).")  # fmt: skip
@click.option("--model", "-m", help="Model tier or id for the new attempt (default: the same).")
@click.option("--force", is_flag=True, help="Dispatch even if the machine is full.")
@click.option("--json", "as_json", is_flag=True, help="Print the new assignment as JSON.")
@pass_state
def retry(state: State, id: str, machine: str | None, model: str | None, force: bool,
          as_json: bool) -> None:  # fmt: skip
    """Start an ended assignment's issue again, as a new attempt on a fresh branch.

    \b
    Examples:
      coord retry api-42-1f3a
      coord retry api-42 --machine gpu-box --model opus
    """

    async def go() -> Assignment:
        async with state.coordinator() as c:
            return await c.retry(id, machine=machine, model=model, force=force)

    a = run(go)
    if as_json:
        echo_json(a.to_dict())
        return
    _started(a, f"attempt {a.attempt} of {a.repo}#{a.issue} (retries {a.extra.get('retry_of')})")


@coord.command("continue", short_help="Continue a rate-limited assignment's session now.")
@click.argument("id", shell_complete=complete_ids)
@click.option("--guidance", "-g", help="What the worker should do now (default: carry on).")
@click.option("--model", "-m", help="Continue with this model tier or id (default: the same).")
@click.option("--json", "as_json", is_flag=True, help="Print the new assignment as JSON.")
@pass_state
def continue_(state: State, id: str, guidance: str | None, model: str | None,
              as_json: bool) -> None:  # fmt: skip
    """Continue a queued (rate-limited) assignment's session now, even one held after a
    restore (or because its issue was closed).

    \b
    Examples:
      coord continue api-42-1f3a
      coord continue api-42 --guidance "skip the slow tests"
    """

    async def go() -> Assignment:
        async with state.coordinator() as c:
            return await c.continue_(id, guidance=guidance, model=model)

    a = run(go)
    if as_json:
        echo_json(a.to_dict())
        return
    _started(a, f"continues {a.extra.get('continues')}")


@coord.command("resume-stuck", short_help="Continue a stuck worker's session with guidance.")
@click.argument("id", shell_complete=complete_ids)
@click.option("--guidance", "-g", required=True, help="What the worker should do now.")
@click.option("--model", "-m", help="Continue with this model tier or id (default: the same).")
@click.option("--json", "as_json", is_flag=True, help="Print the new assignment as JSON.")
@pass_state
def resume_stuck(state: State, id: str, guidance: str, model: str | None, as_json: bool) -> None:
    """Stop a stuck worker and continue its session with guidance, in the same worktree.

    \b
    Examples:
      coord resume-stuck api-42-1f3a --guidance "use the staging key in ~/.config/api"
    """

    async def go() -> Assignment:
        async with state.coordinator() as c:
            return await c.resume_stuck(id, guidance, model=model)

    a = run(go)
    if as_json:
        echo_json(a.to_dict())
        return
    _started(a, f"continues session {a.session_id} of {a.extra.get('continues')}")
