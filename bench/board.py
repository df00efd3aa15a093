"""Board: `coord status` on a big board, and concurrent writers losing no update.

A local-only config (one machine, ``host: localhost``) whose board, built through coordlib's
`Board` API, holds 100 live (running) assignments and 10,000 archived ones in
``board.history.jsonl`` (with the default ``keep_finished: 300``, the live file also keeps the
300 most recent finished ones).  Each live assignment has a real run directory whose launcher
is alive (a sleeping process of ours), so every `coord status` probes 100 running runs.

1. ``coord status`` and ``coord status --json`` as whole processes (COORD_CONFIG), against
   ``python -c pass`` and ``coord --help``, interleaved.  Target: coord status < 300 ms.
   An in-process profile says where the time goes.
2. 4 processes x 250 transitions with ``Board.update``: first each on its own assignment
   (distinct), then all on one (shared).  Every update writes a field of its own, so a lost
   update is a missing field: verified.  Reported as writes per second, beside 1 process.

    python3 bench/board.py [--quick] [--reps N]
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common as C

LIVE = 100
ARCHIVED = 10_000
KEEP_FINISHED = 300
PROCS = 4
TRANSITIONS = 250


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def proc_start(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def events_text(aid: str, n: int) -> str:
    lines = [
        {"type": "system", "subtype": "init", "session_id": f"s-{aid}", "model": "m", "cwd": "/"},
        *(
            {
                "type": "assistant",
                "session_id": f"s-{aid}",
                "message": {
                    "id": f"msg_{aid}_{i}",
                    "role": "assistant",
                    "content": [{"type": "text", "text": f"STATUS: step {i}"}],
                },
            }
            for i in range(n)
        ),
    ]
    return "".join(json.dumps(x) + "\n" for x in lines)


def build(root: Path, workdir: Path, sleeper: int, live: int, archived: int) -> Path:
    """Build the board through the Board API and the live runs' directories."""
    from coordlib.assignment import Assignment, Status
    from coordlib.board import Board

    path = root / "board.json"
    board = Board(path, keep_finished=KEEP_FINISHED)
    now = time.time()
    finished = archived + KEEP_FINISHED
    boot, start = boot_id(), proc_start(sleeper)
    with board.transaction() as txn:
        for k in range(finished):
            t = now - (finished - k) * 60.0
            a = Assignment(
                id=f"api-{k}-{k % 65536:04x}",
                machine="local",
                repo="api",
                issue=k,
                branch=f"issue-{k}-bench-finished-work",
                model="claude-sonnet-4-5",
                status=Status.DONE,
                title=f"finished work {k}",
                tier="sonnet",
                worktree=f"{workdir}/worktrees/api/api-{k}",
                run_dir=f"{workdir}/runs/api-{k}",
                created_at=t - 600,
                started_at=t - 590,
                finished_at=t,
                exit_code=0,
                exit_reason="exited",
                session_id=f"session-{k}",
                cost_usd=0.0123,
                num_turns=7,
                duration_ms=590000,
                result="Fixed it and committed the change. " * 8,
                last_status="done",
                last_tool="Bash",
                events_offset=40000,
            )
            txn.insert(a.to_dict())
        for k in range(live):
            issue = 100000 + k
            aid = f"api-{issue}-{k:04x}"
            run = workdir / "runs" / aid
            run.mkdir(parents=True)
            (run / "events.jsonl").write_text(events_text(aid, 3))
            (run / "launcher.pid").write_text(f"{sleeper} {boot} {start}\n")
            a = Assignment(
                id=aid,
                machine="local",
                repo="api",
                issue=issue,
                branch=f"issue-{issue}-bench-live-work",
                model="claude-sonnet-4-5",
                status=Status.RUNNING,
                title=f"live work {k}",
                tier="sonnet",
                worktree=f"{workdir}/worktrees/api/{aid}",
                run_dir=str(run),
                created_at=now - 900,
                started_at=now - 890,
            )
            txn.insert(a.to_dict())
    return path


def add_archived_run_dirs(workdir: Path, n: int) -> list[Path]:
    """Leave the archived runs' directories on the machine, each with its exit record."""
    made = []
    for k in range(n):
        run = workdir / "runs" / f"api-{k}-{k % 65536:04x}"
        run.mkdir(parents=True)
        (run / "exit.json").write_text(
            '{"exit_code":0,"reason":"exited","started_at":1,"finished_at":2}\n'
        )
        made.append(run)
    return made


