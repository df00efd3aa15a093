"""`coord setup`: a playbook of checks and idempotent steps, all of a machine's steps in one
remote command.

1. The playbook read with its lines: every mistake names file:line; the shipped one reads.
2. Steps made for a machine: values quoted for the shell (a path's ``~/`` as the home), per
   repo, a repo with nothing to clone from left to a person, steps that are off.
3. A fresh machine over sshd: a dry run changes nothing, a run clones and makes the workdir,
   a second run changes nothing; a playbook of one's own, with steps that fail or need a
   person, and one turned on with --enable.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coordlib.config_load import load_config
from coordlib.errors import ConfigError, UsageError
from coordlib.machine_setup import (
    DEFAULT_SETUP_PLAYBOOK,
    load_setup_playbook,
    parse_setup_playbook,
    plan_steps,
)
from coordlib.runtime.builders import setup_command
from coordlib.runtime.machine_answers import parse_setup
from coordlib.runtime.protocol import ExitCode
from coordlib.testing import SSHServer

from .conftest import Setup

Run = Callable[..., subprocess.CompletedProcess[str]]
ROOT = Path(__file__).resolve().parent.parent


# ======================================================== 1. reading a playbook


def test_the_shipped_playbook_reads_and_the_folder_links_to_it() -> None:
    pb = load_setup_playbook()
    assert [s.handle for s in pb.steps] == [
        "git", "tmux", "flock", "sandbox", "claude", "claude-login", "workdir", "clone-{repo}",
        "worker-user",
    ]  # fmt: skip
    assert [s.handle for s in pb.steps if not s.enabled] == ["worker-user"]
    assert [s.each for s in pb.steps].count("repo") == 1
    link = ROOT / "playbooks" / "setup-machine.yml"
    assert link.is_symlink() and link.resolve() == DEFAULT_SETUP_PLAYBOOK.resolve()


GOOD_STEP = "  - name: git\n    check: git --version\n"


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        (f"steps:\n{GOOD_STEP}  - name: clone\n    chek: true\n", 5,
         r"steps\[1\]\.chek: unknown key \(did you mean 'check'"),
        (f"steps:\n{GOOD_STEP}  - name: c\n    each: repo\n    check: test -d {{pth}}\n", 6,
         r"steps\[1\]\.check: unknown placeholder \{pth\} \(did you mean 'path'"),
        (f"steps:\n{GOOD_STEP}  - name: c\n    check: test -d {{path}}\n", 5,
         r"unknown placeholder \{path\} \(\{path\} is a repo's: add `each: repo`"),
        (f"steps:\n{GOOD_STEP}  - name: c\n    each: machine\n    check: true\n", 5,
         r"steps\[1\]\.each: 'machine' is nothing a step repeats for"),
        (f"steps:\n{GOOD_STEP}{GOOD_STEP}", 4, r"'git' is the name of the step on line 2 too"),
        (f"vars:\n  workdir: x\nsteps:\n{GOOD_STEP}", 2, r"vars\.workdir: 'workdir' cannot name"),
        (f"steps:\n{GOOD_STEP}  - name: c\n    check: true\n    timeout: -5\n", 6,
         r"steps\[1\]\.timeout: expected a duration"),
        (f"steps:\n{GOOD_STEP}  - name: c\n    check: true\n    ok_if_env: [A-B]\n", 6,
         r"'A-B' is not an environment variable's name"),
        (f"steps:\n{GOOD_STEP}  - name: c\n    check: true\n    enabled: maybe\n", 6,
         r"steps\[1\]\.enabled: expected true or false"),
        (f"steps:\n{GOOD_STEP}  - check: true\n", 4, r"steps\[1\]\.name: missing"),
        ("steps:\n  - name: [a\n", 3, r"YAML syntax error"),
        ("steps: []\n", 1, r"steps: missing, or not a list of steps"),
        ("stepz: []\n", 1, r"stepz: unknown key \(did you mean 'steps'"),
        ("# nothing\n", 1, r"the playbook is empty"),
    ],
    ids=lambda x: str(x)[-30:] if isinstance(x, str) else None,
)  # fmt: skip
def test_a_playbook_mistake_names_its_file_and_line(text: str, line: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        parse_setup_playbook(text, "my-setup.yml")
    assert (caught.value.path, caught.value.line) == ("my-setup.yml", line), caught.value
    assert str(caught.value).startswith(f"my-setup.yml:{line}: ")


def test_coord_setup_names_the_playbooks_file_and_line(setup: Setup, run_coord: Run) -> None:
    setup.add_local("local")
    bad = setup.root / "bad-setup.yml"
    bad.write_text(f"steps:\n{GOOD_STEP}  - name: clone\n    chek: git -C {{path}} status\n")
    done = run_coord("setup", "local", "--playbook", str(bad), config=setup.write())
    assert done.returncode == 1 and done.stdout == ""
    assert f"error: {bad}:5: steps[1].chek: unknown key (did you mean 'check'" in done.stderr
    missing = run_coord("setup", "local", "--playbook", str(setup.root / "nope.yml"),
                        config=setup.write())  # fmt: skip
    assert missing.returncode == 1 and "nope.yml: cannot read the playbook" in missing.stderr


# ======================================================== 2. a machine's steps


def config_of(setup: Setup, **machine: Any) -> Any:
    claude = "npx '@anthropic-ai/claude-code'"
    setup.machines.append({"name": "box", "host": "box.example", "workdir": "~/.coord w",
                           "claude_command": claude, **machine})  # fmt: skip
    return load_config(setup.write(), cache=False)


HOSTILE_PLAYBOOK = """\
vars:
  who: "it's $(id)"
