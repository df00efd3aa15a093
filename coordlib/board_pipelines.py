"""The board's pipeline transitions: each issue's pipeline state, in the board's own file.

A pipeline document lives in the board's ``pipelines`` table beside the assignments, under
the same lock, so a transition that starts a stage's assignment and records it on the
pipeline can be one transaction.  Every change is compare-and-set on the pipeline's
`version`: the engine reads a pipeline, decides, and its change is made only if nobody
moved the pipeline meanwhile, so two `coord notify` passes at once never both act.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from .board_store import RecordStore, Transaction
from .pipeline.state import Pipeline, pipeline_key

__all__ = ["PIPELINES", "PipelineTransitions", "Stale", "put_pipeline"]

T = TypeVar("T")
PIPELINES = "pipelines"


class Stale(Exception):
    """The pipeline moved (or vanished) since it was read: the change was not made."""


class PipelineTransitions(RecordStore):
    """The records store with the pipeline transitions: the `Board` builds on it."""

    def pipelines(self) -> list[Pipeline]:
        """Return every issue's pipeline, oldest first."""
        return [Pipeline.from_dict(d) for d in self.docs(PIPELINES)]

    def pipeline(self, repo: str, issue: int) -> Pipeline | None:
        """Return repo's issue's pipeline, or None when it has none."""
        key = pipeline_key(repo, issue)
        return next((p for p in self.pipelines() if p.key == key), None)

    def pipeline_change(
        self,
        repo: str,
        issue: int,
        change: Callable[[Pipeline | None, Transaction], T],
        *,
        version: int | None = None,
    ) -> tuple[T, Pipeline | None]:
        """Apply `change` to the pipeline (None if it has none) in one board transaction.

        `change` mutates the pipeline it is given (or returns after putting a new one with
        `put_pipeline`), and may make assignment transitions through the same transaction.
        With `version`, raise `Stale` unless the pipeline is still at that version (which
        every change bumps, but for the outbox's: posting a comment decides nothing).  Return
        what `change` returned and the pipeline as written.
        """
        key = pipeline_key(repo, issue)
        with self.transaction() as txn:
            table = txn.docs(PIPELINES)
            raw = table.get(key)
            p = Pipeline.from_dict(raw) if raw is not None else None
            if version is not None and (p is None or p.version != version):
                raise Stale(key)
            before = _decided(p)
            outbox = list(p.outbox) if p is not None else None
            result = change(p, txn)
            if p is not None and _decided(p) != before:
                p.version += 1  # the outbox alone is no decision: posting never bumps it
                p.updated_at = time.time()
                table.put(p.to_dict())
            elif p is not None and p.outbox != outbox:
                table.put(p.to_dict())
            after = table.get(key)
        return result, Pipeline.from_dict(after) if after is not None else None


def _decided(p: Pipeline | None) -> dict[str, object] | None:
    """What a pipeline's version covers: all of it but the outbox and the time of change."""
    if p is None:
        return None
    data = p.to_dict()
    data.pop("outbox")
    data.pop("updated_at")
    return data


def put_pipeline(txn: Transaction, p: Pipeline) -> None:
    """Write a whole pipeline (a new one, or one replacing an ended one) in txn."""
    now = time.time()
    p.created_at = p.created_at or now
    p.updated_at = now
    p.version += 1
    txn.docs(PIPELINES).put(p.to_dict())
