"""Route handlers for pull requests, reviews, merges, comparisons and branches.

Everything that concerns commits reads or writes the repository's bare git repo.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

from .gitstore import MergeConflict
from .model import ApiError, IssueRecord, invalid, not_found, now_iso
from .routes import Context, paginate, route, sorted_records, touch


def _head_filter(ctx: Context, rec: IssueRecord) -> bool:
    head = ctx.query.get("head")
    if not head or ":" not in head:  # GitHub ignores a head without "user:"
        return True
    owner, _, branch = head.partition(":")
    return owner.lower() == ctx.repo.owner.lower() and branch == rec.head


@route("get", "/repos/{owner}/{repo}/pulls")
def _list_pulls(ctx: Context) -> tuple[int, Any]:
    repo = ctx.repo
    state = ctx.query.get("state", "open")
    found = [
        r
        for r in repo.issues.values()
        if r.is_pull
        and (state == "all" or r.state == state)
        and _head_filter(ctx, r)
        and ("base" not in ctx.query or r.base == ctx.query["base"])
    ]
    return 200, [
        ctx.app.pull_json(repo, r, full=False) for r in paginate(ctx, sorted_records(ctx, found))
    ]


@route("post", "/repos/{owner}/{repo}/pulls")
def _create_pull(ctx: Context) -> tuple[int, Any]:
    repo = ctx.repo
    body = ctx.body
    head = body["head"]
    if ":" in head:
        owner, _, head = head.partition(":")
        if owner.lower() != repo.owner.lower():
            raise invalid({"resource": "PullRequest", "field": "head", "code": "invalid"})
    base = body["base"]
    head_sha, base_sha = repo.git.branch(head), repo.git.branch(base)
    if head_sha is None:
        raise invalid({"resource": "PullRequest", "field": "head", "code": "invalid"})
    if base_sha is None:
        raise invalid({"resource": "PullRequest", "field": "base", "code": "invalid"})
    if not body.get("title"):
        raise invalid({"resource": "PullRequest", "field": "title", "code": "missing_field"})
    for other in repo.issues.values():
        if other.is_pull and other.state == "open" and other.head == head and other.base == base:
            raise invalid(
                {
                    "resource": "PullRequest",
                    "code": "custom",
                    "message": f"A pull request already exists for {repo.owner}:{head}.",
                }
            )
    if not repo.git.commits_between(base_sha, head_sha):
        raise invalid(
            {
                "resource": "PullRequest",
                "code": "custom",
                "message": f"No commits between {base} and {head}",
            }
        )
    stamp = now_iso()
    rec = IssueRecord(
        number=len(repo.issues) + 1,
        id=ctx.app.next_id(),
        title=body["title"],
        body=body.get("body"),
        user=ctx.login,
        created_at=stamp,
        updated_at=stamp,
        is_pull=True,
        pull_id=ctx.app.next_id(),
        head=head,
        base=base,
        head_sha=head_sha,
        base_sha=base_sha,
    )
    repo.issues[rec.number] = rec
    ctx.headers["Location"] = f"{ctx.app.repo_api(repo)}/pulls/{rec.number}"
    data = ctx.app.pull_json(repo, rec, full=True)
    data["mergeable"], data["rebaseable"], data["mergeable_state"] = None, None, "unknown"
    return 201, data


@route("get", "/repos/{owner}/{repo}/pulls/{pull_number}")
def _get_pull(ctx: Context) -> tuple[int, Any]:
    return 200, ctx.app.pull_json(ctx.repo, ctx.pull(), full=True)


@route("get", "/repos/{owner}/{repo}/pulls/{pull_number}/reviews")
def _list_reviews(ctx: Context) -> tuple[int, Any]:
    rec = ctx.pull()
    return 200, [ctx.app.review_json(ctx.repo, rec, r) for r in paginate(ctx, rec.reviews)]


# GitHub's closing keywords: merging into the default branch closes the issues they name.
_CLOSING = re.compile(r"\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?):?\s+#(\d+)\b", re.IGNORECASE)

_REVIEW_STATES = {
    "APPROVE": "APPROVED",
    "REQUEST_CHANGES": "CHANGES_REQUESTED",
    "COMMENT": "COMMENTED",
}


@route("post", "/repos/{owner}/{repo}/pulls/{pull_number}/reviews")
def _create_review(ctx: Context) -> tuple[int, Any]:
    rec = ctx.pull()
    body = ctx.body or {}
    event = body.get("event")
    text = body.get("body", "")

    def refuse(message: str) -> ApiError:
        return ApiError(422, "Unprocessable Entity", errors=[message])

    if event in ("REQUEST_CHANGES", "COMMENT") and not text.strip():
        raise refuse(f"Review body is required when event is {event}")
    if ctx.app.forbid_self_review and rec.user == ctx.login and event != "COMMENT":
        verb = "approve" if event == "APPROVE" else "request changes on"
        raise refuse(f"Can not {verb} your own pull request")
    ctx.app.refresh_pull(ctx.repo, rec)
    review = {
        "id": ctx.app.next_id(),
        "user": ctx.login,
        "body": text,
        "state": _REVIEW_STATES.get(event or "", "PENDING"),
        "commit_id": body.get("commit_id") or rec.head_sha,
        "submitted_at": now_iso(),
    }
    rec.reviews.append(review)
    touch(rec)
    return 200, ctx.app.review_json(ctx.repo, rec, review)


@route("put", "/repos/{owner}/{repo}/pulls/{pull_number}/merge")
def _merge_pull(ctx: Context) -> tuple[int, Any]:
    repo = ctx.repo
    rec = ctx.pull()
    body = ctx.body or {}
    method = body.get("merge_method", "merge")
    ctx.app.refresh_pull(repo, rec)
    if rec.state != "open":
        raise ApiError(405, "Pull Request is not mergeable")
    if body.get("sha") and body["sha"] != rec.head_sha:
        raise ApiError(409, "Head branch was modified. Review and try the merge again.")
    if method == "merge":
        title = f"Merge pull request #{rec.number} from {repo.owner}/{rec.head}"
        detail = rec.title
    else:
        title = f"{rec.title} (#{rec.number})"
        subjects = [
            repo.git.commit(s).message.splitlines()[0]
            for s in repo.git.commits_between(rec.base_sha, rec.head_sha)
        ]
        detail = "\n\n".join(f"* {s}" for s in subjects)
    title = body.get("commit_title") or title
    detail = body.get("commit_message", detail)
    message = f"{title}\n\n{detail}" if detail else title
    try:
        sha = repo.git.merge(rec.base, rec.head_sha, method, message)
    except MergeConflict as exc:
        raise ApiError(405, "Pull Request is not mergeable") from exc
    stamp = now_iso()
    if rec.base == repo.default_branch:
        commits = repo.git.commits_between(rec.base_sha, rec.head_sha)
        texts = [rec.body or "", *(repo.git.commit(c).message for c in commits)]
        for number in sorted({int(n) for text in texts for n in _CLOSING.findall(text)}):
            named = repo.issues.get(number)
            if named is not None and not named.is_pull and named.state == "open":
                named.state, named.state_reason, named.closed_at = "closed", "completed", stamp
                named.updated_at = stamp
    rec.state, rec.merged, rec.merged_at, rec.closed_at = "closed", True, stamp, stamp
    rec.merged_by, rec.merge_commit_sha, rec.updated_at = ctx.login, sha, stamp
    repo.pushed_at = stamp
    return 200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}


def resolve_ref(ctx: Context, ref: str) -> str:
    ref = ref.split(":", 1)[1] if ":" in ref else ref
    sha = ctx.repo.git.resolve(ref)
    if sha is None:
        raise ApiError(422, f"No commit found for SHA: {ref}")
    return sha


@route("get", "/repos/{owner}/{repo}/compare/{basehead}")
def _compare(ctx: Context) -> tuple[int, Any]:
    repo = ctx.repo
    base_ref, sep, head_ref = ctx.params["basehead"].partition("...")
    if not sep:
        raise not_found()
    base, head = (
        repo.git.resolve(base_ref.split(":")[-1]),
        repo.git.resolve(head_ref.split(":")[-1]),
    )
    if base is None or head is None:
        raise not_found()
    merge_base = repo.git.merge_base(base, head) or base
    ahead = repo.git.commits_between(merge_base, head)
    behind = repo.git.commits_between(merge_base, base)
    status = (
        "identical"
        if not ahead and not behind
        else "ahead"
        if not behind
        else "behind"
        if not ahead
        else "diverged"
    )
    api = ctx.app.repo_api(repo)
    html = f"{ctx.app.url}/{repo.full_name}/compare/{ctx.params['basehead']}"
    files = [
        {
            "sha": c.blob,
            "filename": c.filename,
            "status": c.status,
            "additions": c.additions,
            "deletions": c.deletions,
            "changes": c.additions + c.deletions,
            "blob_url": f"{ctx.app.url}/{repo.full_name}/blob/{head}/{c.filename}",
            "raw_url": f"{ctx.app.url}/{repo.full_name}/raw/{head}/{c.filename}",
            "contents_url": f"{api}/contents/{c.filename}?ref={head}",
        }
        for c in repo.git.changes(merge_base, head)
    ]
    return 200, {
        "url": f"{api}/compare/{ctx.params['basehead']}",
        "html_url": html,
        "permalink_url": f"{ctx.app.url}/{repo.full_name}/compare/{base}...{head}",
        "diff_url": f"{html}.diff",
        "patch_url": f"{html}.patch",
        "base_commit": ctx.app.commit_json(repo, base),
        "merge_base_commit": ctx.app.commit_json(repo, merge_base),
        "status": status,
        "ahead_by": len(ahead),
        "behind_by": len(behind),
        "total_commits": len(ahead),
        "commits": [ctx.app.commit_json(repo, s) for s in ahead[:250]],
        "files": files,
    }


@route("get", "/repos/{owner}/{repo}/branches")
def _list_branches(ctx: Context) -> tuple[int, Any]:
    repo = ctx.repo
    api = ctx.app.repo_api(repo)
    branches = [(ref.removeprefix("refs/heads/"), sha) for ref, sha in repo.git.refs()]
    return 200, [
        {"name": name, "commit": {"sha": sha, "url": f"{api}/commits/{sha}"}, "protected": False}
        for name, sha in paginate(ctx, branches)
    ]


@route("get", "/repos/{owner}/{repo}/git/matching-refs/{ref}")
def _matching_refs(ctx: Context) -> tuple[int, Any]:
    repo = ctx.repo
    api = ctx.app.repo_api(repo)
    return 200, [
        {
            "ref": ref,
            "node_id": f"REF_{sha[:12]}",
            "url": f"{api}/git/{urllib.parse.quote(ref)}",
            "object": {"type": "commit", "sha": sha, "url": f"{api}/git/commits/{sha}"},
        }
        for ref, sha in repo.git.refs("refs/" + ctx.params["ref"])
    ]
