"""Shared code for the benchmark scripts in bench/ (they are scripts, not pytest tests).

Each script sets up what it needs under one short temp dir (``/tmp/cb-XXXX``), measures
coordlib and a baseline in the same run, prints a table and ONE final JSON line, and cleans
up even on Ctrl-C or failure: tmux servers on its own sockets, sshd processes, every process
whose command line names its temp dir, and the temp dir itself.

Worker "machines" are real OpenSSH ``sshd`` processes on loopback (`coordlib.testing.start_sshd`),
logging in as a dedicated user with Debian's default shell files (``coordbench``, created with
``useradd -m`` from /etc/skel when run as root), or as the invoking user (``--user root``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:  # `python3 bench/x.py` from a checkout without install
    sys.path.insert(0, str(REPO_ROOT))

import coordlib.testing  # noqa: E402
from coordlib.testing import SSHServer, start_sshd  # noqa: E402

FAKE_CLAUDE = Path(coordlib.testing.__file__).with_name("fake_claude.py")
BENCH_USER = "coordbench"
# The workers run the stand-in with Debian's python: a dedicated user cannot read /root/.pyenv.
WORKER_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


# ---------------------------------------------------------------- statistics
def median(values: Sequence[float]) -> float:
    """Return the median, or NaN for no values."""
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], p: float) -> float:
    """Return the p-th percentile (0..100) by linear interpolation between ranks."""
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ms(seconds: float) -> float:
    """Return seconds as milliseconds rounded to 0.1."""
    return round(seconds * 1000.0, 1) if not math.isnan(seconds) else seconds


# ---------------------------------------------------------------- the machine
def _first_line(argv: Sequence[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"
    return ((p.stdout or p.stderr).strip().splitlines() or ["n/a"])[0]


def machine_info() -> dict[str, Any]:
    """Describe this machine: CPU, cores, kernel, Python, OpenSSH, tmux, git and the load."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssh": _first_line(["ssh", "-V"]),
        "tmux": _first_line(["tmux", "-V"]),
        "git": _first_line(["git", "--version"]),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def print_machine(info: dict[str, Any]) -> None:
    """Print the machine description, one line."""
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, kernel {info['kernel']}, "
        f"Python {info['python']}, {info['openssh']}, {info['tmux']}, {info['git']}; "
        f"load {' '.join(str(x) for x in info['loadavg'])}",
        flush=True,
    )


def raise_nofile(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to wanted (at most the hard limit); return it.

    Children inherit it.  A fleet of N machines holds N connections in one process.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return int(soft)


# ---------------------------------------------------------------- executables
def bin_of(name: str) -> str:
    """Return the console script name installed beside this Python (not a pyenv shim)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"bench: `{name}` is not installed (pip install -e . from the repo root)")
    return found


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Return env (default: ours) with this checkout first on PYTHONPATH.

    So `coord` runs this checkout's code even when the installed console script's editable
    finder points somewhere else (a stale `pip install -e` of another clone).
    """
    env = dict(os.environ if env is None else env)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + old if old else "")
    # Timed processes run as an installed coord does: from compiled bytecode (pip compiles
    # on install).  With this set, every start would compile the checkout's modules anew.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def compile_bytecode() -> None:
    """Compile coordlib and cli to bytecode, as `pip install` does, before timing starts."""
    import compileall

    for package in ("coordlib", "cli"):
        compileall.compile_dir(REPO_ROOT / package, quiet=1)


