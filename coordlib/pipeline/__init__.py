"""The issue-to-PR pipeline: an issue's state (`state`), the playbook's engine (`engine`),
what each kind of stage does (`actions`), verdicts (`verdict`) and the cost ledger (`ledger`).

Only `state` is imported here: the board imports it, and the engine imports the board.
"""

from .state import ENDS, MERGED, NEEDS_HUMAN, READY, Pipeline, pipeline_key

__all__ = ["ENDS", "MERGED", "NEEDS_HUMAN", "READY", "Pipeline", "pipeline_key"]
