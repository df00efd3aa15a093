"""Bare git repositories behind the fake GitHub: refs, merges and `git http-backend`.

Everything here runs real git.  Merges never touch a work tree: `git merge-tree
--write-tree` computes the result (and the conflicting paths), `git commit-tree` makes the
commit, and `git update-ref` moves the base branch only if nobody moved it meanwhile.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"
GITHUB_IDENTITY = {"GIT_COMMITTER_NAME": "GitHub", "GIT_COMMITTER_EMAIL": "noreply@github.com"}


class MergeConflict(Exception):
    """The merge is not clean; `paths` names the conflicting files."""

    def __init__(self, paths: tuple[str, ...]) -> None:
        super().__init__(", ".join(paths) or "conflict")
        self.paths = paths


@dataclass(frozen=True)
class CommitInfo:
    """What the API shows of one commit."""

    sha: str
    tree: str
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    author_date: str  # ISO 8601 strict
    committer_name: str
    committer_email: str
    committer_date: str
    message: str


@dataclass(frozen=True)
class FileChange:
    """One file changed between two commits."""

    filename: str
    status: str  # GitHub's words: added, removed, modified, renamed, ...
    additions: int
    deletions: int
    blob: str | None


_STATUS = {
    "A": "added",
    "D": "removed",
    "M": "modified",
    "R": "renamed",
    "C": "copied",
    "T": "changed",
}


class BareRepo:
    """One fake repository's bare git repository."""

    def __init__(self, path: Path, default_branch: str = "main") -> None:
        self.path = path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["git", "init", "-q", "--bare", "-b", default_branch, str(path)],
                check=True,
                capture_output=True,
            )
            self.git("config", "http.receivepack", "true")

    def git(self, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
        """Run git in the bare repo; return stdout without the final newline."""
        proc = self.run(*args, env=env)
        if check and proc.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout.rstrip("\n")

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run git in the bare repo and return the completed process."""
        return subprocess.run(
            ["git", "--git-dir", str(self.path), *args],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
        )

    def resolve(self, ref: str) -> str | None:
        """Return the commit sha `ref` names (a branch, a full ref or a sha), or None."""
        for candidate in (f"refs/heads/{ref}", ref):
            proc = self.run("rev-parse", "--verify", "-q", f"{candidate}^{{commit}}")
            if proc.returncode == 0:
                return proc.stdout.strip()
        return None

    def branch(self, name: str) -> str | None:
        """Return the sha of branch `name`, or None if it does not exist."""
        proc = self.run("rev-parse", "--verify", "-q", f"refs/heads/{name}^{{commit}}")
        return proc.stdout.strip() if proc.returncode == 0 else None

    def refs(self, prefix: str = "refs/heads/") -> list[tuple[str, str]]:
        """Return (full ref, sha) for every ref whose name starts with `prefix`, sorted."""
        out = self.git("for-each-ref", "--format=%(refname) %(objectname)", "refs/")
        pairs = [line.split(" ", 1) for line in out.splitlines() if line]
        return sorted((ref, sha) for ref, sha in pairs if ref.startswith(prefix))

    def commit(self, sha: str) -> CommitInfo:
        """Return the commit `sha`."""
        fmt = "%H%x00%T%x00%P%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B"
        parts = self.git("show", "-s", f"--format={fmt}", sha).split("\x00", 9)
        return CommitInfo(
            parts[0], parts[1], tuple(parts[2].split()), *parts[3:9], parts[9].rstrip("\n")
        )

    def merge_base(self, a: str, b: str) -> str | None:
        """Return the best common ancestor of two commits, or None."""
        proc = self.run("merge-base", a, b)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def commits_between(self, base: str, head: str) -> list[str]:
        """Return the commits reachable from head but not base, oldest first."""
        out = self.git("rev-list", "--reverse", "--topo-order", f"{base}..{head}")
        return out.split()

    def changes(self, a: str, b: str) -> list[FileChange]:
        """Return the files that differ from commit a to commit b."""
        numstat: dict[str, tuple[int, int]] = {}
        for line in self.git("diff", "--numstat", "-z", "--no-renames", a, b).split("\x00"):
            if line.count("\t") == 2:
                added, deleted, name = line.split("\t")
                numstat[name] = (
                    int(added) if added != "-" else 0,
                    int(deleted) if deleted != "-" else 0,
                )
        out: list[FileChange] = []
        raw = self.git("diff", "--raw", "-z", "--no-renames", "--no-abbrev", a, b).split("\x00")
        for meta, name in zip(raw[0::2], raw[1::2], strict=False):
            if not meta.startswith(":"):
                continue
            fields = meta[1:].split()
            status = _STATUS.get(fields[4][0], "changed")
            blob = None if status == "removed" else fields[3]
            added, deleted = numstat.get(name, (0, 0))
            out.append(FileChange(name, status, added, deleted, blob))
        return out

    def merge_tree(self, ours: str, theirs: str) -> tuple[str | None, tuple[str, ...]]:
        """Merge two commits in memory: return (tree, ()) or (None, conflicting paths)."""
        proc = self.run(
            "merge-tree", "--write-tree", "--name-only", "--no-messages", "-z", ours, theirs
        )
        if proc.returncode == 0:
            return proc.stdout.split("\x00")[0].strip(), ()
        if proc.returncode == 1:
            names = [n for n in proc.stdout.split("\x00")[1:] if n]
            return None, tuple(sorted(set(names)))
        raise RuntimeError(f"git merge-tree {ours} {theirs}: {proc.stderr.strip()}")

    def mergeable(self, base: str, head: str) -> bool:
        """Tell whether head merges into base without conflicts."""
        return self.merge_tree(base, head)[0] is not None

    def _commit_tree(
        self, tree: str, parents: list[str], message: str, author: CommitInfo | None = None
    ) -> str:
        env = dict(GITHUB_IDENTITY)
        if author is not None:
            env |= {
                "GIT_AUTHOR_NAME": author.author_name,
                "GIT_AUTHOR_EMAIL": author.author_email,
                "GIT_AUTHOR_DATE": author.author_date,
            }
        else:
            env |= {"GIT_AUTHOR_NAME": "GitHub", "GIT_AUTHOR_EMAIL": "noreply@github.com"}
        args = ["commit-tree", tree, "-m", message]
        for parent in parents:
            args += ["-p", parent]
        return self.git(*args, env=env)

    def merge(self, base: str, head_sha: str, method: str, message: str) -> str:
        """Merge head_sha into branch `base` by merge, squash or rebase; return the new tip.

        Raises `MergeConflict` (leaving `base` as it was) when the merge is not clean.
        """
        base_sha = self.branch(base)
        if base_sha is None:
            raise RuntimeError(f"no branch {base}")
        tree, conflicts = self.merge_tree(base_sha, head_sha)
        if tree is None:
            raise MergeConflict(conflicts)
        head = self.commit(head_sha)
        if method == "merge":
            new = self._commit_tree(tree, [base_sha, head_sha], message)
        elif method == "squash":
            new = self._commit_tree(tree, [base_sha], message, author=head)
        elif method == "rebase":
            new = self._replay(base_sha, head_sha)
        else:
            raise ValueError(method)
        self.git("update-ref", "-m", f"merge ({method})", f"refs/heads/{base}", new, base_sha)
        return new

    def _replay(self, onto: str, head_sha: str) -> str:
        # Cherry-pick each commit without a work tree: a scratch commit with the tree of
        # `onto` and the picked commit's parent as its parent makes that parent the merge
        # base, so merge-tree computes exactly the cherry-pick.
        base = self.merge_base(onto, head_sha)
        tip = onto
        for sha in self.commits_between(base or onto, head_sha):
            info = self.commit(sha)
            if len(info.parents) != 1:
                continue  # GitHub's rebase merge drops merge commits too
            scratch = self._commit_tree(self.commit(tip).tree, [info.parents[0]], "scratch")
            tree, conflicts = self.merge_tree(scratch, sha)
            if tree is None:
                raise MergeConflict(conflicts)
            tip = self._commit_tree(tree, [tip], info.message, author=info)
        return tip


def http_backend(
    root: Path,
    method: str,
    path_info: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Run `git http-backend` as CGI for one request; return (status, headers, body)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_PROJECT_ROOT": str(root),
        "GIT_HTTP_EXPORT_ALL": "1",
        "REMOTE_USER": "fake-github",
        "REMOTE_ADDR": "127.0.0.1",
        "REQUEST_METHOD": method,
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "CONTENT_TYPE": headers.get("content-type", ""),
        "CONTENT_LENGTH": str(len(body)),
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
    }
    if "content-encoding" in headers:
        env["HTTP_CONTENT_ENCODING"] = headers["content-encoding"]
    if "git-protocol" in headers:
        env["GIT_PROTOCOL"] = headers["git-protocol"]
    proc = subprocess.run([HTTP_BACKEND], input=body, capture_output=True, env=env)
    head, _, payload = proc.stdout.partition(b"\r\n\r\n")
    if not _:
        head, _, payload = proc.stdout.partition(b"\n\n")
    status = 200
    out_headers: list[tuple[str, str]] = []
    for line in head.decode("latin-1").splitlines():
        if ":" not in line:
            continue
        name, value = (s.strip() for s in line.split(":", 1))
        if name.lower() == "status":
            status = int(value.split()[0])
        else:
            out_headers.append((name, value))
    if proc.returncode != 0 and not proc.stdout:
        return 500, [("Content-Type", "text/plain")], proc.stderr
    return status, out_headers, payload
