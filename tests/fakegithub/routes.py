"""Route handlers of the fake GitHub: one function per documented operation.

A handler gets a `Context` and returns (status, JSON body); it raises `ApiError` for
GitHub's error answers.  Handlers run under the server's lock, one at a time.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .model import (
    ApiError,
    IssueRecord,
    Label,
    Repo,
    invalid,
    not_found,
    now_iso,
)

if TYPE_CHECKING:
    from .server import FakeGitHub

Handler = Callable[["Context"], tuple[int, Any]]
ROUTES: dict[tuple[str, str], Handler] = {}


@dataclass
class Context:
    """What a route handler gets."""

    app: FakeGitHub
    params: dict[str, str]
    query: dict[str, str]
    body: Any
    login: str
    path: str  # below the prefix, without query
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers

    @property
    def repo(self) -> Repo:
        key = (self.params["owner"].lower(), self.params["repo"].lower())
        repo = self.app.repos.get(key)
        if repo is None:
            raise not_found()
        return repo

    def issue(self, key: str = "issue_number") -> IssueRecord:
        record = self.repo.issues.get(int(self.params[key]))
        if record is None:
            raise not_found()
        return record

    def pull(self) -> IssueRecord:
        record = self.issue("pull_number")
        if not record.is_pull:
            raise not_found()
        return record


def route(method: str, template: str) -> Callable[[Handler], Handler]:
    """Register a handler for a documented operation."""

    def register(fn: Handler) -> Handler:
        ROUTES[(method, template)] = fn
        return fn

    return register


def paginate(ctx: Context, items: list[Any]) -> list[Any]:
    per_page = min(int(ctx.query.get("per_page", 30)), 100)
    page = max(int(ctx.query.get("page", 1)), 1)
    last = max(math.ceil(len(items) / per_page), 1)
    links = []

    def link(n: int, rel: str) -> str:
        query = {**ctx.query, "page": str(n)}
        return f'<{ctx.app.api_url}{ctx.path}?{urllib.parse.urlencode(query)}>; rel="{rel}"'

    if page > 1:
        links += [link(page - 1, "prev"), link(1, "first")]
    if page < last:
        links += [link(page + 1, "next"), link(last, "last")]
    if links:
        ctx.headers["Link"] = ", ".join(links)
    return items[(page - 1) * per_page : page * per_page]


def sorted_records(ctx: Context, records: list[IssueRecord]) -> list[IssueRecord]:
    sort = ctx.query.get("sort", "created")
    default = "desc" if sort == "created" or "sort" not in ctx.query else "asc"
    reverse = ctx.query.get("direction", default) == "desc"
    keys: dict[str, Callable[[IssueRecord], Any]] = {
        "created": lambda r: (r.created_at, r.number),
        "updated": lambda r: (r.updated_at, r.number),
        "comments": lambda r: (len(r.comments), r.number),
        "popularity": lambda r: (len(r.comments), r.number),
        "long-running": lambda r: (r.created_at, r.number),
    }
    return sorted(records, key=keys[sort], reverse=reverse)


def _label_names(raw: list[Any]) -> list[str]:
    return [item["name"] if isinstance(item, dict) else str(item) for item in raw]


def _ensure_labels(ctx: Context, names: list[str]) -> list[str]:
    """Return the labels' canonical names, creating missing ones (as GitHub does)."""
    repo = ctx.repo
    out = []
    for name in names:
        if name.lower() not in repo.labels:
            repo.labels[name.lower()] = Label(id=ctx.app.next_id(), name=name)
        out.append(repo.labels[name.lower()].name)
    return out


def touch(rec: IssueRecord) -> None:
    rec.updated_at = now_iso()


@route("get", "/user")
def _authenticated_user(ctx: Context) -> tuple[int, Any]:
    """The user the token acts as (a public profile: the token has no `user` scope)."""
    profile = {
        "name": None, "company": None, "blog": "", "location": None, "email": None,
        "hireable": None, "bio": None, "public_repos": 0, "public_gists": 0, "followers": 0,
        "following": 0, "created_at": "2020-01-01T00:00:00Z",
        "updated_at": "2020-01-01T00:00:00Z",
    }  # fmt: skip
    return 200, {**ctx.app.user_json(ctx.login), **profile}


@route("get", "/rate_limit")
def _rate_limit(ctx: Context) -> tuple[int, Any]:
    app = ctx.app
    core = {
        "limit": app._rate_limit,
        "remaining": app._rate_limit - app._rate_used,
        "reset": app._rate_reset,
        "used": app._rate_used,
    }
    search = {"limit": 30, "remaining": 30, "reset": app._rate_reset, "used": 0}
    return 200, {"resources": {"core": core, "search": search}, "rate": core}


@route("get", "/repos/{owner}/{repo}")
def _get_repo(ctx: Context) -> tuple[int, Any]:
    return 200, ctx.app.repo_json(ctx.repo)


@route("get", "/repos/{owner}/{repo}/issues")
def _list_issues(ctx: Context) -> tuple[int, Any]:
    repo = ctx.repo
    state = ctx.query.get("state", "open")
    wanted = {n.strip().lower() for n in ctx.query.get("labels", "").split(",") if n.strip()}
    found = [
        r
        for r in repo.issues.values()
        if (state == "all" or r.state == state) and wanted <= {n.lower() for n in r.labels}
    ]
    return 200, [ctx.app.issue_json(repo, r) for r in paginate(ctx, sorted_records(ctx, found))]


