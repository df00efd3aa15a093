"""Check HTTP exchanges against the committed subset of GitHub's OpenAPI description.

`OpenAPI.match` finds the documented operation for a method and path; `check_request` and
`check_response` return the list of problems (empty when the exchange is valid).  OpenAPI
3.0 schemas are turned into JSON Schema draft 4 once at load: ``nullable: true`` becomes a
``null`` type (or an ``anyOf`` with ``null`` around a ``$ref``/composition), and every
``$ref`` resolves inside the subset document.  ``format`` is not checked.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SUBSET = Path(__file__).with_name("openapi_subset.json")
_URI = "urn:fakegithub:openapi"

# Answers GitHub gives on any route whatever the description lists for it: bad or missing
# credentials, rate limits, a repository or number that does not exist (e.g. creating a
# review on pull request 9999 is a 404, though that operation documents none), and server
# trouble.  Their bodies are `basic-error`.
GLOBAL_STATUSES = frozenset({401, 403, 404, 429, 500, 502, 503, 504})
# Path parameters that may hold slashes (git refs, "base...head").
_GREEDY = {"ref", "basehead"}


@dataclass(frozen=True)
class Operation:
    """One documented operation: method, path template and its description."""

    method: str
    template: str
    spec: dict[str, Any]
    parameters: tuple[dict[str, Any], ...]
    pointer: str  # JSON pointer of the operation inside the subset
    regex: re.Pattern[str] = field(compare=False)

    @property
    def name(self) -> str:
        return f"{self.method.upper()} {self.template}"


def _nullable(node: Any) -> Any:
    """Rewrite OpenAPI 3.0 `nullable` into JSON Schema, recursively."""
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable(v) for k, v in node.items()}
    if out.pop("nullable", False) is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


class OpenAPI:
    """The served operations and validators built from the subset file."""

    def __init__(self, path: Path = SUBSET) -> None:
        raw = json.loads(path.read_text())
        self.version: str = raw["info"]["version"]
        self.doc: dict[str, Any] = _nullable(raw)
        self._registry: Registry[Any] = Registry().with_resource(
            _URI, Resource.from_contents(self.doc, default_specification=DRAFT4)
        )
        self.operations: list[Operation] = []
        self._validators: dict[str, jsonschema.protocols.Validator] = {}
        for template, item in self.doc["paths"].items():
            shared = item.get("parameters", [])
            for method, spec in item.items():
                if method == "parameters":
                    continue
                params = tuple(self._deref(p) for p in [*shared, *spec.get("parameters", [])])
                pattern = "".join(
                    f"(?P<{part[1:-1]}>{'.+' if part[1:-1] in _GREEDY else '[^/]+'})"
                    if part.startswith("{")
                    else re.escape(part)
                    for part in re.split(r"(\{[^}]+\})", template)
                )
                self.operations.append(
                    Operation(
                        method=method,
                        template=template,
                        spec=spec,
                        parameters=params,
                        pointer=f"/paths/{_escape(template)}/{method}",
                        regex=re.compile(f"^{pattern}$"),
                    )
                )

    def _deref(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = self.resolve(node["$ref"])
        return node

    def resolve(self, ref: str) -> Any:
        """Return the node a local `$ref` points at."""
        node: Any = self.doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def match(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        """Return the operation serving `method path` and its decoded path parameters."""
        for op in self.operations:
            if op.method != method.lower():
                continue
            found = op.regex.match(path)
            if found:
                return op, {k: urllib.parse.unquote(v) for k, v in found.groupdict().items()}
        return None

    def validator(self, pointer: str) -> jsonschema.protocols.Validator:
        """Return a draft 4 validator for the schema at `pointer` in the subset."""
        if pointer not in self._validators:
            self._validators[pointer] = jsonschema.Draft4Validator(
                {"$ref": f"{_URI}#{pointer}"}, registry=self._registry
            )
        return self._validators[pointer]

    def _problems(self, pointer: str, value: Any, where: str) -> list[str]:
        # Wrong values first, then the (often many) missing properties at the root.
        errors = sorted(
            self.validator(pointer).iter_errors(value),
            key=lambda e: (not e.absolute_path, [str(p) for p in e.absolute_path]),
        )
        out = []
        for err in errors[:8]:
            at = "/".join(str(p) for p in err.absolute_path) or "(root)"
            out.append(f"{where} at {at}: {err.message[:300]}")
        if len(errors) > 8:
            out.append(f"{where}: and {len(errors) - 8} more problems")
        return out

    def check_request(
        self,
        op: Operation,
        path_params: dict[str, str],
        query: dict[str, list[str]],
        body: bytes,
        content_type: str,
    ) -> list[str]:
        """Return what is wrong with a request for `op` (empty when it is valid)."""
        problems: list[str] = []
        in_query = {p["name"] for p in op.parameters if p["in"] == "query"}
        for name, values in query.items():
            if name not in in_query:
                problems.append(f"{op.name}: undocumented query parameter {name!r}")
                continue
            if len(values) > 1:
                problems.append(f"{op.name}: query parameter {name!r} given {len(values)} times")
        for param in op.parameters:
            where = param["in"]
            if where not in ("path", "query"):
                continue
            source = path_params if where == "path" else {k: v[0] for k, v in query.items()}
            if param["name"] not in source:
                if param.get("required"):
                    problems.append(f"{op.name}: missing {where} parameter {param['name']!r}")
                continue
            value = _coerce(source[param["name"]], param.get("schema", {}))
            problems += self._param_problems(op, param, value)
        spec = op.spec.get("requestBody")
        if not body.strip():
            if spec and spec.get("required"):
                problems.append(f"{op.name}: request body required")
            return problems
        if spec is None:
            problems.append(f"{op.name}: request has a body but the operation takes none")
            return problems
        media = content_type.split(";")[0].strip() or "application/json"
        if media not in spec["content"]:
            problems.append(f"{op.name}: request content type {media!r} not documented")
            return problems
        try:
            data = json.loads(body)
        except ValueError as exc:
            return [*problems, f"{op.name}: request body is not JSON: {exc}"]
        pointer = f"{op.pointer}/requestBody/content/{_escape(media)}/schema"
        return problems + self._problems(pointer, data, f"{op.name}: request body")

    def _param_problems(self, op: Operation, param: dict[str, Any], value: Any) -> list[str]:
        schema = param.get("schema", {})
        validator = jsonschema.Draft4Validator(schema)
        return [
            f"{op.name}: {param['in']} parameter {param['name']!r}: {err.message}"
            for err in validator.iter_errors(value)
        ]

    def check_response(
        self, op: Operation, status: int, body: bytes, content_type: str
    ) -> list[str]:
        """Return what is wrong with a response to `op` (empty when it is valid)."""
        responses = op.spec.get("responses", {})
        spec = responses.get(str(status))
        if spec is None and status in GLOBAL_STATUSES:
            spec = {
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/basic-error"}}
                }
            }
            pointer_base = None
        elif spec is None:
            return [
                f"{op.name}: status {status} is not documented "
                f"(documented: {', '.join(sorted(responses))})"
            ]
        else:
            pointer_base = f"{op.pointer}/responses/{status}"
        if "$ref" in spec:
            pointer_base = spec["$ref"].removeprefix("#")
            spec = self.resolve(spec["$ref"])
        content = spec.get("content", {})
        if not body:
            if content and status != 304:
                return [f"{op.name}: status {status} must have a body"]
            return []
        if not content:
            return [f"{op.name}: status {status} must have no body"]
        media = content_type.split(";")[0].strip()
        if media not in content:
            return [f"{op.name}: response content type {media!r} not documented for {status}"]
        try:
            data = json.loads(body)
        except ValueError as exc:
            return [f"{op.name}: response body is not JSON: {exc}"]
        if pointer_base is None:
            schema_pointer = "/components/schemas/basic-error"
        else:
            schema_pointer = f"{pointer_base}/content/{_escape(media)}/schema"
        return self._problems(schema_pointer, data, f"{op.name}: {status} response")


def _coerce(text: str, schema: dict[str, Any]) -> Any:
    """Turn a query or path string into the JSON value its schema describes."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            return text
    if kind == "boolean":
        return {"true": True, "false": False}.get(text, text)
    if kind == "array":
        return text.split(",")
    return text
