"""`coord init` to a first dispatch, and the `--json` of version, trust and issue label,
comment and close: through click's CliRunner, against real git repos and a real sshd."""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
from pathlib import Path

import asyncssh
import pytest
from click.testing import CliRunner, Result

from coord_cli.main import coord
from coordlib._version import __version__
from coordlib.config_check import check_repo, github_slug, read_refs
from coordlib.testing import SSHServer, make_git_repo
from coordlib.testing.gitrepo import git

from .conftest import Setup


def invoke(*args: str, config: Path | None = None, input: str | None = None) -> Result:
    """Run ``coord [--config config] args`` in-process; a crash is a test failure."""
    argv = (["--config", str(config)] if config is not None else []) + list(args)
    result = CliRunner().invoke(coord, argv, input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def ok(*args: str, config: Path | None = None, input: str | None = None) -> Result:
    """Like `invoke`, but the command must exit 0."""
    result = invoke(*args, config=config, input=input)
    assert result.exit_code == 0, (args, result.output)
    return result


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory of the test's own, with HOME (so ~/src) somewhere harmless."""
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("COORD_CONFIG", "GITHUB_TOKEN", "GH_TOKEN", "GH_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def next_steps(output: str) -> list[str]:
    """Return the commands init printed after "Next:", without their comments."""
    tail = output.split("\nNext:\n", 1)[1]
    return [line.split("  #", 1)[0].strip() for line in tail.splitlines() if line.strip()]


def on_github(path: Path, url: str) -> None:
    """Point the checkout's origin at `url`, keeping what it last fetched."""
    git("remote", "set-url", "origin", url, cwd=path)


# --- coord init --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["https://github.com/acme/api.git", "git@github.com:acme/api.git"], ids=["https", "ssh"]
)
def test_init_with_a_github_origin_uses_github(here: Path, url: str) -> None:
    repo = make_git_repo(here / "src" / "api")
    on_github(repo.path, url)

    result = ok("init", "--yes", "--search", "src")

    assert "wrote coordinator.yml with 1 repo(s); check it with `coord config`" in result.stdout
    assert "forge: github for api (acme/api)" in result.stdout
    assert "no GitHub token found yet" in result.stdout  # HOME and the environment have none
    assert "ready to dispatch: api (main)" in result.stdout
    text = (here / "coordinator.yml").read_text()
    assert "    forge: github" in text and "    github: acme/api" in text
    data = json.loads(ok("config", "--json").stdout)
    assert data["repos"]["api"]["github"] == "acme/api"
    assert data["repos"]["api"]["forge"] == "github"
    assert data["extra"]["github"] == {"api_url": "https://api.github.com"}


def test_init_forge_local_keeps_github_out(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "not-used")
    repo = make_git_repo(here / "src" / "api")
    on_github(repo.path, "ssh://git@github.com/acme/api.git")

    result = ok("init", "--yes", "--forge", "local", "--search", "src")

    assert "forge: local for api" in result.stdout
    assert "GitHub token" not in result.stdout
    text = (here / "coordinator.yml").read_text()
    assert "    # github: acme/api" in text  # one uncommented line away
    assert "\ngithub:" not in text
    data = json.loads(ok("config", "--json").stdout)
    assert data["repos"]["api"]["github"] is None
    assert data["repos"]["api"]["forge"] is None
    assert "github" not in data["extra"]


@pytest.mark.parametrize(("answer", "forge"), [("", "github"), ("local", "local")])
def test_init_asks_which_forge(here: Path, answer: str, forge: str) -> None:
    repo = make_git_repo(here / "src" / "api")
    on_github(repo.path, "https://github.com/acme/api")
    result = ok("init", "--search", "src", input=f"\n{answer}\n")
    assert "Origin on GitHub: api (acme/api)" in result.stdout
    assert f"forge: {forge} for api" in result.stdout
    config = json.loads(ok("config", "--json").stdout)
    assert config["repos"]["api"]["forge"] == (None if forge == "local" else "github")


def test_init_without_a_github_origin_says_local_and_asks_nothing(here: Path) -> None:
    make_git_repo(here / "src" / "api")  # origin is a bare repo beside it
    result = ok("init", "--search", "src", input="\n")
    assert "Origin on GitHub" not in result.stdout
    assert "forge: local for api\n" in result.stdout
    forced = ok("init", "--yes", "--force", "--forge", "github", "--search", "src")
    assert "forge: local for api (origin not on github.com)" in forced.stdout


def test_init_reports_what_keeps_a_repo_from_work_and_still_writes(here: Path) -> None:
    src = here / "src"
    solo = make_git_repo(src / "solo", with_origin=False)
    unpushed = make_git_repo(src / "unpushed", with_origin=False)
    bare = here / "unpushed.git"
    git("init", "-q", "--bare", "-b", "main", str(bare))
    git("remote", "add", "origin", str(bare), cwd=unpushed.path)
    empty = src / "empty"
    git("init", "-q", "-b", "main", str(empty))
    make_git_repo(src / "good")

    result = ok("init", "--yes", "--search", "src")
    out = result.stdout

    assert "wrote coordinator.yml with 4 repo(s)" in out
    assert "ready to dispatch: good (main)\n" in out
    assert f"solo cannot take work yet ({solo.path}):" in out
    assert f"git -C {solo.path} remote add origin URL" in out
    assert f"git -C {solo.path} push -u origin main" in out
    assert f"unpushed cannot take work yet ({unpushed.path}):" in out
    assert "origin has no main branch" in out
    assert f"git -C {unpushed.path} push -u origin main" in out
    assert f"git -C {unpushed.path} remote add" not in out
    assert f"git -C {empty} commit --allow-empty -m 'First commit'" in out
    assert sorted(json.loads(ok("config", "--json").stdout)["repos"]) == [
        "empty", "good", "solo", "unpushed",
    ]  # fmt: skip
    # The commands named fix it: after them the repo is ready.
    for line in out.splitlines():
        if line.strip().startswith(f"git -C {unpushed.path}"):
            subprocess.run(shlex.split(line), check=True, capture_output=True)
    assert check_repo(unpushed.path).ready


def test_init_prints_the_three_next_commands_and_they_work(here: Path) -> None:
    make_git_repo(here / "src" / "api")
    result = ok("init", "--yes", "--search", "src")
    steps = next_steps(result.stdout)
    assert steps == [
        "coord status",
        "coord issue new api --title 'Your first task'",
        "coord assign local api N",
    ]
    opened = ok(*shlex.split(steps[1])[1:], "--json")
    number = json.loads(opened.stdout)["number"]
    assert number == 1
    dry = ok(*shlex.split(steps[2].replace(" N", f" {number}"))[1:], "--dry-run", "--json")
    assert json.loads(dry.stdout)["branch"] == "issue-1-your-first-task"


def test_init_elsewhere_names_the_config_in_each_command(here: Path) -> None:
    make_git_repo(here / "src" / "api", with_origin=False)
    (here / "conf").mkdir()
    result = ok("--config", "conf/fleet.yml", "init", "--yes", "--search", "src")
    assert (here / "conf" / "fleet.yml").is_file()
    assert "check it with `coord --config conf/fleet.yml config`" in result.stdout
    steps = next_steps(result.stdout)
    assert len(steps) == 3
    assert all(s.startswith("coord --config conf/fleet.yml ") for s in steps), steps
    # Not ready: the example is still its repo, and the fix is printed above it.
    assert steps[1] == "coord --config conf/fleet.yml issue new api --title 'Your first task'"


def test_init_with_no_repos_still_says_what_comes_next(here: Path) -> None:
    (here / "empty").mkdir()
    result = ok("init", "--yes", "--search", "empty")
    assert "No git repos found" in result.stdout
    assert next_steps(result.stdout)[1:] == [
        "coord issue new REPO --title 'Your first task'",
        "coord assign local REPO N",
    ]


def test_init_usage_errors_exit_2(here: Path) -> None:
    assert invoke("init", "--yes", "--search", "nope").exit_code == 2
    assert invoke("init", "--yes", "--forge", "gitlab").exit_code == 2
    ok("init", "--yes", "--search", str(here / "home"))
    again = invoke("init", "--yes", "--search", str(here / "home"))
    assert again.exit_code == 1 and "--force" in again.stderr  # a file in the way: not usage


def test_init_asks_again_for_numbers_it_cannot_read(here: Path) -> None:
    make_git_repo(here / "src" / "alpha", with_origin=False)
    make_git_repo(here / "src" / "beta", with_origin=False)
    result = ok("init", "--search", "src", input="7\nbeta\n2\n")
    assert result.stdout.count("Give numbers from 1 to 2") == 2
    assert list(json.loads(ok("config", "--json").stdout)["repos"]) == ["beta"]


# --- what init reads from git, pure ------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "slug"),
    [
        ("https://github.com/acme/api.git", "acme/api"),
        ("https://github.com/acme/api", "acme/api"),
        ("https://github.com/acme/api/", "acme/api"),
        ("https://x-access-token:t@github.com/acme/api.git", "acme/api"),
        ("git@github.com:acme/api.git", "acme/api"),
        ("git@GitHub.com:Acme/my.repo.git", "Acme/my.repo"),
        ("ssh://git@github.com/acme/api.git", "acme/api"),
        ("ssh://git@github.com:22/acme/api", "acme/api"),
        ("git://github.com/acme/api.git", "acme/api"),
        ("github.com:acme/api", "acme/api"),
        ("git@gitlab.com:acme/api.git", None),
        ("https://github.example.com/acme/api.git", None),
        ("/srv/git/api.git", None),
        ("../api.git", None),
        ("https://github.com/acme", None),
        ("https://github.com/acme/api/tree/main", None),
        ("file:///github.com/acme/api", None),
    ],
)
def test_github_slug(url: str, slug: str | None) -> None:
    assert github_slug(url) == slug


