"""The machine's answers to the remote verbs: one framing, read by one parser, and a parser
per verb on top (see `coordlib.runtime.protocol` for the framing and the verbs).

An answer from a machine is untrusted input: anything that is not exactly a well-formed
answer raises `ProtocolError`; ids must be assignment ids, numbers numbers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from ..assignment import ID_PATTERN
from ..errors import ProtocolError
from .protocol import (
    BASE_BRANCH,
    BRANCH,
    HEADER,
    NUMBER,
    PROTOCOL_VERSION,
    SHA,
    TEST_PHASES,
    VERBS,
    ExitReason,
)

__all__ = [
    "Disk",
    "Frame",
    "Landed",
    "MachineProbe",
    "Pushed",
    "Record",
    "RunProbe",
    "StackStep",
    "Stacked",
    "Started",
    "Tested",
    "changed_paths",
    "failure_reason",
    "parse_await",
    "parse_clean",
    "parse_dispatch",
    "parse_frame",
    "parse_land",
    "parse_push",
    "parse_stack",
    "parse_status",
    "parse_stop",
    "parse_sync",
    "parse_test",
]


class Record(NamedTuple):
    """One record of an answer: its kind, the rest of its line, and its payload if it has one."""

    kind: str
    text: str
    payload: bytes | None = None


@dataclass(frozen=True)
class Frame:
    """A whole answer: its verb, the header's fields, and its records in order."""

    verb: str
    fields: Mapping[str, str]
    records: list[Record]


# A word of a payload's line before its size: a number, or a field (stack's branch=B).
_WORD = re.compile(rf"{NUMBER.pattern}|[a-z_]+=\S*")


def _error(verb: str, detail: str, machine: str | None) -> ProtocolError:
    return ProtocolError(f"unreadable {verb} answer: {detail}", machine=machine)


def parse_frame(data: bytes, verb: str, *, machine: str | None = None) -> Frame:
    """Parse an answer to `verb`; raise `ProtocolError` unless it is one, whole."""
    spec = VERBS[verb]
    lead = f"{HEADER} ".encode()
    # Anything before the header is what a login script printed: passed over.
    start = 0 if data.startswith(lead) else data.find(b"\n" + lead) + 1
    nl = data.find(b"\n", start) if start or data.startswith(lead) else -1
    if nl < 0:
        raise _error(verb, "incomplete (no header line)", machine)
    words = data[start:nl].decode("utf-8", "replace").split(" ")
    if words[1:3] != [str(PROTOCOL_VERSION), verb]:
        raise _error(verb, f"header {' '.join(words)[:80]!r} is not protocol "
                     f"{PROTOCOL_VERSION}'s answer to {verb}", machine)  # fmt: skip
    fields = dict(w.split("=", 1) for w in words[3:] if "=" in w)
    records: list[Record] = []
    pos = nl + 1
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            what = "incomplete (no end line)" if pos >= len(data) else f"truncated at byte {pos}"
            raise _error(verb, what, machine)
        line = data[pos:nl].decode("utf-8", "replace")
        pos = nl + 1
        if line == "end":
            return Frame(verb, fields, records)
        if not line:
            continue
        kind, _, text = line.partition(" ")
        if kind not in spec.records:
            raise _error(verb, f"unexpected line {line[:80]!r}", machine)
        words_n = spec.payloads.get(kind)
        if words_n is None:
            records.append(Record(kind, text))
            continue
        words = text.split(" ")
        if (
            len(words) != words_n or not NUMBER.fullmatch(words[-1])
            or not all(_WORD.fullmatch(w) for w in words[:-1])
        ):  # fmt: skip
            raise _error(verb, f"bad {kind} line {line[:80]!r}", machine)
        n = int(words[-1])
        payload = data[pos : pos + n]
        if len(payload) != n or data[pos + n : pos + n + 1] != b"\n":
            raise _error(verb, f"the payload of {line[:80]!r} is truncated", machine)
        records.append(Record(kind, text, payload))
        pos += n + 1


