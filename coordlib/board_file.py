"""The board's file itself: read whole, replaced atomically (temp file, fsync, rename, fsync
of the directory), never readable by another user.  `coordlib.board_store` holds the lock
around every use of it."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from tinydb.storages import Storage

from coordlib.errors import BoardError

__all__ = ["MODE", "AtomicJSONStorage", "fsync_dir"]

MODE = 0o600  # the board, its temp file, its history and its lock file

_Tables = dict[str, dict[str, Any]]


class AtomicJSONStorage(Storage):
    """Read a TinyDB JSON file and replace it atomically; the caller holds the board lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp_path = path.with_name(path.name + ".tmp")

    def read(self) -> _Tables | None:
        """Return the file's tables, or None when it is missing or empty."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BoardError(f"cannot read board {self.path}: {exc.strerror or exc}") from exc
        if not raw.strip():
            return None
        try:
            data = json.loads(raw)
        except ValueError as exc:
            where = ""
            if isinstance(exc, json.JSONDecodeError):
                where = f" ({exc.msg} at line {exc.lineno}, column {exc.colno})"
            raise BoardError(
                f"board {self.path} is not valid JSON{where}; coordlib replaces it atomically, "
                f"so something else wrote it. Restore it from a backup, or move it aside to "
                f"start an empty board: mv {self.path} {self.path}.corrupt"
            ) from exc
        if not isinstance(data, dict):
            raise BoardError(
                f"board {self.path} is not a TinyDB file (its top level is a "
                f"{type(data).__name__}); move it aside: mv {self.path} {self.path}.corrupt"
            )
        return data

    def write(self, data: _Tables) -> None:
        """Replace the file with data: temp file, fsync, rename, fsync the directory."""
        try:
            payload = json.dumps(data, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise BoardError(
                f"cannot write board {self.path}: a record is not JSON ({exc})"
            ) from exc
        try:
            fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, MODE)
            with open(fd, "wb") as tmp:
                # A temp file a killed writer left keeps its mode through O_CREAT; and the
                # board takes the temp file's mode, which narrows a board made wider before.
                os.fchmod(fd, MODE)
                tmp.write(payload)
                tmp.flush()
                os.fsync(fd)
            os.replace(self.tmp_path, self.path)
            # The rename is durable only once the directory entry is.
            fsync_dir(self.path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.tmp_path.unlink()
            raise BoardError(f"cannot write board {self.path}: {exc.strerror or exc}") from exc


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
