"""`coord doctor`: a health preflight of each machine, and the latest result on the board.

Each machine is asked once (`runtime.builders.doctor_command`, machine.sh's doctor), all at
once, each within a timeout, so a machine that does not answer is reported and holds up no
other.  The machine's env reaches the doctor as it reaches a worker, on stdin (the API key
is there: `claude auth status` needs it); its values are never kept or shown.

Each machine's latest result is a board document (`DOCTOR`), with its time.  Every start of
a worker but a continued session consults it (`refuse_unhealthy`, from the dispatcher's one
place): a machine whose result is under a day old and unhealthy gets no new work until a
doctor finds it healthy again or `--force` is given.  A failing ``repo:<name>`` check refuses
that repo's work only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .config import resolve_env
from .contacts import format_age
from .errors import (
    AuthError,
    CommandError,
    CommandTimeout,
    ConfigError,
    CoordError,
    HostKeyError,
    ProtocolError,
    UnhealthyMachineError,
    UnreachableError,
)
from .runtime.answers import failure_reason
from .runtime.builders import doctor_command
from .runtime.machine_answers import Check, parse_doctor

if TYPE_CHECKING:
    from .board import Board
    from .config import Config, MachineConfig
    from .context import Context

__all__ = [
    "DOCTOR",
    "FRESH",
    "MIN_FREE_KB",
    "TIMEOUT",
    "Check",
    "MachineHealth",
    "doctor",
    "examine",
    "latest",
    "machine_repos",
    "refusal",
    "refuse_unhealthy",
    "store",
]

DOCTOR = "doctor"  # the board's table: one document per machine, its latest result
FRESH = 24 * 3600.0  # a result older than this is no reason to refuse a machine
MIN_FREE_KB = 1024 * 1024  # the disk check fails under 1 GiB free, unless told otherwise
TIMEOUT = 60.0  # the longest a machine's doctor may take, its connection aside
_SLACK = 5.0


@dataclass
class MachineHealth:
    """One machine's doctor result: when, and each check."""

    name: str
    at: float
    checks: list[Check] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """Whether every check passed (warnings pass)."""
        return all(c.ok for c in self.checks)

    @property
    def failing(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if not c.ok]

    def to_dict(self) -> dict[str, Any]:
        """Return the result as ``coord doctor --json`` prints it (and the board keeps it)."""
        return {"name": self.name, "healthy": self.healthy, "at": self.at,
                "checks": [c.to_dict() for c in self.checks]}  # fmt: skip

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> MachineHealth | None:
        """Read a result back from its board document; None if it is not one."""
        name, at, raw = doc.get("name"), doc.get("at"), doc.get("checks")
        if not isinstance(name, str) or not isinstance(raw, list):
            return None
        if not isinstance(at, int | float) or isinstance(at, bool):
            return None
        checks = [c for c in map(Check.from_dict, raw) if c is not None]
        if len(checks) != len(raw):  # a check we cannot read is one we cannot vouch for
            checks.append(Check("doctor", "fail", "the stored result is unreadable"))
        return cls(name, float(at), checks)


def machine_repos(config: Config, m: MachineConfig) -> list[str]:
    """The repos `m` works on (its `repos`, else every configured one), in config order."""
    return [r for r in config.repos if not m.repos or r in m.repos]


# ------------------------------------------------------------------ asking the machines


async def doctor(
    ctx: Context,
    names: Sequence[str],
    *,
    min_free_kb: int = MIN_FREE_KB,
    timeout: float = TIMEOUT,
    on_machine: Callable[[MachineHealth], None] | None = None,
) -> list[MachineHealth]:
    """Examine each machine of `names` at once; keep each result on the board; return them."""
    for name in names:
        ctx.config.machine(name)  # an unknown name: ConfigError with the nearest, first

    async def one(name: str) -> MachineHealth:
        health = await examine(ctx, name, min_free_kb=min_free_kb, timeout=timeout)
        if on_machine is not None:  # as each answers: a hung machine holds up no other
            on_machine(health)
        return health

    results = list(await asyncio.gather(*(one(n) for n in names)))
    store(ctx.board, results)
    return results


