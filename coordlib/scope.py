"""The files an issue declares it will change, and the changes that fall outside them.

An issue declares its files in a ``## Files`` section (one path per list item) or on a
``Files:`` line (paths separated by commas or spaces).  A path may name a directory
(``docs/``) or be a glob (``src/*.py``).  An issue that declares nothing is never flagged:
the backticked paths of its text (`coordlib.briefings.files_in_scope`) only guide briefings.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence

__all__ = ["declared_files", "outside"]

_HEADING = re.compile(r"^ {0,3}#{1,6}\s*(.*?)\s*#*\s*$")
_FILES_LINE = re.compile(r"^\s*(?:[-*+]\s+)?\**files\**\s*:\**\s*(.+)$", re.IGNORECASE)
_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(.*)$")
# What a declared path may look like: relative, no "..", no URL, globs allowed.
_PATH = re.compile(r"[A-Za-z0-9_.*?\[\]][A-Za-z0-9_./*?\[\]-]{0,299}")
_LIMIT = 100


def declared_files(body: str | None) -> list[str] | None:
    """Return the paths the issue body declares, or None when it declares none."""
    found: list[str] = []
    in_section = False
    for line in (body or "").splitlines():
        heading = _HEADING.match(line)
        if heading:
            in_section = heading.group(1).strip().lower() in ("files", "files to change")
            continue
        words: Iterable[str] = ()
        if in_section:
            item = _ITEM.match(line)
            if item:
                words = item.group(1).split()[:1]
        else:
            said = _FILES_LINE.match(line)
            if said:
                words = re.split(r"[,\s]+", said.group(1))
        for word in words:
            path = word.strip("`'\"").rstrip(".,;:")
            if _plausible(path) and path not in found:
                found.append(path)
    return found[:_LIMIT] or None


def _plausible(path: str) -> bool:
    return bool(_PATH.fullmatch(path)) and ".." not in path.split("/") and "//" not in path


def _covers(pattern: str, path: str) -> bool:
    if path == pattern or path.startswith(pattern.rstrip("/") + "/"):
        return True  # the file itself, or a directory that holds it
    return any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(path, pattern)


def outside(changed: Sequence[str], declared: Sequence[str] | None) -> list[str]:
    """Return the changed paths no declared path covers (none when nothing is declared)."""
    if not declared:
        return []
    return [p for p in changed if not any(_covers(d, p) for d in declared)]
