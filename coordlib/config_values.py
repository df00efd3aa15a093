"""The values coordinator.yml holds, read and checked: durations, env references (and which
names hold secrets), plain-http URLs, and "did you mean" hints.  `coordlib.config` re-exports
them; this module imports nothing of coordlib's but the errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from .errors import ConfigError

__all__ = [
    "format_duration",
    "is_cleartext_url",
    "is_secret_name",
    "parse_duration",
    "resolve_env",
    "suggest",
]

_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
_REFERENCE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*)|(\$))")
_SECONDS = re.compile(r"\s*\d+(?:\.\d+)?\s*")
_DURATION = re.compile(r"\s*(?:\d+(?:\.\d+)?\s*[smhd]\s*)+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def suggest(value: str, choices: Sequence[str], what: str, *, list_all: bool = True) -> str:
    """Return a hint naming the choice closest to `value` ("did you mean …?") and the choices."""
    import difflib

    close = difflib.get_close_matches(value, choices, n=1)
    listed = f"{what}: {', '.join(choices) if choices else 'none'}"
    if not close:
        return listed
    return f"did you mean {close[0]!r}? {listed}" if list_all else f"did you mean {close[0]!r}?"


# --- durations and environment -------------------------------------------------------------


def parse_duration(text: str) -> float:
    """Return the seconds in "90", "90s", "10m", "2h", "1h30m" or "1d"."""
    if _SECONDS.fullmatch(text):
        return float(text)
    if not _DURATION.fullmatch(text):
        raise ValueError(f"not a duration: {text!r} (write e.g. 90s, 10m, 2h or 1h30m)")
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


def format_duration(seconds: float) -> str:
    """Return `seconds` as parse_duration reads it back: 600 → "10m", 5400 → "1h30m"."""
    if seconds != int(seconds) or seconds <= 0:
        return f"{seconds:g}s"
    rest, parts = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def is_cleartext_url(url: str) -> bool:
    """Tell whether url is http:// to a host other than a loopback address (a token in clear)."""
    if not url.lower().startswith("http://"):
        return False
    import ipaddress
    import urllib.parse

    host = (urllib.parse.urlsplit(url).hostname or "").rstrip(".")
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a name: it may resolve anywhere


def is_secret_name(name: str) -> bool:
    """Tell whether an environment variable name looks like it holds a secret."""
    upper = name.upper()
    return any(word in upper for word in _SECRET_WORDS)


def resolve_env(
    env: Mapping[str, str], environ: Mapping[str, str], *, machine: str
) -> dict[str, str]:
    """Substitute ${VAR} and $VAR references from `environ`; "$$" is a literal "$"."""
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        if match.group(3):
            return "$"
        var = match.group(1) or match.group(2)
        if var not in environ:
            if var not in missing:
                missing.append(var)
            return ""
        return environ[var]

    resolved = {name: _REFERENCE.sub(substitute, value) for name, value in env.items()}
    if missing:
        names = ", ".join(missing)
        raise ConfigError(
            f"machine {machine!r}: env refers to {names}, not set in the coordinator's environment",
            key=f"machines.{machine}.env",
            hint="run " + " ".join(f"export {var}=…" for var in missing) + " first",
        )
    return resolved
