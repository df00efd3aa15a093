"""The typed builders of every remote command coordlib sends (see `coordlib.runtime.protocol`
for the verbs they build, declared once, and the framing of the answers).

Each checks what it is given through `protocol.remote_argv`, which checks every argument
against the verb's declaration before a command exists, and returns the argv (and the stdin,
for the verbs that read one: sizes on the command line, the bytes on stdin).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from .command import LaunchSpec, encode_env
from .layout import RunFile
from .protocol import (
    CleanMode,
    DispatchMode,
    Scope,
    StackMethod,
    launcher_hash,
    launcher_script,
    remote_argv,
)

__all__ = [
    "Want",
    "await_command",
    "clean_command",
    "dispatch_command",
    "doctor_command",
    "land_command",
    "push_command",
    "setup_command",
    "stack_command",
    "status_command",
    "stop_command",
    "sync_command",
    "tail_command",
    "test_command",
]


@dataclass(frozen=True)
class Want:
    """A run a status asks about: its events from byte `offset`, at most `limit` bytes, and
    (`files`) the files its branch has changed so far, if it still runs."""

    id: str
    offset: int
    limit: int
    files: bool = False


def dispatch_command(
    *,
    workdir: str,
    id: str,
    repo_path: str,
    worktree: str,
    branch: str,
    base: str,
    socket: str,
    mode: DispatchMode,
    briefing: str,
    spec: Mapping[str, Any],
    launch: LaunchSpec,
    env: Mapping[str, str],
) -> tuple[list[str], bytes]:
    """Build a dispatch: its argv, and its stdin (the run's files, the launcher, the env)."""
    parts = (
        briefing.encode(),
        (json.dumps(spec, indent=2) + "\n").encode(),
        launch.render().encode(),
        launcher_script().encode(),
    )
    sizes = [str(len(p)) for p in parts]
    argv = remote_argv(
        "dispatch", workdir, id, repo_path, worktree, branch, base, socket, launcher_hash(),
        *sizes, str(mode),
    )  # fmt: skip
    return argv, b"".join(parts) + encode_env(env)


def status_command(workdir: str, socket: str, scope: Scope, wants: Sequence[Want]) -> list[str]:
    """Build a status of one machine's runs, with the new events of those in `wants`."""
    args = [workdir, socket, str(scope)]
    for w in wants:
        args += [w.id, str(w.offset), str(w.limit), "1" if w.files else "0"]
    return remote_argv("status", *args)


def stop_command(workdir: str, id: str) -> list[str]:
    """Build a stop of run `id`, which waits for its exit record."""
    return remote_argv("stop", workdir, id)


def tail_command(
    workdir: str, id: str, offset: int, file: RunFile = RunFile.EVENTS, *, follow: bool
) -> list[str]:
    """Build a tail of one of a run's files from byte `offset` (`follow`: until it ends)."""
    return remote_argv("tail", workdir, id, str(offset), str(file), "1" if follow else "0")


def clean_command(
    workdir: str,
    mode: CleanMode,
    *,
    keep_runs: bool,
    runs: Sequence[tuple[str, str]],
    rescue: bool = False,
) -> tuple[list[str], bytes]:
    """Build a clean of `runs` ((id, worktree or ""), each ended): its argv and its stdin.
    With `rescue`, a worktree's uncommitted work (or detached commits) is saved at
    ``refs/coord/rescue/<id>`` before it goes, rather than keeping the worktree."""
    payload = bytearray()
    for id, worktree in runs:
        if "\0" in id or "\0" in worktree:
            raise UsageError(f"remote command clean: a NUL byte in run {id!r} or its worktree")
        payload += f"{id}\0{worktree}\0".encode()
    argv = remote_argv("clean", workdir, str(mode), str(int(keep_runs)), str(int(rescue)))
    return argv, bytes(payload)


def test_command(
    workdir: str,
    id: str,
    repo_path: str,
    ref: str,
    *,
    build: str | None,
    test: str | None,
    timeout: float,
    confine: bool = False,
) -> tuple[list[str], bytes]:
    """Build a test of `ref` (a commit's sha or a coord branch): its argv and its stdin.

    `build` then `test` run as shell in a detached worktree of the commit, within `timeout`
    seconds in all (rounded up); an empty or missing command is none.  `confine`: they run
    in a bubblewrap sandbox, as a confined worker's commands do (worker.confine).
    """
    parts = [c.encode() if c and c.strip() else b"" for c in (build, test)]
    if any(b"\0" in p for p in parts):
        raise UsageError("remote command test: a NUL byte in the build or test command")
    if not math.isfinite(timeout) or timeout <= 0:
        raise UsageError(f"remote command test: timeout {timeout!r} is not a positive number")
    sizes = [str(len(p)) for p in parts]
    argv = remote_argv(
        "test", workdir, id, repo_path, ref, *sizes, str(math.ceil(timeout)), str(int(confine))
    )
    return argv, b"".join(parts)


test_command.__test__ = False  # type: ignore[attr-defined]  # pytest: a builder, not a test


def push_command(repo_path: str, branch: str) -> list[str]:
    """Build a push of `branch`, as the repo has it now, to the repo's origin."""
    return remote_argv("push", repo_path, branch)


def stack_command(
    workdir: str,
    id: str,
    repo_path: str,
    base: str,
    method: StackMethod | str,
    branches: Sequence[tuple[str, str]],
) -> tuple[list[str], bytes]:
    """Build a stack of `branches` ((branch, commit message), in order) on `base`.

    Each branch is applied with `method` on top of those before it, in a worktree of the
    machine's repo that is gone again once the stack is made; a merge or squash commit
    gets the branch's message (a rebase keeps the branch's commits and their messages, so
    its message goes unused).  Its argv, and its stdin: the messages, each ``SIZE\\n`` then
    SIZE bytes.
    """
    if not branches:
        raise UsageError("remote command stack: no branch to stack")
    seen: set[str] = set()
    payload = bytearray()
    for branch, message in branches:
        if branch in seen:
            raise UsageError(f"remote command stack: branch {branch!r} is given twice")
        seen.add(branch)
        if "\0" in message:
            raise UsageError(f"remote command stack: a NUL byte in the message for {branch!r}")
        if not message.strip(" \t\n\r\v\f"):  # the script's [[:space:]] (in the C locale)
            raise UsageError(f"remote command stack: the message for {branch!r} is empty")
        data = message.encode()
        payload += b"%d\n%b" % (len(data), data)
    argv = remote_argv(
        "stack", workdir, id, repo_path, base, str(method), str(len(payload)),
        *(branch for branch, _ in branches),
    )  # fmt: skip
    return argv, bytes(payload)


def land_command(repo_path: str, base: str, sha: str, expected: str) -> list[str]:
    """Build a land: push commit `sha` to origin's `base`, only while that is `expected`.

    `expected` must be an ancestor of `sha` (a land is a fast-forward); a base that moved
    meanwhile fails with `ExitCode.BASE_MOVED`, and nothing lands.
    """
    return remote_argv("land", repo_path, base, sha, expected)


def await_command(workdir: str, seconds: float, ids: Sequence[str]) -> list[str]:
    """Build a wait, at most `seconds` (whole, at least 1), until one of the runs `ids` ends."""
    return remote_argv("await", workdir, str(max(1, math.ceil(seconds))), *ids)


def sync_command(repo_path: str, base: str, *, pull: bool) -> list[str]:
    """Build a comparison of the checkout's `base` with origin's (`pull`: fast-forward it)."""
    return remote_argv("sync", repo_path, base, "1" if pull else "0")


def doctor_command(
    workdir: str,
    min_free_kb: int,
    repo_paths: Sequence[str],
    claude: Sequence[str],
    env: Mapping[str, str],
) -> tuple[list[str], bytes]:
    """Build a doctor of one machine: its argv, and its stdin (the claude command, the env).

    The env (the API key among it) goes on stdin as a dispatch's does, never on the command
    line; so does the claude command, word by word, as the launcher would run it.
    """
    if not claude or any(not w or "\0" in w for w in claude):
        raise UsageError(f"remote command doctor: claude command {list(claude)!r} is not words")
    payload = b"".join(w.encode() + b"\0" for w in claude) + b"\0" + encode_env(env)
    return remote_argv("doctor", workdir, str(int(min_free_kb)), *repo_paths), payload


def setup_command(
    steps: Sequence[tuple[str, str | None, float]], *, dry_run: bool
) -> tuple[list[str], bytes]:
    """Build a setup of `steps` ((check, run or None, timeout seconds), in order).

    Each step's check runs as shell in the home dir; a failing one gets its run (unless
    `dry_run`) and its check again, each within the step's timeout (rounded up).  The
    commands travel on stdin, sized; their values were quoted when the playbook was rendered.
    """
    args: list[str] = []
    payload = bytearray()
    for i, (check, run, timeout) in enumerate(steps):
        parts = [check.encode(), (run or "").encode()]
        if not check.strip() or any(b"\0" in p for p in parts):
            raise UsageError(f"remote command setup: step {i} has no check, or a NUL byte")
        if not math.isfinite(timeout) or timeout <= 0:
            raise UsageError(f"remote command setup: timeout {timeout!r} is not a positive number")
        args += [str(len(parts[0])), str(len(parts[1])), str(math.ceil(timeout))]
        payload += b"".join(parts)
    return remote_argv("setup", "1" if dry_run else "0", *args), bytes(payload)