def time_process(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 300,
    check: bool = True,
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run argv as a whole process and return (wall seconds, the completed process)."""
    env = child_env(env)
    t0 = time.perf_counter()
    p = subprocess.run(
        list(argv),
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    dt = time.perf_counter() - t0
    if check and p.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
        )
    return dt, p


# ---------------------------------------------------------------- cleanup
class Cleanup:
    """A LIFO stack of cleanup callbacks run once, on exit, Ctrl-C, SIGTERM or SIGHUP.

    Use as ``with Cleanup() as cleanup: cleanup.add(fn)``.  Every callback runs even if an
    earlier one fails; failures are reported on stderr.
    """

    def __init__(self) -> None:
        self._callbacks: list[tuple[str, Callable[[], None]]] = []
        self._done = False
        self._old: dict[int, Any] = {}

    def add(self, what: str, fn: Callable[[], None], *, last: bool = False) -> None:
        """Register fn to run at cleanup, before the earlier ones (or after all, if last)."""
        if last:
            self._callbacks.insert(0, (what, fn))
        else:
            self._callbacks.append((what, fn))

    def __enter__(self) -> Cleanup:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old[sig] = signal.signal(sig, _raise_interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        self.run()
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def run(self) -> None:
        """Run the callbacks now (once), ignoring a second Ctrl-C while they run."""
        if self._done:
            return
        self._done = True
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            while self._callbacks:
                what, fn = self._callbacks.pop()
                try:
                    fn()
                except Exception as exc:  # keep cleaning the rest
                    print(f"bench: cleanup of {what} failed: {exc}", file=sys.stderr)
        finally:
            signal.signal(signal.SIGINT, old_int)


def run_main(main: Callable[[], int]) -> None:
    """Run a benchmark's main; an interrupt (its cleanup already done) exits 130."""
    try:
        code = main()
    except KeyboardInterrupt:
        print("bench: interrupted; cleaned up", file=sys.stderr)
        code = 130
    sys.exit(code)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def bench_root(cleanup: Cleanup, prefix: str = "cb-") -> Path:
    """Make a short temp dir (tmux sockets need short paths), removed at cleanup."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(root, 0o755)  # the bench user reaches its machine dirs through it
    cleanup.add(f"rm -rf {root}", lambda: shutil.rmtree(root, ignore_errors=True))
    cleanup.add(f"processes under {root}", lambda: kill_processes_naming(root))
    return root


def kill_processes_naming(path: Path, *, grace: float = 1.0) -> list[int]:
    """Kill, by pid, every process whose command line names path (ours, by construction)."""
    needle = str(path).encode()
    me = os.getpid()

    def matching() -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if needle in cmdline:
                pids.append(int(entry))
        return pids

    pids = matching()
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = [p for p in matching() if p in pids]
    for pid in matching():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return pids


def _uid_of(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


# ---------------------------------------------------------------- the login user
@dataclass(frozen=True)
class LoginUser:
    """Who the sshd machines log in as, and how to run a local command as them."""

    name: str
    uid: int
    gid: int
    home: Path

    @property
    def is_self(self) -> bool:
        """Tell whether this is the user running the benchmark."""
        return self.uid == os.geteuid()

    def argv(self, *argv: str) -> list[str]:
        """Return argv run as this user (through runuser when it is another user)."""
        if self.is_self:
            return list(argv)
        return ["runuser", "-u", self.name, "--", *argv]

    def chown(self, path: Path) -> None:
        """Give path (recursively) to this user."""
        if not self.is_self:
            subprocess.run(["chown", "-R", f"{self.uid}:{self.gid}", str(path)], check=True)


def login_user(choice: str) -> LoginUser:
    """Return the login user for --user: the bench user (created if needed) or root/self."""
    if choice in ("root", "self") or (choice == BENCH_USER and os.geteuid() != 0):
        if choice == BENCH_USER:
            print(f"bench: not root, so the machines log in as yourself, not {BENCH_USER}")
        if choice == "root" and os.geteuid() != 0:
            raise SystemExit("bench: --user root needs to run as root")
        pw = pwd.getpwuid(os.geteuid())
    else:
        pw = ensure_user(choice)
    return LoginUser(pw.pw_name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))


def ensure_user(name: str) -> pwd.struct_passwd:
    """Create the bench user as Debian does (useradd -m copies /etc/skel), once."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    if os.geteuid() != 0:
        raise SystemExit(f"bench: user {name} does not exist and only root can create it")
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True)
    # useradd leaves the password locked ("!"), and sshd without PAM refuses a locked
    # account even for key logins; "*" is no password at all, but not locked.
    subprocess.run(["usermod", "-p", "*", name], check=True)
    print(f"bench: created user {name} (useradd -m -s /bin/bash, files from /etc/skel)")
    return pwd.getpwnam(name)


def kill_tmux(user: LoginUser, socket: str) -> None:
    """Kill user's tmux server on socket (its sessions go with it) and remove the socket.

    tmux 3.3a leaves the socket file behind after kill-server.
    """
    subprocess.run(
        user.argv("tmux", "-L", socket, "kill-server"),
        capture_output=True,
        check=False,
        timeout=30,
    )
    with contextlib.suppress(OSError):
        os.unlink(f"/tmp/tmux-{user.uid}/{socket}")


# ---------------------------------------------------------------- machines
@dataclass
class Machine:
    """One sshd on loopback standing for a worker machine, with its own repo clone."""

    name: str
    server: SSHServer
    dir: Path  # owned by the login user: repo clone and coordlib workdir
    socket: str  # its own tmux socket, so each machine has its own tmux server

    @property
    def repo(self) -> Path:
        return self.dir / "repo"

    @property
    def workdir(self) -> Path:
        return self.dir / "wd"


