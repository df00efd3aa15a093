"""`coord merge`: land what reached ready-to-merge, tested on exactly the base it lands on.

The candidates are the issues whose pipeline is at ready-to-merge with a PR, by repo (an
upstream repo in `depends_on` first), then by when they became ready (or `--order`).  Each
repo's are taken in batches of `merge.batch_size` through `queue.run_batch`, which calls
back here for the machine work, one remote command each: `stack` (the batch merged or
rebased onto the default branch's head, on the machine of the first candidate), `test` (the
build and tests on the stacked commit) and `land` (that very commit pushed to the default
branch, refused if the branch moved meanwhile).  Then the forge and the pipelines learn the
outcome: a landed PR is recorded and its issue closed with the merged commit and the issue's
whole cost; a breaker or a conflict goes back to its issue's fix stage (a conflict with the
`conflict` briefing naming the files).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import CommandError, CoordError, PipelineError, UnreachableError, UsageError
from ..runtime.answers import failure_reason, parse_land, parse_stack, parse_test
from ..runtime.builders import land_command, stack_command, test_command
from ..runtime.command import slugify
from ..runtime.protocol import ExitCode
from .checks import stale
from .queue import BatchResult, Step, Trial, run_batch
from .smoke import capable, nowhere, rules_for

if TYPE_CHECKING:
    from ..config import MachineConfig
    from ..context import Context
    from ..pipeline.engine import Pipelines
    from ..pipeline.state import Pipeline

__all__ = ["MergeReport", "Merger", "order_repos"]

METHODS = ("merge", "squash", "rebase")
_TAIL = 3000
_MERGE_TRIES = 3  # a batch that fails to run this often in a row asks a person


@dataclass
class MergeReport:
    """What `coord merge` did (or, with dry_run, would do)."""

    dry_run: bool
    batches: list[dict[str, Any]] = field(default_factory=list)
    waiting: list[dict[str, Any]] = field(default_factory=list)  # {issue, why}
    errors: list[str] = field(default_factory=list)

    @property
    def test_runs(self) -> int:
        """Return how many test runs the merge cost."""
        return sum(int(b.get("test_runs", 0)) for b in self.batches)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready report."""
        return {"dry_run": self.dry_run, "batches": self.batches, "waiting": self.waiting,
                "errors": self.errors, "test_runs": self.test_runs}  # fmt: skip


def order_repos(repos: Sequence[str], depends_on: dict[str, Sequence[str]]) -> list[str]:
    """Return repos with each one's `depends_on` before it (the config has no cycles)."""
    out: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in out or name in path:
            return
        for up in depends_on.get(name, ()):
            visit(up, (*path, name))
        out.append(name)

    for r in repos:
        visit(r, ())
    return [r for r in out if r in repos]


