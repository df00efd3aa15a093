"""The remote protocol is declared once (`coordlib.runtime.protocol`) and the scripts keep to it.

1. The shell side read as text (remote.sh, branch.sh, await.sh, machine.sh: the verbs'
   scripts): the verbs of remote.sh's dispatcher, each verb's argument count and choices,
   every exit code and exit reason the scripts use, the answers' header and record kinds,
   and the names under the workdir are those the declaration gives.
2. The typed builders: every argument checked, the stdin payloads laid out as declared.
3. The framing: one frame parser, one parser per verb, fed literal bytes and real answers.
4. The launcher travels in the dispatch's stdin and is installed once per version; no other
   command carries it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from coordlib import Status
from coordlib.errors import MachineError, ProtocolError, UsageError
from coordlib.runtime import answers
from coordlib.runtime.answers import (
    Landed,
    Pushed,
    Stacked,
    StackStep,
    Started,
    failure_reason,
    parse_clean,
    parse_dispatch,
    parse_frame,
    parse_land,
    parse_push,
    parse_stack,
    parse_status,
    parse_stop,
    parse_test,
)
from coordlib.runtime.builders import (
    Want,
    clean_command,
    dispatch_command,
    land_command,
    push_command,
    stack_command,
    status_command,
    stop_command,
    tail_command,
    test_command,
)
from coordlib.runtime.command import LaunchSpec, encode_env
from coordlib.runtime.layout import TAIL_FILES, Layout, RunDir, RunFile
from coordlib.runtime.protocol import (
    HEADER,
    LAUNCHER,
    PROTOCOL_VERSION,
    STACK_WORKTREE,
    STACKS,
    TEST_LOG,
    TEST_RESULT,
    TEST_TAIL,
    TEST_TMP,
    TEST_WORKTREE,
    TESTS,
    VERBS,
    CleanMode,
    DispatchMode,
    ExitCode,
    ExitReason,
    Scope,
    StackMethod,
    launcher_hash,
    launcher_script,
    remote_script,
)
from coordlib.testing import make_git_repo

from .conftest import Setup

RUNTIME = Path(__file__).resolve().parent.parent / "coordlib" / "runtime"
COMMON = (RUNTIME / "common.sh").read_text()
REMOTE = (RUNTIME / "remote.sh").read_text()
BRANCH_SH = (RUNTIME / "branch.sh").read_text()
AWAIT_SH = (RUNTIME / "await.sh").read_text()
MACHINE_SH = (RUNTIME / "machine.sh").read_text()
APP_SH = (RUNTIME / "app.sh").read_text()
CLEAN_SH = (RUNTIME / "clean.sh").read_text()
LAUNCHER_SH = "".join(
    (RUNTIME / f).read_text() for f in ("workspace.sh", "confine.sh", "launcher.sh")
)
SCRIPTS = {
    "common.sh": COMMON, "remote.sh": REMOTE, "branch.sh": BRANCH_SH, "launcher.sh": LAUNCHER_SH,
    "await.sh": AWAIT_SH, "machine.sh": MACHINE_SH, "app.sh": APP_SH, "clean.sh": CLEAN_SH,
}  # fmt: skip
VERBS_SH = REMOTE + CLEAN_SH + BRANCH_SH + AWAIT_SH + MACHINE_SH + APP_SH  # the verbs' scripts
SHARED_SH = (RUNTIME / "shared.sh").read_text()  # sections some verbs and the launcher call
EVERYTHING = COMMON + SHARED_SH + VERBS_SH + LAUNCHER_SH


def code_of(text: str) -> str:
    """The shell text without its comments (a '#' at a line's start or after a blank)."""
    return "\n".join(re.sub(r"(^|\s)#(?![!{]).*$", "", line) for line in text.splitlines())


def functions(text: str) -> dict[str, str]:
    """Each top-level function of a script, by name: its text up to the closing brace."""
    out = {}
    for m in re.finditer(r"^(\w+)\(\) \{.*?^\}$", text, re.M | re.S):
        out[m.group(1)] = m.group(0)
    return out


# ======================================================== 1. the scripts agree with it


def test_the_dispatcher_of_remote_sh_knows_exactly_the_declared_verbs() -> None:
    case = re.search(r"^case \$verb in\n(.*?)^esac", REMOTE, re.M | re.S)
    assert case, "remote.sh has no verb dispatcher"
    arms = dict(re.findall(r"^\s+(\w+)\) (cmd_\w+) \"\$@\" ;;$", case.group(1), re.M))
    assert set(arms) == set(VERBS)
    assert all(fn == f"cmd_{verb}" for verb, fn in arms.items())
    # The launcher is not a verb of remote.sh: it is a script of its own, run by tmux.
    assert "cmd_run" not in REMOTE and LAUNCHER.name not in VERBS
    assert LAUNCHER_SH.rstrip().endswith('cmd_run "$@"')
    for text in (BRANCH_SH, AWAIT_SH, MACHINE_SH):
        assert "case $verb in" not in text  # one table, remote.sh's, for every verb


def test_every_verb_has_one_section_in_the_verbs_scripts() -> None:
    sections = {
        name: re.findall(r"^# -{10,} (\w+)$", text, re.M)
        for name, text in (("remote.sh", REMOTE), ("branch.sh", BRANCH_SH),
                           ("await.sh", AWAIT_SH), ("machine.sh", MACHINE_SH),
                           ("app.sh", APP_SH), ("clean.sh", CLEAN_SH))
    }  # fmt: skip
    everywhere = [s for found in sections.values() for s in found]
    assert sorted(everywhere) == sorted([*VERBS, "verbs"])  # none twice, none missing
    assert sections["remote.sh"][-1] == "verbs"
    assert sections["branch.sh"] == ["test", "push", "stack", "land", "sync"]
    assert sections["await.sh"] == ["await"]
    assert sections["machine.sh"] == ["doctor", "setup"]
    assert sections["app.sh"] == ["app"]
    assert sections["clean.sh"] == ["clean"]
    # What branch.sh, await.sh and machine.sh have before their first section holds
    # functions only (and await.sh's settings): nothing runs there.
    for text in (BRANCH_SH, AWAIT_SH, MACHINE_SH):
        shared = code_of(text[: text.index("# -----")])
        outside = re.sub(r"^\w+\(\) \{.*?^\}$", "", shared, flags=re.M | re.S)
        assert not outside.strip(), outside


def test_each_verb_checks_its_declared_number_of_arguments_first() -> None:
    verbs = {**VERBS, LAUNCHER.name: LAUNCHER}
    found = {**functions(VERBS_SH), **functions(LAUNCHER_SH)}
    for name, verb in verbs.items():
        body = found[f"cmd_{name}"].splitlines()
        first = next(ln.strip() for ln in body[1:] if ln.strip() and not ln.strip().startswith("#"))
        m = re.fullmatch(r'need_args (\w+) \$# (\d+) "([^"]*)"(?: (\d+))?', first)
        assert m, (name, first)
        assert m.group(1) == name
        assert int(m.group(2)) == len(verb.args), name
        assert int(m.group(4) or 0) == len(verb.group), name
        fixed, _, group = m.group(3).partition("[")
        assert len(fixed.split()) == len(verb.args), m.group(3)
        assert len(group.split()) == len(verb.group), m.group(3)


def test_the_choices_the_scripts_take_are_the_declared_ones() -> None:
    words = {
        (verb, what): choices.split()
        for verb, what, choices in re.findall(
            r'need_word (\w+) ("?[\w ]+"?) "\$\{?\w+\}?" ([\w. ]+)$', EVERYTHING, re.M
        )
    }
    assert words == {
        ("dispatch", "mode"): list(DispatchMode),
        ("status", "scope"): list(Scope),
        ("status", "files"): ["0", "1"],
        ("clean", "mode"): list(CleanMode),
        ("clean", "rescue"): ["0", "1"],
        ("app", "action"): ["start", "stop"],
        ("clean", "keep_runs"): ["0", "1"],
        ("tail", "file"): list(TAIL_FILES),
        ("tail", "follow"): ["0", "1"],
        ("stack", "method"): list(StackMethod),
        ("sync", "pull"): ["0", "1"],
        ("setup", "dry_run"): ["0", "1"],
    }


# `die CODE …` or `exit CODE` as a command (not the word "exit" of a record in an answer)
EXITS = re.compile(r"(?<![\w\"\\])(?:die|exit) ([^\s;]+)")


def literal_codes(text: str) -> list[int]:
    code = code_of(text)
    found = [c for c in EXITS.findall(code) if c.isdigit()]
    found += re.findall(r'write_exit "\$\w+" (\d+) ', code)
    return [int(c) for c in found]


def test_every_exit_code_the_scripts_use_is_declared_and_every_declared_one_is_used() -> None:
    used = {name: literal_codes(text) for name, text in SCRIPTS.items()}
    everything = {c for codes in used.values() for c in codes}
    assert everything <= set(ExitCode), everything - set(ExitCode)
    assert {c for c in ExitCode if c != ExitCode.OK} <= everything
    assert {ExitCode.USAGE} <= set(used["common.sh"])
    assert {c for c in ExitCode if 10 <= c <= 20} <= set(used["remote.sh"])  # dispatch's
    # test's, push's, stack's and land's
    assert {c for c in ExitCode if 21 <= c <= 27} <= set(used["branch.sh"])
    assert {c for c in ExitCode if c >= 124} <= set(used["launcher.sh"])
    # Nothing exits with a number it computed from text: the other exits pass a status on.
    others = EXITS.findall(code_of(EVERYTHING))
    assert {o for o in others if not o.isdigit()} <= {'"$1"', '"$rc"'}


def test_every_reason_the_scripts_record_is_a_declared_exit_reason() -> None:
    code = code_of(EVERYTHING)
    written = set(re.findall(r'write_exit "\$\w+" \S+ (\w+)', code))
    written |= set(re.findall(r"\breason=(\w+)", code))
    written |= set(re.findall(r'"reason":"(\w+)"', code))
    assert written <= set(ExitReason), written - set(ExitReason)
    assert written == set(ExitReason) - {ExitReason.UNREADABLE}  # that one is coordlib's


def test_every_answer_is_framed_with_the_declared_header_and_records() -> None:
    assert re.findall(r'^PROTOCOL="(\S+) (\d+)"$', COMMON, re.M) == [
        (HEADER, str(PROTOCOL_VERSION))
    ]
    bodies = functions(VERBS_SH)
    for name, verb in VERBS.items():
        body = code_of(bodies[f"cmd_{name}"])
        headers = re.findall(r"printf '%s (\w+)[ \\']", body)
        assert headers == ([name] if verb.framed else []), name
        if verb.framed:
            assert re.search(r"(?:\\n|'|%s)end\\n'", body), name
        for kind in verb.records:
            assert re.search(rf"(?:[\"']|\\n){kind} ", body), (name, kind)
        kinds = set(re.findall(r"(?:out\+=\"|\\n|printf ')(?:%s)?([a-z]+) ", body))
        assert kinds <= verb.records | {name}, (name, kinds)


def test_the_layouts_names_are_the_ones_the_scripts_use() -> None:
    code = code_of(EVERYTHING)
    for name in RunFile:
        assert re.search(rf"/{re.escape(name)}\b", code), name
    for name in (Layout.RUNS, Layout.LIVE, Layout.WORKTREES, Layout.BIN, Layout.LOCKS,
                 Layout.DISK, Layout.ARCHIVES):  # fmt: skip
        assert f"/{name}" in code, name
    for prefix in (Layout.LAUNCHER_FILE, Layout.WORKTREE_LOCK, Layout.REPO_LOCK, Layout.SESSION):
        assert re.search(rf"[/\"]{prefix}(?:\$|%s)", code), prefix
    assert Layout.DISPATCH_LOCK in code
    # ... and a file the scripts name in a run dir is a declared one (or its temp file).
    used = set(re.findall(r'"\$(?:run|d|1|D_RUN)/([\w.]+)"', code))
    used = {u.removesuffix(".tmp") for u in used}
    assert used <= set(RunFile), used - set(RunFile)
    # A test's: its dir and files, and the end of its log that the answer carries.
    test = code_of(functions(BRANCH_SH)["cmd_test"])
    assert f'dir="$workdir/{TESTS}/$id"' in test
    assert set(re.findall(r'"\$dir/([\w.]+)"', test)) == {TEST_LOG, TEST_RESULT, TEST_WORKTREE,
                                                          TEST_TMP}  # fmt: skip
    assert re.findall(r"^TEST_TAIL=(\d+)", BRANCH_SH, re.M) == [str(TEST_TAIL)]
    # A stack's: its dir, and its worktree there.
    stack = code_of(functions(BRANCH_SH)["cmd_stack"])
    assert f'dir="$workdir/{STACKS}/$id"' in stack
    assert f'S_WT="$dir/{STACK_WORKTREE}"' in stack


def test_layout_names_the_paths_of_a_workdir() -> None:
    lay = Layout("~/.coord/")
    run = lay.run_dir("api-1-abcd")
    assert run == RunDir("~/.coord/runs/api-1-abcd") and run.id == "api-1-abcd"
    assert run / RunFile.EXIT == "~/.coord/runs/api-1-abcd/exit.json"
    assert lay.live_mark("api-1-abcd") == "~/.coord/runs/.live/api-1-abcd"
    assert lay.worktree("api", "api-1-abcd") == "~/.coord/worktrees/api/api-1-abcd"
    assert lay.launcher("abc") == "~/.coord/bin/coord-launcher-abc"
    assert Layout("/").root == "~/.coord"


# ======================================================== 2. the typed builders

SPEC = LaunchSpec("~/.coord/worktrees/api/api-1-abcd", ["claude"], ["--model", "m"], 1, 2, 3, 0.5)


def dispatch(**overrides: Any) -> tuple[list[str], bytes]:
    kwargs: dict[str, Any] = {
        "workdir": "~/.coord",
        "id": "api-1-abcd",
        "repo_path": "~/src/api",
        "worktree": "~/.coord/worktrees/api/api-1-abcd",
        "branch": "issue-1-x",
        "base": "main",
        "socket": "coord",
        "mode": DispatchMode.NEW,
        "briefing": "Fix it. é\n",
        "spec": {"id": "api-1-abcd"},
        "launch": SPEC,
        "env": {"A": "1"},
    }
    return dispatch_command(**{**kwargs, **overrides})


def test_dispatch_command_sends_sized_parts_then_the_environment() -> None:
    argv, payload = dispatch()
    assert argv[:6] == ["bash", "--norc", "-c", remote_script("dispatch"), HEADER, "dispatch"]
    args = argv[6:]
    assert len(args) == len(VERBS["dispatch"].args)
    assert args[7] == launcher_hash() and args[-1] == "new"
    parts = [
        "Fix it. é\n".encode(),
        b'{\n  "id": "api-1-abcd"\n}\n',
        SPEC.render().encode(),
        launcher_script().encode(),
    ]
    assert [int(n) for n in args[8:12]] == [len(p) for p in parts]
    assert payload == b"".join(parts) + encode_env({"A": "1"})
    with pytest.raises(UsageError, match="remote command dispatch: branch"):
        dispatch(branch="main")
    assert dispatch(mode=DispatchMode.CONTINUE)[0][-1] == "continue"


def test_status_command_sends_each_run_asked_about_as_four_words() -> None:
    wants = [Want("a-1", 0, 10), Want("b", 7, 1, files=True)]
    argv = status_command("~/.coord", "coord", Scope.LIVE, wants)
    assert argv[5:] == ["status", "~/.coord", "coord", "live", "a-1", "0", "10", "0",
                        "b", "7", "1", "1"]  # fmt: skip
    assert status_command("~/.coord", "coord", Scope.ALL, [])[-1] == "all"
    for bad in (Want("../x", 0, 1), Want("a", -1, 1), Want("a", 0, -5), Want("a b", 0, 1)):
        with pytest.raises(UsageError, match="remote command status"):
            status_command("~/.coord", "coord", Scope.LIVE, [bad])


def test_stop_tail_and_clean_commands() -> None:
    assert stop_command("~/.coord", "a-1")[5:] == ["stop", "~/.coord", "a-1"]
    assert tail_command("~/.coord", "a-1", 5, follow=True)[5:] == [
        "tail", "~/.coord", "a-1", "5", "events.jsonl", "1"
    ]  # fmt: skip
    assert tail_command("w", "a-1", 0, RunFile.STDERR, follow=False)[-2:] == ["stderr.log", "0"]
    with pytest.raises(UsageError, match="file"):
        tail_command("w", "a-1", 0, RunFile.EXIT, follow=False)
    runs = [("a-1", "w/x"), ("b", "")]
    argv, payload = clean_command("w", CleanMode.CHECK, keep_runs=True, runs=runs)
    assert argv[5:] == ["clean", "w", "check", "1", "0"]
    rescued = clean_command("w", CleanMode.REMOVE, keep_runs=False, runs=runs, rescue=True)[0]
    assert rescued[5:] == ["clean", "w", "remove", "0", "1"]
    assert payload == b"a-1\0w/x\0b\0\0"
    with pytest.raises(UsageError, match="NUL"):
        clean_command("w", CleanMode.REMOVE, keep_runs=False, runs=[("a-1", "w/\0x")])


SHA = "0123456789abcdef0123456789abcdef01234567"


def test_test_command_sends_both_commands_sized_on_stdin() -> None:
    argv, payload = test_command(
        "~/.coord", "api-42-1f3a-t2", "~/src/api", "issue-42-fix-login",
        build="make -j2", test="pytest -q 'a b'", timeout=2.5,
    )  # fmt: skip
    assert argv[:6] == ["bash", "--norc", "-c", remote_script("test"), HEADER, "test"]
    assert argv[6:] == ["~/.coord", "api-42-1f3a-t2", "~/src/api", "issue-42-fix-login",
                        "8", "15", "3", "0"]  # fmt: skip
    assert payload == b"make -j2pytest -q 'a b'"
    assert test_command("w", "t-1", "r", SHA, build=None, test="x", timeout=1,
                        confine=True)[0][-1] == "1"  # fmt: skip
    # No command (None, empty or blank) is none: size 0, nothing on stdin for it.
    argv, payload = test_command("w", "t-1", "r", SHA, build=None, test="  ", timeout=1)
    assert argv[-4:] == ["0", "0", "1", "0"] and payload == b""
    argv, payload = test_command("w", "t-1", "r", SHA, build="", test="é", timeout=60)
    assert argv[-4:] == ["0", "2", "60", "0"] and payload == "é".encode()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"ref": "main"}, "ref"),
        ({"ref": SHA[:39]}, "ref"),
        ({"ref": SHA.upper()}, "ref"),
        ({"ref": "HEAD~1"}, "ref"),
        ({"ref": "--upload-pack=x"}, "ref"),
        ({"ref": "issue-1;id"}, "ref"),
        ({"id": "t$(id)"}, "test id"),
        ({"id": "../x"}, "test id"),
        ({"repo_path": "-C/x"}, "repo path"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"timeout": 1e10}, "timeout"),
        ({"build": "a\0b"}, "NUL"),
    ],
)
def test_test_command_refuses_bad_arguments(overrides: dict[str, Any], match: str) -> None:
    kwargs: dict[str, Any] = {"workdir": "w", "id": "t-1", "repo_path": "r", "ref": SHA,
                              "build": None, "test": "true", "timeout": 5, **overrides}  # fmt: skip
    with pytest.raises(UsageError, match=match):
        test_command(**kwargs)


