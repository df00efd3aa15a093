"""Make untrusted text safe to show on a terminal.

Worker output, issue titles, bodies and comments come from people and models coordlib does
not trust.  Printed raw, an escape sequence in them can rewrite the screen, set the window
title, or write the clipboard (OSC 52).  `printable` makes every control character other
than newline and tab visible instead, as ``\\x1b``, and so the bidirectional overrides that
make text read differently from how it runs (``\\u202e``).  JSON output needs none of this:
its strings escape them already.
"""

from __future__ import annotations

__all__ = ["printable"]

_CONTROLS = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]
_BIDI = [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_TABLE = {c: f"\\x{c:02x}" for c in _CONTROLS if c not in (0x09, 0x0A)} | {
    c: f"\\u{c:04x}" for c in _BIDI
}


def printable(text: str) -> str:
    """Return text with every control character but newline and tab made visible."""
    return text.translate(_TABLE)
