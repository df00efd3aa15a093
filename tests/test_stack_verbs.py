"""stack and land, run for real: real git repos with a bare origin, real bash, and sshd.

1. ``stack`` applies ready branches one after another on origin's base (merge, squash or
   rebase) in a worktree of its own that it removes again, and answers what became of each:
   applied (the stack's head after it), conflict (left out, with the conflicting paths: the
   stack goes on without it) or missing; and the paths each branch changes.
2. ``land`` pushes exactly a stacked commit to origin's base, only while origin's base is the
   commit the stack was made on, and only as a fast-forward.
3. Neither side takes an argument that is not the declared shape, and a commit message is
   never run: nothing in them is evaluated, nothing reaches git as an option.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordlib.errors import UsageError
from coordlib.runtime.answers import (
    Landed,
    Stacked,
    StackStep,
    failure_reason,
    parse_land,
    parse_stack,
)
from coordlib.runtime.builders import land_command, stack_command
from coordlib.runtime.local import LocalTransport
from coordlib.runtime.protocol import (
    HEADER,
    STACK_WORKTREE,
    STACKS,
    ExitCode,
    StackMethod,
    check_args,
    remote_script,
)
from coordlib.runtime.ssh import SSHTarget, SSHTransport
from coordlib.runtime.transport import CompletedCommand, Transport
from coordlib.testing import GitRepo, SSHServer, make_git_repo
from coordlib.testing.gitrepo import git

CANARY = "PWNED-stack-verbs"
METHODS = list(StackMethod)
COORD = "coord <coord@localhost>"
WORKER = "coord-test <test@coord.invalid>"  # who commits on the branches (gitrepo's git)


@pytest.fixture(autouse=True)
def no_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A home without a .gitconfig: a stack's commits are coord's unless the repo says."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    return make_git_repo(
        tmp_path / "api", files={"README.md": "# api\n", "shared.txt": "a\nb\nc\n"}
    )


def make_branch(
    repo: GitRepo, name: str, *commits: dict[str, str | None], push: bool = True
) -> str:
    """Make branch `name` from main with one commit per dict (path -> text, None: deleted)."""
    git("checkout", "-q", "-b", name, "main", cwd=repo.path)
    for k, files in enumerate(commits):
        for path, text in files.items():
            if text is None:
                git("rm", "-q", "--", path, cwd=repo.path)
                continue
            (repo.path / path).parent.mkdir(parents=True, exist_ok=True)
            (repo.path / path).write_text(text)
        git("add", "-A", cwd=repo.path)
        git("commit", "-q", "-m", f"{name}: commit {k + 1}", cwd=repo.path)
    if push:
        git("push", "-q", "origin", name, cwd=repo.path)
    git("checkout", "-q", "main", cwd=repo.path)
    return sha_of(repo.path, name)


def three_branches(repo: GitRepo) -> list[str]:
    """Three branches from main, each adding a file of its own (the second in two commits)."""
    make_branch(repo, "issue-1-one", {"one.txt": "1\n"})
    make_branch(repo, "issue-2-two", {"two.txt": "2\n"}, {"two.txt": "2\n2\n"})
    make_branch(repo, "issue-3-three", {"three.txt": "3\n"})
    return ["issue-1-one", "issue-2-two", "issue-3-three"]


def sha_of(repo: Path, ref: str) -> str:
    return git("rev-parse", "--verify", f"{ref}^{{commit}}", cwd=repo)


def parents(repo: Path, sha: str) -> list[str]:
    return git("rev-list", "--parents", "-n1", sha, cwd=repo).split()[1:]


def tree(repo: Path, sha: str) -> dict[str, str]:
    """The files of a commit and their text."""
    names = git("-c", "core.quotePath=false", "ls-tree", "-r", "--name-only", sha, cwd=repo)
    return {n: git("show", f"{sha}:{n}", cwd=repo) for n in names.splitlines()}


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


def coord_run(verb: str, *args: str, stdin: bytes = b"") -> CompletedCommand:
    """Run a verb of the real script with whatever arguments: no Python check in front."""
    return run(["bash", "--norc", "-c", remote_script(verb), HEADER, verb, *args], stdin)


def a_stack(
    tmp_path: Path,
    repo: GitRepo,
    method: str,
    branches: list[str] | list[tuple[str, str]],
    id: str = "api-stack-1",
    **kw: Any,
) -> tuple[CompletedCommand, Stacked | None]:
    """Stack `branches` (names, or (name, message)) on main; the command, and its answer."""
    pairs = [b if isinstance(b, tuple) else (b, f"Merge {b}") for b in branches]
    argv, stdin = stack_command(
        str(tmp_path / "wd"), id, str(repo.path), kw.get("base", "main"), method, pairs
    )
    done = run(argv, stdin, kw.get("transport"))
    return done, parse_stack(done.stdout, machine="local") if done.returncode == 0 else None


def assert_gone(tmp_path: Path, repo: GitRepo, id: str = "api-stack-1") -> None:
    """Nothing of the stack is left but its commits: no worktree, no stacks/ID."""
    assert worktrees(repo.path) == [str(repo.path)]
    assert not (tmp_path / "wd" / STACKS / id).exists()
    assert git("status", "--porcelain", cwd=repo.path) == ""  # the clone is untouched
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=repo.path) == "main"


# ======================================================== 1. stack


def test_a_merge_stack_makes_a_merge_commit_per_branch_on_origins_base(
    tmp_path: Path, repo: GitRepo
) -> None:
    names = three_branches(repo)
    heads = [sha_of(repo.path, b) for b in names]
    base = sha_of(repo.path, "main")
    done, said = a_stack(tmp_path, repo, "merge", [(b, f"Merge PR for {b}") for b in names])
    assert done.returncode == 0, done.err
    assert said is not None and said.base == base
    assert [(s.branch, s.state, s.files, s.conflicts) for s in said.steps] == [
        ("issue-1-one", "applied", ("one.txt",), ()),
        ("issue-2-two", "applied", ("two.txt",), ()),
        ("issue-3-three", "applied", ("three.txt",), ()),
    ]
    top = base
    for step, head in zip(said.steps, heads, strict=True):
        assert step.sha is not None
        # A merge commit on the stack so far, whose second parent is the branch's head.
        assert parents(repo.path, step.sha) == [top, head]
        assert git("log", "-1", "--format=%B", step.sha, cwd=repo.path) == (
            f"Merge PR for {step.branch}"
        )
        assert git("log", "-1", "--format=%an <%ae>|%cn <%ce>", step.sha, cwd=repo.path) == (
            f"{COORD}|{COORD}"  # no identity configured: coord's
        )
        top = step.sha
    assert said.head == top
    assert tree(repo.path, top) == {
        "README.md": "# api", "shared.txt": "a\nb\nc", "one.txt": "1", "two.txt": "2\n2",
        "three.txt": "3",
    }  # fmt: skip
    assert_gone(tmp_path, repo)
    # Origin and the branches are as they were: a stack lands nothing.
    assert sha_of(repo.path, "main") == base and repo.origin is not None
    assert sha_of(repo.origin, "main") == base
    assert [sha_of(repo.path, b) for b in names] == heads


def test_a_squash_stack_makes_one_commit_per_branch_with_its_message_kept_literally(
    tmp_path: Path, repo: GitRepo
) -> None:
    names = three_branches(repo)
    canary = tmp_path / CANARY
    messages = [
        f"Squash #1: $(touch {canary}) `touch {canary}`; touch {canary} && echo 'q' \"d\" \\",
        f"--amend\n\nBody with $HOME, ${{IFS}}, é, a tab\there and | touch {canary} >x\n",
        "# not a comment here\n-m other\n",
    ]
    done, said = a_stack(tmp_path, repo, "squash", list(zip(names, messages, strict=True)))
    assert done.returncode == 0, done.err
    assert said is not None and [s.state for s in said.steps] == ["applied"] * 3
    top = said.base
    for step, message in zip(said.steps, messages, strict=True):
        assert step.sha is not None
        assert parents(repo.path, step.sha) == [top]  # one commit, on the one before
        assert git("log", "-1", "--format=%B", step.sha, cwd=repo.path) == message.strip()
        assert git("log", "-1", "--format=%an <%ae>", step.sha, cwd=repo.path) == COORD
        top = step.sha
    assert {"one.txt", "two.txt", "three.txt"} <= set(tree(repo.path, top))
    assert tree(repo.path, top)["two.txt"] == "2\n2"  # both of the branch's commits
    assert not canary.exists() and not (repo.path / "x").exists()
    assert_gone(tmp_path, repo)


def test_a_rebase_stack_picks_the_branches_commits_into_a_linear_history(
    tmp_path: Path, repo: GitRepo
) -> None:
    names = three_branches(repo)
    done, said = a_stack(tmp_path, repo, "rebase", names)
    assert done.returncode == 0, done.err
    assert said is not None and [s.state for s in said.steps] == ["applied"] * 3
    head = said.head
    picked = git("rev-list", "--parents", f"{said.base}..{head}", cwd=repo.path).splitlines()
    assert len(picked) == 4 and all(len(line.split()) == 2 for line in picked)  # linear
    assert git("log", "--format=%s", f"{said.base}..{head}", cwd=repo.path).splitlines() == [
        "issue-3-three: commit 1", "issue-2-two: commit 2", "issue-2-two: commit 1",
        "issue-1-one: commit 1",
    ]  # fmt: skip
    # Each step's sha is the stack's head with that branch on it.
    assert [len(git("rev-list", f"{said.base}..{s.sha}", cwd=repo.path).split())
            for s in said.steps] == [1, 3, 4]  # fmt: skip
    # The commits keep their author (and message); coord commits them.
    assert set(git("log", "--format=%an <%ae>|%cn <%ce>", f"{said.base}..{head}",
                   cwd=repo.path).splitlines()) == {f"{WORKER}|{COORD}"}  # fmt: skip
    assert {"one.txt", "two.txt", "three.txt"} <= set(tree(repo.path, head))
    assert_gone(tmp_path, repo)


def test_the_repos_own_identity_commits_when_it_has_one(tmp_path: Path, repo: GitRepo) -> None:
    names = three_branches(repo)
    git("config", "user.name", "Merge Bot", cwd=repo.path)
    git("config", "user.email", "bot@example.com", cwd=repo.path)
    done, said = a_stack(tmp_path, repo, "merge", names[:1])
    assert done.returncode == 0, done.err
    assert said is not None and said.head != said.base
    assert git("log", "-1", "--format=%an <%ae>|%cn <%ce>", said.head, cwd=repo.path) == (
        "Merge Bot <bot@example.com>|Merge Bot <bot@example.com>"
    )


@pytest.mark.parametrize("method", METHODS)
def test_a_conflicting_branch_is_left_out_and_the_stack_goes_on_without_it(
    tmp_path: Path, repo: GitRepo, method: str
) -> None:
    make_branch(repo, "issue-1-one", {"shared.txt": "a\nONE\nc\n", "one.txt": "1\n"})
    make_branch(repo, "issue-2-two", {"two.txt": "2\n"}, {"shared.txt": "a\nTWO\nc\n"})
    make_branch(repo, "issue-3-three", {"three.txt": "3\n"})
    names = ["issue-1-one", "issue-2-two", "issue-3-three"]
    done, said = a_stack(tmp_path, repo, method, names)
    assert done.returncode == 0, done.err  # a conflict is an answer, not a failure
    assert said is not None
    first, middle, last = said.steps
    assert (first.state, last.state) == ("applied", "applied")
    assert middle == StackStep(
        "issue-2-two", "conflict", None, files=("shared.txt", "two.txt"), conflicts=("shared.txt",)
    )
    assert first.sha is not None and last.sha is not None
    # The third is applied on the first, as if the second had never been asked for.
    on_first = parents(repo.path, last.sha)
    assert on_first[0] == first.sha
    files = tree(repo.path, last.sha)
    assert files["shared.txt"] == "a\nONE\nc" and "two.txt" not in files
    assert "three.txt" in files and "one.txt" in files
    assert_gone(tmp_path, repo)


@pytest.mark.parametrize("method", METHODS)
def test_a_missing_branch_is_said_and_skipped(tmp_path: Path, repo: GitRepo, method: str) -> None:
    names = three_branches(repo)
    done, said = a_stack(tmp_path, repo, method, [names[0], "issue-9-gone", names[2]])
    assert done.returncode == 0, done.err
    assert said is not None
    assert [(s.branch, s.state) for s in said.steps] == [
        ("issue-1-one", "applied"), ("issue-9-gone", "missing"), ("issue-3-three", "applied")
    ]  # fmt: skip
    assert said.steps[1] == StackStep("issue-9-gone", "missing")
    assert said.steps[2].sha is not None
    assert set(tree(repo.path, said.steps[2].sha)) == {
        "README.md", "shared.txt", "one.txt", "three.txt"
    }  # fmt: skip
    assert_gone(tmp_path, repo)
    # Nothing but a missing branch: a stack of nothing, on the base.
    done, said = a_stack(tmp_path, repo, method, ["issue-9-gone"], id="api-stack-2")
    assert done.returncode == 0, done.err
    assert said == Stacked(sha_of(repo.path, "main"), (StackStep("issue-9-gone", "missing"),))
    assert said.head == said.base


@pytest.mark.parametrize("method", METHODS)
def test_a_branch_already_in_the_base_is_applied_as_it_is(
    tmp_path: Path, repo: GitRepo, method: str
) -> None:
    names = three_branches(repo)
    git("merge", "-q", "--ff-only", names[0], cwd=repo.path)  # #1 has landed meanwhile
    git("push", "-q", "origin", "main", cwd=repo.path)
    done, said = a_stack(tmp_path, repo, method, names[:2])
    assert done.returncode == 0, done.err
    assert said is not None and said.base == sha_of(repo.path, names[0])
    assert said.steps[0] == StackStep(names[0], "applied", said.base)  # unchanged, no files
    assert said.steps[1].state == "applied" and said.steps[1].sha != said.base


def test_the_files_each_branch_changes_are_against_the_base_it_forked_from(
    tmp_path: Path, repo: GitRepo
) -> None:
    make_branch(
        repo, "issue-5-many",
        {"dir/new file.txt": "x\n", "é.txt": "é\n", "gone.txt": "g\n"},
        {"shared.txt": "a\nb\nc\nd\n", "gone.txt": None},
    )  # fmt: skip
    git("mv", "shared.txt", "moved.txt", cwd=repo.path)  # (on main, after the fork)
    git("commit", "-q", "-m", "main moves on", cwd=repo.path)
    git("push", "-q", "origin", "main", cwd=repo.path)
    make_branch(repo, "issue-6-rename", {"README.md": None, "docs/README.md": "# api\n"})
    done, said = a_stack(tmp_path, repo, "merge", ["issue-5-many", "issue-6-rename"])
    assert done.returncode == 0, done.err
    assert said is not None
    many, rename = said.steps
    # What the branch changes in all (not gone.txt, made and removed again), against where
    # it forked (not main's own move since), with names as they are.
    assert many.files == ("dir/new file.txt", "shared.txt", "é.txt")
    assert rename.files == ("README.md", "docs/README.md")  # a rename: both paths
    assert many.state == "applied" and rename.state == "applied"
    # (#5 changed shared.txt, which main moved meanwhile: git merged it into moved.txt)
    assert tree(repo.path, said.head)["moved.txt"] == "a\nb\nc\nd"


def test_a_branch_only_in_the_repo_is_stacked_and_origins_is_preferred(
    tmp_path: Path, repo: GitRepo
) -> None:
    local = make_branch(repo, "issue-4-local", {"local.txt": "l\n"}, push=False)
    make_branch(repo, "issue-5-both", {"five.txt": "pushed\n"})
    # The repo's copy of #5 moves on without being pushed: origin's is the one stacked.
    git("checkout", "-q", "issue-5-both", cwd=repo.path)
    (repo.path / "five.txt").write_text("not pushed\n")
    git("commit", "-q", "-am", "unpushed", cwd=repo.path)
    git("checkout", "-q", "main", cwd=repo.path)
    done, said = a_stack(tmp_path, repo, "merge", ["issue-4-local", "issue-5-both"])
    assert done.returncode == 0, done.err
    assert said is not None and [s.state for s in said.steps] == ["applied", "applied"]
    assert said.steps[0].sha is not None and parents(repo.path, said.steps[0].sha)[1] == local
    assert tree(repo.path, said.head)["five.txt"] == "pushed"
    assert "local.txt" in tree(repo.path, said.head)


def test_the_base_is_origins_even_when_the_repos_is_behind_or_ahead(
    tmp_path: Path, repo: GitRepo
) -> None:
    assert repo.origin is not None
    names = three_branches(repo)
    # Someone else pushes to main; the repo never fetched it.
    other = tmp_path / "other"
    git("clone", "-q", str(repo.origin), str(other))
    (other / "theirs.txt").write_text("t\n")
    git("add", "-A", cwd=other)
    git("commit", "-q", "-m", "theirs", cwd=other)
    git("push", "-q", "origin", "main", cwd=other)
    # ...and the repo's main has a commit of its own, never pushed.
    git("commit", "-q", "--allow-empty", "-m", "ours, unpushed", cwd=repo.path)
    done, said = a_stack(tmp_path, repo, "squash", names[:1])
    assert done.returncode == 0, done.err
    assert said is not None and said.base == sha_of(other, "main")
    assert "theirs.txt" in tree(repo.path, said.head)


def test_a_repo_without_origin_stacks_on_its_own_base(tmp_path: Path) -> None:
    lone = make_git_repo(tmp_path / "lone", with_origin=False)
    make_branch(lone, "issue-1-one", {"one.txt": "1\n"}, push=False)
    done, said = a_stack(tmp_path, lone, "rebase", ["issue-1-one", "issue-2-none"])
    assert done.returncode == 0, done.err
    assert said is not None and said.base == sha_of(lone.path, "main")
    assert [s.state for s in said.steps] == ["applied", "missing"]
    assert_gone(tmp_path, lone)


def test_a_stack_that_cannot_be_made_says_why_and_leaves_nothing(
    tmp_path: Path, repo: GitRepo
) -> None:
    names = three_branches(repo)
    done, _ = a_stack(tmp_path, repo, "merge", names, base="develop")
    assert (done.returncode, done.stdout) == (ExitCode.NO_BASE, b""), done.err
    assert failure_reason(done.err) == (
        f"origin has no branch develop (the base to stack on) for {repo.path}"
    )
    assert_gone(tmp_path, repo)
    lone = make_git_repo(tmp_path / "lone", with_origin=False)
    done, _ = a_stack(tmp_path, lone, "merge", names, base="develop")
    assert done.returncode == ExitCode.NO_BASE, done.err
    assert "branch develop (the base to stack on) does not exist in" in failure_reason(done.err)
    done, _ = a_stack(tmp_path, GitRepo(tmp_path / "nowhere", None), "merge", names)
    assert done.returncode == ExitCode.NOT_A_REPO, done.err
    # An origin that cannot be reached.
    git("remote", "set-url", "origin", str(tmp_path / "gone.git"), cwd=repo.path)
    done, _ = a_stack(tmp_path, repo, "merge", names)
    assert done.returncode == ExitCode.FETCH_FAILED, done.err
    assert_gone(tmp_path, repo)
    # A stack id is used once: a directory that is there is never taken (nor removed).
    held = tmp_path / "wd" / STACKS / "api-stack-1"
    held.mkdir(parents=True)
    done, _ = a_stack(tmp_path, repo, "merge", names)
    assert done.returncode == ExitCode.RUN_EXISTS, done.err
    assert held.is_dir()


def test_messages_arrive_whole_or_the_stack_is_not_made(tmp_path: Path, repo: GitRepo) -> None:
    names = three_branches(repo)
    wd, r = str(tmp_path / "wd"), str(repo.path)
    one, two = names[:1], names[:2]
    truncated = f"the commit message for {names[0]} arrived truncated"
    for stdin, size, branches, code, says in (
        (b"5\nhello", "12", one, ExitCode.WRITE_FAILED, "the commit messages arrived truncated"),
        (b"9\nhello", "7", one, ExitCode.WRITE_FAILED, truncated),
        (b"05\nhello", "8", one, ExitCode.WRITE_FAILED, truncated),
        (b"x\nhello", "7", one, ExitCode.WRITE_FAILED, truncated),
        (b"5\nhello", "7", two, ExitCode.WRITE_FAILED,
         f"the commit message for {names[1]} did not arrive"),
        (b"1\nab", "4", one, ExitCode.WRITE_FAILED,
         "the commit messages arrived with 1 bytes too many"),
        (b"3\na\0b", "5", one, ExitCode.WRITE_FAILED, "the commit messages arrived truncated"),
        (b"3\n \n\t", "5", one, ExitCode.USAGE,
         f"stack: the commit message for {names[0]} is empty"),
    ):  # fmt: skip
        args = [wd, "api-stack-m", r, "main", "squash", size, *branches]
        done = coord_run("stack", *args, stdin=stdin)
        assert (done.returncode, done.stdout) == (code, b""), (stdin, done.err)
        assert failure_reason(done.err) == says, (stdin, done.err)
    assert_gone(tmp_path, repo, "api-stack-m")
    for bad, match in (
        ([], "no branch to stack"),
        ([(names[0], "a"), (names[0], "b")], "given twice"),
        ([(names[0], " \n\t")], "is empty"),
        ([(names[0], "a\0b")], "NUL"),
    ):
        with pytest.raises(UsageError, match=match):
            stack_command(wd, "api-stack-m", r, "main", "merge", bad)
    done = coord_run("stack", wd, "api-stack-m", r, "main", "merge", "2", stdin=b"")
    assert done.returncode == ExitCode.USAGE and "got no branch" in done.err, done.err
    done = coord_run("stack", wd, "api-stack-m", r, "main", "merge", "6", names[0], names[0],
                     stdin=b"1\na1\nb")  # fmt: skip
    assert done.returncode == ExitCode.USAGE and "given twice" in done.err, done.err


def test_stack_takes_no_argument_but_the_declared_shapes(tmp_path: Path, repo: GitRepo) -> None:
    three_branches(repo)
    wd, canary = str(tmp_path / "wd"), tmp_path / CANARY
    good = [wd, "api-stack-h", str(repo.path), "main", "merge", "3", "issue-1-one"]
    hostile = [
        (0, "-x"), (1, f"s$(touch {canary})"), (1, "../../victim"), (1, "-rf"), (2, "--git-dir=x"),
        (3, "--upload-pack=touch x"), (3, "-b"), (3, "main:refs/heads/x"), (3, "+main"),
        (3, "main~1"), (3, "main^{tree}"), (3, "@{-1}"), (3, f"main;touch {canary}"),
        (3, "main x"), (3, "ma\nin"), (3, ""), (4, "octopus"), (4, "merge;id"), (4, "--no-ff"),
        (5, "-1"), (5, "010"), (5, "1e3"), (5, "$((1))"), (5, "a[$(id)]"), (6, "main"),
        (6, "--force"), (6, f"issue-1-$(touch {canary})"), (6, "+issue-1-one"),
        (6, "issue-1-one:refs/heads/main"), (6, "refs/heads/issue-1-one"), (6, "issue-1-One"),
        (6, "issue-1-"), (6, "issue-1--x"),
    ]  # fmt: skip
    for index, value in hostile:
        args = list(good)
        args[index] = value
        with pytest.raises(UsageError, match="remote command stack"):
            check_args("stack", args)
        done = coord_run("stack", *args, stdin=b"1\nm")
        assert (done.returncode, done.stdout) == (ExitCode.USAGE, b""), (value, done.err)
        assert done.err.startswith("coord-run: stack: ") and done.err.count("\n") == 1, done.err
    assert not canary.exists()
    assert not (tmp_path / "wd" / STACKS / "api-stack-h").exists()
    assert worktrees(repo.path) == [str(repo.path)]
    # The same arguments, good, make a stack.
    done = coord_run("stack", *good, stdin=b"1\nm")
    assert done.returncode == 0, done.err
    assert [s.state for s in parse_stack(done.stdout).steps] == ["applied"]


def test_a_stack_is_made_in_stacks_id_wt_and_leaves_only_its_commits(
    tmp_path: Path, repo: GitRepo
) -> None:
    names = three_branches(repo)
    # While it is made, the worktree is stacks/<id>/wt: a branch's post-checkout hook sees it.
    hook = repo.path / ".git" / "hooks" / "post-checkout"
    hook.write_text(f'#!/bin/sh\npwd > "{tmp_path}/where"\n')
    hook.chmod(0o755)
    done, said = a_stack(tmp_path, repo, "merge", names[:1])
    assert done.returncode == 0, done.err
    assert (tmp_path / "where").read_text().strip() == str(
        tmp_path / "wd" / STACKS / "api-stack-1" / STACK_WORKTREE
    )
    assert sorted(p.name for p in (tmp_path / "wd").iterdir()) == ["locks", STACKS]
    assert list((tmp_path / "wd" / STACKS).iterdir()) == []
    # Its commits stay in the repo's objects, for the test and the land that follow.
    assert said is not None
    assert git("cat-file", "-t", said.head, cwd=repo.path) == "commit"


# ======================================================== 2. land


def stacked(tmp_path: Path, repo: GitRepo, method: str = "merge") -> Stacked:
    done, said = a_stack(tmp_path, repo, method, three_branches(repo))
    assert done.returncode == 0 and said is not None, done.err
    return said


def test_land_fast_forwards_origins_base_to_the_stacked_commit(
    tmp_path: Path, repo: GitRepo
) -> None:
    assert repo.origin is not None
    said = stacked(tmp_path, repo)
    done = run(land_command(str(repo.path), "main", said.head, said.base))
    assert done.returncode == 0, done.err
    assert parse_land(done.stdout, machine="local") == Landed("main", said.head)
    assert sha_of(repo.origin, "main") == said.head
    assert sha_of(repo.path, "origin/main") == said.head  # the repo knows where origin is
    # Again (an answer lost on the way, say): origin has it, so it is landed.
    again = run(land_command(str(repo.path), "main", said.head, said.base))
    assert again.returncode == 0, again.err
    assert parse_land(again.stdout) == Landed("main", said.head)


def test_land_of_a_step_below_the_top_lands_only_that_far(tmp_path: Path, repo: GitRepo) -> None:
    assert repo.origin is not None
    said = stacked(tmp_path, repo, "rebase")
    middle = said.steps[1].sha
    assert middle is not None
    done = run(land_command(str(repo.path), "main", middle, said.base))
    assert done.returncode == 0, done.err
    assert sha_of(repo.origin, "main") == middle
    assert "three.txt" not in tree(repo.origin, "main")


def test_land_refuses_when_origins_base_moved(tmp_path: Path, repo: GitRepo) -> None:
    assert repo.origin is not None
    said = stacked(tmp_path, repo)
    other = tmp_path / "other"
    git("clone", "-q", str(repo.origin), str(other))
    git("commit", "-q", "--allow-empty", "-m", "someone pushed", cwd=other)
    git("push", "-q", "origin", "main", cwd=other)
    theirs = sha_of(other, "main")
    done = run(land_command(str(repo.path), "main", said.head, said.base))
    assert (done.returncode, done.stdout) == (ExitCode.BASE_MOVED, b""), done.err
    assert failure_reason(done.err) == (
        f"origin's main is at {theirs} now, not {said.base} (someone pushed meanwhile): "
        f"{said.head} did not land"
    )
    assert sha_of(repo.origin, "main") == theirs
    # Gone altogether: said too.
    git("update-ref", "-d", "refs/heads/main", cwd=repo.origin)
    done = run(land_command(str(repo.path), "main", said.head, said.base))
    assert done.returncode == ExitCode.BASE_MOVED, done.err
    assert failure_reason(done.err).startswith("origin has no branch main now")


def test_land_is_only_ever_a_fast_forward_of_a_commit_the_repo_has(
    tmp_path: Path, repo: GitRepo
) -> None:
    assert repo.origin is not None
    said = stacked(tmp_path, repo)
    base, first = said.base, said.steps[0].sha
    assert first is not None
    # Backwards (the base is no descendant of the stack), or sideways.
    side = make_branch(repo, "issue-8-side", {"side.txt": "s\n"})
    for sha, expected in ((base, said.head), (side, first)):
        done = run(land_command(str(repo.path), "main", sha, expected))
        assert (done.returncode, done.stdout) == (ExitCode.NOT_FAST_FORWARD, b""), done.err
        assert failure_reason(done.err) == (
            f"{sha} does not descend from {expected} (origin's main as expected): "
            "landing it would not be a fast-forward"
        )
    unknown = "f" * 40
    for sha, expected in ((unknown, base), (said.head, unknown)):
        done = run(land_command(str(repo.path), "main", sha, expected))
        assert done.returncode == ExitCode.NO_COMMIT, done.err
        assert failure_reason(done.err).startswith(f"commit {unknown} ")
    assert sha_of(repo.origin, "main") == base  # nothing landed
    lone = make_git_repo(tmp_path / "lone", with_origin=False)
    done = run(land_command(str(lone.path), "main", said.head, base))
    assert done.returncode == ExitCode.NO_ORIGIN, done.err
    done = run(land_command(str(tmp_path / "nowhere"), "main", said.head, base))
    assert done.returncode == ExitCode.NOT_A_REPO, done.err
    # origin refuses it (a hook, a protected branch): said, with git's words.
    hook = repo.origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'main is protected' >&2\nexit 1\n")
    hook.chmod(0o755)
    done = run(land_command(str(repo.path), "main", said.head, base))
    assert (done.returncode, done.stdout) == (ExitCode.PUSH_FAILED, b""), done.err
    reason = failure_reason(done.err)
    assert reason.startswith(f"git push origin {said.head}:main failed in {repo.path}: "), reason
    assert "main is protected" in reason and "\n" not in reason
    assert sha_of(repo.origin, "main") == base


def test_land_takes_no_argument_but_the_declared_shapes(tmp_path: Path, repo: GitRepo) -> None:
    assert repo.origin is not None
    said = stacked(tmp_path, repo)
    canary = tmp_path / CANARY
    good = [str(repo.path), "main", said.head, said.base]
    hostile = [
        (0, "-C/x"), (0, ""), (1, "--force"), (1, "+main"), (1, "main:refs/heads/x"),
        (1, "refs/heads/x:main"), (1, f"main;touch {canary}"), (1, "-main"), (1, "main x"),
        (2, "HEAD"), (2, "main"), (2, said.head[:39]), (2, said.head.upper()),
        (2, f"{said.head}:refs/heads/main"), (2, f"+{said.head}"), (2, "--delete"),
        (3, "HEAD"), (3, f"$(touch {canary})"), (3, "-" * 40), (3, said.base + "0"),
    ]  # fmt: skip
    for index, value in hostile:
        args = list(good)
        args[index] = value
        with pytest.raises(UsageError, match="remote command land"):
            land_command(*args)
        done = coord_run("land", *args)
        assert (done.returncode, done.stdout) == (ExitCode.USAGE, b""), (value, done.err)
        assert done.err.startswith("coord-run: land: ") and done.err.count("\n") == 1, done.err
    assert not canary.exists()
    assert sha_of(repo.origin, "main") == said.base
    assert git("for-each-ref", "--format=%(refname)", cwd=repo.origin).split() == [
        "refs/heads/issue-1-one", "refs/heads/issue-2-two", "refs/heads/issue-3-three",
        "refs/heads/main",
    ]  # fmt: skip


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    value=st.one_of(
        st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,20}", fullmatch=True),
        st.from_regex(r"issue-[0-9]{1,3}(-[a-z0-9]{1,4}){0,3}", fullmatch=True),
        st.from_regex(r"[0-9a-f]{40}", fullmatch=True),
        st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=45),
        st.sampled_from(["merge", "squash", "rebase", "Merge", "a" * 201, "-main", "F" * 40,
                         "main\n", "_x", ".x", "issue-1-x\n", "0" * 64]),
    )
)  # fmt: skip
def test_both_sides_take_the_same_bases_branches_methods_and_shas(
    tmp_path: Path, value: str
) -> None:
    gone = str(tmp_path / "no-repo")  # what is taken goes on to find no repo there
    wd, sha = str(tmp_path / "wd"), "a" * 40
    for verb, args, stdin in (
        ("stack", [wd, "s-1", gone, value, "merge", "3", "issue-1"], b"1\nm"),
        ("stack", [wd, "s-1", gone, "main", value, "3", "issue-1"], b"1\nm"),
        ("stack", [wd, "s-1", gone, "main", "merge", "3", value], b"1\nm"),
        ("land", [gone, value, sha, sha], b""),
        ("land", [gone, "main", value, sha], b""),
        ("land", [gone, "main", sha, value], b""),
    ):
        try:
            check_args(verb, args)
            python_takes = True
        except UsageError:
            python_takes = False
        done = coord_run(verb, *args, stdin=stdin)
        expected = ExitCode.NOT_A_REPO if python_takes else ExitCode.USAGE
        assert done.returncode == expected, (verb, args, done.err)


# ======================================================== 3. over SSH


@pytest.mark.ssh
def test_a_stack_over_real_ssh(tmp_path: Path, repo: GitRepo, sshd: SSHServer) -> None:
    target = SSHTarget(
        name="remote", host=sshd.host, port=sshd.port, user=sshd.user,
        identity_file=str(sshd.client_key), known_hosts=str(sshd.known_hosts),
    )  # fmt: skip
    names = three_branches(repo)
    canary = tmp_path / CANARY
    message = f"Merge #2: $(touch {canary}) 'é' \"$HOME\"\n"
    pairs = [(names[0], "one"), ("issue-9-gone", "nine"), (names[1], message)]
    done, said = a_stack(tmp_path, repo, "squash", pairs, transport=SSHTransport(target))
    assert done.returncode == 0, done.err
    assert said is not None and said.base == sha_of(repo.path, "main")
    assert [(s.branch, s.state, s.files) for s in said.steps] == [
        (names[0], "applied", ("one.txt",)), ("issue-9-gone", "missing", ()),
        (names[1], "applied", ("two.txt",)),
    ]  # fmt: skip
    assert git("log", "-1", "--format=%B", said.head, cwd=repo.path) == message.strip()
    assert not canary.exists()
    assert_gone(tmp_path, repo)
