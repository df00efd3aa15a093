"""Dispatch: 20 assignments across 5 sshd machines, fanned out with asyncio.gather.

As a user of the library would: one `Coordinator` (fresh, no connection open), then
``asyncio.gather(*(coord.assign(...) for ...))`` for 20 issues, 4 per machine.  Measured:
the wall time, each dispatch's own latency, and the remote commands per dispatch from the
transports' ``stats`` (target <= 2); target wall time <= 1.3x the floor.

Baseline (the floor): a bare asyncssh script in this process, also connecting fresh to the 5
machines, then one remote command per dispatch doing the equivalent work: take the repo lock,
``git fetch`` + ``git worktree add -b``, push the new branch to origin (the issue's claim,
as ``concurrency.remote_claims`` does), write the briefing from stdin, ``tmux new-session``
running the same stand-in worker.  Both fan out the same way; repetitions alternate.

    python3 bench/dispatch.py [--quick] [--user coordbench|root] [--reps N]
"""

from __future__ import annotations

import asyncio
import shlex
import time
from pathlib import Path
from typing import Any

import _common as C

MACHINES = 5
PER_MACHINE = 4


async def coord_round(config: Path, issues: list[tuple[str, int]]) -> dict[str, Any]:
    from coordlib import Coordinator

    lat: list[float] = []

    async def one(c: Any, machine: str, issue: int) -> None:
        t0 = time.perf_counter()
        a = await c.assign(machine, "api", issue, title=f"bench dispatch {issue}")
        lat.append(time.perf_counter() - t0)
        if str(a.status) != "running":
            raise RuntimeError(f"{a.id} is {a.status} after assign")

    async with Coordinator.from_path(config) as c:
        t0 = time.perf_counter()
        # return_exceptions: on Python < 3.12, cancelling the other assigns while one of
        # them is inside asyncio.create_subprocess_exec can hang forever (CPython gh-103847).
        results = await asyncio.gather(*(one(c, m, i) for m, i in issues), return_exceptions=True)
        wall = time.perf_counter() - t0
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise RuntimeError(f"{len(errors)} of {len(issues)} assigns failed") from errors[0]
        names = list(c.config.machines)
        commands = sum(c.transport(n).stats["commands"] for n in names)
        connects = sum(c.transport(n).stats["connects"] for n in names)
    return {"wall": wall, "lat": lat, "commands": commands, "connects": connects}


def floor_command(m: C.Machine, fake: Path, python: str, issue: int, nbytes: int) -> str:
    """One shell command doing a dispatch's essential work (what any tool must do)."""
    q = shlex.quote
    wt = f"{m.workdir}/fworktrees/{issue}"
    run = f"{m.workdir}/fruns/{issue}"
    worker = (
        f'exec {q(python)} {q(str(fake))} -p "$(cat {q(run)}/briefing.md)" '
        f"--output-format stream-json --verbose >>{q(run)}/events.jsonl 2>>{q(run)}/stderr.log"
    )
    return "; ".join(
        [
            "set -e",
            f"mkdir -p {q(str(m.workdir))}/flocks {q(run)}",
            f"exec 9>{q(str(m.workdir))}/flocks/repo.lock",
            "flock 9",
            f"git -C {q(str(m.repo))} fetch --quiet origin main",
            f"git -C {q(str(m.repo))} worktree add --quiet -b floor-{issue} {q(wt)} origin/main",
            "exec 9>&-",
            # the claim: coordlib creates each new branch on origin first (remote_claims)
            f"git -C {q(str(m.repo))} push --quiet origin floor-{issue}",
            f"head -c {nbytes} >{q(run)}/briefing.md",
            f"tmux -L {q(m.socket + 'f')} new-session -d -s floor-{issue} -c {q(wt)} "
            f"-e FAKE_CLAUDE_SCENARIO=stall {q(worker)}",
        ]
    )


async def floor_round(
    fleet: C.Fleet, issues: list[tuple[str, int]], briefing: bytes
) -> dict[str, Any]:
    import asyncssh

    by_name = {m.name: m for m in fleet.machines}
    lat: list[float] = []
    assert fleet.fake_claude is not None
    t0 = time.perf_counter()
    conns: dict[str, asyncio.Task[Any]] = {}

    def conn_of(m: C.Machine) -> asyncio.Task[Any]:
        if m.name not in conns:  # one connection per machine, opened by its first dispatch
            conns[m.name] = asyncio.ensure_future(
                asyncssh.connect(
                    m.server.host,
                    port=m.server.port,
                    username=fleet.user.name,
                    client_keys=[str(m.server.client_key)],
                    known_hosts=str(m.server.known_hosts),
                )
            )
        return conns[m.name]

    async def one(name: str, issue: int) -> None:
        m = by_name[name]
        t1 = time.perf_counter()
        conn = await conn_of(m)
        cmd = floor_command(m, fleet.fake_claude, C.WORKER_PYTHON, issue, len(briefing))  # type: ignore[arg-type]
        r = await conn.run(cmd, input=briefing, encoding=None, check=False)
        lat.append(time.perf_counter() - t1)
        if r.exit_status != 0:
            raise RuntimeError(f"floor dispatch {issue} on {name}: {r.stderr!r}")

    try:
        results = await asyncio.gather(*(one(m, i) for m, i in issues), return_exceptions=True)
        wall = time.perf_counter() - t0
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise RuntimeError(f"{len(errors)} floor dispatches failed") from errors[0]
    finally:
        for task in conns.values():
            if task.done() and not task.exception():
                task.result().close()
    return {"wall": wall, "lat": lat, "commands": len(issues), "connects": len(conns)}


