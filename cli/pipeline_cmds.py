"""``coord test``, ``pr``, ``fix``, ``bounce``, ``notify``, ``run``, ``done`` and ``pipeline``:
the issue-to-PR pipeline, by pass and by hand."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click

from .complete import complete_ids, complete_repos
from .main import State, coord, pass_state, run
from .output import echo, echo_json

if TYPE_CHECKING:
    from coordlib.pipeline.engine import PassReport
    from coordlib.pipeline.state import Pipeline
    from coordlib.runloop import LoopPass


@coord.command(short_help="Test a branch head on its machine.")
@click.argument("id", shell_complete=complete_ids)
@click.option("--passed", "verdict", flag_value="passed", help="Record a pass by hand.")
@click.option("--failed", "verdict", flag_value="failed", help="Record a failure by hand.")
@click.option("--reason", default="", help="Why (with --failed: what fails).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@pass_state
def test(state: State, id: str, verdict: str | None, reason: str, as_json: bool) -> None:
    """Build and test assignment ID's branch head on its machine.

    The head is checked out in a clean, detached worktree; the repo's build_command and
    test_command run under pipeline.test_timeout; the whole output stays on the machine.

    \b
    Examples:
      coord test api-42-1f3a
      coord test api-42-1f3a --failed --reason "the login page 500s"
    """
    passed = None if verdict is None else verdict == "passed"

    async def go() -> Any:
        async with state.coordinator() as c:
            return await c.test(id, passed=passed, reason=reason)

    p, tested, facts = run(go)
    data = {"assignment": id, "repo": p.repo, "issue": p.issue, "passed":
            facts["outcome"] == "passed", **facts, "stage": p.stage}  # fmt: skip
    if tested is not None:
        data["tail"] = tested.tail
    if as_json:
        echo_json(data)
    else:
        word = "passed" if data["passed"] else "FAILED"
        sha = (facts.get("sha") or "")[:12]
        where = f" (output: {facts['log']} on {facts.get('machine')})" if facts.get("log") else ""
        echo(f"{p.repo}#{p.issue} {word}{f' at {sha}' if sha else ''}{where}")
        if tested is not None and not tested.passed and tested.tail:
            echo(tested.tail.rstrip()[-1500:])
        echo(f"pipeline: {p.stage}")
    if data["passed"] is False:
        sys.exit(1)


@coord.command(short_help="Push a branch, open its PR, review it.")
@click.argument("id", shell_complete=complete_ids)
@click.option("--no-review", is_flag=True, help="Open the PR without a review.")
@click.option("--json", "as_json", is_flag=True, help="Print {pr, review} as JSON.")
@pass_state
def pr(state: State, id: str, no_review: bool, as_json: bool) -> None:
    """Push ID's branch, open its PR, and start the adversarial review.

    \b
    Examples:
      coord pr api-42-1f3a
      coord pr api-42-1f3a --no-review --json
    """

    async def go() -> dict[str, Any]:
        async with state.coordinator() as c:
            return await c.pr(id, review=not no_review)

    out = run(go)
    if as_json:
        echo_json(out)
        return
    echo(f"PR #{out['pr']} {out.get('url') or ''}".rstrip())
    if out.get("review"):
        echo(f"review: {out['review']} (`coord watch {out['review']}`)")


@coord.command(short_help="Run one fix round now.")
@click.argument("id", shell_complete=complete_ids)
@click.option("--guidance", "-g", default="", help="What the fix worker should do.")
@click.option("--json", "as_json", is_flag=True, help="Print the fix assignment as JSON.")
@pass_state
def fix(state: State, id: str, guidance: str, as_json: bool) -> None:
    """Run one fix round on ID's issue now (beyond the loop cap: you decided).

    \b
    Examples:
      coord fix api-42-1f3a --guidance "keep the old API; add a flag instead"
    """

    async def go() -> Any:
        async with state.coordinator() as c:
            return await c.fix(id, guidance=guidance)

    a = run(go)
    echo_json(a.to_dict()) if as_json else echo(f"fix: {a.id} on {a.machine} ({a.model})")


@coord.command(short_help="Send a review back to a fix worker.")
@click.argument("review_id", shell_complete=complete_ids)
@click.option("--reason", default="", help="The findings to fix (default: the review's).")
@click.option("--json", "as_json", is_flag=True, help="Print the fix assignment as JSON.")
@pass_state
def bounce(state: State, review_id: str, reason: str, as_json: bool) -> None:
    """Send REVIEW_ID's findings back to a fix worker, whatever its verdict.

    \b
    Examples:
      coord bounce api-42-9c0d
      coord bounce api-42-9c0d --reason "the approval missed the migration"
    """

    async def go() -> Any:
        async with state.coordinator() as c:
            return await c.bounce(review_id, reason=reason)

    a = run(go)
    echo_json(a.to_dict()) if as_json else echo(f"fix: {a.id} on {a.machine} ({a.model})")


def _moves(report: PassReport) -> list[str]:
    lines = [f"{m['issue']}: {m['from']} → {m['to']} ({m['outcome']})" for m in report.moves]
    lines += [f"{s['issue']}: STUCK {s['assignment']}: {s['line']}" for s in report.stuck]
    lines += [f"dispatched {aid}" for aid in report.dispatched]
    lines += [f"error: {e}" for e in report.errors]
    if report.paused:
        lines.append(f"paused: {report.paused}")
    return lines


@coord.command(short_help="One pipeline pass over every issue.")
@click.option("--json", "as_json", is_flag=True, help="Print the pass's report as JSON.")
@pass_state
def notify(state: State, as_json: bool) -> None:
    """One pass: ask every machine once, record what ended, and move every issue on.

    Idempotent, and safe to run twice at once (from cron, say).

    \b
    Examples:
      coord notify
      */5 * * * * cd ~/fleet && coord notify --json >> notify.log
    """

    async def go() -> PassReport:
        async with state.coordinator() as c:
            return await c.advance()

    report = run(go)
    if as_json:
        echo_json(report.to_dict())
        return
    for line in _moves(report) or ["nothing moved"]:
        echo(line)


def _screen(
    pipelines: list[Pipeline], report: PassReport, spent: float, workers: dict[str, int]
) -> list[str]:
    stages: dict[str, int] = {}
    for p in pipelines:
        stages[p.stage] = stages.get(p.stage, 0) + 1
    head = "  ".join(f"{k}: {v}" for k, v in sorted(stages.items())) or "no issues"
    lines = [f"{time.strftime('%H:%M:%S')}  {head}  spent ${spent:.2f}"]
    if workers:
        lines.append("  workers: " + "  ".join(f"{m} {n}" for m, n in sorted(workers.items())))
    for p in pipelines:
        if not p.ended or p.stage == "needs-human":
            extra = f"  {p.reason}" if p.reason else ""
            lines.append(f"  {p.key:<20} {p.stage:<14} round {p.round}  "
                         f"{p.current or '':<16} ${p.cost_usd:.2f}{extra}"[:160])  # fmt: skip
    return lines + [f"  {x}" for x in _moves(report)]


@coord.command(name="run", short_help="Loop `coord notify` with a live summary.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=None,
              help="Most seconds between passes when no worker ends (default: "
                   "pipeline.interval, 30).")  # fmt: skip
@click.option("--until-idle", is_flag=True, help="Return when nothing runs or waits.")
@pass_state
def run_(state: State, interval: float | None, until_idle: bool) -> None:
    """Loop `coord notify` in the foreground, with a one-screen summary.

    Each pass starts as soon as a worker ends (one waiting command per machine between
    passes), or after --interval when nothing does.  With merge.auto (the default) it also
    lands what reached ready-to-merge, as `coord merge`.

    \b
    Examples:
      coord run
      coord run --interval 10 --until-idle
    """
    tty = sys.stdout.isatty()

    async def go() -> None:
        async with state.coordinator() as c:

            def show(turn: LoopPass) -> None:
                report = turn.report
                spent = c.engine.ledger.session_spend()["usd"]
                workers: dict[str, int] = {}
                for a in c.board.live():
                    workers[a.machine] = workers.get(a.machine, 0) + 1
                lines = _screen(report.pipelines, report, spent, workers)
                if tty:
                    click.echo("\x1b[H\x1b[2J", nl=False)  # our own escape: not printable()'d
                    echo("\n".join(lines))
                else:
                    for line in _moves(report):
                        echo(line)

            await c.run(interval=interval, until_idle=until_idle, on_pass=show)

    run(go)


@coord.command(short_help="Land ready PRs, tested on their final base.")
@click.option("--dry-run", is_flag=True, help="Stack them and say what would land; land nothing.")
@click.option("--repo", shell_complete=complete_repos, help="Only this repo's PRs.")
@click.option("--method", type=click.Choice(["merge", "squash", "rebase"]),
              help="How each PR goes on the branch (default: merge.method, merge).")  # fmt: skip
@click.option("--order", help="Issues to land, in this order: repo#N,… (or N,… with --repo).")
@click.option("--batch", type=click.IntRange(min=1), help="PRs tested together (merge.batch_size).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_state
def merge(state: State, dry_run: bool, repo: str | None, method: str | None, order: str | None,
          batch: int | None, as_json: bool) -> None:  # fmt: skip
    """Land the PRs that reached ready-to-merge.

    Up to merge.batch_size PRs are stacked on the default branch's head and tested once
    together; only that tested commit lands, and only if the branch did not move meanwhile.
    A red batch is bisected: the PR that breaks it goes back to its issue, the rest land.

    \b
    Examples:
      coord merge --dry-run
      coord merge --repo api --method squash
      coord merge --order api#42,api#40 --batch 1
    """
    keys = [x.strip() for x in (order or "").split(",") if x.strip()]

    async def go() -> Any:
        async with state.coordinator() as c:
            return await c.merge(repo=repo, method=method, order=keys, batch=batch,
                                 dry_run=dry_run)  # fmt: skip

    report = run(go)
    if as_json:
        echo_json(report.to_dict())
        return
    for b in report.batches:
        head = f"{b['repo']} on {b['machine']} ({b['method']}): {', '.join(b['candidates'])}"
        echo(head)
        if report.dry_run:
            echo(f"  would land: {', '.join(b.get('would_land') or []) or 'nothing'}")
        for x in b.get("landed", []):
            echo(f"  landed {x['issue']} (PR #{x['pr']}) as {x['sha'][:12]}")
        for k in b.get("bounced", []):
            echo(f"  bounced {k}: it breaks the tests")
        for x in b.get("conflicts", []):
            echo(f"  conflict {x['issue']}: {', '.join(x['files'])}")
        for x in b.get("overlaps", []):
            echo(f"  note: {x['a']} and {x['b']} both change {', '.join(x['files'][:5])}")
        if not report.dry_run:
            echo(f"  {b.get('test_runs', 0)} test run(s)")
    for w in report.waiting:
        echo(f"waiting: {w['issue']}: {w['why']}")
    for e in report.errors:
        echo(f"error: {e}")
    if not report.batches and not report.waiting:
        echo("nothing is ready to merge")


@coord.command(short_help="End the session; clean merged work; print what it did and cost.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--no-clean", is_flag=True, help="Leave the worktrees of merged work.")
@pass_state
def done(state: State, as_json: bool, no_clean: bool) -> None:
    """End the session: clean the worktrees and run dirs of work whose pull request merged
    (anything uncommitted stays, listed), run the on_session_end hooks, and print what the
    session did and cost.

    \b
    Examples:
      coord done
      coord done --json | jq .cost_by_tier
    """

    async def go() -> dict[str, Any]:
        async with state.coordinator() as c:
            return await c.done(clean=not no_clean)

    s = run(go)
    if as_json:
        echo_json(s)
        return
    echo(f"issues advanced: {len(s['advanced'])}")
    for r in s["ready_to_merge"]:
        echo(f"ready to merge: {r['issue']} PR #{r['pr']} {r['url'] or ''}".rstrip())
    for r in s["needs_human"]:
        echo(f"needs a person: {r['issue']}: {r['reason']}")
    echo(f"spent ${s['cost_usd']:.2f}")
    for k, v in s["cost_by_issue"].items():
        echo(f"  {k}: ${v:.2f}")
    for k, v in s["cost_by_tier"].items():
        echo(f"  {k}: ${v:.2f}")
    cleaned = s.get("cleaned")
    if cleaned:
        echo(f"cleaned {cleaned['worktrees']} worktree(s) and {cleaned['runs']} run dir(s) of "
             "merged work")  # fmt: skip
        for r in cleaned["kept"]:
            echo(f"  kept {r['id']} on {r['machine']}: {r['note']}")
        for name, error in cleaned["errors"].items():
            echo(f"  {name}: not cleaned: {error}")
        for note in cleaned["notes"]:
            echo(f"  {note}")


@coord.command(short_help="Where each issue is in the pipeline.")
@click.argument("issue", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the pipelines as JSON.")
@pass_state
def pipeline(state: State, issue: str | None, as_json: bool) -> None:
    """Show where each issue (or ISSUE, as repo#N) is in the pipeline: its stage, round,
    PR, cost, and why a person is needed.

    \b
    Examples:
      coord pipeline
      coord pipeline api#42 --json
    """
    c = state.coordinator()
    rows = [p for p in c.pipelines() if issue is None or p.key == issue]
    if as_json:
        echo_json({"pipelines": [p.to_dict() for p in rows]})
        return
    for p in rows:
        pr = f" PR #{p.pr}" if p.pr else ""
        why = f"  {p.reason}" if p.reason else ""
        echo(f"{p.key:<20} {p.stage:<14} round {p.round}{pr}  ${p.cost_usd:.2f}{why}")
