"""The remote run protocol, declared once: what coordlib asks of a worker machine, and how
the machine answers.

Every operation is one ``bash --norc -c <script> coord-run VERB ARGS…`` on the machine (over
SSH, or locally), where the script is ``common.sh`` + the verbs: ``remote.sh``'s (dispatch,
status, stop, tail, clean, and the verb table), ``branch.sh``'s (test, push, stack, land)
(and sync: a checkout against origin), ``await.sh``'s (await: until one of the runs
ends) and ``machine.sh``'s (doctor: the machine's health; setup: a playbook's steps); a
command carries only its own
verb's section of them (`remote_script`).  The launcher that tmux keeps alive is
``common.sh`` + ``launcher.sh``: each dispatch carries it on its stdin, and the machine
saves it once per version as ``bin/coord-launcher-<hash>``.  Declared here:

- each verb's arguments (`VERBS`), checked before a command is built and checked again by
  the script with bash builtins; the typed builders in `coordlib.runtime.builders`
  (`dispatch_command`, `status_command`, `stop_command`, `tail_command`, `clean_command`,
  `test_command`, `push_command`, `stack_command`, `land_command`, `await_command`) build
  every command coordlib sends, through `remote_argv`.  Nothing a verb is given is ever
  evaluated on the machine and nothing reaches git as an option; the commands a test runs
  are the coordinator's config and travel on stdin, sized, like a dispatch's briefing, and
  so do the commit messages of a stack;
- the one framing of every answer but tail's (which is the raw bytes of a file)::

      coord-run 2 VERB [KEY=VALUE ...]        the protocol's version and the verb
      KIND TEXT                               records, one a line
      KIND WORD… N                            a record with a payload: N raw bytes, then \\n
      end

  read by `coordlib.runtime.answers` (`parse_frame`, and one parser per verb on top); a
  failure is an exit status (`ExitCode`) and a ``coord-run: …`` line on stderr;
- the reasons a run's ``exit.json`` gives (`ExitReason`);
- the names under a machine's workdir are `coordlib.runtime.layout`'s, but for a test's
  (`TESTS`, `TEST_LOG`, `TEST_RESULT`, `TEST_WORKTREE`, `TEST_TMP`): ``tests/<id>/`` holds
  its ``output.log`` and ``result.json``, and its detached worktree ``wt/`` (and, confined,
  its commands' temp dir ``tmp/``) while it runs; a
  stack's (`STACKS`, `STACK_WORKTREE`) ``stacks/<id>/wt/``, only while it is made.

A test whose build or tests fail is an answer, not a failure of the verb::

    coord-run 2 test
    tested sha=SHA exit=CODE phase=build|test|none timed_out=0|1 seconds=S log=PATH
    tail N                                    the last (at most 4000) bytes of output.log
    <N raw bytes>\\n
    end

A stack (a merge queue's: ready branches applied one after another on the base, to be tested
and then landed as exactly that commit) answers what became of each branch, in order; a
branch that conflicts is left out of the stack, which goes on without it::

    coord-run 2 stack
    base sha=SHA                              the commit stacked on (origin's BASE)
    applied branch=B sha=SHA                  the stack's head with B on it, or
    conflict branch=B N                       B did not apply: the conflicting paths, or
    <N raw bytes: paths, one a line>\\n
    missing branch=B                          B is neither on origin nor in the repo
    files branch=B N                          after an applied or conflict record: the
    <N raw bytes: paths, one a line>\\n        paths B changes (against the base)
    end

    coord-run 2 land                          origin's BASE was EXPECTED, and is SHA now
    landed base=BASE sha=SHA
    end

An await streams: its header at once, a ``tick`` record every 2 s while it waits (a
waiter whose reader has gone dies on its next write), then ``ended ID`` (its exit.json is
there) or ``gone ID`` (no launcher, no exit record: a status settles it) and ``end``; or
just ``end`` once SECONDS pass::

    coord-run 2 await
    tick 1796440000
    ended api-42-1f3a
    end

A doctor looks and changes nothing; a setup runs its steps' checks (and, unless a dry run,
their runs), each step answered with the end of its output::

    coord-run 2 doctor
    check NAME ok|warn|fail DETAIL            one a check (`DOCTOR_CHECKS`, repo.<i>)
    end

    coord-run 2 setup
    step INDEX state=STATE N                  STATE one of `SETUP_STATES`
    <N raw bytes: the last (at most 2000) bytes of its output>\\n
    end

The scripts implement this declaration; tests/test_protocol.py reads them and checks that
they agree with it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..assignment import check_id
from ..errors import UsageError
from .layout import TAIL_FILES
from .scripts import launcher_hash, launcher_script, remote_script

__all__ = [
    "DOCTOR_CHECKS",
    "DOCTOR_LEVELS",
    "HEADER",
    "LAUNCHER",
    "PROTOCOL_VERSION",
    "SETUP_STATES",
    "SETUP_TAIL",
    "STACKS",
    "STACK_WORKTREE",
    "TESTS",
    "TEST_LOG",
    "TEST_PHASES",
    "TEST_RESULT",
    "TEST_TAIL",
    "TEST_TMP",
    "TEST_WORKTREE",
    "VERBS",
    "Arg",
    "CleanMode",
    "DispatchMode",
    "ExitCode",
    "ExitReason",
    "Scope",
    "StackMethod",
    "Verb",
    "check_args",
    "launcher_hash",
    "launcher_script",
    "remote_argv",
    "remote_script",
]

PROTOCOL_VERSION = 2
HEADER = "coord-run"  # the first word of every answer's first line, and $0 of every command

# A test's names under the workdir: tests/<id>/ holds these.  Not layout.RunFile's: a test
# is no run (no launcher, no events, no tmux) and keeps a dir of its own.
TESTS = "tests"
TEST_LOG = "output.log"  # the build's and the tests' stdout and stderr
TEST_RESULT = "result.json"  # {sha, exit_code, phase, timed_out, seconds}
TEST_PHASES = ("build", "test", "none")  # what ran last (none: no command was configured)
TEST_TAIL = 4000  # the bytes of output.log's end that the answer carries
TEST_WORKTREE = "wt"  # the commit's detached worktree, removed once the commands have run
TEST_TMP = "tmp"  # confined, its commands' TMPDIR (the rest is read-only), removed with wt
# A stack's: stacks/<id>/ holds its detached worktree while the branches are applied; both
# go once it is made (its commits stay in the repo's object store, for test and land).
STACKS = "stacks"
STACK_WORKTREE = "wt"
# A doctor's checks, in the order it answers them (then repo.<i>: the i-th repo path given),
# each ok, warn (healthy, but worth a look) or fail.  A setup's steps end in one of
# SETUP_STATES, each answered with the last SETUP_TAIL bytes of its output.
DOCTOR_CHECKS = (
    "bash", "git", "tmux", "flock", "sandbox", "workdir", "disk", "worktrees", "stale_runs",
    "worker_user", "claude", "claude_login",
)  # fmt: skip
DOCTOR_LEVELS = ("ok", "warn", "fail")
SETUP_STATES = ("ok", "changed", "would_change", "failed", "manual")
SETUP_TAIL = 2000


class ExitCode(enum.IntEnum):
    """The exit statuses of the scripts: of each verb, and of the launcher (its exit.json's)."""

    OK = 0
    USAGE = 2  # a bad argument: refused before anything was touched
    NO_RUN = 3  # no such run directory on the machine (stop, tail, the launcher)
    # dispatch's failures: nothing was started, and what it made is undone
    NOT_A_REPO = 10  # the repo path is not a git repository there
    FETCH_FAILED = 11  # git fetch origin BASE failed
    WORKTREE_FAILED = 12  # the branch exists, the worktree is gone, or worktree add failed
    RUN_EXISTS = 13  # the run directory exists already
    NO_SPACE = 14  # a directory or file could not be made (disk full?)
    WRITE_FAILED = 15  # the run files, the launcher or the env FIFO could not be written
    TMUX_FAILED = 16  # tmux would not start the session
    LAUNCHER_TIMEOUT = 17  # the launcher did not read its environment within 30 s
    REPO_LOCKED = 18  # another dispatch held the repo's lock for 120 s
    WORKTREE_HELD = 19  # continue: another worker still runs in the worktree
    MISSING_TOOL = 20  # tmux or git is not installed
    # test's, push's, stack's and land's own (test and stack also fail with 10, 12-15, 18 and
    # 20 as dispatch does, with what they made undone, and stack with 11 when it cannot
    # fetch; a test failing, or a branch that conflicts in a stack, is an answer, not an
    # exit status)
    NO_COMMIT = 21  # test: the ref names no commit in the repo; land: nor SHA or EXPECTED
    NO_ORIGIN = 22  # push, land: the repo has no remote "origin"
    NO_BRANCH = 23  # push: no such branch in the repo
    PUSH_FAILED = 24  # push, land: git push was rejected, or could not reach origin
    NO_BASE = 25  # stack: origin (or the repo, without one) has no such base branch
    BASE_MOVED = 26  # land: origin's base is no longer the expected commit: nothing landed
    NOT_FAST_FORWARD = 27  # land: the commit does not descend from the expected base
    CLAIMED = 28  # dispatch (claim): the branch is on origin already: another claimed the issue
    NO_SANDBOX = 29  # dispatch: the worker is to be confined, and bubblewrap or socat is missing
    # the launcher's own, when no worker ran (or could not start), recorded in exit.json
    # (with reason "exited", 126 and 127 are the worker's own: setsid could not run its
    # command, see outcomes.classify)
    SETUP_FAILED = 121  # the workspace's setup failed: no worker started (reason setup_failed)
    WORKTREE_GONE = 122  # the worktree vanished before the worker could start in it
    LAUNCH_BUSY = 124  # another worker holds the worktree (reason busy)
    LAUNCH_NO_ENV = 125  # the environment stream was incomplete (reason crashed)
    LAUNCH_BAD_ENV = 126  # launch.env would not load, or a limit is no number (crashed)
    LAUNCH_STOPPED = 143  # stopped before the worker started (128 + SIGTERM)


class ExitReason(enum.StrEnum):
    """Why a run ended: the ``reason`` of its exit.json (and of a status's exit records)."""

    EXITED = "exited"  # the worker exited by itself
    STALLED = "stalled"  # no new events for stall_timeout: killed
    TIMED_OUT = "timed_out"  # ran past max_runtime: killed
    STOPPED = "stopped"  # `coord stop`
    RESULT_GRACE_KILL = "result_grace_kill"  # lingered past result_grace after its result
    BUSY = "busy"  # another worker held the worktree: never started
    SETUP_FAILED = "setup_failed"  # the workspace's setup script failed: the worker never started
    CRASHED = "crashed"  # the launcher could not start the worker
    DISPATCH_FAILED = "dispatch_failed"  # recorded by a failed dispatch, with its error
    ENDED = "ended"  # status: a run not asked about has ended (its record is not sent)
    UNREADABLE = "unreadable"  # coordlib's: the exit record is not JSON


# ------------------------------------------------------------------ the verbs' arguments
# The scripts check the same shapes again (valid_id, valid_num, need_*), since a machine must
# not trust whoever sent the command.  Ids become paths and array keys there, numbers go
# into bash arithmetic, and a word starting with "-" could reach git or tmux as an option.

NUMBER = re.compile(r"0|[1-9][0-9]{0,17}")  # no leading zero: bash reads 010 as octal
BRANCH = re.compile(r"(?=.{1,200}\Z)issue-[0-9]+(-[a-z0-9]+)*")  # issue-<N>[-<slug>][-r<K>]
BASE_BRANCH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}")  # a plain branch name
SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # a commit's full sha
_REF = re.compile(rf"{SHA.pattern}|{BRANCH.pattern}")  # a commit, or a branch
_SECONDS = re.compile(r"[1-9][0-9]{0,8}")  # 0 would be no limit at all to timeout(1)
_SOCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_HASH = re.compile(r"[0-9a-f]{1,64}")