def _exit_record(text: str) -> dict[str, Any] | None:
    """Read an exit record as the machine wrote it (its file is the machine's: untrusted)."""
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {"reason": ExitReason.UNREADABLE, "raw": text[:200]}
    return value if isinstance(value, dict) else {"raw": text[:200]}


# ------------------------------------------------------------------ dispatch's answer

_HEAD = SHA


@dataclass(frozen=True)
class Started:
    """What a dispatch that started its run says: the launcher's pid, the worktree's commit."""

    launcher_pid: int | None = None
    head: str | None = None
    ports: tuple[int, int] | None = None  # the worktree's port range (first, last), if any


_PORTS = re.compile(r"([0-9]{1,5})-([0-9]{1,5})")


def parse_dispatch(data: bytes, *, machine: str | None = None) -> Started:
    """Parse a dispatch's answer."""
    records = parse_frame(data, "dispatch", machine=machine).records
    if len(records) != 1:
        raise _error("dispatch", f"{len(records)} started lines, not 1", machine)
    said = dict(w.split("=", 1) for w in records[0].text.split(" ") if "=" in w)
    pid, head = said.get("launcher_pid", ""), said.get("head", "")
    ports = _PORTS.fullmatch(said.get("ports", ""))
    first, last = (int(ports[1]), int(ports[2])) if ports else (0, -1)
    return Started(
        launcher_pid=int(pid) if NUMBER.fullmatch(pid) else None,
        head=head if _HEAD.fullmatch(head) else None,
        ports=(first, last) if 0 < first <= last <= 65535 else None,
    )


def failure_reason(stderr: str) -> str:
    """Return a failed verb's own reason, with the causes git gave just before it (if any)."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    reason = lines[-1].removeprefix(f"{HEADER}: ")
    causes = [ln for ln in lines[:-1] if ln.startswith(("fatal:", "error:"))][-2:]
    return f"{reason}: {'; '.join(causes)}" if causes else reason


# ------------------------------------------------------------------ status's answer
#
#   coord-run 2 status boot=<boot id> now=<epoch seconds>
#   run <id> alive=<0|1> size=<bytes|-1> dispatching=<0|1>
#   exit <exit.json on one line, or nothing>   (for runs not asked about, only that they
#                                              ended: {"reason":"ended"})
#   events <offset> <n>                        only for the runs asked about
#   <n raw bytes of events.jsonl>\n
#   stderr <n>                                 an ended run asked about: its stderr's tail
#   <n raw bytes of stderr.log>\n
#   missing <id>                               asked about, but no such run dir
#   end
#
# An id that is not an assignment id (`ID_PATTERN`) makes the answer malformed: the script
# never reports one, and the ids here go on to name rows, lines of output and commands.


@dataclass
class RunProbe:
    """One run directory as the machine reports it."""

    id: str
    alive: bool
    size: int
    dispatching: bool = False  # its dispatch is still on its way (no launcher yet)
    exit: dict[str, Any] | None = None
    events_offset: int | None = None
    events: bytes | None = None
    stderr: bytes | None = None  # an ended run's last words on stderr (its last 600 bytes)
    files: tuple[str, ...] | None = None  # what its branch changed so far, when asked


@dataclass(frozen=True)
class Disk:
    """The disk a machine's workdir uses, and the room left on its file system (KiB), as
    measured `at` (the machine's clock; it is measured in the background, now and then)."""

    used_kb: int
    free_kb: int
    at: float


@dataclass
class MachineProbe:
    """Every run on one machine, and its boot id and clock."""

    boot_id: str = ""
    now: float = 0.0
    runs: dict[str, RunProbe] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)
    disk: Disk | None = None


