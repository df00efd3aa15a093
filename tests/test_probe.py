"""`parse_status`: the frame ``coord-run status`` prints, parsed from literal bytes."""

from __future__ import annotations

import pytest

from coordlib.errors import MachineError, ProtocolError
from coordlib.runtime.answers import MachineProbe, parse_status

HEADER = b"coord-run 2 status boot=0b7c5e1e-aaaa-bbbb-cccc-123456789abc now=1700000000.250000\n"
parse_probe = parse_status
ProbeError = ProtocolError


def probe(*lines: bytes) -> MachineProbe:
    return parse_probe(HEADER + b"".join(lines) + b"end\n")


def test_header_fields() -> None:
    p = probe()
    assert p.boot_id == "0b7c5e1e-aaaa-bbbb-cccc-123456789abc"
    assert p.now == pytest.approx(1700000000.25)
    assert p.runs == {}
    assert p.missing == set()


def test_header_without_fields_gives_defaults() -> None:
    p = parse_probe(b"coord-run 2 status\nend\n")
    assert p.boot_id == ""
    assert p.now == 0.0


@pytest.mark.parametrize(
    "header",
    [
        b"coord-probe 1 boot=b now=1\n",  # the format before the protocol was declared
        b"coord-run 1 status boot=b now=1\n",
        b"coord-run 3 status boot=b now=1\n",
        b"coord-run 2 stop\n",
        b"coord-run 2\n",
    ],
)
def test_an_answer_of_another_version_or_verb_is_refused(header: bytes) -> None:
    with pytest.raises(ProbeError, match=r"incomplete|not protocol 2's answer to status"):
        parse_probe(header + b"end\n")


def test_a_tmux_line_is_no_longer_part_of_the_answer() -> None:
    with pytest.raises(ProbeError, match="unexpected line"):
        probe(b"tmux coord-api-1-ab12\n")


def test_a_login_scripts_noise_before_the_header_is_passed_over() -> None:
    noise = b"Welcome to box!\nrun fake alive=1\n\xff\n"
    p = parse_probe(noise + HEADER + b"run r1 alive=1 size=3\nexit \nend\n")
    assert p.boot_id.startswith("0b7c5e1e") and set(p.runs) == {"r1"}


def test_runs_with_alive_and_size() -> None:
    p = probe(
        b"run api-1-aaaa alive=1 size=1234\n",
        b"exit \n",
        b"run api-2-bbbb alive=0 size=-1\n",
        b"exit \n",
    )
    assert set(p.runs) == {"api-1-aaaa", "api-2-bbbb"}
    one, two = p.runs["api-1-aaaa"], p.runs["api-2-bbbb"]
    assert (one.id, one.alive, one.size) == ("api-1-aaaa", True, 1234)
    assert (two.id, two.alive, two.size) == ("api-2-bbbb", False, -1)
    # An empty exit line means no exit record yet; no events line means none were asked for.
    assert one.exit is None and two.exit is None
    assert one.events is None and one.events_offset is None


def test_run_without_size_defaults_to_minus_one() -> None:
    run = probe(b"run r1 alive=0\n").runs["r1"]
    assert run.size == -1
    assert not run.alive


def test_exit_json() -> None:
    line = b'{"exit_code":0,"reason":"exited","started_at":1.5,"finished_at":2.5}'
    run = probe(b"run r1 alive=0 size=10\n", b"exit " + line + b"\n").runs["r1"]
    assert run.exit == {
        "exit_code": 0,
        "reason": "exited",
        "started_at": 1.5,
        "finished_at": 2.5,
    }


def test_unreadable_exit_json_is_kept_as_unreadable() -> None:
    run = probe(b"run r1 alive=0 size=10\n", b'exit {"exit_code":0,"rea\n').runs["r1"]
    assert run.exit == {"reason": "unreadable", "raw": '{"exit_code":0,"rea'}


def test_exit_json_that_is_not_an_object() -> None:
    run = probe(b"run r1 alive=0 size=10\n", b"exit [1, 2]\n").runs["r1"]
    assert run.exit == {"raw": "[1, 2]"}


def test_exit_belongs_to_the_run_before_it() -> None:
    p = probe(
        b"run r1 alive=0 size=1\n",
        b'exit {"exit_code":3,"reason":"exited"}\n',
        b"run r2 alive=1 size=2\n",
        b"exit \n",
    )
    assert p.runs["r1"].exit == {"exit_code": 3, "reason": "exited"}
    assert p.runs["r2"].exit is None


