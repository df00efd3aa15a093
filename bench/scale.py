"""Scale: `coord status` and a dispatch round at 20 and 100 machines, against the asyncssh floor.

How cost grows with the fleet.  max(--sizes) real sshd on loopback (each its own port, work
dir, repo clone and tmux server), --workers live stand-in workers on each (fake_claude in its
`stall` scenario, dispatched with coordlib in batches of one per machine; setup is not
timed).  Every size is measured in the same run, on the same machines: the size-N config
lists the first N machines, with a board holding their runs only, plus --finished (300)
finished rows: the 300 most recent finished runs are what coordlib keeps live by default,
so that is a board in use, and it keeps its size through the rounds.  Interleaved, rotating
the order each repetition, at each size:

- status, whole processes:  coord status --json  vs  the floor, bench/_floor_ssh.py (one
  bare asyncssh connect + one `tmux -L <socket> ls` per machine, all at once), as
  fanout_status measures them; plus `Coordinator.status()` in-process on warm connections
  (information only).
- a dispatch round, in-process: a fresh `Coordinator`, `asyncio.gather` of `assign` for one
  new issue per machine, vs the floor of bench/dispatch.py: fresh asyncssh connections (all
  at once) and one bare command per dispatch doing the same work (repo lock, git fetch,
  worktree add -b, briefing from stdin, tmux new-session of the same stand-in).  The runs of
  a round are ended before the next round (coordlib's with `Coordinator.stop`).

Remote commands per operation come from the transports' `stats` (the in-process status and
the dispatch round); the local CPU of each tool (the timed process, or this one for the
in-process ones) is printed too: it tells the coordinator's own cost from the machines'.
Targets, at each size: coord / floor <= 1.3 for status and for the dispatch round; <= 1
remote command per machine per status and per dispatch.

    python3 bench/scale.py [--quick] [--sizes 20,100] [--workers 3] [--user coordbench|root]
                           [--reps N] [--rounds N] [--finished 300] [--profile]
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import json
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import _common as C
import dispatch as D
import fanout_status as F

TARGET_RATIO = 1.3
WORKERS_PER_MACHINE = 3


# ---------------------------------------------------------------- setup
async def dispatch_fleet(config: Path, workers: int, first_issue: int) -> tuple[float, int, int]:
    """Start `workers` runs on every machine of config, one batch per round of machines.

    Return (seconds, dispatches, remote commands).
    """
    from coordlib import Coordinator

    async with Coordinator.from_path(config) as c:
        names = list(c.config.machines)
        t0 = time.perf_counter()
        issue = first_issue
        for k in range(workers):
            jobs = []
            for name in names:
                jobs.append(c.assign(name, "api", issue, title=f"bench scale {name} {k}"))
                issue += 1
            # return_exceptions: see dispatch.py (a cancelled subprocess start can hang on 3.11)
            done = await asyncio.gather(*jobs, return_exceptions=True)
            errors = [a for a in done if isinstance(a, BaseException)]
            if errors:
                raise RuntimeError(f"{len(errors)} of {len(jobs)} dispatches failed") from errors[0]
            bad = [a.id for a in done if str(a.status) != "running"]
            if bad:
                raise RuntimeError(f"dispatched runs not running: {bad}")
            print(f"   batch {k + 1}/{workers}: {len(jobs)} dispatched", flush=True)
        commands = sum(c.transport(n).stats["commands"] for n in names)
        return time.perf_counter() - t0, len(names) * workers, commands


def copy_board(src: Path, dst: Path, machines: set[str]) -> int:
    """Put the live rows of `machines` from board src on a new board dst; return how many."""
    from coordlib.board import Board

    rows = [r for r in Board(src).all() if r.get("machine") in machines]
    with Board(dst).transaction() as txn:
        for r in rows:
            txn.insert(r)
    return len(rows)


def add_finished(board_path: Path, machines: list[str], count: int, first_issue: int) -> int:
    """Put `count` finished rows on a board, as a board in use holds (``keep_finished``).

    Each is a copy of one of its live rows (same size and shape) with its own id and issue,
    stopped a while ago, so the rounds' own ended runs push them into the history first.
    A status does not probe finished rows; every board read and write carries them.
    Return how many rows the board holds then.
    """
    import os

    from coordlib.board import Board

    board = Board(board_path)
    live = [r for r in board.all() if r.get("machine") in machines]
    now = time.time()
    with board.transaction() as txn:
        for k in range(count):
            row = dict(live[k % len(live)])
            issue = first_issue + k
            aid = f"api-{issue}-{os.urandom(2).hex()}"
            run_dir = str(row["run_dir"]).rsplit("/", 1)[0] + "/" + aid
            worktree = str(row["worktree"]).rsplit("/", 1)[0] + "/" + aid
            ended = now - 3600 + k  # oldest first
            row.update(id=aid, issue=issue, branch=f"issue-{issue}-bench-finished",
                       run_dir=run_dir, worktree=worktree, status="stopped",
                       exit_code=143, exit_reason="stopped", finished_at=ended)  # fmt: skip
            txn.insert(row)
        return len(txn)


def status_floor_spec(fleet: C.Fleet, machines: list[C.Machine], path: Path) -> Path:
    """Write _floor_ssh.py's spec: one `tmux -L <socket> ls` per machine (as fanout_status)."""
    path.write_text(
        json.dumps(
            [
                {
                    "host": m.server.host,
                    "port": m.server.port,
                    "user": fleet.user.name,
                    "key": str(m.server.client_key),
                    "known_hosts": str(m.server.known_hosts),
                    "command": f"tmux -L {m.socket} ls",
                }
                for m in machines
            ]
        )
    )
    return path


