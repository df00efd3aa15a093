"""Web latency: from the coordinator's receipt of a worker's line to an open page's receipt of
it, over `coord web`'s server-sent events.

One sshd machine on loopback; a worker (fake_claude `events` scenario, FAKE_CLAUDE_RATE=50)
writes "STATUS: tick n" lines at 50/s, each carrying "ts" (wall time of the write) and "seq".
Right after the dispatch, in this process and on one event loop:

- coordlib: `coord web` (its Hub and Starlette app under uvicorn, on a loopback port) with V
  viewers of the assignment's event stream (``/api/a/ID/stream``), each an HTTP/1.1 SSE
  client on its own connection, as a browser's EventSource is; all share the hub's one tail;
- baseline: a raw in-process `Coordinator.watch_lines(id)` on a coordinator of its own (the
  same remote tail `coord watch` reads), attached at the same moment.

Per line and viewer: coordinator receipt (the "at" the hub stamps when its tail yields the
line) to viewer receipt, and the worker's "ts" to viewer receipt against the worker's "ts" to
the baseline's receipt.  Lines written before a reader attached are the attach burst and are
left out, as in event_latency.  Runs alternate 1 viewer and V viewers.

Targets: coordinator -> viewer p95 < 100 ms (with 1 and with V viewers); one remote tail per
assignment however many viewers; every line reaches every viewer once.

    python3 bench/web_latency.py [--quick] [--user coordbench|root] [--reps N] [--events N]
                                 [--viewers V]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as C

RATE = 50
TICK = re.compile(r"\[status\] tick (\d+)")


@dataclass
class Viewer:
    """What one SSE viewer received: per seq, (coordinator receipt, viewer receipt)."""

    name: str
    got: dict[int, tuple[float, float]] = field(default_factory=dict)
    repeats: int = 0
    attached: float | None = None  # wall time of its first line


@dataclass
class Baseline:
    """The raw watch: per seq, the worker's ts and the receipt."""

    ts: dict[int, float] = field(default_factory=dict)
    got: dict[int, float] = field(default_factory=dict)
    attached: float | None = None