def test_read_refs() -> None:
    refs = read_refs(
        "refs/heads/main \n"
        "refs/heads/feature/x \n"
        "refs/remotes/origin/HEAD refs/remotes/origin/trunk\n"
        "refs/remotes/origin/trunk \n"
        "refs/remotes/origin/main\n"
    )
    assert refs.heads == {"main", "feature/x"}
    assert refs.origin == {"trunk", "main"}
    assert refs.origin_head == "trunk"


def test_a_clone_takes_origins_default_branch(tmp_path: Path) -> None:
    upstream = make_git_repo(tmp_path / "up", branch="trunk")
    assert upstream.origin is not None
    clone = tmp_path / "clone"
    git("clone", "-q", str(upstream.origin), str(clone))
    git("switch", "-q", "-c", "feature", cwd=clone)  # a checkout on another branch
    checked = check_repo(clone)
    assert (checked.default_branch, checked.ready) == ("trunk", True)
    assert checked.origin == str(upstream.origin)


# --- --json ------------------------------------------------------------------------------


def test_version_json() -> None:
    assert ok("version").stdout == f"coord {__version__}\n"  # unchanged
    data = json.loads(ok("version", "--json").stdout)
    assert set(data) == {"version", "python", "claude_cli"}
    assert data["version"] == __version__
    assert data["python"] == platform.python_version()
    claude = data["claude_cli"]
    assert claude is None or set(claude) == {"path", "version"}


