"""`scripts/bootstrap` on the distro's own Python, as a new user runs it (issue: PEP 668).

Run in a copy of the working tree, with the system's Python first on PATH and an empty
HOME, so nothing from the developer's machine helps.  `.ci/run` also runs the README's two
commands that way, with the Claude Code CLI; here the CLI is left out (--no-claude-cli).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from coordlib.testing.plugin import _unavailable

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = Path("/usr/bin/python3")
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"

pytestmark = pytest.mark.slow


def _copy_tree(dest: Path) -> None:
    """Copy the working tree's files (tracked, or new and not ignored) to dest."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        src = ROOT / name
        if not src.is_file():
            continue  # deleted in the working tree
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(src.read_bytes())
        target.chmod(src.stat().st_mode & 0o777)


def _bootstrap(clone: Path, home: Path, path: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.update(HOME=str(home), PATH=path)
    env.pop("XDG_CACHE_HOME", None)
    return subprocess.run(
        ["./scripts/bootstrap", "--no-claude-cli", *args],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_bootstrap_installs_into_a_venv_of_the_clone_on_the_system_python(
    tmp_path: Path,
) -> None:
    if not SYSTEM_PYTHON.exists():
        _unavailable(f"{SYSTEM_PYTHON} is not installed")
    version = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sys; print(sys.version_info >= (3, 11))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if version != "True":
        _unavailable(f"{SYSTEM_PYTHON} is older than 3.11")
    clone, home = tmp_path / "clone", tmp_path / "home"
    clone.mkdir()
    home.mkdir()
    _copy_tree(clone)

    first = _bootstrap(clone, home, SYSTEM_PATH)
    assert first.returncode == 0, first.stderr
    assert "externally-managed" not in first.stderr
    assert "making .venv with Python 3" in first.stderr
    assert f"coord is installed: {clone.resolve()}/.venv/bin/coord" in first.stderr
    assert "export PATH=" in first.stderr  # ~/.local/bin is not on PATH: say how

    coord = clone / ".venv" / "bin" / "coord"
    done = subprocess.run([str(coord), "version"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("coord ")
    # Nothing went into the system's own site-packages.
    system = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import coordlib"], capture_output=True, cwd=home, check=False
    )
    assert system.returncode != 0
    cfg = (clone / ".venv" / "pyvenv.cfg").read_text()
    assert "home = /usr/bin" in cfg

    # Again, with ~/.local/bin on PATH: the venv is kept, and `coord` is linked there.
    local_bin = home / ".local" / "bin"
    second = _bootstrap(clone, home, f"{local_bin}:{SYSTEM_PATH}")
    assert second.returncode == 0, second.stderr
    assert "making .venv" not in second.stderr
    assert (local_bin / "coord").resolve() == coord.resolve()
    assert f"linked as {local_bin}/coord" in second.stderr


def test_bootstrap_refuses_a_dot_venv_that_is_not_a_venv_and_unknown_options(
    tmp_path: Path,
) -> None:
    clone, home = tmp_path / "clone", tmp_path / "home"
    (clone / "scripts").mkdir(parents=True)
    home.mkdir()
    script = clone / "scripts" / "bootstrap"
    script.write_bytes((ROOT / "scripts" / "bootstrap").read_bytes())
    script.chmod(0o755)
    (clone / ".venv").mkdir()
    (clone / ".venv" / "precious.txt").write_text("mine\n")
    done = _bootstrap(clone, home, os.environ["PATH"])
    assert done.returncode == 1
    assert ".venv exists and is not a virtual environment" in done.stderr
    assert (clone / ".venv" / "precious.txt").read_text() == "mine\n"

    bad = _bootstrap(clone, home, os.environ["PATH"], "--tset")
    assert bad.returncode == 2
    assert "unknown option --tset" in bad.stderr
