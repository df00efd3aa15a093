"""What each kind of stage does: start a worker, test the branch head, push and open the
PR; and the pipeline's own comments, posted from its outbox.

The engine decides and records; these do the I/O.  Text a worker wrote (its summary, a
reviewer's findings) is quoted through `markers.defang`: it carries no marker and pings
nobody.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

from ..assignment import Assignment
from ..briefings import DEFAULT_TRUSTED_AUTHORS, issue_context, render_briefing
from ..confine import editing
from ..errors import (
    AssignmentNotFound,
    CommandError,
    CoordError,
    ForgeError,
    IssueClosedError,
    PipelineError,
)
from ..markers import defang
from ..runtime.answers import Tested, failure_reason, parse_push, parse_test
from ..runtime.builders import push_command, test_command
from ..runtime.command import slugify
from ..runtime.protocol import DispatchMode
from ..trail import STATUS_LABELS, set_status_label
from .state import NEEDS_HUMAN, READY, Pipeline

if TYPE_CHECKING:
    from ..context import Context
    from ..dispatch import Dispatcher
    from ..forge.base import Forge, Issue, ReviewEvent
    from ..playbook import Playbook, Stage
    from .ledger import Ledger
    from .report import PassReport

__all__ = ["Actions", "stage_label"]

# A worker stage whose tools include none of these reads only: it gets a worktree of its own,
# detached at the branch's head (a reviewer); one that edits works in the author's.
_TAIL_KEPT = 3000  # of a failed test's output, on the board and in the fix briefing
# An outbox entry claimed by a process on another host is taken over after this long (a
# forge's rate limit may hold a live poster for up to an hour); on this host, once its
# process is gone.
_CLAIM_STALE = 2 * 3600.0


def stage_label(book: Playbook, stage: str) -> str:
    """The status label an issue carries while its pipeline is at `stage`."""
    if stage == READY:
        return STATUS_LABELS["ready_to_merge"]
    if stage == NEEDS_HUMAN:
        return STATUS_LABELS["needs_human"]
    s = book.stages.get(stage)
    if s is not None and s.verdict:
        return STATUS_LABELS["review"]
    return STATUS_LABELS["in_progress"]


class Actions:
    """The I/O of the stages, for the engine."""

    def __init__(self, ctx: Context, dispatcher: Dispatcher, ledger: Ledger) -> None:
        self.ctx = ctx
        self.dispatcher = dispatcher
        self.ledger = ledger
        self._reviewers: dict[str, Forge | None] = {}

    # ------------------------------------------------------------ workers
    async def dispatch(self, p: Pipeline, stage: Stage, book: Playbook) -> Assignment:
        """Start the worker of `stage` for p (which this process has claimed)."""
        config = self.ctx.config
        forge = self.ctx.forges.get(p.repo)
        info = await forge.get_issue(p.issue)
        if info.state != "open":
            raise IssueClosedError(
                f"issue #{p.issue} of {p.repo} is {info.state}: no {stage.name} worker starts "
                f"for it (reopen it, then `coord bounce {p.repo}#{p.issue}` to go on)"
            )
        model = self._model(p, stage.model, info)
        tools = ",".join(stage.tools)
        first = not p.branch
        attempt = len(p.ids(stage.name)) + 1

        def planned(a: Assignment) -> None:
            def record(q: Pipeline | None, txn: Any) -> None:
                assert q is not None
                q.current = a.id
                ids = [*q.assignments.get(stage.name, []), a.id]
                q.assignments = {**q.assignments, stage.name: ids}
                if first:
                    q.machine, q.branch, q.worktree = a.machine, a.branch, a.worktree
                    q.tier = a.tier or q.tier
                q.brief, q.conflicts = None, []  # a one-off briefing is used once

            self.ctx.board.pipeline_change(p.repo, p.issue, record)

        if first:  # the first stage on a new branch: as `coord assign` would
            a, text, launch = self.dispatcher.plan(
                p.machine or next(iter(config.machines)), p.repo, p.issue, model=model,
                title=p.title or None, attempt=attempt, issue_info=info,
            )  # fmt: skip
            a.stage = stage.name
            if stage.briefing and stage.briefing != "work":
                text = self._briefing(p, stage, a.branch, a.model, info, a.machine)
            launch = self.dispatcher.launch_spec(
                a.machine, a.worktree, a.model, tools=tools, repo=a.repo, fresh=True
            )
            planned(a)
            return await self.dispatcher._start(a, text, launch, issue=info, force=False)
        reads_only = stage.verdict or not any(editing(t) for t in stage.tools)
        text = self._briefing(p, stage, p.branch, config.models.resolve(model)[1], info, p.machine)
        return await self.dispatcher.start_stage(
            stage=stage.name, machine=p.machine, repo=p.repo, issue=p.issue,
            title=p.title or info.title, branch=p.branch, model=model, tools=tools,
            briefing=text, mode=DispatchMode.REVIEW if reads_only else DispatchMode.CONTINUE,
            worktree=None if reads_only else p.worktree, attempt=attempt, issue_info=info,
            planned=planned,
        )  # fmt: skip

    def _model(self, p: Pipeline, policy: str, info: Issue) -> str:
        models = self.ctx.config.models
        if policy == "label":
            return next((models.labels[x] for x in info.labels if x in models.labels),
                        models.default)  # fmt: skip
        if policy in ("escalate", "same"):
            return p.tier or models.default
        if policy == "reviewer":
            return self.ledger.reviewer_tier(p.tier)
        return policy

    def _briefing(
        self, p: Pipeline, stage: Stage, branch: str, model: str, info: Issue, machine: str
    ) -> str:
        config = self.ctx.config
        raw = config.extra.get("briefings")
        trusted: tuple[str, ...] = DEFAULT_TRUSTED_AUTHORS
        if isinstance(raw, dict) and raw.get("trusted_authors") is not None:
            trusted = tuple(str(x) for x in raw["trusted_authors"])
        kind = self.ctx.forges.get(p.repo).kind
        repo = config.repo(p.repo)
        pr = None
        if p.pr is not None:
            pr = {"number": p.pr, "url": p.pr_url, "head": p.branch, "base": repo.default_branch}
        context = {
            "issue": issue_context(info, forge_kind=kind, trusted_authors=trusted),
            "repo": repo,
            "branch": branch,
            "model": model,
            "machine": config.machine(machine),
            "stage": stage.name,
            "round": p.round,
            "pr": pr,
            "base_ref": p.base_sha or f"origin/{repo.default_branch}",
            "review": p.findings,
            "failures": p.failures,
            "guidance": p.guidance,
            "attempt": len(p.ids(stage.name)) + 1,
            "base": repo.default_branch,
            "conflicts": list(p.conflicts),
        }
        return render_briefing(p.brief or stage.briefing or stage.name, context,
                               user_dir=self.dispatcher._briefing_dir())  # fmt: skip

    # ------------------------------------------------------------ the test stage
    async def run_test(self, p: Pipeline, *, ref: str | None = None) -> Tested:
        """Build and test p's branch head (or `ref`) on its machine: one remote command."""
        config = self.ctx.config
        m, r = config.machine(p.machine), config.repo(p.repo)
        test_id = f"{slugify(p.repo, max_length=16) or 'repo'}-{p.issue}-t{os.urandom(3).hex()}"
        timeout = config.pipeline.test_timeout
        argv, stdin = test_command(m.workdir, test_id, m.repo_path(r.name), ref or p.branch,
                                   build=r.build_command, test=r.test_command,
                                   timeout=timeout, confine=config.worker.confine)  # fmt: skip
        try:
            result = await self.ctx.machines.get(m.name).run(
                argv, input=stdin, timeout=timeout + 120, what="test"
            )
        except CommandError as exc:
            raise PipelineError(
                f"could not test {ref or p.branch} of {p.key} on {m.name}: "
                f"{failure_reason(exc.stderr) or exc}"
            ) from exc
        return parse_test(result.stdout, machine=m.name)

    async def test(self, p: Pipeline, report: PassReport) -> tuple[str, dict[str, Any]]:
        """The test stage: run it, and return (passed | failed, the verdict to record)."""
        tested = await self.run_test(p)
        if p.base_sha and tested.sha == p.base_sha:
            # Never a test (nor, after it, a review) of a branch with nothing on it.
            tested = dataclasses.replace(tested, passed=False, tail=(
                f"The branch {p.branch} has no commits beyond its base {p.base_sha[:12]}: "
                f"nothing was done, so there is nothing to test."))  # fmt: skip
        return ("passed" if tested.passed else "failed"), self.record_test(p, tested)

    def record_test(self, p: Pipeline, tested: Tested) -> dict[str, Any]:
        """Note a test's facts on p's pipeline (the sha, the tail for a fix) and describe it."""
        tail = tested.tail[-_TAIL_KEPT:]

        def apply(q: Pipeline | None, txn: Any) -> None:
            assert q is not None
            q.head_sha = tested.sha
            if tested.passed:
                q.tested_sha, q.failures = tested.sha, ""
            else:
                q.failures = tail

        self.ctx.board.pipeline_change(p.repo, p.issue, apply)
        return {"sha": tested.sha, "exit_code": tested.exit_code, "phase": tested.phase,
                "timed_out": tested.timed_out, "seconds": tested.seconds, "log": tested.log,
                "machine": p.machine, "tail": tail[-800:], "by": "coord test"}  # fmt: skip

    # ------------------------------------------------------------ the pr stage
    async def pull_request(self, p: Pipeline) -> tuple[str, dict[str, Any]]:
        """Push the branch and open its PR (or update the open one); return (opened, facts)."""
        config = self.ctx.config
        m, r = config.machine(p.machine), config.repo(p.repo)
        forge = self.ctx.forges.get(p.repo)
        state = await forge.issue_state(p.issue)
        if state != "open":
            raise IssueClosedError(
                f"issue #{p.issue} of {p.repo} is {state}: no pull request is opened or "
                f"updated for it (reopen it, then `coord bounce {p.repo}#{p.issue}` to go on)"
            )
        try:
            result = await self.ctx.machines.get(m.name).run(
                push_command(m.repo_path(r.name), p.branch), timeout=300, what="push"
            )
        except CommandError as exc:
            raise PipelineError(
                f"could not push {p.branch} of {p.key} from {m.name}: "
                f"{failure_reason(exc.stderr) or exc}"
            ) from exc
        pushed = parse_push(result.stdout, machine=m.name)
        number, url = p.pr, p.pr_url
        if number is not None:
            pr = await forge.get_pr(number)
            if pr.state != "open":
                number = None
        if number is None:
            open_ = await forge.list_prs(state="open", head=p.branch)
            if open_:
                number, url = open_[0].number, open_[0].url
        if number is None:
            pr = await forge.open_pr(head=p.branch, base=r.default_branch,
                                     title=p.title or f"Issue #{p.issue}",
                                     body=self._pr_body(p, pushed.sha))  # fmt: skip
            number, url = pr.number, pr.url
            opened = True
        else:
            opened = False

        def apply(q: Pipeline | None, txn: Any) -> None:
            assert q is not None
            q.pr, q.pr_url, q.head_sha = number, url, pushed.sha
            if not opened:
                tested = f"; tests passed on `{q.tested_sha[:12]}`" if q.tested_sha else ""
                q.outbox = [*q.outbox, _entry("pr", number, (
                    f"**coord** pushed round {q.round} to `{q.branch}`: "
                    f"`{pushed.sha[:12]}`{tested}."))]  # fmt: skip

        self.ctx.board.pipeline_change(p.repo, p.issue, apply)
        return "opened", {"pr": number, "url": url, "sha": pushed.sha, "new": opened}

    def _pr_body(self, p: Pipeline, sha: str) -> str:
        rows = []
        for aid in p.ids(self_stage(p)):
            try:
                rows.append(self.ctx.board.assignment(aid))
            except AssignmentNotFound:
                continue
        work = rows[-1] if rows else None
        summary = defang((work.result or work.last_status or "") if work else "") or p.title
        tests = f"passed on `{sha[:12]}`" if p.tested_sha == sha else ""
        repo = self.ctx.config.repo(p.repo)
        return render_briefing("pr", {
            "issue": {"number": p.issue, "title": p.title},
            "repo": repo, "summary": summary, "tests": tests,
            "assignment": work or {"id": "-", "machine": p.machine, "model": p.tier},
        }, user_dir=self.dispatcher._briefing_dir())  # fmt: skip

    # ------------------------------------------------------------ the outbox
    def queue_review(self, q: Pipeline, a: Assignment, outcome: str, findings: str) -> None:
        """Queue a reviewer's verdict for the PR (in the move's own transaction)."""
        said = "approve" if outcome == "approve" else "request changes"
        body = (f"**coord review** by `{a.id}` (`{a.model}`), round {q.round}: **{said}**."
                + (f"\n\n{_quoted(findings)}" if findings else ""))  # fmt: skip
        q.outbox = [*q.outbox, _entry("review", q.pr, body, outcome=outcome)]

    def queue_stage_comment(self, q: Pipeline, target: str, outcome: str, label: str) -> None:
        """Queue what the issue should say and wear (`label`) now that q moves to `target`."""
        if target == READY:
            sha = f" at `{q.tested_sha[:12]}`" if q.tested_sha else ""
            body = (
                f"**coord**: PR #{q.pr} passed its tests{sha} and its review approved it "
                f"(round {q.round}, ${q.cost_usd:.2f} spent). It is ready to merge."
            )
        elif target == NEEDS_HUMAN:
            body = f"**coord** needs a person on this issue: {defang(q.reason or outcome)}"
        else:
            body = ""
        # The label is an entry of its own: a label that cannot be set never reposts the comment.
        entries = [_entry("issue", q.issue, body)] if body else []
        q.outbox = [*q.outbox, *entries, _entry("label", q.issue, "", label=label)]

    async def post_outbox(self, report: PassReport | None) -> None:
        """Post every pipeline's queued comments, reviews and labels (each claimed first)."""
        for p in self.ctx.board.pipelines():
            if p.outbox:
                await self._post(p, report)

    async def _post(self, p: Pipeline, report: PassReport | None) -> None:
        me = {"host": socket.gethostname(), "pid": os.getpid(), "at": time.time()}

        def claim(q: Pipeline | None, txn: Any) -> list[dict[str, Any]]:
            assert q is not None
            mine, out = [], []
            for e in q.outbox:
                if _claimable(e.get("claimed")):
                    e = {**e, "claimed": me}
                    mine.append(e)
                out.append(e)
            q.outbox = out
            return mine

        mine, _ = self.ctx.board.pipeline_change(p.repo, p.issue, claim)
        done: set[str] = set()
        failed: set[str] = set()
        for e in mine:
            try:
                await self._send(p, e)
                done.add(e["id"])
            except CoordError as exc:
                failed.add(e["id"])
                if report is not None:
                    report.errors.append(f"{p.key}: {e['kind']} not posted: {exc}")
                self.ctx.notify(f"{p.key}: the {e['kind']} comment was not posted: {exc}")

        def settle(q: Pipeline | None, txn: Any) -> None:
            assert q is not None
            q.outbox = [{**e, "claimed": None} if e["id"] in failed else e
                        for e in q.outbox if e["id"] not in done]  # fmt: skip

        self.ctx.board.pipeline_change(p.repo, p.issue, settle)

    async def _send(self, p: Pipeline, e: dict[str, Any]) -> None:
        forge = self.ctx.forges.get(p.repo)
        kind, number, body = e["kind"], e.get("number"), str(e.get("body") or "")
        if kind == "review" and number is not None:
            await self._review(p, int(number), str(e.get("outcome")), body)
        elif kind == "pr" and number is not None and body:
            await forge.comment(int(number), body)
        elif kind == "issue" and body:
            await forge.comment(p.issue, body)
        elif kind == "label" and e.get("label"):
            await set_status_label(forge, p.issue, str(e["label"]))
        elif kind == "landed" and number is not None:
            await forge.record_landed(int(number), str(e.get("sha") or ""))
        elif kind == "close":
            await forge.set_state(p.issue, "closed")
        elif body:  # a review with no PR to put it on: the issue gets it
            await forge.comment(p.issue, body)

    async def _review(self, p: Pipeline, number: int, outcome: str, body: str) -> None:
        """Post a verdict on the PR: a real review from the second identity if there is one,
        else a COMMENT review that says it (GitHub refuses both from the PR's author)."""
        if p.repo not in self._reviewers:
            from ..forge import open_review_forge

            self._reviewers[p.repo] = open_review_forge(
                self.ctx.config, p.repo, environ=self.ctx.environ, on_wait=self.ctx.notify
            )
        second = self._reviewers[p.repo]
        if second is not None:
            event: ReviewEvent = "APPROVE" if outcome == "approve" else "REQUEST_CHANGES"
            try:
                await second.review(number, event, body)
                return
            except ForgeError as exc:
                self.ctx.notify(f"{p.key}: the {event} review was refused ({exc}); "
                                f"posting it as a comment review")  # fmt: skip
        await self.ctx.forges.get(p.repo).review(number, "COMMENT", body)


def self_stage(p: Pipeline) -> str:
    """The stage whose newest worker wrote the change (the last fix, else the work)."""
    for name in ("fix", "work"):
        if p.assignments.get(name):
            return name
    return next(iter(p.assignments), "work")


def _quoted(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in defang(text.strip()).splitlines())


def _claimable(claim: Any) -> bool:
    """Whether an outbox entry is free to post: unclaimed, or its claimant is gone."""
    if not isinstance(claim, dict):
        return not claim  # None; an older float claim is taken as stale only when falsy
    age = time.time() - float(claim.get("at") or 0.0)
    if claim.get("host") == socket.gethostname() and isinstance(claim.get("pid"), int):
        try:
            os.kill(claim["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return claim["pid"] != os.getpid() and age > _CLAIM_STALE
    return age > _CLAIM_STALE


def _entry(kind: str, number: int | None, body: str, **extra: Any) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex[:12], "kind": kind, "number": number, "body": body,
            "claimed": None, **extra}  # fmt: skip
