"""The scripted model server, alone over urllib and driving the real Claude Code CLI."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from subprocess import PIPE
from typing import Any

import pytest

from coordlib.testing import (
    Fault,
    ModelServer,
    Scenario,
    Turn,
    claude_env,
    find_claude,
    install_claude,
    make_git_repo,
    text,
    tool,
)
from coordlib.testing.model_server import load_server_file

ServerFactory = Callable[..., ModelServer]

SERVER_COMMAND = [sys.executable, "-m", "coordlib.testing.model_server", "--port", "0"]
CLAUDE_FLAGS = ["--output-format", "stream-json", "--verbose", "--model", "claude-sonnet-4-5"]
CLAUDE_FLAGS += ["--allowedTools", "Read,Edit,Write,Bash"]
TOOLS = [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}}]


def request_body(*roles: str, prompt: str = "go", stream: bool = True, tools: bool = True) -> Any:
    """A Messages API request whose conversation has these roles after the first user prompt."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    for role in roles:
        messages.append({"role": role, "content": [{"type": "text", "text": f"a {role} turn"}]})
    body: dict[str, Any] = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": messages}
    if stream:
        body["stream"] = True
    if tools:
        body["tools"] = TOOLS
    return body


def call(
    server: ModelServer,
    body: Any = None,
    *,
    path: str = "/v1/messages?beta=true",
    method: str = "POST",
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """Send one request; return status, headers and the whole body, errors included."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        server.url + path,
        data=data,
        method=method,
        headers={"content-type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def parse_sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Split an SSE body into (event, data) pairs, checking each frame's shape."""
    events = []
    for frame in raw.decode().split("\n\n"):
        if not frame:
            continue
        lines = frame.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: ")
        name, data = lines[0][7:], json.loads(lines[1][6:])
        assert data["type"] == name
        events.append((name, data))
    return events


def assemble(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Rebuild the message from its stream, as a client does."""
    message: dict[str, Any] = {}
    partial: dict[int, str] = {}
    for name, data in events:
        if name == "message_start":
            message = data["message"]
        elif name == "content_block_start":
            message["content"].append(dict(data["content_block"]))
        elif name == "content_block_delta":
            block, delta = message["content"][data["index"]], data["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            else:
                partial[data["index"]] = partial.get(data["index"], "") + delta["partial_json"]
        elif name == "content_block_stop" and data["index"] in partial:
            message["content"][data["index"]]["input"] = json.loads(partial[data["index"]])
        elif name == "message_delta":
            message["stop_reason"] = data["delta"]["stop_reason"]
            message["usage"]["output_tokens"] = data["usage"]["output_tokens"]
    return message


WRITE_TURN = Turn([text("STATUS: writing"), tool("Write", file_path="x.txt", content="hi\n")])
SCENARIO = Scenario([WRITE_TURN, Turn([text("second")]), Turn([text("third")])])


# --- the server over urllib -------------------------------------------------------------------


def test_stream_is_anthropic_sse(model_server: ServerFactory) -> None:
    server = model_server(SCENARIO)
    status, headers, raw = call(server, request_body())
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    events = parse_sse(raw)
    names = [n for n, _ in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 2
    message = assemble(events)
    assert message["content"][0] == {"type": "text", "text": "STATUS: writing"}
    use = message["content"][1]
    assert use["type"] == "tool_use" and use["id"].startswith("toolu_")
    assert (use["name"], use["input"]) == ("Write", {"file_path": "x.txt", "content": "hi\n"})
    assert message["stop_reason"] == "tool_use"
    assert message["model"] == "claude-sonnet-4-5"
    assert message["usage"]["input_tokens"] > 0 and message["usage"]["output_tokens"] > 0


def test_long_text_streams_in_several_deltas(model_server: ServerFactory) -> None:
    long = "word " * 50
    server = model_server(Scenario([Turn([text(long)])]))
    events = parse_sse(call(server, request_body())[2])
    assert sum(1 for n, _ in events if n == "content_block_delta") > 1
    message = assemble(events)
    assert message["content"] == [{"type": "text", "text": long}]
    assert message["stop_reason"] == "end_turn"


def test_json_reply_without_stream(model_server: ServerFactory) -> None:
    server = model_server(SCENARIO)
    status, headers, raw = call(server, request_body(stream=False))
    assert status == 200 and headers["content-type"] == "application/json"
    message = json.loads(raw)
    assert message["type"] == "message" and message["role"] == "assistant"
    assert [b["type"] for b in message["content"]] == ["text", "tool_use"]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["input_tokens"] > 0


def test_turn_is_chosen_by_counting_assistant_messages(model_server: ServerFactory) -> None:
    server = model_server(SCENARIO)

    def reply(*roles: str) -> str:
        message = json.loads(call(server, request_body(*roles, stream=False))[2])
        return str(message["content"][0]["text"])

    assert reply("assistant", "user") == "second"
    assert reply("assistant", "user") == "second"  # a retry gets the same turn
    assert reply("assistant", "user", "assistant", "user") == "third"
    assert reply() == "STATUS: writing"
    assert reply(*["assistant", "user"] * 3) == "done"  # past the last turn
    assert [r.turn for r in server.requests] == [1, 1, 2, 0, 3]
    assert [r.outcome for r in server.requests] == ["message"] * 4 + ["final"]


def test_the_clis_own_filler_message_is_not_a_turn(model_server: ServerFactory) -> None:
    # Resuming after a failed request, the CLI sends an assistant "No response requested.".
    server = model_server(SCENARIO)
    body = request_body()
    body["messages"] += [
        {"role": "assistant", "content": [{"type": "text", "text": "No response requested."}]},
        {"role": "user", "content": "continue"},
    ]
    assert server.requests == []
    message = assemble(parse_sse(call(server, body)[2]))
    assert message["content"][0]["text"] == "STATUS: writing"


def test_side_requests_without_tools_use_no_turn(model_server: ServerFactory) -> None:
    server = model_server(SCENARIO, side_text="A title")
    side = json.loads(call(server, request_body(tools=False, stream=False))[2])
    assert side["content"] == [{"type": "text", "text": "A title"}]
    assert side["stop_reason"] == "end_turn"
    main = json.loads(call(server, request_body(stream=False))[2])
    assert main["content"][0]["text"] == "STATUS: writing"
    assert [(r.outcome, r.turn, r.has_tools) for r in server.requests] == [
        ("side", None, False),
        ("message", 0, True),
    ]


def test_named_scenarios_are_picked_by_marker(model_server: ServerFactory) -> None:
    other = Scenario([Turn([text("from other")])])
    server = model_server({"default": SCENARIO, "other": other})

    def first_text(prompt: str) -> str:
        status, _, raw = call(server, request_body(prompt=prompt, stream=False))
        assert status == 200
        return str(json.loads(raw)["content"][0]["text"])

    assert first_text("[scenario:other] please") == "from other"
    assert first_text("plain prompt") == "STATUS: writing"
    # The CLI puts its context before the prompt: the last marker wins.
    assert first_text("CLAUDE.md says [scenario:default]\nprompt [scenario:other]") == "from other"
    status, _, raw = call(server, request_body(prompt="[scenario:nope]"))
    assert status == 400
    assert json.loads(raw)["error"]["type"] == "invalid_request_error"
    assert "nope" in json.loads(raw)["error"]["message"]
    assert [r.scenario for r in server.requests] == ["other", "default", "other", "nope"]


def test_no_scenario_answers_done(model_server: ServerFactory) -> None:
    server = model_server()
    message = assemble(parse_sse(call(server, request_body())[2]))
    assert message["content"] == [{"type": "text", "text": "done"}]


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (429, "rate_limit_error"),
        (529, "overloaded_error"),
        (500, "api_error"),
        (401, "authentication_error"),
        (400, "invalid_request_error"),
    ],
)
def test_error_faults_use_anthropics_shape(
    model_server: ServerFactory, status: int, error_type: str
) -> None:
    server = model_server(SCENARIO, faults=[Fault.error(status, times=2)])
    for _ in range(2):
        got, headers, raw = call(server, request_body())
        assert got == status
        body = json.loads(raw)
        assert body["type"] == "error" and body["error"]["type"] == error_type
        assert body["error"]["message"]
        assert "retry-after" not in headers
    assert call(server, request_body())[0] == 200
    assert [r.outcome for r in server.requests] == [f"error {status}"] * 2 + ["message"]


def test_rate_limit_sends_retry_after(model_server: ServerFactory) -> None:
    server = model_server(SCENARIO, faults=[Fault.error(429, retry_after=2)])
    for _ in range(3):  # times=None: every request
        status, headers, _ = call(server, request_body())
        assert status == 429
        assert headers["retry-after"] == "2" and headers["retry-after-ms"] == "2000"


def test_fault_on_a_turn_and_faults_changed_at_run_time(model_server: ServerFactory) -> None:
    scenario = Scenario([Turn([text("one")]), Turn([text("two")], fault=Fault.error(529, times=1))])
    server = model_server(scenario)
    assert call(server, request_body())[0] == 200
    assert call(server, request_body("assistant", "user"))[0] == 529
    assert call(server, request_body("assistant", "user"))[0] == 200
    server.set_faults([Fault.error(500)])
    assert call(server, request_body())[0] == 500
    server.set_faults([])
    assert call(server, request_body())[0] == 200


def test_cut_stream_ends_the_body_early(model_server: ServerFactory) -> None:
    server = model_server(SCENARIO, faults=[Fault.cut(after_events=3)])
    req = urllib.request.Request(
        server.url + "/v1/messages", data=json.dumps(request_body()).encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        with pytest.raises(http.client.IncompleteRead) as info:
            resp.read()
    assert [n for n, _ in parse_sse(info.value.partial)] == [
        "message_start",
        "ping",
        "content_block_start",
    ]
    # times=1 by default: the retry is answered in full.
    assert parse_sse(call(server, request_body())[2])[-1][0] == "message_stop"
    # A cut of an unstreamed request drops the connection with no answer.
    server.set_faults([Fault.cut()])
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        call(server, request_body(stream=False))


def test_turn_delay(model_server: ServerFactory) -> None:
    server = model_server(Scenario([Turn([text("slow")], delay=0.4)]))
    started = time.monotonic()
    assert call(server, request_body())[0] == 200
    assert time.monotonic() - started >= 0.4


def test_stop_does_not_wait_for_a_hanging_request() -> None:
    server = ModelServer(SCENARIO, faults=[Fault.hang()]).start()
    failures: list[BaseException] = []

    def client() -> None:
        try:
            call(server, request_body(), timeout=30)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    server.wait_for(lambda rs: any(r.outcome == "hang" for r in rs), timeout=5)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert failures  # the client saw the connection drop rather than an answer


def test_restarts_on_the_same_port(model_server: ServerFactory) -> None:
    server = model_server(SCENARIO)
    url = server.url
    server.stop()
    with pytest.raises(urllib.error.URLError):
        call(server, request_body())
    server.start()
    assert server.url == url
    assert call(server, request_body())[0] == 200
    assert server.count() == 1


def test_hang_until_the_client_gives_up(model_server: ServerFactory) -> None:
    server = model_server(SCENARIO, faults=[Fault.hang(times=1)])
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        call(server, request_body(), timeout=0.5)
    assert call(server, request_body())[0] == 200


def test_records_requests_with_credentials_redacted(model_server: ServerFactory) -> None:
    server = model_server(SCENARIO)
    call(
        server,
        request_body(),
        headers={
            "x-api-key": "sk-test-secret",
            "authorization": "Bearer secret",
            "anthropic-version": "2023-06-01",
        },
    )
    (record,) = server.requests
    assert (record.method, record.path, record.query) == ("POST", "/v1/messages", "beta=true")
    assert record.headers["x-api-key"].startswith("[redacted sha256:")
    assert record.headers["authorization"].startswith("[redacted sha256:")
    assert record.headers["anthropic-version"] == "2023-06-01"
    assert "secret" not in json.dumps(dict(record.headers))
    assert record.body["messages"][0]["content"] == "go"
    assert record.stream and record.has_tools
    assert (record.scenario, record.turn, record.outcome) == ("default", 0, "message")
    assert server.count() == 1


def test_other_routes(model_server: ServerFactory) -> None:
    server = model_server(SCENARIO)
    assert call(server, path="/", method="HEAD")[0] == 200
    assert call(server, path="/", method="GET")[0] == 200
    status, _, raw = call(server, request_body(), path="/v1/messages/count_tokens?beta=true")
    assert status == 200 and json.loads(raw)["input_tokens"] > 0
    status, _, raw = call(server, {"x": 1}, path="/v1/complete")
    assert status == 404
    assert json.loads(raw)["error"]["type"] == "not_found_error"
    assert [(r.method, r.path, r.outcome) for r in server.requests] == [
        ("HEAD", "/", "ok"),
        ("GET", "/", "ok"),
        ("POST", "/v1/messages/count_tokens", "count_tokens"),
        ("POST", "/v1/complete", "not found"),
    ]
    assert server.count() == 0  # count_tokens is not a message


def test_scenario_json_round_trip(tmp_path: Path) -> None:
    scenario = Scenario(
        [
            WRITE_TURN,
            Turn([text("x")], delay=0.5, fault=Fault.error(429, retry_after=1, times=2)),
            Turn([tool("Bash", command="true")], fault=Fault.cut(3)),
            Turn([text("y")], fault=Fault.hang(times=1)),
        ]
    )
    assert Scenario.from_json(scenario.to_json()) == scenario
    path = tmp_path / "server.json"
    path.write_text(
        json.dumps(
            {
                "scenarios": {"default": scenario.to_dict(), "b": {"turns": [[]]}},
                "faults": [{"kind": "error", "status": 529, "times": 1}],
            }
        )
    )
    scenarios, faults = load_server_file(path)
    assert scenarios == {"default": scenario, "b": Scenario([Turn([])])}
    assert faults == [Fault.error(529, times=1)]


def test_runs_as_a_process(tmp_path: Path) -> None:
    scenario_file = tmp_path / "scenario.json"
    scenario_file.write_text(Scenario([Turn([text("from a process")])]).to_json())
    log = tmp_path / "requests.jsonl"
    command = [*SERVER_COMMAND, "--scenario", str(scenario_file), "--log", str(log)]
    with subprocess.Popen(command, stdout=PIPE, stderr=PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            req = urllib.request.Request(
                url + "/v1/messages",
                data=json.dumps(request_body(stream=False)).encode(),
                method="POST",
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert json.loads(resp.read())["content"][0]["text"] == "from a process"
        finally:
            proc.terminate()
            _, stderr = proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert stderr == ""  # no warnings either
    (line,) = log.read_text().splitlines()
    assert json.loads(line)["outcome"] == "message"


def test_claude_env_is_isolated_and_offline(tmp_path: Path) -> None:
    base = {
        "PATH": "/usr/bin",
        "ANTHROPIC_AUTH_TOKEN": "real",
        "ANTHROPIC_MODEL": "x",
        "CLAUDECODE": "1",
        "CLAUDE_CODE_USE_BEDROCK": "1",
        "IS_SANDBOX": "1",
        "HTTPS_PROXY": "http://proxy:3128",
    }
    env = claude_env("http://127.0.0.1:1", tmp_path / "home", max_retries=0, base=base)
    assert env["PATH"] == "/usr/bin"
    for name in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_MODEL", "CLAUDECODE", "IS_SANDBOX"):
        assert name not in env
    assert "CLAUDE_CODE_USE_BEDROCK" not in env and "HTTPS_PROXY" not in env
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:1"
    assert env["ANTHROPIC_API_KEY"].startswith("sk-test-")
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "0"
    for name in ("HOME", "CLAUDE_CONFIG_DIR"):
        assert Path(env[name]).is_dir() and Path(env[name]).is_relative_to(tmp_path / "home")
    # The temp dir: in the home, unless the home is too deep for the sandbox's sockets.
    tmp = Path(env["TMPDIR"])
    assert tmp.is_dir() and env["CLAUDE_CODE_TMPDIR"] == env["TMPDIR"]
    assert len(str(tmp)) <= 48 and (tmp.is_relative_to(tmp_path / "home") or
                                    len(str(tmp_path / "home" / "tmp")) > 48)  # fmt: skip
    short = Path(tempfile.mkdtemp(prefix="ch-"))
    try:
        assert claude_env("http://127.0.0.1:1", short, base=base)["TMPDIR"] == str(short / "tmp")
    finally:
        shutil.rmtree(short)


# --- installing the CLI ------------------------------------------------------------------------

FAKE_NPM = """#!/bin/sh
# Stand-in for npm: record the call, then lay out what `npm install --prefix P` leaves.
echo "$*" >> "$NPM_CALLS"
while [ "$1" != "--prefix" ]; do shift; done
mkdir -p "$2/node_modules/.bin"
sleep 0.3
printf '#!/bin/sh\\necho "%s (Claude Code)"\\n' "$FAKE_VERSION" > "$2/node_modules/.bin/claude"
chmod +x "$2/node_modules/.bin/claude"
"""


def test_install_claude_runs_npm_once_across_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text(FAKE_NPM)
    (bin_dir / "npm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("NPM_CALLS", str(tmp_path / "calls"))
    monkeypatch.setenv("FAKE_VERSION", "9.9.9")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert find_claude("9.9.9") is None
    command = [sys.executable, "-m", "coordlib.testing.claude_cli", "install", "--version", "9.9.9"]
    procs = [subprocess.Popen(command, stdout=PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=30)[0].strip() for p in procs]
    expected = tmp_path / "cache/coordlib/claude-code/9.9.9/node_modules/.bin/claude"
    assert outputs == [str(expected)] * 2
    assert all(p.returncode == 0 for p in procs)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == 1
    assert "install --prefix" in calls[0] and "@anthropic-ai/claude-code@9.9.9" in calls[0]
    assert install_claude("9.9.9") == expected == find_claude("9.9.9")
    assert len((tmp_path / "calls").read_text().splitlines()) == 1


def test_install_claude_without_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="npm not found"):
        install_claude("9.9.9", tmp_path / "cache")


# --- the real CLI -----------------------------------------------------------------------------


@dataclass
class ClaudeRun:
    """One finished ``claude -p`` run: exit code, stream-json events, wall time."""

    returncode: int
    events: list[dict[str, Any]]
    stderr: str
    wall: float

    @property
    def result(self) -> dict[str, Any]:
        (result,) = [e for e in self.events if e["type"] == "result"]
        return result

    @property
    def retries(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("subtype") == "api_retry"]


def run_claude(claude: Path, cwd: Path, env: dict[str, str], prompt: str, *args: str) -> ClaudeRun:
    """Run the real CLI as coordlib's workers do, with stdin closed."""
    started = time.monotonic()
    out = subprocess.run(
        [str(claude), "-p", prompt, *CLAUDE_FLAGS, *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return ClaudeRun(out.returncode, events, out.stderr, time.monotonic() - started)


@dataclass
class Workspace:
    """A git repo to run the CLI in and a home for its state."""

    repo: Path
    home: Path

    def env(self, url: str, max_retries: int = 1) -> dict[str, str]:
        return claude_env(url, self.home, max_retries=max_retries)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(make_git_repo(tmp_path / "repo").path, tmp_path / "home")


HELLO = Scenario(
    [
        Turn([text("STATUS: hi"), tool("Bash", command="echo hi", description="say hi")]),
        Turn([text("All done.")]),
    ]
)


def test_cli_writes_a_file_and_commits_it(
    claude_cli: Path, model_server: ServerFactory, ws: Workspace
) -> None:
    scenario = Scenario(
        [
            Turn(
                [
                    text("STATUS: writing hello.txt"),
                    tool("Write", file_path=str(ws.repo / "hello.txt"), content="hello\n"),
                ]
            ),
            Turn(
                [
                    tool(
                        "Bash",
                        command="git add -A && git commit -q -m 'Add hello.txt'",
                        description="Commit",
                    )
                ]
            ),
            Turn([text("Committed hello.txt.")]),
        ]
    )
    server = model_server(scenario)
    run = run_claude(claude_cli, ws.repo, ws.env(server.url), "Add hello.txt")
    assert run.returncode == 0, run.stderr
    init = run.events[0]
    assert (init["type"], init["subtype"]) == ("system", "init")
    assert init["claude_code_version"] == "2.1.197"
    result = run.result
    assert result["subtype"] == "success" and result["is_error"] is False
    assert result["result"] == "Committed hello.txt."
    assert result["num_turns"] == 3
    assert result["total_cost_usd"] > 0
    assert result["session_id"] == init["session_id"]
    assert (ws.repo / "hello.txt").read_text() == "hello\n"
    log = subprocess.run(
        ["git", "log", "--format=%s", "-2"], cwd=ws.repo, capture_output=True, text=True
    ).stdout.split("\n")
    assert log[:2] == ["Add hello.txt", "initial commit"]
    assert server.count() == 3
    assert [r.turn for r in server.requests if r.path == "/v1/messages"] == [0, 1, 2]
    assert all(r.query == "beta=true" and r.stream for r in server.requests if r.turn is not None)
    assert all(
        r.headers.get("x-api-key", "").startswith("[redacted") for r in server.requests if r.turn
    )


def test_cli_resume_continues_with_the_next_turn(
    claude_cli: Path, model_server: ServerFactory, ws: Workspace
) -> None:
    scenario = Scenario(
        [
            Turn([text("first part")]),
            Turn([tool("Write", file_path=str(ws.repo / "second.txt"), content="2\n")]),
            Turn([text("second part")]),
        ]
    )
    server = model_server(scenario)
    env = ws.env(server.url)
    first = run_claude(claude_cli, ws.repo, env, "start")
    assert first.result["result"] == "first part"
    session = first.result["session_id"]
    second = run_claude(claude_cli, ws.repo, env, "continue", "--resume", session)
    assert second.returncode == 0, second.stderr
    assert second.result["result"] == "second part"
    assert second.result["session_id"] == session
    assert (ws.repo / "second.txt").read_text() == "2\n"
    assert [r.turn for r in server.requests if r.turn is not None] == [0, 1, 2]
    transcript = ws.home / ".claude" / "projects"
    assert list(transcript.glob(f"*/{session}.jsonl"))


def test_cli_resume_after_a_failed_request_replays_the_turn(
    claude_cli: Path, model_server: ServerFactory, ws: Workspace
) -> None:
    server = model_server(HELLO, faults=[Fault.error(529)])
    env = ws.env(server.url, max_retries=0)
    failed = run_claude(claude_cli, ws.repo, env, "start")
    assert failed.result["is_error"] is True
    server.set_faults([])
    resumed = run_claude(
        claude_cli, ws.repo, env, "continue", "--resume", failed.result["session_id"]
    )
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.result["result"] == "All done."
    assert [r.turn for r in server.requests if r.outcome == "message"] == [0, 1]


@dataclass(frozen=True)
class Failure:
    """How a failure is set up and what the real CLI 2.1.197 reports for it."""

    faults: tuple[Fault, ...] = ()
    server_down: bool = False
    args: tuple[str, ...] = ()
    returncode: int = 1
    subtype: str = "success"
    is_error: bool = True
    api_error_status: int | None = None  # absent from an error_max_turns result
    error: str | None = None  # "error" of the "<synthetic>" assistant event the CLI emits
    retry_statuses: tuple[int | None, ...] = ()  # error_status of each api_retry event
    retry_delay_ms: float | None = None  # when the server dictates it
    requests: int = 0  # POST /v1/messages the server saw


FAILURES = {
    "529 until retries run out": Failure(
        (Fault.error(529),),
        api_error_status=529,
        error="server_error",
        retry_statuses=(529,),
        requests=2,
    ),
    "429 with retry-after": Failure(
        (Fault.error(429, retry_after=1),),
        api_error_status=429,
        error="rate_limit",
        retry_statuses=(429,),
        retry_delay_ms=1000,
        requests=2,
    ),
    "429 once, then served": Failure(
        (Fault.error(429, retry_after=1, times=1),),
        returncode=0,
        is_error=False,
        retry_statuses=(429,),
        retry_delay_ms=1000,
        requests=3,
    ),
    "401": Failure(
        (Fault.error(401),),
        api_error_status=401,
        error="authentication_failed",
        retry_statuses=(401,),
        requests=2,
    ),
    "500": Failure(
        (Fault.error(500),),
        api_error_status=500,
        error="server_error",
        retry_statuses=(500,),
        requests=2,
    ),
    "400 is not retried": Failure(
        (Fault.error(400),), api_error_status=400, error="unknown", requests=1
    ),
    "server down": Failure(server_down=True, error="server_error", retry_statuses=(None,)),
    "cut stream, retried unstreamed": Failure(
        (Fault.cut(after_events=3, times=1),), returncode=0, is_error=False, requests=3
    ),
    "max turns exceeded": Failure(args=("--max-turns", "1"), subtype="error_max_turns", requests=1),
}


@pytest.mark.parametrize("case", list(FAILURES.values()), ids=list(FAILURES))
def test_cli_failure_shapes(
    claude_cli: Path, model_server: ServerFactory, ws: Workspace, case: Failure
) -> None:
    server = model_server(HELLO, faults=list(case.faults))
    url = server.url
    if case.server_down:
        server.stop()
    run = run_claude(claude_cli, ws.repo, ws.env(url, max_retries=1), "hi", *case.args)
    result = run.result
    assert run.returncode == case.returncode, run.stderr
    assert result["subtype"] == case.subtype
    assert result["is_error"] is case.is_error
    assert result.get("api_error_status") == case.api_error_status
    synthetic = [e for e in run.events if e.get("message", {}).get("model") == "<synthetic>"]
    assert [e.get("error") for e in synthetic] == ([case.error] if case.error else [])
    assert tuple(e["error_status"] for e in run.retries) == case.retry_statuses
    for event in run.retries:
        assert event["attempt"] == 1 and event["max_retries"] == 1
        if case.retry_delay_ms is not None:
            assert event["retry_delay_ms"] == case.retry_delay_ms
    assert server.count() == case.requests
    if case.error:
        assert result["result"].startswith(("API Error", "Invalid API key"))
        assert result["result"] == synthetic[0]["message"]["content"][0]["text"]
    if not case.is_error:
        assert result["result"] == "All done." and result["total_cost_usd"] > 0
    if case.subtype == "error_max_turns":
        assert "api_error_status" not in result and "result" not in result
        assert result["errors"] == ["Reached maximum number of turns (1)"]
        assert result["terminal_reason"] == "max_turns"


def test_cli_honours_model_server_process(claude_cli: Path, ws: Workspace, tmp_path: Path) -> None:
    """The standalone server (as coordlib's demo starts it) drives the CLI too."""
    scenario_file = tmp_path / "scenario.json"
    scenario_file.write_text(HELLO.to_json())
    command = [*SERVER_COMMAND, "--scenario", str(scenario_file)]
    with subprocess.Popen(command, stdout=PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            run = run_claude(claude_cli, ws.repo, ws.env(url), "hi")
        finally:
            proc.terminate()
    assert run.returncode == 0, run.stderr
    assert run.result["result"] == "All done."


def test_the_readme_s_scenario_file_loads(tmp_path: Path) -> None:
    """The offline-fleet recipe's example, as the README gives it."""
    import re
    import textwrap

    from coordlib.testing.scenarios import load_server_file

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = [m.group(2) for m in re.finditer(r"( *)```json\n((?:\1.*\n)*?)\1```", readme)]
    example = next(b for b in blocks if '"scenarios"' in b)
    path = tmp_path / "fleet.json"
    path.write_text(textwrap.dedent(example))
    scenarios, faults = load_server_file(path)
    assert [len(scenarios[n].turns) for n in ("default", "slow")] == [3, 1] and faults == []
    assert scenarios["slow"].turns[0].delay == 30