async def examine(
    ctx: Context, name: str, *, min_free_kb: int = MIN_FREE_KB, timeout: float = TIMEOUT
) -> MachineHealth:
    """Examine one machine with one remote command; every failure becomes a failing check."""
    m = ctx.config.machine(name)
    env, checks = _worker_env(m, ctx.environ)
    repos = machine_repos(ctx.config, m)
    at = time.time()
    try:
        argv, payload = doctor_command(m.workdir, min_free_kb, [m.repo_path(r) for r in repos],
                                       m.claude_argv(), env)  # fmt: skip
    except (CoordError, ValueError) as exc:  # the claude command is no command at all
        checks.append(Check("claude", "fail", f"claude_command {m.claude_command!r}: {exc}"))
        return _health(m, at, checks)
    connect = m.connect_timeout or ctx.config.ssh.connect_timeout
    t0 = time.monotonic()
    try:
        result = await asyncio.wait_for(
            ctx.machines.get(name).run(argv, input=payload, timeout=timeout, what="doctor"),
            timeout + connect + _SLACK,
        )
        found = parse_doctor(result.stdout, repos, machine=name)
    except TimeoutError:
        checks.insert(0, Check("reachable", "fail", f"no answer within {timeout + connect:g} s"))
        return _health(m, at, checks)
    except HostKeyError as exc:
        return _health(m, at, [Check("host_key", "fail", _own(exc, name)), *checks])
    except AuthError as exc:
        return _health(m, at, [Check("auth", "fail", _own(exc, name)), *checks])
    except UnreachableError as exc:
        checks.insert(0, Check("reachable", "fail", f"{exc.reason}: {_own(exc, name)}"))
        return _health(m, at, checks)
    except CommandTimeout:
        said = f"the doctor did not finish within {timeout:g} s"
        return _health(m, at, [_reached(m, time.monotonic() - t0), *checks,
                               Check("doctor", "fail", said)])  # fmt: skip
    except CommandError as exc:
        said = failure_reason(exc.stderr) or _own(exc, name)
        return _health(m, at, [_reached(m, time.monotonic() - t0), *checks,
                               Check("doctor", "fail", said)])  # fmt: skip
    except ProtocolError as exc:
        return _health(m, at, [_reached(m, time.monotonic() - t0), *checks,
                               Check("doctor", "fail", _own(exc, name))])  # fmt: skip
    except CoordError as exc:
        checks.insert(0, Check("reachable", "fail", _own(exc, name)))
        return _health(m, at, checks)
    return _health(m, at, [_reached(m, time.monotonic() - t0), *checks,
                           *_confinement(ctx.config.worker.confine, found)])  # fmt: skip


def _confinement(confine: bool, found: Sequence[Check]) -> list[Check]:
    """A missing sandbox fails a machine whose workers are confined; with worker.confine off,
    it is only worth a look, and so is running workers unconfined at all."""
    if confine:
        return list(found)
    out = [dataclasses.replace(c, level="warn") if c.name == "sandbox" and not c.ok else c
           for c in found]  # fmt: skip
    said = (
        "worker.confine is false: workers run with no sandbox, file tools anywhere, and "
        "the API key in Bash's environment"
    )
    fix = "set worker.confine: true (the default) once the sandbox runs here"
    out.append(Check("confine", "warn", said, fix=fix))
    return out


def _own(exc: CoordError, name: str) -> str:
    """The error's message without the machine's name in front."""
    return str(exc).removeprefix(f"{name}: ")


def _reached(m: MachineConfig, seconds: float) -> Check:
    how = "the local machine" if m.is_local else f"{m.host}: answered in {seconds:.1f} s"
    return Check("reachable", "ok", how)


def _worker_env(m: MachineConfig, environ: Mapping[str, str]) -> tuple[dict[str, str], list[Check]]:
    """The machine's env as a worker gets it, and a check naming what it holds (names only).

    A reference to a variable the coordinator's environment lacks fails the `env` check;
    the rest is resolved one by one, so the other checks still see what can be sent.
    """
    if not m.env:
        return {}, []
    try:
        env = resolve_env(m.env, environ, machine=m.name)
    except ConfigError as exc:
        env = {}
        for name, value in m.env.items():
            try:
                env.update(resolve_env({name: value}, environ, machine=m.name))
            except ConfigError:
                continue
        return env, [Check("env", "fail", exc.message, fix=exc.hint or "")]
    return env, [Check("env", "ok", "sends " + ", ".join(sorted(env)))]


