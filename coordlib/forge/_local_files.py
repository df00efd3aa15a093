"""The files of a `LocalForge`: issues as Markdown with YAML front matter, comments one
file each, pull requests as YAML records, numbers handed out under a lock.

Every write is a whole file (temp file, fsync, ``os.replace``), and every read re-reads
the disk, so hand edits are picked up and a broken file is reported with its line.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from coordlib.atomic import write_atomic
from coordlib.errors import ForgeError, NotFoundError

from .base import (
    Comment,
    Issue,
    Review,
)

_ISSUE_FILE = re.compile(r"(\d+)(?:-[^/]*)?\.md")
_NUMBERED = re.compile(r"(\d+)\.(?:md|yml)")
_COMMENTS_DIR = re.compile(r"(\d+)\.comments")
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
    """Replace `path` with `text` (see `coordlib.atomic.write_atomic`), making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode(), durable=durable)


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
            # Private like the board beside it: issues quote briefings and worker results.
            for folder in reversed([p for p in (self.root, *self.root.parents) if not p.exists()]):
                folder.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
