"""Compose coordinator.yml into YAML nodes and read them into `Config`, with file:line errors.

The YAML is composed into nodes rather than loaded, so every value keeps the line it was
written on.  Keys in messages mirror the file: ``machines[0].port`` for list items,
``machines.gpu-box.port`` for mapping items.  Scalars meant as text (hosts, commands, env
values) are taken exactly as written, so YAML 1.1 coercions (``no`` → False, ``08`` → 8)
never change what the user typed.

Defaults are not written here: a key left out takes its dataclass field's default.

Only a config that is not in the parse cache needs this module (and PyYAML): see
`coordlib.config_load.load_config`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import yaml

from .config import (
    EXTRA_SECTIONS,
    BoardConfig,
    ConcurrencyConfig,
    Config,
    HooksConfig,
    MachineConfig,
    ModelsConfig,
    RepoConfig,
    SSHConfig,
    WorkerConfig,
    WorkspaceConfig,
    field_defaults,
    frozen_mapping,
    is_cleartext_url,
    is_secret_name,
    suggest,
)
from .config_nodes import (
    EMPTY,
    Doc,
    Fields,
    check_name,
    describe,
    field_names,
    items_of,
    unknown_repo,
)
from .errors import ConfigError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GITHUB_SLUG = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_WHOLE_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}|\$[A-Za-z_][A-Za-z0-9_]*")

# --- sections --------------------------------------------------------------------------------


def _section(doc: Doc, node: yaml.Node | None, key: str, cls: type[Any], what: str) -> Fields:
    """Return the fields of a section read into dataclass `cls`: its keys, its defaults."""
    return Fields(doc, node or EMPTY, key, field_names(cls), what, field_defaults(cls))


_TOP_KEYS = (
    "repos", "machines", "concurrency", "models", "worker", "board", "ssh", *EXTRA_SECTIONS,
)  # fmt: skip

_Refs = list[tuple[str, yaml.Node, str]]


def _read_repos(doc: Doc, node: yaml.Node | None) -> dict[str, RepoConfig]:
    repos: dict[str, RepoConfig] = {}
    first: dict[str, int] = {}
    deps: dict[str, _Refs] = {}
    for f, name, name_node in items_of(doc, node, "repos", RepoConfig, bare_names=True):
        if name in repos:
            hint = f"first listed on line {first[name]}; give each repo its own name"
            raise doc.error(name_node, f.path("name"), f"repo {name!r} is listed twice", hint)
        first[name] = name_node.start_mark.line + 1
        github, forge = f.optional_text("github"), f.optional_text("forge")
        if github is not None and not _GITHUB_SLUG.fullmatch(github):
            raise doc.wrong(f.at("github"), f.path("github"), "owner/name", "e.g. github: acme/api")
        if forge not in (None, "local", "github"):
            raise doc.wrong(f.at("forge"), f.path("forge"), "local or github")
        if forge == "github" and github is None:
            hint = "add `github: owner/name` to this repo"
            raise doc.error(f.at("forge"), f.path("forge"), "github needs the repo's slug", hint)
        deps[name] = f.texts("depends_on", "repo names")
        repos[name] = RepoConfig(
            name=name,
            github=github,
            forge=forge,
            default_branch=f.text("default_branch"),
            build_command=f.optional_text("build_command"),
            test_command=f.optional_text("test_command"),
            depends_on=tuple(dep for dep, _, _ in deps[name]),
            url=f.optional_text("url"),
            workspace=_read_workspace(doc, f),
            allowed_domains=_domains(doc, f),
        )
    for refs in deps.values():
        for dep, dep_node, dep_key in refs:
            if dep not in repos:
                raise unknown_repo(doc, dep, dep_node, dep_key, repos)
    _check_cycles(doc, deps)
    return repos


def _read_workspace(doc: Doc, repo: Fields) -> WorkspaceConfig:
    """A repo's ``workspace:`` (setup, run and archive scripts, ports, files to carry)."""
    node = repo.get("workspace")
    if node is None:
        return cast(WorkspaceConfig, repo.defaults["workspace"])
    f = Fields(doc, node, repo.path("workspace"), field_names(WorkspaceConfig),
               "workspace settings", field_defaults(WorkspaceConfig))  # fmt: skip
    copy = []
    for path, at, key in f.texts("copy", "paths relative to the repo"):
        parts = path.split("/")
        if not path or path.startswith(("/", "-")) or ".." in parts or "." in parts:
            raise doc.wrong(at, key, "a plain path relative to the repo (no /, .. or leading -)")
        copy.append(path)
    return WorkspaceConfig(
        setup=f.optional_text("setup"),
        run=f.optional_text("run"),
        archive=f.optional_text("archive"),
        timeout=f.optional_duration("timeout"),
        ports=f.integer("ports", 0, 1000),
        copy=tuple(copy),
    )


