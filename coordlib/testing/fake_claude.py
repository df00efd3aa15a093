#!/usr/bin/env python3
"""A scripted stand-in for ``claude -p``: real stream-json shapes, real file writes and commits.

Accepts ``-p [PROMPT] --output-format stream-json --verbose --model MODEL --allowedTools TOOLS
[--resume ID]`` and ignores anything else.  Without a PROMPT argument the prompt is read from
stdin, as the real CLI does (and as coord's launcher gives it).  The scenario is the last
``[fake:NAME]`` or ``[fake:NAME:ARG]`` marker in the prompt, else FAKE_CLAUDE_SCENARIO
(FAKE_CLAUDE_RESUME_SCENARIO with ``--resume``), else ``ok``:

    ok            init, STATUS, Write FAKE_CLAUDE_FILE, Bash git add + commit, STATUS, result;
                  the file holds ARG (plus a newline) when the marker gives one (``NAME=TEXT``:
                  the file NAME, in the worktree, holds TEXT), and gets an
                  ``again <n>`` line when it already holds that content, so there is always
                  something to commit (a second worker on the same branch)
    events        FAKE_CLAUDE_EVENTS "STATUS: tick n" lines at FAKE_CLAUDE_RATE per second,
                  each carrying top-level "ts" and "seq", then a file committed (unannounced)
                  and a result
    empty         STATUS, then a successful result, having changed nothing (done_empty)
    dirty         ok's Write (ARG as ok's), never committed, then a successful result
                  (uncommitted)
    stall         init, one STATUS line, then silence forever
    linger        ok, then stays alive after its result (as the real CLI can)
    fail          init, then exit 3 with a message on stderr and no result
    error_result  api_retry events, then result subtype "success" with is_error and status
                  FAKE_CLAUDE_ERROR_STATUS (default 529), exit 1; the retries' delay is
                  FAKE_CLAUDE_RETRY_DELAY_MS (default 500, doubling)
    slow          ok, but sleeps FAKE_CLAUDE_DELAY seconds before the result
    env           ok, but the written file reports, for each name in FAKE_CLAUDE_REPORT_ENV,
                  whether it is set and the sha256 of its value (never the value)

Reviewers' scenarios read but never edit or commit:

    approve          init, STATUS, Bash ``git log --oneline -3`` (run for real), then a result
                     ending in ``VERDICT: approve``
    request_changes  the same, with ``VERDICT: request-changes`` and two numbered findings
    no_verdict       the same, with a result that gives no verdict line
    stuck            init, STATUS, a ``STUCK:`` line, then a successful result that is that
                     line (a ``-p`` session that stops to ask ends its turn)

FAKE_CLAUDE_ARGV_LOG, when set, names a file that gets one JSON line with the full argv per
run; FAKE_CLAUDE_PROMPT_LOG one JSON line per run, ``{"prompt": ..., "source": "argv" |
"stdin", "pid": ...}``.  With ``--resume ID`` and no marker the scenario is
FAKE_CLAUDE_RESUME_SCENARIO (default ``ok``), so a stuck or rate-limited run can be continued.
Standard library only: it runs wherever the worker runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

VERSION = "fake-1"
TOOLS = [
    "Task", "Bash", "Glob", "Grep", "ExitPlanMode", "Read", "Edit", "MultiEdit", "Write",
    "NotebookEdit", "WebFetch", "TodoWrite", "WebSearch", "BashOutput", "KillShell",
]  # fmt: skip
# Flags of the real CLI that take a value, so their value is not mistaken for the prompt.
VALUE_FLAGS = {
    "--output-format", "--input-format", "--model", "--fallback-model", "--allowedTools",
    "--allowed-tools", "--disallowedTools", "--disallowed-tools", "--resume", "-r",
    "--max-turns", "--permission-mode", "--append-system-prompt", "--system-prompt",
    "--session-id", "--add-dir", "--mcp-config", "--settings", "--setting-sources",
}  # fmt: skip
GIT_IDENTITY = ["-c", "user.name=coord-worker", "-c", "user.email=worker@coord.invalid"]
# A prompt's `[fake:NAME]` or `[fake:NAME:ARG]`: the last one picks the scenario.
MARKER = re.compile(r"\[fake:([a-z_]+)(?::([A-Za-z0-9 _.,=-]*))?\]")
APPROVE = "The change does what the issue asks.\nVERDICT: approve\n1. Nothing blocking."
REQUEST_CHANGES = (
    "The greeting is wrong.\nVERDICT: request-changes\n"
    "1. hello.txt:1 must say hello, not broken.\n2. Add a test."
)
NO_VERDICT = "I looked at it and it seems fine."
STUCK = "STUCK: I need the staging API key to run the integration tests"


def parse_args(argv: list[str]) -> dict[str, Any]:
    """Read the flags coordlib passes; ignore the rest."""
    opts: dict[str, Any] = {"prompt": None, "verbose": False}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, inline = arg.partition("=")
        if arg == "--verbose":
            opts["verbose"] = True
        elif name in VALUE_FLAGS:
            if not eq:
                i += 1
                inline = argv[i] if i < len(argv) else ""
            opts[name.lstrip("-")] = inline
        elif not arg.startswith("-") and opts["prompt"] is None:
            opts["prompt"] = arg
        i += 1
    return opts


class Session:
    """Write one run's stream-json, mimicking the real CLI's shapes."""

    def __init__(self, opts: dict[str, Any], arg: str | None = None) -> None:
        self.arg = arg  # the prompt marker's ARG, if it gave one
        self.session_id = opts.get("resume") or str(uuid.uuid4())
        self.model = opts.get("model") or "claude-fake-model"
        self.prompt = opts["prompt"]
        self.started = time.monotonic()
        self.turns = 0
        self.input_tokens = 0
        self.output_tokens = 0

    def emit(self, event: dict[str, Any]) -> None:
        event.setdefault("session_id", self.session_id)
        event.setdefault("uuid", str(uuid.uuid4()))
        line = json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n"
        try:
            sys.stdout.buffer.write(line.encode("utf-8"))
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            os._exit(1)  # the reader is gone; die quietly, as the real CLI does

    def init(self) -> None:
        self.emit(
            {
                "type": "system",
                "subtype": "init",
                "cwd": os.getcwd(),
                "session_id": self.session_id,
                "tools": TOOLS,
                "mcp_servers": [],
                "model": self.model,
                "permissionMode": "default",
                "apiKeySource": "ANTHROPIC_API_KEY",
                "claude_code_version": VERSION,
                "output_style": "default",
            }
        )

    def message(self, *blocks: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
        """Emit one assistant message, one event per content block, as the real CLI does."""
        self.turns += 1
        self.input_tokens += 100
        self.output_tokens += 20 * len(blocks)
        message_id = "msg_fake_" + uuid.uuid4().hex[:24]
        for block in blocks:
            event = {
                "type": "assistant",
                "message": {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [block],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": self.usage(100, 20),
                },
                "parent_tool_use_id": None,
            }
            event.update(extra or {})
            self.emit(event)

    def tool(
        self,
        name: str,
        tool_input: dict[str, Any],
        run: Callable[[], tuple[str, bool]],
        *,
        say: str | None = None,
    ) -> None:
        """Emit a tool_use (after the text say, in the same message), run it, emit its result."""
        tool_use_id = "toolu_fake_" + uuid.uuid4().hex[:20]
        blocks: list[dict[str, Any]] = [{"type": "text", "text": say}] if say else []
        blocks.append({"type": "tool_use", "id": tool_use_id, "name": name, "input": tool_input})
        self.message(*blocks)
        text, is_error = run()
        self.emit(
            {
                "type": "user",
                "message": {
                    "role": "user",
                    "content": [
                        {
                            "tool_use_id": tool_use_id,
                            "type": "tool_result",
                            "content": text,
                            "is_error": is_error,
                        }
                    ],
                },
                "parent_tool_use_id": None,
            }
        )

    def usage(self, input_tokens: int, output_tokens: int) -> dict[str, Any]:
        return {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }

    def result(self, text: str, *, is_error: bool = False, status: int | None = None) -> None:
        duration_ms = int((time.monotonic() - self.started) * 1000)
        # Priced like the real CLI: from the token counts (here $3 / $15 per million).
        cost = (self.input_tokens * 3 + self.output_tokens * 15) / 1_000_000
        self.emit(
            {
                "type": "result",
                "subtype": "success",
                "is_error": is_error,
                "api_error_status": status,
                "duration_ms": duration_ms,
                "duration_api_ms": duration_ms,
                "num_turns": self.turns,
                "result": text,
                "session_id": self.session_id,
                "total_cost_usd": cost,
                "usage": self.usage(self.input_tokens, self.output_tokens),
                "modelUsage": {},
                "permission_denials": [],
            }
        )

    def status(self, text: str, extra: dict[str, Any] | None = None) -> None:
        self.message({"type": "text", "text": f"STATUS: {text}"}, extra=extra)


def first_line(prompt: str, limit: int = 60) -> str:
    line = next((ln.strip() for ln in prompt.splitlines() if ln.strip()), "work")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def write_file(path: str, content: str) -> tuple[str, bool]:
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
    except OSError as exc:
        return f"Error writing file: {exc}", True
    return f"File created successfully at: {path}", False


def run_commands(*argvs: list[str]) -> tuple[str, bool]:
    """Run argvs in turn as the Bash tool would, stopping at the first that fails."""
    output = []
    for argv in argvs:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
        output.append(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            return f"Error: exit code {proc.returncode}\n" + "".join(output).strip(), True
    return "".join(output).strip(), False


def commit(message: str) -> tuple[str, bool]:
    return run_commands(["git", "add", "-A"], ["git", *GIT_IDENTITY, "commit", "-m", message])


def fresh(path: str, content: str) -> str:
    """Return content, or the file plus an `again <n>` line when it already holds content."""
    try:
        with open(path, encoding="utf-8") as f:
            old = f.read()
    except OSError:
        return content
    if not old.startswith(content):
        return content
    again = old[len(content) :].count("\n") + 1
    return old + f"again {again}\n"


def shell_quote(text: str) -> str:
    """Quote as a model writes it: double quotes, with the shell's specials escaped."""
    for special in ("\\", '"', "$", "`"):
        text = text.replace(special, "\\" + special)
    return f'"{text}"'


