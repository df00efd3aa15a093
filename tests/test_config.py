"""Tests for reading coordinator.yml: the happy path, every kind of mistake, lookup, the cache."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from coordlib.config import (
    Config,
    HooksConfig,
    MachineConfig,
    ModelsConfig,
    ReviewsConfig,
    SmokeTestsConfig,
    find_config,
    is_secret_name,
    parse_duration,
    resolve_env,
)
from coordlib.config_load import load_config
from coordlib.config_yaml import parse_config
from coordlib.errors import ConfigError

FULL = """\
# everything, in the less common shapes: mapping-form repos and machines, string durations
repos:
  api:
    github: acme/api
    forge: github
    default_branch: trunk
    build_command: make
    test_command: make test
    url: git@github.com:acme/api.git
  web:
    depends_on: [api]
  docs: ~

machines:
  laptop:
    host: localhost
    max_workers: 1
  gpu-box:
    host: 10.0.0.7
    port: 2222
    user: me
    identity_file: /keys/id_ed25519
    known_hosts: /keys/known_hosts
    capabilities: [gpu, 4090]
    repos: [api, web]
    repo_paths: {api: /srv/api}
    workdir: /scratch/coord
    claude_command: npx claude --verbose
    env:
      ANTHROPIC_API_KEY: ${ANTHROPIC_API_KEY}
      GITHUB_TOKEN: $GH_TOKEN
      DEBUG: yes
      THREADS: 8
    max_workers: 6
    tmux_socket: coord-gpu

concurrency:
  max_workers: 12
  stagger_seconds: 2s
  backoff_base: 1.5
  max_retries: 5
  auto_reassign: true
  stale_threshold: 5

models:
  default: opus
  escalation: [sonnet, opus]
  labels: {hard: opus, chore: haiku, pinned: claude-opus-4-1}
  ids: {opus: claude-opus-4-1, fast: claude-haiku-4-5}

worker:
  stall_timeout: 5m
  max_runtime: 1h30m
  result_grace: 45s
  poll_interval: 0.5
  allowed_tools: [Read, Edit]
  extra_args: [--max-turns, 30]

board:
  path: state/board.json
  keep_finished: 50

github: {api_url: https://api.github.com}
reviews: {required_approvals: 2}
smoke_tests: {}
hooks: {on_merge: [notify]}
forge: {root: issues}
briefings: {dir: briefings}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "coordinator.yml"
    path.write_text(text)
    return path


def test_full_config_reads_every_section(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))

    assert config.path == tmp_path / "coordinator.yml"
    assert list(config.repos) == ["api", "web", "docs"]
    api = config.repo("api")
    assert (api.github, api.forge, api.default_branch) == ("acme/api", "github", "trunk")
    assert (api.build_command, api.test_command) == ("make", "make test")
    assert config.repo("web").depends_on == ("api",)
    assert config.repo("docs").default_branch == "main"

    assert list(config.machines) == ["laptop", "gpu-box"]
    laptop, gpu = config.machine("laptop"), config.machine("gpu-box")
    assert laptop.is_local and not gpu.is_local
    assert laptop.repo_path("api") == "~/src/api"
    assert (gpu.host, gpu.port, gpu.user) == ("10.0.0.7", 2222, "me")
    assert gpu.capabilities == ("gpu", "4090")
    assert gpu.repos == ("api", "web")
    assert gpu.repo_path("api") == "/srv/api"
    assert gpu.repo_path("web") == "~/src/web"
    assert gpu.workdir == "/scratch/coord"
    assert gpu.claude_argv() == ["npx", "claude", "--verbose"]
    assert dict(gpu.env) == {
        "ANTHROPIC_API_KEY": "${ANTHROPIC_API_KEY}",
        "GITHUB_TOKEN": "$GH_TOKEN",
        "DEBUG": "yes",  # as written, not YAML 1.1's True
        "THREADS": "8",
    }
    assert (gpu.max_workers, gpu.tmux_socket) == (6, "coord-gpu")

    c = config.concurrency
    assert (c.max_workers, c.stagger_seconds, c.backoff_base) == (12, 2.0, 1.5)
    assert (c.max_retries, c.auto_reassign, c.stale_threshold) == (5, True, 5)

    m = config.models
    assert (m.default, m.escalation) == ("opus", ("sonnet", "opus"))
    assert m.resolve("opus") == ("opus", "claude-opus-4-1")
    assert m.resolve("fast") == ("fast", "claude-haiku-4-5")
    assert m.resolve("sonnet") == ("sonnet", "claude-sonnet-4-5")
    assert dict(m.labels) == {"hard": "opus", "chore": "haiku", "pinned": "claude-opus-4-1"}

    w = config.worker
    assert (w.stall_timeout, w.max_runtime, w.result_grace, w.poll_interval) == (
        300.0,
        5400.0,
        45.0,
        0.5,
    )
    assert w.allowed_tools == "Read,Edit"
    assert w.extra_args == ("--max-turns", "30")

    assert config.board.path == tmp_path / "state" / "board.json"
    assert config.board.keep_finished == 50
    assert set(config.extra) == {"github", "reviews", "smoke_tests", "hooks", "forge", "briefings"}
    assert config.extra["hooks"] == {"on_merge": ["notify"]}