def _check_cycles(doc: Doc, deps: Mapping[str, _Refs]) -> None:
    done: set[str] = set()

    def visit(trail: list[str]) -> None:
        for dep, dep_node, dep_key in deps[trail[-1]]:
            if dep in trail:
                cycle = " -> ".join([*trail[trail.index(dep) :], dep])
                hint = "remove one of these depends_on entries"
                raise doc.error(dep_node, dep_key, f"dependency cycle: {cycle}", hint)
            if dep not in done:
                visit([*trail, dep])
        done.add(trail[-1])

    for name in deps:
        if name not in done:
            visit([name])


def _read_machines(
    doc: Doc, node: yaml.Node | None, repos: Mapping[str, RepoConfig]
) -> dict[str, MachineConfig]:
    if node is None:
        return dict(field_defaults(Config)["machines"])
    machines: dict[str, MachineConfig] = {}
    first: dict[str, int] = {}
    for f, name, name_node in items_of(doc, node, "machines", MachineConfig):
        if name in machines:
            hint = f"first listed on line {first[name]}; give each machine its own name"
            raise doc.error(name_node, f.path("name"), f"machine {name!r} is listed twice", hint)
        first[name] = name_node.start_mark.line + 1
        served = f.texts("repos", "repo names")
        paths = f.text_map("repo_paths", "repo name → path")
        for repo, repo_node, repo_key in [*served, *((r, n, k) for r, _, n, _, k in paths)]:
            if repo not in repos:
                raise unknown_repo(doc, repo, repo_node, repo_key, repos)
        claude = f.text("claude_command")
        try:
            argv = shlex.split(claude)
        except ValueError as exc:
            key = f.path("claude_command")
            raise doc.error(f.at("claude_command"), key, f"cannot be split: {exc}") from exc
        if not argv:
            raise doc.wrong(f.at("claude_command"), f.path("claude_command"), "a command")
        identity, known_hosts = f.optional_text("identity_file"), f.optional_text("known_hosts")
        machines[name] = MachineConfig(
            name=name,
            host=f.required_text("host", "machine"),
            port=f.optional_integer("port", 1, 65535),
            user=f.optional_text("user"),
            identity_file=os.path.expanduser(identity) if identity else None,
            known_hosts=os.path.expanduser(known_hosts) if known_hosts else None,
            capabilities=tuple(c for c, _, _ in f.texts("capabilities", "capabilities")),
            repos=tuple(r for r, _, _ in served),
            repo_paths=frozen_mapping({r: p for r, p, _, _, _ in paths}),
            workdir=f.text("workdir"),
            claude_command=claude,
            env=frozen_mapping(_read_env(doc, f)),
            max_workers=f.integer("max_workers", 1),
            connect_timeout=f.optional_duration("connect_timeout"),
            tmux_socket=check_name(
                doc,
                f.text("tmux_socket"),
                f.at("tmux_socket"),
                f.path("tmux_socket"),
                socket=True,
            ),
        )
    if not machines:
        hint = "list at least one machine, or remove `machines:` to run on this one"
        raise doc.error(node, "machines", "is empty", hint)
    return machines


def _read_env(doc: Doc, f: Fields) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, value, name_node, value_node, key in f.text_map("env", "variable name → value"):
        if not _ENV_NAME.fullmatch(name):
            hint = "use letters, digits and '_', not starting with a digit"
            raise doc.error(name_node, key, f"{name!r} is not an environment variable name", hint)
        if is_secret_name(name) and value and not _WHOLE_REFERENCE.fullmatch(value):
            raise doc.error(
                value_node,
                key,
                "looks like a secret, and secrets never live in coordinator.yml",
                hint=f"write `{name}: ${{{name}}}` and `export {name}=…` where coord runs",
            )
        env[name] = value
    return env


