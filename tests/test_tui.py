"""``coord tui``: the board, the selection, an action and a worker's live events, driven with
Textual's pilot against a real coordinator and stand-in workers on this machine."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import coord
from cli.tui_app import TuiApp, WatchScreen, action_body, event_style
from coordlib import Coordinator, Status
from coordlib.dashboard import DONE, IN_PROGRESS, Card

from .conftest import Setup

pytest.importorskip("textual")
from textual.pilot import Pilot

SCREENSHOT = Path(__file__).parents[1] / "docs" / "screenshots" / "tui.svg"


async def until(pilot: Pilot[None], ok: Callable[[], bool], timeout: float = 20.0) -> None:
    """Let the app run until ok() holds (a failed assertion after timeout seconds)."""
    end = asyncio.get_running_loop().time() + timeout
    while not ok():
        assert asyncio.get_running_loop().time() < end, "the app never got there"
        await pilot.pause(0.05)


def _card(app: TuiApp, issue: int) -> Card:
    assert app.snapshot is not None
    card = app.snapshot.card("api", issue)
    assert card is not None, [c.key for c in app.cards]
    return card


def test_board_keys_stop_and_watch(setup: Setup) -> None:
    setup.add_local("box", env={"FAKE_CLAUDE_SCENARIO": "stall"})
    setup.add_local("quick", env={"FAKE_CLAUDE_SCENARIO": "ok"})
    config = setup.write()

    async def go() -> None:
        async with Coordinator.from_path(config) as c:
            stalled = await c.assign("box", "api", 1, title="Stalls forever", pipeline=False)
            quick = await c.assign("quick", "api", 2, title="Ends at once", pipeline=False)
            assert (await c.wait(quick.id, timeout=60)).status == Status.DONE
            app = TuiApp(c, interval=0.5, issues_every=None)
            async with app.run_test(size=(150, 36)) as pilot:
                # The board: each card in its column, the machines as the pass saw them.
                await until(pilot, lambda: app.polls >= 1)
                assert _card(app, 1).column == IN_PROGRESS
                assert _card(app, 1).state == "running"
                assert _card(app, 1).actions == ("stop",)
                assert _card(app, 2).column == DONE
                assert app.snapshot is not None
                assert {m.name: m.reachable for m in app.snapshot.machines} == {
                    "box": True, "quick": True}  # fmt: skip
                assert app.selected_key == "api#1"

                # j/k move the selection; an action the card does not allow is refused.
                await pilot.press("j")
                assert app.selected_key == "api#2"
                await pilot.press("j")  # the last card stays selected
                assert app.selected_key == "api#2"
                await pilot.press("s")
                assert "stop is not valid" in app.message
                await pilot.press("k")
                assert app.selected_key == "api#1"
                await pilot.press("m")
                assert "merge is not valid" in app.message and "valid: stop" in app.message

                # w follows the worker's events, its STATUS line among them.
                await pilot.press("w")
                screen = app.screen
                assert isinstance(screen, WatchScreen)
                assert screen.assignment == stalled.id
                await until(pilot, lambda: "[status] about to stall" in screen.lines)
                await pilot.press("escape")
                assert not isinstance(app.screen, WatchScreen)
                await until(pilot, lambda: screen.ended, timeout=5)  # its tail ended with it
                if os.environ.get("COORD_SCREENSHOTS") == "1":
                    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                    app.save_screenshot(SCREENSHOT.name, str(SCREENSHOT.parent))

                # s stops it; the next pass (brought forward) shows the card stopped.
                polls = app.polls
                await pilot.press("s")
                await until(pilot, lambda: _card(app, 1).state == "stopped")
                assert app.polls > polls
                assert f"{stalled.id} is stopped" in app.message
                assert _card(app, 1).column != IN_PROGRESS
                assert "retry" in _card(app, 1).actions
                assert c.get(stalled.id).status == Status.STOPPED

                # A coordinator's refusal is shown in the status line, never raised.
                gone = Card(repo="api", issue=9, title="gone", column=IN_PROGRESS,
                            assignment="api-9-ffff", state="running")  # fmt: skip
                await app._perform(gone, "stop", action_body(gone, "stop"))
                assert app.message.startswith("api#9: stop failed:"), app.message
                await pilot.press("q")
                await pilot.pause()
            assert app.return_code == 0

    asyncio.run(go())


def test_action_bodies_and_event_styles() -> None:
    card = Card(repo="api", issue=3, title="t", column="Review", assignment="api-3-aaaa",
                review="api-3-bbbb", proposal="p4")  # fmt: skip
    assert action_body(card, "stop") == {"assignment": "api-3-aaaa"}
    assert action_body(card, "retry") == {"assignment": "api-3-aaaa"}
    assert action_body(card, "bounce") == {"assignment": "api-3-bbbb"}
    assert action_body(card, "merge") == {"repo": "api", "issue": 3}
    assert action_body(card, "approve") == {"proposal": "p4"}
    assert event_style("[stuck] need a token") != event_style("[status] working") != ""
    assert event_style("[tool] Bash ls") == ""


def test_the_command_refuses_without_textual(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "textual" else real(name, *a))  # fmt: skip
    setup.add_local("box")
    got = CliRunner().invoke(coord, ["--config", str(setup.write()), "tui"])
    assert got.exit_code == 1
    assert "pip install 'coordlib[tui]'" in got.output
    assert "Traceback" not in got.output
