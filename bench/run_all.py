"""Run every benchmark, then write bench/results.json and bench/results.md.

    python3 bench/run_all.py [--quick] [--only NAME ...] [--out DIR]

Each benchmark runs as its own process (so each cleans up after itself); its output is shown
as it runs, and its final JSON line is collected.  `fanout_status` runs twice: as the bench
user with Debian's default shell files, and as root (whose pyenv .bashrc costs ~210 ms per
command here).  The Markdown table is ready for the README's Performance section.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common as C

PLAN: list[tuple[str, list[str]]] = [
    ("startup", []),
    ("board", []),
    ("event_latency", []),
    ("web_latency", []),
    ("dispatch", []),
    ("merge_queue", []),
    # 10 issues from assign to merged under `coord run`'s loop: 16 runs (--quick: 8), ~2.5 min
    ("pipeline", []),
    ("fanout_status", ["--user", C.BENCH_USER]),
    # as root every remote command costs ~0.2-0.4 s of .bashrc: fewer repetitions
    ("fanout_status", ["--user", "root", "--reps", "5"]),
    # 100 sshd and 300 live workers: the longest one, last
    ("scale", []),
]


def run_one(name: str, extra: list[str], quick: bool) -> dict[str, Any]:
    if quick:  # --quick picks its own (smaller) repetitions
        extra = [a for i, a in enumerate(extra) if a != "--reps" and extra[i - 1] != "--reps"]
    argv = [
        sys.executable,
        str(C.BENCH_DIR / f"{name}.py"),
        *extra,
        *(["--quick"] if quick else []),
    ]
    print(f"\n==== {' '.join(argv[1:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=C.child_env()
    )
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
        proc.wait()
    except KeyboardInterrupt:
        proc.terminate()  # the benchmark cleans up on SIGTERM
        proc.wait(timeout=60)
        raise
    result = C.last_json_line("".join(lines))
    if result is None:
        result = {"bench": name, "pass": False, "error": f"exit {proc.returncode}, no result line"}
    result["args"] = extra
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _v(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}{unit}" if abs(value) < 100 else f"{value:.0f}{unit}"
    return f"{value}{unit}"


def headline(r: dict[str, Any]) -> tuple[str, str]:
    """Return (coordlib figure, baseline figure) for one result, in words."""
    b = r.get("bench")
    if b == "fanout_status":
        return (
            f"`coord status --json` {_v(r.get('median_coord_s'), ' s')}",
            f"Ansible `raw` {_v(r.get('median_ansible_s'), ' s')}; "
            f"asyncssh floor {_v(r.get('median_floor_s'), ' s')}",
        )
    if b == "event_latency":
        return (
            f"p50 {_v(r.get('p50_ms'), ' ms')}, p99 {_v(r.get('p99_ms'), ' ms')}, "
            f"attach {_v(r.get('median_attach_ms'), ' ms')}",
            f"bare `tail -F`: p50 {_v(r.get('baseline_p50_ms'), ' ms')}, "
            f"p99 {_v(r.get('baseline_p99_ms'), ' ms')}, "
            f"attach {_v(r.get('baseline_median_attach_ms'), ' ms')}",
        )
    if b == "web_latency":
        return (
            f"coordinator → page p50 {_v(r.get('p50_ms'), ' ms')}, "
            f"p95 {_v(r.get('p95_ms'), ' ms')}; {r.get('viewers')} viewers: "
            f"p95 {_v(r.get('fanout_p95_ms'), ' ms')}",
            f"raw `watch_lines`: p50 {_v(r.get('baseline_p50_ms'), ' ms')}, "
            f"p95 {_v(r.get('baseline_p95_ms'), ' ms')}",
        )
    if b == "dispatch":
        return (
            f"{r.get('dispatches')} dispatches in {_v(r.get('median_wall_s'), ' s')}, "
            f"p50 {_v(r.get('p50_dispatch_s'), ' s')}, "
            f"{_v(r.get('commands_per_dispatch'))} cmd/dispatch",
            f"1 bare command each: {_v(r.get('baseline_median_wall_s'), ' s')}, "
            f"p50 {_v(r.get('baseline_p50_dispatch_s'), ' s')}",
        )
    if b == "board":
        w = r.get("writes_per_s") or {}
        return (
            f"`coord status` {_v(r.get('median_status_ms'), ' ms')}; 4 writers "
            f"{_v(w.get('distinct'))}/{_v(w.get('shared'))} writes/s (distinct/shared), "
            f"lost updates {'/'.join(str(v) for v in (r.get('lost_updates') or {}).values())}",
            f"`python -c pass` {_v(r.get('median_python_ms'), ' ms')}, "
            f"`coord --help` {_v(r.get('median_help_ms'), ' ms')}; "
            f"1 writer {_v(w.get('single'))} writes/s",
        )
    if b == "scale":
        res = r.get("results") or {}
        sizes = [str(n) for n in r.get("sizes") or []]
        return (
            "; ".join(
                f"{n} machines: `coord status --json` {_v(res[n].get('status_coord_s'), ' s')}, "
                f"dispatch round {_v(res[n].get('dispatch_coord_s'), ' s')}"
                for n in sizes
                if n in res
            ),
            "; ".join(
                f"{n}: asyncssh floor: status {_v(res[n].get('status_floor_s'), ' s')}, "
                f"dispatch round {_v(res[n].get('dispatch_floor_s'), ' s')}"
                for n in sizes
                if n in res
            ),
        )
    if b == "pipeline":
        return (
            f"run end -> stage move p50 {_v(r.get('p50_s'), ' s')}, "
            f"p99 {_v(r.get('p99_s'), ' s')}; {_v(r.get('commands_per_move'))} remote "
            f"commands and {_v(r.get('transactions_per_move'))} board transactions per move; "
            f"{r.get('issues')} issues to merged in {_v(r.get('wall_s'), ' s')} "
            f"(critical path {_v(r.get('critical_path_s'), ' s')})",
            f"polling every {_v(r.get('baseline_interval_s'), ' s')}: "
            f"p50 {_v(r.get('baseline_p50_s'), ' s')}, p99 {_v(r.get('baseline_p99_s'), ' s')}; "
            f"{_v(r.get('baseline_wall_s'), ' s')}",
        )
    if b == "startup":
        return (
            f"`coord --help` {_v(r.get('median_help_ms'), ' ms')}",
            f"`python -c pass` {_v(r.get('median_python_ms'), ' ms')}",
        )
    return ("", "")


def markdown(results: list[dict[str, Any]], info: dict[str, Any], quick: bool) -> str:
    out = [
        f"Measured {time.strftime('%Y-%m-%d')} on {info['cpu']}, {info['cores']} cores, "
        f"kernel {info['kernel']}, Python {info['python']}, {info['openssh']}"
        f"{' (--quick)' if quick else ''}; load average at start "
        f"{' '.join(str(x) for x in info['loadavg'])}.",
        "",
        "| benchmark | coordlib | baseline | target | result |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        name = r.get("bench", "?") + (f" ({r['user']})" if r.get("user") else "")
        ours, base = headline(r)
        checks = r.get("checks") or []
        if not checks:
            out.append(f"| {name} | {ours} | {base} | | **error**: {r.get('error', '')} |")
            continue
        for i, c in enumerate(checks):
            target = f"{c['name']} {c['op']} {c['target']:g}{c['unit']}"
            got = f"{'pass' if c['pass'] else '**FAIL**'} ({c['value']:g}{c['unit']})"
            if i == 0:
                out.append(f"| {name} | {ours} | {base} | {target} | {got} |")
            else:
                out.append(f"| | | | {target} | {got} |")
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="*", help="benchmark names to run (default: all)")
    p.add_argument("--out", default=str(C.BENCH_DIR), help="where results.json/.md go")
    args = p.parse_args()
    info = C.machine_info()
    C.print_machine(info)
    plan = [(n, a) for n, a in PLAN if not args.only or n in args.only]
    if os.geteuid() != 0:
        plan = [(n, a) for n, a in plan if a != ["--user", "root"]]
    t0 = time.perf_counter()
    results = [run_one(name, extra, args.quick) for name, extra in plan]
    total = time.perf_counter() - t0
    out = Path(args.out)
    doc = {
        "machine": info,
        "quick": args.quick,
        "seconds": round(total, 1),
        "pass": all(r.get("pass") for r in results),
        "results": results,
    }
    (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    md = markdown(results, info, args.quick)
    (out / "results.md").write_text(md)
    print(
        f"\n==== all done in {total:.0f} s; wrote {out / 'results.json'} and {out / 'results.md'}\n"
    )
    print(md)
    return 0 if doc["pass"] else 1


if __name__ == "__main__":
    C.run_main(main)