def _read_models(doc: Doc, node: yaml.Node | None) -> ModelsConfig:
    f = _section(doc, node, "models", ModelsConfig, "model settings")
    ids = dict(f.defaults["ids"])
    for tier, model_id, tier_node, _, key in f.text_map("ids", "tier → model id"):
        ids[check_name(doc, tier, tier_node, key)] = model_id
    models = ModelsConfig(ids=frozen_mapping(ids))

    def known(value: str, at: yaml.Node, key: str, ids_too: bool = False) -> str:
        if value in ids:
            return value
        if ids_too:  # a label may also name a full model id
            try:
                models.resolve(value)
            except ConfigError as exc:
                raise doc.error(at, key, exc.message, exc.hint) from None
            return value
        hint = suggest(value, list(ids), "tiers") + "; map new tiers to model ids under models.ids"
        raise doc.error(at, key, f"unknown model tier {value!r}", hint)

    escalation: tuple[str, ...] = f.defaults["escalation"]
    if f.get("escalation") is not None:
        escalation = tuple(known(v, n, k) for v, n, k in f.texts("escalation", "tiers"))
    labels = f.text_map("labels", "issue label → tier")
    return ModelsConfig(
        default=known(f.text("default"), f.at("default"), f.path("default")),
        escalation=escalation,
        labels=frozen_mapping({lab: known(v, n, k, ids_too=True) for lab, v, _, n, k in labels}),
        ids=frozen_mapping(ids),
    )


def _read_concurrency(doc: Doc, node: yaml.Node | None) -> ConcurrencyConfig:
    f = _section(doc, node, "concurrency", ConcurrencyConfig, "concurrency settings")
    return ConcurrencyConfig(
        max_workers=f.integer("max_workers", 1),
        stagger_seconds=f.duration("stagger_seconds", allow_zero=True),
        backoff_base=f.number("backoff_base", 0.0),
        max_retries=f.integer("max_retries", 0),
        auto_reassign=f.boolean("auto_reassign"),
        stale_threshold=f.integer("stale_threshold", 1),
        remote_claims=f.boolean("remote_claims"),
    )


def _read_worker(doc: Doc, node: yaml.Node | None) -> WorkerConfig:
    f = _section(doc, node, "worker", WorkerConfig, "worker settings")
    if isinstance(f.get("allowed_tools"), yaml.SequenceNode):
        tools = ",".join(t for t, _, _ in f.texts("allowed_tools", "tool names"))
    else:
        tools = f.text("allowed_tools")
    return WorkerConfig(
        stall_timeout=f.duration("stall_timeout"),
        max_runtime=f.duration("max_runtime"),
        result_grace=f.duration("result_grace"),
        poll_interval=f.duration("poll_interval"),
        allowed_tools=tools,
        extra_args=tuple(a for a, _, _ in f.texts("extra_args", "command-line arguments")),
        max_turns=f.optional_integer("max_turns", 0) or None,  # 0 also means no limit
        confine=f.boolean("confine"),
        deny_read=tuple(p for p, _, _ in f.texts("deny_read", "paths")),
        allowed_domains=_domains(doc, f),
    )


# A domain the sandbox's proxy lets Bash reach: a host name, or *.name for its subdomains.
_DOMAIN = re.compile(
    r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*"
)


def _domains(doc: Doc, f: Fields) -> tuple[str, ...]:
    out = []
    for name, node, key in f.texts("allowed_domains", "domain names"):
        if len(name) > 253 or not _DOMAIN.fullmatch(name):
            raise doc.wrong(node, key, "a domain name", "e.g. pypi.org, or *.npmjs.org")
        out.append(name.lower())
    return tuple(out)


def _read_ssh(doc: Doc, node: yaml.Node | None) -> SSHConfig:
    f = _section(doc, node, "ssh", SSHConfig, "ssh settings")
    return SSHConfig(
        connect_timeout=f.duration("connect_timeout"),
        keepalive_interval=f.duration("keepalive_interval"),
        keepalive_count=f.integer("keepalive_count", 1),
    )


