"""Install and find the pinned real Claude Code CLI, for tests that drive it offline.

The CLI is an npm package; it is installed once per version under
``${XDG_CACHE_HOME:-~/.cache}/coordlib/claude-code/<version>/`` and reused.
``python -m coordlib.testing.claude_cli install`` installs it and prints the path of the
``claude`` executable (CI and bootstrap call this).  `claude_env` is the environment that
runs it offline against `coordlib.testing.model_server`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = [
    "CLAUDE_CODE_VERSION",
    "claude_env",
    "claude_version",
    "find_claude",
    "install_claude",
]

# Pinned: the stream-json fields change between releases.  Node 20 picks this one.
CLAUDE_CODE_VERSION = "2.1.197"
PACKAGE = "@anthropic-ai/claude-code"
_MARKER = ".coordlib-installed"


# Variables from the caller's environment that would steer the CLI elsewhere or change it.
_FOREIGN = re.compile(
    r"^(ANTHROPIC_|CLAUDE|AWS_BEARER_TOKEN_BEDROCK$|IS_SANDBOX$|(HTTPS?|ALL|NO)_PROXY$)",
    re.IGNORECASE,
)


def claude_env(
    url: str,
    home: Path,
    *,
    max_retries: int = 1,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return a whole environment that runs the real CLI offline against url, isolated in home.

    Starts from base (default ``os.environ``) less anything that would point the CLI
    elsewhere (``ANTHROPIC_*``, ``CLAUDE*``, proxies, ``IS_SANDBOX``), and makes home, its
    config dir and its temp dir.  A git identity is set because the isolated HOME has no
    ``~/.gitconfig`` and the scripted tools commit.

    Local only: ``HOME``, ``CLAUDE_CONFIG_DIR``, ``TMPDIR`` and ``CLAUDE_CODE_TMPDIR`` are
    paths on *this* machine, made here, and `url` must be reachable from where the CLI
    runs.  For a worker on another machine, give its ``env`` in coordinator.yml only the
    rest (``ANTHROPIC_BASE_URL`` with an address that machine can reach, the key as a
    ``${VAR}`` reference, the ``DISABLE_*`` switches, ``CLAUDE_CODE_MAX_RETRIES``), and
    let the launcher's clean environment keep the machine's own ``HOME``.
    """
    config = home / ".claude"
    tmp = home / "tmp"
    if len(str(tmp)) > 48:
        # The sandbox's bridge sockets live in the CLI's temp dir, and a Unix socket's path
        # has 107 bytes at most: a deep home gets a short temp dir of its own.
        tmp = Path(tempfile.mkdtemp(prefix="coord-claude-"))
    for d in (home, config, tmp):
        d.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in (os.environ if base is None else base).items() if not _FOREIGN.match(k)}
    for name, value in (
        ("GIT_AUTHOR_NAME", "coord-test"),
        ("GIT_AUTHOR_EMAIL", "test@coord.invalid"),
        ("GIT_COMMITTER_NAME", "coord-test"),
        ("GIT_COMMITTER_EMAIL", "test@coord.invalid"),
    ):
        env.setdefault(name, value)
    env.update(
        {
            "ANTHROPIC_BASE_URL": url,
            "ANTHROPIC_API_KEY": "sk-test-coordlib-offline",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "CLAUDE_CODE_MAX_RETRIES": str(max_retries),
            "HOME": str(home),
            "CLAUDE_CONFIG_DIR": str(config),
            "TMPDIR": str(tmp),
            "CLAUDE_CODE_TMPDIR": str(tmp),
        }
    )
    return env


def default_cache_dir() -> Path:
    """Return ``${XDG_CACHE_HOME:-~/.cache}/coordlib``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "coordlib"


def _prefix(version: str, cache_dir: Path | None) -> Path:
    return (cache_dir or default_cache_dir()) / "claude-code" / version


def claude_version(executable: Path, timeout: float = 60) -> str | None:
    """Return what ``claude --version`` prints (e.g. "2.1.197 (Claude Code)"), or None."""
    try:
        out = subprocess.run(
            [str(executable), "--version"],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "DISABLE_AUTOUPDATER": "1"},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_claude(version: str = CLAUDE_CODE_VERSION, cache_dir: Path | None = None) -> Path | None:
    """Return the installed ``claude`` of this version if it runs, else None."""
    prefix = _prefix(version, cache_dir)
    executable = prefix / "node_modules" / ".bin" / "claude"
    if not (prefix / _MARKER).exists() or not executable.exists():
        return None
    reported = claude_version(executable)
    if reported is None or not reported.startswith(version):
        return None
    return executable


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def install_claude(
    version: str = CLAUDE_CODE_VERSION, cache_dir: Path | None = None, *, timeout: float = 900
) -> Path:
    """Install the pinned CLI with npm (once; safe across processes) and return its path."""
    found = find_claude(version, cache_dir)
    if found is not None:
        return found
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            f"npm not found: install Node.js 20 and npm (apt-get install nodejs npm) to get "
            f"{PACKAGE}@{version}"
        )
    prefix = _prefix(version, cache_dir)
    with _locked(prefix.with_name(f"{version}.lock")):
        found = find_claude(version, cache_dir)  # another process may have finished meanwhile
        if found is not None:
            return found
        # A half-finished earlier install is not trusted: start over.
        shutil.rmtree(prefix, ignore_errors=True)
        prefix.mkdir(parents=True)
        command = [
            npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
            "--loglevel=error", "--save-exact", f"{PACKAGE}@{version}",
        ]  # fmt: skip
        try:
            out = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "DISABLE_AUTOUPDATER": "1"},
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{' '.join(command)} ran past {timeout:.0f} s") from exc
        if out.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed with exit {out.returncode}:\n"
                f"{(out.stderr or out.stdout)[-3000:]}"
            )
        executable = prefix / "node_modules" / ".bin" / "claude"
        reported = claude_version(executable)
        if reported is None or not reported.startswith(version):
            raise RuntimeError(
                f"installed {PACKAGE}@{version} under {prefix}, but "
                f"`{executable} --version` gave {reported!r}; remove {prefix} and retry"
            )
        (prefix / _MARKER).write_text(f"{reported}\n")
        return executable


def main(argv: list[str] | None = None) -> int:
    """Run ``install`` or ``find``; print the executable's path."""
    parser = argparse.ArgumentParser(prog="python -m coordlib.testing.claude_cli")
    parser.add_argument("command", choices=["install", "find"])
    parser.add_argument("--version", default=CLAUDE_CODE_VERSION, dest="version")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "install":
        try:
            path = install_claude(args.version, args.cache_dir)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    else:
        found = find_claude(args.version, args.cache_dir)
        if found is None:
            print(
                f"{PACKAGE}@{args.version} is not installed: "
                "python -m coordlib.testing.claude_cli install",
                file=sys.stderr,
            )
            return 1
        path = found
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