def parse_status(data: bytes, *, machine: str | None = None) -> MachineProbe:
    """Parse a status's answer into a `MachineProbe`."""
    frame = parse_frame(data, "status", machine=machine)
    probe = MachineProbe(boot_id=frame.fields.get("boot", ""))
    try:
        probe.now = float(frame.fields.get("now") or 0)
    except ValueError:
        raise _error("status", f"bad now= {frame.fields['now'][:40]!r}", machine) from None
    current: RunProbe | None = None
    for kind, text, payload in frame.records:
        if kind == "run":
            rid, *words = text.split(" ")
            if not rid:
                raise _error("status", "run line without an id", machine)
            if not ID_PATTERN.fullmatch(rid):
                raise _error("status", f"run line with a bad id: {text[:80]!r}", machine)
            kv = dict(w.split("=", 1) for w in words if "=" in w)
            try:
                size = int(kv.get("size", "-1"))
            except ValueError:
                raise _error("status", f"bad run line {text[:80]!r}", machine) from None
            current = RunProbe(
                rid, kv.get("alive") == "1", size, dispatching=kv.get("dispatching") == "1"
            )
            probe.runs[rid] = current
        elif current is None and kind in ("exit", "events", "stderr", "files"):
            raise _error("status", f"{kind} line before any run line", machine)
        elif kind == "exit":
            assert current is not None
            current.exit = _exit_record(text)
        elif kind == "events":
            assert current is not None
            offset = text.split(" ")[0]
            if not NUMBER.fullmatch(offset):
                raise _error("status", f"bad events line {text[:80]!r}", machine)
            current.events_offset, current.events = int(offset), payload
        elif kind == "stderr":
            assert current is not None
            current.stderr = payload
        elif kind == "files":
            assert current is not None
            current.files = changed_paths(payload)
        elif kind == "disk":
            probe.disk = _disk(text, machine)
        elif not ID_PATTERN.fullmatch(text):  # missing
            raise _error("status", f"missing line with a bad id: {text[:80]!r}", machine)
        else:
            probe.missing.add(text)
    return probe


def changed_paths(payload: bytes | None, *, most: int = 200) -> tuple[str, ...]:
    """The paths in a machine's list (one a line), each a plain relative path: a name git
    quoted (unusual characters), an absolute one or one with ``..`` is left out."""
    out: list[str] = []
    for raw in (payload or b"").decode("utf-8", "replace").splitlines()[:most]:
        if (not raw or len(raw) > 1000 or raw.startswith(("/", '"')) or ".." in raw.split("/")
                or any(ord(c) < 32 for c in raw)):  # fmt: skip
            continue
        out.append(raw)
    return tuple(out)


def _disk(text: str, machine: str | None) -> Disk:
    kv = dict(w.split("=", 1) for w in text.split(" ") if "=" in w)
    try:
        return Disk(int(kv["used_kb"]), int(kv["free_kb"]), float(kv["at"]))
    except (KeyError, ValueError):
        raise _error("status", f"bad disk line {text[:80]!r}", machine) from None


# ------------------------------------------------------------------ stop's and clean's answers


def parse_stop(data: bytes, *, machine: str | None = None) -> dict[str, Any] | None:
    """Parse a stop's answer: the run's exit record, or None when it has none yet."""
    records = parse_frame(data, "stop", machine=machine).records
    if len(records) != 1:
        raise _error("stop", f"{len(records)} exit lines, not 1", machine)
    return _exit_record(records[0].text)


def parse_clean(data: bytes, *, machine: str | None = None) -> dict[str, dict[str, Any]]:
    """Parse a clean's answer: what happened to each run, by id (see `cleanup.CleanedRun`)."""
    said: dict[str, dict[str, Any]] = {}
    for record in parse_frame(data, "clean", machine=machine).records:
        try:
            value = json.loads(record.text)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, dict) or not isinstance(value.get("id"), str):
            raise _error("clean", f"bad run line {record.text[:80]!r}", machine)
        said[value["id"]] = value
    return said


# ------------------------------------------------------------------ test's and push's answers
#
#   coord-run 2 test
#   tested sha=<commit> exit=<n> phase=build|test|none timed_out=0|1 seconds=<s> log=<path>
#   tail <n>                                   the end of output.log
#   <n raw bytes>\n
#   end
#
#   coord-run 2 push
#   pushed branch=<branch> sha=<commit>
#   end

_SECONDS = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")


