"""``coord version``, ``init``, ``config`` and ``trust``: setting up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .main import State, coord, fail, pass_state, run
from .output import echo, echo_json

if TYPE_CHECKING:
    from coordlib.config import Config
    from coordlib.config_check import RepoCheck


def _machines(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    from .complete import complete_machines  # only when completing: `coord version` loads less

    return complete_machines(ctx, param, incomplete)


@coord.command(short_help="Print coord's version.")
@click.option("--json", "as_json", is_flag=True, help="Print {version, python, claude_cli}.")
def version(as_json: bool) -> None:
    """Print coordlib's version; with --json, also Python's and the Claude Code CLI's.

    \b
    Examples:
      coord version
      coord version --json        # {"version", "python", "claude_cli": {path, version} or null}
    """
    from coordlib._version import __version__

    if not as_json:
        echo(f"coord {__version__}")
        return
    import platform
    import shutil

    from coordlib.testing.claude_cli import claude_version

    found = shutil.which("claude")  # what a local machine's default claude_command runs
    claude = None
    if found is not None:
        claude = {"path": found, "version": claude_version(Path(found), timeout=15)}
    echo_json({"version": __version__, "python": platform.python_version(), "claude_cli": claude})


@coord.command(short_help="Write a coordinator.yml for the repos found here.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask: every repo found, default forge.")
@click.option(
    "--path",
    "target",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to write the config (default: --config, else ./coordinator.yml).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option(
    "--search",
    "search",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="Folders to look for git repos in (default: . and ~/src).",
)
@click.option(
    "--forge",
    type=click.Choice(["github", "local"]),
    default=None,
    help="Where issues and pull requests live (default: github when a repo's origin is there).",
)
@click.option(
    "--slash-command",
    "slash",
    is_flag=True,
    help="Only install the /coordinator command for Claude Code in ./.claude/commands/.",
)
@pass_state
def init(
    state: State, yes: bool, target: str | None, force: bool, search: tuple[str, ...],
    forge: str | None, slash: bool,
) -> None:  # fmt: skip
    """Write a working single-machine coordinator.yml for the git repos found here, check
    that each can take work, and print the commands to a first dispatch.

    A repo whose origin is on github.com can keep its issues and pull requests there; the
    local forge (files beside the config) needs no account.  Nothing goes over the network:
    origin's branches are read as this checkout last fetched them.

    \b
    Examples:
      coord init                             # ask which repos, and which forge
      coord init --yes                       # every repo in . and ~/src, the default forge
      coord init --search ~/code --forge local
      coord init --yes --force --path ~/.coord/coordinator.yml
      coord init --slash-command             # then, in Claude Code: /coordinator triage
    """
    if slash:
        from coordlib.slash import install_slash_command

        where, wrote = install_slash_command(Path.cwd(), force=force)
        said = "installed" if wrote else "already up to date:"
        echo(f"{said} {where}; in Claude Code here, type /coordinator (e.g. /coordinator triage)")
        return
    from coordlib.config_check import check_repo
    from coordlib.config_init import discover_repos, render_init_config
    from coordlib.config_yaml import parse_config

    path = Path(target or state.config or "coordinator.yml")
    if path.exists() and not force:
        fail(f"{path} already exists; pass --force to overwrite it")
    dirs = [Path(s) for s in search] or [d for d in (Path.cwd(), Path.home() / "src") if d.is_dir()]
    found = discover_repos(dirs)
    if not found:
        echo("No git repos found; writing a config without repos.")
    chosen = found if yes or not found else _pick(found)
    checks = [check_repo(p) for p in chosen]
    forge = forge or _ask_forge(checks, ask=not yes)
    text = render_init_config(checks, forge=forge)
    config = parse_config(text, path=path, base_dir=path.resolve().parent)  # never write a broken
    path.write_text(text)
    flag = _config_flag(path)
    again = " ".join(["coord", *(["--config", flag] if flag else []), "config"])
    echo(f"wrote {path} with {len(chosen)} repo(s); check it with `{again}`")
    names = _names(config, checks)
    _report_forges(config, checks, names, forge)
    _report_readiness(checks, names)
    ready = [names[c.path] for c in checks if c.ready]
    _print_next(config, repo=ready[0] if ready else None, flag=flag)


def _pick(found: list[Path]) -> list[Path]:
    """Ask which of the repos found to include, until the answer names them."""
    echo("Git repos found:")
    for i, repo in enumerate(found, 1):
        echo(f"  {i}. {repo}")
    while True:
        answer = click.prompt(
            "Which to include (numbers, comma-separated; empty for all)",
            default="",
            show_default=False,
        )
        words = [w for w in answer.replace(",", " ").split() if w]
        if not words:
            return found
        if all(w.isdigit() and 1 <= int(w) <= len(found) for w in words):
            picks = {int(w) for w in words}
            return [r for i, r in enumerate(found, 1) if i in picks]
        echo(f"Give numbers from 1 to {len(found)}, e.g. 1,3.")


def _ask_forge(checks: list[RepoCheck], *, ask: bool) -> str:
    """Return the forge to use: github when a repo's origin is there (asked unless `ask` is off)."""
    on_github = [c for c in checks if c.github]
    if not on_github:
        return "local"
    if not ask:
        return "github"
    echo("Origin on GitHub: " + ", ".join(f"{c.path.name} ({c.github})" for c in on_github))
    answer: str = click.prompt(
        "Keep their issues and pull requests on",
        type=click.Choice(["github", "local"]),
        default="github",
    )
    return answer


