"""Briefing templates: every shipped kind renders, users override, mistakes are clear."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from coordlib.briefings import KINDS, files_in_scope, render_briefing
from coordlib.config import RepoConfig
from coordlib.errors import ConfigError, CoordError

REPO = RepoConfig(name="api", build_command="make", test_command="make test")
ISSUE = {
    "number": 7,
    "title": "Fix `login`; $(rm -rf /)",
    "body": "Edit `src/auth.py`.",
    "labels": ["bug"],
    "comments": [{"author": "ann", "body": "Also the logout."}],
}
COMMON: dict[str, Any] = {"issue": ISSUE, "repo": REPO, "branch": "issue-7-fix-login",
                          "model": "claude-haiku-4-5", "machine": {"name": "gpu"}}  # fmt: skip


def test_the_work_briefing_carries_what_a_worker_needs() -> None:
    text = render_briefing(
        "work",
        {**COMMON, "files_in_scope": ["src/auth.py"], "attempt": 2,
         "previous": {"status": "failed", "failure_class": "stalled", "error": "no output"},
         "do_not_touch": [{"path": "src/db.py", "branch": "issue-3-db", "assignment": "a"}]},
    )  # fmt: skip
    assert text.startswith("You are working on issue #7 of the repository `api`")
    assert "Fix `login`; $(rm -rf /)" in text  # user text is data, never interpreted
    for part in ("Edit `src/auth.py`.", "ann wrote:", "Also the logout.", "Labels: bug",
                 "## Files in scope\n\n- `src/auth.py`", "- `src/db.py` (issue-3-db)",
                 "Build with: `make`", "Test with: `make test`", "attempt 2",
                 "`stalled`: no output", "STATUS:", "STUCK:", "`issue-7-fix-login`"):  # fmt: skip
        assert part in text, part
    assert "\n\n\n" not in text


def test_optional_sections_disappear() -> None:
    bare = {**COMMON, "issue": {"number": 1, "title": "t"}, "repo": RepoConfig(name="api")}
    text = render_briefing("work", bare)
    for absent in ("## The issue", "Files in scope", "Do not touch", "Earlier attempts",
                   "Build with", "Test with"):  # fmt: skip
        assert absent not in text


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_shipped_kind_renders(kind: str) -> None:
    ctx: dict[str, Any] = {
        **COMMON,
        "summary": "Fixed it.",
        "assignment": {"id": "api-7-a1b2", "machine": "gpu", "model": "m", "num_turns": 3,
                       "cost_usd": 0.01},
        "ref": "main",
        "pr": {"number": 9, "url": "http://x/9", "head": "issue-7-fix-login", "base": "main"},
        "review": "1. src/auth.py:3 handles no None",
        "conflicts": ["src/auth.py"],
        "merged": [{"number": 9, "title": "Fix login"}],
        "proposals": [{"id": "p1", "repo": "api", "issue": 7, "machine": "gpu", "model": "m",
                       "labels": ["bug"], "title": "Fix login"}],
    }  # fmt: skip
    text = render_briefing(kind, ctx)
    assert text.strip()
    if kind == "pr":
        assert "Closes #7" in text and "api-7-a1b2" in text
    if kind == "review":
        assert "VERDICT: approve" in text and "git diff origin/main...HEAD" in text
    if kind == "conflict":
        assert "- `src/auth.py`" in text
    if kind == "smoke":
        assert "SMOKE: pass" in text and "#9 Fix login" in text


def test_a_user_folder_overrides_any_template(tmp_path: Path) -> None:
    (tmp_path / "work.md.j2").write_text("Mine: {{ issue.title }} on {{ branch }}\n")
    (tmp_path / "_protocol.md.j2").write_text("Say DONE when done.\n")
    assert render_briefing("work", COMMON, user_dir=tmp_path).startswith("Mine: Fix `login`")
    fix = render_briefing("fix", COMMON, user_dir=tmp_path)  # shipped fix, user's protocol part
    assert "Say DONE when done." in fix and "STUCK:" not in fix


def test_template_mistakes_are_clear(tmp_path: Path) -> None:
    (tmp_path / "work.md.j2").write_text("{{ issue.titel }}\n")
    with pytest.raises(ConfigError, match="undefined variable") as info:
        render_briefing("work", COMMON, user_dir=tmp_path)
    assert "the variables are" in str(info.value) and "issue" in str(info.value)
    (tmp_path / "work.md.j2").write_text("line one\n{% if %}\n")
    with pytest.raises(ConfigError) as info:
        render_briefing("work", COMMON, user_dir=tmp_path)
    assert info.value.line == 2
    with pytest.raises(CoordError, match="the work briefing needs branch"):
        render_briefing("work", {k: v for k, v in COMMON.items() if k != "branch"})
    with pytest.raises(ConfigError, match=r"no briefing template nope\.md\.j2"):
        render_briefing("nope", COMMON)


def test_files_in_scope_come_from_backticked_paths() -> None:
    body = ("Change `src/app.py` and `docs/a b.md`, see `README.md`, run `make test`,\n"
            "not `../etc/passwd` nor `http://x//y`; `src/app.py` again.")  # fmt: skip
    assert files_in_scope(body) == ["src/app.py", "README.md"]
