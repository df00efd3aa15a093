"""`coord status --json` across 20 machines vs Ansible ad hoc and a bare asyncssh floor.

20 real sshd on loopback (each its own port, work dir, repo clone and tmux server), 5 runs
dispatched on each with coordlib (the fake_claude stand-in in its `stall` scenario, so they
stay running), then, interleaved, N times each, as whole processes:

- coordlib:  coord status --json                       (COORD_CONFIG=bench config)
- ansible:   ansible all -i INV -m raw -a 'tmux -L <socket> ls' -f 20   (no ControlPersist)
- floor:     python3 bench/_floor_ssh.py SPEC   (one asyncssh connect + one `tmux -L s ls` each)

Targets: median(coord) / median(ansible) <= 0.5 and median(coord) / median(floor) <= 1.5.

    python3 bench/fanout_status.py [--quick] [--user coordbench|root] [--reps N]
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import _common as C

MACHINES = 20
RUNS_PER_MACHINE = 5


def ansible_inventory(fleet: C.Fleet, path: Path) -> Path:
    """Write an INI inventory using the same keys, known_hosts, ports and user as coordlib."""
    lines = ["[machines]"]
    for m in fleet.machines:
        s = m.server
        lines.append(
            f"{m.name} ansible_host={s.host} ansible_port={s.port} ansible_user={fleet.user.name} "
            f"ansible_ssh_private_key_file={s.client_key} sock={m.socket} "
            f"ansible_ssh_common_args='-o UserKnownHostsFile={s.known_hosts} "
            f"-o StrictHostKeyChecking=yes'"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def ansible_env(root: Path, *, persist: bool) -> dict[str, str]:
    """Ansible's environment: its files under root; ControlPersist off unless persist."""
    env = {
        **os.environ,
        "ANSIBLE_HOME": str(root / "ansible"),
        "ANSIBLE_LOCAL_TEMP": str(root / "ansible" / "tmp"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(root / "ansible" / "cp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
    }
    if not persist:
        # Ansible's default (-C -o ControlMaster=auto -o ControlPersist=60s) would reuse the
        # previous repetition's connections: `coord status` as a process never can.
        env["ANSIBLE_SSH_ARGS"] = "-C -o ControlMaster=no"
    return env


async def dispatch_all(config: Path, per_machine: int) -> tuple[float, int, list[str]]:
    """Dispatch per_machine runs on every machine at once; return (seconds, commands, ids)."""
    from coordlib import Coordinator

    async with Coordinator.from_path(config) as c:
        jobs = [
            c.assign(name, "api", 1000 * i + j, title=f"bench {name} {j}")
            for i, name in enumerate(c.config.machines)
            for j in range(per_machine)
        ]
        t0 = time.perf_counter()
        # return_exceptions: see dispatch.py (a cancelled subprocess start can hang on 3.11).
        done = await asyncio.gather(*jobs, return_exceptions=True)
        dt = time.perf_counter() - t0
        errors = [a for a in done if isinstance(a, BaseException)]
        if errors:
            raise RuntimeError(f"{len(errors)} of {len(jobs)} dispatches failed") from errors[0]
        commands = sum(c.transport(n).stats["commands"] for n in c.config.machines)
        bad = [a.id for a in done if str(a.status) != "running"]
        if bad:
            raise RuntimeError(f"dispatched runs not running: {bad}")
        return dt, commands, [a.id for a in done]


async def in_process_status(config: Path, reps: int) -> dict[str, Any]:
    """Status from a long-lived process: the first call connects, later calls reuse."""
    from coordlib import Coordinator

    async with Coordinator.from_path(config) as c:
        t0 = time.perf_counter()
        await c.status()
        first = time.perf_counter() - t0
        before = sum(c.transport(n).stats["commands"] for n in c.config.machines)
        warm = []
        for _ in range(reps):
            t0 = time.perf_counter()
            await c.status()
            warm.append(time.perf_counter() - t0)
        after = sum(c.transport(n).stats["commands"] for n in c.config.machines)
        return {
            "first_s": first,
            "warm_median_s": C.median(warm),
            "commands_per_status": (after - before) / reps,
        }


def verify_status(out: str, machines: int, runs: int) -> None:
    data = json.loads(out)
    reachable = sum(1 for m in data["machines"] if m["reachable"])
    running = sum(1 for a in data["assignments"] if a["status"] == "running")
    if reachable != machines or running != runs:
        raise RuntimeError(f"coord status saw {reachable} reachable, {running} running: {out}")


def verify_ansible(out: str, machines: int, runs: int) -> None:
    ok = out.count("| CHANGED | rc=0 >>") + out.count("| SUCCESS | rc=0 >>")
    sessions = sum(1 for line in out.splitlines() if line.startswith("coord-"))
    if ok != machines or sessions != runs:
        raise RuntimeError(f"ansible: {ok} hosts ok, {sessions} sessions:\n{out[-3000:]}")


def verify_floor(out: str, machines: int, runs: int) -> None:
    counts = [int(line.split()[-1]) for line in out.splitlines() if "ERROR" not in line]
    if len(counts) != machines or sum(counts) != runs:
        raise RuntimeError(f"floor script: {out}")


def main() -> int:
    p = C.parser(__doc__.split("\n")[0])
    p.add_argument("--machines", type=int, default=MACHINES)
    p.add_argument("--runs", type=int, default=RUNS_PER_MACHINE, help="runs per machine")
    args = p.parse_args()
    reps = args.reps or (3 if args.quick else 7)
    info = C.machine_info()
    C.print_machine(info)
    user = C.login_user(args.user)
    ansible = C.bin_of("ansible")
    coord = C.bin_of("coord")
    n, per = args.machines, args.runs
    total = n * per
    print(f"login user: {user.name}; {n} machines x {per} runs; {reps} repetitions each")

    with C.Cleanup() as cleanup:
        root = C.bench_root(cleanup)
        fleet = C.Fleet(root, user, cleanup)
        with C.section(f"starting {n} sshd on loopback"):
            fleet.start(n)
        config = fleet.write_config(
            root / "coordinator.yml",
            machine_extra={"env": {"FAKE_CLAUDE_SCENARIO": "stall"}, "max_workers": per + 5},
            # 20 machines' launchers share this machine's cores here, unlike a real fleet:
            # polling every 5 s instead of 1 s keeps their load from skewing every tool.
            worker={"stall_timeout": "2h", "max_runtime": "3h", "poll_interval": 5},
        )
        with C.section(f"dispatching {total} runs with coordlib (asyncio.gather over assign)"):
            dispatch_s, dispatch_cmds, _ = asyncio.run(dispatch_all(config, per))
            print(f"   {total} dispatches in {dispatch_s:.2f} s, {dispatch_cmds} remote commands")
        env = C.coord_env(config)
        with C.section("warm-up: one coord status (folds the runs' first events)"):
            _, proc = C.time_process([coord, "status", "--json"], env=env)
            verify_status(proc.stdout, n, total)

        inventory = ansible_inventory(fleet, root / "inventory.ini")
        cold_env = ansible_env(root, persist=False)
        ansible_argv = [
            ansible, "all", "-i", str(inventory), "-m", "raw", "-a", "tmux -L {{ sock }} ls",
            "-f", str(n),
        ]  # fmt: skip
        spec = root / "floor.json"
        spec.write_text(
            json.dumps(
                [
                    {
                        "host": m.server.host,
                        "port": m.server.port,
                        "user": user.name,
                        "key": str(m.server.client_key),
                        "known_hosts": str(m.server.known_hosts),
                        "command": f"tmux -L {m.socket} ls",
                    }
                    for m in fleet.machines
                ]
            )
        )
        floor_argv = [sys.executable, str(C.BENCH_DIR / "_floor_ssh.py"), str(spec)]
        tools = {
            "coordlib": ([coord, "status", "--json"], env, verify_status),
            "ansible": (ansible_argv, cold_env, verify_ansible),
            "floor": (floor_argv, None, verify_floor),
        }
        times: dict[str, list[float]] = {k: [] for k in tools}
        with C.section("one ansible run first (its first start compiles and caches)"):
            _, proc = C.time_process(ansible_argv, env=cold_env)
            verify_ansible(proc.stdout, n, total)
        with C.section(f"measuring: {reps} x coord status / ansible / floor, interleaved"):
            order = list(tools)
            for rep in range(reps):
                for name in order[rep % 3 :] + order[: rep % 3]:
                    argv, tenv, verify = tools[name]
                    dt, proc = C.time_process(argv, env=tenv)
                    verify(proc.stdout, n, total)
                    times[name].append(dt)
                print(
                    f"   rep {rep + 1}: "
                    + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()),
                    flush=True,
                )
        with C.section("extras: ansible with ControlPersist (warm), in-process status"):
            warm_env = ansible_env(root, persist=True)
            C.time_process(ansible_argv, env=warm_env)  # opens the persistent masters
            warm = []
            for _ in range(min(reps, 2)):
                dt, proc = C.time_process(ansible_argv, env=warm_env)
                verify_ansible(proc.stdout, n, total)
                warm.append(dt)
            inproc = asyncio.run(in_process_status(config, min(reps, 2)))
            help_s = C.median([C.time_process([coord, "--help"])[0] for _ in range(3)])
            pass_s = C.median([C.time_process([sys.executable, "-c", "pass"])[0] for _ in range(3)])

    med = {k: C.median(v) for k, v in times.items()}
    r_ans = med["coordlib"] / med["ansible"]
    r_floor = med["coordlib"] / med["floor"]
    print()
    print(f"fan-out status, {n} machines x {per} runs, login user {user.name}, {reps} reps")
    C.print_table(
        ["what", "median s", "min s", "max s", "coord / this"],
        [[k, med[k], min(v), max(v), med["coordlib"] / med[k]] for k, v in times.items()]
        + [
            [
                "ansible, ControlPersist warm (info)",
                C.median(warm),
                min(warm),
                max(warm),
                med["coordlib"] / C.median(warm),
            ],
            ["coordlib in-process, 1st call (info)", inproc["first_s"], "", "", ""],
            ["coordlib in-process, warm (info)", inproc["warm_median_s"], "", "", ""],
            ["python -c pass (info)", pass_s, "", "", ""],
            ["coord --help (info)", help_s, "", "", ""],
        ],
    )
    print(
        f"remote commands per status (in-process): {inproc['commands_per_status']:g} "
        f"for {n} machines; dispatch of {total} runs took {dispatch_s:.2f} s"
    )
    checks = [
        C.check("coord status / ansible ad hoc", r_ans, "<=", 0.5),
        C.check("coord status / asyncssh floor", r_floor, "<=", 1.5),
    ]
    return C.finish(
        "fanout_status",
        info,
        checks,
        user=user.name,
        quick=args.quick,
        machines=n,
        runs_per_machine=per,
        reps=reps,
        median_coord_s=round(med["coordlib"], 4),
        median_ansible_s=round(med["ansible"], 4),
        median_floor_s=round(med["floor"], 4),
        median_ansible_warm_s=round(C.median(warm), 4),
        inprocess_first_s=round(inproc["first_s"], 4),
        inprocess_warm_s=round(inproc["warm_median_s"], 4),
        commands_per_status=inproc["commands_per_status"],
        coord_help_s=round(help_s, 4),
        python_pass_s=round(pass_s, 4),
        samples={k: [round(x, 4) for x in v] for k, v in times.items()},
        ratio={"ansible": round(r_ans, 3), "floor": round(r_floor, 3)},
        target={"ansible": 0.5, "floor": 1.5},
    )


if __name__ == "__main__":
    C.run_main(main)