def env_report() -> str:
    names = [n.strip() for n in os.environ.get("FAKE_CLAUDE_REPORT_ENV", "").split(",")]
    report = {}
    for name in filter(None, names):
        value = os.environ.get(name)
        digest = None if value is None else hashlib.sha256(value.encode()).hexdigest()
        report[name] = {"set": value is not None, "sha256": digest}
    return json.dumps(report, indent=2, sort_keys=True) + "\n"


def work(
    session: Session, *, content: str | None = None, delay: float = 0.0, commits: bool = True
) -> None:
    """Run the `ok` flow: report, write a file, commit it, report, and finish."""
    title = first_line(session.prompt)
    name = os.environ.get("FAKE_CLAUDE_FILE", "fake_claude_output.txt")
    arg = session.arg
    if arg is not None and "=" in arg:
        name, arg = arg.split("=", 1)  # ARG "NAME=TEXT": the file's name, in the worktree
        name = os.path.basename(name) or "fake_claude_output.txt"
    path = os.path.join(os.getcwd(), name)
    if content is None and arg is not None:
        content = arg + "\n"
    if content is None:
        content = f"fake claude was here\nprompt: {title}\n"
    content = fresh(path, content)
    session.tool(
        "Write",
        {"file_path": path, "content": content},
        lambda: write_file(path, content),
        say="STATUS: reading the issue",
    )
    if not commits:
        session.status("done")
        session.result(f"Wrote {os.path.basename(path)}; all done.")
        return
    message = f"coord: {title}"
    command = f"git add -A && git commit -m {shell_quote(message)}"
    session.tool(
        "Bash",
        {"command": command, "description": "Commit the change"},
        lambda: commit(message),
    )
    session.status("done")
    if delay:
        time.sleep(delay)
    session.result(f"Wrote {os.path.basename(path)} and committed it.")