def test_to_dict_round_trips_through_yaml(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    data = config.to_dict()
    json.dumps(data)  # JSON-ready
    assert data["board"]["path"] == str(tmp_path / "state" / "board.json")

    data.pop("path")
    data.update(data.pop("extra"))
    again = parse_config(yaml.safe_dump(data, sort_keys=False), base_dir=tmp_path)
    assert again == dataclasses.replace(config, path=None)


def test_empty_file_gives_the_local_default(tmp_path: Path) -> None:
    for text in ("", "# nothing here\n# at all\n", "machines:\n"):
        config = parse_config(text, base_dir=tmp_path)
        assert list(config.machines) == ["local"]
        assert config.machine("local") == MachineConfig(name="local", host="localhost")
        assert config.repos == {}
        assert config.board.path == tmp_path / ".coord" / "board.json"
    assert Config().machine("local").is_local


def test_list_forms_anchors_and_bare_repo_names() -> None:
    config = parse_config(
        """
repos: [api, {name: web, default_branch: "no"}]
machines:
  - &base {name: a, host: a.example, max_workers: 3, env: {TZ: UTC}}
  - <<: *base
    name: b
    host: b.example
"""
    )
    assert list(config.repos) == ["api", "web"]
    assert config.repo("web").default_branch == "no"
    b = config.machine("b")
    assert (b.host, b.max_workers, dict(b.env)) == ("b.example", 3, {"TZ": "UTC"})
    assert config.machine("a").host == "a.example"
    assert not MachineConfig(name="x", host="127.0.0.1").is_local


def test_tilde_is_expanded_for_keys_but_not_for_the_remote_workdir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    machine = parse_config(
        "machines: [{name: m, host: h, identity_file: ~/.ssh/id, known_hosts: ~/kh,"
        " workdir: ~/.coord}]"
    ).machine("m")
    assert machine.identity_file == f"{tmp_path}/.ssh/id"
    assert machine.known_hosts == f"{tmp_path}/kh"
    assert machine.workdir == "~/.coord"


# Each case: file text, the line the error must point at, the key it must name, and other
# fragments the message must contain.
BAD = [
    pytest.param(
        "repos: []\nmachnes:\n  - {name: a, host: h}\n",
        2,
        "machnes",
        ["unknown key", "did you mean 'machines'"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        "machines:\n  - name: a\n    host: h\n    max_wrokers: 3\n",
        4,
        "machines[0].max_wrokers",
        ["did you mean 'max_workers'"],
        id="unknown-machine-key",
    ),
    pytest.param(
        "repos: [api, web]\nmachines:\n  - name: a\n    host: h\n    repos: [web, apii]\n",
        5,
        "machines[0].repos[1]",
        ["unknown repo 'apii'", "did you mean 'api'"],
        id="machine-unknown-repo",
    ),
    pytest.param(
        "repos: [api]\nmachines:\n  a:\n    host: h\n    repo_paths:\n      ap: /x\n",
        6,
        "machines.a.repo_paths.ap",
        ["unknown repo 'ap'", "did you mean 'api'"],
        id="repo-paths-unknown-repo",
    ),
    pytest.param(
        "machines:\n  - name: a\n    host: h1\n  - name: a\n    host: h2\n",
        4,
        "machines[1].name",
        ["listed twice", "first listed on line 2"],
        id="duplicate-machine",
    ),
    pytest.param(
        "machines:\n  a: {host: h1}\n  a: {host: h2}\n",
        3,
        "machines.a",
        ["given twice (also on line 2)"],
        id="duplicate-mapping-key",
    ),
    pytest.param(
        "repos:\n  - name: a\n    depends_on: [b]\n  - name: b\n    depends_on: [c]\n"
        "  - name: c\n    depends_on: [a]\n",
        7,
        "repos[2].depends_on[0]",
        ["dependency cycle: a -> b -> c -> a"],
        id="dependency-cycle",
    ),
    pytest.param(
        "repos:\n  - name: a\n    depends_on: [a]\n",
        3,
        "repos[0].depends_on[0]",
        ["dependency cycle: a -> a"],
        id="self-dependency",
    ),
    pytest.param(
        "repos:\n  - name: api\n  - name: web\n    depends_on: [apu]\n",
        4,
        "repos[1].depends_on[0]",
        ["unknown repo 'apu'", "did you mean 'api'"],
        id="unknown-depends-on",
    ),
    pytest.param(
        "worker:\n  poll_interval: 1\n  stall_timeout: 10 minutes\n",
        3,
        "worker.stall_timeout",
        ["expected a duration above zero", "'10 minutes'", "10m"],
        id="bad-duration",
    ),
    pytest.param(
        "worker:\n  max_runtime: 0\n",
        2,
        "worker.max_runtime",
        ["above zero", "got 0 (an integer)"],
        id="zero-duration",
    ),
    pytest.param(
        "machines:\n  - name: gpu\n    host: h\n    env:\n      TZ: UTC\n"
        "      ANTHROPIC_API_KEY: sk-ant-123\n",
        6,
        "machines[0].env.ANTHROPIC_API_KEY",
        [
            "secrets never live in coordinator.yml",
            "ANTHROPIC_API_KEY: ${ANTHROPIC_API_KEY}",
            "export ANTHROPIC_API_KEY=",
        ],
        id="literal-secret",
    ),
    pytest.param(
        "machines:\n  - name: gpu\n    host: h\n    env: {db_password: '${HOME}x'}\n",
        4,
        "machines[0].env.db_password",
        ["secrets never live"],
        id="embedded-secret",
    ),
    pytest.param(
        "machines:\n  - name: a\n    env:\n      1BAD: x\n    host: h\n",
        4,
        "machines[0].env.1BAD",
        ["not an environment variable name"],
        id="bad-env-name",
    ),
    pytest.param(
        "repos: [api]\nmachines:\n  - name: a\n    host: h\n   port: 22\n",
        5,
        None,
        ["YAML syntax error"],
        id="yaml-syntax",
    ),
    pytest.param(
        "machines:\n  - name: a\n    host: h\n    env: {A_KEY: ${A_KEY}}\n",
        4,
        None,
        ['{KEY: "${KEY}"}'],
        id="yaml-unquoted-reference-in-flow-mapping",
    ),
    pytest.param(
        'repos:\n  - name: "api\n', 3, None, ["YAML syntax error"], id="yaml-unclosed-quote"
    ),
    pytest.param(
        "machines:\n  - name: a\n    host: h\n    port: 70000\n",
        4,
        "machines[0].port",
        ["expected an integer from 1 to 65535", "got 70000"],
        id="port-out-of-range",
    ),
    pytest.param(
        "machines:\n  - name: a\n    host: h\n    port: abc\n",
        4,
        "machines[0].port",
        ["expected an integer from 1 to 65535", "got 'abc' (a string)"],
        id="port-not-int",
    ),
    pytest.param(
        "machines:\n  - name: a\n    host: h\n    max_workers: 0\n",
        4,
        "machines[0].max_workers",
        ["of at least 1", "got 0"],
        id="max-workers-zero",
    ),
    pytest.param(
        "# repos\nrepos: 5\n",
        2,
        "repos",
        ["expected a list of repos", "got 5 (an integer)"],
        id="repos-wrong-type",
    ),
    pytest.param(
        "machines:\n  - name: a\n    host: h\n    capabilities: gpu\n",
        4,
        "machines[0].capabilities",
        ["expected a list of capabilities", "write [gpu]"],
        id="capabilities-not-list",
    ),
    pytest.param(
        "concurrency:\n  auto_reassign: maybe\n",
        2,
        "concurrency.auto_reassign",
        ["expected true or false", "'maybe'"],
        id="bool-wrong-type",
    ),
    pytest.param(
        "models:\n  default: opsu\n",
        2,
        "models.default",
        ["unknown model tier 'opsu'", "did you mean 'opus'"],
        id="unknown-default-tier",
    ),
    pytest.param(
        "models:\n  escalation:\n    - haiku\n    - claude-opus-4-5\n",
        4,
        "models.escalation[1]",
        ["unknown model tier 'claude-opus-4-5'", "models.ids"],
        id="escalation-full-id",
    ),
    pytest.param(
        "models:\n  labels:\n    hard: opuss\n",
        3,
        "models.labels.hard",
        ["did you mean 'opus'"],
        id="label-unknown-tier",
    ),
    pytest.param(
        "machines:\n  - name: a\n    user: me\n",
        2,
        "machines[0].host",
        ["missing; every machine needs one"],
        id="missing-host",
    ),
    pytest.param(
        "machines:\n  - host: h\n",
        2,
        "machines[0].name",
        ["missing; every machine needs one"],
        id="missing-name",
    ),
    pytest.param(
        "machines:\n  - name: gpu box\n    host: h\n",
        2,
        "machines[0].name",
        ["'gpu box' is not a valid name"],
        id="bad-machine-name",
    ),
    pytest.param(
        "machines:\n  a:\n    name: b\n    host: h\n",
        3,
        "machines.a.name",
        ["'b' differs from 'a'"],
        id="mapping-name-mismatch",
    ),
    pytest.param(
        "machines:\n  - name: a\n    host: h\n    tmux_socket: co.ord\n",
        4,
        "machines[0].tmux_socket",
        ["'co.ord' is not a valid name"],
        id="bad-socket",
    ),
    pytest.param(
        "machines:\n  - name: a\n    host: h\n    claude_command: 'claude \"x'\n",
        4,
        "machines[0].claude_command",
        ["cannot be split"],
        id="unbalanced-quotes",
    ),
    pytest.param("machines: []\n", 1, "machines", ["is empty"], id="no-machines"),
    pytest.param(
        "concurrency:\n  max_workers: 4\n  zzz: 1\n",
        3,
        "concurrency.zzz",
        ["unknown key", "valid keys here: max_workers, stagger_seconds"],
        id="unknown-key-without-close-match",
    ),
    pytest.param(
        "repos:\n  - name: api\n    forge: gitlab\n",
        3,
        "repos[0].forge",
        ["expected local or github"],
        id="bad-forge",
    ),
    pytest.param(
        "repos:\n  - name: api\n    forge: github\n",
        3,
        "repos[0].forge",
        ["github: owner/name"],
        id="github-forge-without-slug",
    ),
    pytest.param(
        "repos:\n  - name: api\n    github: acme\n",
        3,
        "repos[0].github",
        ["expected owner/name"],
        id="bad-github-slug",
    ),
    pytest.param(
        "repos:\n  - name: api\n  - name: api\n",
        3,
        "repos[1].name",
        ["listed twice"],
        id="duplicate-repo",
    ),
    pytest.param(
        "hooks: [a, b]\n", 1, "hooks", ["expected a mapping"], id="raw-section-not-mapping"
    ),
    pytest.param("- a\n- b\n", 1, None, ["expected a mapping of sections"], id="top-level-list"),
    pytest.param(
        "board:\n  keep_finished: -1\n",
        2,
        "board.keep_finished",
        ["of at least 0"],
        id="negative-keep",
    ),
    pytest.param(
        "reviews:\n  enabeld: true\n",
        2,
        "reviews.enabeld",
        ["unknown key", "did you mean 'enabled'"],
        id="reviews-unknown-key",
    ),
    pytest.param(
        "reviews:\n  enabled: sure\n",
        2,
        "reviews.enabled",
        ["expected true or false", "'sure'"],
        id="reviews-enabled-not-bool",
    ),
    pytest.param(
        "reviews:\n  max_rounds: 0\n",
        2,
        "reviews.max_rounds",
        ["expected an integer of at least 1", "got 0"],
        id="reviews-no-rounds",
    ),
    pytest.param(
        "reviews:\n  required_approvals: one\n",
        2,
        "reviews.required_approvals",
        ["expected an integer of at least 1", "'one'"],
        id="reviews-approvals-not-int",
    ),
    pytest.param(
        "reviews:\n  model: opuss\n",
        2,
        "reviews.model",
        ["unknown model tier 'opuss'", "did you mean 'opus'", "full model id"],
        id="reviews-unknown-tier",
    ),
    pytest.param(
        "smoke_tests:\n  enabled: true\n  comands: [make smoke]\n",
        3,
        "smoke_tests.comands",
        ["unknown key", "did you mean 'commands'"],
        id="smoke-unknown-key",
    ),
    pytest.param(
        "smoke_tests:\n  commands: make smoke\n",
        2,
        "smoke_tests.commands",
        ["expected a list of shell commands", "write [make smoke]"],
        id="smoke-commands-not-list",
    ),
    pytest.param(
        "machines: [{name: gpu-box, host: h}]\nsmoke_tests:\n  machines: [gpu-box, gpu-bx]\n",
        3,
        "smoke_tests.machines[1]",
        ["unknown machine 'gpu-bx'", "did you mean 'gpu-box'"],
        id="smoke-unknown-machine",
    ),
    pytest.param(
        "smoke_tests:\n  timeout: soon\n",
        2,
        "smoke_tests.timeout",
        ["expected a duration above zero", "'soon'"],
        id="smoke-bad-timeout",
    ),
    pytest.param(
        "hooks:\n  on_merged: [notify]\n",
        2,
        "hooks.on_merged",
        ["unknown key", "did you mean 'on_merge'"],
        id="hooks-unknown-event",
    ),
    pytest.param(
        "hooks:\n  on_done: notify\n",
        2,
        "hooks.on_done",
        ["expected a list of shell commands", "write [notify]"],
        id="hooks-not-list",
    ),
    pytest.param(
        "hooks:\n  on_failed:\n    - [page, me]\n",
        3,
        "hooks.on_failed[0]",
        ["expected a string", "got a list"],
        id="hooks-command-not-string",
    ),
    pytest.param(
        "worker:\n  allowed_domains: [pypi.org, 'evil.org; rm -rf ~']\n",
        2,
        "worker.allowed_domains[1]",
        ["a domain name", "*.npmjs.org"],
        id="domain-not-a-name",
    ),
    pytest.param(
        "repos:\n  - name: api\n    allowed_domains: [https://pypi.org]\n",
        3,
        "repos[0].allowed_domains[0]",
        ["a domain name"],
        id="repo-domain-is-a-url",
    ),
]


def test_confinement_settings_are_read(tmp_path: Path) -> None:
    text = ("worker:\n  confine: false\n  deny_read: [~/secrets, /srv/keys]\n"
            "  allowed_domains: [PyPI.org, '*.npmjs.org']\n"
            "repos:\n  - name: api\n    allowed_domains: [files.pythonhosted.org]\n")  # fmt: skip
    config = load_config(write(tmp_path, text))
    assert config.worker.confine is False
    assert config.worker.deny_read == ("~/secrets", "/srv/keys")
    assert config.worker.allowed_domains == ("pypi.org", "*.npmjs.org")
    assert config.repo("api").allowed_domains == ("files.pythonhosted.org",)
    assert load_config(write(tmp_path, "")).worker.confine is True  # on by default


@pytest.mark.parametrize(("text", "line", "key", "fragments"), BAD)
def test_bad_config_names_file_line_and_key(
    tmp_path: Path, text: str, line: int, key: str | None, fragments: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    message = str(error)
    assert message.startswith(f"{path}:{line}: "), message
    assert error.line == line
    if key is not None:
        assert error.key == key
        assert f"{key}:" in message
    for fragment in fragments:
        assert fragment in message, message


PIPELINE = """\
machines: [{name: a, host: h}, {name: b, host: h}]
reviews: {enabled: false, model: claude-opus-4-1, max_rounds: 5, required_approvals: 2}
smoke_tests:
  enabled: yes
  commands: [make smoke, ./check --fast]
  machines: [b]
  timeout: 1h30m
hooks:
  on_dispatch: [notify dispatched]
  on_needs_human: ["page me", 'echo "$X"']
"""


def test_pipeline_sections_read_as_written_with_typed_defaults(tmp_path: Path) -> None:
    config = parse_config(PIPELINE, base_dir=tmp_path)
    assert config.extra["reviews"] == {
        "enabled": False,
        "model": "claude-opus-4-1",
        "max_rounds": 5,
        "required_approvals": 2,
    }
    assert config.extra["smoke_tests"] == {
        "enabled": True,
        "commands": ["make smoke", "./check --fast"],
        "machines": ["b"],
        "timeout": 5400.0,
    }
    assert config.extra["hooks"] == {
        "on_dispatch": ["notify dispatched"],
        "on_needs_human": ["page me", 'echo "$X"'],
    }
    assert config.reviews == ReviewsConfig(
        enabled=False, model="claude-opus-4-1", max_rounds=5, required_approvals=2
    )
    assert config.smoke_tests == SmokeTestsConfig(
        enabled=True, commands=("make smoke", "./check --fast"), machines=("b",), timeout=5400.0
    )
    assert config.hooks == HooksConfig(
        on_dispatch=("notify dispatched",), on_needs_human=("page me", 'echo "$X"')
    )
    assert Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config

    partial = parse_config("reviews: {model: opus}\nhooks: {on_merge: [deploy]}\n")
    assert partial.extra["reviews"] == {"model": "opus"}  # only what the file says
    assert partial.reviews == ReviewsConfig(model="opus")
    assert partial.smoke_tests == SmokeTestsConfig() and "smoke_tests" not in partial.extra
    assert partial.hooks == HooksConfig(on_merge=("deploy",))


def test_pipeline_section_keys_are_their_dataclass_fields() -> None:
    from coordlib.config_yaml import _EXTRA_KEYS

    sections = {"reviews": ReviewsConfig, "smoke_tests": SmokeTestsConfig, "hooks": HooksConfig}
    for name, cls in sections.items():
        assert list(_EXTRA_KEYS[name]) == [f.name for f in dataclasses.fields(cls)], name


def test_yaml_syntax_error_keeps_its_cause(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "a: [1, 2\n"))
    assert isinstance(caught.value.__cause__, yaml.YAMLError)


def test_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="coord init"):
        load_config(tmp_path / "nope.yml")


def test_unknown_machine_and_repo_lookups_suggest_the_nearest() -> None:
    config = parse_config("repos: [api, web]\nmachines: [{name: gpu-box, host: h}]")
    with pytest.raises(ConfigError, match="did you mean 'gpu-box'") as caught:
        config.machine("gpu-bx")
    assert "gpu-box" in (caught.value.hint or "")
    with pytest.raises(ConfigError, match=r"did you mean 'web'.*api, web"):
        config.repo("wbe")


def test_model_resolution() -> None:
    models = ModelsConfig()
    assert models.resolve("haiku") == ("haiku", "claude-haiku-4-5")
    assert models.resolve("claude-sonnet-4-5-20250929") == ("", "claude-sonnet-4-5-20250929")
    assert models.resolve("us.anthropic/claude") == ("", "us.anthropic/claude")
    assert models.resolve("my-custom-model") == ("", "my-custom-model")
    with pytest.raises(ConfigError, match=r"unknown model tier 'sonet'.*did you mean 'sonnet'"):
        models.resolve("sonet")


def test_durations() -> None:
    assert parse_duration("90") == 90.0
    assert parse_duration("90s") == 90.0
    assert parse_duration("10m") == 600.0
    assert parse_duration("2h") == 7200.0
    assert parse_duration("1h30m") == 5400.0
    assert parse_duration("1h 30m") == 5400.0
    assert parse_duration("1.5h") == 5400.0
    assert parse_duration("1d") == 86400.0
    for bad in ("10 minutes", "", "h", "1x", "-5s", "inf"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_secret_names() -> None:
    for name in ("ANTHROPIC_API_KEY", "GITHUB_TOKEN", "db_password", "MY_SECRET", "apikey"):
        assert is_secret_name(name), name
    for name in ("PATH", "TZ", "HTTP_PROXY", "CLAUDE_CODE_MAX_OUTPUT"):
        assert not is_secret_name(name), name


def test_secret_may_refer_to_a_differently_named_variable_or_be_empty() -> None:
    env = (
        parse_config(
            "machines: [{name: a, host: h, env: {ANTHROPIC_API_KEY: $WORK_KEY, GH_TOKEN: ''}}]"
        )
        .machine("a")
        .env
    )
    assert dict(env) == {"ANTHROPIC_API_KEY": "$WORK_KEY", "GH_TOKEN": ""}


# --- resolve_env ----------------------------------------------------------------------------


def test_resolve_env_substitutes_whole_and_embedded_references() -> None:
    env = {
        "ANTHROPIC_API_KEY": "${ANTHROPIC_API_KEY}",
        "GH_TOKEN": "$TOKEN",
        "PROXY": "http://${PROXY_HOST}:8080/$PROXY_PATH",
        "PRICE": "$$5",
        "PLAIN": "x",
    }
    environ = {
        "ANTHROPIC_API_KEY": "sk-ant-s3cret",
        "TOKEN": "ghp_1",
        "PROXY_HOST": "proxy",
        "PROXY_PATH": "p",
    }
    assert resolve_env(env, environ, machine="gpu") == {
        "ANTHROPIC_API_KEY": "sk-ant-s3cret",
        "GH_TOKEN": "ghp_1",
        "PROXY": "http://proxy:8080/p",
        "PRICE": "$5",
        "PLAIN": "x",
    }


def test_resolve_env_names_machine_and_missing_variables() -> None:
    env = {"ANTHROPIC_API_KEY": "${ANTHROPIC_API_KEY}", "B": "$OTHER-${ANTHROPIC_API_KEY}"}
    with pytest.raises(ConfigError) as caught:
        resolve_env(env, {}, machine="gpu-box")
    message = str(caught.value)
    assert "'gpu-box'" in message
    assert "ANTHROPIC_API_KEY, OTHER" in message
    assert "export ANTHROPIC_API_KEY=… export OTHER=…" in message


def test_to_dict_never_holds_the_secret_value() -> None:
    secret = "sk-ant-api03-very-secret"
    config = parse_config(
        "machines:\n  - name: gpu\n    host: h\n    env:\n"
        "      ANTHROPIC_API_KEY: ${ANTHROPIC_API_KEY}\n"
    )
    environ = {"ANTHROPIC_API_KEY": secret}
    resolved = resolve_env(config.machine("gpu").env, environ, machine="gpu")
    assert resolved["ANTHROPIC_API_KEY"] == secret
    dumped = json.dumps(config.to_dict())
    assert secret not in dumped
    assert "${ANTHROPIC_API_KEY}" in dumped
    assert secret not in repr(config)


# --- find_config ----------------------------------------------------------------------------


def test_find_config_precedence(tmp_path: Path) -> None:
    cwd, home = tmp_path / "project", tmp_path / "home"
    (home / ".coord").mkdir(parents=True)
    cwd.mkdir()
    in_home = home / ".coord" / "coordinator.yml"
    in_cwd = cwd / "coordinator.yml"
    from_env = tmp_path / "env.yml"
    explicit = tmp_path / "explicit.yml"
    for path in (in_home, in_cwd, from_env, explicit):
        path.write_text("")
    environ = {"COORD_CONFIG": str(from_env)}

    assert find_config(explicit, environ=environ, cwd=cwd, home=home) == explicit
    assert find_config("../explicit.yml", environ=environ, cwd=cwd, home=home) == explicit
    assert find_config(environ=environ, cwd=cwd, home=home) == from_env
    assert find_config(environ={"COORD_CONFIG": ""}, cwd=cwd, home=home) == in_cwd
    assert find_config(environ={}, cwd=cwd, home=home) == in_cwd
    in_cwd.unlink()
    assert find_config(environ={}, cwd=cwd, home=home) == in_home
    assert find_config("~/.coord", environ={}, cwd=cwd, home=home) == in_home


def test_find_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yml does not exist"):
        find_config(tmp_path / "missing.yml", environ={}, cwd=tmp_path, home=tmp_path)
    with pytest.raises(ConfigError, match=r"COORD_CONFIG points at .*gone\.yml"):
        find_config(environ={"COORD_CONFIG": "gone.yml"}, cwd=tmp_path, home=tmp_path)
    with pytest.raises(ConfigError) as caught:
        find_config(environ={}, cwd=tmp_path / "p", home=tmp_path / "h")
    message = str(caught.value)
    assert str(tmp_path / "p" / "coordinator.yml") in message
    assert str(tmp_path / "h" / ".coord" / "coordinator.yml") in message
    assert "COORD_CONFIG" in message
    assert "coord init" in message


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "github:\n  api_ur: https://x\n",
            2,
            "github.api_ur: unknown key (did you mean 'api_url'?)",
        ),
        ("github:\n  api_url: ghe.example.com\n", 2, "github.api_url: expected an http(s) URL"),
        ("github:\n  write_interval: soon\n", 2, "github.write_interval"),
        ("forge:\n  root: [a, b]\n", 2, "forge.root"),
    ],
)
def test_forge_sections_are_checked(text: str, line: int, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, path="c.yml", base_dir=tmp_path)
    assert info.value.line == line and message in str(info.value)