def test_push_command() -> None:
    assert push_command("~/src/api", "issue-7-r2")[5:] == ["push", "~/src/api", "issue-7-r2"]
    for bad in ("main", "issue-7 x", "--force", "issue-7:refs/heads/main", "+issue-7"):
        with pytest.raises(UsageError, match="remote command push: branch"):
            push_command("~/src/api", bad)


def test_stack_command_sends_each_message_sized_on_stdin() -> None:
    argv, payload = stack_command(
        "~/.coord", "api-stack-1f3a", "~/src/api", "main", StackMethod.SQUASH,
        [("issue-1-x", "Merge #1\n\nBody é"), ("issue-22-r2", "$(id) `id`")],
    )  # fmt: skip
    assert argv[:6] == ["bash", "--norc", "-c", remote_script("stack"), HEADER, "stack"]
    assert argv[6:] == ["~/.coord", "api-stack-1f3a", "~/src/api", "main", "squash",
                        str(len(payload)), "issue-1-x", "issue-22-r2"]  # fmt: skip
    assert payload == "17\nMerge #1\n\nBody é10\n$(id) `id`".encode()
    # The method may be given as the config has it: a plain string.
    assert stack_command("w", "s-1", "r", "release/2.x", "rebase", [("issue-1", "m")])[0][-4:] == [
        "release/2.x", "rebase", "3", "issue-1"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"method": "octopus"}, "method"),
        ({"method": "merge;id"}, "method"),
        ({"base": "-b"}, "base branch"),
        ({"base": "main:refs/heads/x"}, "base branch"),
        ({"base": "main~1"}, "base branch"),
        ({"base": ""}, "base branch"),
        ({"id": "s$(id)"}, "stack id"),
        ({"id": "../x"}, "stack id"),
        ({"repo_path": "-C/x"}, "repo path"),
        ({"workdir": ""}, "workdir"),
        ({"branches": []}, "no branch"),
        ({"branches": [("main", "m")]}, "branch"),
        ({"branches": [("issue-1", "m"), ("--force", "m")]}, "branch"),
        ({"branches": [("issue-1", "m"), ("issue-1", "n")]}, "given twice"),
        ({"branches": [("issue-1", "")]}, "empty"),
        ({"branches": [("issue-1", " \n\t")]}, "empty"),
        ({"branches": [("issue-1", "a\0b")]}, "NUL"),
    ],
)
def test_stack_command_refuses_bad_arguments(overrides: dict[str, Any], match: str) -> None:
    kwargs: dict[str, Any] = {
        "workdir": "w", "id": "s-1", "repo_path": "r", "base": "main", "method": "merge",
        "branches": [("issue-1", "m")], **overrides,
    }  # fmt: skip
    with pytest.raises(UsageError, match=f"remote command stack: .*{match}"):
        stack_command(**kwargs)


