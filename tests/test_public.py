"""The public surface of `coordlib`: what scripts import.  Names are added, never removed."""

from __future__ import annotations

import subprocess
import sys

import coordlib
from coordlib import errors

PUBLIC = {
    "Assignment", "AssignmentNotFound", "AuthError", "Board", "BoardError", "ClaimError",
    "CommandError", "CommandTimeout", "Comment", "CompletedCommand", "Config", "ConfigError",
    "CoordError", "Coordinator", "DispatchError", "Forge", "ForgeAuthError", "ForgeError",
    "HostKeyError", "Issue", "LocalTransport", "MachineError", "MachineStatus",
    "MergeConflictError", "NotFoundError", "ProtocolError", "PullRequest", "ResumeReport",
    "RunProgress", "SSHTarget", "SSHTransport", "Status", "StatusReport", "Transport",
    "UnreachableError", "UsageError", "WaitTimeout", "__version__", "format_event",
    "load_config", "parse_line",
}  # fmt: skip


def test_every_public_name_is_listed_and_loads() -> None:
    assert set(coordlib.__all__) >= PUBLIC
    for name in coordlib.__all__:
        assert getattr(coordlib, name) is not None


def test_every_error_is_public_and_in_the_tree() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert name in coordlib.__all__, f"{name} is not exported by coordlib"
        assert issubclass(cls, errors.CoordError)
        assert name in (errors.__doc__ or ""), f"{name} is missing from the drawn tree"


def test_importing_coordlib_loads_neither_asyncssh_nor_the_coordinator() -> None:
    heavy = "('asyncssh', 'coordlib.coordinator', 'yaml')"
    code = f"import sys, coordlib; print(sorted(m for m in {heavy} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_setup_cfg_installs_every_package_and_the_cli_under_its_own_name() -> None:
    import configparser
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {
        ".".join(p.parent.relative_to(root).parts) for p in (root / "coordlib").rglob("__init__.py")
    }
    assert listed == found | {"coord_cli"}
    assert cfg["options"]["package_dir"].split() == ["coord_cli", "=", "cli"]
    assert "coord = coord_cli.main:main" in cfg["options.entry_points"]["console_scripts"]
