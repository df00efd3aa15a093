"""test, push and review dispatches, run for real: real git, real bash, real tmux and sshd.

1. ``test`` checks a commit out detached in a worktree of its own, runs the configured build
   then tests there as shell, answers how they ended (a failing test is an answer, not a
   failure), keeps output.log and result.json and removes the worktree.
2. ``push`` pushes a branch, as the repo has it, to origin, or says plainly why not.
3. A ``review`` dispatch works in a detached worktree at the branch's head, and a review
   that fails undoes its worktree but never the worker's branch.
4. Neither side takes a ref, an id or a branch that is not the declared shape: nothing in
   them is evaluated, nothing reaches git as an option.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordlib.errors import UsageError
from coordlib.runtime.answers import (
    Pushed,
    Tested,
    failure_reason,
    parse_clean,
    parse_dispatch,
    parse_push,
    parse_test,
)
from coordlib.runtime.builders import clean_command, dispatch_command, push_command, test_command
from coordlib.runtime.command import LaunchSpec
from coordlib.runtime.local import LocalTransport
from coordlib.runtime.protocol import (
    HEADER,
    TEST_TAIL,
    CleanMode,
    DispatchMode,
    ExitCode,
    ExitReason,
    check_args,
    remote_script,
)
from coordlib.runtime.ssh import SSHTarget, SSHTransport
from coordlib.runtime.transport import CompletedCommand, Transport
from coordlib.testing import GitRepo, SSHServer, make_git_repo
from coordlib.testing.gitrepo import git

BRANCH = "issue-7-add-feature"
CANARY = "PWNED-branch-verbs"


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    """A clone with a bare origin, and a branch one commit ahead of main (not pushed)."""
    made = make_git_repo(tmp_path / "api", files={"README.md": "# api\n"})
    git("checkout", "-q", "-b", BRANCH, cwd=made.path)
    (made.path / "feature.txt").write_text("on the branch\n")
    git("add", "feature.txt", cwd=made.path)
    git("commit", "-q", "-m", "add the feature", cwd=made.path)
    git("checkout", "-q", "main", cwd=made.path)
    return made


def sha_of(repo: Path, ref: str) -> str:
    return git("rev-parse", "--verify", f"{ref}^{{commit}}", cwd=repo)


def worktrees(repo: Path) -> list[str]:
    listed = git("worktree", "list", "--porcelain", cwd=repo).splitlines()
    return [line.removeprefix("worktree ") for line in listed if line.startswith("worktree ")]


def run(
    argv: list[str], stdin: bytes = b"", transport: Transport | None = None
) -> CompletedCommand:
    """Run one remote command through a real transport (the local one unless told)."""

    async def go() -> CompletedCommand:
        t = transport or LocalTransport("local")
        try:
            return await t.run(argv, input=stdin, check=False, timeout=90)
        finally:
            await t.close()

    return asyncio.run(go())


def a_test(
    tmp_path: Path, repo: GitRepo, id: str, ref: str = BRANCH, **kw: Any
) -> tuple[CompletedCommand, Tested | None]:
    """Run a test of `ref`; return the command, and its answer when it succeeded."""
    kw = {"build": None, "test": None, "timeout": 60, **kw}
    argv, stdin = test_command(str(tmp_path / "wd"), id, str(repo.path), ref, **kw)
    done = run(argv, stdin)
    return done, parse_test(done.stdout, machine="local") if done.returncode == 0 else None


def coord_run(verb: str, *args: str, stdin: bytes = b"") -> CompletedCommand:
    """Run a verb of the real script with whatever arguments: no Python check in front."""
    return run(["bash", "--norc", "-c", remote_script(verb), HEADER, verb, *args], stdin)


# ======================================================== 1. test


def test_a_passing_test_runs_build_then_tests_in_a_detached_worktree_of_the_ref(
    tmp_path: Path, repo: GitRepo
) -> None:
    sha = sha_of(repo.path, BRANCH)
    build = "echo building; echo 'to stderr' >&2; cat feature.txt > built.txt"
    check = (
        'echo "testing at $(git rev-parse HEAD) in $PWD"; echo "CI=$CI COORD_TEST=$COORD_TEST";'
        " git symbolic-ref -q HEAD || echo detached; cat built.txt"
    )
    done, said = a_test(tmp_path, repo, "api-7-1f3a-t1", build=build, test=check)
    assert done.returncode == 0, done.err
    assert said is not None
    test_dir = tmp_path / "wd" / "tests" / "api-7-1f3a-t1"
    assert said == Tested(
        sha=sha, passed=True, exit_code=0, phase="test", timed_out=False,
        seconds=said.seconds, log=str(test_dir / "output.log"), tail=said.tail,
    )  # fmt: skip
    log = (test_dir / "output.log").read_text()
    assert log == said.tail  # short: the tail is all of it
    assert log.splitlines() == [
        "building",
        "to stderr",
        f"testing at {sha} in {test_dir / 'wt'}",
        "CI=true COORD_TEST=1",
        "detached",
        "on the branch",
    ]
    result = json.loads((test_dir / "result.json").read_text())
    assert result == {"sha": sha, "exit_code": 0, "phase": "test", "timed_out": False,
                      "seconds": said.seconds}  # fmt: skip
    # The worktree is gone, from disk and from git's list; the log and result stay.
    assert sorted(p.name for p in test_dir.iterdir()) == ["output.log", "result.json"]
    assert worktrees(repo.path) == [str(repo.path)]
    assert git("status", "--porcelain", cwd=repo.path) == ""  # the clone is untouched


def test_a_failing_build_is_an_answer_and_its_tests_never_run(
    tmp_path: Path, repo: GitRepo
) -> None:
    done, said = a_test(
        tmp_path, repo, "t-build", build="echo compiling; exit 3", test=f"touch {tmp_path}/tested"
    )
    assert done.returncode == 0, done.err
    assert said is not None
    assert (said.passed, said.exit_code, said.phase, said.timed_out) == (False, 3, "build", False)
    assert said.tail == "compiling\n"
    assert not (tmp_path / "tested").exists()
    assert worktrees(repo.path) == [str(repo.path)]


def test_failing_tests_are_an_answer(tmp_path: Path, repo: GitRepo) -> None:
    done, said = a_test(tmp_path, repo, "t-tests", build="true", test="echo 1 failed; exit 1")
    assert done.returncode == 0, done.err
    assert said is not None
    assert (said.passed, said.exit_code, said.phase, said.timed_out) == (False, 1, "test", False)
    assert said.tail == "1 failed\n"
    record = json.loads(Path(said.log).with_name("result.json").read_text())
    assert (record["exit_code"], record["phase"], record["timed_out"]) == (1, "test", False)


def test_tests_that_outrun_the_budget_are_killed_and_said_to_have_timed_out(
    tmp_path: Path, repo: GitRepo
) -> None:
    started = time.monotonic()
    done, said = a_test(
        tmp_path, repo, "t-slow", build="echo built", test="echo started; sleep 30", timeout=1.5
    )
    assert time.monotonic() - started < 15
    assert done.returncode == 0, done.err
    assert said is not None
    assert (said.passed, said.phase, said.timed_out, said.exit_code) == (False, "test", True, 124)
    assert 1.5 <= said.seconds < 15
    assert said.tail == "built\nstarted\n"
    assert worktrees(repo.path) == [str(repo.path)]
    # A command's own exit status 124, well within the budget, is no time-out.
    done, said = a_test(tmp_path, repo, "t-124", test="exit 124", timeout=60)
    assert said is not None and (said.exit_code, said.timed_out) == (124, False)


def test_no_commands_is_a_pass_with_nothing_run(tmp_path: Path, repo: GitRepo) -> None:
    done, said = a_test(tmp_path, repo, "t-none", build="", test="   ")
    assert done.returncode == 0, done.err
    assert said is not None
    assert (said.passed, said.exit_code, said.phase, said.tail) == (True, 0, "none", "")
    assert Path(said.log).read_bytes() == b""


def test_a_test_of_a_commit_by_its_sha_and_the_tail_of_a_long_log(
    tmp_path: Path, repo: GitRepo
) -> None:
    sha = sha_of(repo.path, "main")
    check = "test ! -e feature.txt && for i in $(seq 1 2000); do echo line $i; done; printf '\\xff'"
    done, said = a_test(tmp_path, repo, "t-sha", ref=sha, test=check)
    assert done.returncode == 0, done.err
    assert said is not None and said.sha == sha and said.passed
    whole = Path(said.log).read_bytes()
    assert len(whole) > TEST_TAIL and whole.startswith(b"line 1\n")
    assert said.tail == whole[-TEST_TAIL:].decode("utf-8", "replace")
    assert said.tail.endswith("line 2000\n\ufffd")


def test_a_missing_ref_fails_with_its_own_code_and_makes_nothing(
    tmp_path: Path, repo: GitRepo
) -> None:
    for ref, says in (
        ("issue-99-nope", "branch issue-99-nope does not exist in"),
        ("f" * 40, f"commit {'f' * 40} is not in"),
    ):
        done, _ = a_test(tmp_path, repo, "t-missing", ref=ref, test="true")
        assert (done.returncode, done.stdout) == (ExitCode.NO_COMMIT, b""), done.err
        assert failure_reason(done.err).startswith(says), done.err
    assert not (tmp_path / "wd" / "tests" / "t-missing").exists()
    # "main" is a branch, but not one coord makes: refused before it is sent.
    with pytest.raises(UsageError, match="ref"):
        a_test(tmp_path, repo, "t-main", ref="main", test="true")


def test_a_test_id_is_used_once_and_a_clone_is_needed(tmp_path: Path, repo: GitRepo) -> None:
    done, _ = a_test(tmp_path, repo, "t-once", test="echo first")
    assert done.returncode == 0, done.err
    again, _ = a_test(tmp_path, repo, "t-once", test="echo second")
    assert again.returncode == ExitCode.RUN_EXISTS, again.err
    assert "already exists" in failure_reason(again.err)
    assert (tmp_path / "wd" / "tests" / "t-once" / "output.log").read_text() == "first\n"
    argv, stdin = test_command(
        str(tmp_path / "wd"), "t-norepo", str(tmp_path / "nowhere"), BRANCH,
        build=None, test="true", timeout=5,
    )  # fmt: skip
    done = run(argv, stdin)
    assert done.returncode == ExitCode.NOT_A_REPO, done.err
    assert not (tmp_path / "wd" / "tests" / "t-norepo").exists()


def test_commands_run_as_shell_but_a_ref_or_an_id_never_does(tmp_path: Path, repo: GitRepo) -> None:
    # The commands are the coordinator's config: shell, with every metacharacter of it.
    build = "x=$((6 * 7)); echo \"$x\" > answer; echo 'quoted; not run' | tr a-z A-Z"
    check = 'test "$(cat answer)" = 42 && printf "%s|" a\\ b "c;d" && echo `echo ok`'
    done, said = a_test(tmp_path, repo, "t-shell", build=build, test=check)
    assert done.returncode == 0, done.err
    assert said is not None and said.passed, said
    assert said.tail == "QUOTED; NOT RUN\na b|c;d|ok\n"
    # An argument is never: both sides refuse anything but the declared shapes.
    wd, canary = str(tmp_path / "wd"), tmp_path / CANARY
    good = [wd, "t-hostile", str(repo.path), BRANCH, "0", "4", "5"]
    hostile = [
        (1, f"t$(touch {canary})"), (1, "../../victim"), (1, "-rf"), (1, "t;id"),
        (3, f"issue-1-$(touch {canary})"), (3, f"issue-1;touch {canary}"), (3, "--output=x"),
        (3, "HEAD"), (3, "main"), (3, "issue-1..issue-2"), (3, "issue-1^{tree}"),
        (3, "@{-1}"), (3, f"{'a' * 39}`"), (3, "issue-1\nx"), (0, "-x"), (2, "--upload-pack=x"),
        (6, "0"), (6, "1e3"), (6, "9" * 10), (6, "$((1))"), (4, "-1"), (5, "a[$(id)]"),
    ]  # fmt: skip
    for index, value in hostile:
        args = list(good)
        args[index] = value
        with pytest.raises(UsageError, match="remote command test"):
            check_args("test", args)
        done = coord_run("test", *args, stdin=b"true")
        assert (done.returncode, done.stdout) == (ExitCode.USAGE, b""), (value, done.err)
        assert done.err.startswith("coord-run: test: ") and done.err.count("\n") == 1, done.err
    assert not canary.exists()
    assert not (tmp_path / "wd" / "tests" / "t-hostile").exists()
    assert worktrees(repo.path) == [str(repo.path)]


def test_a_test_stopped_by_a_signal_ends_its_commands_and_removes_its_worktree(
    tmp_path: Path, repo: GitRepo
) -> None:
    argv, stdin = test_command(
        str(tmp_path / "wd"), "t-term", str(repo.path), BRANCH, build=None,
        test=f"echo started; sleep 37 & sleep 37; touch {tmp_path}/finished", timeout=60,
    )  # fmt: skip
    log = tmp_path / "wd" / "tests" / "t-term" / "output.log"
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
        deadline = time.monotonic() + 20
        while not (log.exists() and log.read_text()):
            assert time.monotonic() < deadline, "the test never started"
            time.sleep(0.05)
        proc.terminate()
        out = proc.stdout.read()
        proc.wait(timeout=20)
    assert (proc.returncode, out) == (143, b"")
    assert worktrees(repo.path) == [str(repo.path)]
    assert not (tmp_path / "finished").exists() and log.read_text() == "started\n"
    sleepers = subprocess.run(["pgrep", "-f", "sleep 37"], capture_output=True, text=True)
    assert sleepers.stdout == ""  # the command's background processes went with it


def test_a_command_cut_short_is_never_run(tmp_path: Path, repo: GitRepo) -> None:
    wd = str(tmp_path / "wd")
    marker = tmp_path / "ran"
    command = f"touch {marker}".encode()
    done = coord_run("test", wd, "t-cut", str(repo.path), BRANCH, "0",
                     str(len(command) + 5), "5", "0", stdin=command)  # fmt: skip
    assert done.returncode == ExitCode.WRITE_FAILED, done.err
    assert "arrived truncated" in failure_reason(done.err)
    assert not marker.exists() and not (tmp_path / "wd" / "tests" / "t-cut").exists()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    value=st.one_of(
        st.from_regex(r"issue-[0-9]{1,3}(-[a-z0-9]{1,4}){0,3}", fullmatch=True),
        st.from_regex(r"[0-9a-f]{40}", fullmatch=True),
        st.text(st.characters(codec="utf-8", exclude_characters="\x00"),
                max_size=45),
        st.sampled_from(["issue-1-", "issue--1", "issue-1-A", "issue-\u0661", "a" * 40,
                         "F" * 40, "0" * 41, "issue-1-" + "a" * 200, "issue-1-x\n"]),
    )
)  # fmt: skip
def test_both_sides_take_the_same_refs_and_branches(tmp_path: Path, value: str) -> None:
    gone = str(tmp_path / "no-repo")  # what is taken goes on to find no repo there
    for verb, args, taken in (
        ("test", [str(tmp_path / "wd"), "t-1", gone, value, "0", "0", "5"], ExitCode.NOT_A_REPO),
        ("push", [gone, value], ExitCode.NOT_A_REPO),
    ):
        try:
            check_args(verb, args)
            python_takes = True
        except UsageError:
            python_takes = False
        done = coord_run(verb, *args)
        assert done.returncode == (taken if python_takes else ExitCode.USAGE), (
            verb,
            value,
            done.err,
        )


# ======================================================== 2. push


def test_push_sends_the_branch_to_origin(tmp_path: Path, repo: GitRepo) -> None:
    assert repo.origin is not None
    sha = sha_of(repo.path, BRANCH)
    done = run(push_command(str(repo.path), BRANCH))
    assert done.returncode == 0, done.err
    assert parse_push(done.stdout, machine="local") == Pushed(BRANCH, sha)
    assert sha_of(repo.origin, f"refs/heads/{BRANCH}") == sha
    # Again, with nothing new: still a push, of the same commit.
    again = run(push_command(str(repo.path), BRANCH))
    assert parse_push(again.stdout) == Pushed(BRANCH, sha)


def test_push_says_why_it_cannot(tmp_path: Path, repo: GitRepo) -> None:
    lone = make_git_repo(tmp_path / "lone", with_origin=False)
    git("branch", BRANCH, cwd=lone.path)
    done = run(push_command(str(lone.path), BRANCH))
    assert (done.returncode, done.stdout) == (ExitCode.NO_ORIGIN, b""), done.err
    assert "has no remote origin" in failure_reason(done.err)

    done = run(push_command(str(repo.path), "issue-8-never-made"))
    assert (done.returncode, done.stdout) == (ExitCode.NO_BRANCH, b""), done.err
    assert failure_reason(done.err) == f"branch issue-8-never-made does not exist in {repo.path}"

    # origin's branch has moved on without us: rejected, not forced, and git says why.
    assert repo.origin is not None
    git("push", "-q", "origin", f"main:refs/heads/{BRANCH}", cwd=repo.path)
    git("commit", "-q", "--allow-empty", "-m", "elsewhere", cwd=repo.path)  # main moves on
    git("push", "-q", "origin", f"main:refs/heads/{BRANCH}", cwd=repo.path)
    theirs = sha_of(repo.origin, f"refs/heads/{BRANCH}")
    done = run(push_command(str(repo.path), BRANCH))
    assert (done.returncode, done.stdout) == (ExitCode.PUSH_FAILED, b""), done.err
    reason = failure_reason(done.err)
    assert reason.startswith(f"git push origin {BRANCH} failed in {repo.path}: "), reason
    assert "[rejected]" in reason and "hint:" not in reason and "\n" not in reason, reason
    assert sha_of(repo.origin, f"refs/heads/{BRANCH}") == theirs

    done = run(push_command(str(tmp_path / "nowhere"), BRANCH))
    assert done.returncode == ExitCode.NOT_A_REPO, done.err


def test_push_takes_no_branch_but_a_coord_one(tmp_path: Path, repo: GitRepo) -> None:
    assert repo.origin is not None
    canary = tmp_path / CANARY
    hostile = ["main", "--force", f"{BRANCH}:refs/heads/main", f"+{BRANCH}", "issue-7 x",
               f"issue-7-$(touch {canary})", "issue-7--x", "issue-7-", "issue-"]  # fmt: skip
    for value in hostile:
        with pytest.raises(UsageError, match="remote command push"):
            push_command(str(repo.path), value)
        done = coord_run("push", str(repo.path), value)
        assert (done.returncode, done.stdout) == (ExitCode.USAGE, b""), (value, done.err)
        assert done.err.startswith("coord-run: push: "), done.err
    done = coord_run("push", "--upload-pack=x", BRANCH)
    assert done.returncode == ExitCode.USAGE, done.err
    assert not canary.exists()
    assert git("for-each-ref", "--format=%(refname)", cwd=repo.origin) == "refs/heads/main"


# ======================================================== 3. review dispatches


def review(
    tmp_path: Path, repo: GitRepo, socket: str, id: str, branch: str = BRANCH, **kw: Any
) -> tuple[CompletedCommand, Path]:
    wd = tmp_path / "wd"
    wt = wd / "worktrees" / "api" / id
    argv, stdin = dispatch_command(
        workdir=str(wd), id=id, repo_path=str(repo.path), worktree=str(wt), branch=branch,
        base="main", socket=socket, mode=DispatchMode.REVIEW, briefing="Review it.\n",
        spec={"id": id}, launch=LaunchSpec(str(wt), ["true"], [], 60_000, 60_000, 1000, 0.1),
        env={},
    )  # fmt: skip
    if "hash" in kw:
        argv[6 + 7] = kw["hash"]  # the launcher's hash: a text that is not it is refused
    return run(argv, stdin), wt


def test_a_review_works_detached_at_the_branch_head_and_leaves_the_branch_alone(
    tmp_path: Path, repo: GitRepo, tmux_socket: str
) -> None:
    sha = sha_of(repo.path, BRANCH)
    # The worker's own worktree still has the branch checked out: no obstacle to a review.
    worker_wt = tmp_path / "worker-wt"
    git("worktree", "add", "-q", str(worker_wt), BRANCH, cwd=repo.path)
    done, wt = review(tmp_path, repo, tmux_socket, "api-7-rv01")
    assert done.returncode == 0, done.err
    assert parse_dispatch(done.stdout).head == sha
    assert git("rev-parse", "HEAD", cwd=wt) == sha
    assert subprocess.run(["git", "-C", str(wt), "symbolic-ref", "-q", "HEAD"],
                          capture_output=True).returncode == 1  # detached  # fmt: skip
    assert (wt / "feature.txt").read_text() == "on the branch\n"
    assert sha_of(repo.path, BRANCH) == sha
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=worker_wt) == BRANCH
    # It never fetched (origin has no such branch, and FETCH_HEAD was never written).
    assert not (repo.path / ".git" / "FETCH_HEAD").exists()
    run_dir = tmp_path / "wd" / "runs" / "api-7-rv01"
    deadline = time.monotonic() + 30
    while not (run_dir / "exit.json").exists():
        assert time.monotonic() < deadline, "the launcher never recorded its end"
        time.sleep(0.05)
    # Once ended, clean may remove it: detached, but at a commit a branch holds.
    argv, stdin = clean_command(
        str(tmp_path / "wd"), CleanMode.CHECK, keep_runs=True, runs=[("api-7-rv01", str(wt))]
    )
    said = run(argv, stdin)
    assert said.returncode == 0, said.err
    assert parse_clean(said.stdout)["api-7-rv01"]["worktree"] == "would_remove"


def test_a_failed_review_undoes_its_worktree_but_never_the_branch(
    tmp_path: Path, repo: GitRepo, tmux_socket: str
) -> None:
    sha = sha_of(repo.path, BRANCH)
    done, wt = review(tmp_path, repo, tmux_socket, "api-7-rv02", hash="0123456789ab")
    assert done.returncode == ExitCode.WRITE_FAILED, done.err
    assert not wt.exists() and worktrees(repo.path) == [str(repo.path)]
    assert sha_of(repo.path, BRANCH) == sha  # the worker's branch, untouched
    record = json.loads((tmp_path / "wd" / "runs" / "api-7-rv02" / "exit.json").read_text())
    assert (record["reason"], record["exit_code"]) == (ExitReason.DISPATCH_FAILED, 15)
    # The same review works once the cause is gone (a fresh run id, as a retry has).
    done, wt = review(tmp_path, repo, tmux_socket, "api-7-rv03")
    assert done.returncode == 0, done.err


def test_a_review_of_a_branch_that_does_not_exist_makes_nothing(
    tmp_path: Path, repo: GitRepo, tmux_socket: str
) -> None:
    done, wt = review(tmp_path, repo, tmux_socket, "api-9-rv01", branch="issue-9-gone")
    assert (done.returncode, done.stdout) == (ExitCode.WORKTREE_FAILED, b""), done.err
    assert failure_reason(done.err) == (
        f"branch issue-9-gone does not exist in {repo.path}: nothing to review"
    )
    assert not wt.exists() and "issue-9-gone" not in repo.branches()
    # A review never takes a worktree that is there already: its undo would remove it.
    taken = tmp_path / "wd" / "worktrees" / "api" / "api-7-rv04"
    taken.mkdir(parents=True)
    (taken / "someone's").write_text("work\n")
    done, wt = review(tmp_path, repo, tmux_socket, "api-7-rv04")
    assert wt == taken and done.returncode == ExitCode.WORKTREE_FAILED, done.err
    assert failure_reason(done.err) == f"{wt} already exists (a worktree of another run?)"
    assert (taken / "someone's").read_text() == "work\n"


# ======================================================== 4. over SSH


@pytest.mark.ssh
def test_a_test_over_real_ssh(tmp_path: Path, repo: GitRepo, sshd: SSHServer) -> None:
    target = SSHTarget(
        name="remote", host=sshd.host, port=sshd.port, user=sshd.user,
        identity_file=str(sshd.client_key), known_hosts=str(sshd.known_hosts),
    )  # fmt: skip
    argv, stdin = test_command(
        str(tmp_path / "wd"), "api-7-ssh-t1", str(repo.path), BRANCH,
        build="echo 'built; with $HOME' > out.txt", test="cat out.txt feature.txt; exit 5",
        timeout=30,
    )  # fmt: skip
    done = run(argv, stdin, SSHTransport(target))
    assert done.returncode == 0, done.err
    said = parse_test(done.stdout, machine="remote")
    assert (said.sha, said.exit_code, said.phase, said.passed) == (
        sha_of(repo.path, BRANCH), 5, "test", False
    )  # fmt: skip
    assert said.tail == "built; with $HOME\non the branch\n"
    assert worktrees(repo.path) == [str(repo.path)]
    assert os.path.isfile(said.log)
