"""Dispatch two workers with coordlib and print their results.

python examples/two_workers.py                   # a throwaway demo repo, stand-in workers
python examples/two_workers.py coordinator.yml MACHINE REPO ISSUE1 ISSUE2
"""

from __future__ import annotations

import asyncio
import sys

from coordlib import Coordinator
from coordlib.demo import make_demo


async def main(config: str, machine: str, repo: str, issues: list[int]) -> int:
    async with Coordinator.from_path(config) as coord:
        started = await asyncio.gather(
            *(coord.assign(machine, repo, n, title=f"example task {n}") for n in issues)
        )
        for a in started:
            print(f"started {a.id} on {a.machine}: {a.repo}#{a.issue} branch {a.branch}")
        finished = await asyncio.gather(*(coord.wait(a.id, timeout=600) for a in started))
    for a in finished:
        cost = f"${a.cost_usd:.4f}" if a.cost_usd is not None else "-"
        print(f"{a.id}: {a.status} ({a.failure_class or 'ok'}), {a.num_turns} turns, {cost}")
        print(f"    {a.last_status or ''}")
    return 0 if all(a.status == "done" for a in finished) else 1


if __name__ == "__main__":
    if len(sys.argv) == 6:
        _, cfg, machine, repo, i1, i2 = sys.argv
        sys.exit(asyncio.run(main(cfg, machine, repo, [int(i1), int(i2)])))
    ws = make_demo(workers=2, tmux_socket="coord-example")
    print(f"no config given: using a throwaway demo workspace in {ws.root}")
    numbers = list(range(1, len(ws.issues) + 1))
    sys.exit(asyncio.run(main(str(ws.config_path), "local", "demo", numbers)))