def profile_status(config: Path) -> tuple[float, str, dict[str, float]]:
    """Time an in-process status and its parts; return (seconds, top of profile, parts)."""
    from coordlib import Coordinator

    parts: dict[str, float] = {}
    c = Coordinator.from_path(config)
    t0 = time.perf_counter()
    c.board.all()
    parts["board.all() (live file)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    c.board.history()
    parts["board.history() (10,000 archived)"] = time.perf_counter() - t0
    try:  # the probe alone: internal API, so only informative
        from coordlib.runtime.builders import Want, status_command
        from coordlib.runtime.protocol import Scope

        m = c.config.machine("local")
        wants = [Want(a["id"], a.get("events_offset", 0), 8388608) for a in c.board.all()
                 if a["status"] == "running"]  # fmt: skip
        argv = status_command(m.workdir, m.tmux_socket, Scope.LIVE, wants)

        async def probe() -> None:
            await c.transport("local").run(argv, what="probe")

        t0 = time.perf_counter()
        asyncio.run(probe())
        parts["the probe command alone (bash, 100 runs)"] = time.perf_counter() - t0
    except Exception as exc:  # pragma: no cover - depends on coordlib internals
        print(f"   (probe timing skipped: {exc})")
    prof = cProfile.Profile()

    async def go() -> None:
        async with Coordinator.from_path(config) as c2:
            await c2.status()

    t0 = time.perf_counter()
    prof.enable()
    asyncio.run(go())
    prof.disable()
    total = time.perf_counter() - t0
    parts["Coordinator.status() in-process"] = total
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(18)
    return total, out.getvalue(), parts


# ---------------------------------------------------------------- concurrent writers
def worker(args: list[str]) -> int:
    """--worker BOARD TARGET PREFIX COUNT START_AT: COUNT Board.update calls, timed."""
    from coordlib.board import Board

    path, target, prefix, count, start_at = args[0], args[1], args[2], int(args[3]), float(args[4])
    board = Board(path, keep_finished=KEEP_FINISHED)
    time.sleep(max(0.0, start_at - time.time()))
    t0 = time.perf_counter()
    for i in range(count):
        board.update(target, **{f"{prefix}{i}": i, "last_status": f"{prefix} tick {i}"})
    print(json.dumps({"n": count, "s": time.perf_counter() - t0}))
    return 0


def writers(board: Path, targets: list[str], prefixes: list[str], count: int) -> dict[str, Any]:
    """Run one writer process per (target, prefix) at once; return wall time and rates."""
    start_at = time.time() + 1.5  # every process imported and waiting
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", str(board), t, p, str(count), str(start_at)],
            stdout=subprocess.PIPE,
            text=True,
            env=C.child_env(),
        )
        for t, p in zip(targets, prefixes, strict=True)
    ]
    outs = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError("a writer process failed")
    wall = max(o["s"] for o in outs)
    total = sum(o["n"] for o in outs)
    return {"processes": len(procs), "writes": total, "wall_s": wall, "writes_per_s": total / wall}