# ---------------------------------------------------------------- in-process status
class WarmStatus:
    """One long-lived Coordinator per size, on one event loop: `status()` on warm connections."""

    def __init__(self, configs: dict[int, Path]) -> None:
        from coordlib import Coordinator

        self.runner = asyncio.Runner()
        self.coords = {n: Coordinator.from_path(p) for n, p in configs.items()}
        self.first: dict[int, float] = {}
        self.commands: dict[int, list[float]] = {n: [] for n in configs}

    def _commands(self, n: int) -> int:
        c = self.coords[n]
        return sum(c.transport(m).stats["commands"] for m in c.config.machines)

    def status(self, n: int, runs: int) -> float:
        """Time one `Coordinator.status()` at size n; check what it saw."""
        c = self.coords[n]
        before = self._commands(n)
        t0 = time.perf_counter()
        report = self.runner.run(c.status())
        dt = time.perf_counter() - t0
        reachable = sum(1 for m in report.machines if m.reachable)
        running = sum(1 for a in report.assignments if str(a.status) == "running")
        if reachable != n or running != runs:
            raise RuntimeError(f"status at {n}: {reachable} reachable, {running} running")
        if n not in self.first:
            self.first[n] = dt  # connects: not a warm sample
        else:
            self.commands[n].append((self._commands(n) - before) / n)
        return dt

    def close(self) -> None:
        try:
            for c in self.coords.values():
                self.runner.run(c.close())
        finally:
            self.runner.close()


# ---------------------------------------------------------------- dispatch rounds
async def stop_runs(config: Path, issues: set[int]) -> int:
    """End the live runs of these issues through coordlib (so its board knows); return count."""
    from coordlib import Coordinator

    async with Coordinator.from_path(config) as c:
        ids = [a.id for a in c.assignments() if a.issue in issues and not a.is_terminal]
        done = await asyncio.gather(*(c.stop(i) for i in ids), return_exceptions=True)
        errors = [d for d in done if isinstance(d, BaseException)]
        if errors:
            raise RuntimeError(f"{len(errors)} of {len(ids)} stops failed") from errors[0]
        # Under this load a stop can return before its run has recorded its end (it waits a
        # bounded time); ask again until each has, and say so (seen: 1 in a few hundred).
        for _ in range(10):
            left = [a for a in done if not isinstance(a, BaseException) and not a.is_terminal]
            left = [c.get(a.id) for a in left]
            left = [a for a in left if not a.is_terminal]
            if not left:
                break
            print(f"   ({len(left)} stopped run(s) not ended yet: {', '.join(a.id for a in left)})")
            await asyncio.sleep(3)
            done = await asyncio.gather(*(c.stop(a.id) for a in left), return_exceptions=True)
        return len(ids)