@dataclass
class Fleet:
    """Machines started for one benchmark, the origin repo they clone, and the login user."""

    root: Path
    user: LoginUser
    cleanup: Cleanup
    origin: Path | None = None
    machines: list[Machine] = field(default_factory=list)
    fake_claude: Path | None = None

    def __post_init__(self) -> None:
        self.cleanup.add("tmux socket files", self.sweep_sockets, last=True)
        if not self.user.is_self:
            self.cleanup.add(f"processes of {self.user.name}", self.sweep_user, last=True)

    def sweep_sockets(self) -> None:
        """Remove any socket file of this process's tmux servers that is still there."""
        d = Path(f"/tmp/tmux-{self.user.uid}")
        with contextlib.suppress(OSError):
            for p in d.glob(f"cb{os.getpid()}*"):
                p.unlink()

    def sweep_user(self, grace: float = 6.0) -> None:
        """Let the bench user's leftovers (launchers stopping their workers) end, then kill.

        The bench user exists only for these benchmarks, so what it still runs is ours; do
        not run two benchmarks at once as that user.
        """
        deadline = time.monotonic() + grace
        while True:
            pids = [
                int(p) for p in os.listdir("/proc") if p.isdigit() and _uid_of(p) == self.user.uid
            ]
            if not pids or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def prepare(self) -> None:
        """Create the bare origin (one commit on main) and copy the stand-in worker."""
        seed = self.root / "seed"
        seed.mkdir()
        git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@coord.invalid"]
        subprocess.run([*git, "init", "-q", "-b", "main", str(seed)], check=True)
        (seed / "README.md").write_text("# bench\n")
        subprocess.run([*git, "-C", str(seed), "add", "-A"], check=True)
        subprocess.run([*git, "-C", str(seed), "commit", "-q", "-m", "initial"], check=True)
        self.origin = self.root / "origin.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(self.origin)], check=True)
        self.user.chown(self.origin)
        if not self.user.is_self:
            # The origin belongs to the login user, and this process's git (coordlib's local
            # forge reads the origin's branches) refuses a repo another user owns; a global
            # config of our own, for this process and its children only, trusts it.
            gitconfig = self.root / "gitconfig"
            gitconfig.write_text(f"[safe]\n\tdirectory = {self.origin}\n")
            os.environ["GIT_CONFIG_GLOBAL"] = str(gitconfig)
        self.fake_claude = self.root / "fake_claude.py"
        shutil.copyfile(FAKE_CLAUDE, self.fake_claude)
        os.chmod(self.fake_claude, 0o644)

    def start(self, n: int, *, tag: str = "") -> list[Machine]:
        """Start n sshd machines, each with its own port, work dir, repo clone and tmux socket."""
        if self.origin is None:
            self.prepare()
        assert self.origin is not None
        started = []
        for _ in range(n):
            i = len(self.machines)
            sdir = self.root / f"s{i}"
            server = start_sshd(sdir)
            self.cleanup.add(f"sshd {server.port}", server.stop)
            # start_sshd has no user option: any user may log in with its client key, as long
            # as that user can read the authorized_keys file (StrictModes is off).
            os.chmod(sdir, 0o755)
            os.chmod(sdir / "authorized_keys", 0o644)
            server.user = self.user.name
            mdir = self.root / f"m{i}"
            (mdir / "wd").mkdir(parents=True)
            self.user.chown(mdir)
            # Cloned as the login user: git refuses a repo another user owns.
            subprocess.run(
                self.user.argv("git", "clone", "-q", str(self.origin), str(mdir / "repo")),
                check=True,
            )
            sock = f"cb{os.getpid()}{tag}m{i}"
            m = Machine(name=f"m{i}", server=server, dir=mdir, socket=sock)
            self.cleanup.add(f"tmux -L {sock}", lambda s=sock: self.kill_tmux(s))
            self.machines.append(m)
            started.append(m)
        return started

    def kill_tmux(self, socket: str) -> None:
        """Kill the login user's tmux server on that socket, and remove the socket file."""
        kill_tmux(self.user, socket)

    def machine_config(self, m: Machine, **extra: Any) -> dict[str, Any]:
        """Return m as coordinator.yml describes it."""
        return {
            "name": m.name,
            "host": m.server.host,
            "port": m.server.port,
            "user": self.user.name,
            "identity_file": str(m.server.client_key),
            "known_hosts": str(m.server.known_hosts),
            "workdir": str(m.workdir),
            "tmux_socket": m.socket,
            "repo_paths": {"api": str(m.repo)},
            "claude_command": f"{WORKER_PYTHON} {self.fake_claude}",
            **extra,
        }

    def write_config(
        self,
        path: Path,
        *,
        machine_extra: dict[str, Any] | None = None,
        worker: dict[str, Any] | None = None,
        max_workers: int = 1000,
        machines: Sequence[Machine] | None = None,
    ) -> Path:
        """Write a coordinator.yml for these machines (the board lives beside it)."""
        data = {
            # url: the local forge reads the repo's remote (its branches) at every assign
            "repos": [{"name": "api", "default_branch": "main", "url": str(self.origin)}],
            "machines": [
                self.machine_config(m, **(machine_extra or {}))
                for m in (machines if machines is not None else self.machines)
            ],
            "concurrency": {
                "max_workers": max_workers,
                "remote_claims": os.environ.get("BENCH_REMOTE_CLAIMS", "1") == "1",
            },
            "worker": worker or {"stall_timeout": "2h", "max_runtime": "3h"},
            "board": {"path": str(path.parent / "board.json")},
        }
        path.write_text(yaml_dump(data))
        return path