def test_issue_label_comment_close_json(setup: Setup) -> None:
    setup.add_local("local")
    config = setup.write()
    opened = json.loads(ok("issue", "new", "api", "-t", "Try it", "--json", config=config).stdout)
    n = str(opened["number"])

    labelled = json.loads(ok("issue", "label", "api", n, "bug", "hard", "--json",
                             config=config).stdout)  # fmt: skip
    assert labelled == {"repo": "api", "number": int(n), "labels": ["bug", "hard"]}
    removed = json.loads(
        ok("issue", "label", "api", n, "--remove", "hard", "--json", config=config).stdout
    )
    assert removed["labels"] == ["bug"]

    commented = json.loads(ok("issue", "comment", "api", n, "Seen it.", "--json",
                              config=config).stdout)  # fmt: skip
    assert (commented["repo"], commented["number"]) == ("api", int(n))
    assert {"id", "url", "body", "author", "created_at"} <= set(commented["comment"])
    assert commented["comment"]["body"] == "Seen it."
    shown = json.loads(ok("issue", "show", "api", n, "--json", config=config).stdout)
    assert [c["id"] for c in shown["comments"]] == [commented["comment"]["id"]]

    closed = json.loads(ok("issue", "close", "api", n, "--json", config=config).stdout)
    assert closed == {"repo": "api", "number": int(n), "state": "closed"}
    reopened = json.loads(ok("issue", "close", "api", n, "--reopen", "--json",
                             config=config).stdout)  # fmt: skip
    assert reopened["state"] == "open"