Check = Callable[[str, str, str], None]  # (verb, what, value) -> None, or raise UsageError


def _refuse(verb: str, what: str, value: str, should: str) -> UsageError:
    shown = value if len(value) <= 80 else value[:80] + "…"
    return UsageError(f"remote command {verb}: {what} {shown!r} is not {should}")


def _path(verb: str, what: str, value: str) -> None:
    if not value or value.startswith("-"):
        raise _refuse(verb, what, value, "a path (empty, or would read as an option)")


def _id(verb: str, what: str, value: str) -> None:
    check_id(value, f"remote command {verb}: {what}")


def _shaped(pattern: re.Pattern[str], should: str) -> Check:
    def check(verb: str, what: str, value: str) -> None:
        if not pattern.fullmatch(value):
            raise _refuse(verb, what, value, should)

    return check


def _one_of(*choices: str) -> Check:
    return _shaped(re.compile("|".join(map(re.escape, choices))), "one of " + ", ".join(choices))


_number = _shaped(NUMBER, "a plain decimal number")


class Scope(enum.StrEnum):
    """Which runs a status reports besides those asked about."""

    LIVE = "live"  # the running ones (the live index)
    ALL = "all"  # every run dir, ended ones too (resume looks for orphans)


class DispatchMode(enum.StrEnum):
    """How a dispatch gets its worktree."""

    NEW = "new"  # a new branch from origin/BASE
    # new, and the branch pushed to origin before anything else (it must not be there yet):
    # the claim that holds across coordinators with boards of their own
    CLAIM = "claim"
    CONTINUE = "continue"  # the existing worktree, once no worker holds it
    REVIEW = "review"  # a detached worktree at the branch's head (a reviewer's): no fetch,
    # and a failed dispatch removes the worktree but never the branch, which is the worker's
    SCRATCH = "scratch"  # no repo: the run works in runs/<id>/scratch (a planner's ranking);
    # the repo and branch words are not used, and a clean of the run removes it


