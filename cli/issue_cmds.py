"""``coord issue new|list|show|label|comment|close`` and ``coord issues``: the forge, by hand."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .main import State, coord, pass_state, run
from .output import echo, echo_json

if TYPE_CHECKING:
    from coordlib.forge import Forge, Issue

T = TypeVar("T")


def _with_forge(state: State, repo: str, work: Callable[[Forge], Awaitable[T]]) -> T:
    async def go() -> T:
        async with state.coordinator() as c:
            return await work(c.forge(repo))

    return run(go)


def _line(i: Issue) -> str:
    labels = f"  [{', '.join(i.labels)}]" if i.labels else ""
    closed = " (closed)" if i.state == "closed" else ""
    return f"#{i.number:<5} {i.title}{closed}{labels}"


def _repos(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    from .complete import complete_repos  # only when completing: `coord issue` loads less

    return complete_repos(ctx, param, incomplete)


@coord.group(short_help="Open, list, label, comment on and close issues.")
def issue() -> None:
    """Read and write a repo's issues on its forge (local or GitHub).

    \b
    Examples:
      coord issue new api --title "Fix the login redirect" --label bug
      coord issue list api --label bug
      coord issue show api 42 --json
      coord issue close api 42
    """


@issue.command("new", short_help="Open a new issue on a repo.")
@click.argument("repo", shell_complete=_repos)
@click.option("--title", "-t", required=True, help="The issue's title.")
@click.option("--body", "-b", default="", help="The issue's text (Markdown).")
@click.option("--body-file", type=click.File("r"), help="Read the text from a file (- for stdin).")
@click.option("--label", "-l", "labels", multiple=True, help="A label (repeat for more).")
@click.option("--json", "as_json", is_flag=True, help="Print the issue as JSON.")
@pass_state
def issue_new(state: State, repo: str, title: str, body: str, body_file: Any,
              labels: tuple[str, ...], as_json: bool) -> None:  # fmt: skip
    """Open a new issue on REPO.

    \b
    Examples:
      coord issue new api --title "Fix the login redirect"
      coord issue new api -t "Add rate limits" -l hard --body-file notes.md
      echo "Steps to reproduce: ..." | coord issue new api -t "Crash on save" --body-file -
    """
    if body_file is not None:
        if body:
            raise click.UsageError("give the text with --body or --body-file, not both")
        body = body_file.read()
    i = _with_forge(state, repo, lambda f: f.create_issue(title, body=body, labels=labels))
    if as_json:
        echo_json(i.to_dict())
    else:
        echo(f"{repo}#{i.number} opened: {i.title}")


@issue.command("list", short_help="List a repo's issues.")
@click.argument("repo", shell_complete=_repos)
@click.option("--state", "which", type=click.Choice(["open", "closed", "all"]), default="open",
              help="Which issues (default: open).")  # fmt: skip
@click.option("--label", "-l", "labels", multiple=True, help="Only issues with every label.")
@click.option("--json", "as_json", is_flag=True, help="Print the issues as JSON.")
@pass_state
def issue_list(state: State, repo: str, which: str, labels: tuple[str, ...], as_json: bool) -> None:
    """List REPO's issues.

    \b
    Examples:
      coord issue list api
      coord issue list api --state all --label bug
      coord issue list api --json
    """
    issues = _with_forge(state, repo, lambda f: f.list_issues(state=which, labels=labels))
    if as_json:
        echo_json([i.to_dict() for i in issues])
        return
    for i in issues:
        echo(_line(i))
    if not issues:
        echo(f"no {which} issues on {repo}" + (f" labelled {', '.join(labels)}" if labels else ""))


@issue.command("show", short_help="Show one issue with its comments.")
@click.argument("repo", shell_complete=_repos)
@click.argument("number", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print the issue and comments as JSON.")
@pass_state
def issue_show(state: State, repo: str, number: int, as_json: bool) -> None:
    """Show issue NUMBER of REPO with its comments.

    \b
    Examples:
      coord issue show api 42
      coord issue show api 42 --json
    """
    i = _with_forge(state, repo, lambda f: f.get_issue(number))
    if as_json:
        echo_json(i.to_dict())
        return
    echo(_line(i))
    if i.body:
        echo(f"\n{i.body.rstrip()}")
    for c in i.comments:
        echo(f"\n--- {c.author or 'comment'} {c.created_at}\n{c.body.rstrip()}")


@issue.command("label", short_help="Add or remove an issue's labels.")
@click.argument("repo", shell_complete=_repos)
@click.argument("number", type=click.IntRange(min=1))
@click.argument("add", nargs=-1)
@click.option("--remove", "-r", multiple=True, help="Remove this label (repeat for more).")
@click.option("--json", "as_json", is_flag=True, help="Print {repo, number, labels} as JSON.")
@pass_state
def issue_label(state: State, repo: str, number: int, add: tuple[str, ...],
                remove: tuple[str, ...], as_json: bool) -> None:  # fmt: skip
    """Add labels ADD to (or --remove them from) issue NUMBER of REPO.

    \b
    Examples:
      coord issue label api 42 bug hard
      coord issue label api 42 --remove hard
      coord issue label api 42 chore --remove bug --json
    """
    if not add and not remove:
        raise click.UsageError("name a label to add, or --remove LABEL")

    async def work(f: Forge) -> tuple[str, ...]:
        labels: tuple[str, ...] = ()
        for label in remove:
            labels = await f.remove_label(number, label)
        if add:
            labels = await f.add_labels(number, add)
        return labels

    labels = _with_forge(state, repo, work)
    if as_json:
        echo_json({"repo": repo, "number": number, "labels": list(labels)})
        return
    echo(f"{repo}#{number}: {', '.join(labels) or '(no labels)'}")


@issue.command("comment", short_help="Comment on an issue.")
@click.argument("repo", shell_complete=_repos)
@click.argument("number", type=click.IntRange(min=1))
@click.argument("body")
@click.option("--json", "as_json", is_flag=True, help="Print {repo, number, comment} as JSON.")
@pass_state
def issue_comment(state: State, repo: str, number: int, body: str, as_json: bool) -> None:
    """Post BODY as a comment on issue NUMBER of REPO.

    \b
    Examples:
      coord issue comment api 42 "Reproduced on main: the redirect drops the query."
      coord issue comment api 42 "$(cat notes.md)" --json
    """
    c = _with_forge(state, repo, lambda f: f.comment(number, body))
    if as_json:
        echo_json({"repo": repo, "number": number, "comment": c.to_dict()})
        return
    echo(f"{repo}#{number}: comment {c.id} posted" + (f": {c.url}" if c.url else ""))


@issue.command("close", short_help="Close or reopen an issue.")
@click.argument("repo", shell_complete=_repos)
@click.argument("number", type=click.IntRange(min=1))
@click.option("--reopen", is_flag=True, help="Reopen it instead.")
@click.option("--json", "as_json", is_flag=True, help="Print {repo, number, state} as JSON.")
@pass_state
def issue_close(state: State, repo: str, number: int, reopen: bool, as_json: bool) -> None:
    """Close (or --reopen) issue NUMBER of REPO.

    \b
    Examples:
      coord issue close api 42
      coord issue close api 42 --reopen --json
    """
    i = _with_forge(state, repo, lambda f: f.set_state(number, "open" if reopen else "closed"))
    if as_json:
        echo_json({"repo": repo, "number": i.number, "state": i.state})
        return
    echo(f"{repo}#{number} {i.state}")


@coord.command(short_help="Show issues by section, with stage and cost.")
@click.argument("repo", required=False, shell_complete=_repos)
@click.option("--json", "as_json", is_flag=True, help="Print the sections as JSON.")
@pass_state
def issues(state: State, repo: str | None, as_json: bool) -> None:
    """Show REPO's issues (default: every repo's) by section: New, Refining, Pending,
    In progress, Review, Ready to merge, Done, Needs human; with each one's pipeline stage
    and cost.

    \b
    Examples:
      coord issues
      coord issues api
      coord issues api --json
    """
    from coordlib.errors import ConfigError

    async def go() -> tuple[dict[str, dict[str, list[Issue]]], dict[str, Any]]:
        async with state.coordinator() as c:
            repos = [repo] if repo else list(c.config.repos)
            if not repos:
                where = str(c.config.path) if c.config.path is not None else None
                raise ConfigError("no repos in the config", path=where,
                                  hint="add one under `repos:`, or run `coord init`")  # fmt: skip
            pipes = {p.key: p for p in c.pipelines()}
            return {r: await c.issue_sections(r) for r in repos}, pipes

    result, pipes = run(go)

    def pipeline_of(r: str, i: Issue) -> dict[str, Any] | None:
        p = pipes.get(f"{r}#{i.number}")
        if p is None:
            return None
        return {"stage": p.stage, "round": p.round, "pr": p.pr, "cost_usd": p.cost_usd,
                "cost_by_tier": p.cost_by_tier(), "reason": p.reason}  # fmt: skip

    if as_json:
        echo_json({r: {k: [{**i.to_dict(), "pipeline": pipeline_of(r, i)} for i in v]
                       for k, v in s.items()} for r, s in result.items()})  # fmt: skip
        return
    for r, sections in result.items():
        if len(result) > 1:
            echo(f"== {r}")
        for name, items in sections.items():
            echo(f"{name} ({len(items)})")
            for i in items:
                p = pipeline_of(r, i)
                extra = f"  ({p['stage']}, ${p['cost_usd']:.2f})" if p else ""
                echo(f"  {_line(i)}{extra}")