def sleep_forever() -> int:
    while True:
        time.sleep(3600)


def ok(session: Session) -> int:
    work(session)
    return 0


def events(session: Session) -> int:
    count = int(os.environ.get("FAKE_CLAUDE_EVENTS", "100"))
    rate = float(os.environ.get("FAKE_CLAUDE_RATE", "50"))
    start = time.monotonic()
    for seq in range(1, count + 1):
        # Sleep to an absolute schedule so the rate holds however long each write takes.
        time.sleep(max(0.0, start + (seq - 1) / rate - time.monotonic()))
        session.status(f"tick {seq}", extra={"ts": time.time(), "seq": seq})
    # Some work to show for it (unannounced): a run that commits nothing is not done.
    path = os.path.join(os.getcwd(), "fake_claude_events.txt")
    write_file(path, fresh(path, f"emitted {count} events\n"))
    commit(f"coord: emitted {count} events")
    session.result(f"Emitted {count} events.")
    return 0


def empty(session: Session) -> int:
    """Say it is done without changing anything (`done_empty`)."""
    session.status("looked at it")
    session.result("Everything the issue asks for is done.")
    return 0


def dirty(session: Session) -> int:
    """Write the file as `ok` does, never commit it, and say it is done (`uncommitted`)."""
    work(session, commits=False)
    return 0


