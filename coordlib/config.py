"""`coordinator.yml` as frozen dataclasses, the one statement of every default, and finding
the file.  The values it holds (durations, env references, "did you mean") are read by
`config_values`, whose helpers this module re-exports.

Reading the YAML is `config_yaml`; loading a file through the parse cache is `config_load`;
`coord init`'s template is `config_init`.  This module imports none of them.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from .config_values import (
    format_duration,
    is_cleartext_url,
    is_secret_name,
    parse_duration,
    resolve_env,
    suggest,
)
from .errors import ConfigError

__all__ = [
    "CONFIG_NAME",
    "DEFAULT_MODEL_IDS",
    "EXTRA_SECTIONS",
    "NAME_CHARS",
    "BoardConfig",
    "BudgetConfig",
    "ConcurrencyConfig",
    "Config",
    "HooksConfig",
    "MachineConfig",
    "MergeConfig",
    "ModelsConfig",
    "PipelineConfig",
    "RepoConfig",
    "ReviewsConfig",
    "SSHConfig",
    "SmokeTestsConfig",
    "WorkerConfig",
    "WorkspaceConfig",
    "field_defaults",
    "find_config",
    "format_duration",
    "frozen_mapping",
    "is_cleartext_url",
    "is_secret_name",
    "is_valid_name",
    "parse_duration",
    "resolve_env",
    "suggest",
]

_T = TypeVar("_T")

CONFIG_NAME = "coordinator.yml"
DEFAULT_MODEL_IDS: Mapping[str, str] = MappingProxyType(
    {"haiku": "claude-haiku-4-5", "sonnet": "claude-sonnet-4-5", "opus": "claude-opus-4-5"}
)
EXTRA_SECTIONS = (
    "github", "reviews", "smoke_tests", "hooks", "forge", "briefings", "pipeline", "budget",
    "merge",
)  # fmt: skip

NAME_CHARS = "letters, digits, '.', '_' and '-'"  # what _NAME allows, for hints
_NAME = re.compile(r"[A-Za-z0-9._-]+")


def frozen_mapping(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """Return a read-only copy of `mapping`, so a frozen config stays frozen all the way down."""
    return MappingProxyType(dict(mapping or {}))


def is_valid_name(name: str) -> bool:
    """Tell whether `name` may name a repo, machine or tier (see NAME_CHARS)."""
    return bool(_NAME.fullmatch(name)) and set(name) != {"."}


@dataclass(frozen=True)
class WorkspaceConfig:
    """What makes a repo's fresh worktree ready to work in (``repos[].workspace``); what is
    not set here comes from the repo's own ``.coord/workspace.yml``."""

    setup: str | None = None  # run in a new worktree before its worker starts
    run: str | None = None  # what `coord run-app ID` starts in the worktree (a dev server)
    archive: str | None = None  # run before `coord clean` removes the worktree
    timeout: float | None = None  # for setup and archive; None: the repo file's, else 600 s
    ports: int = 10  # each live worktree's private range (COORD_PORT, COORD_PORTS); 0: none
    copy: tuple[str, ...] = ()  # untracked files carried from the main checkout (never into git)


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
    workspace: WorkspaceConfig = field(default_factory=WorkspaceConfig)
    # What a confined worker's Bash may reach on this repo's behalf (its package registries),
    # besides worker.allowed_domains.
    allowed_domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class MachineConfig:
    """A machine workers run on, reached locally or over SSH."""

    name: str
    host: str
    port: int | None = None  # None: ~/.ssh/config's Port for the host, else 22
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None  # None: ~/.ssh/config's UserKnownHostsFile or the default
    capabilities: tuple[str, ...] = ()
    repos: tuple[str, ...] = ()  # empty means every configured repo
    repo_paths: Mapping[str, str] = field(default_factory=frozen_mapping)
    workdir: str = "~/.coord"  # expanded on the machine, not here
    claude_command: str = "claude"
    env: Mapping[str, str] = field(default_factory=frozen_mapping)  # unresolved ${VAR} templates
    max_workers: int = 2
    tmux_socket: str = "coord"
    connect_timeout: float | None = None  # None: the fleet's (ssh.connect_timeout)

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
class SSHConfig:
    """How long to wait for a machine, fleet-wide (a machine may set its own connect_timeout)."""

    connect_timeout: float = 10.0  # a machine that has not answered by then is `timeout`
    keepalive_interval: float = 5.0  # a dead connection is noticed after interval x count
    keepalive_count: int = 3


