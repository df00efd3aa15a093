"""Reading YAML nodes with the line each was written on: the layer under `config_yaml`.

`Doc` turns a problem into a `ConfigError` naming file:line and the dotted key; `Fields`
reads one mapping's keys (unknown ones are errors with the nearest known key), each typed
value checked, its default taken from the section's dataclass.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from .config import NAME_CHARS, field_defaults, is_valid_name, parse_duration, suggest
from .errors import ConfigError


def field_names(cls: type[Any]) -> tuple[str, ...]:
    """Return the field names of a config section's dataclass: its valid keys."""
    return tuple(f.name for f in dataclasses.fields(cls))


NULL_TAG = "tag:yaml.org,2002:null"
MERGE_TAG = "tag:yaml.org,2002:merge"
STR_TAG = "tag:yaml.org,2002:str"
KINDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean"}
SOCKET_NAME = re.compile(r"[A-Za-z0-9_-]+")


class Doc:
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
        return self.error(node, key, f"expected {expected}, got {describe(node)}", hint)

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


EMPTY = yaml.ScalarNode(NULL_TAG, "")


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG


def describe(node: yaml.Node) -> str:
    if not isinstance(node, yaml.ScalarNode):
        return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"
    if node.tag == NULL_TAG:
        return "nothing"
    shown = repr(node.value) if node.tag == STR_TAG else str(node.value)
    return f"{shown} ({KINDS.get(node.tag.rsplit(':', 1)[-1], 'a value')})"


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def seconds_of(value: Any) -> float | None:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            return None
    return float(value) if is_number(value) and math.isfinite(value) else None


def text_of(doc: Doc, node: yaml.Node, key: str) -> str:
    # the text as written, so `branch: no` stays "no" rather than YAML 1.1's False
    if not isinstance(node, yaml.ScalarNode) or is_null(node):
        raise doc.wrong(node, key, "a string")
    if not node.tag.startswith("tag:yaml.org,2002:"):
        raise doc.error(node, key, f"unsupported YAML tag {node.tag}", hint="remove the tag")
    return str(node.value)


