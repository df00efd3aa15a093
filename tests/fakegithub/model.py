"""The fake GitHub's records (repositories, issues, pull requests) and its API errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .gitstore import BareRepo

DOCS = "https://docs.github.com/rest"


def now_iso() -> str:
    """Return the current UTC time as GitHub writes it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An error answer of the API: status and GitHub's JSON body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"message": message, "documentation_url": DOCS}
        if errors is not None:
            self.body["errors"] = errors
        if status in (401, 403, 404, 500, 502, 503):
            self.body["status"] = str(status)
        self.headers = headers or {}


def not_found() -> ApiError:
    return ApiError(404, "Not Found")


def invalid(*errors: dict[str, Any]) -> ApiError:
    return ApiError(422, "Validation Failed", errors=list(errors))


@dataclass
class Label:
    id: int
    name: str
    color: str = "ededed"
    description: str | None = None


@dataclass
class IssueRecord:
    """An issue or a pull request (they share numbers, as on GitHub)."""

    number: int
    id: int
    title: str
    body: str | None
    user: str
    created_at: str
    updated_at: str
    labels: list[str] = field(default_factory=list)  # label names, as first written
    state: str = "open"
    state_reason: str | None = None
    closed_at: str | None = None
    comments: list[dict[str, Any]] = field(default_factory=list)
    # pull request only
    is_pull: bool = False
    pull_id: int = 0
    head: str = ""
    base: str = ""
    head_sha: str = ""
    base_sha: str = ""
    merged: bool = False
    merged_at: str | None = None
    merged_by: str | None = None
    merge_commit_sha: str | None = None
    reviews: list[dict[str, Any]] = field(default_factory=list)
    mergeable_for: tuple[str, str] | None = None  # (base, head) mergeability was computed for


@dataclass
class Repo:
    """One fake repository: its bare git repo and the API's records."""

    owner: str
    name: str
    id: int
    git: BareRepo
    default_branch: str
    created_at: str
    pushed_at: str | None = None
    labels: dict[str, Label] = field(default_factory=dict)  # by lower-cased name
    issues: dict[int, IssueRecord] = field(default_factory=dict)
    check_runs: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


def utc(iso: str) -> str:
    """Turn git's ISO 8601 with offset into GitHub's UTC `Z` form."""
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
