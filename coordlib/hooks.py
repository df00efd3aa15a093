"""Pipeline hooks: the user's commands (and a few built-ins) run at the coordinator's events.

Each hook of an event is either the name of a built-in (`BUILTINS`) or a shell command run
on the coordinator's machine as ``sh -c COMMAND``.  A command gets the event's payload as
one JSON object on stdin and ``COORD_EVENT=<event>`` in its environment; values never reach
the command line, so nothing in a payload can be executed.  Keys that look like secrets are
dropped from the payload first (`scrub`).

A hook can only fail quietly: a non-zero exit, a missing command or a timeout (its whole
process group is killed) is reported through ``notify`` and in its `HookResult`, never
raised, because a broken notifier must not stop the pipeline.  The hooks of one event run
at the same time; their stdout is discarded and the tail of their stderr kept for the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .atomic import write_atomic

__all__ = ["BUILTINS", "HookResult", "Hooks", "render_summary", "scrub"]

BUILTINS: frozenset[str] = frozenset({"summary_report"})
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
STDERR_CAP = 64 * 1024  # bytes of a hook's stderr kept (the tail)
PIPE_GRACE = 1.0  # seconds to wait for stderr to close once the hook has exited


@dataclass(frozen=True)
class HookResult:
    """How one hook of one event went."""

    event: str
    hook: str
    ok: bool
    detail: str  # "exit 0", the report's path, or why it failed
    seconds: float


def scrub(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Return payload without any key, at any depth, that names a key, token, secret or password."""
    secret = [k for k in payload if any(w in str(k).upper() for w in SECRET_WORDS)]
    return {str(k): _scrub(v) for k, v in payload.items() if k not in secret}


def _scrub(value: Any) -> Any:
    if isinstance(value, Mapping):
        return scrub(value)
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


class Hooks:
    """Run the hooks configured for each event; report failures, never raise them."""

    def __init__(
        self,
        commands: Mapping[str, Sequence[str]],
        *,
        notify: Callable[[str], None],
        state_dir: Path,
        timeout: float = 30.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._commands = {
            event: (hooks,) if isinstance(hooks, str) else tuple(hooks)
            for event, hooks in commands.items()
            if hooks
        }
        self._notify = notify
        self._state_dir = state_dir
        self._timeout = timeout
        self._environ = environ

    def has(self, event: str) -> bool:
        """Return whether any hook is configured for event."""
        return bool(self._commands.get(event))

    async def fire(self, event: str, payload: Mapping[str, Any]) -> list[HookResult]:
        """Run every hook of event at once with payload; return how each went."""
        hooks = self._commands.get(event, ())
        if not hooks:
            return []
        return list(await asyncio.gather(*(self._run(event, hook, payload) for hook in hooks)))

    async def _run(self, event: str, hook: str, payload: Mapping[str, Any]) -> HookResult:
        started = time.monotonic()
        try:
            body = {"event": event} | {k: v for k, v in scrub(payload).items() if k != "event"}
            if hook in BUILTINS:
                ok, detail = self._summary_report(body)
            else:
                ok, detail = await self._command(event, hook, body)
        except Exception as exc:  # a hook must never break the pipeline that fires it
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        if not ok:
            self._tell(f"hook {event} `{hook}` failed: {detail}")
        return HookResult(event, hook, ok, detail, time.monotonic() - started)

    def _tell(self, message: str) -> None:
        with contextlib.suppress(Exception):  # a broken notifier must not break us either
            self._notify(message)

    async def _command(self, event: str, command: str, body: dict[str, Any]) -> tuple[bool, str]:
        data = json.dumps(body, default=str, ensure_ascii=False).encode()
        environ = os.environ if self._environ is None else self._environ
        # stderr goes through a pipe of our own: asyncio's `wait()` also waits for the pipes
        # it made, which a child the hook left running could hold open long after it exited.
        stderr = asyncio.StreamReader()
        read_fd, write_fd = os.pipe()
        err_pipe, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stderr), os.fdopen(read_fd, "rb", 0)
        )
        tail = bytearray()
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    "sh",
                    "-c",
                    command,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=write_fd,
                    env={**environ, "COORD_EVENT": event},
                    start_new_session=True,  # a group of its own, so a timeout kills it all
                )
            finally:
                os.close(write_fd)
            pipes = [
                asyncio.create_task(_feed(proc.stdin, data)),
                asyncio.create_task(_keep_tail(stderr, tail)),
            ]
            try:
                status = await self._finish(proc)
                # A child it left running may hold stderr open; do not wait on that for long.
                await asyncio.wait(pipes, timeout=PIPE_GRACE)
            finally:
                for task in pipes:
                    task.cancel()
        finally:
            err_pipe.close()
        if status is None:
            return True, "exit 0"
        lines = tail.decode("utf-8", "replace").strip().splitlines()
        return False, f"{status}: {lines[-1][:300]}" if lines else status

    async def _finish(self, proc: asyncio.subprocess.Process) -> str | None:
        """Wait for proc within the timeout, killing its group past it; say why it failed."""
        code: int | None = None
        try:
            code = await asyncio.wait_for(proc.wait(), self._timeout)
        except TimeoutError:
            pass
        finally:
            if proc.returncode is None:  # past its timeout, or we were cancelled
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if code is None:
            return f"timed out after {self._timeout:g} s (killed)"
        if code == 0:
            return None
        return f"killed by signal {-code}" if code < 0 else f"exit {code}"

    def _summary_report(self, body: Mapping[str, Any]) -> tuple[bool, str]:
        folder = self._state_dir / "reports"
        folder.mkdir(parents=True, exist_ok=True)
        now = datetime.now()
        path = folder / f"summary-{now:%Y%m%d-%H%M%S}.md"
        n = 1
        while path.exists():  # two reports in one second: keep both
            n += 1
            path = folder / f"summary-{now:%Y%m%d-%H%M%S}-{n}.md"
        write_atomic(path, render_summary(body, now).encode(), durable=False)
        self._tell(f"summary report: {path}")
        return True, str(path)


