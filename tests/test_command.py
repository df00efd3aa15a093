"""The one quoting place: `join`, `slugify`, `LaunchSpec.render`, `encode_env`, `status_command`.

Everything here is checked against real shells (bash, and /bin/sh for `join`), never
against our own idea of how quoting works.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from coordlib.runtime.answers import parse_status
from coordlib.runtime.builders import Want, status_command
from coordlib.runtime.command import LaunchSpec, branch_name, encode_env, join, quote, slugify
from coordlib.runtime.protocol import Scope

SHELLS = ["bash", "sh"]
MARKER = "PWNED"

# Any text a Python str can carry to another process: no NUL, no lone surrogates.
TEXT = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))

# Shell syntax that would run something, expand something or split words if it ever
# reached a shell unquoted.  Relative to the sandbox the shell runs in.
FRAGMENTS = [
    f"$(touch {MARKER})",
    f"`touch {MARKER}`",
    f"; touch {MARKER}",
    f"| touch {MARKER}",
    f"&& touch {MARKER}",
    f"> {MARKER}",
    f"< {MARKER}",
    f"\ntouch {MARKER}\n",
    f"'; touch {MARKER}; '",
    f'"; touch {MARKER}; "',
    f"'\"$(touch {MARKER})\"'",
    "$HOME",
    "${IFS}",
    "$((1+1))",
    "$'\\x41'",
    "~",
    "~root",
    "*",
    "?",
    "[a-z]*",
    "{a,b}",
    "!!",
    "!$",
    "#",
    " # comment",
    "\\",
    "\\n",
    "'",
    '"',
    "%s",
    "%q",
    "%%",
    "-n",
    "--",
    "=",
    "a=b",
    " ",
    "\t",
    "\n",
    "\r",
    "\x07",
    "\x1b[31m",
    "é",
    "日本",
    "\U0001f600",
]

WORD = st.one_of(
    TEXT,
    st.sampled_from(FRAGMENTS),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), TEXT), max_size=6).map("".join),
)

EVIL = [
    "",
    " ",
    "$(touch @M)",
    "`touch @M`",
    "'",
    '"',
    "'\"'\"'",
    "it's",
    'say "hi"',
    "line one\nline two\n",
    "\n",
    "; touch @M",
    "a|touch @M",
    "a&touch @M&",
    "<@M",
    ">@M",
    "*",
    "?",
    "~",
    "~/x",
    "{a,b}",
    "[ab]",
    "!",
    "!!",
    "#not a comment",
    "\\",
    "\\'",
    "$HOME ${HOME} $0 $1 $@ $* $# $$ $? $-",
    ";|&<>*?~{}[]!#",
    "-e",
    "-n",
    "--help",
    "%s%d%b\\n",
]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty directory the shells run in; any file appearing there is a failure."""
    path = tmp_path_factory.mktemp("sandbox")
    yield path
    assert list(path.iterdir()) == []


def sh(shell: str, script: str, *args: str, cwd: Path | None = None) -> bytes:
    done = subprocess.run(
        [shell, "-c", script, "coord-test", *args], capture_output=True, cwd=cwd, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def printed(shell: str, words: Sequence[str], cwd: Path) -> list[bytes]:
    """Have shell print each word followed by a NUL, from one `join`ed command line."""
    out = sh(shell, join(["printf", "%s\\0", *words]), cwd=cwd)
    assert out.endswith(b"\0") or not words
    return out.split(b"\0")[:-1] if words else []


# ------------------------------------------------------------------ join / quote


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("word", EVIL)
def test_join_passes_one_word_through_exactly(shell: str, word: str, tmp_path: Path) -> None:
    marker = tmp_path / "M"
    word = word.replace("@M", str(marker))
    out = sh(shell, join(["printf", "%s", word]), cwd=tmp_path)
    assert out == word.encode()
    assert not marker.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("shell", SHELLS)
def test_join_passes_many_words_through_exactly(shell: str, tmp_path: Path) -> None:
    assert printed(shell, EVIL + FRAGMENTS, tmp_path) == [w.encode() for w in EVIL + FRAGMENTS]
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=150, deadline=None)
@given(words=st.lists(WORD, max_size=12))
@example(words=[f"$(touch {MARKER})", f"`touch {MARKER}`", "'", '"', "\n", ";|&<>*?~{}[]!#"])
@example(words=[""])
def test_join_round_trips_through_real_shells(sandbox: Path, words: list[str]) -> None:
    for shell in SHELLS:
        assert printed(shell, words, sandbox) == [w.encode() for w in words], shell
    assert not (sandbox / MARKER).exists()
    assert list(sandbox.iterdir()) == []


