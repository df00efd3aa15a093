"""Scenarios for the scripted model server, and the pure functions that turn a request
into its reply: which scenario and turn a request asks for, the message, its SSE events,
error bodies, and redaction of what is recorded.  No I/O: `model_server` serves these.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeAlias

__all__ = [
    "Fault",
    "Scenario",
    "Text",
    "ToolUse",
    "Turn",
    "build_message",
    "error_body",
    "load_server_file",
    "redacted",
    "scenario_name",
    "sse_events",
    "text",
    "tool",
    "turn_index",
]

DEFAULT = "default"
# Resuming after a failed request, the CLI inserts this assistant message of its own.
_SYNTHETIC = ["No response requested."]
_MARKER = re.compile(r"\[scenario:([A-Za-z0-9_.-]+)\]")
_SECRET_HEADER = re.compile(r"key|auth|token|secret|cookie|password", re.IGNORECASE)
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_ERROR_MESSAGES = {
    400: "Scripted invalid request",
    401: "invalid x-api-key",
    429: "Number of request tokens has exceeded your per-minute rate limit",
    500: "Internal server error",
    529: "Overloaded",
}


# --- scenarios: pure data ---------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """A text block of an assistant turn."""

    text: str

    def to_dict(self) -> dict[str, Any]:
        """Return the block as JSON data."""
        return {"type": "text", "text": self.text}


@dataclass(frozen=True)
class ToolUse:
    """A tool call of an assistant turn; the CLI runs the real tool."""

    name: str
    input: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the block as JSON data."""
        return {"type": "tool_use", "name": self.name, "input": dict(self.input)}


Block: TypeAlias = Text | ToolUse


def text(value: str) -> Text:
    """Make a text block."""
    return Text(value)


def tool(name: str, /, **tool_input: Any) -> ToolUse:
    """Make a tool call block, e.g. ``tool("Bash", command="git commit -am x")``."""
    return ToolUse(name, tool_input)


@dataclass(frozen=True)
class Fault:
    """One way to fail a request: an HTTP error, a cut stream, or no answer at all.

    In JSON (``{"kind": "error", "status": 529, "times": 2}``) a missing ``times`` means
    every request, for a cut too.
    """

    kind: Literal["error", "cut", "hang"]
    status: int = 0  # for "error"
    message: str = ""  # for "error"; a stock message by status if empty
    error_type: str = ""  # for "error"; Anthropic's type by status if empty
    retry_after: float | None = None  # for "error": seconds, sent as retry-after
    after_events: int = 2  # for "cut": SSE events sent before the connection closes
    times: int | None = None  # fail this many matching requests, then none; None: every one

    def to_dict(self) -> dict[str, Any]:
        """Return the fault as JSON data (defaults left out)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name == "kind" or getattr(self, f.name) != f.default
        }

    @classmethod
    def error(
        cls,
        status: int,
        *,
        retry_after: float | None = None,
        message: str = "",
        error_type: str = "",
        times: int | None = None,
    ) -> Fault:
        """Answer with an HTTP error in Anthropic's shape (429, 529, 500, 401, 400, ...)."""
        return cls(
            "error",
            status=status,
            retry_after=retry_after,
            message=message,
            error_type=error_type,
            times=times,
        )

    @classmethod
    def cut(cls, after_events: int = 2, *, times: int | None = 1) -> Fault:
        """Close the connection after some SSE events (unstreamed: before any answer)."""
        return cls("cut", after_events=after_events, times=times)

    @classmethod
    def hang(cls, *, times: int | None = None) -> Fault:
        """Never answer: hold the request until the client hangs up or the server stops."""
        return cls("hang", times=times)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """Read a fault from JSON data."""
        if data.get("kind") not in ("error", "cut", "hang"):
            raise ValueError(f"fault kind must be error, cut or hang, not {data.get('kind')!r}")
        return cls(**data)


@dataclass(frozen=True)
class Turn:
    """One assistant message: its blocks, a delay before it, and an optional fault."""

    content: Sequence[Block]
    delay: float = 0.0  # seconds to wait before answering each request for this turn
    fault: Fault | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "content", tuple(self.content))

    @property
    def stop_reason(self) -> str:
        """Return "tool_use" if the turn calls a tool, else "end_turn"."""
        return "tool_use" if any(isinstance(b, ToolUse) for b in self.content) else "end_turn"

    def to_dict(self) -> dict[str, Any]:
        """Return the turn as JSON data."""
        data: dict[str, Any] = {"content": [b.to_dict() for b in self.content]}
        if self.delay:
            data["delay"] = self.delay
        if self.fault is not None:
            data["fault"] = self.fault.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | Sequence[Any]) -> Turn:
        """Read a turn: ``{"content": [...], "delay": s, "fault": {...}}`` or a bare list."""
        if not isinstance(data, Mapping):
            data = {"content": data}
        blocks: list[Block] = []
        for raw in data["content"]:
            if raw.get("type") == "text":
                blocks.append(Text(raw["text"]))
            elif raw.get("type") == "tool_use":
                blocks.append(ToolUse(raw["name"], dict(raw.get("input", {}))))
            else:
                raise ValueError(f"block type must be text or tool_use, not {raw.get('type')!r}")
        fault = data.get("fault")
        return cls(
            blocks,
            delay=float(data.get("delay", 0.0)),
            fault=Fault.from_dict(fault) if fault else None,
        )