class StackMethod(enum.StrEnum):
    """How a stack applies each branch on top of the ones before it."""

    MERGE = "merge"  # a merge commit (--no-ff), whose second parent is the branch's head
    SQUASH = "squash"  # one commit with all of the branch's changes
    REBASE = "rebase"  # the branch's own commits (not merges) picked one by one: linear


class CleanMode(enum.StrEnum):
    """What clean does with what it may remove."""

    REMOVE = "remove"
    CHECK = "check"  # a dry run


@dataclass(frozen=True)
class Arg:
    """One argument of a verb: what it is (for messages) and how it is checked."""

    what: str
    check: Check


@dataclass(frozen=True)
class Verb:
    """A verb of coord-run: its arguments, its stdin and its answer."""

    name: str
    args: tuple[Arg, ...]
    group: tuple[Arg, ...] = ()  # repeated any number of times after args
    stdin: str = ""  # what it reads on stdin, if anything
    framed: bool = True  # its answer is a frame (tail's is the raw bytes of a file)
    records: frozenset[str] = frozenset()  # the kinds of record its answer holds
    # kind -> the words on its line, the last one the size of the payload that follows
    payloads: Mapping[str, int] = field(default_factory=dict)

    @property
    def arity(self) -> str:
        """Describe how many arguments the verb takes."""
        fixed = len(self.args)
        return f"{fixed} + {len(self.group)}*N" if self.group else str(fixed)


