"""`LocalTransport`: the coordinator's own machine, through asyncio subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from ..atomic import write_atomic
from ..errors import CommandTimeout
from .transport import CompletedCommand, Transport

__all__ = ["LocalTransport", "login_env"]

# What an SSH login gives a command, plus where tmux puts its sockets.  Everything else in
# the coordinator's environment (tokens, API keys, SSH_AUTH_SOCK) stays with it: the tmux
# server a command may start keeps its environment for life and hands it to every session.
_LOGIN_NAMES = frozenset(
    ["HOME", "USER", "LOGNAME", "PATH", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TMUX_TMPDIR"]
)


def login_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment local commands start from: an SSH login's, taken from environ."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if k in _LOGIN_NAMES or k.startswith("LC_")}


class LocalTransport(Transport):
    """Run commands on this machine with no shell in between, from `login_env`."""

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
        self.stats["commands"] += 1
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=login_env(),
            start_new_session=True,  # a tmux server started here must outlive us
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(input), timeout)
        except TimeoutError:
            _kill(proc)
            await proc.wait()
            raise CommandTimeout(
                f"{what or argv[0]} did not finish within {timeout:g} s", machine=self.name
            ) from None
        except asyncio.CancelledError:
            _kill(proc)
            with contextlib.suppress(ProcessLookupError, asyncio.CancelledError):
                await proc.wait()  # reap it and close its pipes before going
            raise
        assert proc.returncode is not None
        return self._checked(CompletedCommand(list(argv), proc.returncode, out, err), check, what)

    async def stream(self, argv: Sequence[str]) -> AsyncIterator[bytes]:
        """Yield argv's stdout as it arrives; raise `CommandError` if it fails by itself."""
        self.stats["commands"] += 1
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=login_env(),
            start_new_session=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        finished = False
        try:
            yield b""  # running: see `Transport.stream`
            while chunk := await proc.stdout.read(65536):
                yield chunk
            err = await proc.stderr.read()
            await proc.wait()
            finished = True
        finally:
            if not finished and proc.returncode is None:
                # The caller stopped reading early: kill the command's whole session (its own,
                # start_new_session), since a followed `tail` it started holds stdout open and
                # the wait below would last until the run ends.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
        if proc.returncode:
            self._checked(CompletedCommand(list(argv), proc.returncode, b"", err), True, None)

    async def upload(self, data: bytes, path: str, *, mode: int = 0o600) -> None:
        """Write data to path atomically (a leading ``~/`` means the home dir)."""
        target = Path(os.path.expanduser(path))
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, data, mode=mode)


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