@dataclass(frozen=True)
class ConcurrencyConfig:
    """How many workers run at once and how failures are retried."""

    max_workers: int = 8
    stagger_seconds: float = 0.0
    backoff_base: float = 2.0
    max_retries: int = 3
    auto_reassign: bool = False
    stale_threshold: int = 3  # status passes a machine may miss before it is called stale
    # a new branch is first created on origin, which refuses it when it is there already:
    # two coordinators with boards of their own never start one issue twice
    remote_claims: bool = True


@dataclass(frozen=True)
class ModelsConfig:
    """Model tiers, the escalation ladder and the label → tier map."""

    default: str = "sonnet"
    escalation: tuple[str, ...] = ("haiku", "sonnet", "opus")
    labels: Mapping[str, str] = field(default_factory=frozen_mapping)
    ids: Mapping[str, str] = field(default_factory=lambda: frozen_mapping(DEFAULT_MODEL_IDS))

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
            hint=suggest(value, list(self.ids), "tiers")
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
    # Claude Code's own sandbox around every worker's Bash, its file tools held to the
    # worktree, the worker's secrets unreadable, the API key out of Bash's environment
    confine: bool = True
    deny_read: tuple[str, ...] = ()  # more paths no worker may read (besides the defaults)
    allowed_domains: tuple[str, ...] = ()  # what Bash may reach through the sandbox's proxy


@dataclass(frozen=True)
class BoardConfig:
    """Where the board file lives and how much finished work it keeps live."""

    path: Path = Path(".coord/board.json")
    keep_finished: int = 300


# The sections the pipeline reads.  `Config.extra` keeps them as written (plain dicts of the
# keys given, so `coord config --json` shows the file); these classes state their defaults.


@dataclass(frozen=True)
class ReviewsConfig:
    """How a finished change is reviewed before it merges (`reviews:`)."""

    enabled: bool = True
    model: str | None = None  # a tier or model id; None: the tier above the worker's
    max_rounds: int | None = None  # fix rounds before a human is asked; None: the playbook's
    required_approvals: int = 1
    # An environment variable holding a second GitHub identity's token: its reviews are real
    # APPROVE / REQUEST_CHANGES (GitHub refuses both from the PR's own author).  Unset: the
    # verdict is posted as a COMMENT review that says it.
    github_token_env: str | None = None


@dataclass(frozen=True)
class SmokeTestsConfig:
    """Commands the pipeline runs to check that a change works (`smoke_tests:`)."""

    enabled: bool = False
    commands: tuple[str, ...] = ()
    machines: tuple[str, ...] = ()  # where they run; empty: any machine
    timeout: float = 600.0
    default_command: str | None = None  # a rule's command when it names none
    # [{globs: [..], capability, command, timeout_seconds}]: a merge candidate changing a file
    # one of the globs matches is also smoke-tested on a machine with that capability
    capability_rules: tuple[Mapping[str, Any], ...] = ()
    auto_queue: bool = False  # smoke-test each PR alone as soon as its review approves


@dataclass(frozen=True)
class HooksConfig:
    """Shell commands the coordinator runs on its own machine at pipeline events (`hooks:`)."""

    on_stage: tuple[str, ...] = ()  # an issue's pipeline entered a stage (or an end)
    on_stuck: tuple[str, ...] = ()  # a worker wrote a STUCK: line
    on_round_complete: tuple[str, ...] = ()  # a review round ended with a verdict
    on_session_end: tuple[str, ...] = ()  # `coord done`
    on_dispatch: tuple[str, ...] = ()
    on_done: tuple[str, ...] = ()
    on_failed: tuple[str, ...] = ()
    on_review: tuple[str, ...] = ()
    on_merge: tuple[str, ...] = ()
    on_needs_human: tuple[str, ...] = ()


@dataclass(frozen=True)
class PipelineConfig:
    """How issues move through the playbook's stages (`pipeline:`)."""

    enabled: bool = True  # `coord assign` enters the issue into the pipeline
    playbook: str | None = None  # a playbook file (relative to the config); None: the shipped one
    test_timeout: float = 1800.0  # the build and tests of one `coord test`, in seconds
    interval: float = 30.0  # `coord run`'s pause between passes


