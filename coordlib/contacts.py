"""When each machine last answered, how to name why it did not, and how to say its figures
(ages, sizes) shortly."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

from .atomic import write_atomic
from .errors import AuthError, CommandTimeout, CoordError, HostKeyError, UnreachableError

__all__ = ["Contacts", "format_age", "format_kib", "machine_state"]


def machine_state(exc: CoordError) -> str:
    """Name how a machine failed to answer (see `MachineStatus.state`)."""
    if isinstance(exc, UnreachableError):
        return exc.reason
    if isinstance(exc, CommandTimeout):  # connected once, but silent now: hung or stopped
        return "timeout"
    if isinstance(exc, HostKeyError):
        return "host_key"
    if isinstance(exc, AuthError):
        return "auth"
    return "error"


def format_age(seconds: float) -> str:
    """Say how long ago, shortly: 45s, 12m, 3h, 2d."""
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h" if s < 172800 else f"{s // 86400}d"


def format_kib(kb: int | None) -> str:
    """KiB as a person reads a size: 812K, 3.4G ("-" when unknown)."""
    if kb is None or kb < 0:
        return "-"
    value, unit = float(kb), "K"
    for unit in "KMGT":
        if value < 1024 or unit == "T":
            break
        value /= 1024
    return f"{value:.0f}{unit}" if value >= 10 or unit == "K" else f"{value:.1f}{unit}"


class Contacts:
    """When each machine last answered, and how many status passes in a row it has missed
    since: ``contacts.json`` beside the board, best effort (a lost write loses a hint)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: dict[str, float] | None = None
        self._misses: dict[str, int] = {}

    def _read(self) -> dict[str, float]:
        if self._seen is None:
            self._seen = {}
            try:
                data = json.loads(self.path.read_bytes())
            except (OSError, ValueError):
                data = {}
            if isinstance(data, dict) and isinstance(data.get("seen"), dict):
                seen, misses = data["seen"], data.get("misses")
            else:  # the first version's: {name: when}
                seen, misses = data if isinstance(data, dict) else {}, None
            self._seen = {k: float(v) for k, v in seen.items()
                          if isinstance(v, int | float) and not isinstance(v, bool)}  # fmt: skip
            if isinstance(misses, dict):
                self._misses = {k: v for k, v in misses.items()
                                if type(v) is int and v > 0}  # fmt: skip
        return self._seen

    def seen(self, name: str) -> float | None:
        """When `name` last answered (epoch seconds), or None."""
        return self._read().get(name)

    def misses(self, name: str) -> int:
        """How many status passes in a row `name` has not answered."""
        self._read()
        return self._misses.get(name, 0)

    def stale(self, name: str, threshold: int) -> bool:
        """Whether `name` has missed `threshold` passes in a row (it gets no new work)."""
        return self.misses(name) >= threshold

    def saw(self, names: Sequence[str], missed: Sequence[str] = ()) -> None:
        """Note a pass: these machines answered now, those in `missed` did not."""
        if not names and not missed:
            return
        seen = self._read()
        seen.update(dict.fromkeys(names, time.time()))
        for name in names:
            self._misses.pop(name, None)
        for name in missed:
            self._misses[name] = self._misses.get(name, 0) + 1
        data = {"seen": seen, "misses": self._misses}
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # (a first pass)
            write_atomic(self.path, json.dumps(data).encode(), durable=False)
