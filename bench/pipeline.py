"""The pipeline: the coordinator's own overhead across whole pipelines, work to merged.

One sshd machine on loopback (real tmux, real git, the local forge, a bare origin); ten
issues assigned at once (``asyncio.gather`` of `Coordinator.assign`), then, in the same
`Coordinator`, the `coord run` loop (`Coordinator.run(until_idle=True)`) at its DEFAULT
interval (``pipeline.interval``, 30 s): it passes again as soon as a run ends (one
``await`` remote command per machine between passes), not on the timer.  Each issue goes
work -> test -> pr -> review -> ready-to-merge, and the merge queue (``merge.auto``, batches
of 4) lands it.  Workers: the stand-in (``[fake:ok:FILE=TEXT]`` in the issue body for the
work, each issue its own file; ``[fake:approve]`` in the review's briefing template); the
repo's test_command is ``true``.

1. Stage-to-stage latency, with workers that answer at once: for each worker run, from its
   end on the machine (the assignment's ``finished_at``, checked against the launcher's own
   ``exit.json``) to the move of its issue out of that stage (the pipeline's ``moves[].at``),
   and, for information, to the next worker's dispatch (the next assignment's
   ``created_at``: the test and PR stages lie in between).  Targets: p50 < 1 s, p99 < 3 s.
2. Per stage move: remote commands (the transport's ``stats``) and board transactions (the
   board's ``stats``), the assigns and the merges included.
3. Wall time, with workers that take a fixed time (a wrapper sleeps --delay seconds, 2 by
   default, then runs the stand-in; the same for work and review): from the assigns' start
   to the last landing, against the sum of the workers' own run times (``finished_at -
   started_at``) and the critical path (the longest issue's own chain of them).  Overhead
   share = (wall - critical path) / wall; target < 20 %.
4. Baseline, in the same run: the same runs with the loop's ``next_end`` replaced by a plain
   ``asyncio.sleep`` of the interval (what `coord run` did before: poll), at a 2 s interval.

Each of the four kinds of run (coordlib and baseline, instant and timed workers) runs --reps
times (4; --quick 2), interleaved; latencies are pooled, the rest are medians of the runs.
For the reading of a miss, it also prints the loop's own time (in passes, in merges, waiting
between passes; the longest wait) and each issue's phases from assign to merged.

    python3 bench/pipeline.py [--quick] [--user coordbench|root] [--reps N] [--delay S]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import _common as C

ISSUES = 10
DELAY = 2.0  # seconds each timed worker takes (before the stand-in's own time)
BASE_INTERVAL = 2.0  # the polling baseline's interval
TIMEOUT = 300.0  # one run, all issues to merged
PHASES = [
    "assign -> work started", "work run", "work end -> moved", "test stage", "pr stage",
    "review dispatch", "review run", "review end -> moved", "ready -> merged",
]  # fmt: skip


def share_origin(fleet: C.Fleet) -> None:
    """Let this process and the login user both write the origin's objects.

    The local forge (this process) writes objects into a local bare origin (the trees of
    its mergeability checks), and the machine (the login user) pushes to it: as two users,
    each would leave object dirs the other cannot write.  On a real forge they are one.
    """
    assert fleet.origin is not None
    if fleet.user.is_self:
        return
    git = ["git", "-C", str(fleet.origin)]
    subprocess.run([*git, "config", "core.sharedRepository", "0777"], check=True)
    subprocess.run(["chmod", "-R", "a+rwX", str(fleet.origin)], check=True)


def write_world(fleet: C.Fleet, m: C.Machine, root: Path, tag: str, delay: float) -> Path:
    """A config and a board of its own for one run; return the config's path.

    Every run's config is in the same dir, so they share the local forge (beside the
    config): issue numbers go on from run to run, and each issue's branch is its own.
    """
    d = root / "world"
    if not (d / "briefings").is_dir():
        (d / "briefings").mkdir(parents=True)
        (d / "briefings" / "review.md.j2").write_text(
            "Review round {{ round }} of {{ branch }} for #{{ issue.number }}.\n[fake:approve]\n"
        )
    assert fleet.fake_claude is not None
    claude = f"{C.WORKER_PYTHON} {fleet.fake_claude}"
    if delay:
        wrapper = d / f"slow_claude_{delay:g}.sh"
        wrapper.write_text(f'#!/bin/sh\nsleep {delay:g}\nexec {claude} "$@"\n')
        wrapper.chmod(0o755)
        claude = f"/bin/sh {wrapper}"
    machine = fleet.machine_config(m, max_workers=4 * ISSUES, claude_command=claude)
    config = d / f"{tag}.yml"
    config.write_text(C.yaml_dump({
        "repos": [{"name": "api", "default_branch": "main", "url": str(fleet.origin),
                   "test_command": "true"}],
        "machines": [machine],
        "concurrency": {"max_workers": 4 * ISSUES},
        "models": {"default": "haiku"},
        "briefings": {"dir": str(d / "briefings")},
        "board": {"path": str(d / f"{tag}-board.json")},
    }))  # fmt: skip
    return config


async def one_run(config: Path, tag: str, *, baseline: bool) -> dict[str, Any]:
    """Assign the issues, run the loop until idle, and return what the board recorded."""
    from coordlib import Coordinator

    async with Coordinator.from_path(config) as c:
        forge = c.forge("api")
        issues = []
        for i in range(1, ISSUES + 1):
            body = f"Add the file {tag}-{i}.txt.\n\n[fake:ok:{tag}-{i}.txt={tag} {i}]\n"
            issues.append((await forge.create_issue(f"{tag} feature {i}", body=body)).number)
        machines = list(c.config.machines)
        if baseline:

            async def poll(*, timeout: float) -> str | None:
                await asyncio.sleep(timeout)  # what `coord run` did before: sleep, then pass
                return None

            c.next_end = poll  # type: ignore[method-assign]
        spent = time_the_loop(c)
        turns: list[Any] = []
        t0 = time.time()
        cpu0 = time.process_time()  # the coordinator's own CPU (its threads too)
        # return_exceptions: see bench/README.md (CPython gh-103847 on Python < 3.12).
        assigned = await asyncio.gather(
            *(c.assign(machines[0], "api", n) for n in issues), return_exceptions=True
        )
        failed = [r for r in assigned if isinstance(r, BaseException)]
        if failed:
            raise RuntimeError(f"{len(failed)} of {ISSUES} assigns failed") from failed[0]
        t_loop = time.time()
        await asyncio.wait_for(
            c.run(interval=BASE_INTERVAL if baseline else None, until_idle=True,
                  on_pass=turns.append),
            timeout=TIMEOUT,
        )  # fmt: skip
        t_end = time.time()
        cpu = time.process_time() - cpu0
        commands = sum(c.transport(n).stats["commands"] for n in machines)
        board_stats = dict(c.board.stats)
        rows = [a for a in c.assignments(history=True) if a.issue in issues]
        pipelines = {p.issue: p for p in c.pipelines() if p.issue in issues}
        interval = BASE_INTERVAL if baseline else c.config.pipeline.interval
    return {
        "t0": t0, "t_loop": t_loop, "t_end": t_end, "cpu": cpu, "rows": rows,
        "pipelines": pipelines,
        "commands": commands, "board": board_stats, "interval": interval,
        "passes": len(turns), "woken": sum(1 for t in turns if t.woke), "spent": spent,
        "errors": list(dict.fromkeys(e[:300] for t in turns for e in t.report.errors)),
    }  # fmt: skip


def time_the_loop(c: Any) -> dict[str, list[float]]:
    """Time what the loop awaits (its pass, its merge, its wait between passes), in place.

    The loop calls them as the coordinator's attributes, so wrappers set on the instance
    are what it calls; nothing else changes.
    """
    spent: dict[str, list[float]] = {"advance": [], "merge": [], "next_end": []}

    def timed(name: str) -> Any:
        inner = getattr(c, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return await inner(*args, **kwargs)
            finally:
                spent[name].append(time.perf_counter() - t)

        return call

    for name in spent:
        setattr(c, name, timed(name))
    return spent


def exit_records(m: C.Machine, rows: list[Any]) -> dict[str, float | None]:
    """Each run's end as its launcher wrote it (exit.json on the machine, a local file here)."""
    out: dict[str, float | None] = {}
    for a in rows:
        try:
            data = json.loads((m.workdir / "runs" / a.id / "exit.json").read_text())
            out[a.id] = float(data["finished_at"])
        except (OSError, ValueError, KeyError, TypeError):
            out[a.id] = None
    return out