steps:
  - name: greet {who} on {machine}
    check: "test -d {workdir} && echo {who} ${HOME} {{workdir}}"
    run: mkdir -p {workdir}
    manual: ask {who} about {workdir}
  - name: clone {repo}
    each: repo
    check: git -C {path} rev-parse --git-dir
    run: git clone -- {url} {path} && git -C {path} checkout {branch}
  - name: claude
    check: "{claude} --version"
    ok_if_env: ANTHROPIC_API_KEY
  - name: extra
    enabled: false
    check: "true"
"""


def test_values_are_quoted_for_the_shell_and_paths_keep_their_home(setup: Setup) -> None:
    setup.extra["repos"] = [
        {"name": "api", "url": "https://example.com/a b'c.git"},
        {"name": "web", "github": "acme/web", "default_branch": "trunk"},
        {"name": "docs", "forge": "local"},
    ]
    config = config_of(setup, repo_paths={"api": "~/src/$(touch x)/api", "web": "/srv/web"})
    pb = parse_setup_playbook(HOSTILE_PLAYBOOK)
    steps = {s.name: s for s in plan_steps(pb, config, config.machine("box"))}
    greet = steps["greet it's $(id) on box"]
    assert greet.check == (
        "test -d \"$HOME\"/'.coord w' && echo 'it'\"'\"'s $(id)' ${HOME} {workdir}"
    )
    assert greet.run == "mkdir -p \"$HOME\"/'.coord w'"
    assert greet.manual == "ask it's $(id) about ~/.coord w"  # shown as it is: never run
    api = steps["clone api"]
    assert api.run == (
        "git clone -- 'https://example.com/a b'\"'\"'c.git' \"$HOME\"/'src/$(touch x)/api' "
        "&& git -C \"$HOME\"/'src/$(touch x)/api' checkout main"
    )
    web = steps["clone web"]  # a GitHub slug gives the URL
    assert web.run == "git clone -- https://github.com/acme/web.git /srv/web && " \
                      "git -C /srv/web checkout trunk"  # fmt: skip
    docs = steps["clone docs"]  # nothing to clone from: a person's to do
    assert docs.run is None and docs.check == 'git -C "$HOME"/src/docs rev-parse --git-dir'
    assert docs.manual is not None and "give repo docs a `url:`" in docs.manual
    assert steps["claude"].check == "npx @anthropic-ai/claude-code --version"
    assert steps["claude"].decided is None  # no API key named in the machine's env
    assert steps["extra"].decided == (
        "skipped", "off (enabled: false); `coord setup box --enable extra` runs it"
    )  # fmt: skip
    # Really through bash: the quoted values stay values.
    out = subprocess.run(["bash", "-c", greet.check.replace("test -d", "true")],
                         capture_output=True, text=True, env={"HOME": "/h"})  # fmt: skip
    assert out.stdout == "it's $(id) /h {workdir}\n"


def test_enable_turns_a_step_on_and_the_env_can_satisfy_one(setup: Setup) -> None:
    config = config_of(setup, env={"ANTHROPIC_API_KEY": "${KEY}"})
    pb = parse_setup_playbook(HOSTILE_PLAYBOOK)
    steps = {s.name: s for s in plan_steps(pb, config, config.machine("box"), enable=["EXTRA"])}
    assert steps["extra"].decided is None
    decided = steps["claude"].decided
    assert decided is not None and decided[0] == "ok" and "machines.box.env" in decided[1]
    with pytest.raises(UsageError, match=r"--enable worker-user: .* \(steps that are off: extra"):
        plan_steps(pb, config, config.machine("box"), enable=["worker user"])


def test_the_setup_verb_runs_through_real_bash(tmp_path: Path) -> None:
    steps = [("test -e made", "echo making; touch made", 5.0), ("echo look; false", None, 5.0),
             ("false", "echo no luck >&2; false", 5.0), ("echo é; true", "", 5.0)]  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    argv, payload = setup_command(steps, dry_run=True)
    dry = subprocess.run(argv, input=payload, capture_output=True, env=env, check=True)
    assert [(s.state, s.last_line) for s in parse_setup(dry.stdout, 4)] == [
        ("would_change", ""), ("manual", "look"), ("would_change", ""), ("ok", "é")
    ]  # fmt: skip
    assert not (tmp_path / "made").exists()
    argv, payload = setup_command(steps, dry_run=False)
    done = subprocess.run(argv, input=payload, capture_output=True, env=env, check=True)
    assert [(s.state, s.last_line) for s in parse_setup(done.stdout, 4)] == [
        ("changed", "making"), ("manual", "look"), ("failed", "no luck"), ("ok", "é")
    ]  # fmt: skip
    assert (tmp_path / "made").exists()
    # A command cut short is refused before anything runs.
    cut = subprocess.run(argv, input=payload[:-3], capture_output=True, env=env)
    assert cut.returncode == ExitCode.WRITE_FAILED and b"arrived truncated" in cut.stderr
    assert cut.stdout == b""


# ======================================================== 3. real machines


def report_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.stdout.strip(), done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def states(report: dict[str, Any], machine: str) -> dict[str, str]:
    (m,) = [m for m in report["machines"] if m["name"] == machine]
    assert m["error"] is None, m
    return {s["name"]: s["state"] for s in m["steps"]}


def test_a_fresh_machine_over_ssh_is_set_up_once_and_then_left_alone(
    setup: Setup, sshd: SSHServer, claude_cli: Path, run_coord: Run
) -> None:
    assert setup.repo.origin is not None
    setup.extra["repos"] = [{"name": "api", "default_branch": "main",
                             "url": str(setup.repo.origin)}]  # fmt: skip
    clone = setup.root / "clones dir" / "$(touch PWNED)" / "api"  # quoted, never evaluated
    workdir = setup.root / "wd-box"
    setup.add_ssh(sshd, "box", claude_command=str(claude_cli), repo_paths={"api": str(clone)},
                  env={"ANTHROPIC_API_KEY": "${NOT_NEEDED_TO_SET_UP}"})  # fmt: skip
    config = setup.write()
    everything_there = {"git": "ok", "tmux": "ok", "flock": "ok", "sandbox": "ok",
                        "claude": "ok", "claude login": "ok",
                        "worker user": "skipped"}  # fmt: skip

    dry = run_coord("setup", "box", "--dry-run", "--json", config=config)
    assert dry.returncode == 0, dry.stderr
    report = report_of(dry)
    assert report["dry_run"] is True and report["playbook"] == str(DEFAULT_SETUP_PLAYBOOK)
    assert states(report, "box") == {**everything_there, "workdir": "would_change",
                                     "clone api": "would_change"}  # fmt: skip
    assert not workdir.exists() and not (setup.root / "clones dir").exists()

    first = run_coord("setup", "box", "--json", config=config)
    assert first.returncode == 0, first.stdout + first.stderr
    report = report_of(first)
    assert states(report, "box") == {**everything_there, "workdir": "changed",
                                     "clone api": "changed"}  # fmt: skip
    assert report["machines"][0]["ready"] is True
    steps = {s["name"]: s for s in report["machines"][0]["steps"]}
    assert steps["git"]["detail"].startswith("git version ")
    assert steps["claude"]["detail"] == "2.1.197 (Claude Code)"
    assert "ANTHROPIC_API_KEY comes from machines.box.env" in steps["claude login"]["detail"]
    assert workdir.is_dir() and workdir.stat().st_mode & 0o777 == 0o700
    log = subprocess.run(["git", "-C", str(clone), "log", "--format=%s", "-1"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert log.stdout.strip() == setup.repo.log("main", 1)[0]
    assert not list(setup.root.rglob("PWNED"))

    again = run_coord("setup", "box", config=config)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "changed  " not in again.stdout and "would change" not in again.stdout
    assert "box: 8 ok, 0 changed, 1 skipped (ready)" in again.stdout
    assert states(report_of(run_coord("setup", "box", "--json", config=config)), "box") == {
        **everything_there, "workdir": "ok", "clone api": "ok"
    }  # fmt: skip


MY_PLAYBOOK = """\
name: mine
vars:
  marker: "it's here"
