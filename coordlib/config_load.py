"""Load coordinator.yml through a parse cache, so that a config read again skips PyYAML.

Starting `coord status` is mostly imports, and PyYAML (with its regexes) is one of the
biggest; a config is read far more often than it is edited.  The YAML reader, `config_yaml`,
is imported only when the cache cannot answer.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from ._version import __version__
from .atomic import write_atomic
from .config import Config
from .errors import ConfigError

__all__ = ["load_config"]

# The modules whose code decides what a text parses to: a change to any of them (a source
# checkout being edited) makes every cached parse stale.
_PARSER_MODULES = ("config.py", "config_nodes.py", "config_yaml.py", "config_load.py")


def load_config(path: str | os.PathLike[str], *, cache: bool = True) -> Config:
    """Read and parse the config file at `path`.

    A config that parsed cleanly is kept, as JSON, in the user's cache directory
    (``$XDG_CACHE_HOME/coordlib``, else ``~/.cache/coordlib``), keyed by the file's
    exact text; the next load of the same text skips YAML altogether.  Any change to the
    file, to coordlib or to $HOME parses again.  `cache=False` always parses.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            "config file does not exist", path=str(file), hint="run `coord init` to create one"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the config file: {exc}", path=str(file)) from exc
    base_dir = file.absolute().parent
    if not cache:
        return _parse(text, file, base_dir)
    entry, key = _cache_entry(file, text, base_dir)
    cached = _cache_read(entry, key)
    if cached is not None:
        return cached
    config = _parse(text, file, base_dir)
    _cache_write(entry, key, config)
    return config


def _parse(text: str, file: Path, base_dir: Path) -> Config:
    from . import config_yaml  # PyYAML: only when the cache cannot answer

    return config_yaml.parse_config(text, path=file, base_dir=base_dir)


def _cache_entry(file: Path, text: str, base_dir: Path) -> tuple[Path | None, str]:
    """Return (the cache file for this config path, the key its text and context give)."""
    import hashlib

    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(root):
        return None, ""
    here = Path(__file__).parent
    parts = [__version__, str(file.absolute()), str(base_dir), os.path.expanduser("~"), text]
    for module in _PARSER_MODULES:
        try:  # a changed parser is a different parser
            st = (here / module).stat()
            parts.append(f"{st.st_mtime_ns}:{st.st_size}")
        except OSError:
            return None, ""
    key = hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    name = hashlib.sha256(str(file.absolute()).encode("utf-8", "surrogatepass")).hexdigest()
    return Path(root) / "coordlib" / "config" / f"{name[:24]}.json", key


def _cache_read(entry: Path | None, key: str) -> Config | None:
    if entry is None:
        return None
    try:
        data = json.loads(entry.read_bytes())
        if data.get("key") != key:
            return None
        return Config.from_dict(data["config"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing, unreadable or from another version: parse again


def _cache_write(entry: Path | None, key: str, config: Config) -> None:
    """Keep `config` for next time, if its JSON form rebuilds it exactly; never fail."""
    if entry is None:
        return
    data = config.to_dict()
    try:
        if Config.from_dict(data) != config:
            return  # e.g. a value JSON has no type for: it would come back changed
    except (KeyError, TypeError, ValueError):
        return
    text = json.dumps({"key": key, "config": data}, separators=(",", ":"))
    with contextlib.suppress(OSError):
        entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(entry, text.encode(), durable=False)