def stall(session: Session) -> int:
    session.status("about to stall")
    return sleep_forever()


def linger(session: Session) -> int:
    work(session)
    return sleep_forever()


def fail(session: Session) -> int:
    sys.stderr.write("fake claude: simulated crash (FAKE_CLAUDE_SCENARIO=fail)\n")
    return 3


def error_result(session: Session) -> int:
    retries = int(os.environ.get("CLAUDE_CODE_MAX_RETRIES", "3"))
    status = int(os.environ.get("FAKE_CLAUDE_ERROR_STATUS", "529"))
    delay = float(os.environ.get("FAKE_CLAUDE_RETRY_DELAY_MS", "500"))
    for attempt in range(1, retries + 1):
        session.emit(
            {
                "type": "system",
                "subtype": "api_retry",
                "attempt": attempt,
                "max_retries": retries,
                "retry_delay_ms": delay * 2 ** (attempt - 1),
                "error_status": status,
                "error": "overloaded" if status == 529 else "rate_limit",
            }
        )
    session.turns = 1
    session.result(f"API Error: Repeated {status} errors", is_error=True, status=status)
    return 1


def slow(session: Session) -> int:
    work(session, delay=float(os.environ.get("FAKE_CLAUDE_DELAY", "2")))
    return 0


def env(session: Session) -> int:
    work(session, content=env_report())
    return 0


def sees(session: Session) -> int:
    """Read the file ARG names (in the worktree: what a workspace's setup made) and commit
    what it says, with the worktree's ports, in fake_claude_output.txt."""
    name = session.arg or ".coord-setup-marker"
    try:
        with open(os.path.join(os.getcwd(), name), encoding="utf-8") as f:
            said = f.read().strip()
    except OSError as exc:
        said = f"nothing ({exc.strerror})"
    ports = os.environ.get("COORD_PORTS", "none")
    work(session, content=f"saw {name}: {said}\nports: {ports}\n")
    return 0


