"""The answers of a machine's doctor and setup (``machine.sh``'s verbs), parsed.

A machine's answer is untrusted input: anything that is not exactly a well-formed answer
raises `ProtocolError`.  A check's name must be one the doctor declares, a step's index the
next one asked about; the text a machine says is kept to one printable line of bounded size
(its output, to a bounded tail) and never interpreted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ProtocolError
from .answers import parse_frame
from .protocol import DOCTOR_CHECKS, DOCTOR_LEVELS, SETUP_STATES, SETUP_TAIL

__all__ = ["Check", "StepAnswer", "parse_doctor", "parse_setup"]

_DETAIL_MAX = 400
_REPO_CHECK = re.compile(r"repo\.(0|[1-9][0-9]{0,5})")
_STEP = re.compile(r"(0|[1-9][0-9]{0,5}) state=([a-z_]+)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _line(text: str, most: int = _DETAIL_MAX) -> str:
    """Text on one line, control characters as '?', cut short with an ellipsis."""
    flat = _CONTROL.sub("?", text.replace("\n", " ").replace("\t", " ")).strip()
    return flat if len(flat) <= most else flat[: most - 1] + "…"


@dataclass(frozen=True)
class Check:
    """One finding about a machine: its name, ``ok``, ``warn`` (healthy, but worth a look) or
    ``fail``, and what was seen (never a secret's value)."""

    name: str
    level: str
    detail: str = ""
    fix: str = ""  # what to do about a failing (or warning) check, when there is something

    @property
    def ok(self) -> bool:
        """Whether the check passed (a warning passes)."""
        return self.level != "fail"

    def to_dict(self) -> dict[str, Any]:
        """Return the check as ``coord doctor --json`` prints it."""
        data: dict[str, Any] = {"name": self.name, "ok": self.ok, "detail": self.detail}
        data["level"] = self.level
        if self.fix:
            data["fix"] = self.fix
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Check | None:
        """Read a check back (from the board); None if it is not one."""
        if not isinstance(data, dict):
            return None
        name, detail, fix = data.get("name"), data.get("detail", ""), data.get("fix", "")
        level = data.get("level") or ("ok" if data.get("ok") else "fail")
        if not (isinstance(name, str) and isinstance(detail, str) and isinstance(fix, str)):
            return None
        return cls(name, level if level in DOCTOR_LEVELS else "fail", detail, fix)


def _error(verb: str, detail: str, machine: str | None) -> ProtocolError:
    return ProtocolError(f"unreadable {verb} answer: {detail}", machine=machine)


def parse_doctor(
    stdout: bytes, repos: Sequence[str] = (), *, machine: str | None = None
) -> list[Check]:
    """Parse a doctor's answer into its checks, in order; ``repo.<i>`` is named
    ``repo:<repos[i]>`` (the repos whose paths the doctor was given, in that order)."""
    checks: list[Check] = []
    seen: set[str] = set()
    for record in parse_frame(stdout, "doctor", machine=machine).records:
        name, _, rest = record.text.partition(" ")
        level, _, detail = rest.partition(" ")
        repo = _REPO_CHECK.fullmatch(name)
        if repo is not None and int(repo.group(1)) < len(repos):
            name = f"repo:{repos[int(repo.group(1))]}"
        elif name not in DOCTOR_CHECKS:
            raise _error("doctor", f"unknown check {record.text[:80]!r}", machine)
        if level not in DOCTOR_LEVELS:
            raise _error("doctor", f"bad check line {record.text[:80]!r}", machine)
        if name in seen:
            raise _error("doctor", f"check {name} answered twice", machine)
        seen.add(name)
        checks.append(Check(name, level, _line(detail)))
    return checks


@dataclass(frozen=True)
class StepAnswer:
    """What became of one step of a setup, and the end of what its commands printed."""

    state: str  # one of SETUP_STATES
    output: str  # the last (at most SETUP_TAIL) bytes, decoded (U+FFFD for what is not UTF-8)

    @property
    def last_line(self) -> str:
        """The output's last line that says something, on one printable line."""
        lines = [ln for ln in self.output.splitlines() if ln.strip()]
        return _line(lines[-1], 200) if lines else ""


def parse_setup(stdout: bytes, steps: int, *, machine: str | None = None) -> list[StepAnswer]:
    """Parse a setup's answer: one `StepAnswer` per step asked, in order."""
    said: list[StepAnswer] = []
    for record in parse_frame(stdout, "setup", machine=machine).records:
        m = _STEP.fullmatch(record.text.rsplit(" ", 1)[0])
        if m is None or m.group(2) not in SETUP_STATES or int(m.group(1)) != len(said):
            raise _error("setup", f"unexpected step line {record.text[:80]!r}", machine)
        payload = record.payload or b""
        if len(payload) > SETUP_TAIL:
            raise _error("setup", f"step {m.group(1)} says more than {SETUP_TAIL} bytes", machine)
        said.append(StepAnswer(m.group(2), payload.decode("utf-8", "replace")))
    if len(said) != steps:
        raise _error("setup", f"{len(said)} steps answered, not {steps}", machine)
    return said