class Fields:
    """A mapping node whose keys were checked against the names its section allows.

    A key left out reads as its entry in `defaults` (a dataclass's field defaults).
    """

    def __init__(
        self,
        doc: Doc,
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
        if is_null(node):
            return  # a section left empty, e.g. every entry commented out
        if not isinstance(node, yaml.MappingNode):
            raise doc.wrong(node, key, f"a mapping of {what}")
        for key_node, _ in node.value:
            if key_node.tag != MERGE_TAG:
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
        if not isinstance(key_node, yaml.ScalarNode) or is_null(key_node):
            raise self.doc.wrong(key_node, self.key, "a plain name as key")
        return str(key_node.value)

    def path(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def get(self, name: str) -> yaml.Node | None:
        node = self.values.get(name)
        return None if node is None or is_null(node) else node

    def at(self, name: str) -> yaml.Node:
        """Return the node to blame for `name`: its value, or the whole mapping if absent."""
        return self.get(name) or self.node

    def items(self) -> Iterator[tuple[str, yaml.Node, str]]:
        for name, node in self.values.items():
            yield name, node, self.path(name)

    def text(self, name: str) -> str:
        node = self.get(name)
        if node is None:
            return str(self.defaults[name])
        return text_of(self.doc, node, self.path(name))

    def optional_text(self, name: str) -> str | None:
        node = self.get(name)
        if node is None:
            return cast("str | None", self.defaults.get(name))
        return text_of(self.doc, node, self.path(name))

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
            name, f"an integer {wanted}", lambda v: is_int(v) and minimum <= v <= top
        )

    def integer(self, name: str, minimum: int, maximum: int | None = None) -> int:
        return cast(int, self._integer(name, minimum, maximum))

    def optional_integer(self, name: str, minimum: int, maximum: int | None = None) -> int | None:
        return cast("int | None", self._integer(name, minimum, maximum))

    def number(self, name: str, minimum: float) -> float:
        def ok(value: Any) -> bool:
            return is_number(value) and minimum <= value < math.inf

        return float(self._scalar(name, f"a number of at least {minimum:g}", ok))

    def optional_duration(self, name: str) -> float | None:
        if self.get(name) is None:
            return cast("float | None", self.defaults.get(name))
        return self.duration(name)

    def boolean(self, name: str) -> bool:
        return cast(bool, self._scalar(name, "true or false", lambda v: isinstance(v, bool)))

    def duration(self, name: str, *, allow_zero: bool = False) -> float:
        def ok(value: Any) -> bool:
            seconds = seconds_of(value)
            return seconds is not None and (seconds > 0 or (allow_zero and seconds == 0))

        floor = "zero or more" if allow_zero else "above zero"
        expected = f"a duration {floor} (e.g. 90s, 10m, 2h, 1h30m, or seconds)"
        return seconds_of(self._scalar(name, expected, ok)) or 0.0

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
        return [(text_of(self.doc, n, k), n, k) for n, k in zip(node.value, keys, strict=True)]

    def text_map(self, name: str, what: str) -> list[tuple[str, str, yaml.Node, yaml.Node, str]]:
        """Return (key, value text, key node, value node, dotted key) for each entry."""
        node = self.get(name)
        if node is None:
            return []
        sub = Fields(self.doc, node, self.path(name), None, what)
        return [(k, text_of(self.doc, v, p), sub.key_nodes[k], v, p) for k, v, p in sub.items()]


def check_name(doc: Doc, name: str, node: yaml.Node, key: str, socket: bool = False) -> str:
    if socket:
        ok, chars = bool(SOCKET_NAME.fullmatch(name)), "letters, digits, '_' and '-'"
    else:
        ok, chars = is_valid_name(name), NAME_CHARS
    if not ok:
        raise doc.error(node, key, f"{name!r} is not a valid name", hint=f"use only {chars}")
    return name


def items_of(
    doc: Doc, node: yaml.Node | None, section: str, cls: type, *, bare_names: bool = False
) -> Iterator[tuple[Fields, str, yaml.Node]]:
    """Yield (fields, name, node naming it) per item of a list, or of a mapping name → fields."""
    what, allowed, defaults = section[:-1], field_names(cls), field_defaults(cls)
    if node is None:
        return
    if isinstance(node, yaml.MappingNode):
        by_name = Fields(doc, node, section, None, f"{what}s")
        for name, item, key in by_name.items():
            f = Fields(doc, item, key, allowed, f"{what} fields", defaults)
            written = f.optional_text("name")
            if written is not None and written != name:
                hint = "drop `name:` or make the two agree"
                raise doc.error(
                    f.at("name"), f.path("name"), f"{written!r} differs from {name!r}", hint
                )
            yield f, check_name(doc, name, by_name.key_nodes[name], key), by_name.key_nodes[name]
        return
    if not isinstance(node, yaml.SequenceNode):
        raise doc.wrong(node, section, f"a list of {what}s (or a mapping name → fields)")
    for i, item in enumerate(node.value):
        key = f"{section}[{i}]"
        if bare_names and isinstance(item, yaml.ScalarNode) and not is_null(item):
            yield (
                Fields(doc, EMPTY, key, allowed, what, defaults),
                check_name(doc, text_of(doc, item, key), item, key),
                item,
            )
            continue  # `- api` alone names a repo with default settings
        f = Fields(doc, item, key, allowed, f"{what} fields", defaults)
        name = f.required_text("name", what)
        yield f, check_name(doc, name, f.at("name"), f.path("name")), f.at("name")


def unknown_repo(
    doc: Doc, name: str, node: yaml.Node, key: str, repos: Mapping[str, Any]
) -> ConfigError:
    hint = suggest(name, list(repos), "configured repos") if repos else "add it under repos: first"
    return doc.error(node, key, f"unknown repo {name!r}", hint=hint)
