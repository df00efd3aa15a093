"""The JSON GitHub answers with, built from the fake's records.

Every object carries the fields its OpenAPI schema requires, and every URL in it starts
with the server's own base (PyGithub refuses URLs on another host or prefix).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from .model import IssueRecord, Repo, utc


class Shapes:
    """Builders of GitHub's JSON objects; mixed into `FakeGitHub`."""

    url: str  # scheme://host:port, where git and html pages live
    lazy_mergeable: bool = True  # answer `mergeable: null` once per new head/base, as GitHub

    @property
    def api_url(self) -> str:
        raise NotImplementedError

    def user_json(self, login: str) -> dict[str, Any]:
        api = f"{self.api_url}/users/{login}"
        uid = 500 + sum(login.encode())
        return {
            "login": login,
            "id": uid,
            "node_id": f"U_{uid}",
            "avatar_url": f"{self.url}/avatars/{login}",
            "gravatar_id": "",
            "url": api,
            "html_url": f"{self.url}/{login}",
            "followers_url": f"{api}/followers",
            "following_url": f"{api}/following{{/other_user}}",
            "gists_url": f"{api}/gists{{/gist_id}}",
            "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{api}/subscriptions",
            "organizations_url": f"{api}/orgs",
            "repos_url": f"{api}/repos",
            "events_url": f"{api}/events{{/privacy}}",
            "received_events_url": f"{api}/received_events",
            "type": "User",
            "site_admin": False,
            "user_view_type": "public",
        }

    def repo_api(self, repo: Repo) -> str:
        return f"{self.api_url}/repos/{repo.full_name}"

    def repo_json(self, repo: Repo) -> dict[str, Any]:
        api = self.repo_api(repo)
        html = f"{self.url}/{repo.full_name}"
        templated = {
            "archive_url": "/{archive_format}{/ref}",
            "assignees_url": "/assignees{/user}",
            "blobs_url": "/git/blobs{/sha}",
            "branches_url": "/branches{/branch}",
            "collaborators_url": "/collaborators{/collaborator}",
            "comments_url": "/comments{/number}",
            "commits_url": "/commits{/sha}",
            "compare_url": "/compare/{base}...{head}",
            "contents_url": "/contents/{+path}",
            "git_commits_url": "/git/commits{/sha}",
            "git_refs_url": "/git/refs{/sha}",
            "git_tags_url": "/git/tags{/sha}",
            "issue_comment_url": "/issues/comments{/number}",
            "issue_events_url": "/issues/events{/number}",
            "issues_url": "/issues{/number}",
            "keys_url": "/keys{/key_id}",
            "labels_url": "/labels{/name}",
            "milestones_url": "/milestones{/number}",
            "notifications_url": "/notifications{?since,all,participating}",
            "pulls_url": "/pulls{/number}",
            "releases_url": "/releases{/id}",
            "statuses_url": "/statuses/{sha}",
            "trees_url": "/git/trees{/sha}",
        }
        plain = [
            "contributors",
            "deployments",
            "downloads",
            "events",
            "forks",
            "hooks",
            "languages",
            "merges",
            "stargazers",
            "subscribers",
            "subscription",
            "tags",
            "teams",
        ]
        open_issues = sum(1 for i in repo.issues.values() if i.state == "open")
        data: dict[str, Any] = {
            "id": repo.id,
            "node_id": f"R_{repo.id}",
            "name": repo.name,
            "full_name": repo.full_name,
            "owner": self.user_json(repo.owner),
            "private": True,
            "html_url": html,
            "description": None,
            "fork": False,
            "url": api,
            "homepage": None,
            "language": None,
            "forks_count": 0,
            "forks": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "watchers": 0,
            "size": 1,
            "default_branch": repo.default_branch,
            "open_issues_count": open_issues,
            "open_issues": open_issues,
            "is_template": False,
            "topics": [],
            "has_issues": True,
            "has_projects": False,
            "has_wiki": False,
            "has_pages": False,
            "has_downloads": False,
            "has_discussions": False,
            "archived": False,
            "disabled": False,
            "visibility": "private",
            "license": None,
            "pushed_at": repo.pushed_at or repo.created_at,
            "created_at": repo.created_at,
            "updated_at": repo.created_at,
            "clone_url": self.git_url(repo.full_name),
            "git_url": f"git://127.0.0.1/{repo.full_name}.git",
            "ssh_url": f"git@127.0.0.1:{repo.full_name}.git",
            "svn_url": html,
            "mirror_url": None,
            "allow_merge_commit": True,
            "allow_squash_merge": True,
            "allow_rebase_merge": True,
            "network_count": 0,
            "subscribers_count": 0,
            "permissions": {
                "admin": True,
                "maintain": True,
                "push": True,
                "triage": True,
                "pull": True,
            },
        }
        data |= {key: api + suffix for key, suffix in templated.items()}
        data |= {f"{key}_url": f"{api}/{key}" for key in plain}
        return data

    def label_json(self, repo: Repo, name: str) -> dict[str, Any]:
        label = repo.labels[name.lower()]
        return {
            "id": label.id,
            "node_id": f"LA_{label.id}",
            "url": f"{self.repo_api(repo)}/labels/{urllib.parse.quote(label.name, safe='')}",
            "name": label.name,
            "description": label.description,
            "color": label.color,
            "default": False,
        }

    associations: dict[str, str]  # login -> author_association; default COLLABORATOR

    def _association(self, repo: Repo, login: str) -> str:
        if login == repo.owner:
            return "OWNER"
        return self.associations.get(login, "COLLABORATOR")

    def _reactions(self, url: str) -> dict[str, Any]:
        return {
            "url": f"{url}/reactions",
            "total_count": 0,
            "+1": 0,
            "-1": 0,
            "laugh": 0,
            "confused": 0,
            "heart": 0,
            "hooray": 0,
            "eyes": 0,
            "rocket": 0,
        }

    def issue_json(self, repo: Repo, rec: IssueRecord) -> dict[str, Any]:
        api = f"{self.repo_api(repo)}/issues/{rec.number}"
        html = f"{self.url}/{repo.full_name}/{'pull' if rec.is_pull else 'issues'}/{rec.number}"
        data: dict[str, Any] = {
            "id": rec.id,
            "node_id": f"I_{rec.id}",
            "url": api,
            "repository_url": self.repo_api(repo),
            "labels_url": f"{api}/labels{{/name}}",
            "comments_url": f"{api}/comments",
            "events_url": f"{api}/events",
            "html_url": html,
            "number": rec.number,
            "state": rec.state,
            "state_reason": rec.state_reason,
            "title": rec.title,
            "body": rec.body,
            "user": self.user_json(rec.user),
            "labels": [self.label_json(repo, n) for n in sorted(rec.labels, key=str.lower)],
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "locked": False,
            "active_lock_reason": None,
            "comments": len(rec.comments),
            "closed_at": rec.closed_at,
            "created_at": rec.created_at,
            "updated_at": rec.updated_at,
            "closed_by": None,
            "author_association": self._association(repo, rec.user),
            "reactions": self._reactions(api),
            "timeline_url": f"{api}/timeline",
            "performed_via_github_app": None,
        }
        if rec.is_pull:
            pull = f"{self.repo_api(repo)}/pulls/{rec.number}"
            data["pull_request"] = {
                "url": pull,
                "html_url": html,
                "diff_url": f"{html}.diff",
                "patch_url": f"{html}.patch",
                "merged_at": rec.merged_at,
            }
            data["draft"] = False
        return data

    def comment_json(self, repo: Repo, rec: IssueRecord, c: dict[str, Any]) -> dict[str, Any]:
        api = f"{self.repo_api(repo)}/issues/comments/{c['id']}"
        return {
            "id": c["id"],
            "node_id": f"IC_{c['id']}",
            "url": api,
            "html_url": f"{self.url}/{repo.full_name}/issues/{rec.number}#issuecomment-{c['id']}",
            "body": c["body"],
            "user": self.user_json(c["user"]),
            "created_at": c["created_at"],
            "updated_at": c["created_at"],
            "issue_url": f"{self.repo_api(repo)}/issues/{rec.number}",
            "author_association": self._association(repo, c["user"]),
            "performed_via_github_app": None,
            "reactions": self._reactions(api),
        }

    def refresh_pull(self, repo: Repo, rec: IssueRecord) -> None:
        if rec.state == "open":
            rec.head_sha = repo.git.branch(rec.head) or rec.head_sha
            rec.base_sha = repo.git.branch(rec.base) or rec.base_sha

    def pull_json(self, repo: Repo, rec: IssueRecord, *, full: bool) -> dict[str, Any]:
        self.refresh_pull(repo, rec)
        api = f"{self.repo_api(repo)}/pulls/{rec.number}"
        issue_api = f"{self.repo_api(repo)}/issues/{rec.number}"
        html = f"{self.url}/{repo.full_name}/pull/{rec.number}"
        statuses = f"{self.repo_api(repo)}/statuses/{rec.head_sha}"

        def side(ref: str, sha: str) -> dict[str, Any]:
            return {
                "label": f"{repo.owner}:{ref}",
                "ref": ref,
                "sha": sha,
                "user": self.user_json(repo.owner),
                "repo": self.repo_json(repo),
            }

        data: dict[str, Any] = {
            "url": api,
            "id": rec.pull_id,
            "node_id": f"PR_{rec.pull_id}",
            "html_url": html,
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "issue_url": issue_api,
            "commits_url": f"{api}/commits",
            "review_comments_url": f"{api}/comments",
            "review_comment_url": f"{self.repo_api(repo)}/pulls/comments{{/number}}",
            "comments_url": f"{issue_api}/comments",
            "statuses_url": statuses,
            "number": rec.number,
            "state": rec.state,
            "locked": False,
            "title": rec.title,
            "user": self.user_json(rec.user),
            "body": rec.body,
            "labels": [self.label_json(repo, n) for n in sorted(rec.labels, key=str.lower)],
            "milestone": None,
            "active_lock_reason": None,
            "created_at": rec.created_at,
            "updated_at": rec.updated_at,
            "closed_at": rec.closed_at,
            "merged_at": rec.merged_at,
            "merge_commit_sha": rec.merge_commit_sha,
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "head": side(rec.head, rec.head_sha),
            "base": side(rec.base, rec.base_sha),
            "_links": {
                k: {"href": v}
                for k, v in {
                    "self": api,
                    "html": html,
                    "issue": issue_api,
                    "comments": f"{issue_api}/comments",
                    "review_comments": f"{api}/comments",
                    "review_comment": f"{self.repo_api(repo)}/pulls/comments{{/number}}",
                    "commits": f"{api}/commits",
                    "statuses": statuses,
                }.items()
            },
            "author_association": self._association(repo, rec.user),
            "auto_merge": None,
            "draft": False,
        }
        if full:
            mergeable: bool | None = None
            state = "unknown"
            tips = (rec.base_sha, rec.head_sha)
            if rec.state == "open" and all(tips):
                # GitHub computes mergeability in the background: the first read after
                # the head or the base moved answers null and starts the job.
                if rec.mergeable_for == tips or not self.lazy_mergeable:
                    mergeable = repo.git.mergeable(rec.base_sha, rec.head_sha)
                    state = "clean" if mergeable else "dirty"
                rec.mergeable_for = tips
            base = repo.git.merge_base(rec.base_sha, rec.head_sha) if rec.head_sha else None
            changes = repo.git.changes(base, rec.head_sha) if base else []
            data |= {
                "merged": rec.merged,
                "mergeable": mergeable,
                "rebaseable": mergeable,
                "mergeable_state": state,
                "merged_by": self.user_json(rec.merged_by) if rec.merged_by else None,
                "comments": len(rec.comments),
                "review_comments": 0,
                "maintainer_can_modify": False,
                "commits": len(repo.git.commits_between(base, rec.head_sha)) if base else 0,
                "additions": sum(c.additions for c in changes),
                "deletions": sum(c.deletions for c in changes),
                "changed_files": len(changes),
            }
        return data

    def review_json(self, repo: Repo, rec: IssueRecord, r: dict[str, Any]) -> dict[str, Any]:
        html = f"{self.url}/{repo.full_name}/pull/{rec.number}#pullrequestreview-{r['id']}"
        pull = f"{self.repo_api(repo)}/pulls/{rec.number}"
        return {
            "id": r["id"],
            "node_id": f"PRR_{r['id']}",
            "user": self.user_json(r["user"]),
            "body": r["body"],
            "state": r["state"],
            "html_url": html,
            "pull_request_url": pull,
            "_links": {"html": {"href": html}, "pull_request": {"href": pull}},
            "submitted_at": r["submitted_at"],
            "commit_id": r["commit_id"],
            "author_association": self._association(repo, r["user"]),
        }

    def commit_json(self, repo: Repo, sha: str) -> dict[str, Any]:
        info = repo.git.commit(sha)
        api = self.repo_api(repo)
        return {
            "url": f"{api}/commits/{sha}",
            "sha": sha,
            "node_id": f"C_{sha}",
            "html_url": f"{self.url}/{repo.full_name}/commit/{sha}",
            "comments_url": f"{api}/commits/{sha}/comments",
            "commit": {
                "url": f"{api}/git/commits/{sha}",
                "author": {
                    "name": info.author_name,
                    "email": info.author_email,
                    "date": utc(info.author_date),
                },
                "committer": {
                    "name": info.committer_name,
                    "email": info.committer_email,
                    "date": utc(info.committer_date),
                },
                "message": info.message,
                "comment_count": 0,
                "tree": {"sha": info.tree, "url": f"{api}/git/trees/{info.tree}"},
            },
            "author": None,
            "committer": None,
            "parents": [
                {
                    "sha": p,
                    "url": f"{api}/commits/{p}",
                    "html_url": f"{self.url}/{repo.full_name}/commit/{p}",
                }
                for p in info.parents
            ],
        }
