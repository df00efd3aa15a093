"""Trail markers: the signed, hidden line that ends every comment coordlib posts.

A marker is an HTML comment on the last line of a comment, ``<!-- coord:{json} -->``.  Its
JSON carries enough to rebuild the assignment's board row, and a MAC: HMAC-SHA256, with a key
coordlib makes on first use and keeps beside the board (``trail.key``, mode 0600), over the
whole record, which names the repo, the issue, the assignment id and the stage.  So a marker
cannot be forged by someone who can comment on the issue, nor copied to another issue or
stage; and its every field is checked before it becomes a row (`check_marker`).

Issue text and worker output that coordlib quotes in a comment pass through `neutralise`,
so they can never carry a marker (or an unclosed HTML comment) out with them.  The marker's
JSON never contains ``--``, which would end an HTML comment early: hyphens inside strings are
written as ``\\u002d`` where two would meet.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .assignment import ID_PATTERN, SESSION_ID_PATTERN, Assignment, Status
from .errors import BoardError
from .runtime.protocol import ExitReason

if TYPE_CHECKING:
    from .config import Config

__all__ = [
    "MARKER_VERSION",
    "STAGES",
    "MarkerError",
    "SkippedMarker",
    "TrailKey",
    "check_marker",
    "defang",
    "find_marker",
    "make_marker",
    "neutralise",
    "parse_markers",
]

MARKER_VERSION = 2
STAGES = frozenset({"dispatch", *(str(s) for s in Status if s != Status.PENDING)})
_LINE = re.compile(r"<!-- coord:(\{.*\}) -->")
# The fields a marker carries: enough to rebuild the board row.
_FIELDS = (
    "id", "machine", "repo", "issue", "branch", "model", "tier", "title", "worktree",
    "run_dir", "attempt", "created_at", "session_id", "status", "failure_class",
    "exit_reason", "cost_usd", "num_turns", "duration_ms", "finished_at",
)  # fmt: skip
_LINKS = ("retry_of", "continues")
# What exit.json says (the protocol's reasons), or what reconcile says of a run without one.
_EXIT_REASONS = frozenset({*ExitReason, "vanished", "launcher_gone"})
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,99}")
_KEY_BYTES = 32


class MarkerError(ValueError):
    """A marker that is not to be trusted; the message says why, in words."""


class TrailKey:
    """The secret that signs markers: ``trail.key`` beside the board, made on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: bytes | None = None

    def get(self, *, create: bool) -> bytes | None:
        """Return the key, making it first when `create`; None when there is none."""
        if self._key is None:
            self._key = self._read()
            if self._key is None and create:
                self._key = self._make()
        return self._key

    def sign(self, record: Mapping[str, Any]) -> str:
        """Return the MAC of record (without its "mac"), making the key if need be."""
        key = self.get(create=True)
        assert key is not None
        return _mac(key, record)

    def _read(self) -> bytes | None:
        try:
            text = self.path.read_text("ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise BoardError(f"cannot read the trail key {self.path}: {exc}") from exc
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) != _KEY_BYTES:
            raise BoardError(
                f"the trail key {self.path} is not {_KEY_BYTES} bytes of hex; restore it from "
                f"a backup, or move it aside (markers signed with it can then not be verified)"
            )
        return key

    def _make(self) -> bytes:
        """Write a new key without ever replacing one another process made meanwhile."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        key = os.urandom(_KEY_BYTES)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(key.hex() + "\n")
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp, self.path)  # fails if another process made one first
            except FileExistsError:
                key = self._read() or key
        except OSError as exc:
            raise BoardError(f"cannot write the trail key {self.path}: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return key


def _canonical(record: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k != "mac"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _mac(key: bytes, record: Mapping[str, Any]) -> str:
    return hmac.new(key, _canonical(record), hashlib.sha256).hexdigest()


def make_marker(stage: str, a: Assignment, key: TrailKey) -> str:
    """Return the signed marker line for assignment a at `stage` (dispatch, done, …)."""
    record: dict[str, Any] = {"v": MARKER_VERSION, "stage": stage}
    row = a.to_dict()
    record.update({k: row[k] for k in _FIELDS if row.get(k) is not None})
    record.update({k: getattr(a, k) for k in _LINKS if getattr(a, k)})
    record["mac"] = key.sign(record)
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    while "--" in text:  # only possible inside strings, where \u002d means the same
        text = text.replace("--", "-\\u002d")
    return f"<!-- coord:{text} -->"


def neutralise(text: str) -> str:
    """Return text that can open no HTML comment, so it never carries a marker out."""
    # A zero-width space between "<!" and "--" keeps the text readable as it was.
    return text.replace("<!--", "<!\u200b--")


_MENTION = re.compile(r"@(?=[A-Za-z0-9_-])")


def defang(text: str) -> str:
    """Return untrusted text (a worker's words, an issue's) safe to quote in a comment: it
    carries no marker out (`neutralise`) and pings nobody (``@name`` gets a zero-width space).
    """
    return _MENTION.sub("@\u200b", neutralise(text))


def find_marker(body: str) -> dict[str, Any] | None:
    """Return the marker on the last line of a comment body, unverified, or None.

    Only the last line counts: a marker quoted inside the comment (in a code fence, or in
    text coordlib quoted) is never read.
    """
    last = body.rstrip().rpartition("\n")[2].strip()
    match = _LINE.fullmatch(last)
    if match is None:
        return None
    try:
        data = json.loads(match.group(1))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def parse_markers(bodies: Iterable[str]) -> list[dict[str, Any]]:
    """Return the marker of each comment body that has one, unverified, oldest first."""
    return [m for m in map(find_marker, bodies) if m is not None]


def check_marker(
    data: Mapping[str, Any], *, key: bytes, repo: str, issue: int, config: Config
) -> dict[str, Any]:
    """Verify a marker found on `issue` of `repo` and return its checked fields.

    Raise `MarkerError` saying why when its MAC, its place or any field is wrong.
    """
    mac = data.get("mac")
    if data.get("v") != MARKER_VERSION or not isinstance(mac, str):
        raise MarkerError("it is not signed (an older coordlib, or not coordlib at all)")
    if not hmac.compare_digest(mac, _mac(key, data)):
        raise MarkerError("its signature does not match this coordinator's trail key")
    if data.get("repo") != repo or data.get("issue") != issue:
        raise MarkerError(
            f"it belongs to {data.get('repo')}#{data.get('issue')}, not here (a copied marker)"
        )
    out: dict[str, Any] = {"repo": repo, "issue": issue}
    out["stage"] = _one_of(data, "stage", STAGES)
    aid = out["id"] = _match(data, "id", ID_PATTERN)
    name = _text(data, "machine")
    if name not in config.machines:
        raise MarkerError(f"machine {name!r} is not in the config")
    m = config.machines[name]
    out["machine"] = name
    out["model"] = _model(data, config)
    if data.get("tier") is not None:
        out["tier"] = _text(data, "tier", allow_empty=True)
    branch = re.compile(rf"issue-{issue}(?:-[a-z0-9][a-z0-9-]*)?")
    out["branch"] = _match(data, "branch", branch)
    worktree = _text(data, "worktree")
    prefix = f"{m.root}/worktrees/{repo}/"
    if not (worktree.startswith(prefix) and ID_PATTERN.fullmatch(worktree[len(prefix) :])):
        raise MarkerError(f"its worktree {worktree!r} is not a coord worktree under {prefix}")
    out["worktree"] = worktree
    if _text(data, "run_dir") != f"{m.root}/runs/{aid}":
        raise MarkerError(f"its run_dir {data.get('run_dir')!r} is not {m.root}/runs/{aid}")
    out["run_dir"] = data["run_dir"]
    out["created_at"] = _number(data, "created_at")
    for name in ("finished_at", "cost_usd"):
        if data.get(name) is not None:
            out[name] = _number(data, name)
    for name in ("num_turns", "duration_ms"):
        if data.get(name) is not None:
            out[name] = _count(data, name)
    out["attempt"] = _count(data, "attempt") if data.get("attempt") is not None else 1
    if out["attempt"] < 1:
        raise MarkerError("its attempt is not 1 or more")
    if data.get("title") is not None:
        out["title"] = _text(data, "title", allow_empty=True)[:500]
    if data.get("session_id") is not None:
        out["session_id"] = _match(data, "session_id", SESSION_ID_PATTERN)
    if data.get("failure_class") is not None:
        from .outcomes import FAILURE_CLASSES

        out["failure_class"] = _one_of(data, "failure_class", FAILURE_CLASSES | {"dispatch_failed"})
    if data.get("exit_reason") is not None:
        out["exit_reason"] = _one_of(data, "exit_reason", _EXIT_REASONS)
    for name in _LINKS:
        if data.get(name) is not None:
            out[name] = _match(data, name, ID_PATTERN)
    return out


def _text(data: Mapping[str, Any], name: str, *, allow_empty: bool = False) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not (value or allow_empty) or "\0" in value:
        raise MarkerError(f"its {name} is missing or not text")
    return value


def _match(data: Mapping[str, Any], name: str, pattern: re.Pattern[str]) -> str:
    value = _text(data, name)
    if not pattern.fullmatch(value):
        raise MarkerError(f"its {name} {value[:80]!r} is malformed")
    return value


def _one_of(data: Mapping[str, Any], name: str, allowed: Iterable[str]) -> str:
    value = data.get(name)
    if value not in set(allowed):
        raise MarkerError(f"its {name} {str(value)[:80]!r} is not one coordlib writes")
    return str(value)


def _number(data: Mapping[str, Any], name: str) -> float:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MarkerError(f"its {name} {str(value)[:80]!r} is not a number")
    if value < 0:
        raise MarkerError(f"its {name} is negative")
    return float(value)


def _count(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MarkerError(f"its {name} {str(value)[:80]!r} is not a whole number")
    return value


def _model(data: Mapping[str, Any], config: Config) -> str:
    model = _text(data, "model")
    known = set(config.models.ids.values())
    if model in known or (not data.get("tier") and _MODEL.fullmatch(model)):
        return model
    raise MarkerError(f"its model {model[:80]!r} is not one the config knows")


@dataclass(frozen=True)
class SkippedMarker:
    """A marker `rebuild` did not trust, and why."""

    repo: str
    issue: int
    comment: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"repo": self.repo, "issue": self.issue, "comment": self.comment,
                "reason": self.reason}  # fmt: skip