def test_forge_sections_parse(tmp_path: Path) -> None:
    text = (
        "github:\n  api_url: https://ghe.example.com/api/v3\n  write_interval: 0\n"
        "forge: {root: x}\n"
    )
    config = parse_config(text, base_dir=tmp_path)
    assert config.extra["github"] == {
        "api_url": "https://ghe.example.com/api/v3",
        "write_interval": 0.0,
    }
    assert config.extra["forge"] == {"root": "x"}


@pytest.mark.parametrize(
    "url",
    [
        "http://ghe.example.com/api/v3",
        "http://10.0.0.5:8080/api/v3",
        "http://[2001:db8::1]/api/v3",
        "http://localhost.evil.example/api/v3",
        "http://127.0.0.1.nip.io/api/v3",
    ],
)
def test_github_api_url_over_plain_http_is_refused(url: str, tmp_path: Path) -> None:
    text = f"repos: [api]\ngithub:\n  write_interval: 0\n  api_url: {url}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, path="c.yml", base_dir=tmp_path)
    message = str(info.value)
    assert info.value.line == 4 and info.value.key == "github.api_url"
    assert message.startswith("c.yml:4: github.api_url: ")
    assert "in clear" in message and f"use https://{url[len('http://') :]}" in message


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/api/v3",
        "http://127.0.0.2:9",
        "http://[::1]:8080/api/v3",
        "http://localhost:3000/api/v3",
        "http://LOCALHOST/api/v3",
        "https://ghe.example.com/api/v3",
    ],
)
def test_github_api_url_over_http_is_fine_on_loopback(url: str, tmp_path: Path) -> None:
    config = parse_config(f"github:\n  api_url: {url}\n", base_dir=tmp_path)
    assert config.extra["github"]["api_url"] == url