def reset(fleet: C.Fleet) -> None:
    """End the runs of a round (both kinds) so the next round starts from the same load."""
    for m in fleet.machines:
        C.kill_tmux(fleet.user, m.socket)
        C.kill_tmux(fleet.user, m.socket + "f")
    assert fleet.fake_claude is not None
    C.kill_processes_naming(fleet.fake_claude)
    for m in fleet.machines:
        C.kill_processes_naming(m.workdir)


def main() -> int:
    p = C.parser(__doc__.split("\n")[0])
    args = p.parse_args()
    reps = args.reps or (2 if args.quick else 5)
    info = C.machine_info()
    C.print_machine(info)
    user = C.login_user(args.user)
    n = MACHINES * PER_MACHINE
    print(f"login user: {user.name}; {n} dispatches over {MACHINES} machines; {reps} rounds each")

    with C.Cleanup() as cleanup:
        root = C.bench_root(cleanup)
        fleet = C.Fleet(root, user, cleanup)
        with C.section(f"starting {MACHINES} sshd"):
            fleet.start(MACHINES)
            for m in fleet.machines:
                cleanup.add(f"tmux {m.socket}f", lambda s=m.socket + "f": C.kill_tmux(user, s))
        config = fleet.write_config(
            root / "coordinator.yml",
            machine_extra={"env": {"FAKE_CLAUDE_SCENARIO": "stall"}, "max_workers": 1000},
        )
        from coordlib import Coordinator

        # The same briefing text coordlib renders, so both send the same bytes.
        _, text, _ = Coordinator.from_path(config).plan_assignment(
            "m0", "api", 1, title="bench dispatch 1"
        )
        briefing = text.encode()
        coord: list[dict[str, Any]] = []
        floor: list[dict[str, Any]] = []
        for rep in range(reps):
            issues = [
                (m.name, 10000 * (rep + 1) + 100 * i + j)
                for j in range(PER_MACHINE)
                for i, m in enumerate(fleet.machines)
            ]
            order = ["coord", "floor"] if rep % 2 == 0 else ["floor", "coord"]
            for kind in order:
                if kind == "coord":
                    r = asyncio.run(coord_round(config, issues))
                    coord.append(r)
                else:
                    r = asyncio.run(floor_round(fleet, [(m, i + 1) for m, i in issues], briefing))
                    floor.append(r)
                print(
                    f"   round {rep + 1} {kind}: wall {r['wall']:.3f} s, per-dispatch p50 "
                    f"{C.median(r['lat']):.3f} s, {r['commands']} commands, "
                    f"{r['connects']} connects",
                    flush=True,
                )
                reset(fleet)

    def agg(rounds: list[dict[str, Any]]) -> dict[str, Any]:
        lat = [x for r in rounds for x in r["lat"]]
        return {
            "wall_median_s": C.median([r["wall"] for r in rounds]),
            "lat_p50_s": C.percentile(lat, 50),
            "lat_p90_s": C.percentile(lat, 90),
            "lat_max_s": max(lat),
            "commands_per_dispatch": sum(r["commands"] for r in rounds) / (n * len(rounds)),
            "connects_per_round": C.median([r["connects"] for r in rounds]),
        }

    c, f = agg(coord), agg(floor)
    print()
    print(
        f"dispatch, {n} assignments over {MACHINES} machines, login user {user.name}, {reps} rounds"
    )
    C.print_table(
        ["what", "wall s", "p50 s", "p90 s", "max s", "cmds/dispatch", "connects"],
        [
            [
                name,
                s["wall_median_s"],
                s["lat_p50_s"],
                s["lat_p90_s"],
                s["lat_max_s"],
                s["commands_per_dispatch"],
                s["connects_per_round"],
            ]
            for name, s in (("coordlib assign (gather)", c), ("floor: 1 bare command", f))
        ],
    )
    ratio = c["wall_median_s"] / f["wall_median_s"]
    print(f"wall time coordlib / floor: {ratio:.2f}")
    checks = [
        C.check("remote commands per dispatch", c["commands_per_dispatch"], "<=", 2),
        C.check("wall time coordlib / floor", round(ratio, 2), "<=", 1.3),
    ]
    return C.finish(
        "dispatch",
        info,
        checks,
        user=user.name,
        quick=args.quick,
        reps=reps,
        dispatches=n,
        machines=MACHINES,
        median_wall_s=round(c["wall_median_s"], 4),
        p50_dispatch_s=round(c["lat_p50_s"], 4),
        commands_per_dispatch=c["commands_per_dispatch"],
        baseline_median_wall_s=round(f["wall_median_s"], 4),
        baseline_p50_dispatch_s=round(f["lat_p50_s"], 4),
        coordlib=C.clean_floats(c),
        baseline=C.clean_floats(f),
        ratio=round(ratio, 3),
        target={"commands_per_dispatch": 2, "ratio": 1.3},
    )


if __name__ == "__main__":
    C.run_main(main)