def test_issue_exit_codes(setup: Setup, tmp_path: Path) -> None:
    setup.add_local("local")
    config = setup.write()
    ok("issue", "new", "api", "-t", "Try it", config=config)
    bare = invoke("issue", "label", "api", "1", config=config)
    assert bare.exit_code == 2 and "name a label" in bare.stderr
    body = tmp_path / "body.md"
    body.write_text("text\n")
    both = invoke("issue", "new", "api", "-t", "x", "-b", "y", "--body-file", str(body),
                  config=config)  # fmt: skip
    assert both.exit_code == 2 and "not both" in both.stderr
    assert invoke("issue", "close", "api", "0", config=config).exit_code == 2
    missing = invoke("issue", "close", "api", "99", "--json", config=config)
    assert missing.exit_code == 1  # the forge has no such issue: not a usage error
    assert missing.stdout == "" and "99" in missing.stderr


def test_issues_with_no_repos_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "coordinator.yml"
    config.write_text("machines: [{name: local, host: localhost}]\n")
    result = invoke("issues", config=config)
    assert result.exit_code == 1
    assert f"{config}: no repos in the config" in result.stderr


# --- trust --json, against a real sshd ---------------------------------------------------


def test_trust_json_records_then_finds_it_trusted(
    setup: Setup, sshd: SSHServer, tmp_path: Path
) -> None:
    known = tmp_path / "ssh" / "known_hosts"
    setup.add_ssh(sshd, "remote", known_hosts=str(known))
    config = setup.write()
    expected_fingerprint = asyncssh.import_public_key(sshd.host_key_line).get_fingerprint()

    first = ok("trust", "remote", "--yes", "--json", config=config)
    data = json.loads(first.stdout)  # stdout is the JSON alone
    assert data == {
        "machine": "remote",
        "host": sshd.host,
        "port": sshd.port,
        "fingerprint": expected_fingerprint,
        "key_type": sshd.host_key_line.split()[0],
        "state": "unknown",
        "known_hosts": str(known),
        "recorded": True,
        "replaced": False,
    }
    assert "presents" in first.stderr and "recorded in" in first.stderr
    assert sshd.host_key_line in known.read_text()

    again = json.loads(ok("trust", "remote", "--json", config=config).stdout)
    assert (again["state"], again["recorded"], again["replaced"]) == ("trusted", False, False)


def test_trust_json_replaces_a_changed_key(setup: Setup, sshd: SSHServer, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    old = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()
    known.write_text(f"[{sshd.host}]:{sshd.port} {' '.join(old.split()[:2])}\n")
    setup.add_ssh(sshd, "remote", known_hosts=str(known))
    config = setup.write()

    refused = invoke("trust", "remote", "--yes", "--json", config=config)
    assert refused.exit_code == 1 and refused.stdout == ""
    assert "--replace" in refused.stderr

    asked = invoke("trust", "remote", "--replace", "--json", config=config, input="n\n")
    assert asked.exit_code == 1 and asked.stdout == ""  # the question went to stderr
    assert "Trust this key?" in asked.stderr

    replaced = json.loads(
        ok("trust", "remote", "--replace", "--json", config=config, input="y\n").stdout
    )
    assert (replaced["state"], replaced["recorded"], replaced["replaced"]) == (
        "changed", True, True,
    )  # fmt: skip
    assert known.read_text().split()[1:] == sshd.host_key_line.split()


def test_next_commands_trust_a_remote_machine_first() -> None:
    from coordlib.config_init import next_commands
    from coordlib.config_yaml import parse_config

    config = parse_config(
        "repos: [{name: api, github: acme/api}, {name: web}]\n"
        "machines: [{name: gpu-box, host: gpu.example.com, repos: [web]},"
        " {name: spare, host: spare.example.com}]\n"
    )
    assert next_commands(config, config_path="my fleet.yml") == [
        ("coord --config 'my fleet.yml' trust gpu-box", "check and record gpu-box's host key"),
        (
            "coord --config 'my fleet.yml' issue new api --title 'Your first task'",
            "open an issue on GitHub (acme/api)",
        ),
        (
            "coord --config 'my fleet.yml' assign spare api N",
            "start a worker on it (N: its number)",
        ),
    ]