def first_move(p: Any, stage: str, after: float, to: str | None = None) -> dict[str, Any] | None:
    """The first move of p out of `stage` (or into `to`) at or after `after`."""
    for mv in p.moves:
        if mv["at"] >= after and (mv["to"] == to if to else mv["from"] == stage):
            return dict(mv)
    return None


def analyse(raw: dict[str, Any], m: C.Machine) -> dict[str, Any]:
    """Latencies, per-move costs, wall time, critical path and the phases of each issue."""
    rows, pipelines, t0 = raw["rows"], raw["pipelines"], raw["t0"]
    launcher = exit_records(m, rows)
    to_move: dict[str, list[float]] = {"work": [], "review": []}
    to_dispatch: list[float] = []
    mismatched = 0
    by_issue: dict[int, list[Any]] = {}
    for a in sorted(rows, key=lambda a: a.created_at):
        by_issue.setdefault(a.issue, []).append(a)
    for a in rows:
        if a.finished_at is None or launcher.get(a.id) is None:
            mismatched += 1
            continue
        if abs(a.finished_at - float(launcher[a.id] or 0.0)) > 1e-3:
            mismatched += 1
        stage = a.stage or "work"  # the work stage's row (from `assign`) names no stage
        mv = first_move(pipelines[a.issue], stage, a.created_at)
        if mv is not None:
            to_move.setdefault(stage, []).append(mv["at"] - a.finished_at)
        later = [b for b in by_issue[a.issue] if b.created_at > a.created_at]
        if later:
            to_dispatch.append(later[0].created_at - a.finished_at)
    moves = sum(1 for p in pipelines.values() for mv in p.moves if mv["at"] >= t0)
    merged = [first_move(p, "", t0, to="merged") for p in pipelines.values()]
    landed = [mv["at"] for mv in merged if mv is not None]
    run_time = {a.id: (a.finished_at or 0.0) - (a.started_at or 0.0) for a in rows}
    chains = {i: sum(run_time[a.id] for a in ids) for i, ids in by_issue.items()}
    # NaN (and so every figure made of it) unless all of them landed
    wall = (max(landed) - t0) if len(landed) == len(pipelines) == ISSUES else float("nan")
    critical = max(chains.values()) if chains else float("nan")
    phases: dict[str, list[float]] = {k: [] for k in PHASES}
    for i, p in pipelines.items():
        work = next((a for a in by_issue[i] if (a.stage or "work") == "work"), None)
        review = next((a for a in by_issue[i] if a.stage == "review"), None)
        mv = {s: first_move(p, s, t0) for s in ("work", "test", "pr", "review")}
        done = first_move(p, "", t0, to="merged")
        if work is None or review is None or None in mv.values() or done is None:
            continue
        at = {s: x["at"] for s, x in mv.items() if x is not None}
        for name, value in zip(PHASES, [
            work.started_at - t0, work.finished_at - work.started_at,
            at["work"] - work.finished_at, at["test"] - at["work"], at["pr"] - at["test"],
            review.started_at - at["pr"], review.finished_at - review.started_at,
            at["review"] - review.finished_at, done["at"] - at["review"],
        ], strict=True):  # fmt: skip
            phases[name].append(value)
    return {
        "to_move": [x for xs in to_move.values() for x in xs],
        "to_move_work": to_move["work"],
        "to_move_review": to_move["review"],
        "to_dispatch": to_dispatch,
        "runs": len(rows),
        "finished_at_mismatched": mismatched,
        "moves": moves,
        "merged": len(landed),
        "commands": raw["commands"],
        "transactions": raw["board"].get("transactions", 0),
        "writes": raw["board"].get("writes", 0),
        "reads": raw["board"].get("reads", 0),
        "commands_per_move": raw["commands"] / moves if moves else float("nan"),
        "transactions_per_move": raw["board"].get("transactions", 0) / moves
        if moves
        else float("nan"),
        "wall_s": wall,
        "wall_from_loop_s": wall - (raw["t_loop"] - t0),
        "loop_s": raw["t_end"] - raw["t_loop"],
        "coordinator_cpu_s": raw["cpu"],
        "coordinator_cpu_share": raw["cpu"] / wall if wall else None,
        "in_passes_s": sum(raw["spent"]["advance"]),
        "in_merges_s": sum(raw["spent"]["merge"]),
        "waiting_s": sum(raw["spent"]["next_end"]),
        "longest_wait_s": max(raw["spent"]["next_end"], default=0.0),
        "longest_pass_s": max(raw["spent"]["advance"], default=0.0),
        "assign_s": raw["t_loop"] - t0,
        "worker_sum_s": sum(run_time.values()),
        "critical_path_s": critical,
        "overhead_share": (wall - critical) / wall,
        "overhead_share_from_loop": 1 - critical / (wall - (raw["t_loop"] - t0)),
        "passes": raw["passes"],
        "woken_by_run_end": raw["woken"],
        "interval_s": raw["interval"],
        "phases": phases,
        "errors": raw["errors"][:10],
    }


