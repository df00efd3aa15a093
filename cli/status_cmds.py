"""``coord status`` (every assignment, filtered, newest first) and ``coord show`` (one)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click

from .complete import complete_ids, complete_machines, complete_repos
from .main import EXIT_ERROR, State, coord, pass_state, run
from .output import echo, echo_json, echo_styled, styled

if TYPE_CHECKING:
    from coordlib.assignment import Assignment
    from coordlib.coordinator import StatusReport
    from coordlib.monitor import MachineStatus

STATES = ("pending", "running", "stuck", "queued", "done", "failed", "stopped", "lost")
_COLOUR = {"failed": "red", "lost": "red", "stuck": "yellow", "queued": "yellow",
           "stopped": "yellow", "done": "green", "running": "cyan"}  # fmt: skip
_FAILED = ("failed", "lost")


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


def state_of(a: Assignment) -> str:
    """The state a person reads: the status, or "stuck" for a live worker that asked."""
    if not a.is_terminal and (a.last_status or "").startswith("STUCK:"):
        return "stuck"
    return str(a.status)


def _machine_line(m: MachineStatus) -> str:
    from coordlib.contacts import format_kib

    if m.reachable:
        disk = ""
        if m.disk is not None and m.disk.used_kb >= 0 and m.disk.free_kb >= 0:
            disk = (
                f"; disk {format_kib(m.disk.used_kb)} used by coord, "
                f"{format_kib(m.disk.free_kb)} free"
            )
        return f"{styled(f'{m.name:<16}')} up      {m.running} running{disk}"
    seen = f"; last contact {_age(m.seen_at)} ago" if m.seen_at else ""
    seen += "; stale: no new work until it answers" if m.stale else ""
    why = (m.error or "").removeprefix(f"{m.name}: ")  # the line starts with the name
    down = styled(f"{m.state.upper():<7}", fg="red", bold=True)
    return f"{styled(f'{m.name:<16}')} {down} {styled(why + seen)}"


def _status_line(a: Assignment, down: MachineStatus | None = None) -> str:
    cost = f"${a.cost_usd:.4f}" if a.cost_usd is not None else "-"
    turns = str(a.num_turns) if a.num_turns is not None else "-"
    status = state_of(a)
    colour = _COLOUR.get(status)
    if down is not None and not a.is_terminal:
        # Last known: the machine did not answer, so this is what it said last time.
        status += "?"
        colour = "red"
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
    head = styled(f"{a.id:<22} {a.machine:<12} {issue:<18}")
    shown = styled(f"{status:<9}", fg=colour)
    tail = styled(f"{_age(a.started_at or a.created_at):>5} {turns:>5} {cost:>8}  {_cut(note)}")
    return f"{head} {shown} {tail}"


def _summary(rows: list[Assignment], report: StatusReport) -> str:
    counts: dict[str, int] = {}
    for a in rows:
        counts[state_of(a)] = counts.get(state_of(a), 0) + 1
    said = ", ".join(f"{n} {s}" for s in STATES if (n := counts.get(s)))
    up = sum(1 for m in report.machines if m.reachable)
    down = len(report.machines) - up
    machines = f"{up} machine{'s' * (up != 1)} up" + (f", {down} down" if down else "")
    return (
        f"{len(rows)} assignment{'s' * (len(rows) != 1)}"
        + (f": {said}" if said else "")
        + (f"; {machines}")
    )


def _overlaps(rows: list[Assignment]) -> list[dict[str, Any]]:
    from coordlib.planner import overlaps

    return [{"a": a, "b": b, "files": files} for a, b, files in overlaps(rows)]


def _print_status(report: StatusReport, rows: list[Assignment], *, show_all: bool) -> None:
    lines = [_machine_line(m) for m in report.machines]
    if not report.confined:
        said = (
            "workers run unconfined (worker.confine: false): no sandbox, file tools "
            "anywhere, the API key in Bash"
        )
        lines.append(styled(said, fg="yellow", bold=True))
    refused = {a.id for a in rows if a.failure_class == "dispatch_failed"}
    shown = rows if show_all else [a for a in rows if a.id not in refused]
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
    for a in rows:
        if a.cost_usd:
            key = f"{a.repo}#{a.issue}"
            costs[key] = costs.get(key, 0.0) + a.cost_usd
    if costs:
        each = ", ".join(f"{k} ${v:.2f}" for k, v in sorted(costs.items(), key=lambda x: -x[1]))
        lines += ["", styled(f"cost by issue: {each} (total ${sum(costs.values()):.2f})"[:400])]
    clashes = _overlaps(rows)
    if clashes:
        lines += ["", styled("overlaps (two live workers changing the same files):", fg="yellow")]
        lines += [styled(f"  {x['a']} and {x['b']}: {_cut(', '.join(x['files']), 60)}")
                  for x in clashes]  # fmt: skip
    lines += ["", styled(_summary(shown, report))]
    echo_styled("\n".join(lines))  # one write: a big board is hundreds of lines


def _pick(
    report: StatusReport, *, repo: str | None, states: tuple[str, ...], since: str | None,
    limit: int | None,
) -> list[Assignment]:  # fmt: skip
    """The assignments asked for, newest first."""
    cutoff = None
    if since is not None:
        from coordlib.metrics import parse_since

        cutoff = parse_since(since, now=time.time())
    rows = [
        a for a in report.assignments
        if (repo is None or a.repo == repo) and (not states or state_of(a) in states)
        and (cutoff is None or a.created_at >= cutoff)
    ]  # fmt: skip
    rows.sort(key=lambda a: a.created_at, reverse=True)
    return rows[:limit] if limit else rows


@coord.command(short_help="Ask every machine once; show every assignment, newest first.")
@click.option("--machine", shell_complete=complete_machines, help="Only this machine.")
@click.option("--repo", shell_complete=complete_repos, help="Only this repo's assignments.")
@click.option("--state", "states", multiple=True, type=click.Choice(STATES),
              help="Only assignments in this state (again for more).")  # fmt: skip
@click.option("--since", help="Only those started in the last 30m, 24h, 7d, …")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many (the newest).")
@click.option("--history", is_flag=True, help="Include archived assignments.")
@click.option("--all", "show_all", is_flag=True, help="Also dispatches that never started.")
@click.option("--check", is_flag=True, help="Exit 1 if a machine is down or a run failed.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON contract.")
@pass_state
def status(state: State, machine: str | None, repo: str | None, states: tuple[str, ...],
           since: str | None, limit: int | None, history: bool, show_all: bool, check: bool,
           as_json: bool) -> None:  # fmt: skip
    """Ask every machine once (one command each) and show every assignment, newest first,
    with a summary line.  Failed and lost runs, stuck workers and machines that are down
    stand out in colour on a terminal (``--color``, ``NO_COLOR``).

    \b
    Examples:
      coord status
      coord status --state running --state stuck
      coord status --repo api --since 24h --limit 20
      coord status --check || notify-send "coord: a machine is down or a run failed"
      coord status --json | jq '.assignments[] | select(.status == "failed") | .id'
    """
    heard = None
    if not as_json and sys.stderr.isatty():
        # On a terminal, each machine as it answers: a hung one holds up no other's news.
        def heard(m: MachineStatus) -> None:
            said = "answered" if m.reachable else f"{m.state}: {m.error}"
            echo(f"coord: {m.name} {said} ({m.seconds or 0:.1f} s)", err=True)

    async def go() -> StatusReport:
        async with state.coordinator() as c:
            if repo is not None:
                c.config.repo(repo)  # an unknown repo: said, with the nearest name
            return await c.status(machine=machine, history=history, on_machine=heard)

    report = run(go)
    rows = _pick(report, repo=repo, states=states, since=since, limit=limit)
    if as_json:
        data = report.to_dict()
        keep = {a.id for a in rows}
        data["overlaps"] = _overlaps(rows)
        data["assignments"] = sorted((x for x in data["assignments"] if x["id"] in keep),
                                     key=lambda x: -float(x.get("created_at") or 0))  # fmt: skip
        echo_json(data)
    else:
        _print_status(report, rows, show_all=show_all)
    if check and (
        any(not m.reachable for m in report.machines) or any(str(a.status) in _FAILED for a in rows)
    ):
        sys.exit(EXIT_ERROR)


def _next_steps(a: Assignment) -> list[str]:
    said = state_of(a)
    if said == "stuck":
        return [f"coord resume-stuck {a.id} --guidance '…'   (answer it and go on)"]
    if said in ("running", "pending"):
        return [f"coord watch {a.id}   (follow it)", f"coord stop {a.id}   (stop it)"]
    if said == "queued":
        return [f"coord continue {a.id}   (now, not after the rate limit)"]
    if said == "done":
        return [f"coord pipeline {a.repo}#{a.issue}   (where its issue is now)",
                f"coord log {a.id}   (its whole stream)"]  # fmt: skip
    return [f"coord log {a.id} --stderr   (what went wrong)",
            f"coord retry {a.id}   (start the issue again, fresh)"]  # fmt: skip


async def _recent_status_lines(c: Any, a: Assignment, n: int = 5) -> list[str]:
    """The run's last `n` STATUS/STUCK lines, read from its events' end on its machine."""
    from coordlib.stream import Progress, parse_line

    data = bytearray()
    async for chunk in c.log(a.id, offset=max(0, a.events_offset - 256 * 1024)):
        data += chunk
    lines = [f"{e.kind}: {e.text}" for raw in bytes(data).splitlines()
             for e in parse_line(raw) if isinstance(e, Progress)]  # fmt: skip
    return lines[-n:]


@coord.command(short_help="Everything about one assignment, and what to do next.")
@click.argument("id", shell_complete=complete_ids)
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON.")
@pass_state
def show(state: State, id: str, as_json: bool) -> None:
    """Show one assignment: its row, its branch, its last STATUS lines (read from its
    machine; skipped when the machine does not answer), where its files are, and what to do
    next.

    \b
    Examples:
      coord show api-42-1f3a
      coord show api-42 --json | jq .outcome
    """

    async def go() -> tuple[Assignment, list[str], str | None]:
        from coordlib.errors import CoordError

        async with state.coordinator() as c:
            a = c.get(id)
            try:
                recent = await _recent_status_lines(c, a)
                why = None
            except CoordError as exc:
                recent, why = [], str(exc)
            return a, recent, why

    a, recent, why = run(go)
    steps = _next_steps(a)
    if as_json:
        echo_json({**a.to_dict(), "state": state_of(a), "recent_status": recent,
                   "next": steps})  # fmt: skip
        return
    said = state_of(a)
    colour = _COLOUR.get(said)
    lines = [
        styled(f"{a.id}  ") + styled(said, fg=colour)
        + styled(f"  {a.repo}#{a.issue} {a.title}"),
        styled(f"  machine   {a.machine}   model {a.model}" + (f" ({a.tier})" if a.tier else "")),
        styled(f"  branch    {a.branch}" + (f" (from {a.base_sha[:12]})" if a.base_sha else "")),
        styled(f"  stage     {a.stage or 'work'}   attempt {a.attempt}"),
        styled(f"  started   {_age(a.started_at or a.created_at)} ago"
               + (f", ended {_age(a.finished_at)} ago" if a.finished_at else "")),
        styled(f"  turns     {a.num_turns if a.num_turns is not None else '-'}   cost "
               + (f"${a.cost_usd:.4f}" if a.cost_usd is not None else "-")),
    ]  # fmt: skip
    if a.failure_class or a.error:
        lines.append(styled(f"  why       {a.failure_class or ''} {a.error or ''}".rstrip()))
    if a.outcome:
        from coordlib.outcomes import summary

        lines.append(styled(f"  left      {summary(a.outcome, branch=a.branch) or '-'}"))
    if a.setup is not None:
        ran = a.setup
        how = ("ran past its timeout" if ran.get("timed_out") else
               "ok" if ran.get("exit") == 0 else f"failed (exit {ran.get('exit')})")  # fmt: skip
        lines.append(styled(f"  setup     {how} in {ran.get('seconds', 0):g} s   (setup.log in "
                            "the run dir)"))  # fmt: skip
    if a.ports:
        held = "held" if a.is_terminal else "holds"
        lines.append(styled(f"  ports     {held} {a.ports[0]}-{a.ports[1]} (COORD_PORT, "
                            "COORD_PORTS)"))  # fmt: skip
    lines += ["", styled(f"  worktree  {a.worktree}   (on {a.machine})"),
              styled(f"  run dir   {a.run_dir}   (briefing, events, stderr)")]  # fmt: skip
    lines += ["", "  last STATUS lines:" if recent else (
        f"  last STATUS lines: none{' (' + why + ')' if why else ''}")]  # fmt: skip
    lines += [styled(f"    {x}") for x in recent]
    lines += ["", "  next:"] + [styled(f"    {x}") for x in steps]
    echo_styled("\n".join(lines))