def test_land_command() -> None:
    other = "f" * 64
    assert land_command("~/src/api", "main", SHA, other)[5:] == [
        "land", "~/src/api", "main", SHA, other
    ]  # fmt: skip
    for args, what in (
        (("r", "main", "HEAD", SHA), "sha"),
        (("r", "main", SHA[:39], SHA), "sha"),
        (("r", "main", SHA.upper(), SHA), "sha"),
        (("r", "main", SHA, "main"), "expected sha"),
        (("r", "--force", SHA, SHA), "base branch"),
        (("r", "+main", SHA, SHA), "base branch"),
        (("-r", "main", SHA, SHA), "repo path"),
    ):
        with pytest.raises(UsageError, match=f"remote command land: {what}"):
            land_command(*args)


def test_no_command_but_dispatch_carries_the_launcher() -> None:
    own = LAUNCHER_SH[LAUNCHER_SH.index("cmd_run() {") :]
    assert own not in remote_script() and own in launcher_script()
    for argv in (
        status_command("w", "coord", Scope.ALL, []),
        stop_command("w", "a-1"),
        tail_command("w", "a-1", 0, follow=False),
        clean_command("w", CleanMode.CHECK, keep_runs=False, runs=[])[0],
        test_command("w", "t-1", "r", SHA, build="make", test="make test", timeout=9)[0],
        push_command("r", "issue-1"),
        stack_command("w", "s-1", "r", "main", "merge", [("issue-1", "m")])[0],
        land_command("r", "main", SHA, SHA),
        dispatch()[0],
    ):
        assert not any(own in word for word in argv)
    assert own in dispatch()[1].decode()