@dataclass(frozen=True)
class Tested:
    """What a test of a commit found: how its last command ended, and its output's end."""

    __test__: ClassVar[bool] = False  # pytest: an answer, not a test class

    sha: str
    passed: bool
    exit_code: int
    phase: str  # the command that ran last: "build", "test", or "none" (none configured)
    timed_out: bool
    seconds: float
    log: str  # output.log's path on the machine (kept there)
    tail: str  # its last bytes, decoded (a cut character, or bytes not UTF-8, as U+FFFD)


def _single(frame: Frame, kinds: tuple[str, ...], machine: str | None) -> list[Record]:
    """Return the frame's records if they are one of each of `kinds`, in that order."""
    if tuple(r.kind for r in frame.records) != kinds:
        said = " ".join(r.kind for r in frame.records) or "no records"
        raise _error(frame.verb, f"{said}, not {' '.join(kinds)}", machine)
    return frame.records


def parse_test(stdout: bytes, *, machine: str | None = None) -> Tested:
    """Parse a test's answer into a `Tested`."""
    tested, tail = _single(
        parse_frame(stdout, "test", machine=machine), ("tested", "tail"), machine
    )
    head, sep, log = tested.text.partition(" log=")  # the path last: it may hold spaces
    said = dict(w.split("=", 1) for w in head.split(" ") if "=" in w)
    sha, code, phase = said.get("sha", ""), said.get("exit", ""), said.get("phase", "")
    late, seconds = said.get("timed_out", ""), said.get("seconds", "")
    if not (
        sep and log and _HEAD.fullmatch(sha) and NUMBER.fullmatch(code) and phase in TEST_PHASES
        and late in ("0", "1") and _SECONDS.fullmatch(seconds)
    ):  # fmt: skip
        raise _error("test", f"bad tested line {tested.text[:120]!r}", machine)
    exit_code, timed_out = int(code), late == "1"
    return Tested(
        sha=sha,
        passed=exit_code == 0 and not timed_out,
        exit_code=exit_code,
        phase=phase,
        timed_out=timed_out,
        seconds=float(seconds),
        log=log,
        tail=(tail.payload or b"").decode("utf-8", "replace"),
    )


@dataclass(frozen=True)
class Pushed:
    """What a push sent to origin: the branch, and the commit it now names there."""

    branch: str
    sha: str


def parse_push(stdout: bytes, *, machine: str | None = None) -> Pushed:
    """Parse a push's answer into a `Pushed`."""
    (pushed,) = _single(parse_frame(stdout, "push", machine=machine), ("pushed",), machine)
    said = dict(w.split("=", 1) for w in pushed.text.split(" ") if "=" in w)
    branch, sha = said.get("branch", ""), said.get("sha", "")
    if not (BRANCH.fullmatch(branch) and _HEAD.fullmatch(sha)):
        raise _error("push", f"bad pushed line {pushed.text[:120]!r}", machine)
    return Pushed(branch, sha)


# ------------------------------------------------------------------ stack's and land's answers
#
#   coord-run 2 stack
#   base sha=<commit>
#   applied branch=<branch> sha=<commit>       then its files record; or
#   conflict branch=<branch> <n>               the conflicting paths, then its files record; or
#   <n raw bytes>\n
#   missing branch=<branch>
#   files branch=<branch> <n>                  the paths the branch changes, one a line
#   <n raw bytes>\n
#   end
#
#   coord-run 2 land
#   landed base=<branch> sha=<commit>
#   end

_STACK_STATES = ("applied", "conflict", "missing")


@dataclass(frozen=True)
class StackStep:
    """What became of one branch of a stack."""

    branch: str
    state: str  # "applied", "conflict" (left out of the stack) or "missing" (no such branch)
    sha: str | None = None  # applied: the stack's head with the branch on it
    files: tuple[str, ...] = ()  # the paths the branch changes against the base
    conflicts: tuple[str, ...] = ()  # conflict: the paths that conflicted


@dataclass(frozen=True)
class Stacked:
    """A stack: the commit it was made on, and each branch in order."""

    base: str
    steps: tuple[StackStep, ...]

    @property
    def head(self) -> str:
        """The stack's top commit: the last applied branch's, or the base if none applied."""
        return next((s.sha for s in reversed(self.steps) if s.sha), self.base)