def test_a_github_forge_built_in_code_refuses_plain_http(tmp_path: Path) -> None:
    from coordlib.errors import ForgeError
    from coordlib.forge import GitHubForge, open_forge

    env = {"GITHUB_TOKEN": "t", "PATH": ""}
    with pytest.raises(ForgeError, match=r"GitHub acme/api: api_url http://ghe\.example\.com"):
        GitHubForge("api", "acme/api", api_url="http://ghe.example.com/api/v3", environ=env)
    # A Config made in code skips the YAML check; the forge still refuses it.
    checked = parse_config("repos: [{name: api, github: acme/api}]\n", base_dir=tmp_path)
    unchecked = dataclasses.replace(
        checked, extra={"github": {"api_url": "http://ghe.example.com/api/v3"}}
    )
    with pytest.raises(ForgeError, match="use https://"):
        open_forge(unchecked, "api", environ=env)
    loopback = dataclasses.replace(checked, extra={"github": {"api_url": "http://[::1]:9/api"}})
    assert open_forge(loopback, "api", environ=env).kind == "github"


# ------------------------------------------------------------------ the parse cache


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home / "coordlib" / "config"


def _no_parse(*args: object, **kwargs: object) -> None:
    raise AssertionError("parsed the YAML again instead of using the cache")