# ======================================================== 3. the framing


def test_the_frame_parser_reads_header_fields_records_and_payloads() -> None:
    data = (
        b"motd of a login script\n"
        b"coord-run 2 status boot=b now=1.5 odd\n"
        b"run r1 alive=1 size=3\n"
        b"events 0 3\nend\n"
        b"\n"
        b"end\n"
        b"after the end\n"
    )
    frame = parse_frame(data, "status")
    assert frame.verb == "status" and dict(frame.fields) == {"boot": "b", "now": "1.5"}
    assert [(r.kind, r.text, r.payload) for r in frame.records] == [
        ("run", "r1 alive=1 size=3", None),
        ("events", "0 3", b"end"),
    ]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "incomplete"),
        (b"coord-run 2 stop\n", "incomplete"),
        (b"coord-run 2 stop\nexit {}\nen", "truncated"),
        (b"coord-run 2 clean\nend\n", "not protocol 2's answer to stop"),
        (b"coord-run 1 stop\nend\n", "not protocol 2's answer to stop"),
        (b"coord-run 2 stop\nrun {}\nend\n", "unexpected line"),
        (b"{}\n", "incomplete"),  # the answer of the protocol before: a bare exit.json
    ],
)
def test_the_frame_parser_refuses_what_is_not_a_whole_frame(data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        parse_frame(data, "stop", machine="box")


def test_a_payloads_line_may_name_fields_before_its_size() -> None:
    data = b"coord-run 2 stack\nfiles branch=issue-1 3\na b\nend\n"
    assert parse_frame(data, "stack").records == [("files", "branch=issue-1 3", b"a b")]
    for line in (b"files branch=issue-1 x", b"files x 3", b"files 3", b"files branch=issue-1 -3",
                 b"files Branch=x 3", b"files branch=issue-1 3 4"):  # fmt: skip
        with pytest.raises(ProtocolError, match="bad files line"):
            parse_frame(b"coord-run 2 stack\n" + line + b"\n\nend\n", "stack")
    # A status's events line still takes numbers only.
    with pytest.raises(ProtocolError, match="bad events line"):
        parse_status(b"coord-run 2 status\nrun r1 alive=1 size=1\nevents a=1 1\nx\nend\n")


def test_dispatch_answer() -> None:
    head = "a" * 40
    data = f"coord-run 2 dispatch\nstarted launcher_pid=123 head={head}\nend\n".encode()
    assert parse_dispatch(data) == Started(123, head)
    assert parse_dispatch(b"coord-run 2 dispatch\nstarted launcher_pid= head=\nend\n") == Started()
    odd = b"coord-run 2 dispatch\nstarted launcher_pid=$(id) head=../x\nend\n"
    assert parse_dispatch(odd) == Started()
    with pytest.raises(ProtocolError, match="0 started lines"):
        parse_dispatch(b"coord-run 2 dispatch\nend\n")
    with pytest.raises(ProtocolError):  # the answer of the protocol before
        parse_dispatch(b'{"ok":true,"launcher_pid":1,"head":"x"}\n')


def test_stop_answer() -> None:
    exit_line = b'{"exit_code":143,"reason":"stopped"}'
    assert parse_stop(b"coord-run 2 stop\nexit " + exit_line + b"\nend\n") == {
        "exit_code": 143,
        "reason": ExitReason.STOPPED,
    }
    assert parse_stop(b"coord-run 2 stop\nexit \nend\n") is None
    assert parse_stop(b"coord-run 2 stop\nexit {nope\nend\n") == {
        "reason": ExitReason.UNREADABLE,
        "raw": "{nope",
    }


def test_clean_answer() -> None:
    data = (
        b"coord-run 2 clean\n"
        b'run {"id":"a-1","worktree":"removed","run":"removed","note":""}\n'
        b'run {"id":"x\\ny","worktree":"refused","run":"refused","note":"not a run id"}\n'
        b"end\n"
    )
    said = parse_clean(data)
    assert said["a-1"]["worktree"] == "removed" and said["x\ny"]["run"] == "refused"
    for bad in (b"run [1]\n", b"run {}\n", b"run nope\n", b'run {"id":1}\n'):
        with pytest.raises(ProtocolError, match="bad run line"):
            parse_clean(b"coord-run 2 clean\n" + bad + b"end\n")


TESTED = f"tested sha={SHA} exit=1 phase=test timed_out=0 seconds=2.5 log=/h/my wd/t/output.log"


def test_test_answer() -> None:
    data = f"coord-run 2 test\n{TESTED}\ntail 6\nok\n\xff\n\n\nend\n".encode("latin-1")
    said = parse_test(data, machine="box")
    assert said == answers.Tested(
        sha=SHA, passed=False, exit_code=1, phase="test", timed_out=False, seconds=2.5,
        log="/h/my wd/t/output.log", tail="ok\n\ufffd\n\n",
    )  # fmt: skip
    passed = parse_test(
        f"coord-run 2 test\ntested sha={SHA} exit=0 phase=none timed_out=0 seconds=0.000 "
        "log=/x\ntail 0\n\nend\n".encode()
    )
    assert (passed.passed, passed.phase, passed.tail, passed.log) == (True, "none", "", "/x")
    late = parse_test(
        f"coord-run 2 test\ntested sha={SHA} exit=0 phase=build timed_out=1 seconds=9 "
        "log=/x\ntail 0\n\nend\n".encode()
    )
    assert (late.passed, late.timed_out) == (False, True)  # late is never passed


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"end\n", "no records, not tested tail"),
        (f"{TESTED}\nend\n".encode(), "tested, not tested tail"),
        (f"tail 0\n\n{TESTED}\nend\n".encode(), "tail tested, not tested tail"),
        (f"{TESTED}\ntail 20\nshort\nend\n".encode(), "truncated"),
        (f"{TESTED}\ntail x\n\nend\n".encode(), "bad tail line"),
        (f"{TESTED.replace(SHA, 'HEAD')}\ntail 0\n\nend\n".encode(), "bad tested line"),
        (f"{TESTED.replace('exit=1', 'exit=-1')}\ntail 0\n\nend\n".encode(), "bad tested"),
        (f"{TESTED.replace('=test', '=lint')}\ntail 0\n\nend\n".encode(), "bad tested"),
        (f"{TESTED.replace('out=0', 'out=yes')}\ntail 0\n\nend\n".encode(), "bad tested"),
        (f"{TESTED.replace('2.5', 'nan')}\ntail 0\n\nend\n".encode(), "bad tested"),
        (f"{TESTED.split(' log=')[0]}\ntail 0\n\nend\n".encode(), "bad tested"),
        (f"{TESTED}\ntail 0\n\nrun x\nend\n".encode(), "unexpected line"),
    ],
    ids=lambda x: str(x)[:24] if isinstance(x, str) else None,
)
def test_a_test_answer_that_is_not_whole_is_refused(body: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        parse_test(b"coord-run 2 test\n" + body, machine="box")


def test_push_answer() -> None:
    data = f"coord-run 2 push\npushed branch=issue-7-r2 sha={SHA}\nend\n".encode()
    assert parse_push(data) == Pushed("issue-7-r2", SHA)
    for bad in (
        b"end\n",
        f"pushed branch=main sha={SHA}\nend\n".encode(),
        b"pushed branch=issue-7 sha=\nend\n",
        f"pushed branch=issue-7 sha={SHA}\npushed branch=issue-8 sha={SHA}\nend\n".encode(),
    ):
        with pytest.raises(ProtocolError, match="push answer"):
            parse_push(b"coord-run 2 push\n" + bad, machine="box")


OTHER = "fedcba9876543210fedcba9876543210fedcba98"
STACK = (
    f"coord-run 2 stack\nbase sha={SHA}\n"
    f"applied branch=issue-1-x sha={OTHER}\nfiles branch=issue-1-x 15\na.py\ndir/b c.py\n"
    "conflict branch=issue-2 4\na.py\nfiles branch=issue-2 9\na.py\nc.py\n\n"
    "missing branch=issue-3\n"
    "end\n"
)


def test_stack_answer() -> None:
    said = parse_stack(STACK.encode(), machine="box")
    assert said == Stacked(
        base=SHA,
        steps=(
            StackStep("issue-1-x", "applied", OTHER, files=("a.py", "dir/b c.py")),
            StackStep("issue-2", "conflict", None, files=("a.py", "c.py"), conflicts=("a.py",)),
            StackStep("issue-3", "missing"),
        ),
    )
    assert said.head == OTHER  # the last applied branch's commit
    empty = parse_stack(
        f"coord-run 2 stack\nbase sha={SHA}\nmissing branch=issue-3\nend\n".encode()
    )
    assert empty.head == SHA and empty.steps == (StackStep("issue-3", "missing"),)
    # A path that is not UTF-8 is read with U+FFFD for what is not.
    odd = (
        f"coord-run 2 stack\nbase sha={SHA}\nconflict branch=issue-2 2\n\xff\n\n"
        "files branch=issue-2 0\n\nend\n"
    )
    assert parse_stack(odd.encode("latin-1")).steps[0].conflicts == ("\ufffd",)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("end\n", "no base line first"),
        (f"missing branch=issue-3\nbase sha={SHA}\nend\n", "no base line first"),
        ("base sha=HEAD\nend\n", "bad base line"),
        (f"base sha={SHA}\nbase sha={SHA}\nend\n", "unexpected base line"),
        (f"base sha={SHA}\napplied branch=issue-1 sha=x\nfiles branch=issue-1 0\n\nend\n",
         "bad applied line"),
        (f"base sha={SHA}\napplied branch=main sha={SHA}\nfiles branch=main 0\n\nend\n",
         "unexpected applied line"),
        (f"base sha={SHA}\napplied branch=issue-1 sha={SHA}\nend\n", "no files line after"),
        (f"base sha={SHA}\napplied branch=issue-1 sha={SHA}\nfiles branch=issue-2 0\n\nend\n",
         "no files line after"),
        (f"base sha={SHA}\nconflict branch=issue-1 0\n\nmissing branch=issue-2\nend\n",
         "no files line after"),
        (f"base sha={SHA}\nfiles branch=issue-1 0\n\nend\n", "unexpected files line"),
        (f"base sha={SHA}\nmissing branch=issue-1\nmissing branch=issue-1\nend\n",
         "unexpected missing line"),
        (f"base sha={SHA}\nmissing branch=issue-1\nlanded base=main sha={SHA}\nend\n",
         "unexpected line"),
        (f"base sha={SHA}\nconflict branch=issue-1 9\na.py\nend\n", "truncated"),
    ],
    ids=lambda x: str(x)[-40:] if isinstance(x, str) else None,
)  # fmt: skip
def test_a_stack_answer_that_is_not_whole_is_refused(body: str, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        parse_stack(b"coord-run 2 stack\n" + body.encode(), machine="box")


def test_land_answer() -> None:
    data = f"coord-run 2 land\nlanded base=release/2.x sha={SHA}\nend\n".encode()
    assert parse_land(data) == Landed("release/2.x", SHA)
    for bad in (
        b"end\n",
        f"landed base=-x sha={SHA}\nend\n".encode(),
        b"landed base=main sha=HEAD\nend\n",
        f"landed base=main sha={SHA}\nlanded base=main sha={SHA}\nend\n".encode(),
    ):
        with pytest.raises(ProtocolError, match="land answer"):
            parse_land(b"coord-run 2 land\n" + bad, machine="box")


def test_failure_reason_is_the_scripts_last_line_with_gits_causes() -> None:
    stderr = (
        "fatal: a branch named 'x' already exists\n"
        "noise\n"
        "coord-run: git worktree add w from main failed in r\n"
    )
    assert failure_reason(stderr) == (
        "git worktree add w from main failed in r: fatal: a branch named 'x' already exists"
    )
    assert failure_reason("") == ""
    assert failure_reason("coord-run: stop: 'x' is not an assignment id\n").startswith("stop: ")


def test_protocol_error_is_a_machine_error_and_names_the_machine() -> None:
    with pytest.raises(MachineError, match=r"^box: unreadable clean answer: incomplete"):
        parse_clean(b"", machine="box")


def bash(argv: list[str], cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        argv, input=stdin, cwd=cwd, capture_output=True, timeout=60, check=False,
        env={"PATH": os.environ["PATH"], "HOME": str(cwd), "LANG": "C.UTF-8"},
    )  # fmt: skip


def test_real_answers_of_stop_and_clean_parse(tmp_path: Path) -> None:
    run = tmp_path / "wd" / "runs" / "api-1-abcd"
    run.mkdir(parents=True)
    (run / "exit.json").write_text('{"exit_code":0,"reason":"exited"}\n' + " " * 40 + "\n")
    done = bash(stop_command(str(tmp_path / "wd"), "api-1-abcd"), tmp_path)
    assert done.returncode == 0, done.stderr
    assert parse_stop(done.stdout) == {"exit_code": 0, "reason": "exited"}
    assert (run / "stop").exists()
    gone = bash(stop_command(str(tmp_path / "wd"), "api-2-abcd"), tmp_path)
    assert (gone.returncode, gone.stdout) == (ExitCode.NO_RUN, b"")
    assert failure_reason(gone.stderr.decode()) == "no run api-2-abcd on this machine"

    argv, payload = clean_command(
        str(tmp_path / "wd"), CleanMode.CHECK, keep_runs=False,
        runs=[("api-1-abcd", ""), ("api-3-abcd", "")],
    )  # fmt: skip
    done = bash(argv, tmp_path, payload)
    assert done.returncode == 0, done.stderr
    said = parse_clean(done.stdout)
    assert said["api-1-abcd"]["run"] == "would_remove" and said["api-3-abcd"]["run"] == "missing"


def test_an_empty_clean_and_a_bad_argument_answer_as_declared(tmp_path: Path) -> None:
    argv, payload = clean_command(str(tmp_path), CleanMode.CHECK, keep_runs=False, runs=[])
    done = bash(argv, tmp_path, payload)
    assert done.stdout == b"coord-run 2 clean\nend\n" and parse_clean(done.stdout) == {}
    bad = bash([*argv[:6], str(tmp_path), "check"], tmp_path)
    assert (bad.returncode, bad.stdout) == (ExitCode.USAGE, b"")
    assert failure_reason(bad.stderr.decode()) == (
        "clean: expected WORKDIR MODE KEEP_RUNS RESCUE, got 2 arguments"
    )


# ======================================================== 4. the launcher, installed by dispatch


def arun(coro: Any) -> Any:
    return asyncio.run(coro)


def test_dispatch_installs_the_launcher_once_and_tmux_runs_that_copy(setup: Setup) -> None:
    setup.add_local("local", env={"FAKE_CLAUDE_SCENARIO": "ok"})

    async def go() -> tuple[list[Any], dict[str, int]]:
        async with setup.coordinator() as c:
            stats = c.transport("local").stats
            first = await c.assign("local", "api", 1, title="one")
            dispatch_commands = stats["commands"]
            bins = sorted((setup.root / "wd-local" / "bin").iterdir())
            mtime = bins[0].stat().st_mtime_ns
            second = await c.assign("local", "api", 2, title="two")
            assert bins[0].stat().st_mtime_ns == mtime  # not written again
            before = stats["commands"]
            await c.status()
            status_commands = stats["commands"] - before
            done = [await c.wait(a.id, timeout=30) for a in (first, second)]
            return done, {"dispatch": dispatch_commands, "status": status_commands}

    done, counts = arun(go())
    assert [a.status for a in done] == [Status.DONE, Status.DONE]
    assert counts == {"dispatch": 1, "status": 1}  # the launcher's install costs none more
    # (beside it, confined workers' bwrap shim, in bin/sandbox/)
    (installed,) = [p for p in (setup.root / "wd-local" / "bin").iterdir() if p.is_file()]
    assert installed.name == f"{Layout.LAUNCHER_FILE}{launcher_hash()}"
    assert installed.read_text() == launcher_script()
    assert installed.stat().st_mode & 0o777 == 0o700


def test_a_launcher_whose_text_is_not_its_hash_is_never_installed(tmp_path: Path) -> None:
    repo = make_git_repo(tmp_path / "api")
    wd = tmp_path / "wd"
    argv, payload = dispatch(
        workdir=str(wd), repo_path=str(repo.path), worktree=str(wd / "worktrees" / "api" / "x"),
        socket="ct-none",
    )  # fmt: skip
    args = argv[6:]
    args[7] = "0123456789ab"  # a hash the text does not have
    done = bash([*argv[:6], *args], tmp_path, payload)
    assert done.returncode == ExitCode.WRITE_FAILED, done.stderr
    assert "cannot install the launcher" in failure_reason(done.stderr.decode())
    assert list((wd / "bin").iterdir()) == []
    record = json.loads((wd / "runs" / "api-1-abcd" / "exit.json").read_text())
    assert record["reason"] == ExitReason.DISPATCH_FAILED
    assert record["exit_code"] == ExitCode.WRITE_FAILED
    assert not (wd / "worktrees" / "api" / "x").exists()  # undone: it can be sent again


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_each_verb_sends_only_what_it_needs_and_it_parses(verb: str) -> None:
    """A command carries its verb's section of remote.sh and the common part, no comments."""
    text = remote_script(verb)
    assert f"cmd_{verb}()" in text
    assert not any(line.lstrip().startswith("#") for line in text.splitlines())
    others = [v for v in VERBS if v != verb]
    assert not any(f"cmd_{v}()" in text for v in others)
    assert len(text) < len(remote_script()) / 2  # a status sends ~8 KB, not ~31 KB
    done = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
