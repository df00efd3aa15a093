"""When each machine last answered, and how to name why it did not."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

from .atomic import write_atomic
from .errors import AuthError, CommandTimeout, CoordError, HostKeyError, UnreachableError

__all__ = ["Contacts", "format_age", "machine_state"]


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


class Contacts:
    """When each machine last answered: ``contacts.json`` beside the board, best effort."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: dict[str, float] | None = None

    def seen(self, name: str) -> float | None:
        if self._seen is None:
            try:
                data = json.loads(self.path.read_bytes())
                self._seen = {k: float(v) for k, v in data.items() if isinstance(v, int | float)}
            except (OSError, ValueError, AttributeError):
                self._seen = {}
        return self._seen.get(name)

    def saw(self, names: Sequence[str]) -> None:
        """Note that these machines answered now (a lost write only loses a hint)."""
        if not names:
            return
        now = time.time()
        self.seen("")  # read what is there first
        assert self._seen is not None
        self._seen.update(dict.fromkeys(names, now))
        with contextlib.suppress(OSError):
            write_atomic(self.path, json.dumps(self._seen).encode(), durable=False)