async def sse_viewer(port: int, aid: str, v: Viewer) -> None:
    """Read /api/a/ID/stream as a browser's EventSource does, until its `end` event."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /api/a/{aid}/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    chunked = b"transfer-encoding: chunked" in head.lower()
    buf = b""
    try:
        while True:
            if chunked:
                size = int((await reader.readline()).strip() or b"0", 16)
                if size == 0:
                    return
                data = await reader.readexactly(size + 2)
                buf += data[:-2]
            else:
                data = await reader.read(65536)
                if not data:
                    return
                buf += data
            now = time.time()
            while b"\n\n" in buf:
                frame, buf = buf.split(b"\n\n", 1)
                event, payload = "message", ""
                for line in frame.decode().split("\n"):
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        payload = line[6:]
                if event == "end":
                    return
                if event != "line":
                    continue
                if v.attached is None:
                    v.attached = now
                data_ = json.loads(payload)
                for entry in data_["entries"]:
                    m = TICK.fullmatch(entry["text"])
                    if m:
                        seq = int(m.group(1))
                        if seq in v.got:
                            v.repeats += 1
                        v.got[seq] = (float(data_["at"]), now)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def raw_watch(config: Path, aid: str, b: Baseline) -> None:
    """The baseline: `Coordinator.watch_lines` in-process, on a coordinator of its own."""
    from coordlib import Coordinator

    async with Coordinator.from_path(config) as w:
        lines = w.watch_lines(aid)
        async with contextlib.aclosing(lines):
            async for raw in lines:
                now = time.time()
                if b.attached is None:
                    b.attached = now
                with contextlib.suppress(ValueError):
                    event = json.loads(raw)
                    if isinstance(event, dict) and isinstance(event.get("seq"), int):
                        b.ts[event["seq"]] = float(event["ts"])
                        b.got[event["seq"]] = now
                    if isinstance(event, dict) and event.get("type") == "result":
                        return


@dataclass
class Run:
    """One repetition: the viewers, the baseline, and how many tails the hub started."""

    viewers: list[Viewer]
    base: Baseline
    tails_started: int
    polls: int


async def one_run(config: Path, m: C.Machine, issue: int, n_viewers: int) -> Run:
    from coordlib import Coordinator
    from coordlib.web import WebOptions
    from coordlib.web.hub import Hub
    from coordlib.web.security import new_token
    from coordlib.web.server import bind, serve

    async with Coordinator.from_path(config) as c:
        sock = bind("127.0.0.1", 0)
        options = WebOptions(token=new_token(), port=sock.getsockname()[1], interval=5.0)
        hub = Hub(c, interval=options.interval)
        ready, stop = asyncio.Event(), asyncio.Event()
        server = asyncio.create_task(serve(c, options, sock, hub=hub, on_ready=ready.set,
                                           stop=stop))  # fmt: skip
        await asyncio.wait_for(ready.wait(), 20)
        a = await c.assign(m.name, "api", issue, title=f"web latency {issue}")
        viewers = [Viewer(f"viewer {i + 1}") for i in range(n_viewers)]
        base = Baseline()
        await asyncio.wait_for(
            asyncio.gather(raw_watch(config, a.id, base),
                           *(sse_viewer(options.port, a.id, v) for v in viewers)),
            timeout=300,
        )  # fmt: skip
        started, polls = hub.tails.started, hub.polls
        stop.set()
        await server
        sock.close()
    return Run(viewers, base, started, polls)


def summarize(runs: list[Run], events: int) -> dict[str, Any]:
    hub_to_view: list[float] = []
    worker_to_view: list[float] = []
    worker_to_hub: list[float] = []
    worker_to_watch: list[float] = []
    complete = True
    for r in runs:
        b = r.base
        for seq, got in b.got.items():
            if b.attached is not None and b.ts[seq] >= b.attached:
                worker_to_watch.append(got - b.ts[seq])
        for v in r.viewers:
            complete &= sorted(v.got) == list(range(1, events + 1)) and not v.repeats
            for seq, (at, now) in v.got.items():
                ts = b.ts.get(seq)
                if ts is None or v.attached is None or ts < v.attached:
                    continue  # the attach burst
                hub_to_view.append(now - at)
                worker_to_view.append(now - ts)
                worker_to_hub.append(at - ts)

    def pct(values: list[float]) -> dict[str, float]:
        return {
            "n": len(values),
            "p50_s": C.percentile(values, 50),
            "p95_s": C.percentile(values, 95),
            "p99_s": C.percentile(values, 99),
            "max_s": max(values) if values else float("nan"),
        }

    return {
        "coordinator_to_viewer": pct(hub_to_view),
        "worker_to_viewer": pct(worker_to_view),
        "worker_to_coordinator": pct(worker_to_hub),
        "baseline_worker_to_watch": pct(worker_to_watch),
        "every_line_once": complete,
        "tails_per_run": sorted({r.tails_started for r in runs}),
        "viewers": sorted({len(r.viewers) for r in runs}),
    }


def main() -> int:
    p = C.parser(__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=None, help="lines per run (default 500)")
    p.add_argument("--viewers", type=int, default=None, help="viewers in the fan-out runs (20)")
    args = p.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    events = args.events or (150 if args.quick else 500)
    fan = args.viewers or (10 if args.quick else 20)
    info = C.machine_info()
    C.print_machine(info)
    user = C.login_user(args.user)
    print(f"login user: {user.name}; {reps} x (1 viewer, {fan} viewers), {events} lines at "
          f"{RATE}/s per run")  # fmt: skip

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
        one: list[Run] = []
        many: list[Run] = []
        issue = 100
        for rep in range(reps):
            for n, into in ((1, one), (fan, many)) if rep % 2 == 0 else ((fan, many), (1, one)):
                with C.section(f"run {rep + 1}: {n} viewer(s) and the raw watch attach"):
                    r = asyncio.run(one_run(config, m, issue, n))
                    issue += 1
                    into.append(r)
                    s = summarize([r], events)["coordinator_to_viewer"]
                    print(f"   coordinator -> viewer p50 {s['p50_s'] * 1000:.1f} ms, p95 "
                          f"{s['p95_s'] * 1000:.1f} ms over {s['n']} lines; tails started: "
                          f"{r.tails_started}")  # fmt: skip

    s1, sn = summarize(one, events), summarize(many, events)
    print()
    print(f"web latency, {reps} x {events} lines at {RATE}/s, login user {user.name}")
    rows = []
    for label, s in (("1 viewer", s1), (f"{fan} viewers", sn)):
        for what in ("coordinator_to_viewer", "worker_to_viewer", "worker_to_coordinator",
                     "baseline_worker_to_watch"):  # fmt: skip
            x = s[what]
            rows.append([f"{label}: {what.replace('_', ' ')}", x["n"], C.ms(x["p50_s"]),
                         C.ms(x["p95_s"]), C.ms(x["p99_s"]), C.ms(x["max_s"])])  # fmt: skip
    C.print_table(["", "lines", "p50 ms", "p95 ms", "p99 ms", "max ms"], rows)

    def over_watch(s: dict[str, Any]) -> float:
        base = s["baseline_worker_to_watch"]["p50_s"]
        return s["worker_to_viewer"]["p50_s"] / base if base else float("nan")

    checks = [
        C.check("coordinator -> viewer p95, 1 viewer",
                C.ms(s1["coordinator_to_viewer"]["p95_s"]), "<", 100, " ms"),
        C.check(f"coordinator -> viewer p95, {fan} viewers",
                C.ms(sn["coordinator_to_viewer"]["p95_s"]), "<", 100, " ms"),
        C.check("one tail per assignment, whatever the viewers",
                float(max(s1["tails_per_run"] + sn["tails_per_run"])), "==", 1),
        C.check("every line reaches every viewer once",
                float(s1["every_line_once"] and sn["every_line_once"]), "==", 1),
    ]  # fmt: skip
    return C.finish(
        "web_latency",
        info,
        checks,
        user=user.name,
        quick=args.quick,
        reps=reps,
        events_per_run=events,
        rate=RATE,
        viewers=fan,
        p50_ms=C.ms(s1["coordinator_to_viewer"]["p50_s"]),
        p95_ms=C.ms(s1["coordinator_to_viewer"]["p95_s"]),
        fanout_p50_ms=C.ms(sn["coordinator_to_viewer"]["p50_s"]),
        fanout_p95_ms=C.ms(sn["coordinator_to_viewer"]["p95_s"]),
        worker_to_viewer_p50_ms=C.ms(s1["worker_to_viewer"]["p50_s"]),
        baseline_p50_ms=C.ms(s1["baseline_worker_to_watch"]["p50_s"]),
        baseline_p95_ms=C.ms(s1["baseline_worker_to_watch"]["p95_s"]),
        ratio=round(over_watch(s1), 3),
        fanout_ratio=round(over_watch(sn), 3),
        one_viewer=C.clean_floats(s1),
        fanout=C.clean_floats(sn),
        target={"coordinator_to_viewer_p95_ms": 100},
    )


if __name__ == "__main__":
    C.run_main(main)
