"""The names under a worker machine's workdir, as the remote scripts use them.

::

    bin/coord-launcher-<hash>            the launcher, installed by the first dispatch
    worktrees/<repo>/<id>/               the git worktree of one assignment
    runs/<id>/                           its run directory (`RunFile` names its files)
    runs/.live/<id>                      empty: the run is live
    locks/                               one worker per worktree; dispatches per clone
    disk                                 when, and the KiB the workdir uses and has free
    ports/<port>                         "<id>": the live run (or app) that has the port

tests/test_protocol.py checks that the scripts use these names.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["TAIL_FILES", "Layout", "RunDir", "RunFile"]


class RunFile(enum.StrEnum):
    """The files in a run directory (``runs/<id>/``)."""

    SPEC = "spec.json"  # what was started (dispatch)
    BRIEFING = "briefing.md"  # the prompt, the worker's stdin
    LAUNCH_ENV = "launch.env"  # what the launcher starts, and its limits
    EVENTS = "events.jsonl"  # the worker's stdout
    STDERR = "stderr.log"
    LAUNCHER_LOG = "launcher.log"
    EXIT = "exit.json"  # written once, atomically, when the run ends
    EXIT_RESERVE = "exit.json.next"  # space for exit.json, taken when the run began
    LAUNCHER_PID = "launcher.pid"  # pid, boot id, start time
    DISPATCH_PID = "dispatch.pid"  # the same, of the dispatch on its way
    WORKER_PID = "worker.pid"
    ENV_FIFO = "env.fifo"  # the worker's environment, from dispatch to launcher
    STOP = "stop"  # asked to stop
    SEEN = ".seen"  # the launcher's mark of the last look at events.jsonl
    RESCUE_INDEX = "rescue.index"  # the private index the outcome check saves changes with
    RADAR = "radar"  # its worktree, start commit and base, and where its branch left that base
    RADAR_FILES = "radar.files"  # the last reading of its branch's files (SIZE TIME, paths)
    SCRATCH = "scratch"  # a scratch run's working dir (no repo: DispatchMode.SCRATCH)
    PORTS = "ports"  # FIRST LAST: the ports its dispatch gave it (COORD_PORT, COORD_PORTS)
    SETUP_LOG = "setup.log"  # the workspace's setup (and copy) output
    SETTINGS = "settings.json"  # the worker's sandbox settings (worker.confine), --settings
    ARCHIVE = "archive.sh"  # what clean runs in the worktree before removing it
    ARCHIVE_TIMEOUT = "archive.timeout"  # its timeout, in seconds
    ARCHIVE_LOG = "archive.log"  # its output
    APP = "app.sh"  # what `coord run-app` starts in the worktree (the workspace's run)
    APP_PID = "app.pid"  # pid, boot id, start time of the app's process, while it runs
    APP_PORTS = "app.ports"  # FIRST LAST: the app's own port range
    APP_LOG = "app.log"  # its output


TAIL_FILES = (RunFile.EVENTS, RunFile.STDERR, RunFile.LAUNCHER_LOG)


@dataclass(frozen=True)
class RunDir:
    """One run's directory on a machine."""

    path: str

    @property
    def id(self) -> str:
        """Return the assignment id the directory is named by."""
        return self.path.rsplit("/", 1)[-1]

    def __truediv__(self, name: RunFile) -> str:
        return f"{self.path}/{name}"


@dataclass(frozen=True)
class Layout:
    """The names under a machine's workdir (``~`` is the remote home), as the scripts use them."""

    workdir: str

    RUNS = "runs"
    LIVE = ".live"  # runs/.live/<id>: empty, the run is live
    WORKTREES = "worktrees"
    BIN = "bin"
    LAUNCHER_FILE = "coord-launcher-"  # bin/coord-launcher-<hash>
    LOCKS = "locks"
    WORKTREE_LOCK = "wt-"  # locks/wt-<the worktree's path, %-encoded>.lock
    REPO_LOCK = "repo-"  # locks/repo-<cksum>.lock, where the clone's git dir is read-only
    DISPATCH_LOCK = "coord-dispatch.lock"  # in the clone's git dir
    SESSION = "coord-"  # tmux session coord-<id>
    DISK = "disk"  # TIME USED_KB FREE_KB: measured in the background by a status
    ARCHIVES = "archives"  # archives/<id>/: what a run's archive script kept ($COORD_ARCHIVE_DIR)
    PORTS = "ports"  # ports/PORT holds the ID of the live run (or app) that has the port

    @property
    def root(self) -> str:
        """Return the workdir with no trailing slash."""
        return self.workdir.rstrip("/") or "~/.coord"

    def run_dir(self, id: str) -> RunDir:
        """Return run `id`'s directory."""
        return RunDir(f"{self.root}/{self.RUNS}/{id}")

    def live_mark(self, id: str) -> str:
        """Return the file that lists run `id` as live."""
        return f"{self.root}/{self.RUNS}/{self.LIVE}/{id}"

    def worktree(self, repo: str, id: str) -> str:
        """Return the worktree assignment `id` works in."""
        return f"{self.root}/{self.WORKTREES}/{repo}/{id}"

    def worktree_lock(self, worktree: str) -> str:
        """Return the lock one worker per worktree holds (a path of up to 200 characters)."""
        name = worktree.replace("%", "%25").replace("/", "%2F")
        if len(name) > 200:
            raise ValueError(f"{worktree!r} is named by its cksum on the machine")
        return f"{self.root}/{self.LOCKS}/{self.WORKTREE_LOCK}{name}.lock"

    def launcher(self, hash: str) -> str:
        """Return where the launcher of that version is installed."""
        return f"{self.root}/{self.BIN}/{self.LAUNCHER_FILE}{hash}"
