"""Event latency: from a worker's write to the line leaving `Coordinator.watch_lines`.

One sshd machine on loopback; a worker (fake_claude `events` scenario, FAKE_CLAUDE_RATE=50)
writes stream-json lines at 50/s, each carrying "ts" (wall time of the write) and "seq".
Right after the dispatch, two readers attach at once, in this process:

- coordlib: a fresh `Coordinator` (no open connection) iterating `watch_lines(id)`;
- baseline: a fresh asyncssh connection running a bare `tail -c +1 -F FILE` on the same file.

For each line: latency = time it left the reader - its "ts".  Lines written before the reader
attached arrive in one burst and measure the attach, not the stream, so they are reported
apart: "attach" is the time from the call to the first line.

Targets, once attached (coordlib): p50 < 10 ms, p99 < 50 ms; and every line exactly once.

    python3 bench/event_latency.py [--quick] [--user coordbench|root] [--reps N]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as C

RATE = 50


@dataclass
class Reader:
    """What one reader saw in one repetition."""

    name: str
    called: float = 0.0  # wall time of the call
    attached: float | None = None  # wall time the first line arrived
    live: list[float] = field(default_factory=list)  # latencies (s) of lines written after
    replayed: int = 0  # lines written before the reader attached
    seqs: list[int] = field(default_factory=list)

    def line(self, raw: bytes) -> bool:
        """Record one line; return True when it is the run's result (the last line)."""
        now = time.time()
        if self.attached is None:
            self.attached = now
        try:
            event = json.loads(raw)
        except ValueError:
            return False
        if not isinstance(event, dict):
            return False
        ts, seq = event.get("ts"), event.get("seq")
        if isinstance(ts, float) and isinstance(seq, int):
            self.seqs.append(seq)
            if ts >= self.attached:
                self.live.append(now - ts)
            else:
                self.replayed += 1
        return event.get("type") == "result"

    @property
    def attach_s(self) -> float:
        return (self.attached - self.called) if self.attached else float("nan")


async def coord_reader(config: Path, aid: str, r: Reader) -> None:
    from coordlib import Coordinator

    async with Coordinator.from_path(config) as w:
        r.called = time.time()
        lines = w.watch_lines(aid)
        async with contextlib.aclosing(lines):
            async for raw in lines:
                if r.line(raw):
                    break


async def tail_reader(m: C.Machine, user: str, path: str, r: Reader) -> None:
    import asyncssh

    r.called = time.time()
    async with asyncssh.connect(
        m.server.host,
        port=m.server.port,
        username=user,
        client_keys=[str(m.server.client_key)],
        known_hosts=str(m.server.known_hosts),
    ) as conn:
        proc = await conn.create_process(
            f"tail -c +1 -F {shlex.quote(path)}", encoding=None, stdin=asyncssh.DEVNULL
        )
        try:
            while True:
                raw = await proc.stdout.readline()
                if not raw:
                    break
                if r.line(raw.rstrip(b"\n")):
                    break
        finally:
            proc.close()


async def one_rep(config: Path, m: C.Machine, user: str, issue: int) -> tuple[Reader, Reader]:
    from coordlib import Coordinator

    async with Coordinator.from_path(config) as c:
        a = await c.assign(m.name, "api", issue, title=f"latency {issue}")
    path = str(m.workdir / "runs" / a.id / "events.jsonl")
    rc, rt = Reader("coordlib watch_lines"), Reader("bare tail -F")
    await asyncio.wait_for(
        asyncio.gather(coord_reader(config, a.id, rc), tail_reader(m, user, path, rt)),
        timeout=300,
    )
    return rc, rt


def summarize(readers: list[Reader], events: int) -> dict[str, Any]:
    live = [x for r in readers for x in r.live]
    complete = all(sorted(r.seqs) == list(range(1, events + 1)) for r in readers)
    return {
        "attach_median_s": C.median([r.attach_s for r in readers]),
        "attach_all_s": [round(r.attach_s, 4) for r in readers],
        "live_lines": len(live),
        "replayed_lines": sum(r.replayed for r in readers),
        "p50_s": C.percentile(live, 50),
        "p90_s": C.percentile(live, 90),
        "p99_s": C.percentile(live, 99),
        "max_s": max(live) if live else float("nan"),
        "every_line_once": complete,
    }