def _fields(text: str) -> dict[str, str]:
    return dict(w.split("=", 1) for w in text.split(" ") if "=" in w)


def _paths(payload: bytes | None) -> tuple[str, ...]:
    return tuple(p for p in (payload or b"").decode("utf-8", "replace").split("\n") if p)


def parse_stack(stdout: bytes, *, machine: str | None = None) -> Stacked:
    """Parse a stack's answer into a `Stacked`."""
    records = parse_frame(stdout, "stack", machine=machine).records
    if not records or records[0].kind != "base":
        raise _error("stack", "no base line first", machine)
    base = _fields(records[0].text).get("sha", "")
    if not _HEAD.fullmatch(base):
        raise _error("stack", f"bad base line {records[0].text[:120]!r}", machine)
    steps: list[StackStep] = []
    seen: set[str] = set()
    rest = iter(records[1:])
    for record in rest:
        said = _fields(record.text)
        branch = said.get("branch", "")
        if record.kind not in _STACK_STATES or not BRANCH.fullmatch(branch) or branch in seen:
            raise _error("stack", f"unexpected {record.kind} line {record.text[:120]!r}", machine)
        seen.add(branch)
        if record.kind == "missing":
            steps.append(StackStep(branch, "missing"))
            continue
        sha = said.get("sha") if record.kind == "applied" else None
        if record.kind == "applied" and not _HEAD.fullmatch(sha or ""):
            raise _error("stack", f"bad applied line {record.text[:120]!r}", machine)
        files = next(rest, None)  # each applied or conflict record is followed by its files
        if files is None or files.kind != "files" or _fields(files.text).get("branch") != branch:
            raise _error("stack", f"no files line after {record.text[:120]!r}", machine)
        conflicts = _paths(record.payload) if record.kind == "conflict" else ()
        steps.append(StackStep(branch, record.kind, sha, _paths(files.payload), conflicts))
    return Stacked(base, tuple(steps))


@dataclass(frozen=True)
class Landed:
    """What a land pushed: origin's base branch now names the commit."""

    base: str
    sha: str


def parse_land(stdout: bytes, *, machine: str | None = None) -> Landed:
    """Parse a land's answer into a `Landed`."""
    (landed,) = _single(parse_frame(stdout, "land", machine=machine), ("landed",), machine)
    said = _fields(landed.text)
    base, sha = said.get("base", ""), said.get("sha", "")
    if not (BASE_BRANCH.fullmatch(base) and _HEAD.fullmatch(sha)):
        raise _error("land", f"bad landed line {landed.text[:120]!r}", machine)
    return Landed(base, sha)


def parse_await(stdout: bytes, *, machine: str | None = None) -> str | None:
    """Parse an await's answer: the id of the run that ended (or is gone), None when none did."""
    for record in parse_frame(stdout, "await", machine=machine).records:
        if record.kind in ("ended", "gone"):
            if not ID_PATTERN.fullmatch(record.text):
                raise _error("await", f"bad {record.kind} line {record.text[:120]!r}", machine)
            return record.text
    return None


def parse_sync(stdout: bytes, *, machine: str | None = None) -> dict[str, Any]:
    """Parse a sync's answer: {base, behind, ahead, dirty, pulled, on, why}."""
    frame = parse_frame(stdout, "sync", machine=machine)
    synced = next((r for r in frame.records if r.kind == "synced"), None)
    if synced is None:
        raise _error("sync", "no synced line", machine)
    said = _fields(synced.text)
    out: dict[str, Any] = {"base": said.get("base", ""), "on": said.get("on", "-")}
    for key in ("behind", "ahead", "dirty", "pulled"):
        value = said.get(key, "")
        if not value.isdigit():
            raise _error("sync", f"bad synced line {synced.text[:120]!r}", machine)
        out[key] = int(value)
    why = next((r.text for r in frame.records if r.kind == "why"), '""')
    try:
        out["why"] = str(json.loads(why))
    except ValueError:
        out["why"] = ""
    return out
