"""`RunProgress`: folding events, and resuming a fold from its serialised form (pure)."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from coordlib.progress import MAX_EVENT_LINE, RunProgress
from coordlib.stream import parse_lines

FIXTURES = Path(__file__).parent / "fixtures" / "stream"
LOG = b"".join((FIXTURES / name).read_bytes() for name in ("success.jsonl", "overloaded.jsonl"))


def whole() -> RunProgress:
    p = RunProgress()
    for event in parse_lines(LOG.splitlines()):
        p.apply(event)
    return p


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(LOG)), max_size=12), via=st.booleans())
def test_a_fold_in_any_number_of_reads_equals_one_fold_of_the_whole(
    cuts: list[int], via: bool
) -> None:
    p = RunProgress()
    for end in [*sorted(cuts), len(LOG)]:
        # A status reads from where the board's fold stands, up to wherever the file ends now.
        p.feed(LOG[p.offset : end], p.offset)
        if via:  # the board keeps only the serialised form between two reads
            p = RunProgress.from_dict(json.loads(json.dumps(p.to_dict())))
    assert p == whole()
    assert p.offset == len(LOG) and p.turns == whole().turns


def test_bytes_already_folded_or_out_of_order_are_never_folded_twice() -> None:
    p = RunProgress()
    assert p.feed(LOG, 0)
    turns = p.turns
    assert not p.feed(LOG, 0)  # the same read again: nothing new
    assert not p.feed(b'{"type":"assistant"}\n', len(LOG) + 10)  # a gap: not ours to fold
    assert p.turns == turns and p.offset == len(LOG)


def test_a_line_too_long_to_read_is_skipped_once_and_recorded() -> None:
    head = (
        b'{"type":"system","subtype":"init","session_id":"0b5c2a4e-8f1d-4c7a-9e3b-2d6f1a8c4e90"}\n'
    )
    huge = b'{"type":"assistant","x":"' + b"y" * (MAX_EVENT_LINE + 100) + b'"}\n'
    tail = b'{"type":"result","subtype":"success","is_error":false,"num_turns":2}\n'
    log = head + huge + tail
    p = RunProgress()
    reads = 0
    while p.offset < len(log):
        reads += 1
        p.feed(log[p.offset : p.offset + MAX_EVENT_LINE], p.offset)
        p = RunProgress.from_dict(p.to_dict())
    assert reads == 3
    assert p.malformed_lines == [(len(head), len(huge) - 1)] and p.malformed == 1
    assert p.result is not None and p.turns == 2 and p.session_id is not None


def test_only_a_uuid_is_ever_kept_as_the_session_id() -> None:
    p = RunProgress()
    p.feed(b'{"type":"system","subtype":"init","session_id":"--resume=x"}\n', 0)
    assert p.session_id is None
    assert RunProgress.from_dict({"session_id": "-x"}).session_id is None