def main() -> int:
    p = C.parser(__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=None, help="lines per run (default 500)")
    args = p.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    events = args.events or (150 if args.quick else 500)
    info = C.machine_info()
    C.print_machine(info)
    user = C.login_user(args.user)
    print(f"login user: {user.name}; {reps} runs of {events} lines at {RATE}/s")

    with C.Cleanup() as cleanup:
        root = C.bench_root(cleanup)
        fleet = C.Fleet(root, user, cleanup)
        with C.section("starting sshd"):
            (m,) = fleet.start(1)
        config = fleet.write_config(
            root / "coordinator.yml",
            machine_extra={
                "env": {
                    "FAKE_CLAUDE_SCENARIO": "events",
                    "FAKE_CLAUDE_RATE": str(RATE),
                    "FAKE_CLAUDE_EVENTS": str(events),
                },
                "max_workers": 10,
            },
            worker={"stall_timeout": "10m", "max_runtime": "1h", "result_grace": 5},
        )
        results: list[tuple[Reader, Reader]] = []
        for rep in range(reps):
            with C.section(f"run {rep + 1}: dispatch, then both readers attach"):
                rc, rt = asyncio.run(one_rep(config, m, user.name, 100 + rep))
                results.append((rc, rt))
                for r in (rc, rt):
                    print(
                        f"   {r.name}: attach {r.attach_s * 1000:.0f} ms, {len(r.live)} live "
                        f"lines p50 {C.percentile(r.live, 50) * 1000:.1f} ms "
                        f"p99 {C.percentile(r.live, 99) * 1000:.1f} ms, {r.replayed} replayed"
                    )

    coord = summarize([rc for rc, _ in results], events)
    tail = summarize([rt for _, rt in results], events)
    print()
    print(f"event latency, {reps} x {events} lines at {RATE}/s, login user {user.name}")
    C.print_table(
        ["reader", "attach ms", "live lines", "p50 ms", "p90 ms", "p99 ms", "max ms", "replayed"],
        [
            [
                name,
                C.ms(s["attach_median_s"]),
                s["live_lines"],
                C.ms(s["p50_s"]),
                C.ms(s["p90_s"]),
                C.ms(s["p99_s"]),
                C.ms(s["max_s"]),
                s["replayed_lines"],
            ]
            for name, s in (("coordlib watch_lines", coord), ("bare tail -F (asyncssh)", tail))
        ],
    )
    checks = [
        C.check("coordlib p50 once attached", C.ms(coord["p50_s"]), "<", 10, " ms"),
        C.check("coordlib p99 once attached", C.ms(coord["p99_s"]), "<", 50, " ms"),
        C.check("coordlib delivers every line once", float(coord["every_line_once"]), "==", 1),
    ]
    return C.finish(
        "event_latency",
        info,
        checks,
        user=user.name,
        quick=args.quick,
        reps=reps,
        events_per_run=events,
        rate=RATE,
        median_attach_ms=C.ms(coord["attach_median_s"]),
        baseline_median_attach_ms=C.ms(tail["attach_median_s"]),
        p50_ms=C.ms(coord["p50_s"]),
        p99_ms=C.ms(coord["p99_s"]),
        max_ms=C.ms(coord["max_s"]),
        baseline_p50_ms=C.ms(tail["p50_s"]),
        baseline_p99_ms=C.ms(tail["p99_s"]),
        baseline_max_ms=C.ms(tail["max_s"]),
        coordlib=C.clean_floats(coord),
        baseline=C.clean_floats(tail),
        ratio=round(coord["p50_s"] / tail["p50_s"], 3) if tail["p50_s"] else None,
        target={"p50_ms": 10, "p99_ms": 50},
    )


if __name__ == "__main__":
    C.run_main(main)