def yaml_dump(data: Any) -> str:
    """Dump data as YAML (PyYAML is a coordlib dependency)."""
    import yaml

    return str(yaml.safe_dump(data, sort_keys=False))


# ---------------------------------------------------------------- arguments and results
def parser(description: str, *, ssh: bool = True) -> argparse.ArgumentParser:
    """Return the common command line: --quick, --reps and (for SSH benches) --user."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="fewer repetitions, smaller sizes")
    p.add_argument("--reps", type=int, default=None, help="repetitions (overrides the default)")
    if ssh:
        p.add_argument(
            "--user",
            default=BENCH_USER,
            help=f"who the machines log in as: {BENCH_USER} (Debian's default shell files, "
            "created when run as root) or root (this machine's root, whose pyenv .bashrc "
            "costs ~210 ms per command)",
        )
    return p


def check(name: str, value: float, op: str, target: float, unit: str = "") -> dict[str, Any]:
    """Return one target check: value op target, and whether it passes."""
    ok = {"<": value < target, "<=": value <= target, ">=": value >= target, "==": value == target}
    if op not in ok:
        raise ValueError(op)
    passed = bool(ok[op]) and not math.isnan(value)
    return {
        "name": name,
        "value": round(value, 4),
        "op": op,
        "target": target,
        "unit": unit,
        "pass": passed,
    }


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows as an aligned text table."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for j, r in enumerate(cells):
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if j == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def print_checks(checks: Sequence[dict[str, Any]]) -> None:
    """Print each target check as one line."""
    for c in checks:
        mark = "PASS" if c["pass"] else "FAIL"
        value, target = f"{c['value']:g}{c['unit']}", f"{c['target']:g}{c['unit']}"
        print(f"  [{mark}] {c['name']}: {value} {c['op']} {target}")


def finish(
    bench: str, info: dict[str, Any], checks: Sequence[dict[str, Any]], **fields: Any
) -> int:
    """Print the checks and the ONE final JSON line; return the exit code (0 when all pass)."""
    print("targets:")
    print_checks(checks)
    passed = all(c["pass"] for c in checks)
    info = {**info, "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
    record = {"bench": bench, **fields, "checks": list(checks), "pass": passed, "machine": info}
    record = clean_floats(record)
    print(json.dumps(record, separators=(",", ":"), default=_jsonable, allow_nan=False), flush=True)
    return 0 if passed else 1


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return str(value)


def clean_floats(data: Any) -> Any:
    """Replace NaN with None (JSON has no NaN) and round floats to 6 decimals, throughout."""
    if isinstance(data, float):
        return None if math.isnan(data) else round(data, 6)
    if isinstance(data, dict):
        return {k: clean_floats(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [clean_floats(v) for v in data]
    return data


def last_json_line(text: str) -> dict[str, Any] | None:
    """Return the last line of text that parses as a JSON object with a "bench" key."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict) and "bench" in value:
                    return value
    return None


def coord_env(config: Path) -> dict[str, str]:
    """Return the environment for a `coord` process on this config."""
    return {**child_env(), "COORD_CONFIG": str(config)}


@contextlib.contextmanager
def section(title: str) -> Iterator[None]:
    """Print a section title and how long it took."""
    print(f"-- {title}", flush=True)
    t0 = time.perf_counter()
    yield
    print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)
