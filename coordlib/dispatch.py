"""Starting workers: planning an assignment, claiming its issue, one remote command to
dispatch it, and the later starts of the same issue (retry, continue a session).

`Coordinator` owns a `Dispatcher` and exposes its public methods; this module is the
machinery behind ``assign``, ``retry``, ``resume_stuck`` and ``dispatch_due``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .assignment import Assignment, Status, check_session_id
from .briefings import (
    DEFAULT_TRUSTED_AUTHORS,
    check_briefing,
    files_in_scope,
    issue_context,
    render_briefing,
)
from .config import is_secret_name, resolve_env
from .errors import (
    ClaimError,
    CommandError,
    CoordError,
    DispatchError,
    ForgeError,
    MachineError,
    NotFoundError,
    UnreachableError,
    UsageError,
)
from .runtime.command import (
    LaunchSpec,
    branch_name,
    encode_env,
    remote_argv,
    script_hash,
    slugify,
)

if TYPE_CHECKING:
    from .coordinator import Coordinator
    from .forge.base import Branch, Forge, Issue

__all__ = ["RATE_LIMIT_GUIDANCE", "Dispatcher"]

_DISPATCH_TIMEOUT = 180.0
# A burst of dispatches to one repo shares one listing of its remote's issue branches.
_BRANCH_CACHE_SECONDS = 3.0
RATE_LIMIT_GUIDANCE = (
    "Your previous run was interrupted by an API rate limit. Continue the task from where "
    "you left off; check `git status` and `git log` to see what is already done."
)


class Dispatcher:
    """Everything that starts a worker, for one `Coordinator`."""

    def __init__(self, coord: Coordinator) -> None:
        self.c = coord
        self._branch_cache: dict[str, tuple[float, list[Branch]]] = {}
        self._branch_locks: dict[str, asyncio.Lock] = {}
        self.sending: set[str] = set()  # ids on the board whose dispatch is on its way

    def _launch_spec(
        self, machine: str, worktree: str, model_id: str, *, resume: str | None = None
    ) -> LaunchSpec:
        m = self.c.config.machine(machine)
        w = self.c.config.worker
        args = ["--output-format", "stream-json", "--verbose", "--model", model_id]
        args += ["--allowedTools", w.allowed_tools]
        if w.max_turns:
            args += ["--max-turns", str(w.max_turns)]
        if resume:
            # One word: a session id can never be read as an option of its own.
            args.append(f"--resume={check_session_id(resume)}")
        return LaunchSpec(
            worktree=worktree,
            command=m.claude_argv(),
            args=[*args, *w.extra_args],
            stall_ms=int(w.stall_timeout * 1000),
            max_runtime_ms=int(w.max_runtime * 1000),
            grace_ms=int(w.result_grace * 1000),
            poll_seconds=w.poll_interval,
        )

    def _new_id(self, repo: str, issue: int) -> str:
        return f"{slugify(repo, max_length=16) or 'repo'}-{issue}-{os.urandom(2).hex()}"

    def plan_assignment(
        self,
        machine: str,
        repo: str,
        issue: int,
        *,
        model: str | None = None,
        briefing: str | None = None,
        title: str | None = None,
        attempt: int = 1,
        issue_info: Issue | None = None,
        previous: Assignment | None = None,
    ) -> tuple[Assignment, str, LaunchSpec]:
        """See `Coordinator.plan_assignment`."""
        m = self.c.config.machine(machine)
        r = self.c.config.repo(repo)
        if m.repos and r.name not in m.repos:
            raise DispatchError(
                f"does not work on repo {r.name} (its repos: {', '.join(m.repos)}); "
                f"add it to machines.{m.name}.repos in {self.c.config.path}",
                machine=m.name,
            )
        if issue < 0:
            raise UsageError(f"issue number must be positive, got {issue}")
        if model is None and issue_info is not None:
            # A label can pick the tier (models.labels: {chore: haiku}).
            model = next((self.c.config.models.labels[x] for x in issue_info.labels
                          if x in self.c.config.models.labels), None)  # fmt: skip
        tier, model_id = self.c.config.models.resolve(model or self.c.config.models.default)
        if not (title or "").strip() and issue_info is not None:
            title = issue_info.title
        title = (title or "").strip() or f"issue {issue}"
        branch = branch_name(issue, title)
        if attempt > 1:  # a retry starts afresh beside the earlier attempt's branch
            branch = f"{branch}-r{attempt}"
        aid = self._new_id(r.name, issue)
        worktree = f"{m.root}/worktrees/{r.name}/{aid}"
        a = Assignment(
            id=aid,
            machine=m.name,
            repo=r.name,
            issue=issue,
            branch=branch,
            model=model_id,
            tier=tier,
            title=title,
            worktree=worktree,
            run_dir=f"{m.root}/runs/{aid}",
            created_at=time.time(),
            attempt=attempt,
        )
        scope = files_in_scope(issue_info.body) if issue_info is not None else []
        if scope:
            a.extra["files_in_scope"] = scope
        if briefing is None:
            info = self._issue_context(r.name, issue_info) if issue_info is not None else {}
            briefing = render_briefing(
                "work",
                {
                    "issue": {**info, "number": issue, "title": title},
                    "repo": r,
                    "branch": branch,
                    "machine": m,
                    "model": model_id,
                    "attempt": attempt,
                    "previous": previous,
                    "files_in_scope": scope,
                    "do_not_touch": self._in_flight_files(r.name, issue),
                },
                user_dir=self._briefing_dir(),
            )
        check_briefing(briefing)
        launch = self._launch_spec(m.name, worktree, model_id)
        a.extra["argv"] = _worker_argv(launch)
        return a, briefing, launch

    def _issue_context(self, repo: str, issue: Issue) -> dict[str, Any]:
        """The issue as the work briefing quotes it (see `briefings.issue_context`)."""
        raw = self.c.config.extra.get("briefings")
        trusted: Sequence[str] = DEFAULT_TRUSTED_AUTHORS
        if isinstance(raw, Mapping) and raw.get("trusted_authors") is not None:
            trusted = tuple(str(x) for x in raw["trusted_authors"])
        return issue_context(issue, forge_kind=self.c.forge(repo).kind, trusted_authors=trusted)

    def _in_flight_files(self, repo: str, issue: int) -> list[dict[str, str]]:
        """The files other live workers on repo are changing (or are scoped to)."""
        seen: dict[str, dict[str, str]] = {}
        for x in self.c.assignments():
            if x.repo != repo or x.issue == issue or x.is_terminal:
                continue
            for path in [*x.extra.get("files_touched", []), *x.extra.get("files_in_scope", [])]:
                seen.setdefault(path, {"path": path, "branch": x.branch, "assignment": x.id})
        return [seen[k] for k in sorted(seen)]

    async def _issue_for(
        self, repo: str, issue: int, *, title: str | None, briefing: str | None, force: bool
    ) -> Issue | None:
        """Read the issue from repo's forge and check nobody's unmerged branch claims it.

        An issue the forge does not have is fine when the caller gave a title (the
        work is then briefed from the title alone and leaves no trail).
        """
        self.c.config.repo(repo)  # unknown repo -> ConfigError with a suggestion
        titled = bool((title or "").strip()) or briefing is not None
        info: Issue | None = None
        try:
            forge = self.c.forge(repo)
            info = await forge.get_issue(issue)
        except NotFoundError:
            if not titled:
                raise NotFoundError(
                    f"issue #{issue} is not on {repo}'s {forge.kind} forge; create it with "
                    f"`coord issue new {repo} --title ...`, or give --title to work without it"
                ) from None
        except ForgeError as exc:
            if not titled:
                raise
            # The caller said what the work is: go on without the forge, but say so.
            self.c.notify(f"{repo}#{issue}: working without the forge (no trail, no branch "
                        f"claim check): {exc}")  # fmt: skip
            return None
        if not force:
            # The board first: it is the cheaper check, and the likelier reason.
            _refuse_live_clash([a for a in self.c.assignments() if not a.is_terminal], repo, issue)
            await self._check_branch_claims(forge, repo, issue)
        return info

    async def _issue_branches(self, forge: Forge, repo: str) -> list[Branch]:
        """The remote's ``issue-*`` branches, listed once for concurrent dispatches."""
        lock = self._branch_locks.setdefault(repo, asyncio.Lock())
        async with lock:
            cached = self._branch_cache.get(repo)
            if cached is None or time.monotonic() - cached[0] > _BRANCH_CACHE_SECONDS:
                cached = (time.monotonic(), await forge.branches("issue-"))
                self._branch_cache[repo] = cached
            return cached[1]

    async def _check_branch_claims(self, forge: Forge, repo: str, issue: int) -> None:
        prefix = f"issue-{issue}-"
        branches = [b for b in await self._issue_branches(forge, repo) if b.name.startswith(prefix)]
        if not branches:
            return
        mine = {a.branch for a in self.c.assignments(history=True) if a.repo == repo}
        unmerged = []
        for b in branches:
            prs = await forge.list_prs(state="all", head=b.name)
            if any(p.merged for p in prs):
                continue
            unmerged.append(b.name + (" (an earlier coord assignment)" if b.name in mine else ""))
        if unmerged:
            raise ClaimError(
                f"issue {repo}#{issue} has unmerged remote branch "
                f"{', '.join(unmerged)}: someone is (or was) working on it; "
                f"merge or delete the branch, `coord retry` the earlier assignment, "
                f"or pass --force"
            )

    def _briefing_dir(self) -> Path | None:
        raw = self.c.config.extra.get("briefings")
        if isinstance(raw, Mapping) and raw.get("dir"):
            base = self.c.config.path.parent if self.c.config.path else Path.cwd()
            return (base / os.path.expanduser(str(raw["dir"]))).resolve()
        return None

    async def assign(
        self,
        machine: str,
        repo: str,
        issue: int,
        *,
        model: str | None = None,
        briefing: str | None = None,
        title: str | None = None,
        dry_run: bool = False,
        force: bool = False,
    ) -> Assignment:
        """See `Coordinator.assign`."""
        info = await self._issue_for(repo, issue, title=title, briefing=briefing, force=force)
        a, text, launch = self.plan_assignment(
            machine, repo, issue, model=model, briefing=briefing, title=title, issue_info=info
        )
        if dry_run:
            a.extra["briefing"] = text
            return a
        a.extra["trail"] = {} if info is not None else {"off": "the issue is not on the forge"}
        self._claim(a, force=force)
        a = await self._dispatch(a, text, launch, mode="new")
        await self.c.trail.post_dispatch(a, text, info.labels if info is not None else None)
        return a

    def _claim(self, a: Assignment, *, force: bool = False, replaces: str | None = None) -> None:
        """Put a on the board as pending, unless its issue is taken or capacity is full.

        `replaces` names the assignment a continues or retries: it may still be live
        (a queued one), and is not counted as a clash.
        """
        m = self.c.config.machine(a.machine)
        a.extra["coordinator"] = {"host": self.c._host, "pid": os.getpid()}
        with self.c.board.transaction() as txn:
            rows = [Assignment.from_dict(x, where=self.c.board.path) for x in txn.all()]
            live = [x for x in rows if not x.is_terminal and x.id != replaces]
            if not force:
                _refuse_live_clash(live, a.repo, a.issue)
            working = [x for x in live if x.status != Status.QUEUED]
            cap = self.c.config.concurrency.max_workers
            if len(working) >= cap and not force:
                raise DispatchError(
                    f"{len(working)} workers are live, the limit of concurrency.max_workers "
                    f"({cap}); wait for one to end or raise the limit in {self.c.config.path}"
                )
            busy = sum(1 for x in working if x.machine == m.name)
            if busy >= m.max_workers and not force:
                raise DispatchError(
                    f"is running {busy} of its {m.max_workers} workers; wait, pick another "
                    f"machine, or raise machines.{m.name}.max_workers",
                    machine=m.name,
                )
            if replaces is not None and replaces in txn:
                prev = txn.get(replaces)
                taken = prev.get("extra", {}).get("continued_by")
                if taken:
                    raise ClaimError(
                        f"assignment {replaces} was already continued by {taken}; "
                        f"one session is never driven by two workers"
                    )
                txn.update(replaces, {"extra": {**prev.get("extra", {}), "continued_by": a.id}})
            txn.insert(a.to_dict())
        # Until its dispatch returns, a status in this process (another task's `wait`) must
        # not take the row's missing run for a lost one.
        self.sending.add(a.id)

    async def _dispatch(
        self, a: Assignment, text: str, launch: LaunchSpec, *, mode: str = "new"
    ) -> Assignment:
        """Send one pending assignment to its machine (one remote command) and record it."""
        try:
            return await self._send(a, text, launch, mode=mode)
        finally:
            self.sending.discard(a.id)

    async def _send(self, a: Assignment, text: str, launch: LaunchSpec, *, mode: str) -> Assignment:
        m = self.c.config.machine(a.machine)
        r = self.c.config.repo(a.repo)
        try:
            env = resolve_env(m.env, self.c._environ, machine=m.name)
        except CoordError as exc:
            self._fail_dispatch(a, str(exc))
            raise
        spec = {
            "id": a.id,
            "machine": a.machine,
            "repo": a.repo,
            "issue": a.issue,
            "title": a.title,
            "branch": a.branch,
            "base": r.default_branch,
            "model": a.model,
            "mode": mode,
            "argv": a.extra["argv"],
            # names only for secrets: their values exist only in the worker's memory
            "env": {k: ("<secret>" if is_secret_name(k) else v) for k, v in env.items()},
            "created_at": a.created_at,
            "coordlib_version": __version__,
        }
        brief_b = text.encode()
        spec_b = (json.dumps(spec, indent=2) + "\n").encode()
        launch_b = launch.render().encode()
        argv = remote_argv(
            "dispatch",
            m.workdir,
            a.id,
            m.repo_path(r.name),
            a.worktree,
            a.branch,
            r.default_branch,
            m.tmux_socket,
            script_hash(),
            str(len(brief_b)),
            str(len(spec_b)),
            str(len(launch_b)),
            mode,
        )
        payload = brief_b + spec_b + launch_b + encode_env(env)
        try:
            result = await self.c.transport(m.name).run(
                argv, input=payload, timeout=_DISPATCH_TIMEOUT, what="dispatch"
            )
        except CommandError as exc:
            # The script exited with its own error: nothing was started.
            reason = _dispatch_error(exc.stderr) or str(exc)
            self._fail_dispatch(a, reason)
            raise DispatchError(f"could not start {a.id}: {reason}", machine=m.name) from exc
        except MachineError as exc:
            if isinstance(exc, UnreachableError) and "cannot" in str(exc):
                self._fail_dispatch(a, str(exc))  # never connected: nothing started
            else:
                # It may have started: leave it pending for status/resume to settle.
                self.c.board.update(a.id, error=f"dispatch outcome unknown: {exc}")
            raise
        info = _json_or_empty(result.out)
        fields: dict[str, Any] = {"status": str(Status.RUNNING), "started_at": time.time()}
        with self.c.board.transaction() as txn:
            row = txn.get(a.id)
            if row.get("status") == str(Status.PENDING):
                if info.get("head"):
                    fields["extra"] = {**row.get("extra", {}), "base_sha": info["head"]}
                txn.update(a.id, fields)
            row = txn.get(a.id)
        return Assignment.from_dict(row, where=self.c.board.path)

    def _fail_dispatch(self, a: Assignment, error: str) -> None:
        with self.c.board.transaction() as txn:
            txn.update(
                a.id,
                {
                    "status": str(Status.FAILED),
                    "failure_class": "dispatch_failed",
                    "error": error,
                    "finished_at": time.time(),
                },
            )
            prev = a.extra.get("continues")
            if isinstance(prev, str) and prev in txn:  # free the session for another try
                row = txn.get(prev)
                extra = {k: v for k, v in row.get("extra", {}).items() if k != "continued_by"}
                txn.update(prev, {"extra": extra})

    # ------------------------------------------------------------ later starts of an issue
    async def retry(
        self,
        id: str,
        *,
        machine: str | None = None,
        model: str | None = None,
        briefing: str | None = None,
        force: bool = False,
    ) -> Assignment:
        """See `Coordinator.retry`."""
        prev = self.c.get(id)
        if not prev.is_terminal and prev.status != Status.QUEUED:
            raise ClaimError(
                f"assignment {prev.id} is still {prev.status}; stop it first "
                f"(`coord stop {prev.id}`) or use `coord resume-stuck` to steer it"
            )
        # The issue as the forge has it now; its own earlier branch is no claim against it.
        info = await self._issue_for(
            prev.repo, prev.issue, title=prev.title, briefing=briefing, force=True
        )
        a, text, launch = self.plan_assignment(
            machine or prev.machine,
            prev.repo,
            prev.issue,
            model=model or prev.tier or prev.model,
            briefing=briefing,
            title=prev.title,
            attempt=prev.attempt + 1,
            issue_info=info,
            previous=prev,
        )
        a.extra["retry_of"] = prev.id
        a.extra["trail"] = {} if info is not None else {"off": "the issue is not on the forge"}
        self._claim(a, force=force, replaces=prev.id)
        self._close_replaced(prev, a, retried=True)
        a = await self._dispatch(a, text, launch, mode="new")
        await self.c.trail.post_dispatch(a, text, info.labels if info is not None else None)
        return a

    def _close_replaced(self, prev: Assignment, new: Assignment, *, retried: bool) -> None:
        with self.c.board.transaction() as txn:
            if prev.id not in txn:
                return
            row = txn.get(prev.id)
            extra = {**row.get("extra", {})}
            extra["retried_by" if retried else "continued_by"] = new.id
            fields: dict[str, Any] = {"extra": extra}
            if row.get("status") == str(Status.QUEUED):
                fields.update(status=str(Status.FAILED), finished_at=time.time())
            txn.update(prev.id, fields)

    async def resume_stuck(self, id: str, guidance: str, *, model: str | None = None) -> Assignment:
        """See `Coordinator.resume_stuck`."""
        if not guidance.strip():
            raise UsageError("give the worker some guidance (--guidance TEXT)")
        check_briefing(guidance, "guidance")
        prev = self.c.get(id)
        if not prev.is_terminal:
            prev = await self.c.stop(prev.id)
        return await self._continue(prev, guidance, model=model)

    async def _continue(
        self, prev: Assignment, prompt: str, *, model: str | None = None
    ) -> Assignment:
        if prev.status == Status.LOST:
            raise DispatchError(
                f"assignment {prev.id} is lost with its run; start it again with "
                f"`coord retry {prev.id}`",
                machine=prev.machine,
            )
        tier, model_id = (prev.tier, prev.model)
        if model:
            tier, model_id = self.c.config.models.resolve(model)
        m = self.c.config.machine(prev.machine)
        aid = self._new_id(prev.repo, prev.issue)
        launch = self._launch_spec(m.name, prev.worktree, model_id, resume=prev.session_id)
        a = Assignment(
            id=aid,
            machine=prev.machine,
            repo=prev.repo,
            issue=prev.issue,
            branch=prev.branch,
            model=model_id,
            tier=tier,
            title=prev.title,
            worktree=prev.worktree,
            run_dir=f"{m.root}/runs/{aid}",
            created_at=time.time(),
            attempt=prev.attempt,  # steering or waiting out a limit is not a new attempt
            session_id=prev.session_id,
        )
        a.extra["continues"] = prev.id
        a.extra["argv"] = _worker_argv(launch)
        trail = prev.extra.get("trail")
        a.extra["trail"] = (
            {"off": trail["off"]} if isinstance(trail, dict) and trail.get("off") else {}
        )
        self._claim(a, force=True, replaces=prev.id)
        self._close_replaced(prev, a, retried=False)
        a = await self._dispatch(a, prompt, launch, mode="continue")
        await self.c.trail.post_dispatch(a, prompt)
        return a

    async def dispatch_due(self, *, now: float | None = None) -> list[Assignment]:
        """See `Coordinator.dispatch_due`."""
        now = time.time() if now is None else now
        started: list[Assignment] = []
        for a in self.c.assignments():
            if a.status != Status.QUEUED or float(a.extra.get("not_before") or 0) > now:
                continue
            if a.extra.get("held"):
                continue  # restored from the trail: a person continues it (`continue_queued`)
            prompt = RATE_LIMIT_GUIDANCE
            if not a.session_id:  # it never got going: no session to resume
                prompt = f"Work on issue #{a.issue} of {a.repo}: {a.title}"
            try:
                started.append(await self._continue(a, prompt))
            except ClaimError:
                continue  # another process continued it first
        return started

    async def continue_queued(
        self, id: str, *, guidance: str | None = None, model: str | None = None
    ) -> Assignment:
        """See `Coordinator.continue_`."""
        prev = self.c.get(id)
        if prev.status != Status.QUEUED:
            raise UsageError(
                f"assignment {prev.id} is {prev.status}, not queued; `coord resume-stuck "
                f"{prev.id} --guidance …` steers a worker, `coord retry {prev.id}` starts afresh"
            )
        prompt = guidance if guidance is not None else RATE_LIMIT_GUIDANCE
        if not prompt.strip():
            raise UsageError("give the worker some guidance (--guidance TEXT)")
        check_briefing(prompt, "guidance")
        if not prev.session_id:  # it never got going: no session to resume
            prompt = f"Work on issue #{prev.issue} of {prev.repo}: {prev.title}"
        return await self._continue(prev, prompt, model=model)


def _worker_argv(launch: LaunchSpec) -> list[str]:
    """The worker's command line as spec.json records it; the prompt comes on stdin."""
    return [*launch.command, "-p", *launch.args]


def _json_or_empty(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def _dispatch_error(text: str) -> str:
    """The script's own reason, with the cause git gave just before it (if any)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    reason = lines[-1].removeprefix("coord-run: ")
    causes = [ln for ln in lines[:-1] if ln.startswith(("fatal:", "error:"))][-2:]
    return f"{reason}: {'; '.join(causes)}" if causes else reason


def _refuse_live_clash(live: Sequence[Assignment], repo: str, issue: int) -> None:
    clash = [x for x in live if x.repo == repo and x.issue == issue]
    if clash:
        c = clash[0]
        raise ClaimError(
            f"issue {repo}#{issue} already has live assignment {c.id} "
            f"({c.status} on {c.machine}); stop it with `coord stop {c.id}` or pass --force"
        )
