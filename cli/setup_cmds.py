"""``coord version``, ``init``, ``config`` and ``trust``: setting up."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .main import State, coord, fail, pass_state, run
from .output import echo


@coord.command()
def version() -> None:
    """Print coordlib's version."""
    from coordlib._version import __version__

    echo(f"coord {__version__}")


@coord.command()
@click.option("--yes", "-y", is_flag=True, help="Do not ask: include every repo found.")
@click.option(
    "--path",
    "target",
    type=click.Path(dir_okay=False),
    default="coordinator.yml",
    show_default=True,
    help="Where to write the config.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option(
    "--search",
    "search",
    multiple=True,
    type=click.Path(file_okay=False),
    help="Folders to look for git repos in (default: . and ~/src).",
)
def init(yes: bool, target: str, force: bool, search: tuple[str, ...]) -> None:
    """Write a working single-machine coordinator.yml for the git repos found here."""
    from coordlib.config_init import discover_repos, render_init_config
    from coordlib.config_yaml import parse_config

    path = Path(target)
    if path.exists() and not force:
        fail(f"{path} already exists; pass --force to overwrite it")
    # Folders given explicitly must exist (discover_repos says so); the defaults may not.
    dirs = [Path(s) for s in search] or [d for d in (Path.cwd(), Path.home() / "src") if d.is_dir()]
    found = discover_repos(dirs)
    chosen = found
    if not yes:
        if found:
            echo("Git repos found:")
            for i, repo in enumerate(found, 1):
                echo(f"  {i}. {repo}")
            answer = click.prompt(
                "Which to include (numbers, comma-separated; empty for all)",
                default="",
                show_default=False,
            )
            if answer.strip():
                picks = {int(x) for x in answer.replace(" ", "").split(",") if x.isdigit()}
                chosen = [r for i, r in enumerate(found, 1) if i in picks]
        else:
            echo("No git repos found; writing a config without repos.")
    text = render_init_config(chosen)
    parse_config(text, path=path, base_dir=path.resolve().parent)  # never write a broken file
    path.write_text(text)
    echo(f"wrote {path} with {len(chosen)} repo(s); check it with `coord config`")


@coord.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_state
def show_config(state: State, as_json: bool) -> None:
    """Print the parsed config (secrets are references, never values)."""
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


@coord.command()
@click.argument("machine")
@click.option("--yes", "-y", is_flag=True, help="Record the key without asking.")
@click.option("--replace", is_flag=True, help="Replace a recorded key that changed.")
@pass_state
def trust(state: State, machine: str, yes: bool, replace: bool) -> None:
    """Show MACHINE's host key fingerprint and record it in its known_hosts file."""
    from coordlib.runtime.known_hosts import trust_host_key
    from coordlib.runtime.ssh import fetch_host_key

    coordinator = state.coordinator()
    target = coordinator.ssh_target(machine)
    info = run(lambda: fetch_host_key(target))
    echo(f"{machine} ({info.pattern}) presents {info.algorithm} key {info.fingerprint}")
    if info.state == "trusted":
        echo(f"already trusted in {target.known_hosts_path}")
        return
    if info.state == "changed":
        echo("WARNING: this is NOT the key recorded for it before.", err=True)
        if not replace:
            fail("refusing to replace the recorded key; pass --replace if you know why it changed")
    if not yes and not click.confirm("Trust this key?", default=False):
        fail("not trusted")
    path = trust_host_key(target, info, replace=replace)
    echo(f"recorded in {path}")