def _read_board(doc: Doc, node: yaml.Node | None, base_dir: Path) -> BoardConfig:
    f = _section(doc, node, "board", BoardConfig, "board settings")
    path = Path(f.text("path")).expanduser()
    # Absolute but not resolved: a symlink on the way is followed when the board is opened,
    # so a parse (or the parse cache) never pins where it pointed at the time.
    return BoardConfig(
        path=Path(os.path.abspath(base_dir / path)),
        keep_finished=f.integer("keep_finished", 0),
    )


# --- entry points ----------------------------------------------------------------------------


def parse_config(
    text: str, *, path: str | Path = "<string>", base_dir: Path | None = None
) -> Config:
    """Parse the text of a coordinator.yml; relative paths resolve against `base_dir`."""
    label = str(path)
    real_path = None if label == "<string>" else Path(path)
    if base_dir is None:
        base_dir = real_path.parent if real_path is not None else Path.cwd()
    doc = Doc(label)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        hint = "check the indentation and quoting on that line and the one before"
        if line is not None and "${" in "".join(text.splitlines()[max(line - 2, 0) : line]):
            # `{KEY: ${KEY}}` is the usual culprit: braces end a flow mapping early
            hint = 'quote values holding ${…} inside {…}, e.g. {KEY: "${KEY}"}'
        problem = "; ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError(
            f"YAML syntax error: {problem}", path=label, line=line, hint=hint
        ) from exc
    except yaml.YAMLError as exc:  # ReaderError: a character YAML does not allow
        position = getattr(exc, "position", None)
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else None
        raise ConfigError(f"YAML error: {exc}", path=label, line=line) from exc
    top = Fields(doc, root or EMPTY, "", _TOP_KEYS, "sections (repos, machines, …)")
    repos = _read_repos(doc, top.get("repos"))
    core = Config(
        path=real_path,
        repos=frozen_mapping(repos),
        machines=frozen_mapping(_read_machines(doc, top.get("machines"), repos)),
        concurrency=_read_concurrency(doc, top.get("concurrency")),
        models=_read_models(doc, top.get("models")),
        worker=_read_worker(doc, top.get("worker")),
        board=_read_board(doc, top.get("board"), base_dir),
        ssh=_read_ssh(doc, top.get("ssh")),
    )
    extra: dict[str, Any] = {}
    for name in EXTRA_SECTIONS:
        node = top.get(name)
        if node is not None:
            extra[name] = _read_extra(doc, node, name, core)
    return dataclasses.replace(core, extra=frozen_mapping(extra))


# --- the extra sections ----------------------------------------------------------------------
# `Config.extra` keeps each as the keys given (the defaults of reviews, smoke_tests and hooks
# are their dataclasses' in `config`), but every key is known: typos and wrong types are errors.

_Kind = Callable[[Fields, str, Config], Any]


def _url(f: Fields, key: str, config: Config) -> str:
    value = f.text(key)
    if not re.match(r"https?://[^\s/]+", value):
        hint = "e.g. https://ghe.example.com/api/v3"
        raise f.doc.wrong(f.at(key), f.path(key), "an http(s) URL", hint)
    if is_cleartext_url(value):
        raise f.doc.error(
            f.at(key),
            f.path(key),
            f"{value} is plain http to a host that is not this machine: the GitHub token "
            f"would cross the network in clear",
            hint=f"use https://{value[len('http://') :]}; http:// is only for loopback "
            "hosts: 127.0.0.1, ::1, localhost",
        )
    return value


def _model(f: Fields, key: str, config: Config) -> str:
    value = f.text(key)
    try:
        config.models.resolve(value)
    except ConfigError as exc:
        raise f.doc.error(f.at(key), f.path(key), exc.message, exc.hint) from None
    return value


def _machine_names(f: Fields, key: str, config: Config) -> list[str]:
    names = f.texts(key, "machine names")
    for name, node, item_key in names:
        if name not in config.machines:
            hint = suggest(name, list(config.machines), "configured machines")
            raise f.doc.error(node, item_key, f"unknown machine {name!r}", hint)
    return [name for name, _, _ in names]