def _health(m: MachineConfig, at: float, checks: list[Check]) -> MachineHealth:
    """The result, each check that is not plainly ok given what to do about it."""
    return MachineHealth(m.name, at, [_with_fix(c, m) for c in checks])


def _with_fix(c: Check, m: MachineConfig) -> Check:
    if c.level == "ok" or c.fix:
        return c
    where = f"machines.{m.name}"
    if c.name.startswith("repo:"):
        repo = c.name.removeprefix("repo:")
        fix = f"`coord setup {m.name}` clones it, or set {where}.repo_paths.{repo}"
    else:
        fix = _FIXES.get(c.name, "").format(machine=m.name, host=m.host, where=where)
    return dataclasses.replace(c, fix=fix) if fix else c


_FIXES = {
    "reachable": "check that {host} is up and its sshd listens (`coord status` says when it "
    "last answered)",
    "bash": "install bash 4.3 or newer on {machine}",
    "git": "install git on {machine} (Debian/Ubuntu: apt-get install git)",
    "tmux": "install tmux on {machine} (Debian/Ubuntu: apt-get install tmux)",
    "flock": "install util-linux on {machine}, which has flock",
    "sandbox": "install bubblewrap and socat on {machine} (apt-get install bubblewrap socat, or "
    "`coord setup {machine}`), or set worker.confine: false to run workers unconfined",
    "workdir": "let the login user write it (chown), or set {where}.workdir",
    "disk": "free some space: `coord clean` removes the worktrees and run dirs of ended work",
    "stale_runs": "`coord status` settles them (as lost) and `coord clean` removes them",
    "worker_user": "run workers as a dedicated unprivileged user: `coord setup {machine} "
    "--enable worker-user` makes one; then log in as it ({where}.user)",
    "claude": "install Claude Code on {machine} (npm install -g @anthropic-ai/claude-code), "
    "or set {where}.claude_command",
    "claude_login": "give it an API key (ANTHROPIC_API_KEY: ${{ANTHROPIC_API_KEY}} under "
    "{where}.env), or log in on {machine} (run claude there, then /login)",
    "doctor": "`coord doctor {machine}` again; if it persists, the machine's bash and "
    "coreutils may be too old",
}


# ------------------------------------------------------------------ the board's record


def store(board: Board, results: Sequence[MachineHealth]) -> None:
    """Keep each machine's result as its latest, in one transaction."""
    if not results:
        return
    with board.transaction() as txn:
        table = txn.docs(DOCTOR)
        for health in results:
            table.put({"key": health.name, **health.to_dict()})


def latest(board: Board) -> dict[str, MachineHealth]:
    """Each machine's latest doctor result, by name (one board read)."""
    out: dict[str, MachineHealth] = {}
    for doc in board.docs(DOCTOR):
        health = MachineHealth.from_doc(doc)
        if health is not None and doc.get("key") == health.name:
            out[health.name] = health
    return out


def refusal(
    health: MachineHealth | None, *, repo: str | None, now: float, fresh: float = FRESH
) -> str | None:
    """Why no new work for `repo` may start on the machine of `health` now, or None.

    A result older than `fresh` says nothing any more; a failing ``repo:<other>`` check
    concerns only that other repo's work.
    """
    if health is None or now - health.at > fresh:
        return None
    failing = [c for c in health.failing
               if not c.name.startswith("repo:") or c.name == f"repo:{repo}"]  # fmt: skip
    if not failing:
        return None
    said = "; ".join(f"{c.name}: {c.detail}" for c in failing[:3])
    more = f" and {len(failing) - 3} more" if len(failing) > 3 else ""
    return (
        f"`coord doctor` found it unhealthy {format_age(now - health.at)} ago ({said}{more}); "
        f"`coord doctor {health.name}` checks it again, `--force` dispatches anyway"
    )


def refuse_unhealthy(
    results: Mapping[str, MachineHealth], machine: str, repo: str | None, *, now: float
) -> None:
    """Raise `UnhealthyMachineError` if `machine`'s latest result refuses `repo`'s work."""
    why = refusal(results.get(machine), repo=repo, now=now)
    if why is not None:
        raise UnhealthyMachineError(why, machine=machine)
