"""The shell that runs on a machine, as coordlib sends it (see `coordlib.runtime.protocol`).

``common.sh`` and the verbs' scripts (``remote.sh`` and the others in `_VERB_SCRIPTS`), split
into one section a verb; every remote command carries the common part and its own verb's
section (`remote_script`), with the sections of ``shared.sh`` it calls.  The launcher is
``common.sh`` + ``shared.sh`` + ``workspace.sh`` + ``launcher.sh`` (`launcher_script`), saved
on each machine under its hash (`launcher_hash`).
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["launcher_hash", "launcher_script", "remote_script"]

_TEXTS: dict[str, str] = {}


def _text(name: str) -> str:
    text = _TEXTS.get(name)
    if text is None:
        # A plain file read: importlib.resources costs more to import than this whole read.
        text = _TEXTS[name] = Path(__file__).with_name(name).read_text("utf-8")
    return text


# The verbs' scripts, split into sections by "# ---…--- NAME" lines, one a verb; remote.sh's
# last, "verbs", is the verb table.  What a file has before its first section is its own
# common part, sent with each of its verbs (remote.sh's is only comments).
_VERB_SCRIPTS = ("remote.sh", "clean.sh", "branch.sh", "await.sh", "machine.sh", "app.sh")
_SECTION = re.compile(r"^# -{10,} (\w+)\n", re.MULTILINE)
_SENT: dict[str, str] = {}
# shared.sh's sections (functions some verbs share), and the verbs that need each; the
# launcher carries all of shared.sh.
_HELPERS = {
    "dispatch": ("ports",),
    "app": ("ports", "sandbox"),
    "clean": ("rescue", "sandbox"),
    "test": ("sandbox",),
}


def _helpers() -> dict[str, str]:
    _, *parts = _SECTION.split(_text("shared.sh"))
    return dict(zip(parts[::2], parts[1::2], strict=True))


def _sections() -> dict[str, tuple[str, str]]:
    """Return each section of the verbs' scripts by name: (its file's common part, its text)."""
    found: dict[str, tuple[str, str]] = {}
    for name in _VERB_SCRIPTS:
        shared, *parts = _SECTION.split(_text(name))
        for section, text in zip(parts[::2], parts[1::2], strict=True):
            found[section] = (shared, text)
    return found


def remote_script(verb: str | None = None) -> str:
    """Return the text a remote command runs: the common part, then the verbs.

    With `verb`, only what that verb needs: the common part, its own section (and its file's
    common part) and the verb table, without comment lines.  Every command carries its
    script as an argument, to every machine: a status sends about 12 KB rather than all the
    verbs' 60 KB.
    """
    if verb is None:
        remote = _text("remote.sh")
        table = next(m.start() for m in _SECTION.finditer(remote) if m.group(1) == "verbs")
        # The other files' functions must be defined before the table runs one of them.
        others = "".join(_text(name) for name in _VERB_SCRIPTS[1:])
        return (_text("common.sh") + _text("shared.sh") + remote[:table] + others
                + remote[table:])  # fmt: skip
    text = _SENT.get(verb)
    if text is None:
        sections = _sections()
        shared, own = sections[verb]
        helpers = "".join(_helpers()[h] for h in _HELPERS.get(verb, ()))
        whole = _text("common.sh") + helpers + shared + own + sections["verbs"][1]
        text = _SENT[verb] = "".join(
            line for line in whole.splitlines(keepends=True)
            if line.strip() and not line.lstrip().startswith("#")
        )  # fmt: skip
    return text


def launcher_script() -> str:
    """Return the text of the launcher that dispatch installs: the common part, the
    workspace's (setup before the worker), the confinement's (its sandbox), then its own."""
    return (_text("common.sh") + _text("shared.sh") + _text("workspace.sh")
            + _text("confine.sh") + _text("launcher.sh"))  # fmt: skip


def launcher_hash() -> str:
    """Return a short hash of the launcher's text, which versions its installed copy."""
    import hashlib  # only dispatches need it: not imported by every `coord status`

    return hashlib.sha256(launcher_script().encode()).hexdigest()[:12]