def local_cpu() -> float:
    """CPU seconds (user + system) of this process and of its finished children so far."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def user_processes(user: C.LoginUser) -> int:
    """Count the login user's processes (launchers, workers, tmux servers, sshd sessions)."""
    return sum(1 for p in Path("/proc").iterdir() if p.name.isdigit() and _uid(p) == user.uid)


def _uid(p: Path) -> int | None:
    try:
        return p.stat().st_uid
    except OSError:
        return None


def stop_floor(fleet: C.Fleet, machines: list[C.Machine]) -> None:
    """End the floor's runs: its own tmux server per machine (socket + 'f')."""
    for m in machines:
        fleet.kill_tmux(m.socket + "f")


# ---------------------------------------------------------------- profile
def _top(prof: cProfile.Profile, title: str, wall: float, top: int) -> str:
    out = io.StringIO()
    st = pstats.Stats(prof, stream=out)
    poll = "<method 'poll' of 'select.epoll' objects>"
    stats: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    waited = sum(v[2] for k, v in stats.items() if k[2] == poll)
    out.write(
        f"\n--- {title}: {wall:.3f} s wall under cProfile, of which the event loop waited "
        f"(epoll) {waited:.3f} s; top by own time, then coordlib by cumulative time\n"
    )
    st.sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats("coordlib", top)
    return out.getvalue()


def profile_status(config: Path, top: int = 15) -> str:
    """cProfile one cold and one warm `Coordinator.status()`; return the top of each."""
    from coordlib import Coordinator

    texts = []

    async def go() -> None:
        async with Coordinator.from_path(config) as c:
            for label in ("cold (connects)", "warm"):
                prof = cProfile.Profile()
                t0 = time.perf_counter()
                prof.enable()
                await c.status()
                prof.disable()
                wall = time.perf_counter() - t0
                texts.append(_top(prof, f"Coordinator.status(), {label}", wall, top))

    asyncio.run(go())
    return "".join(texts)


def profile_dispatch(config: Path, issues: list[tuple[str, int]], top: int = 15) -> str:
    """cProfile one dispatch round (as measured), then end its runs; return the top."""
    prof = cProfile.Profile()
    prof.enable()
    r = asyncio.run(D.coord_round(config, issues))
    prof.disable()
    asyncio.run(stop_runs(config, {i for _, i in issues}))
    return _top(prof, f"dispatch round of {len(issues)} (fresh Coordinator)", r["wall"], top)