async def _feed(stdin: asyncio.StreamWriter | None, data: bytes) -> None:
    assert stdin is not None  # spawned with stdin=PIPE
    # A hook that never reads its stdin is fine: it just does not get the payload.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(data)
        await stdin.drain()
        stdin.close()
        await stdin.wait_closed()


async def _keep_tail(stream: asyncio.StreamReader, tail: bytearray) -> None:
    while chunk := await stream.read(65536):
        tail.extend(chunk)
        del tail[:-STDERR_CAP]


def render_summary(body: Mapping[str, Any], now: datetime) -> str:
    """Render a payload's `summary` as Markdown: scalars as a list, collections as tables."""
    context = {k: v for k, v in body.items() if k not in ("event", "summary") and _scalar(v)}
    lines = [f"# Summary ({body.get('event', 'report')}, {now:%Y-%m-%d %H:%M:%S})", ""]
    if context:
        lines += [f"- {_title(k)}: {_cell(k, v)}" for k, v in context.items()] + [""]
    summary = body.get("summary")
    if not isinstance(summary, Mapping) or not summary:
        return "\n".join([*lines, "No summary in this event.", ""])
    scalars = {k: v for k, v in summary.items() if _scalar(v)}
    lines += [f"- {_title(k)}: {_cell(k, v)}" for k, v in scalars.items()]
    for key, value in summary.items():
        if key not in scalars:
            lines += ["", f"## {_title(key)}", "", *_section(str(key), value)]
    return "\n".join(lines).strip() + "\n"


def _section(key: str, value: Any) -> list[str]:
    if not value:
        return ["None."]
    if isinstance(value, Mapping):
        if all(isinstance(v, Mapping) for v in value.values()):
            return _table(key, [{"": k, **v} for k, v in value.items()])
        return [f"- {k}: {_cell(key, v)}" for k, v in value.items()]
    if all(isinstance(v, Mapping) for v in value):
        return _table(key, list(value))
    return [f"- {_cell(key, v)}" for v in value]


def _table(key: str, rows: list[Mapping[str, Any]]) -> list[str]:
    columns = list(dict.fromkeys(c for row in rows for c in row))
    out = ["| " + " | ".join(_title(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_cell(f"{key}.{c}", row.get(c, "")) for c in columns]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _scalar(value: Any) -> bool:
    return not isinstance(value, Mapping | list | tuple)


def _title(key: Any) -> str:
    return str(key).replace("_", " ").strip().capitalize()


def _cell(key: str, value: Any) -> str:
    money = any(word in key.lower() for word in ("cost", "usd"))
    if isinstance(value, float) and money:
        text = f"${value:.2f}"
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, Mapping | list | tuple):
        text = json.dumps(value, default=str, ensure_ascii=False)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")
