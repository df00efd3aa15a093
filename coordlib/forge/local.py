"""`LocalForge`: issues as Markdown files, pull requests as YAML records, merges by real git.

The layout of `root` (the coordinator passes ``<config dir>/.coord/issues/<repo>/``)::

    0007-fix-login-redirect.md    an issue: YAML front matter between two '---' lines, then
                                  the Markdown body, byte for byte
    0007.comments/0012.md         its comments, one file each, named by comment id (oldest
                                  first); front matter (id, author, created_at), then the body.
                                  A comment added by hand needs a higher number than the
                                  last; its front matter is optional
    pulls/0008.yml                a pull request: head, base, state, merge sha, reviews, body
    .counters.json                the last number (issues and PRs share them) and last
                                  comment/review id handed out
    .lock                         flock-ed while a number is allocated or a file rewritten
    .merge.lock                   held across a merge, so a PR is never merged twice
    .mirror.git/                  a bare copy of a remote that is not a local bare repo

People may edit the files by hand; every call re-reads them.  Each file is a whole-file
write (temp file, fsync, ``os.replace``), so a reader never sees half of one, and each
comment is a file of its own, so its body can hold anything, '---' lines included.

Merges run real git against the remote: ``git merge-tree --write-tree`` computes the
result without a work tree, ``git commit-tree`` records it, and the base moves by
compare-and-swap (``update-ref <new> <old>`` in a local bare repo, ``push
--force-with-lease`` otherwise), so a base that moved meanwhile is recomputed, never
overwritten.  `checks` is always empty: nothing runs CI here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import fcntl
import json
import os
import re
import subprocess
import tempfile
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from coordlib.errors import ForgeError, MergeConflictError, NotFoundError

from .base import (
    Branch,
    Comment,
    Forge,
    Issue,
    MergeMethod,
    MergeResult,
    PullRequest,
    Review,
    ReviewEvent,
)

__all__ = ["LocalForge"]

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
_ISSUE_FILE = re.compile(r"(\d+)(?:-[^/]*)?\.md")
_NUMBERED = re.compile(r"(\d+)\.(?:md|yml)")
_COMMENTS_DIR = re.compile(r"(\d+)\.comments")
_CLOSES = re.compile(r"\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)\s*:?\s+#(\d+)\b", re.I)
_AUTHOR_LINE = re.compile(r"^author (.*) <(.*)> (\d+) ([+-]\d{4})$", re.M)
_SCP_LIKE = re.compile(r"[^/:]+:")
_REVIEW_STATES = {
    "APPROVE": "APPROVED",
    "REQUEST_CHANGES": "CHANGES_REQUESTED",
    "COMMENT": "COMMENTED",
}
_MERGE_ATTEMPTS = 5
# Characters PyYAML cannot round-trip in plain, single-quoted or literal style.
_ODD = re.compile(
    r"[\r\x85\u2028\u2029\ufeff]|[^\n\t\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)


# --- YAML ---------------------------------------------------------------------------------


try:  # libyaml's parser reads front matter about ten times faster than pure Python
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]


class _Loader(_SafeLoader):
    """YAML 1.2-style scalars: `no`, `on` and dates stay text, as a person typed them."""

    yaml_implicit_resolvers: dict[Any, Any] = {}  # PyYAML's registry; ours starts empty


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    # no leading zeros: YAML 1.1 dumpers leave `09` unquoted, as text, and text it stays
    "tag:yaml.org,2002:int",
    re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"),
    list("-+0123456789"),
)


class _Dumper(yaml.SafeDumper):
    """Literal blocks for multi-line text (PR records), never anchors."""

    literal = True

    def ignore_aliases(self, data: Any) -> bool:
        return True


class _FrontMatterDumper(_Dumper):
    """One physical line per value, so no line of front matter can read as '---'."""

    literal = False


def _represent_str(dumper: _Dumper, value: str) -> yaml.ScalarNode:
    style: str | None = None
    if _ODD.search(value) or ("\n" in value and not dumper.literal):
        style = '"'
    elif "\n" in value:
        style = "|"
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _represent_list(dumper: _Dumper, value: list[Any]) -> yaml.SequenceNode:
    # lists of plain values on one line, `labels: [bug, ready]`; lists of records as blocks
    flow = not any(isinstance(item, dict | list) for item in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(list, _represent_list)


def _dump(data: dict[str, Any], dumper: type[_Dumper]) -> str:
    return yaml.dump(
        data,
        Dumper=dumper,
        sort_keys=False,
        allow_unicode=True,
        width=10**6,
        default_flow_style=False,
    )


def _yaml_error(path: Path, exc: yaml.YAMLError, first_line: int, fix: str) -> ForgeError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + first_line}" if mark is not None else str(path)
    problem = "; ".join(
        p for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p
    )
    return ForgeError(f"{where}: not valid YAML ({problem or exc}); {fix}")


def _load(text: str, path: Path, first_line: int, fix: str) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc, first_line, fix) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ForgeError(f"{path}: expected `key: value` lines, got {type(data).__name__}; {fix}")
    return data


_FRONT_FIX = (
    "fix it so the lines between the two '---' lines are YAML "
    "(e.g. `title: Fix login`, `labels: [bug, ready]`, `state: open`)"
)


def _split_front_matter(text: str, path: Path) -> tuple[dict[str, Any], str]:
    """Return (front matter, body) of a Markdown file that starts with a '---' block."""
    lines = text.split("\n")
    if lines[0].rstrip("\r") != "---":
        raise ForgeError(f"{path}:1: the file must start with a '---' line; {_FRONT_FIX}")
    for index in range(1, len(lines)):
        if lines[index].rstrip("\r") in ("---", "..."):
            front = _load("\n".join(lines[1:index]), path, 2, _FRONT_FIX)
            return front, "\n".join(lines[index + 1 :])
    raise ForgeError(f"{path}: no closing '---' line after the front matter; {_FRONT_FIX}")


def _join_front_matter(front: dict[str, Any], body: str) -> str:
    return f"---\n{_dump(front, _FrontMatterDumper)}---\n{body}"


def _text(value: Any, path: Path, key: str, *, default: str | None = None) -> str:
    if value is None and default is not None:
        return default
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ForgeError(f'{path}: `{key}` must be text, got {value!r}; quote it, e.g. {key}: "…"')


def _labels(value: Any, path: Path) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    return tuple(dict.fromkeys(_text(item, path, "labels") for item in items))


# --- files --------------------------------------------------------------------------------


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _slug(title: str) -> str:
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")[:48].strip("-")


def _write_atomic(path: Path, text: str, *, durable: bool = True) -> None:
    """Replace `path` with `text`: temp file, fsync, rename, fsync the directory.

    Not `durable` skips both fsyncs: the file is still whole or absent, but a crash may
    bring back its previous version (or an empty file).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(text.encode())
            out.flush()
            if durable:
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _numbered(directory: Path, pattern: re.Pattern[str], what: str = "") -> dict[int, Path]:
    """Return {number: path} of the files in `directory` whose names match `pattern`."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return {}
    found: dict[int, Path] = {}
    for name in names:
        match = pattern.fullmatch(name)
        if not match:
            continue
        number = int(match.group(1))
        if number in found and what:
            raise ForgeError(
                f"two files for {what} #{number}: {found[number]} and {directory / name}; "
                "merge them into one"
            )
        found.setdefault(number, directory / name)
    return found


class _Files:
    """The issues folder: reads need no lock (every write is a rename), writes take `.lock`."""

    def __init__(self, root: Path, author: str) -> None:
        self.root = root
        self.pulls = root / "pulls"
        self.author = author

    # -- reading ---------------------------------------------------------------------------
    def _read(self, path: Path) -> str:
        try:
            return path.read_bytes().decode()
        except UnicodeDecodeError as exc:
            raise ForgeError(f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8") from exc
        except OSError as exc:
            raise ForgeError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def issue_paths(self) -> dict[int, Path]:
        return _numbered(self.root, _ISSUE_FILE, what="issue")

    def pr_paths(self) -> dict[int, Path]:
        return _numbered(self.pulls, _NUMBERED)

    def issue_path(self, number: int) -> Path | None:
        return self.issue_paths().get(number)

    def pr_path(self, number: int) -> Path | None:
        path = self.pulls / f"{number:04d}.yml"
        return path if path.exists() else self.pr_paths().get(number)

    def issue(self, number: int, *, comments: bool) -> Issue:
        path = self.issue_path(number)
        if path is None:
            pr = self.pr_path(number)
            if pr is None:
                raise NotFoundError(f"no issue #{number} in {self.root}")
            return self._pr_as_issue(self.pr(number), pr, comments=comments)
        return self._parse_issue(path, number, comments=comments)

    def _parse_issue(self, path: Path, number: int, *, comments: bool) -> Issue:
        front, body = _split_front_matter(self._read(path), path)
        written = front.get("number", number)
        if written != number:
            raise ForgeError(
                f"{path}: front matter says `number: {written}` but the file name says "
                f"{number}; make them agree (the file name decides which issue this is)"
            )
        state = front.get("state", "open")
        if state not in ("open", "closed"):
            raise ForgeError(f"{path}: `state: {state}` must be open or closed; fix that line")
        title = _text(front.get("title"), path, "title", default="")
        if not title.strip():
            raise ForgeError(f"{path}: `title` is missing or empty; add a `title: …` line")
        return Issue(
            number=number,
            title=title,
            body=body,
            labels=_labels(front.get("labels"), path),
            state=state,
            comments=self.comments(number) if comments else (),
            url=path.absolute().as_uri(),
            created_at=_text(front.get("created_at"), path, "created_at", default=""),
            updated_at=_text(front.get("updated_at"), path, "updated_at", default=""),
        )

    def issues(self) -> list[Issue]:
        return [
            self._parse_issue(path, number, comments=False)
            for number, path in sorted(self.issue_paths().items())
        ]

    def comments(self, number: int) -> tuple[Comment, ...]:
        found = []
        for comment_id, path in sorted(_numbered(self._comments_dir(number), _NUMBERED).items()):
            text = self._read(path)
            if text.split("\n", 1)[0].rstrip("\r") == "---":
                front, body = _split_front_matter(text, path)
            else:  # a comment a person dropped in without front matter
                front, body = {}, text
            found.append(
                Comment(
                    id=comment_id,
                    body=body,
                    author=_text(front.get("author"), path, "author", default=""),
                    created_at=_text(front.get("created_at"), path, "created_at", default=""),
                )
            )
        return tuple(found)

    def _comments_dir(self, number: int) -> Path:
        return self.root / f"{number:04d}.comments"

    def pr(self, number: int) -> dict[str, Any]:
        path = self.pr_path(number)
        if path is None:
            raise NotFoundError(f"no pull request #{number} in {self.pulls}")
        return self._parse_pr(path)

    def _parse_pr(self, path: Path) -> dict[str, Any]:
        fix = "fix the YAML, or restore the file from a backup"
        record = _load(self._read(path), path, 1, fix)
        for key in ("number", "head", "base", "title", "state"):
            if key not in record:
                raise ForgeError(f"{path}: the record has no `{key}`; {fix}")
        return record

    def prs(self) -> list[dict[str, Any]]:
        return [self._parse_pr(path) for _, path in sorted(self.pr_paths().items())]

    def _pr_as_issue(self, record: dict[str, Any], path: Path, *, comments: bool) -> Issue:
        number = int(record["number"])
        return Issue(
            number=number,
            title=str(record["title"]),
            body=str(record.get("body") or ""),
            labels=_labels(record.get("labels"), path),
            state="open" if record["state"] == "open" else "closed",
            comments=self.comments(number) if comments else (),
            url=path.absolute().as_uri(),
            created_at=str(record.get("created_at") or ""),
            updated_at=str(record.get("updated_at") or ""),
        )

    # -- writing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ForgeError(f"cannot lock {self.root}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def _next(self, kind: str, in_use: Iterable[int] = ()) -> int:
        """Hand out the next number ("number") or comment/review id ("comment"), above every
        one in `in_use`; the caller holds the lock."""
        path = self.root / ".counters.json"
        try:
            counters = json.loads(path.read_text())
        except (OSError, ValueError):
            counters = {}
        if not isinstance(counters, dict):
            counters = {}
        last = counters.get(kind)
        if not isinstance(last, int) or kind == "number":
            last = max(last if isinstance(last, int) else 0, *self._numbers_in_use(kind))
        last = max(last, *in_use, 0)
        counters[kind] = last + 1
        # A counter lost in a crash only means a rescan: the files themselves are durable.
        _write_atomic(path, json.dumps(counters) + "\n", durable=False)
        return last + 1

    def _numbers_in_use(self, kind: str) -> list[int]:
        if kind == "number":  # also catches issues a person added by hand
            return [0, *self.issue_paths(), *self.pr_paths()]
        ids = [0]
        for number in _numbered(self.root, _COMMENTS_DIR):
            ids.extend(_numbered(self._comments_dir(number), _NUMBERED))
        for record in self.prs():
            ids.extend(int(r.get("id", 0)) for r in record.get("reviews") or ())
        return ids

    def create_issue(self, title: str, body: str, labels: Sequence[str]) -> Issue:
        if not title.strip():
            raise ForgeError("an issue needs a title; give a non-empty one")
        with self._locked():
            number = self._next("number")
            slug = _slug(title)
            path = self.root / (f"{number:04d}-{slug}.md" if slug else f"{number:04d}.md")
            now = _now()
            front = {
                "number": number,
                "title": title,
                "labels": sorted(set(labels)),
                "state": "open",
                "created_at": now,
                "updated_at": now,
            }
            _write_atomic(path, _join_front_matter(front, body))
            return self._parse_issue(path, number, comments=False)

    def comment(self, number: int, body: str) -> Comment:
        with self._locked():
            if self.issue_path(number) is None and self.pr_path(number) is None:
                raise NotFoundError(f"no issue or pull request #{number} in {self.root}")
            # above any comment a person added by hand, so ours still sorts last
            by_hand = _numbered(self._comments_dir(number), _NUMBERED)
            comment_id = self._next("comment", by_hand)
            now = _now()
            front = {"id": comment_id, "author": self.author, "created_at": now}
            path = self._comments_dir(number) / f"{comment_id:04d}.md"
            _write_atomic(path, _join_front_matter(front, body))
            return Comment(id=comment_id, body=body, author=self.author, created_at=now)

    def edit_issue(self, number: int, change: Callable[[dict[str, Any]], None]) -> Issue:
        """Apply `change` to the front matter of issue (or PR) `number` and write it back."""
        with self._locked():
            path = self.issue_path(number)
            if path is None:
                pr = self.pr_path(number)
                if pr is None:
                    raise NotFoundError(f"no issue #{number} in {self.root}")
                return self._pr_as_issue(self._rewrite_pr(pr, change), pr, comments=False)
            self._parse_issue(path, number, comments=False)  # refuse to rewrite a broken file
            front, body = _split_front_matter(self._read(path), path)
            change(front)
            front["updated_at"] = _now()
            _write_atomic(path, _join_front_matter(front, body))
            return self._parse_issue(path, number, comments=False)

    def create_pr(
        self, head: str, base: str, title: str, body: str, head_sha: str
    ) -> dict[str, Any]:
        with self._locked():
            for record in self.prs():
                if record["state"] == "open" and record["head"] == head:
                    return record
            number = self._next("number")
            now = _now()
            record = {
                "number": number,
                "title": title,
                "state": "open",
                "head": head,
                "base": base,
                "head_sha": head_sha,
                "merged": False,
                "merge_sha": None,
                "labels": [],
                "created_at": now,
                "updated_at": now,
                "merged_at": None,
                "body": body,
                "reviews": [],
            }
            _write_atomic(self.pulls / f"{number:04d}.yml", _dump(record, _Dumper))
            return record

    def update_pr(self, number: int, change: Callable[[dict[str, Any]], None]) -> None:
        """Apply `change` to PR `number`'s record under the lock and write it back."""
        with self._locked():
            path = self.pr_path(number)
            if path is None:
                raise NotFoundError(f"no pull request #{number} in {self.pulls}")
            self._rewrite_pr(path, change)

    def _rewrite_pr(self, path: Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        # Under the lock: read the record, let `change` edit it, write it back.
        record = self._parse_pr(path)
        change(record)
        record["updated_at"] = _now()
        _write_atomic(path, _dump(record, _Dumper))
        return record

    def add_review(self, number: int, state: str, body: str) -> Review:
        with self._locked():
            path = self.pr_path(number)
            if path is None:
                raise NotFoundError(f"no pull request #{number} in {self.pulls}")
            record = self._parse_pr(path)
            review = Review(id=self._next("comment"), state=state, body=body, author=self.author)
            reviews = list(record.get("reviews") or [])
            reviews.append({**review.to_dict(), "created_at": _now()})
            record["reviews"] = reviews
            _write_atomic(path, _dump(record, _Dumper))
            return review


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
            lines = err.decode(errors="replace").strip().splitlines() or ["no output"]
            # a push explains itself on its "! [rejected]" line, not on its last one
            reason = next((x.strip() for x in lines if x.lstrip().startswith("! ")), lines[-1])
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


# --- the forge ----------------------------------------------------------------------------


class LocalForge(Forge):
    """Issues in a folder of Markdown files; PRs merged by real git into a bare remote."""

    kind = "local"

    def __init__(
        self,
        repo: str,
        root: Path,
        *,
        remote: str | Path,
        default_branch: str = "main",
        author: str = "coord",
    ) -> None:
        self.repo = repo
        self.root = Path(root)
        self.default_branch = default_branch
        self._label = f"{repo} (local forge)"
        self._files = _Files(self.root, author)
        self._git = _Git(os.fspath(remote), self.root / ".mirror.git", self._label)

    def __repr__(self) -> str:
        return f"LocalForge({self.repo!r}, {str(self.root)!r}, remote={self._git.remote!r})"

    # -- issues ----------------------------------------------------------------------------
    async def list_issues(self, *, state: str = "open", labels: Sequence[str] = ()) -> list[Issue]:
        """Return issues in `state` carrying every label in `labels`, lowest number first."""
        _check_state(state, ("open", "closed", "all"))
        wanted = {labels} if isinstance(labels, str) else set(labels)
        return [
            issue
            for issue in await asyncio.to_thread(self._files.issues)
            if state in ("all", issue.state) and wanted.issubset(issue.labels)
        ]

    async def get_issue(self, number: int) -> Issue:
        """Return one issue with its comments, oldest first."""
        return await asyncio.to_thread(self._files.issue, number, comments=True)

    async def create_issue(
        self, title: str, *, body: str = "", labels: Sequence[str] = ()
    ) -> Issue:
        """Open a new issue and return it."""
        return await asyncio.to_thread(self._files.create_issue, title, body, list(labels))

    async def comment(self, number: int, body: str) -> Comment:
        """Add a comment to an issue or pull request and return it."""
        return await asyncio.to_thread(self._files.comment, number, body)

    async def add_labels(self, number: int, labels: Iterable[str]) -> tuple[str, ...]:
        """Add labels (idempotent); return the issue's labels."""
        new = list(labels)

        def change(front: dict[str, Any]) -> None:
            front["labels"] = sorted({*_labels(front.get("labels"), self.root), *new})

        return (await asyncio.to_thread(self._files.edit_issue, number, change)).labels

    async def remove_label(self, number: int, label: str) -> tuple[str, ...]:
        """Remove one label (absent is fine); return the issue's labels."""

        def change(front: dict[str, Any]) -> None:
            front["labels"] = [x for x in _labels(front.get("labels"), self.root) if x != label]

        return (await asyncio.to_thread(self._files.edit_issue, number, change)).labels

    async def set_state(self, number: int, state: str) -> Issue:
        """Close ("closed") or reopen ("open") an issue or an unmerged pull request."""
        _check_state(state, ("open", "closed"))

        def change(front: dict[str, Any]) -> None:
            if front.get("merged"):
                raise ForgeError(f"pull request #{number} is merged; it cannot be {state}")
            front["state"] = state

        return await asyncio.to_thread(self._files.edit_issue, number, change)

    # -- pull requests ---------------------------------------------------------------------
    async def open_pr(self, *, head: str, base: str, title: str, body: str = "") -> PullRequest:
        """Open a pull request from pushed branch `head` into `base` (or return the open one)."""
        for record in await asyncio.to_thread(self._files.prs):
            if record["state"] == "open" and record["head"] == head:
                return self._pr(record, await self._git.heads())
        if not title.strip():
            raise ForgeError("a pull request needs a title; give a non-empty one")
        heads = await self._git.heads()
        for branch, what in ((head, "head"), (base, "base")):
            if branch not in heads:
                raise ForgeError(
                    f"{what} branch {branch!r} is not on the remote {self._git.remote}; "
                    f"push it first: git push origin {branch}",
                    forge=self._label,
                    status=422,
                )
        async with self._git.workdir() as repo:
            _, count = await self._git.run(
                "rev-list", "--count", f"{heads[base]}..{heads[head]}", cwd=repo
            )
        if count.strip() == "0":
            raise ForgeError(
                f"no commits between {base} and {head}: commit and push work to {head} first",
                forge=self._label,
                status=422,
            )
        record = await asyncio.to_thread(
            self._files.create_pr, head, base, title, body, heads[head]
        )
        return self._pr(record, heads)

    async def get_pr(self, number: int) -> PullRequest:
        """Return a pull request with its reviews; `mergeable` is computed by git."""
        record = await asyncio.to_thread(self._files.pr, number)
        heads = await self._git.heads()
        mergeable: bool | None = None
        head, base = heads.get(record["head"]), heads.get(record["base"])
        if record["state"] == "open" and head and base:
            async with self._git.workdir() as repo:
                status, _ = await self._git.run(
                    "merge-tree", "--write-tree", "--name-only", "--no-messages", base, head,
                    cwd=repo, ok=(0, 1, 128),
                )  # fmt: skip
            mergeable = status == 0  # 128: unrelated histories, which cannot merge either
        reviews = tuple(
            Review(
                id=int(r.get("id", 0)),
                state=str(r.get("state", "")),
                body=str(r.get("body") or ""),
                author=str(r.get("author") or ""),
            )
            for r in record.get("reviews") or ()
        )
        return dataclasses.replace(self._pr(record, heads), mergeable=mergeable, reviews=reviews)

    async def list_prs(self, *, state: str = "open", head: str | None = None) -> list[PullRequest]:
        """Return pull requests in `state` ("closed" includes merged), lowest number first."""
        _check_state(state, ("open", "closed", "all"))
        records = await asyncio.to_thread(self._files.prs)
        chosen = [
            r
            for r in records
            if (state == "all" or (r["state"] == "open") == (state == "open"))
            and (head is None or r["head"] == head)
        ]
        heads = await self._git.heads() if any(r["state"] == "open" for r in chosen) else {}
        return [self._pr(r, heads) for r in chosen]

    async def review(self, number: int, event: ReviewEvent, body: str) -> Review:
        """Record a review: approve, request changes, or comment."""
        if event not in _REVIEW_STATES:
            raise ValueError(f"unknown review event {event!r}; use {', '.join(_REVIEW_STATES)}")
        return await asyncio.to_thread(self._files.add_review, number, _REVIEW_STATES[event], body)

    async def merge(
        self, number: int, *, method: MergeMethod = "merge", message: str | None = None
    ) -> MergeResult:
        """Merge a pull request into its base with real git; conflicts leave the base as is."""
        if method not in ("merge", "squash", "rebase"):
            raise ValueError(f"unknown merge method {method!r}; use merge, squash or rebase")
        async with _async_flock(self.root / ".merge.lock"):
            record = await asyncio.to_thread(self._files.pr, number)
            if record["state"] != "open":
                raise ForgeError(
                    f"pull request #{number} is {record['state']}; only an open one merges",
                    forge=self._label,
                    status=405,
                )
            for _ in range(_MERGE_ATTEMPTS):
                heads = await self._git.heads()
                head, base = heads.get(record["head"]), heads.get(record["base"])
                if not head or not base:
                    missing = record["head"] if not head else record["base"]
                    raise ForgeError(
                        f"pull request #{number}: branch {missing!r} is gone from the remote "
                        f"{self._git.remote}; push it again",
                        forge=self._label,
                        status=405,
                    )
                async with self._git.workdir() as repo:
                    new = await self._merged_commit(repo, record, head, base, method, message)
                    _, messages = await self._git.run(
                        "log", "--format=%B", f"{base}..{head}", cwd=repo
                    )
                    if await self._git.publish(repo, record["base"], new, base):
                        break
            else:
                raise ForgeError(
                    f"pull request #{number}: {record['base']} kept moving during the merge; "
                    "try again",
                    forge=self._label,
                )

            def mark(pr: dict[str, Any]) -> None:
                pr.update(state="merged", merged=True, merge_sha=new, head_sha=head)
                pr["merged_at"] = _now()

            await asyncio.to_thread(self._files.update_pr, number, mark)
        if record["base"] == self.default_branch:  # GitHub closes only on the default branch
            named = _CLOSES.findall(f"{record.get('body') or ''}\n{messages}")
            for closed in dict.fromkeys(int(n) for n in named):
                if await asyncio.to_thread(self._files.issue_path, closed) is None:
                    continue  # no such issue, or a pull request: GitHub closes issues only
                # The merge is done and must be reported as done; an issue file a person
                # broke meanwhile stays open, and the next read of it names the problem.
                with contextlib.suppress(ForgeError):
                    await self.set_state(closed, "closed")
        return MergeResult(merged=True, sha=new, message="Pull Request successfully merged")

    async def _merged_commit(
        self,
        repo: Path,
        record: dict[str, Any],
        head: str,
        base: str,
        method: MergeMethod,
        message: str | None,
    ) -> str:
        """Write the commit `base` should move to; raise MergeConflictError if none merges."""
        number, title = record["number"], record["title"]
        if method == "rebase":
            return await self._replay(repo, number, head, base)
        tree, conflicts = await self._git.merge_tree(repo, base, head)
        if conflicts:
            raise self._conflict(number, record["base"], conflicts)
        if method == "merge":
            text = message or f"Merge pull request #{number} from {record['head']}\n\n{title}\n"
            return await self._git.commit(repo, tree, [base, head], text)
        if message is None:
            _, subjects = await self._git.run(
                "log", "--reverse", "--format=* %s", f"{base}..{head}", cwd=repo
            )
            message = f"{title} (#{number})\n\n{subjects}"
        return await self._git.commit(repo, tree, [base], message)

    async def _replay(self, repo: Path, number: int, head: str, base: str) -> str:
        _, out = await self._git.run(
            "rev-list", "--reverse", "--no-merges", f"{base}..{head}", cwd=repo
        )
        tip = base
        for commit in out.split():
            _, parent = await self._git.run("rev-parse", "--verify", f"{commit}^", cwd=repo)
            # git 2.39's merge-tree has no --merge-base, so a stand-in commit (the tip's tree
            # on the commit's parent) makes that parent the merge base: a cherry-pick.
            stand_in = await self._git.commit(repo, f"{tip}^{{tree}}", [parent.strip()], "tmp")
            tree, conflicts = await self._git.merge_tree(repo, stand_in, commit)
            if conflicts:
                raise self._conflict(number, f"the base (at {commit[:12]})", conflicts)
            _, raw = await self._git.run("cat-file", "commit", commit, cwd=repo)
            text = raw.partition("\n\n")[2]
            tip = await self._git.commit(repo, tree, [tip], text, author=raw)
        return tip

    def _conflict(self, number: int, base: str, paths: tuple[str, ...]) -> MergeConflictError:
        return MergeConflictError(
            f"pull request #{number} does not merge cleanly into {base}: conflicts in "
            f"{', '.join(paths)}; merge {base} into the branch, resolve, and push",
            forge=self._label,
            paths=paths,
        )

    def _pr(self, record: dict[str, Any], heads: dict[str, str]) -> PullRequest:
        number = int(record["number"])
        path = self._files.pulls / f"{number:04d}.yml"
        live = heads.get(record["head"]) if record["state"] == "open" else None
        return PullRequest(
            number=number,
            title=str(record["title"]),
            head=str(record["head"]),
            base=str(record["base"]),
            body=str(record.get("body") or ""),
            state=str(record["state"]),
            merged=bool(record.get("merged")),
            head_sha=live or str(record.get("head_sha") or ""),
            merge_sha=record.get("merge_sha") or None,
            url=path.absolute().as_uri(),
        )

    # -- branches --------------------------------------------------------------------------
    async def branches(self, prefix: str = "") -> list[Branch]:
        """Return the remote's branches whose names start with `prefix`, sorted by name."""
        heads = await self._git.heads()
        return [Branch(name, sha) for name, sha in sorted(heads.items()) if name.startswith(prefix)]


def _check_state(state: str, allowed: Sequence[str]) -> None:
    if state not in allowed:
        raise ValueError(f"unknown state {state!r}; use {' or '.join(allowed)}")