def verify(board_path: Path, expect: dict[str, list[str]]) -> tuple[bool, int]:
    """Check every update's own field is on its record; return (ok, missing count)."""
    from coordlib.board import Board

    board = Board(board_path, keep_finished=KEEP_FINISHED)
    missing = 0
    for target, keys in expect.items():
        record = board.get(target)
        missing += sum(1 for k in keys if k not in record)
    return missing == 0, missing


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(sys.argv[2:])
    p = C.parser(__doc__.split("\n")[0], ssh=False)
    args = p.parse_args()
    reps = args.reps or (5 if args.quick else 15)
    count = 100 if args.quick else TRANSITIONS
    info = C.machine_info()
    C.print_machine(info)
    coord = C.bin_of("coord")
    C.compile_bytecode()

    with C.Cleanup() as cleanup:
        root = C.bench_root(cleanup)
        sleeper = subprocess.Popen(["sleep", "100000"], stdin=subprocess.DEVNULL)
        cleanup.add("the stand-in launcher", sleeper.kill)
        workdir = root / "wd"
        socket = f"cb{os.getpid()}b"
        with C.section(f"building the board: {LIVE} live, {ARCHIVED} archived (Board API)"):
            t0 = time.perf_counter()
            board_path = build(root, workdir, sleeper.pid, LIVE, ARCHIVED)
            build_s = time.perf_counter() - t0
            hist = board_path.with_suffix(".history.jsonl")
            print(
                f"   live file {board_path.stat().st_size / 1e6:.2f} MB, history "
                f"{hist.stat().st_size / 1e6:.2f} MB ({sum(1 for _ in hist.open())} lines), "
                f"built in {build_s:.2f} s"
            )
        config = root / "coordinator.yml"
        config.write_text(
            C.yaml_dump(
                {
                    "repos": [{"name": "api", "default_branch": "main", "url": str(root)}],
                    "machines": [
                        {
                            "name": "local",
                            "host": "localhost",
                            "workdir": str(workdir),
                            "tmux_socket": socket,
                            "max_workers": 1000,
                        }
                    ],
                    "concurrency": {"max_workers": 1000},
                    "board": {"path": str(board_path), "keep_finished": KEEP_FINISHED},
                }
            )
        )
        env = C.coord_env(config)
        with C.section("warm-up: one coord status (folds the live runs' first events)"):
            _, proc = C.time_process([coord, "status", "--json"], env=env)
            data = json.loads(proc.stdout)
            running = sum(1 for a in data["assignments"] if a["status"] == "running")
            if running != LIVE:
                raise RuntimeError(f"expected {LIVE} running, coord status says {running}")
        tools = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "coord --help": [coord, "--help"],
            "coord status": [coord, "status"],
            "coord status --json": [coord, "status", "--json"],
        }
        times: dict[str, list[float]] = {k: [] for k in tools}
        with C.section(f"measuring: {reps} x each, interleaved"):
            order = list(tools)
            for rep in range(reps):
                k = rep % len(order)
                for name in order[k:] + order[:k]:
                    times[name].append(C.time_process(tools[name], env=env)[0])
        with C.section("in-process profile of one status"):
            inproc_s, profile, parts = profile_status(config)
        with C.section(f"again, with the {ARCHIVED} archived runs' directories on the machine"):
            # coordlib never removes a finished run's directory, so a machine that ran 10,000
            # assignments still has them: every status lists them, and reads the history to
            # tell them from orphans.
            old_dirs = add_archived_run_dirs(workdir, ARCHIVED)
            with_dirs = [
                C.time_process(tools["coord status"], env=env)[0] for _ in range(min(reps, 5))
            ]
            for d in old_dirs:
                shutil.rmtree(d, ignore_errors=True)

        # Concurrent writers: distinct records, then one shared record.
        live_ids = [a["id"] for a in data["assignments"] if a["status"] == "running"]
        prefixes = [f"w{i}_" for i in range(PROCS)]
        with C.section(f"1 process x {count} Board.update (reference)"):
            single = writers(board_path, [live_ids[-1]], ["solo_"], count)
        with C.section(f"{PROCS} processes x {count} Board.update, each on its own assignment"):
            distinct = writers(board_path, live_ids[:PROCS], prefixes, count)
            ok_d, miss_d = verify(
                board_path,
                {
                    t: [f"{p}{i}" for i in range(count)]
                    for t, p in zip(live_ids[:PROCS], prefixes, strict=True)
                },
            )
        with C.section(f"{PROCS} processes x {count} Board.update, all on one assignment"):
            shared_id = live_ids[PROCS]
            shared = writers(
                board_path, [shared_id] * PROCS, [f"s{i}_" for i in range(PROCS)], count
            )
            ok_s, miss_s = verify(
                board_path, {shared_id: [f"s{p}_{i}" for p in range(PROCS) for i in range(count)]}
            )

    med = {k: C.median(v) for k, v in times.items()}
    print()
    print(f"board: {LIVE} live + {KEEP_FINISHED} recent finished in the live file, "
          f"{ARCHIVED} archived; {reps} reps")  # fmt: skip
    C.print_table(
        ["process", "median ms", "min ms", "max ms", "over python -c pass"],
        [
            [k, C.ms(med[k]), C.ms(min(v)), C.ms(max(v)), C.ms(med[k] - med["python -c pass"])]
            for k, v in times.items()
        ],
    )
    print(
        f"coord status with the {ARCHIVED} archived runs' directories left on the machine: "
        f"median {C.ms(C.median(with_dirs))} ms (information)"
    )
    print("where an in-process status spends its time:")
    C.print_table(["part", "ms"], [[k, C.ms(v)] for k, v in parts.items()])
    print(profile)
    C.print_table(
        ["writers", "processes", "writes", "wall s", "writes/s", "lost updates"],
        [
            ["one process", 1, single["writes"], single["wall_s"], single["writes_per_s"], "-"],
            [
                "distinct assignments",
                PROCS,
                distinct["writes"],
                distinct["wall_s"],
                distinct["writes_per_s"],
                miss_d,
            ],
            [
                "one shared assignment",
                PROCS,
                shared["writes"],
                shared["wall_s"],
                shared["writes_per_s"],
                miss_s,
            ],
        ],
    )
    checks = [
        C.check("coord status wall time", C.ms(med["coord status"]), "<", 300, " ms"),
        C.check("no lost update, distinct assignments", float(ok_d), "==", 1),
        C.check("no lost update, shared assignment", float(ok_s), "==", 1),
    ]
    return C.finish(
        "board",
        info,
        checks,
        quick=args.quick,
        reps=reps,
        live=LIVE,
        archived=ARCHIVED,
        median_status_ms=C.ms(med["coord status"]),
        median_status_json_ms=C.ms(med["coord status --json"]),
        median_help_ms=C.ms(med["coord --help"]),
        median_python_ms=C.ms(med["python -c pass"]),
        inprocess_status_ms=C.ms(inproc_s),
        median_status_with_archived_dirs_ms=C.ms(C.median(with_dirs)),
        parts_ms={k: C.ms(v) for k, v in parts.items()},
        writes_per_s={
            "single": round(single["writes_per_s"], 1),
            "distinct": round(distinct["writes_per_s"], 1),
            "shared": round(shared["writes_per_s"], 1),
        },
        lost_updates={"distinct": miss_d, "shared": miss_s},
        ratio=round(med["coord status"] / med["python -c pass"], 2),
        target={"status_ms": 300},
    )


if __name__ == "__main__":
    C.run_main(main)
