"""What one pipeline pass did (`coord notify --json` prints it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .state import Pipeline

__all__ = ["PassReport"]


@dataclass
class PassReport:
    """What one pass did."""

    moves: list[dict[str, Any]] = field(default_factory=list)  # {issue, from, to, outcome}
    dispatched: list[str] = field(default_factory=list)
    stuck: list[dict[str, Any]] = field(default_factory=list)  # {issue, assignment, line}
    errors: list[str] = field(default_factory=list)
    paused: str | None = None  # why new dispatch is paused (the session budget)
    running: int = 0  # pipelines whose worker is still at it
    pipelines: list[Pipeline] = field(default_factory=list)  # every pipeline after the pass

    @property
    def idle(self) -> bool:
        """Tell whether nothing is running or waiting to be acted on."""
        # Nothing moved, started or runs: what is left waits for a person, or for a dispatch
        # that failed this pass too (the errors say why), or for the session budget.
        return not (self.dispatched or self.moves or self.running)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready report."""
        return {
            "moves": self.moves,
            "dispatched": self.dispatched,
            "stuck": self.stuck,
            "errors": self.errors,
            "paused": self.paused,
            "running": self.running,
            "pipelines": [p.to_dict() for p in self.pipelines],
        }
