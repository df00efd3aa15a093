"""Smoke tests by capability: which rules a change calls for, and where they can run.

`smoke_tests.capability_rules` map file globs to a capability (`gpu`, `macos`, …); a merge
candidate whose changes match a rule is also smoke-tested, after its batch's tests pass, on a
machine whose `capabilities` include it, with the rule's command (or
`smoke_tests.default_command`).  No machine has it: the candidate waits, and says why.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Config, MachineConfig

__all__ = ["capable", "nowhere", "rules_for"]


def rules_for(config: Config, changed: Sequence[Sequence[str]]) -> list[Mapping[str, Any]]:
    """The smoke rules whose globs match a file of the given candidates' changes."""
    paths = [f for fs in changed for f in fs]
    return [rule for rule in config.smoke_tests.capability_rules
            if any(_matches(f, g) for f in paths for g in rule.get("globs", ()))]  # fmt: skip


def capable(config: Config, capability: str, repo: str) -> MachineConfig | None:
    """A machine with `capability` that works on repo, or None."""
    return next((x for x in config.machines.values()
                 if capability in x.capabilities and (not x.repos or repo in x.repos)),
                None)  # fmt: skip


def nowhere(config: Config, repo: str, files: Sequence[str]) -> str | None:
    """Why a change with these files cannot be smoke-tested (no machine, no command), or None."""
    for rule in rules_for(config, [files]):
        if capable(config, rule["capability"], repo) is None:
            return (f"its changes need a smoke test on a machine with capability "
                    f"{rule['capability']} (smoke_tests.capability_rules), and no machine "
                    f"has it (machines[].capabilities)")  # fmt: skip
        if not (rule.get("command") or config.smoke_tests.default_command):
            return (f"the smoke rule for {rule['capability']} has no command, and "
                    f"smoke_tests.default_command is not set")  # fmt: skip
    return None


def _matches(path: str, glob: str) -> bool:
    """fnmatch, where a leading ``**/`` also matches at the top of the repo."""
    return fnmatch.fnmatchcase(path, glob) or (
        glob.startswith("**/") and fnmatch.fnmatchcase(path, glob[3:])
    )