def _rules(f: Fields, key: str, config: Config) -> list[dict[str, Any]]:
    """smoke_tests.capability_rules: each {globs (or glob), capability, command?,
    timeout_seconds?}; a capability no machine has is allowed (its candidates wait)."""
    node = f.at(key)
    if not isinstance(node, yaml.SequenceNode):
        raise f.doc.wrong(node, f.path(key), "a list of rules ({globs, capability, command})")
    rules = []
    for i, item in enumerate(node.value):
        where = f"{f.path(key)}[{i}]"
        r = Fields(f.doc, item, where, ("glob", "globs", "capability", "command",
                                         "timeout_seconds"), "rule keys")  # fmt: skip
        globs = [t for t, _, _ in r.texts("globs", "file globs")] if r.get("globs") else []
        if r.get("glob"):
            globs.append(r.text("glob"))
        if not globs:
            raise f.doc.error(item, where, "a rule needs glob or globs", "e.g. globs: ['gpu/**']")
        capability = r.required_text("capability", "capability")
        rule: dict[str, Any] = {"globs": globs, "capability": capability}
        if r.get("command"):
            rule["command"] = r.text("command")
        if r.get("timeout_seconds"):
            rule["timeout_seconds"] = r.duration("timeout_seconds")
        rules.append(rule)
    return rules


def _choice(f: Fields, key: str, choices: tuple[str, ...]) -> str:
    value = f.text(key)
    if value not in choices:
        hint = suggest(value, list(choices), "choices")
        raise f.doc.wrong(f.at(key), f.path(key), f"one of {', '.join(choices)}", hint)
    return value


def _env_name(f: Fields, key: str, config: Config) -> str:
    value = f.text(key)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        hint = "the name of the variable, e.g. GITHUB_REVIEW_TOKEN, never the token itself"
        raise f.doc.wrong(f.at(key), f.path(key), "an environment variable name", hint)
    return value


def _strings(what: str) -> _Kind:
    return lambda f, key, config: [text for text, _, _ in f.texts(key, what)]


_READERS: dict[str, _Kind] = {
    "bool": lambda f, key, config: f.boolean(key),
    "count": lambda f, key, config: f.integer(key, 1),
    "duration": lambda f, key, config: f.duration(key),
    "seconds": lambda f, key, config: f.duration(key, allow_zero=True),
    "text": lambda f, key, config: f.text(key),
    "url": _url,
    "model": _model,
    "machines": _machine_names,
    "commands": _strings("shell commands"),
    "names": _strings("names (OWNER, MEMBER, a login)"),  # author associations or logins
    "usd": lambda f, key, config: f.number(key, 0.0),
    "envname": _env_name,
    "rules": _rules,
    "merge_method": lambda f, key, config: _choice(f, key, ("merge", "squash", "rebase")),
}

# Each extra section's keys, and the kind of value each holds (read by `_READERS[kind]`).
_EXTRA_KEYS: dict[str, dict[str, str]] = {
    "github": {"api_url": "url", "write_interval": "seconds"},
    "reviews": {
        "enabled": "bool",
        "model": "model",
        "max_rounds": "count",
        "required_approvals": "count",
        "github_token_env": "envname",
    },
    "smoke_tests": {
        "enabled": "bool",
        "commands": "commands",
        "machines": "machines",
        "timeout": "duration",
        "default_command": "text",
        "capability_rules": "rules",
        "auto_queue": "bool",
    },
    "hooks": dict.fromkeys(field_names(HooksConfig), "commands"),
    "forge": {"root": "text"},
    "briefings": {"dir": "text", "trusted_authors": "names"},
    "pipeline": {"enabled": "bool", "playbook": "text", "test_timeout": "duration",
                 "interval": "duration"},
    "budget": {"per_issue_usd": "usd", "session_usd": "usd"},
    "merge": {"batch_size": "count", "method": "merge_method", "auto": "bool",
              "batch_wait": "bool"},
}  # fmt: skip


def _read_extra(doc: Doc, node: yaml.Node, name: str, config: Config) -> dict[str, Any]:
    if not isinstance(node, yaml.MappingNode):
        raise doc.error(node, name, f"expected a mapping, got {describe(node)}")
    kinds = _EXTRA_KEYS[name]
    f = Fields(doc, node, name, tuple(kinds), f"{name} settings")
    return {k: _READERS[kind](f, k, config) for k, kind in kinds.items() if f.get(k) is not None}
