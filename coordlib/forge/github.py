"""`GitHubForge`: the forge interface over GitHub's REST API, through PyGithub.

Requests go through PyGithub's `Requester` (authentication, base URL with a GitHub
Enterprise prefix, retries, typed exceptions) as plain JSON rather than through its object
model: an item of a PyGithub paginated list completes itself with one extra GET when code
reads an attribute its list payload lacks (``Issue.pull_request`` on every plain issue,
``raw_data`` on anything), and every request counts against GitHub's rate limit.

Policy, set deliberately instead of PyGithub's defaults:

* no fixed sleeps between requests; writes are spaced by ``write_interval`` (GitHub asks
  integrations to leave a second between mutating requests);
* 502/503/504 are retried ``max_retries`` times with exponential backoff, for idempotent
  methods only (a retried POST could open a second issue);
* rate limits (403/429 with ``X-RateLimit-Remaining: 0`` or ``Retry-After``) are waited
  out: ``on_wait`` gets a human message, the coroutine sleeps, the request is sent again;
  a wait longer than ``max_rate_limit_wait`` raises `ForgeError` instead.

PyGithub objects are not thread-safe: each forge sends one request at a time, in a worker
thread, so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import requests
from github import Auth, Github, GithubException
from urllib3.util.retry import Retry

from .._version import __version__
from ..config import is_cleartext_url
from ..errors import ForgeAuthError, ForgeError, MergeConflictError, NotFoundError
from ._github_wire import (
    DEFAULT_API_URL,
    comment_of,
    issue_of,
    message_of,
    next_link,
    pull_of,
    rate_limit_wait,
    resolve_token,
    review_of,
)
from .base import (
    Branch,
    Check,
    Comment,
    Forge,
    Issue,
    MergeMethod,
    MergeResult,
    PullRequest,
    Review,
    ReviewEvent,
)

__all__ = ["DEFAULT_API_URL", "GitHubForge", "resolve_token"]

_log = logging.getLogger(__name__)
_TOKEN_HELP = "set GITHUB_TOKEN or GH_TOKEN, or log in with `gh auth login`"
_RETRIED = (502, 503, 504)
_STATUS_CONCLUSION = {"success": "success", "failure": "failure", "error": "failure"}


class GitHubForge(Forge):
    """Issues, comments and pull requests of one GitHub (or GitHub Enterprise) repository."""

    kind = "github"

    def __init__(
        self,
        repo: str,
        slug: str,
        *,
        api_url: str = DEFAULT_API_URL,
        token: str | None = None,
        environ: Mapping[str, str] | None = None,
        on_wait: Callable[[str], None] | None = None,
        max_retries: int = 3,
        retry_backoff: float = 0.5,
        max_rate_limit_wait: float = 3600.0,
        write_interval: float = 1.0,
        timeout: int = 30,
    ) -> None:
        if slug.count("/") != 1 or not all(slug.split("/")):
            raise ForgeError(f"GitHub repository {slug!r} for repo {repo!r} is not owner/name")
        if is_cleartext_url(api_url):
            raise ForgeError(
                f"api_url {api_url} is plain http to a host that is not this machine, so the "
                f"token would cross the network in clear; use https:// (http:// is only for "
                f"loopback hosts: 127.0.0.1, ::1, localhost)",
                forge=f"GitHub {slug}",
            )
        self.repo = repo
        self.slug = slug
        self.api_url = api_url.rstrip("/")
        self.on_wait = on_wait
        self.max_retries = max_retries
        self.max_rate_limit_wait = max_rate_limit_wait
        self.write_interval = write_interval
        secret = token or resolve_token(environ, api_url=self.api_url)
        if not secret:
            raise ForgeAuthError(
                f"no GitHub token for {slug} (repo {repo!r}): {_TOKEN_HELP}", forge=self._name
            )
        retry = Retry(
            total=max_retries,
            status_forcelist=_RETRIED,
            allowed_methods=frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"}),
            backoff_factor=retry_backoff,
            respect_retry_after_header=False,
            raise_on_status=False,
        )
        self._gh = Github(
            base_url=self.api_url,
            auth=Auth.Token(secret),
            timeout=timeout,
            user_agent=f"coordlib/{__version__}",
            retry=retry,
            seconds_between_requests=None,
            seconds_between_writes=None,
        )
        self._lock = threading.Lock()
        self._last_write = 0.0
        self._path = f"/repos/{urllib.parse.quote(slug)}"
        self._owner = slug.split("/")[0]
        self._login: str | None = None

    def __repr__(self) -> str:
        return f"GitHubForge(repo={self.repo!r}, slug={self.slug!r}, api_url={self.api_url!r})"

    @property
    def _name(self) -> str:
        return f"GitHub {self.slug}"

    # -- transport -------------------------------------------------------------------
    def _send(
        self, verb: str, url: str, params: dict[str, Any] | None, body: Any
    ) -> tuple[dict[str, Any], Any]:
        with self._lock:
            return self._gh.requester.requestJsonAndCheck(verb, url, parameters=params, input=body)

    async def _call(
        self,
        verb: str,
        url: str,
        what: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> tuple[dict[str, Any], Any]:
        """Send one request off the event loop; wait out rate limits; convert errors."""
        waited = 0.0
        while True:
            if verb != "GET":
                await self._pace_writes()
            try:
                return await asyncio.to_thread(self._send, verb, url, params, body)
            except GithubException as exc:
                limit = rate_limit_wait(exc, time.time())
                if limit is None:
                    raise self._error(exc, what) from exc
                seconds, which = limit
                until = datetime.fromtimestamp(time.time() + seconds).strftime("%H:%M:%S")
                if waited + seconds > self.max_rate_limit_wait:
                    raise ForgeError(
                        f"{which} reached while trying to {what}; it lifts at {until}, "
                        f"{math.ceil(seconds)} s from now, beyond max_rate_limit_wait="
                        f"{self.max_rate_limit_wait:g} s: retry after {until}, or raise "
                        f"max_rate_limit_wait",
                        forge=self._name,
                        status=exc.status,
                    ) from exc
                self._notify(
                    f"{which}: waiting {math.ceil(seconds)} s until {until} ({what} on {self.slug})"
                )
                await asyncio.sleep(seconds)
                waited += seconds
            except requests.exceptions.RequestException as exc:
                raise ForgeError(
                    f"cannot {what}: no usable answer from {self.api_url} after "
                    f"{self.max_retries} retries ({type(exc).__name__}: {exc}); check the "
                    f"network and api_url, then try again",
                    forge=self._name,
                ) from exc

    async def _pace_writes(self) -> None:
        delay = self._last_write + self.write_interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self._last_write = time.monotonic()

    def _notify(self, message: str) -> None:
        if self.on_wait is not None:
            self.on_wait(message)
        else:
            _log.warning("%s", message)

    def _error(self, exc: GithubException, what: str) -> ForgeError:
        status = exc.status
        said = message_of(exc)
        if status == 401:
            return ForgeAuthError(
                f"GitHub rejected the token ({said}) while trying to {what}: {_TOKEN_HELP}",
                forge=self._name,
                status=status,
            )
        if status == 403:
            return ForgeAuthError(
                f"GitHub refused to {what} ({said}): the token needs read and write access "
                f"to issues, pull requests and contents of {self.slug}",
                forge=self._name,
                status=status,
            )
        if status == 404:
            return NotFoundError(
                f"cannot {what}: not found ({said}); check the number, and that the token "
                f"can see {self.slug}",
                forge=self._name,
                status=status,
            )
        if status in _RETRIED:
            return ForgeError(
                f"GitHub failed to {what} with status {status} ({said}) after "
                f"{self.max_retries} retries; try again later",
                forge=self._name,
                status=status,
            )
        return ForgeError(
            f"GitHub refused to {what} (status {status}): {said}", forge=self._name, status=status
        )

    async def _get(self, path: str, what: str, **params: Any) -> Any:
        return (await self._call("GET", self._path + path, what, params=params or None))[1]

    async def _list(self, path: str, what: str, **params: Any) -> list[dict[str, Any]]:
        """GET every page of a list (100 items a page), following the Link headers."""
        url: str | None = self._path + path
        query: dict[str, Any] | None = {**params, "per_page": 100}
        items: list[dict[str, Any]] = []
        while url is not None:
            headers, data = await self._call("GET", url, what, params=query)
            items += data
            url, query = next_link(headers), None
        return items

    async def identity(self) -> str:
        """Return the login of the user the token acts as (asked once)."""
        if self._login is None:
            _, data = await self._call("GET", "/user", "read the token's own user")
            self._login = str(data["login"])
        return self._login

    # -- issues ------------------------------------------------------------------------
    async def list_issues(self, *, state: str = "open", labels: Sequence[str] = ()) -> list[Issue]:
        """Return issues in `state` carrying every label in `labels`, lowest number first."""
        _check_state(state, ("open", "closed", "all"))
        params: dict[str, Any] = {"state": state, "sort": "created", "direction": "asc"}
        if labels:
            params["labels"] = ",".join(labels)
        items = await self._list("/issues", f"list {state} issues", **params)
        found = [issue_of(d) for d in items if "pull_request" not in d]
        return sorted(found, key=lambda i: i.number)

    async def get_issue(self, number: int) -> Issue:
        """Return one issue (a pull request reads as its issue) with its comments, oldest first."""
        data = await self._get(f"/issues/{number}", f"get issue #{number}")
        comments: list[Comment] = []
        if data.get("comments"):  # the count is in the issue: skip the request when zero
            raw = await self._list(f"/issues/{number}/comments", f"read comments of #{number}")
            comments = [comment_of(c) for c in raw]
        return issue_of(data, comments)

    async def create_issue(
        self, title: str, *, body: str = "", labels: Sequence[str] = ()
    ) -> Issue:
        """Open a new issue (its labels are created if missing) and return it."""
        payload: dict[str, Any] = {"title": title, "body": body}
        if labels:
            payload["labels"] = list(labels)
        _, data = await self._call(
            "POST", f"{self._path}/issues", f"create issue {title!r}", body=payload
        )
        return issue_of(data)

    async def comment(self, number: int, body: str) -> Comment:
        """Add a comment to an issue or pull request and return it."""
        _, data = await self._call(
            "POST",
            f"{self._path}/issues/{number}/comments",
            f"comment on #{number}",
            body={"body": body},
        )
        return comment_of(data)

    async def labels(self, number: int) -> tuple[str, ...]:
        """Return an issue's labels with one request (no comments read)."""
        data = await self._list(f"/issues/{number}/labels", f"read the labels of #{number}")
        return tuple(str(label["name"]) for label in data)

    async def issue_state(self, number: int) -> str:
        """Return an issue's state with one request (no comments read)."""
        return issue_of(await self._get(f"/issues/{number}", f"get issue #{number}")).state

    async def add_labels(self, number: int, labels: Iterable[str]) -> tuple[str, ...]:
        """Add labels (GitHub creates missing ones); return the issue's labels."""
        names = list(dict.fromkeys(labels))
        what = f"label #{number}"
        if not names:
            data = await self._list(f"/issues/{number}/labels", what)
        else:
            _, data = await self._call(
                "POST", f"{self._path}/issues/{number}/labels", what, body={"labels": names}
            )
        return tuple(label["name"] for label in data)

    async def remove_label(self, number: int, label: str) -> tuple[str, ...]:
        """Remove one label (absent is fine); return the issue's labels."""
        what = f"remove label {label!r} from #{number}"
        quoted = urllib.parse.quote(label, safe="")
        try:
            _, data = await self._call(
                "DELETE", f"{self._path}/issues/{number}/labels/{quoted}", what
            )
        except NotFoundError:  # the label was not there, or the issue is missing
            data = await self._list(f"/issues/{number}/labels", what)
        return tuple(item["name"] for item in data)

    async def set_state(self, number: int, state: str) -> Issue:
        """Close ("closed") or reopen ("open") an issue."""
        _check_state(state, ("open", "closed"))
        verb = "close" if state == "closed" else "reopen"
        _, data = await self._call(
            "PATCH", f"{self._path}/issues/{number}", f"{verb} #{number}", body={"state": state}
        )
        return issue_of(data)

    # -- pull requests -----------------------------------------------------------------
    async def open_pr(self, *, head: str, base: str, title: str, body: str = "") -> PullRequest:
        """Open a pull request from `head` into `base`, or return the open one for `head`."""
        payload = {"title": title, "head": head, "base": base, "body": body}
        what = f"open a pull request from {head} into {base}"
        try:
            _, data = await self._call("POST", f"{self._path}/pulls", what, body=payload)
        except ForgeError as exc:
            cause = exc.__cause__
            said = message_of(cause) if isinstance(cause, GithubException) else ""
            if exc.status == 422 and "already exists" in said:
                existing = await self.list_prs(state="open", head=head)
                if existing:
                    return existing[0]
            if exc.status == 422 and "head" in said and "invalid" in said:
                raise ForgeError(
                    f"cannot {what}: branch {head!r} is not on GitHub; push it first "
                    f"(git push origin {head})",
                    forge=self._name,
                    status=422,
                ) from exc
            raise
        return pull_of(data)

    async def get_pr(self, number: int) -> PullRequest:
        """Return a pull request with its reviews and the checks on its head commit."""
        data = await self._get(f"/pulls/{number}", f"get pull request #{number}")
        sha = data["head"]["sha"]
        raw_reviews = await self._list(
            f"/pulls/{number}/reviews", f"read reviews of pull request #{number}"
        )
        what = f"read checks of pull request #{number}"
        runs = await self._get(f"/commits/{sha}/check-runs", what, per_page=100)
        combined = await self._get(f"/commits/{sha}/status", what, per_page=100)
        checks = [
            Check(name=r["name"], status=r["status"], conclusion=r.get("conclusion"))
            for r in runs.get("check_runs", [])
        ]
        for status in combined.get("statuses", []):
            state = status["state"]
            done = state in _STATUS_CONCLUSION
            checks.append(
                Check(
                    name=status["context"],
                    status="completed" if done else "in_progress",
                    conclusion=_STATUS_CONCLUSION.get(state),
                )
            )
        return pull_of(data, [review_of(r) for r in raw_reviews], checks)

    async def list_prs(self, *, state: str = "open", head: str | None = None) -> list[PullRequest]:
        """Return pull requests in `state`, optionally only those from branch `head`."""
        _check_state(state, ("open", "closed", "all"))
        params: dict[str, Any] = {"state": state, "sort": "created", "direction": "asc"}
        if head is not None:
            params["head"] = f"{self._owner}:{head}"
        items = await self._list("/pulls", f"list {state} pull requests", **params)
        return sorted((pull_of(d) for d in items), key=lambda p: p.number)

    async def review(self, number: int, event: ReviewEvent, body: str) -> Review:
        """Post a review: approve, request changes, or comment."""
        what = f"review pull request #{number} ({event})"
        try:
            _, data = await self._call(
                "POST",
                f"{self._path}/pulls/{number}/reviews",
                what,
                body={"event": event, "body": body},
            )
        except ForgeError as exc:
            if exc.status == 422 and "your own pull request" in str(exc):
                raise ForgeError(
                    f"cannot {what}: GitHub does not let the author of a pull request approve "
                    f"it or request changes on it; review with another account's token, or "
                    f"post a COMMENT review",
                    forge=self._name,
                    status=422,
                ) from exc
            raise
        return review_of(data)

    async def merge(
        self, number: int, *, method: MergeMethod = "merge", message: str | None = None
    ) -> MergeResult:
        """Merge a pull request; raise `MergeConflictError` if it does not merge cleanly."""
        payload: dict[str, Any] = {"merge_method": method}
        if message is not None:
            title, _, rest = message.partition("\n")
            payload |= {"commit_title": title, "commit_message": rest.strip("\n")}
        what = f"merge pull request #{number} ({method})"
        try:
            _, data = await self._call(
                "PUT", f"{self._path}/pulls/{number}/merge", what, body=payload
            )
        except ForgeError as exc:
            if exc.status == 405 and "not mergeable" in str(exc):
                raise await self._not_mergeable(number, what) from exc
            if exc.status == 409:
                raise MergeConflictError(
                    f"cannot {what}: its head branch moved meanwhile; fetch it, check the "
                    f"new commits and merge again",
                    forge=self._name,
                ) from exc
            raise
        return MergeResult(
            merged=bool(data.get("merged")), sha=data.get("sha"), message=data.get("message", "")
        )

    async def _not_mergeable(self, number: int, what: str) -> ForgeError:
        """Explain a 405 "not mergeable": closed, or the paths both sides changed."""
        pull = await self._get(f"/pulls/{number}", what)
        if pull.get("merged") or pull["state"] != "open":
            done = "merged already" if pull.get("merged") else "closed"
            return ForgeError(f"cannot {what}: it is {done}", forge=self._name, status=405)
        base, head = pull["base"]["ref"], pull["head"]["ref"]
        paths: tuple[str, ...] = ()
        try:
            ours = await self._get(f"/compare/{_q(head)}...{_q(base)}", what, per_page=100)
            theirs = await self._get(f"/compare/{_q(base)}...{_q(head)}", what, per_page=100)
            changed = {f["filename"] for f in ours.get("files", [])}
            paths = tuple(sorted(changed & {f["filename"] for f in theirs.get("files", [])}))
        except ForgeError:
            pass  # the conflict is the news; the paths are a courtesy
        listed = f" (changed on both sides: {', '.join(paths)})" if paths else ""
        return MergeConflictError(
            f"cannot {what}: it does not merge cleanly into {base}{listed}; merge or rebase "
            f"{base} into {head}, resolve, push, and merge again",
            forge=self._name,
            paths=paths,
        )

    # -- branches ----------------------------------------------------------------------
    async def branches(self, prefix: str = "") -> list[Branch]:
        """Return the remote's branches whose names start with `prefix`, sorted by name."""
        refs = await self._get(f"/git/matching-refs/heads/{_q(prefix)}", f"list branches {prefix}*")
        found = [
            Branch(name=r["ref"].removeprefix("refs/heads/"), sha=r["object"]["sha"])
            for r in refs
            if r["ref"].startswith(f"refs/heads/{prefix}")
        ]
        return sorted(found, key=lambda b: b.name)

    async def close(self) -> None:
        """Close PyGithub's connection pool; the forge is unusable afterwards."""
        await asyncio.to_thread(self._gh.close)


def _q(ref: str) -> str:
    return urllib.parse.quote(ref, safe="/")


def _check_state(state: str, allowed: tuple[str, ...]) -> None:
    if state not in allowed:
        raise ValueError(f"state must be one of {', '.join(allowed)}, not {state!r}")
