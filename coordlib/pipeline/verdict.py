"""Reading a reviewer's verdict out of its final text, which is untrusted model output.

Only a whole line ``VERDICT: approve`` or ``VERDICT: request-changes`` counts (any case,
``request_changes`` and Markdown bold tolerated); never one inside a quote (``>``) or code,
which may be the author's or the issue's words the reviewer quotes.  What follows the last
such line is the findings.  Lines that disagree are no verdict: the reviewer is asked again.
"""

from __future__ import annotations

import re

__all__ = ["APPROVE", "NO_VERDICT", "REQUEST_CHANGES", "parse_verdict"]

APPROVE = "approve"
REQUEST_CHANGES = "request-changes"
NO_VERDICT = "no-verdict"
_LINE = re.compile(
    r"^[ \t*_]*VERDICT[ \t*_]*:[ \t*_]*(approve|request[-_ ]changes)[ \t*_.]*$",
    re.IGNORECASE | re.MULTILINE,
)
_FENCE = re.compile(r"^[ \t]*(```|~~~)", re.MULTILINE)
_MAX_FINDINGS = 20_000


def parse_verdict(text: str | None) -> tuple[str, str]:
    """Return (approve | request-changes | no-verdict, the findings) from a reviewer's text."""
    text = text or ""
    fences = [m.start() for m in _FENCE.finditer(text)]
    # A verdict line inside a fenced block (an odd number of fences before it) is quoted code.
    matches = [m for m in _LINE.finditer(text) if sum(f < m.start() for f in fences) % 2 == 0]
    if not matches:
        return NO_VERDICT, ""
    said = {APPROVE if m.group(1).lower() == APPROVE else REQUEST_CHANGES for m in matches}
    if len(said) > 1:
        return NO_VERDICT, ""
    last = matches[-1]
    outcome = said.pop()
    findings = text[last.end() :].strip()
    if not findings:  # the findings came first: keep what was said before the verdict
        findings = text[: last.start()].strip()
    return outcome, findings[:_MAX_FINDINGS]