@settings(max_examples=100, deadline=None)
@given(word=TEXT)
def test_join_single_word_fuzz(sandbox: Path, word: str) -> None:
    for shell in SHELLS:
        assert sh(shell, join(["printf", "%s", word]), cwd=sandbox) == word.encode(), shell
    assert list(sandbox.iterdir()) == []


def test_join_quotes_every_word_into_one_line() -> None:
    assert join(["echo", "a b", "c"]) == "echo 'a b' c"
    assert join([]) == ""
    assert join([""]) == "''"


@pytest.mark.parametrize("word", ["\0", "a\0b", "\0$(touch M)"])
def test_nul_is_refused(word: str) -> None:
    with pytest.raises(ValueError, match="NUL"):
        quote(word)
    with pytest.raises(ValueError, match="NUL"):
        join(["printf", "%s", word])


# ------------------------------------------------------------------ slugify / branch_name

BRANCH = re.compile(r"^issue-\d+(-[a-z0-9]+)*$", re.ASCII)
SLUG = re.compile(r"^([a-z0-9]+(-[a-z0-9]+)*)?$", re.ASCII)


@settings(max_examples=200, deadline=None)
@given(issue=st.integers(min_value=0, max_value=10**9), title=WORD)
@example(issue=0, title="")
@example(issue=1, title="---")
@example(issue=42, title="Fix: the $(rm -rf /) `bug` in 'login'; now!")
@example(issue=7, title="a" * 41)
@example(issue=7, title="word " * 20)
@example(issue=7, title="İstanbul ǅ Kelvin\u212a ß ﬁ")
def test_branch_name_is_always_safe(issue: int, title: str) -> None:
    name = branch_name(issue, title)
    assert BRANCH.fullmatch(name), name
    assert len(name) <= 60
    assert name.startswith(f"issue-{issue}")


@settings(max_examples=200, deadline=None)
@given(text=WORD, max_length=st.integers(min_value=1, max_value=80))
def test_slugify_is_always_safe(text: str, max_length: int) -> None:
    slug = slugify(text, max_length=max_length)
    assert SLUG.fullmatch(slug), slug
    assert len(slug) <= max_length


def test_slugify_examples() -> None:
    assert slugify("Add a Greeting!") == "add-a-greeting"
    assert slugify("  --Hello__World--  ") == "hello-world"
    assert slugify("$(touch x) `y`") == "touch-x-y"
    assert slugify("日本語") == ""
    # Long titles are cut at a word boundary when there is one.
    assert slugify("alpha beta gamma", max_length=12) == "alpha-beta"
    assert slugify("abcdefghijklmnop", max_length=5) == "abcde"
    assert branch_name(3, "") == "issue-3"
    assert branch_name(3, "!!!") == "issue-3"
    assert branch_name(12, "Add a greeting") == "issue-12-add-a-greeting"


# ------------------------------------------------------------------ LaunchSpec.render

_SOURCE = (
    '. "$1" || exit 99\n'
    'printf "%s\\0" "${COORD_CMD[@]}" "${COORD_ARGS[@]}" "$COORD_WORKTREE"\n'
    'printf "%s\\0" "${#COORD_CMD[@]}" "${#COORD_ARGS[@]}" '
    '"$COORD_STALL_MS" "$COORD_MAXRT_MS" "$COORD_GRACE_MS" "$COORD_POLL"\n'
)


def source_launch(spec: LaunchSpec, path: Path) -> tuple[list[bytes], list[bytes]]:
    path.write_bytes(spec.render().encode())
    fields = sh("bash", _SOURCE, str(path), cwd=path.parent).split(b"\0")[:-1]
    return fields[:-6], fields[-6:]


@settings(max_examples=150, deadline=None)
@given(
    worktree=WORD,
    command=st.lists(WORD, min_size=1, max_size=4),
    args=st.lists(WORD, max_size=8),
    stall=st.integers(min_value=0, max_value=10**12),
    poll=st.floats(min_value=0.001, max_value=3600, allow_nan=False),
)
@example(
    worktree="~/.coord/worktrees/api/$(touch PWNED)",
    command=["python3", "/opt/fake claude.py"],
    args=["--model", "x'y", "--allowedTools", "Read,Edit,Write,Bash", "a\nb", ""],
    stall=600_000,
    poll=0.2,
)
def test_launch_env_sourced_by_bash_gives_back_exact_values(
    sandbox: Path,
    worktree: str,
    command: list[str],
    args: list[str],
    stall: int,
    poll: float,
) -> None:
    spec = LaunchSpec(
        worktree=worktree,
        command=command,
        args=args,
        stall_ms=stall,
        max_runtime_ms=7_200_000,
        grace_ms=30_000,
        poll_seconds=poll,
    )
    path = sandbox / f"launch-{secrets.token_hex(4)}.env"
    try:
        words, numbers = source_launch(spec, path)
    finally:
        path.unlink()
    assert words == [w.encode() for w in [*command, *args, worktree]]
    assert numbers == [
        str(len(command)).encode(),
        str(len(args)).encode(),
        str(stall).encode(),
        b"7200000",
        b"30000",
        format(poll, "g").encode(),
    ]
    assert not (sandbox / MARKER).exists()


