"""`coordinator.yml` as frozen dataclasses: finding it, loading it (through a parse cache),
and the helpers that use it (env references, durations, `coord init`'s template).

The YAML reading itself, with errors that name file, line and key, is in `config_yaml`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from ._version import __version__
from .errors import ConfigError

__all__ = [
    "CONFIG_NAME",
    "DEFAULT_MODEL_IDS",
    "EXTRA_SECTIONS",
    "BoardConfig",
    "ConcurrencyConfig",
    "Config",
    "MachineConfig",
    "ModelsConfig",
    "RepoConfig",
    "WorkerConfig",
    "discover_repos",
    "find_config",
    "is_cleartext_url",
    "is_secret_name",
    "load_config",
    "parse_config",
    "parse_duration",
    "render_init_config",
    "resolve_env",
]

_T = TypeVar("_T")

CONFIG_NAME = "coordinator.yml"
DEFAULT_MODEL_IDS: Mapping[str, str] = MappingProxyType(
    {"haiku": "claude-haiku-4-5", "sonnet": "claude-sonnet-4-5", "opus": "claude-opus-4-5"}
)
EXTRA_SECTIONS = ("github", "reviews", "smoke_tests", "hooks", "forge", "briefings")

_NAME = re.compile(r"[A-Za-z0-9._-]+")
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
_REFERENCE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*)|(\$))")
_SECONDS = re.compile(r"\s*\d+(?:\.\d+)?\s*")
_DURATION = re.compile(r"\s*(?:\d+(?:\.\d+)?\s*[smhd]\s*)+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _frozen(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class RepoConfig:
    """A repository the coordinator hands work on."""

    name: str
    github: str | None = None  # owner/name
    forge: str | None = None  # None | "local" | "github"
    default_branch: str = "main"
    build_command: str | None = None
    test_command: str | None = None
    depends_on: tuple[str, ...] = ()
    url: str | None = None


@dataclass(frozen=True)
class MachineConfig:
    """A machine workers run on, reached locally or over SSH."""

    name: str
    host: str
    port: int = 22
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None  # None means ~/.ssh/known_hosts
    capabilities: tuple[str, ...] = ()
    repos: tuple[str, ...] = ()  # empty means every configured repo
    repo_paths: Mapping[str, str] = field(default_factory=_frozen)
    workdir: str = "~/.coord"  # expanded on the machine, not here
    claude_command: str = "claude"
    env: Mapping[str, str] = field(default_factory=_frozen)  # unresolved ${VAR} templates
    max_workers: int = 2
    tmux_socket: str = "coord"

    @property
    def is_local(self) -> bool:
        """Tell whether workers run on this machine without SSH."""
        # 127.0.0.1 deliberately goes over SSH: it is how the test suite reaches a real sshd.
        return self.host in ("localhost", "local")

    def repo_path(self, repo: str) -> str:
        """Return where `repo` is checked out on this machine."""
        return self.repo_paths.get(repo, f"~/src/{repo}")

    @property
    def root(self) -> str:
        """The workdir with no trailing slash: the prefix of every run and worktree path."""
        return self.workdir.rstrip("/") or "~/.coord"

    def claude_argv(self) -> list[str]:
        """Return the command that starts Claude Code, split into argv."""
        return shlex.split(self.claude_command)


@dataclass(frozen=True)
class ConcurrencyConfig:
    """How many workers run at once and how failures are retried."""

    max_workers: int = 8
    stagger_seconds: float = 0.0
    backoff_base: float = 2.0
    max_retries: int = 3
    auto_reassign: bool = False
    stale_threshold: float = 600.0


@dataclass(frozen=True)
class ModelsConfig:
    """Model tiers, the escalation ladder and the label → tier map."""

    default: str = "sonnet"
    escalation: tuple[str, ...] = ("haiku", "sonnet", "opus")
    labels: Mapping[str, str] = field(default_factory=_frozen)
    ids: Mapping[str, str] = field(default_factory=lambda: _frozen(DEFAULT_MODEL_IDS))

    def resolve(self, tier_or_id: str) -> tuple[str, str]:
        """Return (tier, model id) for a tier name, or ("", id) for a full model id."""
        value = tier_or_id.strip()
        if value in self.ids:
            return value, self.ids[value]
        if "claude-" in value or "-" in value or "/" in value:
            return "", value
        raise ConfigError(
            f"unknown model tier {value!r}",
            key="model",
            hint=_suggest(value, list(self.ids), "tiers")
            + "; or give a full model id such as claude-opus-4-5",
        )


@dataclass(frozen=True)
class WorkerConfig:
    """Limits the launcher's watchdog enforces on each worker, in seconds."""

    stall_timeout: float = 600.0
    max_runtime: float = 7200.0
    result_grace: float = 30.0
    poll_interval: float = 1.0
    allowed_tools: str = "Read,Edit,Write,Bash"
    extra_args: tuple[str, ...] = ()
    max_turns: int | None = None  # passed as --max-turns when set