@route("post", "/repos/{owner}/{repo}/issues")
def _create_issue(ctx: Context) -> tuple[int, Any]:
    repo = ctx.repo
    body = ctx.body
    if not str(body.get("title", "")).strip():
        raise invalid({"resource": "Issue", "field": "title", "code": "missing_field"})
    stamp = now_iso()
    rec = IssueRecord(
        number=len(repo.issues) + 1,
        id=ctx.app.next_id(),
        title=str(body["title"]),
        body=body.get("body"),
        user=ctx.login,
        created_at=stamp,
        updated_at=stamp,
        labels=_ensure_labels(ctx, _label_names(body.get("labels") or [])),
    )
    repo.issues[rec.number] = rec
    ctx.headers["Location"] = f"{ctx.app.repo_api(repo)}/issues/{rec.number}"
    return 201, ctx.app.issue_json(repo, rec)


@route("get", "/repos/{owner}/{repo}/issues/{issue_number}")
def _get_issue(ctx: Context) -> tuple[int, Any]:
    return 200, ctx.app.issue_json(ctx.repo, ctx.issue())


@route("patch", "/repos/{owner}/{repo}/issues/{issue_number}")
def _update_issue(ctx: Context) -> tuple[int, Any]:
    rec = ctx.issue()
    body = ctx.body or {}
    if body.get("title") is not None:
        rec.title = str(body["title"])
    if "body" in body:
        rec.body = body["body"]
    if body.get("labels") is not None:
        rec.labels = _ensure_labels(ctx, _label_names(body["labels"]))
    state = body.get("state")
    if state and state != rec.state:
        if rec.is_pull and rec.merged and state == "open":
            raise invalid(
                {
                    "resource": "PullRequest",
                    "code": "custom",
                    "message": "state cannot be changed. The pull request is merged.",
                }
            )
        rec.state = state
        rec.closed_at = now_iso() if state == "closed" else None
        rec.state_reason = body.get("state_reason") or (
            "completed" if state == "closed" else "reopened"
        )
    touch(rec)
    return 200, ctx.app.issue_json(ctx.repo, rec)


@route("get", "/repos/{owner}/{repo}/issues/{issue_number}/comments")
def _list_comments(ctx: Context) -> tuple[int, Any]:
    rec = ctx.issue()
    return 200, [ctx.app.comment_json(ctx.repo, rec, c) for c in paginate(ctx, rec.comments)]


@route("post", "/repos/{owner}/{repo}/issues/{issue_number}/comments")
def _create_comment(ctx: Context) -> tuple[int, Any]:
    rec = ctx.issue()
    if not ctx.body["body"].strip():
        raise invalid({"resource": "IssueComment", "field": "body", "code": "missing_field"})
    if len(ctx.body["body"]) > 65536:  # GitHub's own limit, in characters
        raise invalid({"resource": "IssueComment", "field": "body", "code": "custom",
                       "message": "body is too long (maximum is 65536 characters)"})  # fmt: skip
    comment = {
        "id": ctx.app.next_id(),
        "body": ctx.body["body"],
        "user": ctx.login,
        "created_at": now_iso(),
    }
    rec.comments.append(comment)
    touch(rec)
    return 201, ctx.app.comment_json(ctx.repo, rec, comment)


@route("get", "/repos/{owner}/{repo}/issues/{issue_number}/labels")
def _issue_labels(ctx: Context) -> tuple[int, Any]:
    rec = ctx.issue()
    return 200, [
        ctx.app.label_json(ctx.repo, n) for n in paginate(ctx, sorted(rec.labels, key=str.lower))
    ]


@route("post", "/repos/{owner}/{repo}/issues/{issue_number}/labels")
def _add_labels(ctx: Context) -> tuple[int, Any]:
    rec = ctx.issue()
    names = _ensure_labels(ctx, _label_names((ctx.body or {}).get("labels") or []))
    for name in names:
        if name.lower() not in {n.lower() for n in rec.labels}:
            rec.labels.append(name)
    touch(rec)
    return 200, [ctx.app.label_json(ctx.repo, n) for n in sorted(rec.labels, key=str.lower)]


@route("delete", "/repos/{owner}/{repo}/issues/{issue_number}/labels/{name}")
def _remove_label(ctx: Context) -> tuple[int, Any]:
    rec = ctx.issue()
    name = ctx.params["name"].lower()
    if name not in {n.lower() for n in rec.labels}:
        raise ApiError(404, "Label does not exist")
    rec.labels = [n for n in rec.labels if n.lower() != name]
    touch(rec)
    return 200, [ctx.app.label_json(ctx.repo, n) for n in sorted(rec.labels, key=str.lower)]


@route("get", "/repos/{owner}/{repo}/labels")
def _list_labels(ctx: Context) -> tuple[int, Any]:
    repo = ctx.repo
    names = sorted(label.name for label in repo.labels.values())
    return 200, [ctx.app.label_json(repo, n) for n in paginate(ctx, names)]


@route("post", "/repos/{owner}/{repo}/labels")
def _create_label(ctx: Context) -> tuple[int, Any]:
    repo = ctx.repo
    name = ctx.body["name"]
    if name.lower() in repo.labels:
        raise invalid({"resource": "Label", "code": "already_exists", "field": "name"})
    repo.labels[name.lower()] = Label(
        id=ctx.app.next_id(),
        name=name,
        color=ctx.body.get("color", "ededed"),
        description=ctx.body.get("description"),
    )
    return 201, ctx.app.label_json(repo, name)