def test_cache_serves_an_unchanged_config_without_parsing(
    tmp_path: Path, cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import coordlib.config_yaml

    path = write(tmp_path, FULL)
    first = load_config(path)
    (entry,) = cache_home.iterdir()
    assert entry.stat().st_mode & 0o777 == 0o600
    assert cache_home.stat().st_mode & 0o777 == 0o700

    monkeypatch.setattr(coordlib.config_yaml, "parse_config", _no_parse)
    again = load_config(path)
    assert again == first
    assert again.machines["gpu-box"].env == first.machines["gpu-box"].env
    assert isinstance(again.repos["web"].depends_on, tuple)
    assert isinstance(again.board.path, Path)
    with pytest.raises(TypeError):  # still frozen all the way down
        again.machines["gpu-box"].env["X"] = "y"  # type: ignore[index]


def test_cache_notices_an_edit_and_survives_a_broken_entry(
    tmp_path: Path, cache_home: Path
) -> None:
    path = write(tmp_path, "machines: [{name: a, host: h1}]\n")
    assert load_config(path).machines["a"].host == "h1"
    path.write_text("machines: [{name: a, host: h2}]\n")
    assert load_config(path).machines["a"].host == "h2"  # same size, same second: new text

    (entry,) = cache_home.iterdir()
    for junk in ("{not json", '{"key": 1}', '{"key": "x", "config": []}', ""):
        entry.write_text(junk)
        assert load_config(path).machines["a"].host == "h2"
    assert len(list(cache_home.iterdir())) == 1  # one entry per config file, rewritten


def test_cache_never_keeps_a_bad_config(tmp_path: Path, cache_home: Path) -> None:
    path = write(tmp_path, "machines:\n  - name: a\n    port: 22\n")  # no host
    for _ in range(2):
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert info.value.line == 2
    assert not cache_home.exists()

    load_config(write(tmp_path, "machines: [{name: a, host: h}]\n"), cache=False)
    assert not cache_home.exists()


def test_cache_never_keeps_a_config_json_would_change(
    tmp_path: Path, cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datetime

    import coordlib.config_yaml

    # Every section the reader accepts holds JSON types; a Config with a date could only come
    # from a future section that forgot to, so stand in for that parser.
    dated = Config(extra={"forge": {"since": datetime.date(2024, 1, 2)}})
    monkeypatch.setattr(coordlib.config_yaml, "parse_config", lambda *a, **k: dated)
    path = write(tmp_path, "machines: [{name: a, host: h}]\n")
    assert load_config(path).extra["forge"]["since"].year == 2024
    assert load_config(path).extra["forge"]["since"].year == 2024  # parsed again, still a date
    assert not cache_home.exists()


def test_a_cached_load_does_not_import_yaml(tmp_path: Path, cache_home: Path) -> None:
    path = write(tmp_path, FULL)
    load_config(path)
    code = (
        "import sys; from coordlib.config_load import load_config; "
        f"load_config({str(path)!r}); print('yaml' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
