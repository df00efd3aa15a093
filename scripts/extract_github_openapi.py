#!/usr/bin/env python3
"""Write tests/fakegithub/openapi_subset.json from GitHub's official OpenAPI description.

The description ships in the npm package ``@octokit/openapi`` (``generated/api.github.com.json``,
about 13 MB).  The fake GitHub server validates every request and response against the
operations it serves, so the subset holds exactly those operations plus every component they
reference, transitively.  Prose (descriptions, examples) is dropped to keep the file small.

Usage::

    python3 scripts/extract_github_openapi.py                 # npm pack the pinned version
    python3 scripts/extract_github_openapi.py --tarball X.tgz # use a tarball already fetched

The test suite reads only the committed subset; it never touches the network.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

PACKAGE = "@octokit/openapi"
VERSION = "23.0.2"
MEMBER = "package/generated/api.github.com.json"
OUT = Path(__file__).resolve().parent.parent / "tests" / "fakegithub" / "openapi_subset.json"

# What tests/fakegithub/server.py serves: (method, path template as in the description).
OPERATIONS: list[tuple[str, str]] = [
    ("get", "/rate_limit"),
    ("get", "/user"),
    ("get", "/repos/{owner}/{repo}"),
    ("get", "/repos/{owner}/{repo}/issues"),
    ("post", "/repos/{owner}/{repo}/issues"),
    ("get", "/repos/{owner}/{repo}/issues/{issue_number}"),
    ("patch", "/repos/{owner}/{repo}/issues/{issue_number}"),
    ("get", "/repos/{owner}/{repo}/issues/{issue_number}/comments"),
    ("post", "/repos/{owner}/{repo}/issues/{issue_number}/comments"),
    ("get", "/repos/{owner}/{repo}/issues/{issue_number}/labels"),
    ("post", "/repos/{owner}/{repo}/issues/{issue_number}/labels"),
    ("delete", "/repos/{owner}/{repo}/issues/{issue_number}/labels/{name}"),
    ("get", "/repos/{owner}/{repo}/labels"),
    ("post", "/repos/{owner}/{repo}/labels"),
    ("get", "/repos/{owner}/{repo}/pulls"),
    ("post", "/repos/{owner}/{repo}/pulls"),
    ("get", "/repos/{owner}/{repo}/pulls/{pull_number}"),
    ("get", "/repos/{owner}/{repo}/pulls/{pull_number}/reviews"),
    ("post", "/repos/{owner}/{repo}/pulls/{pull_number}/reviews"),
    ("put", "/repos/{owner}/{repo}/pulls/{pull_number}/merge"),
    ("get", "/repos/{owner}/{repo}/compare/{basehead}"),
    ("post", "/repos/{owner}/{repo}/check-runs"),
    ("get", "/repos/{owner}/{repo}/commits/{ref}/check-runs"),
    ("get", "/repos/{owner}/{repo}/commits/{ref}/status"),
    ("post", "/repos/{owner}/{repo}/statuses/{sha}"),
    ("get", "/repos/{owner}/{repo}/branches"),
    ("get", "/repos/{owner}/{repo}/git/matching-refs/{ref}"),
]

# Keys that are prose or tooling hints, dropped everywhere except as property names.
_PROSE = {"description", "summary", "examples", "example", "externalDocs", "x-github", "tags"}


def fetch(dest: Path) -> Path:
    """Download the pinned package tarball into dest with `npm pack`; return its path."""
    out = subprocess.run(
        ["npm", "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(dest), "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    return dest / json.loads(out.stdout)[0]["filename"]


def load(tarball: Path) -> dict[str, Any]:
    """Read the full description out of the package tarball."""
    with tarfile.open(tarball) as tar:
        member = tar.extractfile(MEMBER)
        if member is None:
            raise SystemExit(f"{tarball}: no {MEMBER}")
        spec: dict[str, Any] = json.load(member)
    found = spec.get("info", {}).get("version")
    if found != VERSION:
        raise SystemExit(f"{tarball}: holds {PACKAGE} {found}, expected {VERSION}")
    return spec


def strip(node: Any, *, names: bool = False) -> Any:
    """Drop prose keys; `names` marks a mapping whose keys are property names."""
    if isinstance(node, list):
        return [strip(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if not names and key in _PROSE:
            continue
        out[key] = strip(value, names=(key == "properties" and not names))
    return out


def refs(node: Any) -> set[str]:
    """Return every local `$ref` target in node."""
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref)
        for value in node.values():
            found |= refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= refs(value)
    return found


def subset(spec: dict[str, Any]) -> dict[str, Any]:
    """Return the served operations and the components they reach."""
    paths: dict[str, Any] = {}
    for method, template in OPERATIONS:
        item = spec["paths"].get(template, {})
        if method not in item:
            raise SystemExit(f"{method.upper()} {template} is not in {PACKAGE} {VERSION}")
        target = paths.setdefault(template, {})
        if "parameters" in item:
            target["parameters"] = strip(item["parameters"])
        target[method] = strip(item[method])
    components: dict[str, dict[str, Any]] = {}
    todo = refs(paths)
    seen: set[str] = set()
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        _, top, kind, name = ref.split("/", 3)
        if top != "components":
            raise SystemExit(f"unexpected $ref {ref}")
        value = strip(spec["components"][kind][name])
        components.setdefault(kind, {})[name] = value
        todo |= refs(value) - seen
    return {
        "openapi": spec["openapi"],
        "info": {
            "title": "Subset of GitHub's REST API served by tests/fakegithub",
            "version": VERSION,
            "x-source": f"npm {PACKAGE}@{VERSION} {MEMBER.removeprefix('package/')}",
            "x-generated-by": "scripts/extract_github_openapi.py",
        },
        "paths": paths,
        "components": {k: dict(sorted(v.items())) for k, v in sorted(components.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, help="an already downloaded package tarball")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tarball = args.tarball or fetch(Path(tmp))
        result = subset(load(tarball))
    text = json.dumps(result, indent=1, sort_keys=False, ensure_ascii=False) + "\n"
    args.out.write_text(text)
    count = sum(len(v) for v in result["components"].values())
    print(
        f"wrote {args.out} ({len(text) // 1024} KiB): {len(OPERATIONS)} operations, "
        f"{count} components, from {PACKAGE}@{VERSION}"
    )


if __name__ == "__main__":
    main()