def _names(config: Config, checks: list[RepoCheck]) -> dict[Path, str]:
    """Map each checkout to the repo name the written config gives it."""
    paths = {Path(p): name for m in config.machines.values() for name, p in m.repo_paths.items()}
    return {c.path: paths.get(c.path, c.path.name) for c in checks}


def _config_flag(path: Path) -> str | None:
    """Return `path` when the usual lookup would not find it (so commands need --config)."""
    from coordlib.config import find_config
    from coordlib.errors import ConfigError

    try:
        if find_config().resolve() == path.resolve():
            return None
    except ConfigError:
        pass
    return str(path)


def _report_forges(
    config: Config, checks: list[RepoCheck], names: dict[Path, str], forge: str
) -> None:
    if not checks:
        return
    on_github, local = [], []
    for c in checks:
        repo = config.repo(names[c.path])
        if repo.github and repo.forge != "local":
            on_github.append(f"{repo.name} ({repo.github})")
        else:
            local.append(repo.name)
    parts = [f"github for {', '.join(on_github)}"] if on_github else []
    if local:
        why = " (origin not on github.com)" if forge == "github" else ""
        parts.append(f"local for {', '.join(local)}{why}")
    echo("forge: " + "; ".join(parts))
    if forge == "github" and any(c.github for c in checks):
        from coordlib.forge.github import resolve_token

        if not resolve_token():
            echo("  no GitHub token found yet: set GITHUB_TOKEN or GH_TOKEN, or `gh auth login`")


def _report_readiness(checks: list[RepoCheck], names: dict[Path, str]) -> None:
    ready = [f"{names[c.path]} ({c.default_branch})" for c in checks if c.ready]
    if ready:
        echo("ready to dispatch: " + ", ".join(ready))
    for c in checks:
        if c.ready:
            continue
        echo(f"{names[c.path]} cannot take work yet ({c.path}):")
        for problem in c.problems:
            echo(f"  - {problem.what}")
            echo(f"      {problem.fix}")


def _print_next(config: Config, *, repo: str | None, flag: str | None) -> None:
    from coordlib.config_init import next_commands

    steps = next_commands(config, repo=repo, config_path=flag)
    width = max(len(command) for command, _ in steps)
    echo("Next:")
    for command, why in steps:
        echo(f"  {command.ljust(width)}  # {why}")


@coord.command("config", short_help="Print the parsed config.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_state
def show_config(state: State, as_json: bool) -> None:
    """Print the parsed config (secrets are references, never values).

    \b
    Examples:
      coord config
      coord --config ~/fleet.yml config --json
    """
    import yaml

    from coordlib.config import find_config
    from coordlib.config_load import load_config

    config = load_config(find_config(state.config))
    data = config.to_dict()
    if as_json:
        echo(json.dumps(data, indent=2))
    else:
        # Read by people: a machine with no repos listed serves all of them; say so.
        for m in data["machines"].values():
            if not m["repos"]:
                m["repos"] = "all"
        echo(f"# {config.path}")
        echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())


@coord.command(short_help="Record a machine's SSH host key.")
@click.argument("machine", shell_complete=_machines)
@click.option("--yes", "-y", is_flag=True, help="Record the key without asking.")
@click.option("--replace", is_flag=True, help="Replace a recorded key that changed.")
@click.option("--json", "as_json", is_flag=True, help="Print the key and what was done as JSON.")
@pass_state
def trust(state: State, machine: str, yes: bool, replace: bool, as_json: bool) -> None:
    """Show MACHINE's host key fingerprint and record it in its known_hosts file.

    Compare the fingerprint with the machine's own
    (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` there) before you say yes.

    \b
    Examples:
      coord trust gpu-box
      coord trust gpu-box --yes --json
      coord trust gpu-box --replace          # its key changed, and you know why
    """
    import functools

    from coordlib.runtime.known_hosts import fetch_host_key, trust_host_key

    coordinator = state.coordinator()
    target = coordinator.ssh_target(machine)
    # Where the connection goes (the ssh config's HostName and Port for an alias), and the
    # name and file its key is checked under: trust records the key exactly there.
    end = target.endpoint()
    info = run(lambda: fetch_host_key(target))
    # With --json, stdout carries the JSON alone: what people read goes to stderr.
    say = functools.partial(echo, err=as_json)
    say(f"{machine} ({end.where}) presents {info.algorithm} key {info.fingerprint}")
    facts: dict[str, Any] = {
        "machine": machine, "host": end.host, "port": end.port,
        "fingerprint": info.fingerprint, "key_type": info.algorithm, "state": info.state,
        "known_hosts": str(end.known_hosts[0]), "recorded": False, "replaced": False,
    }  # fmt: skip
    if info.state == "trusted":
        say(f"already trusted in {end.known_hosts[0]} as {info.pattern}")
        if as_json:
            echo_json(facts)
        return
    if info.state == "changed":
        echo("WARNING: this is NOT the key recorded for it before.", err=True)
        if not replace:
            fail("refusing to replace the recorded key; pass --replace if you know why it changed")
    if not yes and not click.confirm("Trust this key?", default=False, err=as_json):
        fail("not trusted")
    path = trust_host_key(target, info, replace=replace)
    facts.update(known_hosts=str(path), recorded=True, replaced=info.state == "changed")
    say(f"recorded in {path} as {info.pattern}")
    if as_json:
        echo_json(facts)