_WORKDIR = Arg("workdir", _path)
_RUN_ID = Arg("assignment id", _id)
_REPO = Arg("repo path", _path)
_COORD_BRANCH = "a branch coord names (issue-<N>[-<slug>][-r<K>])"
_BASE_ARG = Arg("base branch", _shaped(BASE_BRANCH, "a plain branch name"))
_SHA_SHOULD = "a commit's sha (40 hex digits)"

VERBS: dict[str, Verb] = {
    v.name: v
    for v in (
        Verb(
            "dispatch",
            (
                _WORKDIR,
                _RUN_ID,
                _REPO,
                Arg("worktree", _path),
                Arg("branch", _shaped(BRANCH, _COORD_BRANCH)),
                _BASE_ARG,
                Arg("tmux socket", _shaped(_SOCKET, "a tmux socket name (letters, digits, _ . -)")),
                Arg("launcher hash", _shaped(_HASH, "a hex hash")),
                Arg("briefing size", _number),
                Arg("spec size", _number),
                Arg("launch.env size", _number),
                Arg("launcher size", _number),
                Arg("mode", _one_of(*DispatchMode)),
            ),
            stdin="briefing, spec.json, launch.env, launcher (sized), then the env records",
            records=frozenset({"started"}),
        ),
        Verb(
            "status",
            (
                _WORKDIR,
                Arg("tmux socket", _shaped(_SOCKET, "a tmux socket name")),
                Arg("scope", _one_of(*Scope)),
            ),
            group=(
                _RUN_ID,
                Arg("offset", _number),
                Arg("byte limit", _number),
                Arg("files", _one_of("0", "1")),
            ),
            records=frozenset({"run", "exit", "events", "files", "stderr", "missing", "disk"}),
            payloads={"events": 2, "files": 1, "stderr": 1},
        ),
        Verb("stop", (_WORKDIR, _RUN_ID), records=frozenset({"exit"})),
        Verb(
            "tail",
            (
                _WORKDIR,
                _RUN_ID,
                Arg("offset", _number),
                Arg("file", _one_of(*TAIL_FILES)),
                Arg("follow", _one_of("0", "1")),
            ),
            framed=False,
        ),
        Verb(
            "clean",
            (
                _WORKDIR,
                Arg("mode", _one_of(*CleanMode)),
                Arg("keep_runs", _one_of("0", "1")),
                # 1: a worktree with uncommitted files or a detached HEAD has its work saved at
                # refs/coord/rescue/ID (a commit of the whole tree), then goes too
                Arg("rescue", _one_of("0", "1")),
            ),
            stdin="ID NUL WORKTREE NUL, per run",
            records=frozenset({"run"}),
        ),
        Verb(
            "test",
            (
                _WORKDIR,
                Arg("test id", _id),
                _REPO,
                Arg("ref", _shaped(_REF, f"a commit's sha (40 hex digits) or {_COORD_BRANCH}")),
                Arg("build command size", _number),
                Arg("test command size", _number),
                Arg("timeout", _shaped(_SECONDS, "a whole number of seconds, 1 to 999999999")),
                Arg("confine", _one_of("0", "1")),
            ),
            stdin="the build command, then the test command (sized; 0: none)",
            records=frozenset({"tested", "tail"}),
            payloads={"tail": 1},
        ),
        Verb(
            "push",
            (_REPO, Arg("branch", _shaped(BRANCH, _COORD_BRANCH))),
            records=frozenset({"pushed"}),
        ),
        Verb(
            "stack",
            (
                _WORKDIR,
                Arg("stack id", _id),
                _REPO,
                _BASE_ARG,
                Arg("method", _one_of(*StackMethod)),
                Arg("messages size", _number),
            ),
            group=(Arg("branch", _shaped(BRANCH, _COORD_BRANCH)),),
            stdin="per branch, in order, its commit message: SIZE\\n then SIZE bytes",
            records=frozenset({"base", "applied", "conflict", "missing", "files"}),
            payloads={"conflict": 2, "files": 2},
        ),
        Verb(
            "sync",
            (_REPO, _BASE_ARG, Arg("pull", _one_of("0", "1"))),
            records=frozenset({"synced", "why"}),
        ),
        Verb(
            "await",
            (_WORKDIR, Arg("seconds", _shaped(_SECONDS, "a whole number of seconds, 1 to 1e9"))),
            group=(_RUN_ID,),
            records=frozenset({"ended", "gone", "tick"}),
        ),
        Verb(
            "land",
            (
                _REPO,
                _BASE_ARG,
                Arg("sha", _shaped(SHA, _SHA_SHOULD)),
                Arg("expected sha", _shaped(SHA, _SHA_SHOULD)),
            ),
            records=frozenset({"landed"}),
        ),
        Verb(
            "doctor",
            (_WORKDIR, Arg("minimum free KiB", _number)),
            group=(_REPO,),
            stdin="the claude command's words, each NUL-ended, then an empty one; then the env "
            "records",
            records=frozenset({"check"}),
        ),
        Verb(
            "setup",
            (Arg("dry run", _one_of("0", "1")),),
            group=(
                Arg("check size", _number),
                Arg("run size", _number),
                Arg("timeout", _shaped(_SECONDS, "a whole number of seconds, 1 to 999999999")),
            ),
            stdin="per step, its check command then its run command (sized; 0: no run)",
            records=frozenset({"step"}),
            payloads={"step": 3},
        ),
        Verb(
            "app",
            (
                _WORKDIR,
                _RUN_ID,
                Arg("worktree", _path),
                Arg("tmux socket", _shaped(_SOCKET, "a tmux socket name")),
                Arg("action", _one_of("start", "stop")),
            ),
            records=frozenset({"app"}),
        ),
    )
}
# Started by dispatch in the run's tmux session, from its installed copy; never sent.
LAUNCHER = Verb("run", (Arg("run dir", _path),), framed=False)