def pooled(cases: list[dict[str, Any]], key: str) -> list[float]:
    return [x for r in cases for x in r[key]]


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


SERIES = ("to_move", "to_move_work", "to_move_review", "to_dispatch", "phases")
MEDIANS = (
    "moves", "commands_per_move", "transactions_per_move", "writes", "reads", "wall_s",
    "wall_from_loop_s", "loop_s", "assign_s", "worker_sum_s", "critical_path_s",
    "overhead_share", "overhead_share_from_loop", "passes", "woken_by_run_end", "in_passes_s",
    "in_merges_s", "waiting_s", "longest_wait_s", "longest_pass_s", "coordinator_cpu_s",
    "coordinator_cpu_share",
)  # fmt: skip


def summary(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool the repetitions of one kind of run: latencies pooled, the rest medians."""
    move, disp = pooled(cases, "to_move"), pooled(cases, "to_dispatch")
    work, review = pooled(cases, "to_move_work"), pooled(cases, "to_move_review")
    return {
        "samples": len(move),
        "p50_s": C.percentile(move, 50),
        "p99_s": C.percentile(move, 99),
        "max_s": max(move, default=float("nan")),
        "work_p50_s": C.percentile(work, 50),
        "work_max_s": max(work, default=float("nan")),
        "review_p50_s": C.percentile(review, 50),
        "review_max_s": max(review, default=float("nan")),
        "dispatch_p50_s": C.percentile(disp, 50),
        "dispatch_p99_s": C.percentile(disp, 99),
        **{k: C.median([r[k] for r in cases]) for k in MEDIANS},
        "all_merged": all(r["merged"] == ISSUES for r in cases),
        "finished_at_is_launchers": all(r["finished_at_mismatched"] == 0 for r in cases),
        "runs": [{k: v for k, v in r.items() if k not in SERIES} for r in cases],
        "phases_mean_s": {k: C.median([mean(r["phases"][k]) for r in cases]) for k in PHASES},
        "phases_max_s": {k: max(max(r["phases"][k], default=0.0) for r in cases) for k in PHASES},
    }


def report(s: dict[str, dict[str, Any]]) -> None:
    """Print the tables."""
    print()
    print(f"stage-to-stage latency (s): from a run's end on the machine; {ISSUES} issues a run")
    C.print_table(
        ["run", "samples", "end->move p50", "p99", "max", "work p50", "work max",
         "review p50", "review max", "end->next dispatch p50", "p99"],
        [[k, v["samples"], v["p50_s"], v["p99_s"], v["max_s"], v["work_p50_s"],
          v["work_max_s"], v["review_p50_s"], v["review_max_s"], v["dispatch_p50_s"],
          v["dispatch_p99_s"]] for k, v in s.items()],
    )  # fmt: skip
    print()
    print("per stage move (medians of the runs; the assigns and merges included)")
    C.print_table(
        ["run", "moves", "commands/move", "transactions/move", "board writes", "board reads"],
        [[k, v["moves"], v["commands_per_move"], v["transactions_per_move"], v["writes"],
          v["reads"]] for k, v in s.items()],
    )  # fmt: skip
    print()
    print("wall time (s, medians of the runs): from the assigns' start to the last landing")
    C.print_table(
        ["run", "wall", "from loop start", "workers' sum", "critical path", "overhead share",
         "(from loop start)", "coordinator CPU", "CPU share"],
        [[k, v["wall_s"], v["wall_from_loop_s"], v["worker_sum_s"], v["critical_path_s"],
          v["overhead_share"], v["overhead_share_from_loop"], v["coordinator_cpu_s"],
          v["coordinator_cpu_share"]] for k, v in s.items()],
    )  # fmt: skip
    print()
    print("the loop (s, medians of the runs): its passes, merges and waits between passes")
    C.print_table(
        ["run", "passes", "woken by a run end", "in passes", "longest pass", "in merges",
         "waiting", "longest wait"],
        [[k, v["passes"], v["woken_by_run_end"], v["in_passes_s"], v["longest_pass_s"],
          v["in_merges_s"], v["waiting_s"], v["longest_wait_s"]] for k, v in s.items()],
    )  # fmt: skip
    print()
    print("where an issue's time goes (s): mean over the issues (median of the runs) / max")
    C.print_table(
        ["phase", *s],
        [[ph, *(f"{v['phases_mean_s'][ph]:.2f} / {v['phases_max_s'][ph]:.2f}"
                for v in s.values())] for ph in PHASES],
    )  # fmt: skip


def main() -> int:
    p = C.parser(__doc__.split("\n")[0])
    p.add_argument("--delay", type=float, default=DELAY, help="seconds a timed worker takes")
    args = p.parse_args()
    reps = args.reps or (2 if args.quick else 4)
    info = C.machine_info()
    C.print_machine(info)
    user = C.login_user(args.user)
    print(
        f"login user: {user.name}; {ISSUES} issues a run, {reps} run(s) of each kind; "
        f"coordlib at pipeline.interval's default, baseline polling every {BASE_INTERVAL:g} s; "
        f"timed workers {args.delay:g} s"
    )
    kinds = [
        ("instant", False, 0.0),
        ("instant", True, 0.0),
        ("timed", False, args.delay),
        ("timed", True, args.delay),
    ]
    results: dict[str, list[dict[str, Any]]] = {}
    with C.Cleanup() as cleanup:
        root = C.bench_root(cleanup)
        fleet = C.Fleet(root, user, cleanup)
        with C.section("starting sshd"):
            (m,) = fleet.start(1)
            share_origin(fleet)
        for rep in range(reps):
            order = kinds if rep % 2 == 0 else [*kinds[1::-1], *kinds[:1:-1]]
            for workers, baseline, delay in order:
                name = f"{workers}_{'baseline' if baseline else 'coordlib'}"
                tag = f"r{rep}{workers[0]}{'b' if baseline else 'c'}"
                with C.section(f"{name}, run {rep + 1}: {ISSUES} issues to merged"):
                    config = write_world(fleet, m, root, tag, delay)
                    raw = asyncio.run(one_run(config, tag, baseline=baseline))
                    r = analyse(raw, m)
                    results.setdefault(name, []).append(r)
                    print(
                        f"   wall {r['wall_s']:.1f} s (assigns {r['assign_s']:.2f} s), "
                        f"{r['merged']}/{ISSUES} merged, {r['passes']} passes "
                        f"({r['woken_by_run_end']} woken by a run's end), run end -> move "
                        f"p50 {C.percentile(r['to_move'], 50):.2f} s "
                        f"max {max(r['to_move'], default=float('nan')):.2f} s"
                        + (f"; errors: {r['errors']}" if r["errors"] else "")
                    )

    s = {k: summary(v) for k, v in results.items()}
    report(s)
    ic, ib = s["instant_coordlib"], s["instant_baseline"]
    tc, tb = s["timed_coordlib"], s["timed_baseline"]
    merged = all(v["all_merged"] for v in s.values())
    launchers = all(v["finished_at_is_launchers"] for v in s.values())
    checks = [
        C.check("coordlib run end -> stage move p50", ic["p50_s"], "<", 1.0, " s"),
        C.check("coordlib run end -> stage move p99", ic["p99_s"], "<", 3.0, " s"),
        C.check(f"coordlib overhead share, {args.delay:g} s workers",
                tc["overhead_share"], "<", 0.2),
        C.check("every issue merged, every run", float(merged), "==", 1),
        C.check("finished_at is the launcher's exit time", float(launchers), "==", 1),
    ]  # fmt: skip
    return C.finish(
        "pipeline",
        info,
        checks,
        user=user.name,
        quick=args.quick,
        reps=reps,
        issues=ISSUES,
        delay_s=args.delay,
        baseline_interval_s=BASE_INTERVAL,
        p50_s=ic["p50_s"],
        p99_s=ic["p99_s"],
        baseline_p50_s=ib["p50_s"],
        baseline_p99_s=ib["p99_s"],
        commands_per_move=ic["commands_per_move"],
        transactions_per_move=ic["transactions_per_move"],
        wall_s=tc["wall_s"],
        critical_path_s=tc["critical_path_s"],
        worker_sum_s=tc["worker_sum_s"],
        overhead_share=tc["overhead_share"],
        baseline_wall_s=tb["wall_s"],
        baseline_overhead_share=tb["overhead_share"],
        results=s,
    )


if __name__ == "__main__":
    C.run_main(main)