def test_events_are_taken_by_length_not_parsed() -> None:
    # The payload holds lines that look like probe lines, a bare "end", invalid UTF-8,
    # a NUL and a carriage return: all of it is data, read by its byte count.
    payload = (
        b'{"type":"system"}\n'
        b"run fake-run alive=1 size=999\n"
        b"exit {}\n"
        b"missing nothing\n"
        b"end\n"
        b"\xff\xfe\x00binary\r\n"
        b"coord-probe 1 boot=evil now=1\n"
        b'{"partial":'
    )
    p = probe(
        b"run r1 alive=1 size=5000\n",
        b"exit \n",
        b"events 100 %d\n" % len(payload),
        payload + b"\n",
        b"run r2 alive=0 size=3\n",
        b"exit \n",
    )
    assert set(p.runs) == {"r1", "r2"}
    assert p.runs["r1"].events == payload
    assert p.runs["r1"].events_offset == 100
    assert p.runs["r1"].alive and p.runs["r1"].size == 5000
    assert p.runs["r2"].events is None
    assert p.missing == set()
    assert p.boot_id.startswith("0b7c5e1e")


def test_events_payload_may_end_with_a_newline() -> None:
    payload = b'{"a":1}\n{"b":2}\n'
    p = probe(b"run r1 alive=1 size=16\n", b"exit \n", b"events 0 16\n", payload + b"\n")
    assert p.runs["r1"].events == payload


def test_empty_events() -> None:
    run = probe(b"run r1 alive=1 size=10\n", b"exit \n", b"events 10 0\n", b"\n").runs["r1"]
    assert run.events == b""
    assert run.events_offset == 10


def test_missing() -> None:
    p = probe(b"run r1 alive=0 size=0\n", b"exit \n", b"missing gone-1\n", b"missing gone-2\n")
    assert p.missing == {"gone-1", "gone-2"}
    assert set(p.runs) == {"r1"}


def test_everything_together() -> None:
    p = probe(
        b"run r1 alive=1 size=8\n",
        b"exit \n",
        b"events 0 8\n",
        b"end\nrun \n",
        b"missing r9\n",
    )
    assert p.runs["r1"].events == b"end\nrun "
    assert p.missing == {"r9"}


def test_blank_lines_are_ignored_and_text_after_end_too() -> None:
    p = parse_probe(HEADER + b"\n" + b"missing a\n" + b"\n" + b"end\n" + b"garbage, ignored\n")
    assert p.missing == {"a"}


@pytest.mark.parametrize(
    "data",
    [
        # fewer bytes than announced
        HEADER + b"run r1 alive=1 size=10\nexit \nevents 0 10\nabc\nend\n",
        # the announced bytes are there but the newline after them is not
        HEADER + b"run r1 alive=1 size=10\nexit \nevents 0 3\nabcdend\n",
        # cut off inside the payload
        HEADER + b"run r1 alive=1 size=10\nexit \nevents 0 10\n0123",
    ],
    ids=["short", "no-newline-after", "cut-off"],
)
def test_truncated_events_payload(data: bytes) -> None:
    with pytest.raises(ProbeError, match="truncated"):
        parse_probe(data)


@pytest.mark.parametrize("line", [b"events 0\n", b"events a b\n", b"events 0 1 2\n", b"events\n"])
def test_bad_events_line(line: bytes) -> None:
    with pytest.raises(ProbeError, match="bad events line"):
        parse_probe(HEADER + b"run r1 alive=1 size=1\nexit \n" + line + b"x\nend\n")


def test_missing_end() -> None:
    with pytest.raises(ProbeError, match="incomplete"):
        parse_probe(HEADER + b"run r1 alive=0 size=0\nexit \n")


def test_missing_header() -> None:
    with pytest.raises(ProbeError, match="incomplete"):
        parse_probe(b"run r1 alive=0 size=0\nexit \nend\n")


def test_empty_output() -> None:
    with pytest.raises(ProbeError, match="incomplete"):
        parse_probe(b"")


def test_last_line_without_newline() -> None:
    with pytest.raises(ProbeError, match="truncated at byte"):
        parse_probe(HEADER + b"end")


@pytest.mark.parametrize(
    "line",
    [b"bogus line\n", b"coord-run: something went wrong\n", b"RUN r1 alive=1 size=1\n"],
)
def test_unknown_line(line: bytes) -> None:
    with pytest.raises(ProbeError, match="unexpected line"):
        parse_probe(HEADER + line + b"end\n")


def test_run_line_without_id() -> None:
    with pytest.raises(ProbeError, match="without an id"):
        parse_probe(HEADER + b"run \nend\n")


@pytest.mark.parametrize("line", [b"exit {}\n", b"events 0 0\n\n"])
def test_exit_or_events_before_any_run(line: bytes) -> None:
    with pytest.raises(ProbeError, match="before any run line"):
        parse_probe(HEADER + line + b"end\n")


def test_probe_error_is_a_machine_error_and_a_value_error() -> None:
    # The coordinator reports a CoordError from parsing as that machine's error.
    assert issubclass(ProbeError, MachineError) and issubclass(ProbeError, ValueError)
    with pytest.raises(ProtocolError, match=r"^box: unreadable status answer: incomplete"):
        parse_status(b"", machine="box")