def serve(session: Session) -> int:
    """Listen on $COORD_PORT for FAKE_CLAUDE_DELAY seconds (a dev server), then do the work:
    a port another live worktree holds fails the run."""
    import socket

    port = int(os.environ["COORD_PORT"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        session.status(f"serving on {port}")
        time.sleep(float(os.environ.get("FAKE_CLAUDE_DELAY", "2")))
    work(session, content=f"served on {port}\n")
    return 0


def review(session: Session, text: str) -> int:
    """Read the branch's history (for real), change nothing, and give text as the result."""
    session.tool(
        "Bash",
        {"command": "git log --oneline -3", "description": "Show the latest commits"},
        lambda: run_commands(["git", "log", "--oneline", "-3"]),
        say="STATUS: reviewing the change",
    )
    session.result(text)
    return 0


def approve(session: Session) -> int:
    return review(session, APPROVE)


def request_changes(session: Session) -> int:
    return review(session, REQUEST_CHANGES)


def no_verdict(session: Session) -> int:
    return review(session, NO_VERDICT)


def stuck(session: Session) -> int:
    session.status("reading")
    session.message({"type": "text", "text": STUCK})
    session.result(STUCK)
    return 0


SCENARIOS = {
    "ok": ok,
    "empty": empty,
    "dirty": dirty,
    "events": events,
    "stall": stall,
    "linger": linger,
    "fail": fail,
    "error_result": error_result,
    "slow": slow,
    "env": env,
    "sees": sees,
    "serve": serve,
    "approve": approve,
    "request_changes": request_changes,
    "no_verdict": no_verdict,
    "stuck": stuck,
}


def read_stdin(wait: float = 3.0) -> str | None:
    """Return all of stdin, or None when it is a terminal or stays silent for `wait` seconds."""
    try:
        if os.isatty(0):
            return None
        # The real CLI gives up on a silent stdin after ~3 s rather than hang on it.
        ready, _, _ = select.select([0], [], [], wait)
    except (OSError, ValueError):  # no stdin at all
        return None
    if not ready:
        return None
    return sys.stdin.buffer.read().decode("utf-8", "replace")


def log_line(variable: str, record: object) -> None:
    path = os.environ.get(variable)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def pick_scenario(prompt: str, *, resumed: bool) -> tuple[str, str | None]:
    """Return the scenario and its ARG: the prompt's last marker, else the environment's."""
    markers = list(MARKER.finditer(prompt))
    if markers:
        return markers[-1].group(1), markers[-1].group(2)
    variable = "FAKE_CLAUDE_RESUME_SCENARIO" if resumed else "FAKE_CLAUDE_SCENARIO"
    return os.environ.get(variable, "ok"), None


def main(argv: list[str]) -> int:
    log_line("FAKE_CLAUDE_ARGV_LOG", [sys.argv[0], *argv])
    opts = parse_args(argv)
    source = "argv"
    if opts["prompt"] is None:
        opts["prompt"], source = read_stdin(), "stdin"
    # The same refusals as the real CLI, so a wrong command line fails here too.
    if not opts["prompt"]:
        sys.stderr.write(
            "Error: Input must be provided either through stdin or as a prompt argument "
            "when using --print\n"
        )
        return 1
    if opts.get("output-format") == "stream-json" and not opts["verbose"]:
        sys.stderr.write(
            "Error: When using --print, --output-format=stream-json requires --verbose\n"
        )
        return 1
    log_line("FAKE_CLAUDE_PROMPT_LOG", {"prompt": opts["prompt"], "source": source,
                                         "pid": os.getpid()})  # fmt: skip
    scenario, arg = pick_scenario(opts["prompt"], resumed=bool(opts.get("resume")))
    if scenario not in SCENARIOS:
        sys.stderr.write(
            f"fake claude: unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}\n"
        )
        return 2
    session = Session(opts, arg)
    session.init()
    return SCENARIOS[scenario](session)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