# ---------------------------------------------------------------- main
def main() -> int:
    p = C.parser(__doc__.split("\n")[0])
    p.add_argument("--sizes", default="20,100", help="fleet sizes, comma-separated")
    p.add_argument("--workers", type=int, default=WORKERS_PER_MACHINE, help="runs per machine")
    p.add_argument("--rounds", type=int, default=None, help="dispatch rounds per size")
    p.add_argument(
        "--finished",
        type=int,
        default=300,
        help="finished rows on each board, as one in use holds (coordlib keeps the 300 most "
        "recent live by default); 0: a fresh board",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also cProfile Coordinator.status() and one dispatch round at the biggest size",
    )
    args = p.parse_args()
    sizes = sorted({int(x) for x in args.sizes.split(",") if x.strip()})
    if not sizes or sizes[0] < 1:
        raise SystemExit("bench: --sizes needs positive numbers")
    reps = args.reps or (3 if args.quick else 7)
    rounds = args.rounds or (2 if args.quick else 5)
    workers = args.workers
    biggest = sizes[-1]
    info = C.machine_info()
    C.print_machine(info)
    nofile = C.raise_nofile(4 * biggest + 1024)
    user = C.login_user(args.user)
    coord = C.bin_of("coord")
    print(
        f"login user: {user.name}; sizes {', '.join(map(str, sizes))} machines x {workers} "
        f"live workers; {reps} status repetitions, {rounds} dispatch rounds per size; "
        f"RLIMIT_NOFILE {nofile}"
    )

    with C.Cleanup() as cleanup:
        root = C.bench_root(cleanup)
        fleet = C.Fleet(root, user, cleanup)
        with C.section(f"starting {biggest} sshd on loopback (not timed)"):
            fleet.start(biggest)
            for m in fleet.machines:
                cleanup.add(f"tmux {m.socket}f", lambda s=m.socket + "f": fleet.kill_tmux(s))
        configs: dict[int, Path] = {}
        for n in sizes:
            d = root / f"c{n}"
            d.mkdir()
            configs[n] = fleet.write_config(
                d / "coordinator.yml",
                machines=fleet.machines[:n],
                machine_extra={
                    "env": {"FAKE_CLAUDE_SCENARIO": "stall"},
                    "max_workers": workers + 5,
                },
                # every machine's launchers share this machine's cores here, unlike a real
                # fleet: polling every 5 s instead of 1 s keeps them from skewing every tool.
                worker={"stall_timeout": "2h", "max_runtime": "3h", "poll_interval": 5},
            )
        env = {n: C.coord_env(cfg) for n, cfg in configs.items()}
        total = {n: n * workers for n in sizes}

        with C.section(
            f"dispatching {biggest * workers} runs with coordlib, in batches (not timed)"
        ):
            setup_s, setup_n, setup_cmds = asyncio.run(
                dispatch_fleet(configs[biggest], workers, first_issue=1)
            )
            print(f"   {setup_n} dispatches in {setup_s:.1f} s, {setup_cmds} remote commands")
        with C.section("warm-up: one coord status per size (folds the runs' first events)"):
            _, proc = C.time_process([coord, "status", "--json"], env=env[biggest])
            F.verify_status(proc.stdout, biggest, total[biggest])
            board_big = configs[biggest].parent / "board.json"
            for n in sizes[:-1]:
                copied = copy_board(
                    board_big,
                    configs[n].parent / "board.json",
                    {m.name for m in fleet.machines[:n]},
                )
                print(f"   size {n}: its board gets the {copied} live rows of its machines")
        if args.finished:
            with C.section(f"every board gets {args.finished} finished rows (steady state)"):
                for j, n in enumerate(sizes):
                    rows = add_finished(
                        configs[n].parent / "board.json",
                        [m.name for m in fleet.machines[:n]],
                        args.finished,
                        first_issue=900000 + 10000 * j,
                    )
                    print(f"   size {n}: {rows} rows")
        with C.section("every size's coord status sees its machines and live workers"):
            for n in sizes:
                _, proc = C.time_process([coord, "status", "--json"], env=env[n])
                F.verify_status(proc.stdout, n, total[n])
                rows = len(json.loads(proc.stdout)["assignments"])
                size = (configs[n].parent / "board.json").stat().st_size
                print(f"   {n} machines: board {rows} rows, {size / 1e3:.0f} kB")

        specs = {
            n: status_floor_spec(fleet, fleet.machines[:n], root / f"floor{n}.json") for n in sizes
        }
        floor_argv = {n: [sys.executable, str(C.BENCH_DIR / "_floor_ssh.py"), str(specs[n])]
                      for n in sizes}  # fmt: skip
        st: dict[int, dict[str, list[float]]] = {
            n: {"coord": [], "floor": [], "inproc": []} for n in sizes
        }
        cpu: dict[int, dict[str, list[float]]] = {n: {k: [] for k in st[n]} for n in sizes}
        warm = WarmStatus(configs)
        try:
            with C.section("in-process: first Coordinator.status() per size (connects)"):
                for n in sizes:
                    warm.status(n, total[n])
                    print(f"   size {n}: {warm.first[n]:.3f} s")
            with C.section(
                f"status: {reps} x (coord status --json / floor / in-process warm) per size, "
                "interleaved"
            ):
                kinds = ["coord", "floor", "inproc"]
                for rep in range(reps):
                    for n in sizes if rep % 2 == 0 else sizes[::-1]:
                        for kind in kinds[rep % 3 :] + kinds[: rep % 3]:
                            cpu0 = local_cpu()
                            if kind == "coord":
                                dt, proc = C.time_process([coord, "status", "--json"], env=env[n])
                                F.verify_status(proc.stdout, n, total[n])
                            elif kind == "floor":
                                dt, proc = C.time_process(floor_argv[n])
                                F.verify_floor(proc.stdout, n, total[n])
                            else:
                                dt = warm.status(n, total[n])
                            st[n][kind].append(dt)
                            cpu[n][kind].append(local_cpu() - cpu0)
                    print(
                        f"   rep {rep + 1}: "
                        + "; ".join(
                            f"{n}: coord {st[n]['coord'][-1]:.3f} s, floor "
                            f"{st[n]['floor'][-1]:.3f} s, in-process {st[n]['inproc'][-1]:.3f} s"
                            for n in sizes
                        ),
                        flush=True,
                    )
        finally:
            warm.close()

        from coordlib import Coordinator

        # The same briefing text coordlib renders, so both send the same bytes.
        _, text, _ = Coordinator.from_path(configs[biggest]).plan_assignment(
            "m0", "api", 1, title="bench dispatch 1"
        )
        briefing = text.encode()
        dr: dict[int, dict[str, list[dict[str, Any]]]] = {n: {"coord": [], "floor": []}
                                                         for n in sizes}  # fmt: skip
        next_issue = 100000
        procs_before = user_processes(user) if not user.is_self else None
        with C.section(
            f"dispatch rounds: {rounds} x (coordlib assign gather / floor) per size, interleaved"
        ):
            for rnd in range(rounds):
                for n in sizes if rnd % 2 == 0 else sizes[::-1]:
                    machines = fleet.machines[:n]
                    for kind in ["coord", "floor"] if rnd % 2 == 0 else ["floor", "coord"]:
                        issues = [(m.name, next_issue + i) for i, m in enumerate(machines)]
                        next_issue += n
                        cpu0 = time.process_time()
                        if kind == "coord":
                            r = asyncio.run(D.coord_round(configs[n], issues))
                            r["cpu"] = time.process_time() - cpu0
                            stopped = asyncio.run(stop_runs(configs[n], {i for _, i in issues}))
                            if stopped != n:
                                raise RuntimeError(f"stopped {stopped} of {n} round runs")
                        else:
                            r = asyncio.run(D.floor_round(fleet, issues, briefing))
                            r["cpu"] = time.process_time() - cpu0
                            stop_floor(fleet, machines)
                        dr[n][kind].append(r)
                        print(
                            f"   round {rnd + 1}, {n} machines, {kind}: wall {r['wall']:.3f} s, "
                            f"per-dispatch p50 {C.median(r['lat']):.3f} s, "
                            f"{r['commands']} commands, {r['connects']} connects, "
                            f"local CPU {r['cpu']:.2f} s",
                            flush=True,
                        )
        if procs_before is not None:
            time.sleep(1.0)  # let the stopped runs' last processes exit
            print(f"   processes of {user.name}: {procs_before} before the rounds, "
                  f"{user_processes(user)} after (the rounds' runs all ended)")  # fmt: skip
        with C.section("after: every size's status still sees its live workers"):
            for n in sizes:
                _, proc = C.time_process([coord, "status", "--json"], env=env[n])
                F.verify_status(proc.stdout, n, total[n])
        prof_text = ""
        if args.profile:
            with C.section(f"cProfile: Coordinator.status() and a dispatch round, {biggest}"):
                prof_text = profile_status(configs[biggest])
                issues = [(m.name, next_issue + i) for i, m in enumerate(fleet.machines)]
                prof_text += profile_dispatch(configs[biggest], issues)
        help_s = C.median([C.time_process([coord, "--help"])[0] for _ in range(3)])
        pass_s = C.median([C.time_process([sys.executable, "-c", "pass"])[0] for _ in range(3)])

    # ------------------------------------------------------------ report
    res: dict[str, Any] = {}
    for n in sizes:
        s = {k: C.median(v) for k, v in st[n].items()}
        cw = C.median([r["wall"] for r in dr[n]["coord"]])
        fw = C.median([r["wall"] for r in dr[n]["floor"]])
        cmds_status = C.median(warm.commands[n]) if warm.commands[n] else float("nan")
        res[str(n)] = {
            "status_coord_s": s["coord"],
            "status_floor_s": s["floor"],
            "status_ratio": s["coord"] / s["floor"],
            "status_inprocess_warm_s": s["inproc"],
            "status_inprocess_first_s": warm.first[n],
            "status_commands_per_machine": cmds_status,
            "dispatch_coord_s": cw,
            "dispatch_floor_s": fw,
            "dispatch_ratio": cw / fw,
            "dispatch_coord_p50_s": C.percentile([x for r in dr[n]["coord"] for x in r["lat"]], 50),
            "dispatch_floor_p50_s": C.percentile([x for r in dr[n]["floor"] for x in r["lat"]], 50),
            "commands_per_dispatch": sum(r["commands"] for r in dr[n]["coord"])
            / (n * len(dr[n]["coord"])),
            "connects_per_round": C.median([r["connects"] for r in dr[n]["coord"]]),
            # CPU this machine spent in the measuring process (the in-process tools) or the
            # timed process (coord status, floor): the coordinator's own side of each cost
            "local_cpu_s": {
                "status_coord": C.median(cpu[n]["coord"]),
                "status_floor": C.median(cpu[n]["floor"]),
                "status_inprocess_warm": C.median(cpu[n]["inproc"]),
                "dispatch_coord": C.median([r["cpu"] for r in dr[n]["coord"]]),
                "dispatch_floor": C.median([r["cpu"] for r in dr[n]["floor"]]),
            },
            "samples": {
                "status": {k: [round(x, 4) for x in v] for k, v in st[n].items()},
                "dispatch": {k: [round(r["wall"], 4) for r in v] for k, v in dr[n].items()},
            },
        }
    print()
    print(
        f"scale, {workers} live workers per machine, login user {user.name}; "
        f"{reps} status reps, {rounds} dispatch rounds; medians, seconds"
    )
    C.print_table(
        ["machines", "coord status", "floor", "ratio", "in-proc warm", "in-proc 1st",
         "cmds/machine", "dispatch round", "floor", "ratio", "cmds/dispatch"],
        [
            [n, r["status_coord_s"], r["status_floor_s"], r["status_ratio"],
             r["status_inprocess_warm_s"], r["status_inprocess_first_s"],
             r["status_commands_per_machine"], r["dispatch_coord_s"], r["dispatch_floor_s"],
             r["dispatch_ratio"], r["commands_per_dispatch"]]
            for n, r in ((int(k), v) for k, v in res.items())
        ],
    )  # fmt: skip
    print("local CPU (coordinator side: the timed process, or this one for in-process), medians, s")
    C.print_table(
        ["machines", "coord status", "floor", "in-proc warm", "dispatch round", "floor"],
        [
            [n, u["status_coord"], u["status_floor"], u["status_inprocess_warm"],
             u["dispatch_coord"], u["dispatch_floor"]]
            for n, u in ((int(k), v["local_cpu_s"]) for k, v in res.items())
        ],
    )  # fmt: skip
    if len(sizes) > 1:
        a, b = str(sizes[0]), str(sizes[-1])
        grow = {
            k: res[b][k] / res[a][k]
            for k in ("status_coord_s", "status_floor_s", "dispatch_coord_s", "dispatch_floor_s")
        }
        print(
            f"growth {a} -> {b} machines (x{sizes[-1] / sizes[0]:g}): coord status "
            f"x{grow['status_coord_s']:.2f}, its floor x{grow['status_floor_s']:.2f}; "
            f"dispatch round x{grow['dispatch_coord_s']:.2f}, its floor "
            f"x{grow['dispatch_floor_s']:.2f}"
        )
    print(
        f"info: coord --help {help_s:.3f} s, python -c pass {pass_s:.3f} s; per-dispatch p50 "
        + ", ".join(
            f"{k} machines coord {v['dispatch_coord_p50_s']:.3f} s / floor "
            f"{v['dispatch_floor_p50_s']:.3f} s"
            for k, v in res.items()
        )
    )
    if prof_text:
        print(prof_text)
    checks = []
    for k, r in res.items():
        checks += [
            C.check(f"coord status / floor, {k} machines", r["status_ratio"], "<=", TARGET_RATIO),
            C.check(
                f"dispatch round / floor, {k} machines", r["dispatch_ratio"], "<=", TARGET_RATIO
            ),
            C.check(
                f"remote commands per machine per status, {k} machines",
                r["status_commands_per_machine"],
                "<=",
                1,
            ),
            C.check(
                f"remote commands per dispatch, {k} machines", r["commands_per_dispatch"], "<=", 1
            ),
        ]
    return C.finish(
        "scale",
        info,
        checks,
        user=user.name,
        quick=args.quick,
        sizes=sizes,
        workers_per_machine=workers,
        reps=reps,
        rounds=rounds,
        setup_dispatch_s=round(setup_s, 2),
        coord_help_s=round(help_s, 4),
        python_pass_s=round(pass_s, 4),
        rlimit_nofile=nofile,
        results=res,
        target={"ratio": TARGET_RATIO},
    )


if __name__ == "__main__":
    C.run_main(main)
