"""The merge queue: how many test runs it costs to land eight ready PRs, batched and bisected,
against a serial queue (one PR stacked, tested and landed at a time) in the same run.

Real git on this machine: a repo with a bare origin, eight branches each adding one file, the
eight issues' pipelines put at ready-to-merge on the board with their PRs on the local
forge, then `Coordinator.merge()`, which stacks, tests (the `test` verb: a detached worktree
and the repo's test_command) and lands.  Two cases: all eight green; one of them (the fifth)
breaks the tests.  Targets (the merge-queue issue's): eight green land with at most 2 test
runs; with one breaker the seven good ones land with at most 7 runs and the bad one bounces.

    python3 bench/merge_queue.py [--quick]
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common as C

N = 8
BAD = 5  # the breaker, when there is one


def git(*args: str, cwd: Path) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def make_world(root: Path, socket: str, *, breaker: bool) -> Path:
    """A repo, its origin, eight pushed branches and a config; return the config's path."""
    from coordlib.testing.gitrepo import make_git_repo

    repo = make_git_repo(root / "api")
    for i in range(1, N + 1):
        branch = f"issue-{i}-feature-{i}"
        git("checkout", "-q", "-b", branch, "main", cwd=repo.path)
        name = "broken.txt" if breaker and i == BAD else f"feature-{i}.txt"
        (repo.path / name).write_text(f"{i}\n")
        git("add", name, cwd=repo.path)
        git("-c", "user.name=b", "-c", "user.email=b@x", "commit", "-qm", f"feature {i}",
            cwd=repo.path)  # fmt: skip
        git("push", "-q", "origin", branch, cwd=repo.path)
    git("checkout", "-q", "main", cwd=repo.path)
    config = root / "coordinator.yml"
    config.write_text(C.yaml_dump({
        "repos": [{"name": "api", "default_branch": "main", "url": str(repo.origin),
                   "test_command": "test ! -e broken.txt"}],
        "machines": [{"name": "local", "host": "localhost", "workdir": str(root / "wd"),
                      "tmux_socket": socket, "repo_paths": {"api": str(repo.path)}}],
    }))  # fmt: skip
    return config


async def ready(config: Path) -> None:
    """Put the eight issues at ready-to-merge, each with its PR on the local forge."""
    from coordlib import Coordinator
    from coordlib.board_pipelines import put_pipeline
    from coordlib.pipeline.state import READY, Pipeline

    async with Coordinator.from_path(config) as c:
        forge = c.forge("api")
        for i in range(1, N + 1):
            issue = await forge.create_issue(f"Feature {i}")
            branch = f"issue-{i}-feature-{i}"
            pr = await forge.open_pr(
                head=branch, base="main", title=f"Feature {i}", body=f"Closes #{issue.number}"
            )
            p = Pipeline(repo="api", issue=issue.number, stage=READY, title=f"Feature {i}",
                         machine="local", branch=branch, pr=pr.number)  # fmt: skip
            p.note_move(READY, "approve")
            p.moves[-1]["at"] = float(i)  # ready in order
            with c.board.transaction() as txn:
                put_pipeline(txn, p)


async def merge(config: Path, batch: int) -> tuple[dict[str, Any], float]:
    from coordlib import Coordinator

    async with Coordinator.from_path(config) as c:
        t0 = time.perf_counter()
        # A bounced PR goes back to its fix stage: one merge lands all that can land.
        report = await c.merge(batch=batch)
        runs = report.test_runs
        elapsed = time.perf_counter() - t0
        landed = [x["issue"] for b in report.batches for x in b.get("landed", [])]
        bounced = [k for b in report.batches for k in b.get("bounced", [])]
        return {"test_runs": runs, "landed": len(landed), "bounced": bounced,
                "errors": report.errors}, elapsed  # fmt: skip


def case(cleanup: C.Cleanup, *, breaker: bool, batch: int) -> dict[str, Any]:
    import secrets

    root = C.bench_root(cleanup, prefix="cb-merge-")
    socket = f"cbm{secrets.token_hex(3)}"
    cleanup.add(f"tmux -L {socket}", lambda: subprocess.run(
        ["tmux", "-L", socket, "kill-server"], capture_output=True, check=False))  # fmt: skip
    config = make_world(root, socket, breaker=breaker)
    asyncio.run(ready(config))
    out, elapsed = asyncio.run(merge(config, batch))
    out["seconds"] = elapsed
    return out


def main() -> int:
    args = C.parser(__doc__ or "", ssh=False).parse_args()
    del args
    info = C.machine_info()
    C.print_machine(info)
    cleanup = C.Cleanup()
    results: dict[str, dict[str, Any]] = {}
    with cleanup:
        for breaker in (False, True):
            for batch, label in ((4, "queue"), (1, "serial")):
                name = f"{'one_breaker' if breaker else 'green'}_{label}"
                with C.section(name):
                    results[name] = case(cleanup, breaker=breaker, batch=batch)
    rows = [[k, v["test_runs"], v["landed"], ",".join(v["bounced"]) or "-", v["seconds"]]
            for k, v in results.items()]  # fmt: skip
    C.print_table(["case", "test runs", "landed", "bounced", "seconds"], rows)
    g, b = results["green_queue"], results["one_breaker_queue"]
    checks = [
        C.check("8 green PRs: test runs", g["test_runs"], "<=", 2),
        C.check("8 green PRs: landed", g["landed"], "==", N),
        C.check("one breaker: test runs", b["test_runs"], "<=", 7),
        C.check("one breaker: good ones landed", b["landed"], "==", N - 1),
        C.check("one breaker: bounced", len(b["bounced"]), "==", 1),
        C.check("queue vs serial test runs (green)",
                g["test_runs"] / max(1, results["green_serial"]["test_runs"]), "<", 1.0),
    ]  # fmt: skip
    return C.finish("merge_queue", info, checks, results=results)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    C.run_main(main)
