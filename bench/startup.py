"""Startup: `coord --help` over `python -c pass`, and where the import time goes.

Interleaved, N times each, as whole processes: ``python -c pass`` (same interpreter),
``coord --help`` (the console script beside that interpreter, not a pyenv shim), and for
information ``coord version`` and the imports `coord status` pays before it does anything.
Target: median(coord --help) - median(python -c pass) < 150 ms.

Then ``python -X importtime`` (several runs, each module's fastest) lists the top offenders,
for `coord --help` and for the `coord status` import path.

    python3 bench/startup.py [--quick] [--reps N]
"""

from __future__ import annotations

import os
import shutil
import sys
from collections import defaultdict
from typing import Any

import _common as C

STATUS_IMPORTS = "import coord_cli.main, coord_cli.run_cmds, coordlib.coordinator"


def importtime(argv: list[str], runs: int) -> dict[str, dict[str, Any]]:
    """Run argv under -X importtime runs times; return per module its min self/cumulative us."""
    best: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"self": float("inf"), "cum": float("inf"), "depth": 99}
    )
    for _ in range(runs):
        _, p = C.time_process([sys.executable, "-X", "importtime", *argv], check=False)
        for line in p.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            parts = line[len("import time:") :].split("|", 2)
            if len(parts) != 3:
                continue
            self_us, cum_us, name = parts
            depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
            name = name.strip()
            b = best[name]
            b["self"] = min(b["self"], int(self_us))
            b["cum"] = min(b["cum"], int(cum_us))
            b["depth"] = min(b["depth"], depth)
    return dict(best)


def offenders(data: dict[str, dict[str, Any]], n: int = 12) -> dict[str, list[list[Any]]]:
    """Return the top modules by own time and the top-level imports by cumulative time."""
    by_self = sorted(data.items(), key=lambda kv: -kv[1]["self"])[:n]
    top = sorted(
        ((k, v) for k, v in data.items() if v["depth"] == 0), key=lambda kv: -kv[1]["cum"]
    )[:n]
    return {
        "self": [[k, round(v["self"] / 1000, 1)] for k, v in by_self],
        "top_level": [[k, round(v["cum"] / 1000, 1)] for k, v in top],
    }


def main() -> int:
    p = C.parser(__doc__.split("\n")[0], ssh=False)
    args = p.parse_args()
    reps = args.reps or (7 if args.quick else 15)
    runs = 3 if args.quick else 5
    info = C.machine_info()
    C.print_machine(info)
    coord = C.bin_of("coord")
    C.compile_bytecode()
    tools = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "coord --help": [coord, "--help"],
        "coord version": [coord, "version"],
        "imports of coord status": [sys.executable, "-c", STATUS_IMPORTS],
    }
    # What a shell finds on PATH: under pyenv, a shim that costs a `pyenv exec` per call.
    path = os.environ.get("PATH", "").split(os.pathsep)
    pyenv_bin = os.path.dirname(sys.executable)
    shim = shutil.which("coord", path=os.pathsep.join(d for d in path if d != pyenv_bin))
    if shim and os.path.realpath(shim) != os.path.realpath(coord):
        tools["coord --help via PATH (info)"] = [shim, "--help"]
    times: dict[str, list[float]] = {k: [] for k in tools}
    with C.Cleanup(), C.section(f"measuring: {reps} x each, interleaved"):
        order = list(tools)
        for rep in range(reps):
            k = rep % len(order)
            for name in order[k:] + order[:k]:
                times[name].append(C.time_process(tools[name])[0])
    with C.section(f"python -X importtime, {runs} runs each (fastest per module)"):
        help_imports = offenders(importtime(["-m", "coord_cli", "--help"], runs))
        status_imports = offenders(importtime(["-c", STATUS_IMPORTS], runs))

    med = {k: C.median(v) for k, v in times.items()}
    base = med["python -c pass"]
    print()
    print(
        f"startup, {reps} runs each; coord = {coord}" + (f", PATH coord = {shim}" if shim else "")
    )
    C.print_table(
        ["process", "median ms", "min ms", "max ms", "over python -c pass"],
        [
            [k, C.ms(med[k]), C.ms(min(v)), C.ms(max(v)), C.ms(med[k] - base)]
            for k, v in times.items()
        ],
    )
    for title, data in (("coord --help", help_imports), ("coord status", status_imports)):
        print(f"\nimport time of {title}: top-level imports (cumulative ms) | top modules (own ms)")
        rows = [
            [*(a or ["", ""]), *(b or ["", ""])]
            for a, b in zip(data["top_level"], data["self"], strict=False)
        ]
        C.print_table(["top-level import", "cum ms", "module", "own ms"], rows)
    delta = med["coord --help"] - base
    checks = [C.check("coord --help over python -c pass", C.ms(delta), "<", 150, " ms")]
    return C.finish(
        "startup",
        info,
        checks,
        quick=args.quick,
        reps=reps,
        coord=coord,
        median_python_ms=C.ms(base),
        median_help_ms=C.ms(med["coord --help"]),
        median_version_ms=C.ms(med["coord version"]),
        median_status_imports_ms=C.ms(med["imports of coord status"]),
        median_shim_help_ms=C.ms(med.get("coord --help via PATH (info)", float("nan"))),
        delta_ms=C.ms(delta),
        importtime_help=help_imports,
        importtime_status=status_imports,
        ratio=round(med["coord --help"] / base, 3),
        target={"delta_ms": 150},
    )


if __name__ == "__main__":
    C.run_main(main)
