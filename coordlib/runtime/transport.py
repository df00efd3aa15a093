"""The `Transport` interface: everything that touches a machine goes through one."""

from __future__ import annotations

import abc
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from ..errors import CommandError

__all__ = ["CompletedCommand", "Transport"]


@dataclass(frozen=True)
class CompletedCommand:
    """A finished command, shaped like `subprocess.CompletedProcess`."""

    argv: Sequence[str]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        """Return stdout decoded as UTF-8."""
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        """Return stderr decoded as UTF-8."""
        return self.stderr.decode("utf-8", "replace")


class Transport(abc.ABC):
    """Run commands on one machine, stream their output and upload files.

    `stats` counts the remote commands started (key ``"commands"``) and
    connections opened (``"connects"``): benchmarks and tests read it.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.stats: Counter[str] = Counter()

    @abc.abstractmethod
    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = 60.0,
        check: bool = True,
        what: str | None = None,
    ) -> CompletedCommand:
        """Run argv to completion; raise `CommandError` on failure when check is true."""

    @abc.abstractmethod
    def stream(self, argv: Sequence[str]) -> AsyncIterator[bytes]:
        """Yield argv's stdout in chunks as it arrives; end when the command exits.

        The first chunk is ``b""``, as soon as the command is running: a caller that was
        reconnecting knows it is back before any output comes.  A lost connection raises
        `UnreachableError`; the caller decides whether to resume.
        """

    @abc.abstractmethod
    async def upload(self, data: bytes, path: str, *, mode: int = 0o600) -> None:
        """Write data to path on the machine (a leading ``~/`` means the home dir)."""

    async def close(self) -> None:  # noqa: B027 - a no-op is right for most transports
        """Release connections; the transport may be used again afterwards."""

    def _checked(self, result: CompletedCommand, check: bool, what: str | None) -> CompletedCommand:
        if check and result.returncode != 0:
            raise CommandError(
                [*result.argv[:3], "…"] if _is_script(result.argv) else list(result.argv),
                result.returncode,
                result.out,
                result.err,
                machine=self.name,
                what=what,
            )
        return result


def _is_script(argv: Sequence[str]) -> bool:
    return len(argv) > 3 and argv[0] == "bash" and argv[2] == "-c"