def check_args(verb: str, args: Sequence[str]) -> None:
    """Check the arguments of one coord-run verb; raise `UsageError` naming the bad one."""
    spec = VERBS.get(verb)
    if spec is None:
        raise UsageError(f"unknown remote command {verb!r} (expected one of {', '.join(VERBS)})")
    fixed, group = spec.args, spec.group
    extra = len(args) - len(fixed)
    if extra < 0 or (extra % len(group) if group else extra):
        raise UsageError(
            f"remote command {verb} takes {spec.arity} arguments "
            f"({', '.join(a.what for a in (*fixed, *group))}), not {len(args)}"
        )
    for arg, value in zip(fixed, args, strict=False):
        arg.check(verb, arg.what, value)
    for k, value in enumerate(args[len(fixed) :]):
        arg = group[k % len(group)]
        arg.check(verb, arg.what, value)


def remote_argv(verb: str, *args: str) -> list[str]:
    """Build the argv that runs one coord-run verb on a machine; raise `UsageError` if bad."""
    check_args(verb, args)
    # --norc: sshd's login shell has already read ~/.bashrc once; without it the inner bash
    # (which also looks started by sshd) reads it again, ~200 ms a command with pyenv.
    return ["bash", "--norc", "-c", remote_script(verb), HEADER, verb, *args]
