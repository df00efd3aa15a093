"""Parse what ``coord-run status`` prints: the state of every run on one machine.

The format is framed text rather than JSON so the remote side needs nothing but
bash and coreutils, and so a run's new events travel as raw bytes with a length::

    coord-probe 1 boot=<boot id> now=<epoch seconds>
    tmux <session name>                        (accepted; today's probe sends none)
    run <id> alive=<0|1> size=<bytes|-1> dispatching=<0|1>
    exit <exit.json on one line, or nothing>   (for runs not asked about, only that they
                                               ended: {"reason":"ended"})
    events <offset> <n>                        only for runs the caller asked about
    <n raw bytes of events.jsonl>\\n
    missing <id>                               asked about, but no such run dir
    end

An id that is not an assignment id (``ID_PATTERN``) is a malformed probe: the script never
reports one, and the ids here go on to name rows, lines of output and later commands.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..assignment import ID_PATTERN

__all__ = ["MachineProbe", "ProbeError", "RunProbe", "parse_probe"]


class ProbeError(ValueError):
    """The probe output is not in the expected format."""


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


@dataclass
class MachineProbe:
    """Every run on one machine, its tmux sessions and its boot id."""

    boot_id: str = ""
    now: float = 0.0
    tmux_sessions: set[str] = field(default_factory=set)
    runs: dict[str, RunProbe] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)


def parse_probe(data: bytes) -> MachineProbe:
    """Parse the output of ``coord-run status`` into a `MachineProbe`."""
    probe = MachineProbe()
    pos = 0
    current: RunProbe | None = None
    seen_header = seen_end = False
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            raise ProbeError(f"truncated probe output at byte {pos}")
        line = data[pos:nl].decode("utf-8", "replace")
        pos = nl + 1
        word, _, rest = line.partition(" ")
        if word == "coord-probe":
            seen_header = True
            fields = dict(kv.split("=", 1) for kv in rest.split()[1:] if "=" in kv)
            probe.boot_id = fields.get("boot", "")
            try:
                probe.now = float(fields.get("now", "0") or 0)
            except ValueError as exc:
                raise ProbeError(f"bad probe header: {line!r}") from exc
        elif word == "tmux":
            probe.tmux_sessions.add(rest)
        elif word == "run":
            parts = rest.split()
            if not parts:
                raise ProbeError("run line without an id")
            if not ID_PATTERN.fullmatch(parts[0]):
                raise ProbeError(f"run line with a bad id: {line[:80]!r}")
            kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
            try:
                size = int(kv.get("size", "-1"))
            except ValueError as exc:
                raise ProbeError(f"bad run line: {line!r}") from exc
            current = RunProbe(
                id=parts[0],
                alive=kv.get("alive") == "1",
                size=size,
                dispatching=kv.get("dispatching") == "1",
            )
            probe.runs[current.id] = current
        elif word == "exit":
            if current is None:
                raise ProbeError("exit line before any run line")
            if rest.strip():
                try:
                    value = json.loads(rest)
                except json.JSONDecodeError:
                    value = {"reason": "unreadable", "raw": rest[:200]}
                current.exit = value if isinstance(value, dict) else {"raw": rest[:200]}
        elif word == "events":
            if current is None:
                raise ProbeError("events line before any run line")
            try:
                offset_s, length_s = rest.split()
                offset, length = int(offset_s), int(length_s)
            except ValueError as exc:
                raise ProbeError(f"bad events line: {line!r}") from exc
            chunk = data[pos : pos + length]
            if len(chunk) != length or data[pos + length : pos + length + 1] != b"\n":
                raise ProbeError(f"events of run {current.id} truncated")
            current.events_offset, current.events = offset, chunk
            pos += length + 1
        elif word == "missing":
            if not ID_PATTERN.fullmatch(rest.strip()):
                raise ProbeError(f"missing line with a bad id: {line[:80]!r}")
            probe.missing.add(rest.strip())
        elif word == "end":
            seen_end = True
            break
        elif line:
            raise ProbeError(f"unexpected probe line: {line[:80]!r}")
    if not seen_header or not seen_end:
        raise ProbeError("incomplete probe output (no header or no end line)")
    return probe