class Merger:
    """The merge queue, for the coordinator."""

    def __init__(self, ctx: Context, engine: Pipelines) -> None:
        self.ctx = ctx
        self.engine = engine
        self._green: set[str] = set()  # commits this merge knows pass (it tested them)

    def candidates(
        self, *, repo: str | None = None, order: Sequence[str] = ()
    ) -> dict[str, list[Pipeline]]:
        """Return the ready PRs to land, by repo in landing order (see the module)."""
        config = self.ctx.config
        ready = [p for p in self.ctx.board.pipelines()
                 if p.stage == "ready-to-merge" and p.pr is not None and p.branch
                 and (repo is None or p.repo == repo)]  # fmt: skip
        wanted = [_key(x, repo) for x in order]
        if wanted:
            unknown = [k for k in wanted if k not in {p.key for p in ready}]
            if unknown:
                raise UsageError(
                    f"not ready to merge: {', '.join(unknown)} (`coord pipeline` shows where "
                    f"each issue is)"
                )
            ready = sorted((p for p in ready if p.key in wanted), key=lambda p: wanted.index(p.key))
        else:
            ready.sort(key=_ready_at)
        names = order_repos(
            sorted({p.repo for p in ready}),
            {r: config.repo(r).depends_on for r in config.repos},
        )
        return {r: [p for p in ready if p.repo == r] for r in names}

    async def merge(
        self,
        *,
        repo: str | None = None,
        method: str | None = None,
        order: Sequence[str] = (),
        batch: int | None = None,
        dry_run: bool = False,
    ) -> MergeReport:
        """Land the ready PRs; see the module.  `dry_run` stacks them (to find conflicts and
        PRs that change the same files) but tests and lands nothing."""
        method = method or self.ctx.config.merge.method
        if method not in METHODS:
            raise UsageError(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
        size = batch or self.ctx.config.merge.batch_size
        if size < 1:
            raise UsageError("--batch must be 1 or more")
        report = MergeReport(dry_run=dry_run)
        for name, ready in self.candidates(repo=repo, order=order).items():
            blocked = self._upstream_busy(name)
            if blocked:
                report.waiting += [{"issue": p.key, "why": blocked} for p in ready]
                continue
            for i in range(0, len(ready), size):
                group = ready[i : i + size]
                if not dry_run:
                    # Claimed batch by batch, just before its stack: a long merge never holds
                    # (and never outlives) claims on the batches it has not reached.
                    group = self._claim(group, report)
                    group = await self._still_as_reviewed(group, report)
                if not group:
                    continue
                try:
                    await self._batch(name, group, method, report, dry_run=dry_run)
                except _Moved as exc:  # not a failure: the moved PRs went back to test
                    report.waiting += [{"issue": k, "why": str(exc)} for k in exc.keys]
                except CoordError as exc:  # a machine down or timed out, a forge refusal
                    report.errors.append(f"{name}: {exc}")
                    self.ctx.notify(f"merge {name}: {exc}")
                    if not dry_run:
                        self._count_failure(group, exc)
                finally:
                    if not dry_run:
                        self._release(group)
        if not dry_run:
            await self.engine.actions.post_outbox(None)
        return report

    async def _still_as_reviewed(
        self, group: list[Pipeline], report: MergeReport
    ) -> list[Pipeline]:
        """Keep the candidates whose facts still hold as they are landed: the issue open, the
        PR open at the head that was tested and approved.  Each one refused goes where that
        fact sends it (see `stale`), and the report says which fact changed."""
        forge = self.ctx.forges.get(group[0].repo) if group else None
        keep = []
        for p in group:
            assert forge is not None and p.pr is not None
            pr = await forge.get_pr(p.pr)
            state = await forge.issue_state(p.issue)
            refused = stale(p, pr, state, self.engine.playbook,
                            reviews=self.ctx.config.reviews.enabled)  # fmt: skip
            if refused is None:
                keep.append(p)
                continue
            stage, why = refused
            self.engine.reopen(p, outcome=why, escalate=False, failures="", stage=stage)
            report.waiting.append({"issue": p.key, "why": why})
        return keep

    async def _heads_unchanged(self, stacked: Sequence[Pipeline]) -> None:
        """Raise `_Moved` (and send those PRs back to test) if a PR's head is no longer the
        commit that was tested and reviewed: someone pushed between the check before the
        stack and the stack's own fetch, and what was stacked is not what was reviewed."""
        if not stacked:
            return
        forge = self.ctx.forges.get(stacked[0].repo)
        moved = []
        for p in stacked:
            assert p.pr is not None
            head = (await forge.get_pr(p.pr)).head_sha
            if p.head_sha and head and head != p.head_sha:
                moved.append(p)
        if not moved:
            return
        test = next((x.name for x in self.engine.playbook.stages.values()
                     if x.run == "test"), "needs-human")  # fmt: skip
        for p in moved:
            self.engine.reopen(p, outcome="pushed during the merge", escalate=False,
                               stage=test, failures="")  # fmt: skip
        raise _Moved([p.key for p in moved])

    def _count_failure(self, group: Sequence[Pipeline], exc: CoordError) -> None:
        """A batch that failed to run (not a red test): the third time in a row, a person."""

        def bump(q: Pipeline) -> None:
            n = q.retries.get("merge:failed", 0) + 1
            q.retries = {**q.retries, "merge:failed": n}
            if n >= _MERGE_TRIES:
                q.retries = {k: v for k, v in q.retries.items() if k != "merge:failed"}
                q.reason = f"the merge queue failed {n} times on it; the last: {exc}"
                q.note_move("needs-human", "merge failed")

        for p in group:
            if not isinstance(exc, UnreachableError):  # a machine away mends by itself
                self.engine.while_mine(p, bump)

    def _claim(self, ready: list[Pipeline], report: MergeReport) -> list[Pipeline]:
        """Claim each candidate for this process (two merges at once never take one PR
        both); return those claimed, as claimed.  A claim whose process died is taken over."""
        stale_after = self.engine._stale_after()
        claimed = []
        for p in ready:
            q = None if p.acting_alive(stale_after=stale_after) else self.engine._claim(p, "merge")
            if q is None:
                report.waiting.append({"issue": p.key, "why": "another coord process is on it"})
            else:
                claimed.append(q)
        return claimed

    def _release(self, group: Sequence[Pipeline]) -> None:
        """Drop this process's claim on the candidates the batch left as they were."""

        for p in group:

            def apply(q: Pipeline | None, txn: Any, mine: Any = p.acting) -> None:
                if q is not None and q.acting == mine:
                    q.acting = None

            self.ctx.board.pipeline_change(p.repo, p.issue, apply)

    def _upstream_busy(self, repo: str) -> str | None:
        """Why repo's PRs wait: an upstream repo (depends_on, all the way up) has ready PRs
        not yet landed."""
        config = self.ctx.config
        ups: set[str] = set()
        todo = list(config.repo(repo).depends_on)
        while todo:
            up = todo.pop()
            if up not in ups and up in config.repos:
                ups.add(up)
                todo += config.repo(up).depends_on
        busy = [p.key for p in self.ctx.board.pipelines()
                if p.repo in ups and p.stage == "ready-to-merge" and p.pr is not None]  # fmt: skip
        if busy:
            return f"upstream {', '.join(sorted({k.split('#')[0] for k in busy}))} lands first"
        return None

    # ------------------------------------------------------------ one batch
    async def _batch(
        self, repo: str, group: list[Pipeline], method: str, report: MergeReport, *,
        dry_run: bool,
    ) -> None:  # fmt: skip
        config = self.ctx.config
        r = config.repo(repo)
        m = config.machine(group[0].machine)
        transport = self.ctx.machines.get(m.name)
        record: dict[str, Any] = {"repo": repo, "machine": m.name, "method": method,
                                  "candidates": [p.key for p in group]}  # fmt: skip

        files: dict[str, tuple[str, ...]] = {}  # each candidate's changed files
        now: dict[str, str] = {}  # the base the last stack was made on

        async def stack_on(
            where: MachineConfig, cands: Sequence[Pipeline]
        ) -> tuple[str, list[Step[Pipeline]]]:
            return await self._stack_on(where, repo, method, cands)

        async def stack(cands: Sequence[Pipeline]) -> tuple[str, list[Step[Pipeline]]]:
            self._refresh(group)
            base, steps = await stack_on(m, cands)
            if not dry_run:
                await self._heads_unchanged([x.candidate for x in steps if x.state == "applied"])
            files.update((x.candidate.key, x.files) for x in steps)
            record["overlaps"] = _overlaps(steps)
            now["base"] = base
            return base, steps

        async def test(sha: str, cands: Sequence[Pipeline]) -> Trial:
            self._refresh(group)
            tid = f"{slugify(repo, max_length=16) or 'repo'}-merge-{os.urandom(3).hex()}"
            timeout = config.pipeline.test_timeout
            argv, stdin = test_command(m.workdir, tid, m.repo_path(repo), sha,
                                       build=r.build_command, test=r.test_command,
                                       timeout=timeout, confine=config.worker.confine)  # fmt: skip
            try:
                result = await transport.run(argv, input=stdin, timeout=timeout + 150, what="test")
            except CommandError as exc:
                raise PipelineError(f"could not test {sha[:12]} on {m.name}: "
                                    f"{failure_reason(exc.stderr) or exc}") from exc  # fmt: skip
            t = parse_test(result.stdout, machine=m.name)
            trial = Trial(t.passed, {"sha": t.sha, "exit_code": t.exit_code, "log": t.log,
                                     "tail": t.tail[-_TAIL:], "machine": m.name,
                                     "prs": [p.pr for p in cands]})  # fmt: skip
            if not trial.passed or not cands:
                return trial
            for rule in rules_for(self.ctx.config, [files.get(p.key, ()) for p in cands]):
                red = await smoke(rule, cands)
                if red is not None:
                    return red
            return trial

        async def smoke(rule: Mapping[str, Any], cands: Sequence[Pipeline]) -> Trial | None:
            """The same stack, made and smoke-tested on a machine with the rule's capability."""
            where = capable(self.ctx.config, rule["capability"], repo)
            assert where is not None  # candidates needing one that is not were set aside
            base, steps = await stack_on(where, cands)
            if base != now.get("base") or any(x.state != "applied" for x in steps):
                raise PipelineError(f"the default branch moved while {where.name} smoke-tested "
                                    f"the batch; the next merge tries again")  # fmt: skip
            record["smoke_runs"] = record.get("smoke_runs", 0) + 1
            return await self._smoke_run(rule, where, repo, str(steps[-1].sha))

        async def land(sha: str, base: str) -> bool:
            if not self._refresh(group):
                raise PipelineError("another coord process took this batch over; nothing landed")
            try:
                result = await transport.run(
                    land_command(m.repo_path(repo), r.default_branch, sha, base),
                    timeout=300, what="land",
                )  # fmt: skip
            except CommandError as exc:
                if exc.returncode == ExitCode.BASE_MOVED:
                    return False
                raise PipelineError(f"could not land {sha[:12]} on {r.default_branch}: "
                                    f"{failure_reason(exc.stderr) or exc}") from exc  # fmt: skip
            parse_land(result.stdout, machine=m.name)
            return True

        if self.ctx.config.smoke_tests.capability_rules and not dry_run:
            _, steps = await stack(group)  # which files each changes: which smoke tests
            group = self._smoke_ready(group, {x.candidate.key: x.files for x in steps}, report)
            record["candidates"] = [p.key for p in group]
            if not group:
                return
        if dry_run:
            base, steps = await stack(group)
            self._smoke_ready(group, {x.candidate.key: x.files for x in steps}, report)
            record.update(base=base, would_land=[s.candidate.key for s in steps
                                                 if s.state == "applied"],
                          conflicts=[{"issue": s.candidate.key, "files": list(s.conflicts)}
                                     for s in steps if s.state == "conflict"])  # fmt: skip
            report.batches.append(record)
            return

        async def landed(cands: list[Pipeline], sha: str) -> None:
            for p in cands:  # recorded at once: nothing that fails later can lose it
                self._landed(p, sha, method)
                await self.engine._fire("on_merge", p, sha=sha)

        async def bounced(p: Pipeline, trial: Trial) -> None:
            tail = str(trial.facts.get("tail") or "")
            self.engine.reopen(
                p, outcome="merge test failed", escalate=True,
                failures=(f"The merge queue stacked PR #{p.pr} on the default branch and its "
                          f"tests failed at {str(trial.facts.get('sha', ''))[:12]}:\n{tail}"),
            )  # fmt: skip

        report.batches.append(record)
        result = await run_batch(group, stack=stack, test=test, land=land, landed=landed,
                                 bounced=bounced, green=self._green)  # fmt: skip
        await self._settle(result, record, stack)

    async def _stack_on(
        self, where: MachineConfig, repo: str, method: str, cands: Sequence[Pipeline]
    ) -> tuple[str, list[Step[Pipeline]]]:
        """Stack cands on repo's default branch on machine `where`: one remote command."""
        by_branch = {p.branch: p for p in cands}
        sid = f"{slugify(repo, max_length=16) or 'repo'}-stack-{os.urandom(3).hex()}"
        branches = [(p.branch, _message(p, method)) for p in cands]
        argv, stdin = stack_command(where.workdir, sid, where.repo_path(repo),
                                    self.ctx.config.repo(repo).default_branch, method,
                                    branches)  # fmt: skip
        result = await self.ctx.machines.get(where.name).run(
            argv, input=stdin, timeout=600, what="stack"
        )
        stacked = parse_stack(result.stdout, machine=where.name)
        steps = [Step(by_branch[s.branch], s.sha, s.state, tuple(s.conflicts), tuple(s.files))
                 for s in stacked.steps if s.branch in by_branch]  # fmt: skip
        return stacked.base, steps

    async def _smoke_run(
        self, rule: Mapping[str, Any], where: MachineConfig, repo: str, sha: str
    ) -> Trial | None:
        """Run rule's smoke test of commit sha on `where`; None if green, the red trial else."""
        smoke = self.ctx.config.smoke_tests
        command = rule.get("command") or smoke.default_command
        limit = float(rule.get("timeout_seconds") or smoke.timeout)
        tid = f"{slugify(repo, max_length=16) or 'repo'}-smoke-{os.urandom(3).hex()}"
        argv, stdin = test_command(where.workdir, tid, where.repo_path(repo), sha, build=None,
                                   test=command, timeout=limit,
                                   confine=self.ctx.config.worker.confine)  # fmt: skip
        result = await self.ctx.machines.get(where.name).run(
            argv, input=stdin, timeout=limit + 150, what="smoke test"
        )
        t = parse_test(result.stdout, machine=where.name)
        if t.passed:
            return None
        return Trial(False, {"sha": t.sha, "exit_code": t.exit_code, "log": t.log,
                             "tail": t.tail[-_TAIL:], "machine": where.name,
                             "smoke": rule["capability"]})  # fmt: skip

    async def _settle(
        self,
        result: BatchResult[Pipeline],
        record: dict[str, Any],
        stack: Callable[[Sequence[Pipeline]], Awaitable[tuple[str, list[Step[Pipeline]]]]],
    ) -> None:
        """Report the batch, and send its conflicts and missing branches back to their issues.

        A PR that conflicted on top of others in the stack is stacked alone on the base: if it
        applies there, the conflict is with a PR of this batch, not with the default branch,
        and it waits for the next merge as it is.
        """
        record.update(test_runs=result.test_runs, restacks=result.restacks,
                      landed=[{"issue": p.key, "pr": p.pr, "sha": sha}
                              for p, sha in result.landed],
                      bounced=[p.key for p, _ in result.bounced],
                      conflicts=[{"issue": s.candidate.key, "files": list(s.conflicts)}
                                 for s in result.conflicts],
                      missing=[p.key for p in result.missing], deferred=[])  # fmt: skip
        if result.base_red is not None:
            tail = str(result.base_red.facts.get("tail") or "")[-500:]
            record["base_red"] = tail
            self.ctx.notify(f"merge {record['repo']}: the default branch itself fails its "
                            f"tests; nothing was bounced:\n{tail}")  # fmt: skip
        for s in result.conflicts:
            alone = (await stack([s.candidate]))[1] if len(record["candidates"]) > 1 else []
            if alone and alone[0].state == "applied":
                record["deferred"].append(s.candidate.key)
                continue
            self.engine.reopen(
                s.candidate, outcome="conflict", escalate=False, brief="conflict",
                conflicts=s.conflicts,
                failures=f"It no longer merges into the default branch: {', '.join(s.conflicts)}",
            )  # fmt: skip
        for p in result.missing:
            gone = f"The branch {p.branch} is gone from the remote."
            self.engine.reopen(p, outcome="branch gone", escalate=False, failures=gone)

    def _smoke_ready(
        self, group: list[Pipeline], files: Mapping[str, Sequence[str]], report: MergeReport
    ) -> list[Pipeline]:
        """Set aside (waiting, with why) the candidates whose smoke test has nowhere to run."""
        keep = []
        for p in group:
            why = nowhere(self.ctx.config, p.repo, files.get(p.key, ()))
            if why:
                report.waiting.append({"issue": p.key, "why": why})
            else:
                keep.append(p)
        return keep

    def _refresh(self, group: Sequence[Pipeline]) -> bool:
        """Renew this process's claims on the batch; False if any was taken over."""
        now = time.time()
        ok = True
        for p in group:
            if p.acting is None:
                continue

            def renew(q: Pipeline) -> None:
                assert q.acting is not None
                q.acting = {**q.acting, "at": now}

            if self.engine.while_mine(p, renew):
                p.acting = {**p.acting, "at": now}  # what this process holds now
            elif (self.ctx.board.pipeline(p.repo, p.issue) or p).stage == "ready-to-merge":
                ok = False
        return ok

    def _landed(self, p: Pipeline, sha: str, method: str) -> None:
        """Record a landed candidate: merged on the board; PR, issue and label on the forge."""
        from ..pipeline.actions import _entry
        from ..pipeline.state import MERGED

        def apply(q: Pipeline) -> None:
            q.merged_sha, q.current, q.acting = sha, None, None
            q.note_verdict({"stage": "merge", "outcome": "landed", "sha": sha,
                            "method": method})  # fmt: skip
            q.note_move(MERGED, "landed")
            body = (f"**coord** merged PR #{q.pr} as `{sha[:12]}` on the default branch, "
                    f"tested there first. The issue cost ${q.cost_usd:.2f} in all "
                    f"({q.round} fix rounds).")  # fmt: skip
            q.outbox = [*q.outbox, _entry("landed", q.pr, "", sha=sha),
                        _entry("issue", q.issue, body),
                        _entry("label", q.issue, "", label="status:done"),
                        _entry("close", q.issue, "")]  # fmt: skip

        if not self.engine.while_mine(p, apply):
            self.ctx.notify(f"merge: {p.key} landed as {sha[:12]} but another process holds it; "
                            f"`coord pipeline {p.key}` to check")  # fmt: skip


class _Moved(PipelineError):
    """PRs of a batch changed after their review, while it was being stacked."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(
            f"changed after its review while the batch was stacked: tested again first "
            f"({', '.join(keys)}); nothing of this batch landed"
        )
        self.keys = keys


def _key(x: str, repo: str | None) -> str:
    if "#" in x:
        return x
    if repo is None:
        raise UsageError(f"--order {x}: say which repo (repo#{x}), or give --repo")
    return f"{repo}#{x}"


def _ready_at(p: Pipeline) -> float:
    for m in reversed(p.moves):
        if m.get("to") == "ready-to-merge":
            return float(m.get("at") or 0.0)
    return p.updated_at or time.time()


def _message(p: Pipeline, method: str) -> str:
    # A title is the issue's, untrusted: its "Fixes #99" must close nothing when it lands.
    title = " ".join(p.title.replace("\0", "").split()).replace("#", "#\u200b")[:200]
    if method == "squash":
        return f"{title} (#{p.pr})\n\nCloses #{p.issue}\n"
    return f"Merge PR #{p.pr}: {title}\n\nLanded by coord's merge queue after testing.\n"


def _overlaps(steps: Sequence[Step[Pipeline]]) -> list[dict[str, Any]]:
    """Pairs of candidates in one batch that change the same files (flagged, not refused)."""
    out = []
    for i, a in enumerate(steps):
        for b in steps[i + 1 :]:
            both = sorted(set(a.files) & set(b.files))
            if both:
                out.append({"a": a.candidate.key, "b": b.candidate.key, "files": both})
    return out
