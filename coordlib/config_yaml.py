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
import math
import os
import re
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from .config import (
    EXTRA_SECTIONS,
    NAME_CHARS,
    BoardConfig,
    ConcurrencyConfig,
    Config,
    HooksConfig,
    MachineConfig,
    ModelsConfig,
    RepoConfig,
    WorkerConfig,
    field_defaults,
    frozen_mapping,
    is_cleartext_url,
    is_secret_name,
    is_valid_name,
    parse_duration,
    suggest,
)
from .errors import ConfigError

_SOCKET = re.compile(r"[A-Za-z0-9_-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GITHUB_SLUG = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_WHOLE_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}|\$[A-Za-z_][A-Za-z0-9_]*")
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
_STR = "tag:yaml.org,2002:str"
_KINDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean"}

# --- reading nodes -------------------------------------------------------------------------


class _Doc:
    """One file being read: its label for messages, and a constructor for scalars."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._constructor = SafeConstructor()

    def error(
        self, node: yaml.Node | None, key: str, message: str, hint: str | None = None
    ) -> ConfigError:
        line = node.start_mark.line + 1 if node is not None and node.start_mark else None
        text = f"{key}: {message}" if key else message
        return ConfigError(text, path=self.label, line=line, key=key or None, hint=hint)

    def wrong(
        self, node: yaml.Node, key: str, expected: str, hint: str | None = None
    ) -> ConfigError:
        return self.error(node, key, f"expected {expected}, got {_describe(node)}", hint)

    def construct(self, node: yaml.Node, key: str) -> Any:
        try:
            return self._constructor.construct_object(node, deep=True)
        except ConstructorError as exc:
            raise self.error(node, key, f"cannot read this value: {exc.problem}") from exc

    def flatten(self, node: yaml.MappingNode, key: str) -> None:
        try:
            self._constructor.flatten_mapping(node)  # applies `<<: *anchor` merge keys
        except ConstructorError as exc:
            raise self.error(node, key, f"bad merge key: {exc.problem}") from exc


_EMPTY = yaml.ScalarNode(_NULL, "")


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL


def _describe(node: yaml.Node) -> str:
    if not isinstance(node, yaml.ScalarNode):
        return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"
    if node.tag == _NULL:
        return "nothing"
    shown = repr(node.value) if node.tag == _STR else str(node.value)
    return f"{shown} ({_KINDS.get(node.tag.rsplit(':', 1)[-1], 'a value')})"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _seconds(value: Any) -> float | None:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            return None
    return float(value) if _is_number(value) and math.isfinite(value) else None


def _text(doc: _Doc, node: yaml.Node, key: str) -> str:
    # the text as written, so `branch: no` stays "no" rather than YAML 1.1's False
    if not isinstance(node, yaml.ScalarNode) or _is_null(node):
        raise doc.wrong(node, key, "a string")
    if not node.tag.startswith("tag:yaml.org,2002:"):
        raise doc.error(node, key, f"unsupported YAML tag {node.tag}", hint="remove the tag")
    return str(node.value)


class _Fields:
    """A mapping node whose keys were checked against the names its section allows.

    A key left out reads as its entry in `defaults` (a dataclass's field defaults).
    """

    def __init__(
        self,
        doc: _Doc,
        node: yaml.Node,
        key: str,
        allowed: Sequence[str] | None,
        what: str,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        self.doc, self.node, self.key = doc, node, key
        self.defaults: Mapping[str, Any] = defaults or {}
        self.values: dict[str, yaml.Node] = {}
        self.key_nodes: dict[str, yaml.Node] = {}
        if _is_null(node):
            return  # a section left empty, e.g. every entry commented out
        if not isinstance(node, yaml.MappingNode):
            raise doc.wrong(node, key, f"a mapping of {what}")
        for key_node, _ in node.value:
            if key_node.tag != _MERGE:
                name = self._name(key_node)
                if name in self.key_nodes:
                    first = self.key_nodes[name].start_mark.line + 1
                    raise doc.error(
                        key_node, self.path(name), f"given twice (also on line {first})", "keep one"
                    )
                self.key_nodes[name] = key_node
        doc.flatten(node, key)
        for key_node, value_node in node.value:
            name = self._name(key_node)
            if allowed is not None and name not in allowed:
                hint = suggest(name, allowed, "valid keys here", list_all=False)
                raise doc.error(key_node, self.path(name), "unknown key", hint=hint)
            self.values[name] = value_node  # merged entries come first, so own keys win
            self.key_nodes.setdefault(name, key_node)

    def _name(self, key_node: yaml.Node) -> str:
        if not isinstance(key_node, yaml.ScalarNode) or _is_null(key_node):
            raise self.doc.wrong(key_node, self.key, "a plain name as key")
        return str(key_node.value)

    def path(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def get(self, name: str) -> yaml.Node | None:
        node = self.values.get(name)
        return None if node is None or _is_null(node) else node

    def at(self, name: str) -> yaml.Node:
        """Return the node to blame for `name`: its value, or the whole mapping if absent."""
        return self.get(name) or self.node

    def items(self) -> Iterator[tuple[str, yaml.Node, str]]:
        for name, node in self.values.items():
            yield name, node, self.path(name)

    def text(self, name: str) -> str:
        node = self.get(name)
        return str(self.defaults[name]) if node is None else _text(self.doc, node, self.path(name))

    def optional_text(self, name: str) -> str | None:
        node = self.get(name)
        if node is None:
            return cast("str | None", self.defaults.get(name))
        return _text(self.doc, node, self.path(name))

    def required_text(self, name: str, what: str) -> str:
        if self.get(name) is None:
            hint = f"add `{name}: …` to this {what}"
            raise self.doc.error(
                self.node, self.path(name), f"missing; every {what} needs one", hint
            )
        return self.text(name)

    def _scalar(self, name: str, expected: str, ok: Callable[[Any], bool]) -> Any:
        node = self.get(name)
        if node is None:
            return self.defaults[name]
        value = (
            self.doc.construct(node, self.path(name)) if isinstance(node, yaml.ScalarNode) else None
        )
        if not ok(value):
            raise self.doc.wrong(node, self.path(name), expected)
        return value

    def _integer(self, name: str, minimum: int, maximum: int | None) -> Any:
        top = math.inf if maximum is None else maximum
        wanted = f"of at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        return self._scalar(
            name, f"an integer {wanted}", lambda v: _is_int(v) and minimum <= v <= top
        )

    def integer(self, name: str, minimum: int, maximum: int | None = None) -> int:
        return cast(int, self._integer(name, minimum, maximum))

    def optional_integer(self, name: str, minimum: int) -> int | None:
        return cast("int | None", self._integer(name, minimum, None))

    def number(self, name: str, minimum: float) -> float:
        def ok(value: Any) -> bool:
            return _is_number(value) and minimum <= value < math.inf

        return float(self._scalar(name, f"a number of at least {minimum:g}", ok))

    def boolean(self, name: str) -> bool:
        return cast(bool, self._scalar(name, "true or false", lambda v: isinstance(v, bool)))

    def duration(self, name: str, *, allow_zero: bool = False) -> float:
        def ok(value: Any) -> bool:
            seconds = _seconds(value)
            return seconds is not None and (seconds > 0 or (allow_zero and seconds == 0))

        floor = "zero or more" if allow_zero else "above zero"
        expected = f"a duration {floor} (e.g. 90s, 10m, 2h, 1h30m, or seconds)"
        return _seconds(self._scalar(name, expected, ok)) or 0.0

    def texts(self, name: str, what: str) -> list[tuple[str, yaml.Node, str]]:
        """Return (text, node, dotted key) for each item of a list of scalars."""
        node = self.get(name)
        if node is None:
            return []
        key = self.path(name)
        if not isinstance(node, yaml.SequenceNode):
            scalar = isinstance(node, yaml.ScalarNode)
            hint = f"write [{node.value}] for a list of one" if scalar else None
            raise self.doc.wrong(node, key, f"a list of {what}", hint)
        keys = [f"{key}[{i}]" for i in range(len(node.value))]
        return [(_text(self.doc, n, k), n, k) for n, k in zip(node.value, keys, strict=True)]

    def text_map(self, name: str, what: str) -> list[tuple[str, str, yaml.Node, yaml.Node, str]]:
        """Return (key, value text, key node, value node, dotted key) for each entry."""
        node = self.get(name)
        if node is None:
            return []
        sub = _Fields(self.doc, node, self.path(name), None, what)
        return [(k, _text(self.doc, v, p), sub.key_nodes[k], v, p) for k, v, p in sub.items()]


def _check_name(doc: _Doc, name: str, node: yaml.Node, key: str, socket: bool = False) -> str:
    if socket:
        ok, chars = bool(_SOCKET.fullmatch(name)), "letters, digits, '_' and '-'"
    else:
        ok, chars = is_valid_name(name), NAME_CHARS
    if not ok:
        raise doc.error(node, key, f"{name!r} is not a valid name", hint=f"use only {chars}")
    return name


def _items(
    doc: _Doc, node: yaml.Node | None, section: str, cls: type, *, bare_names: bool = False
) -> Iterator[tuple[_Fields, str, yaml.Node]]:
    """Yield (fields, name, node naming it) per item of a list, or of a mapping name → fields."""
    what, allowed, defaults = section[:-1], _keys(cls), field_defaults(cls)
    if node is None:
        return
    if isinstance(node, yaml.MappingNode):
        by_name = _Fields(doc, node, section, None, f"{what}s")
        for name, item, key in by_name.items():
            f = _Fields(doc, item, key, allowed, f"{what} fields", defaults)
            written = f.optional_text("name")
            if written is not None and written != name:
                hint = "drop `name:` or make the two agree"
                raise doc.error(
                    f.at("name"), f.path("name"), f"{written!r} differs from {name!r}", hint
                )
            yield f, _check_name(doc, name, by_name.key_nodes[name], key), by_name.key_nodes[name]
        return
    if not isinstance(node, yaml.SequenceNode):
        raise doc.wrong(node, section, f"a list of {what}s (or a mapping name → fields)")
    for i, item in enumerate(node.value):
        key = f"{section}[{i}]"
        if bare_names and isinstance(item, yaml.ScalarNode) and not _is_null(item):
            yield (
                _Fields(doc, _EMPTY, key, allowed, what, defaults),
                _check_name(doc, _text(doc, item, key), item, key),
                item,
            )
            continue  # `- api` alone names a repo with default settings
        f = _Fields(doc, item, key, allowed, f"{what} fields", defaults)
        name = f.required_text("name", what)
        yield f, _check_name(doc, name, f.at("name"), f.path("name")), f.at("name")


def _unknown_repo(
    doc: _Doc, name: str, node: yaml.Node, key: str, repos: Mapping[str, Any]
) -> ConfigError:
    hint = suggest(name, list(repos), "configured repos") if repos else "add it under repos: first"
    return doc.error(node, key, f"unknown repo {name!r}", hint=hint)


# --- sections --------------------------------------------------------------------------------


def _keys(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _section(doc: _Doc, node: yaml.Node | None, key: str, cls: type[Any], what: str) -> _Fields:
    """Return the fields of a section read into dataclass `cls`: its keys, its defaults."""
    return _Fields(doc, node or _EMPTY, key, _keys(cls), what, field_defaults(cls))


_TOP_KEYS = ("repos", "machines", "concurrency", "models", "worker", "board", *EXTRA_SECTIONS)

_Refs = list[tuple[str, yaml.Node, str]]


def _read_repos(doc: _Doc, node: yaml.Node | None) -> dict[str, RepoConfig]:
    repos: dict[str, RepoConfig] = {}
    first: dict[str, int] = {}
    deps: dict[str, _Refs] = {}
    for f, name, name_node in _items(doc, node, "repos", RepoConfig, bare_names=True):
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
        )
    for refs in deps.values():
        for dep, dep_node, dep_key in refs:
            if dep not in repos:
                raise _unknown_repo(doc, dep, dep_node, dep_key, repos)
    _check_cycles(doc, deps)
    return repos


def _check_cycles(doc: _Doc, deps: Mapping[str, _Refs]) -> None:
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
    doc: _Doc, node: yaml.Node | None, repos: Mapping[str, RepoConfig]
) -> dict[str, MachineConfig]:
    if node is None:
        return dict(field_defaults(Config)["machines"])
    machines: dict[str, MachineConfig] = {}
    first: dict[str, int] = {}
    for f, name, name_node in _items(doc, node, "machines", MachineConfig):
        if name in machines:
            hint = f"first listed on line {first[name]}; give each machine its own name"
            raise doc.error(name_node, f.path("name"), f"machine {name!r} is listed twice", hint)
        first[name] = name_node.start_mark.line + 1
        served = f.texts("repos", "repo names")
        paths = f.text_map("repo_paths", "repo name → path")
        for repo, repo_node, repo_key in [*served, *((r, n, k) for r, _, n, _, k in paths)]:
            if repo not in repos:
                raise _unknown_repo(doc, repo, repo_node, repo_key, repos)
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
            port=f.integer("port", 1, 65535),
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
            tmux_socket=_check_name(
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


def _read_env(doc: _Doc, f: _Fields) -> dict[str, str]:
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


def _read_models(doc: _Doc, node: yaml.Node | None) -> ModelsConfig:
    f = _section(doc, node, "models", ModelsConfig, "model settings")
    ids = dict(f.defaults["ids"])
    for tier, model_id, tier_node, _, key in f.text_map("ids", "tier → model id"):
        ids[_check_name(doc, tier, tier_node, key)] = model_id
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


def _read_concurrency(doc: _Doc, node: yaml.Node | None) -> ConcurrencyConfig:
    f = _section(doc, node, "concurrency", ConcurrencyConfig, "concurrency settings")
    return ConcurrencyConfig(
        max_workers=f.integer("max_workers", 1),
        stagger_seconds=f.duration("stagger_seconds", allow_zero=True),
        backoff_base=f.number("backoff_base", 0.0),
        max_retries=f.integer("max_retries", 0),
        auto_reassign=f.boolean("auto_reassign"),
        stale_threshold=f.duration("stale_threshold"),
    )


def _read_worker(doc: _Doc, node: yaml.Node | None) -> WorkerConfig:
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
    )


def _read_board(doc: _Doc, node: yaml.Node | None, base_dir: Path) -> BoardConfig:
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
    doc = _Doc(label)
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
    top = _Fields(doc, root or _EMPTY, "", _TOP_KEYS, "sections (repos, machines, …)")
    repos = _read_repos(doc, top.get("repos"))
    core = Config(
        path=real_path,
        repos=frozen_mapping(repos),
        machines=frozen_mapping(_read_machines(doc, top.get("machines"), repos)),
        concurrency=_read_concurrency(doc, top.get("concurrency")),
        models=_read_models(doc, top.get("models")),
        worker=_read_worker(doc, top.get("worker")),
        board=_read_board(doc, top.get("board"), base_dir),
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

_Kind = Callable[[_Fields, str, Config], Any]


def _url(f: _Fields, key: str, config: Config) -> str:
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


def _model(f: _Fields, key: str, config: Config) -> str:
    value = f.text(key)
    try:
        config.models.resolve(value)
    except ConfigError as exc:
        raise f.doc.error(f.at(key), f.path(key), exc.message, exc.hint) from None
    return value


def _machine_names(f: _Fields, key: str, config: Config) -> list[str]:
    names = f.texts(key, "machine names")
    for name, node, item_key in names:
        if name not in config.machines:
            hint = suggest(name, list(config.machines), "configured machines")
            raise f.doc.error(node, item_key, f"unknown machine {name!r}", hint)
    return [name for name, _, _ in names]


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
}

# Each extra section's keys, and the kind of value each holds (read by `_READERS[kind]`).
_EXTRA_KEYS: dict[str, dict[str, str]] = {
    "github": {"api_url": "url", "write_interval": "seconds"},
    "reviews": {
        "enabled": "bool",
        "model": "model",
        "max_rounds": "count",
        "required_approvals": "count",
    },
    "smoke_tests": {
        "enabled": "bool",
        "commands": "commands",
        "machines": "machines",
        "timeout": "duration",
    },
    "hooks": dict.fromkeys(_keys(HooksConfig), "commands"),
    "forge": {"root": "text"},
    "briefings": {"dir": "text", "trusted_authors": "names"},
}


def _read_extra(doc: _Doc, node: yaml.Node, name: str, config: Config) -> dict[str, Any]:
    if not isinstance(node, yaml.MappingNode):
        raise doc.error(node, name, f"expected a mapping, got {_describe(node)}")
    kinds = _EXTRA_KEYS[name]
    f = _Fields(doc, node, name, tuple(kinds), f"{name} settings")
    return {k: _READERS[kind](f, k, config) for k, kind in kinds.items() if f.get(k) is not None}
