"""Route handlers for check runs and commit statuses on a commit."""

from __future__ import annotations

from typing import Any

from .model import invalid, now_iso
from .pulls import resolve_ref
from .routes import Context, paginate, route


def _check_run_json(ctx: Context, run: dict[str, Any]) -> dict[str, Any]:
    api = f"{ctx.app.repo_api(ctx.repo)}/check-runs/{run['id']}"
    return {
        "id": run["id"],
        "head_sha": run["head_sha"],
        "node_id": f"CR_{run['id']}",
        "external_id": run.get("external_id", ""),
        "url": api,
        "html_url": f"{ctx.app.url}/{ctx.repo.full_name}/runs/{run['id']}",
        "details_url": run.get("details_url"),
        "status": run["status"],
        "conclusion": run.get("conclusion"),
        "started_at": run["started_at"],
        "completed_at": run.get("completed_at"),
        "output": {
            "title": None,
            "summary": None,
            "text": None,
            "annotations_count": 0,
            "annotations_url": f"{api}/annotations",
        },
        "name": run["name"],
        "check_suite": {"id": run["suite"]},
        "app": None,
        "pull_requests": [],
    }


@route("post", "/repos/{owner}/{repo}/check-runs")
def _create_check_run(ctx: Context) -> tuple[int, Any]:
    body = ctx.body
    conclusion = body.get("conclusion")
    status = body.get("status", "completed" if conclusion else "queued")
    if status == "completed" and not conclusion:
        raise invalid({"resource": "CheckRun", "field": "conclusion", "code": "missing_field"})
    if ctx.repo.git.resolve(body["head_sha"]) is None:
        raise invalid({"resource": "CheckRun", "field": "head_sha", "code": "invalid"})
    stamp = now_iso()
    run = {
        "id": ctx.app.next_id(),
        "suite": ctx.app.next_id(),
        "name": body["name"],
        "head_sha": body["head_sha"],
        "status": status,
        "conclusion": conclusion,
        "started_at": body.get("started_at", stamp),
        "completed_at": stamp if status == "completed" else None,
        "details_url": body.get("details_url"),
        "external_id": body.get("external_id", ""),
    }
    ctx.repo.check_runs.append(run)
    return 201, _check_run_json(ctx, run)


@route("get", "/repos/{owner}/{repo}/commits/{ref}/check-runs")
def _list_check_runs(ctx: Context) -> tuple[int, Any]:
    sha = resolve_ref(ctx, ctx.params["ref"])
    runs = [r for r in ctx.repo.check_runs if r["head_sha"] == sha]
    if "check_name" in ctx.query:
        runs = [r for r in runs if r["name"] == ctx.query["check_name"]]
    if "status" in ctx.query:
        runs = [r for r in runs if r["status"] == ctx.query["status"]]
    if ctx.query.get("filter", "latest") == "latest":
        latest: dict[str, dict[str, Any]] = {}
        for run in runs:
            latest[run["name"]] = run
        runs = list(latest.values())
    runs = sorted(runs, key=lambda r: -r["id"])
    return 200, {
        "total_count": len(runs),
        "check_runs": [_check_run_json(ctx, r) for r in paginate(ctx, runs)],
    }


def _status_json(ctx: Context, s: dict[str, Any], *, simple: bool) -> dict[str, Any]:
    data = {
        "url": f"{ctx.app.repo_api(ctx.repo)}/statuses/{s['sha']}",
        "avatar_url": None,
        "id": s["id"],
        "node_id": f"SC_{s['id']}",
        "state": s["state"],
        "description": s["description"],
        "target_url": s["target_url"],
        "context": s["context"],
        "created_at": s["created_at"],
        "updated_at": s["created_at"],
    }
    if not simple:
        data["creator"] = ctx.app.user_json(s["user"])
    return data


@route("post", "/repos/{owner}/{repo}/statuses/{sha}")
def _create_status(ctx: Context) -> tuple[int, Any]:
    sha = ctx.repo.git.resolve(ctx.params["sha"])
    if sha is None or sha != ctx.params["sha"]:
        raise invalid({"resource": "Status", "field": "sha", "code": "invalid"})
    body = ctx.body
    status = {
        "id": ctx.app.next_id(),
        "sha": sha,
        "state": body["state"],
        "description": body.get("description"),
        "target_url": body.get("target_url"),
        "context": body.get("context", "default"),
        "created_at": now_iso(),
        "user": ctx.login,
    }
    ctx.repo.statuses.append(status)
    return 201, _status_json(ctx, status, simple=False)


@route("get", "/repos/{owner}/{repo}/commits/{ref}/status")
def _combined_status(ctx: Context) -> tuple[int, Any]:
    repo = ctx.repo
    sha = resolve_ref(ctx, ctx.params["ref"])
    latest: dict[str, dict[str, Any]] = {}
    for status in repo.statuses:
        if status["sha"] == sha:
            latest[status["context"]] = status
    states = {s["state"] for s in latest.values()}
    state = (
        "failure"
        if states & {"failure", "error"}
        else "pending"
        if "pending" in states or not states
        else "success"
    )
    statuses = sorted(latest.values(), key=lambda s: s["context"])
    api = ctx.app.repo_api(repo)
    return 200, {
        "state": state,
        "sha": sha,
        "total_count": len(statuses),
        "statuses": [_status_json(ctx, s, simple=True) for s in paginate(ctx, statuses)],
        "repository": ctx.app.repo_json(repo),
        "commit_url": f"{api}/commits/{sha}",
        "url": f"{api}/commits/{sha}/status",
    }