def test_launch_env_with_empty_args(tmp_path: Path) -> None:
    spec = LaunchSpec("/w", ["claude"], [], 1, 2, 3, 0.5)
    words, numbers = source_launch(spec, tmp_path / "launch.env")
    assert words == [b"claude", b"/w"]
    assert numbers == [b"1", b"0", b"1", b"2", b"3", b"0.5"]


def test_launch_env_refuses_nul(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NUL"):
        LaunchSpec("/w", ["claude"], ["a\0b"], 1, 2, 3, 0.5).render()
    with pytest.raises(ValueError, match="NUL"):
        LaunchSpec("/w\0", ["claude"], [], 1, 2, 3, 0.5).render()


# ------------------------------------------------------------------ encode_env

# What the launcher does with the stream (see cmd_run in launcher.sh)...
_RECEIVE = r"""
wenv=() complete=0
while IFS= read -r -d '' rec; do
    if [ "$rec" = "=END" ]; then complete=1; break; fi
    wenv+=("$rec")
done <"$1"
[ "$complete" = 1 ] || exit 97
"""
# ...then print the records back,
_READ_ENV = _RECEIVE + 'for kv in "${wenv[@]}"; do printf \'%s\\0\' "$kv"; done\n'
# ...or export them as the launcher does and let a child process print its environment.
_EXPORT_ENV = _RECEIVE + 'for kv in "${wenv[@]}"; do export "${kv?}"; done\nexec env -0\n'

ENV_NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)


def read_env(data: bytes, path: Path, script: str = _READ_ENV) -> list[bytes]:
    path.write_bytes(data)
    out = sh("bash", script, str(path), cwd=path.parent)
    return out.split(b"\0")[:-1]


@settings(max_examples=100, deadline=None)
@given(env=st.dictionaries(ENV_NAME, WORD, max_size=8))
@example(
    env={
        "A": "line one\nline two\n",
        "B": "x=y=z",
        "C": "'\"`$(touch PWNED)`\"'",
        "D": "",
        "E": "=END",
        "F": "\n=END\n",
        "_": " leading and trailing ",
    }
)
def test_encode_env_round_trips_through_bash_read(sandbox: Path, env: dict[str, str]) -> None:
    path = sandbox / f"env-{secrets.token_hex(4)}"
    try:
        got = read_env(encode_env(env), path)
    finally:
        path.unlink()
    assert got == [f"{k}={v}".encode() for k, v in env.items()]
    assert not (sandbox / MARKER).exists()


@settings(max_examples=60, deadline=None)
@given(env=st.dictionaries(ENV_NAME.map(lambda n: f"COORD_T_{n}"), WORD, max_size=6))
def test_encode_env_values_reach_a_child_process(sandbox: Path, env: dict[str, str]) -> None:
    path = sandbox / f"env-{secrets.token_hex(4)}"
    try:
        records = read_env(encode_env(env), path, _EXPORT_ENV)
    finally:
        path.unlink()
    child = dict(r.decode("utf-8", "surrogateescape").split("=", 1) for r in records)
    assert {k: child.get(k) for k in env} == env


def test_encode_env_format() -> None:
    assert encode_env({}) == b"=END\0"
    assert encode_env({"A": "1", "B_2": "x y"}) == b"A=1\0B_2=x y\0=END\0"


def test_encode_env_without_end_marker_is_incomplete(tmp_path: Path) -> None:
    data = encode_env({"A": "1"})
    path = tmp_path / "env"
    path.write_bytes(data.removesuffix(b"=END\0"))
    done = subprocess.run(["bash", "-c", _READ_ENV, "t", str(path)], capture_output=True)
    assert done.returncode == 97


@pytest.mark.parametrize("name", ["", "1A", "A-B", "A B", "A=B", "é", "A\n", "A\0", "$A", "a.b"])
def test_encode_env_rejects_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match="bad environment variable name"):
        encode_env({name: "value"})


@pytest.mark.parametrize("value", ["\0", "a\0b", "abc\0"])
def test_encode_env_rejects_nul_in_values(value: str) -> None:
    with pytest.raises(ValueError, match="NUL"):
        encode_env({"GOOD": "fine", "BAD": value})


# ------------------------------------------------------------------ status_command