@dataclass(frozen=True)
class Scenario:
    """The assistant turns of one conversation, in order."""

    turns: Sequence[Turn] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "turns", tuple(self.turns))

    def to_dict(self) -> dict[str, Any]:
        """Return the scenario as JSON data."""
        return {"turns": [t.to_dict() for t in self.turns]}

    def to_json(self) -> str:
        """Return the scenario as a JSON document."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | Sequence[Any]) -> Scenario:
        """Read a scenario from ``{"turns": [...]}``, or a bare list of turns."""
        if not isinstance(data, Mapping):
            data = {"turns": data}
        return cls([Turn.from_dict(t) for t in data.get("turns", [])])

    @classmethod
    def from_json(cls, document: str) -> Scenario:
        """Read a scenario from a JSON document made by :meth:`to_json`."""
        return cls.from_dict(json.loads(document))


def load_server_file(path: Path) -> tuple[dict[str, Scenario], list[Fault]]:
    """Read a scenario file: one scenario, or ``{"scenarios": {NAME: ...}, "faults": [...]}``."""
    data = json.loads(path.read_text())
    if "scenarios" in data:
        scenarios = {name: Scenario.from_dict(s) for name, s in data["scenarios"].items()}
    else:
        scenarios = {DEFAULT: Scenario.from_dict(data)}
    return scenarios, [Fault.from_dict(f) for f in data.get("faults", [])]


# --- replies: pure functions ------------------------------------------------------------


def _texts(content: Any) -> Iterable[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                yield block["text"]


def scenario_name(body: Mapping[str, Any]) -> str:
    """Return the scenario named by the last ``[scenario:NAME]`` in the first user message."""
    # The last, because the CLI puts its context (CLAUDE.md included) before the prompt.
    for message in body.get("messages", []):
        if message.get("role") == "user":
            names = [m for chunk in _texts(message.get("content")) for m in _MARKER.findall(chunk)]
            return names[-1] if names else DEFAULT
    return DEFAULT


def turn_index(body: Mapping[str, Any]) -> int:
    """Return how many assistant messages the request carries, less the CLI's own fillers."""
    return sum(
        1
        for m in body.get("messages", [])
        if m.get("role") == "assistant" and list(_texts(m.get("content"))) != _SYNTHETIC
    )


def _tool_id(seed: str) -> str:
    return "toolu_01" + hashlib.sha256(seed.encode()).hexdigest()[:22]


def build_message(
    blocks: Sequence[Block], *, model: str, input_tokens: int, seed: str
) -> dict[str, Any]:
    """Return a complete Messages API reply with these blocks and plausible usage."""
    content: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        data = block.to_dict()
        if isinstance(block, ToolUse):
            data = {"type": "tool_use", "id": _tool_id(f"{seed}/{i}"), **data}
        content.append(data)
    stop = Turn(blocks).stop_reason
    output_tokens = max(1, len(json.dumps(content)) // 4)
    return {
        "id": "msg_01" + uuid.uuid4().hex[:22],
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        },
    }


def _pieces(value: str, size: int = 40) -> list[str]:
    return [value[i : i + size] for i in range(0, len(value), size)] or [""]


def sse_events(message: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Return the SSE events (name, data) that stream this message, as Anthropic sends them."""
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "usage": {**usage, "output_tokens": 1},
    }
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            first: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"])]
        else:
            first = {**block, "input": {}}
            raw = json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in _pieces(raw)]
        start_block = {"type": "content_block_start", "index": index, "content_block": first}
        events.append(("content_block_start", start_block))
        events += [
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        ]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def error_body(status: int, message: str = "", error_type: str = "") -> dict[str, Any]:
    """Return Anthropic's error JSON for an HTTP status."""
    return {
        "type": "error",
        "error": {
            "type": error_type or _ERROR_TYPES.get(status, "api_error"),
            "message": message or _ERROR_MESSAGES.get(status, f"Scripted error {status}"),
        },
    }


def redact_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Return the headers, lower-cased, with the values of credential-like ones hidden.

    A hidden value is kept as ``[redacted sha256:<first 12 hex>]``, so a test can check
    which key arrived without the key itself being stored.
    """
    return {k.lower(): (redacted(v) if _SECRET_HEADER.search(k) else v) for k, v in headers}


def redacted(value: str) -> str:
    """How `redact_headers` shows a credential: a short hash, never the value."""
    return f"[redacted sha256:{hashlib.sha256(value.encode()).hexdigest()[:12]}]"