steps:
  - name: marker file
    check: grep -qx {marker} {workdir}/marker
    run: mkdir -p {workdir} && printf '%s\\n' {marker} > {workdir}/marker
  - name: always broken
    check: echo checking; false
    run: echo cannot fix this >&2; exit 3
    manual: mend it by hand on {machine}
  - name: just a check
    check: echo nope; false
  - name: needs a person
    check: test -e {workdir}/from-a-person
    manual: put from-a-person in {workdir} on {machine}
  - name: off by default
    enabled: false
    check: test -f {workdir}/enabled
    run: touch {workdir}/enabled
  - name: clone {repo}
    each: repo
    check: git -C {path} rev-parse --git-dir
    run: git clone --quiet -- {url} {path}
"""


def test_a_playbook_of_ones_own_says_what_failed_and_what_is_left_to_a_person(
    setup: Setup, run_coord: Run
) -> None:
    setup.extra["repos"] = [{"name": "api"}, {"name": "web"}]  # web: nowhere to clone from
    setup.add_local("local", repo_paths={"api": str(setup.repo.path),
                                         "web": str(setup.root / "web")})  # fmt: skip
    mine = setup.root / "mine.yml"
    mine.write_text(MY_PLAYBOOK)
    config = setup.write()
    done = run_coord("setup", "local", "--playbook", str(mine), "--json", config=config)
    assert done.returncode == 1, done.stderr
    (m,) = report_of(done)["machines"]
    steps = {s["name"]: s for s in m["steps"]}
    assert {k: s["state"] for k, s in steps.items()} == {
        "marker file": "changed", "always broken": "failed", "just a check": "failed",
        "needs a person": "manual", "off by default": "skipped", "clone api": "ok",
        "clone web": "manual",
    }  # fmt: skip
    assert (setup.root / "wd-local" / "marker").read_text() == "it's here\n"
    assert steps["always broken"]["detail"] == "cannot fix this"
    assert steps["always broken"]["manual"] == "mend it by hand on local"
    assert steps["just a check"] == {
        "name": "just a check", "state": "failed", "detail": "the check failed: nope",
        "manual": None,
    }  # fmt: skip
    assert "give repo web a `url:`" in steps["clone web"]["manual"]
    assert m["ready"] is False

    text = run_coord("setup", "local", "--playbook", str(mine), "--enable", "off-by-default",
                     config=config)  # fmt: skip
    assert text.returncode == 1
    lines = text.stdout.splitlines()
    assert any(ln.split() == ["ok", "marker", "file"] for ln in lines), text.stdout
    assert any(ln.split()[:4] == ["changed", "off", "by", "default"] for ln in lines)
    assert (setup.root / "wd-local" / "enabled").exists()
    todo = lines[lines.index("To do by hand:") + 1 :]
    assert todo[0] == "  local: always broken: mend it by hand on local"
    wd = setup.root / "wd-local"
    assert todo[1] == f"  local: needs a person: put from-a-person in {wd} on local"
    assert todo[2].startswith("  local: clone web: give repo web a `url:`")