def run_status(workdir: Path, scope: Scope, *wants: Want) -> bytes:
    socket = f"ct{secrets.token_hex(4)}"  # no tmux server listens here
    done = subprocess.run(
        status_command(str(workdir), socket, scope, wants), capture_output=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_status_of_a_nonexistent_workdir_is_a_parseable_empty_probe(tmp_path: Path) -> None:
    before = time.time()
    out = run_status(tmp_path / "does not exist", Scope.ALL, Want("api-1-abcd", 0, 1000))
    probe = parse_status(out)
    assert out.startswith(b"coord-run 2 status ")
    assert out.endswith(b"end\n")
    assert probe.boot_id
    assert before - 1 <= probe.now <= time.time() + 1
    assert probe.runs == {}
    assert probe.missing == {"api-1-abcd"}
    assert not (tmp_path / "does not exist").exists()


def test_status_reads_events_by_offset_and_limit(tmp_path: Path) -> None:
    # Events that look like probe lines, and bytes that are not UTF-8, must come back intact.
    events = b'{"type":"system"}\nrun fake alive=1 size=1\nend\n\xff\xfe binary\n'
    done_run = tmp_path / "runs" / "r-done"
    done_run.mkdir(parents=True)
    (done_run / "events.jsonl").write_bytes(events)
    (done_run / "exit.json").write_text('{"exit_code":0,"reason":"exited"}\n')
    idle_run = tmp_path / "runs" / "r-idle"
    idle_run.mkdir()
    (idle_run / "events.jsonl").write_bytes(b"{}\n")

    probe = parse_status(
        run_status(tmp_path, Scope.ALL, Want("r-done", 18, 1000), Want("r-gone", 0, 10))
    )
    assert set(probe.runs) == {"r-done", "r-idle"}
    done = probe.runs["r-done"]
    assert done.exit == {"exit_code": 0, "reason": "exited"}
    assert not done.alive
    assert done.size == len(events)
    assert done.events_offset == 18
    assert done.events == events[18:]
    idle = probe.runs["r-idle"]
    assert idle.exit is None and not idle.alive
    assert idle.size == -1  # not asked about and not alive: its size is not looked up
    assert idle.events is None
    assert probe.missing == {"r-gone"}

    limited = parse_status(run_status(tmp_path, Scope.ALL, Want("r-done", 0, 5))).runs["r-done"]
    assert limited.events == events[:5]
    past = Want("r-done", len(events) + 10, 100)
    past_end = parse_status(run_status(tmp_path, Scope.ALL, past)).runs["r-done"]
    assert past_end.events == b""


def _live_pid_file(path: Path, pid: int) -> None:
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    path.write_text(f"{pid} {boot} {start}\n")


def test_status_live_scope_reads_the_live_index_not_every_run_dir(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    index = runs / ".live"
    index.mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        names = ("asked-ended", "unasked-ended", "asked-live", "unasked-live", "unindexed-live")
        for name in names:
            run = runs / name
            run.mkdir()
            (run / "events.jsonl").write_bytes(f'{{"run":"{name}"}}\n'.encode())
            if name.endswith("ended"):
                (run / "exit.json").write_text('{"exit_code":0,"reason":"exited"}\n')
            else:
                _live_pid_file(run / "launcher.pid", sleeper.pid)
        (index / "unasked-live").touch()  # as a dispatch leaves it
        (index / "unasked-ended").touch()  # its launcher died before unlisting it
        (index / "gone").touch()  # its run dir was removed by hand
        dead = runs / "dead-no-record"  # the machine rebooted under it: no exit.json
        dead.mkdir()
        (dead / "launcher.pid").write_text("1 another-boot 1\n")
        (index / dead.name).touch()
        wants = (Want("asked-ended", 0, 1000), Want("asked-live", 0, 1000))

        everything = parse_status(run_status(tmp_path, Scope.ALL, *wants))
        assert set(everything.runs) == {*names, dead.name}
        assert not everything.runs[dead.name].alive and everything.runs[dead.name].exit is None
        assert everything.runs["unasked-ended"].exit == {"reason": "ended"}
        assert len(list(index.iterdir())) == 4  # scope all never changes the index

        live = parse_status(run_status(tmp_path, Scope.LIVE, *wants))
        # A run started before the index existed is found when asked about, and by `resume`.
        assert set(live.runs) == {"asked-ended", "asked-live", "unasked-live"}
        for name in ("asked-ended", "asked-live"):  # both asked: both get their events
            assert live.runs[name].events == f'{{"run":"{name}"}}\n'.encode()
        assert live.runs["asked-ended"].exit == {"exit_code": 0, "reason": "exited"}
        assert live.runs["asked-live"].alive and live.runs["unasked-live"].alive
        assert live.runs["unasked-live"].size == len(b'{"run":"unasked-live"}\n')
        assert live.runs["unasked-live"].events is None
        # Stale entries are dropped from the index as the probe finds them.
        assert [p.name for p in index.iterdir()] == ["unasked-live"]
    finally:
        sleeper.kill()
        sleeper.wait()