@dataclass(frozen=True)
class BoardConfig:
    """Where the board file lives and how much finished work it keeps live."""

    path: Path = Path(".coord/board.json")
    keep_finished: int = 300


def _default_machines() -> Mapping[str, MachineConfig]:
    return _frozen({"local": MachineConfig(name="local", host="localhost")})


@dataclass(frozen=True)
class Config:
    """The whole of `coordinator.yml`."""

    path: Path | None = None
    repos: Mapping[str, RepoConfig] = field(default_factory=_frozen)
    machines: Mapping[str, MachineConfig] = field(default_factory=_default_machines)
    concurrency: ConcurrencyConfig = field(default_factory=ConcurrencyConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    board: BoardConfig = field(default_factory=BoardConfig)
    extra: Mapping[str, Any] = field(default_factory=_frozen)

    def machine(self, name: str) -> MachineConfig:
        """Return the machine called `name`."""
        return self._lookup(self.machines, name, "machine")

    def repo(self, name: str) -> RepoConfig:
        """Return the repo called `name`."""
        return self._lookup(self.repos, name, "repo")

    def _lookup(self, items: Mapping[str, _T], name: str, what: str) -> _T:
        if name in items:
            return items[name]
        where = f" in {self.path}" if self.path else ""
        raise ConfigError(
            f"no {what} named {name!r}{where}",
            key=name,
            hint=_suggest(name, list(items), f"{what}s"),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict; env values stay unresolved references."""
        data: dict[str, Any] = _jsonable(self)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """Rebuild a Config from what `to_dict` returned (the parse cache's format).

        Raises KeyError, TypeError or ValueError when `data` is not such a dict.
        """
        path = data["path"]
        return cls(
            path=None if path is None else Path(path),
            repos=_frozen({k: _rebuild(RepoConfig, v) for k, v in data["repos"].items()}),
            machines=_frozen({k: _rebuild(MachineConfig, v) for k, v in data["machines"].items()}),
            concurrency=_rebuild(ConcurrencyConfig, data["concurrency"]),
            models=_rebuild(ModelsConfig, data["models"]),
            worker=_rebuild(WorkerConfig, data["worker"]),
            board=_rebuild(BoardConfig, data["board"]),
            extra=_frozen(data["extra"]),
        )


def _rebuild(cls: type[_T], data: Mapping[str, Any]) -> _T:
    """Build one of the section dataclasses from its JSON form (lists back to tuples, …)."""
    kwargs: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        value = data[f.name]
        kind = str(f.type)
        if kind.startswith("tuple"):
            value = tuple(value)
        elif kind.startswith("Mapping"):
            value = _frozen(value)
        elif kind.startswith("Path"):
            value = Path(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)  # Paths, and dates YAML may have put into the raw sections


def _suggest(value: str, choices: Sequence[str], what: str, *, list_all: bool = True) -> str:
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


def parse_config(
    text: str, *, path: str | Path = "<string>", base_dir: Path | None = None
) -> Config:
    """Parse the text of a coordinator.yml; relative paths resolve against `base_dir`."""
    from .config_yaml import parse_config as parse

    return parse(text, path=path, base_dir=base_dir)


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
        return parse_config(text, path=file, base_dir=base_dir)
    entry, key = _cache_entry(file, text, base_dir)
    cached = _cache_read(entry, key)
    if cached is not None:
        return cached
    config = parse_config(text, path=file, base_dir=base_dir)
    _cache_write(entry, key, config)
    return config


# --- the parse cache -------------------------------------------------------------------------
# Starting `coord status` is mostly imports, and PyYAML (with its regexes) is one of the
# biggest; a config is read far more often than it is edited.


def _cache_entry(file: Path, text: str, base_dir: Path) -> tuple[Path | None, str]:
    """Return (the cache file for this config path, the key its text and context give)."""
    import hashlib

    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(root):
        return None, ""
    here = Path(__file__).parent
    parts = [__version__, str(file.absolute()), str(base_dir), os.path.expanduser("~"), text]
    for module in (here / "config.py", here / "config_yaml.py"):
        try:  # a changed parser (a source checkout being edited) is a different parser
            st = module.stat()
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
            return  # e.g. a YAML date in an extra section: JSON would change it
    except (KeyError, TypeError, ValueError):
        return
    tmp = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
    try:
        entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"key": key, "config": data}, out, separators=(",", ":"))
        os.replace(tmp, entry)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def find_config(
    explicit: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    home: Path | None = None,
) -> Path:
    """Return the config file to use: `explicit`, $COORD_CONFIG, ./coordinator.yml, ~/.coord/."""
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    home = Path.home() if home is None else home

    def expand(raw: str | os.PathLike[str]) -> Path:
        text = os.fspath(raw)
        if text == "~" or text.startswith("~/"):
            text = str(home) + text[1:]
        path = Path(os.path.normpath(cwd.absolute() / text))
        return path / CONFIG_NAME if path.is_dir() else path

    if explicit is not None:
        path = expand(explicit)
        if not path.is_file():
            raise ConfigError(
                f"config file {path} does not exist",
                hint="check the path given, or run `coord init` to create one",
            )
        return path
    if environ.get("COORD_CONFIG"):
        path = expand(environ["COORD_CONFIG"])
        if not path.is_file():
            # an explicit setting that points nowhere is a mistake, not a reason to look elsewhere
            raise ConfigError(
                f"COORD_CONFIG points at {path}, which does not exist",
                hint="fix or unset COORD_CONFIG, or run `coord init`",
            )
        return path
    tried = [cwd / CONFIG_NAME, home / ".coord" / CONFIG_NAME]
    for path in tried:
        if path.is_file():
            return path
    raise ConfigError(
        "no coordinator.yml found; looked at --config (not given), $COORD_CONFIG (not set), "
        + ", ".join(str(p) for p in tried),
        hint="run `coord init` to create one",
    )


def discover_repos(dirs: Sequence[Path]) -> list[Path]:
    """Return the git repos among `dirs` and their direct children, sorted."""
    found: set[Path] = set()
    for given in dirs:
        root = Path(given).expanduser().absolute()
        if not root.is_dir():
            raise ConfigError(
                f"{root} is not a directory", hint="pass directories that hold git repos"
            )
        if _is_git_repo(root):
            found.add(root)
            continue  # its children are its own files (or submodules), not separate repos
        try:
            children = [c for c in root.iterdir() if c.is_dir()]
        except OSError:
            continue
        found.update(c for c in children if _is_git_repo(c))
    return sorted(found)


def _is_git_repo(path: Path) -> bool:
    git = path / ".git"
    return git.is_dir() or git.is_file()  # a file: worktrees and submodules


def _default_branch(repo: Path) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), "symbolic-ref", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "main"
    branch = done.stdout.strip()
    return branch if done.returncode == 0 and branch else "main"


def _yaml_text(value: str) -> str:
    """Return `value` as a YAML scalar that reads back as this exact string."""
    import yaml

    if re.fullmatch(r"[A-Za-z0-9_./~-]+", value) and yaml.safe_load(value) == value:
        return value
    return json.dumps(value)  # a JSON string is a valid double-quoted YAML scalar


def render_init_config(repos: Sequence[Path], *, machine_name: str = "local") -> str:
    """Return a commented single-machine coordinator.yml listing `repos`."""
    if not _NAME.fullmatch(machine_name) or set(machine_name) == {"."}:
        raise ConfigError(
            f"{machine_name!r} is not a valid machine name",
            hint="use only letters, digits, '.', '_' and '-'",
        )
    named: list[tuple[str, Path]] = []
    taken: set[str] = set()
    for repo in repos:
        path = Path(repo).expanduser().absolute()
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", path.name).strip("-") or "repo"
        name, n = base, 1
        while name in taken or set(name) == {"."}:
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        named.append((name, path))
    example = named[0][0] if named else "api"
    lines = [
        "# coordinator.yml, written by `coord init`. Only a machine's name and host are required.",
        "# Secrets never live here: a machine's env refers to the coordinator's environment,",
        "# e.g. `ANTHROPIC_API_KEY: ${ANTHROPIC_API_KEY}`, after `export ANTHROPIC_API_KEY=…`.",
        "",
        "repos:" if named else "repos: []   # add repos as `- name: api` entries",
    ]
    for name, path in named:
        lines += [
            f"  - name: {_yaml_text(name)}",
            f"    default_branch: {_yaml_text(_default_branch(path))}",
            "    # github: owner/name       # where pull requests go; omit for the local forge",
            "    # test_command: make test  # run before a pull request is opened",
            "    # depends_on: [other-repo]",
        ]
    lines += [
        "",
        "machines:",
        f"  - name: {machine_name}",
        "    host: localhost          # localhost runs workers here, without SSH",
        "    max_workers: 2           # workers at once on this machine",
    ]
    if named:
        lines.append(
            "    repo_paths:              # where each repo is checked out on this machine"
        )
        lines += [f"      {_yaml_text(name)}: {_yaml_text(str(path))}" for name, path in named]
    lines += [
        "  # A machine reached over SSH (its host key must be in ~/.ssh/known_hosts):",
        "  # - name: gpu-box",
        "  #   host: gpu-box.example.com",
        "  #   user: me",
        "  #   port: 22",
        "  #   identity_file: ~/.ssh/id_ed25519",
        "  #   max_workers: 4",
        "  #   capabilities: [gpu]",
        f"  #   repos: [{example}]    # default: all, at ~/src/<repo> unless repo_paths says",
        "  #   env:",
        "  #     ANTHROPIC_API_KEY: ${ANTHROPIC_API_KEY}",
        "",
        "concurrency:",
        "  max_workers: 8             # workers at once across all machines",
        "  max_retries: 3",
        "",
        "models:",
        "  default: sonnet            # tier for new work: haiku, sonnet or opus",
        "  escalation: [haiku, sonnet, opus]   # each failed fix moves one tier up",
        "  # labels: {hard: opus, chore: haiku}   # issue label → tier",
        "  # ids: {opus: claude-opus-4-5}         # tier → model id",
        "",
        "worker:",
        "  stall_timeout: 10m         # no output for this long: the worker is stopped",
        "  max_runtime: 2h            # hard limit per run",
        "  result_grace: 30s          # time to exit after its final result",
        '  allowed_tools: "Read,Edit,Write,Bash"',
        "",
        "board:",
        "  path: .coord/board.json    # relative to this file",
        "",
    ]
    return "\n".join(lines)
