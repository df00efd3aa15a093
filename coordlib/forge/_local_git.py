"""The git side of a `LocalForge`: branch heads, merge-tree merges, commits and a
compare-and-swap update of the base, against a local bare repo or a mirror of a remote.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import subprocess
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from coordlib.errors import ForgeError

_IDENTITY = {
    "GIT_AUTHOR_NAME": "coord",
    "GIT_AUTHOR_EMAIL": "coord@localhost",
    "GIT_COMMITTER_NAME": "coord",
    "GIT_COMMITTER_EMAIL": "coord@localhost",
}
# Variables that would point git at some other repository than the one we name.
_GIT_REDIRECTS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)
_AUTHOR_LINE = re.compile(r"^author (.*) <(.*)> (\d+) ([+-]\d{4})$", re.M)
_SCP_LIKE = re.compile(r"[^/:]+:")


# --- git ----------------------------------------------------------------------------------


class _Git:
    """The repo's remote: a local bare repo worked on in place, or a URL via a bare mirror."""

    def __init__(self, remote: str, mirror: Path, label: str) -> None:
        self.remote = remote
        self.mirror = mirror
        self.label = label
        self._local: Path | bool | None = False  # False: not looked at yet
        env = {k: v for k, v in os.environ.items() if k not in _GIT_REDIRECTS}
        self.env = {**env, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}

    async def run(
        self,
        *args: str,
        cwd: Path | None = None,
        ok: Sequence[int] = (0,),
        env: dict[str, str] | None = None,
        stdin: bytes | None = None,
        hint: str = "",
    ) -> tuple[int, str]:
        """Run git with argv `args` (never a shell); return (exit status, stdout)."""
        argv = ["git", *(["-C", str(cwd)] if cwd else []), *args]
        # A thread, not asyncio's subprocess: on Python 3.11 a task cancelled inside
        # create_subprocess_exec (a gather of assigns where one fails) can hang the loop's
        # shutdown for good (CPython gh-103847).  These git commands are short.
        try:
            proc = await asyncio.to_thread(
                subprocess.run,
                argv,
                input=stdin,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                capture_output=True,
                env={**self.env, **(env or {})},
                check=False,
            )
        except OSError as exc:
            raise ForgeError(f"cannot run git: {exc.strerror or exc}; install git") from exc
        out, err = proc.stdout, proc.stderr
        status = proc.returncode if proc.returncode is not None else -1
        if status not in ok:
            lines = [x.strip() for x in err.decode(errors="replace").splitlines() if x.strip()]
            # a push explains itself on its "! [rejected]" line; anything else whole (git's
            # "fatal: ..." first, and what it adds), never just its last line
            rejected = [x for x in lines if x.startswith("! ")]
            reason = " ".join(rejected or lines or ["no output"])
            if len(reason) > 400:
                reason = reason[:399] + "…"
            message = f"git {args[0]} failed (status {status}): {reason}"
            raise ForgeError(f"{message}; {hint}" if hint else message, forge=self.label)
        return status, out.decode(errors="replace")

    async def heads(self) -> dict[str, str]:
        """Return {branch: sha} of the remote's branches."""
        hint = f"is {self.remote} the repo's remote? check its `url:` in coordinator.yml"
        _, out = await self.run("ls-remote", "--heads", "--", self.remote, hint=hint)
        heads = {}
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            if ref.startswith("refs/heads/"):
                heads[ref.removeprefix("refs/heads/")] = sha
        return heads

    async def _local_bare(self) -> Path | None:
        if self._local is False:
            self._local = None
            if "://" not in self.remote and not _SCP_LIKE.match(self.remote):
                path = Path(self.remote).expanduser()
                if path.is_dir():
                    status, out = await self.run(
                        "rev-parse", "--is-bare-repository", cwd=path, ok=(0, 128)
                    )
                    if status == 0 and out.strip() == "true":
                        self._local = path.absolute()
        return self._local if isinstance(self._local, Path) else None

    @contextlib.asynccontextmanager
    async def workdir(self) -> AsyncIterator[Path]:
        """Yield a repo holding the remote's branches and objects, safe to write objects to."""
        local = await self._local_bare()
        if local is not None:
            yield local
            return
        async with _async_flock(self.mirror.with_name(".mirror.lock")):
            if (self.mirror / "HEAD").exists():
                await self.run(
                    "fetch", "--quiet", "--prune", "--", self.remote,
                    "+refs/heads/*:refs/heads/*", cwd=self.mirror,
                )  # fmt: skip
            else:
                await self.run("clone", "--quiet", "--bare", "--", self.remote, str(self.mirror))
            yield self.mirror

    async def publish(self, repo: Path, base: str, new: str, old: str) -> bool:
        """Move `base` from `old` to `new` unless it moved meanwhile; tell whether it did."""
        hint = f"{base} was left as it was, at {old[:12]}"
        try:
            if repo != self.mirror:
                await self.run("update-ref", f"refs/heads/{base}", new, old, cwd=repo, hint=hint)
            else:
                await self.run(
                    "push", "--quiet", f"--force-with-lease=refs/heads/{base}:{old}", "--",
                    self.remote, f"{new}:refs/heads/{base}", cwd=repo, hint=hint,
                )  # fmt: skip
        except ForgeError:
            if (await self.heads()).get(base) != old:
                return False  # lost the race: the caller recomputes on the new base
            raise
        return True

    async def merge_tree(self, repo: Path, ours: str, theirs: str) -> tuple[str, tuple[str, ...]]:
        """Merge two commits without a work tree; return (tree, conflicting paths)."""
        status, out = await self.run(
            "merge-tree", "--write-tree", "--name-only", "-z", "--no-messages", ours, theirs,
            cwd=repo, ok=(0, 1),
        )  # fmt: skip
        tree, *paths = out.split("\0")
        return tree, tuple(dict.fromkeys(p for p in paths if p)) if status else ()

    async def commit(
        self, repo: Path, tree: str, parents: Sequence[str], message: str, author: str = ""
    ) -> str:
        """Write a commit object by coord (or by the author line of a commit being replayed)."""
        env = dict(_IDENTITY)
        match = _AUTHOR_LINE.search(author)
        if match:  # keep a replayed commit's author and date
            name, email, seconds, zone = match.groups()
            env.update(
                GIT_AUTHOR_NAME=name, GIT_AUTHOR_EMAIL=email, GIT_AUTHOR_DATE=f"@{seconds} {zone}"
            )
        args = [arg for parent in parents for arg in ("-p", parent)]
        _, out = await self.run(
            "commit-tree", tree, *args, "-F", "-", cwd=repo, env=env, stdin=message.encode()
        )
        return out.strip()


@contextlib.asynccontextmanager
async def _async_flock(path: Path) -> AsyncIterator[None]:
    """Hold an exclusive flock on `path`, polling so a cancelled wait leaves nothing behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
        yield
    finally:
        os.close(fd)