@dataclass(frozen=True)
class MergeConfig:
    """The merge queue (`merge:`)."""

    batch_size: int = 4  # ready PRs stacked and tested together
    method: str = "merge"  # merge | squash | rebase
    auto: bool = True  # `coord run` lands what is ready
    # with auto: land a repo's ready PRs only once none of its other issues is still being
    # worked on, so they go in one batch (fewer test runs; the first ready waits longer)
    batch_wait: bool = False


@dataclass(frozen=True)
class BudgetConfig:
    """Spending limits in US dollars (`budget:`); None: no limit."""

    per_issue_usd: float | None = None  # past it: no more fixing or escalation for the issue
    session_usd: float | None = None  # past it: no new dispatch until `coord done`


def _default_machines() -> Mapping[str, MachineConfig]:
    return frozen_mapping({"local": MachineConfig(name="local", host="localhost")})


@dataclass(frozen=True)
class Config:
    """The whole of `coordinator.yml`."""

    path: Path | None = None
    repos: Mapping[str, RepoConfig] = field(default_factory=frozen_mapping)
    machines: Mapping[str, MachineConfig] = field(default_factory=_default_machines)
    concurrency: ConcurrencyConfig = field(default_factory=ConcurrencyConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    board: BoardConfig = field(default_factory=BoardConfig)
    ssh: SSHConfig = field(default_factory=SSHConfig)
    extra: Mapping[str, Any] = field(default_factory=frozen_mapping)

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
            hint=suggest(name, list(items), f"{what}s"),
        )

    @property
    def reviews(self) -> ReviewsConfig:
        """Return the `reviews` section with its defaults filled in."""
        return _typed(ReviewsConfig, self.extra.get("reviews"))

    @property
    def smoke_tests(self) -> SmokeTestsConfig:
        """Return the `smoke_tests` section with its defaults filled in."""
        return _typed(SmokeTestsConfig, self.extra.get("smoke_tests"))

    @property
    def hooks(self) -> HooksConfig:
        """Return the `hooks` section with its defaults filled in."""
        return _typed(HooksConfig, self.extra.get("hooks"))

    @property
    def pipeline(self) -> PipelineConfig:
        """Return the `pipeline` section with its defaults filled in."""
        return _typed(PipelineConfig, self.extra.get("pipeline"))

    @property
    def merge(self) -> MergeConfig:
        """Return the `merge` section with its defaults filled in."""
        return _typed(MergeConfig, self.extra.get("merge"))

    @property
    def budget(self) -> BudgetConfig:
        """Return the `budget` section with its defaults filled in."""
        return _typed(BudgetConfig, self.extra.get("budget"))

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
            repos=frozen_mapping({k: _rebuild(RepoConfig, v) for k, v in data["repos"].items()}),
            machines=frozen_mapping(
                {k: _rebuild(MachineConfig, v) for k, v in data["machines"].items()}
            ),
            concurrency=_rebuild(ConcurrencyConfig, data["concurrency"]),
            models=_rebuild(ModelsConfig, data["models"]),
            worker=_rebuild(WorkerConfig, data["worker"]),
            board=_rebuild(BoardConfig, data["board"]),
            ssh=_rebuild(SSHConfig, data["ssh"]),
            extra=frozen_mapping(data["extra"]),
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
            value = frozen_mapping(value)
        elif kind.startswith("Path"):
            value = Path(value)
        elif kind == "WorkspaceConfig":
            value = _rebuild(WorkspaceConfig, value)
        kwargs[f.name] = value
    return cls(**kwargs)


def _typed(cls: type[_T], section: Mapping[str, Any] | None) -> _T:
    """Build a section's dataclass from the keys `extra` holds; the rest take their defaults."""
    given = section or {}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})


def field_defaults(cls: type[Any]) -> dict[str, Any]:
    """Return the default of each field of dataclass `cls` that has one, by field name."""
    defaults: dict[str, Any] = {}
    for f in fields(cls):
        if f.default is not MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not MISSING:
            defaults[f.name] = f.default_factory()
    return defaults


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)  # Paths, and whatever a Config built in code may hold


# --- finding the file ------------------------------------------------------------------------


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
