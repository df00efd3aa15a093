"""``coord tui``'s Textual app: the dashboard's board, machines and spend in a terminal.

One background task asks every machine once per `interval` (`Coordinator.status`) and
rebuilds the snapshot with `coordlib.dashboard.gather`; a key press never polls, an action
only brings the next pass forward.  Keys act on the selected card through the same verbs as
``coord web`` (`coordlib.web.actions.perform`, which needs no web server); `w` follows the
selected card's worker live, as ``coord watch`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, RichLog, Static

from coordlib.dashboard import COLUMNS, Action, Card, Dashboard, MachineCard, gather
from coordlib.errors import CoordError
from coordlib.event_view import format_event
from coordlib.terminal import printable
from coordlib.web.actions import perform

if TYPE_CHECKING:
    from coordlib.coordinator import Coordinator
    from coordlib.forge.base import Issue
    from coordlib.monitor import MachineStatus

__all__ = ["TuiApp", "WatchScreen", "action_body", "event_style"]

_TITLE_SHOWN = 40  # a card's title is cut to this in its column (the detail line has it all)


def action_body(card: Card, action: str) -> dict[str, Any]:
    """Return what `perform` needs to run `action` on `card`."""
    if action == Action.BOUNCE:
        return {"assignment": card.review}
    if action == Action.MERGE:
        return {"repo": card.repo, "issue": card.issue}
    if action == Action.APPROVE:
        return {"proposal": card.proposal}
    return {"assignment": card.assignment}  # stop, retry


def event_style(line: str) -> str:
    """Return the style of a watched line: STATUS and STUCK lines stand out."""
    if line.startswith("[stuck]"):
        return "bold black on yellow"
    if line.startswith("[status]"):
        return "bold cyan"
    if line.startswith("[result]"):
        return "bold green" if "error" not in line[:40] else "bold red"
    if line.startswith(("[reconnecting]", "[malformed]", "[api-retry]")):
        return "yellow"
    return ""


def _kb(kb: int | None) -> str:
    if kb is None:
        return "?"
    size = float(kb)
    for unit in ("K", "M", "G", "T"):
        if size < 1024 or unit == "T":
            return f"{size:.0f}{unit}" if unit == "K" else f"{size:.1f}{unit}"
        size /= 1024
    return "?"  # unreachable: the loop returns at "T"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h" if seconds < 86400 else f"{seconds / 86400:.0f}d"


def _machine_line(m: MachineCard) -> Text:
    if m.reachable is None:
        state, style = "not asked yet", "dim"
    elif m.reachable:
        state, style = ("stale" if m.stale else "up"), ("yellow" if m.stale else "green")
    else:
        state, style = m.state, "red"
    line = Text.assemble((f"{m.name:<14}", "bold"), (f"{state:<14}", style))
    line.append(f"{m.running} running   disk {_kb(m.disk_used_kb)} used, "
                f"{_kb(m.disk_free_kb)} free")  # fmt: skip
    if m.error and not m.reachable:
        line.append(f"   {printable(m.error)[:80]}", style="red")
    return line


def _card_cell(card: Card, selected: bool) -> Text:
    title = printable(card.title)
    title = title if len(title) <= _TITLE_SHOWN else title[: _TITLE_SHOWN - 1] + "…"
    cell = Text(f"#{card.issue} {title}\n", style="bold")
    bits = [card.state or card.stage or "", card.machine, _age(card.age_s)]
    cell.append(" ".join(b for b in bits if b), style="dim" if not selected else "")
    if card.state == "stuck" or card.needs_human:
        cell.stylize("yellow")
    if selected:
        cell.stylize("reverse")
    return cell


class WatchScreen(Screen[None]):
    """One worker's live events (the filtered view of ``coord watch``)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,w", "back", "Back to the board"),
    ]

    def __init__(self, coord: Coordinator, assignment: str, title: str) -> None:
        super().__init__()
        self.coord = coord
        self.assignment = assignment
        self.heading = title
        self.lines: list[str] = []  # every line shown, as text (what a test reads)
        self.ended = False

    def compose(self) -> ComposeResult:
        yield Static(Text(f"watching {self.assignment}: {self.heading}", style="bold"))
        yield RichLog(id="events", wrap=True, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.run_worker(self._follow(), exclusive=True, group="watch")

    def action_back(self) -> None:
        """End the tail (a popped screen's workers would run on) and show the board."""
        self.workers.cancel_group(self, "watch")
        self.app.pop_screen()

    def _show(self, line: str, style: str = "") -> None:
        self.lines.append(line)
        self.query_one("#events", RichLog).write(Text(line, style=style))

    async def _follow(self) -> None:
        try:
            # Leaving the screen cancels this inside the tail, which kills its remote command.
            async for event in self.coord.watch(self.assignment):
                line = format_event(event)
                if line is not None:
                    line = printable(line)
                    self._show(line, event_style(line))
            a = self.coord.get(self.assignment)
            self._show(f"-- {a.id} {a.status}", "bold")
        except CoordError as exc:
            self._show(f"-- {exc}", "bold red")
        finally:
            self.ended = True


class TuiApp(App[None]):
    """The board, the machines and the spend, refreshed every `interval` seconds."""

    TITLE = "coord"
    CSS = """
    #spend { height: 1; background: $boost; padding: 0 1; }
    #board { height: 1fr; }
    #detail { height: auto; max-height: 4; padding: 0 1; background: $boost; }
    #machines { height: auto; max-height: 8; padding: 0 1; }
    #message { height: 1; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j,down", "move(1)", "Next"),
        Binding("k,up", "move(-1)", "Previous"),
        Binding("enter", "stage", "Stage action"),
        Binding("w", "watch", "Watch"),
        Binding("s", "act('stop')", "Stop"),
        Binding("r", "act('retry')", "Retry"),
        Binding("m", "act('merge')", "Merge"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self, coord: Coordinator, *, interval: float = 5.0, issues_every: float | None = 60.0
    ) -> None:
        super().__init__()
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval}")
        self.coord = coord
        self.interval = interval
        self.issues_every = issues_every  # None: never ask the forge for its issues
        self.snapshot: Dashboard | None = None
        self.cards: list[Card] = []  # the cards in selection order (repo, column, card)
        self.selected_key: str | None = None
        self.message = ""
        self.polls = 0  # status passes run
        self._machines: list[MachineStatus] | None = None
        self._polled_at: float | None = None
        self._issues: dict[str, list[Issue]] | None = None
        self._issues_at = float("-inf")
        self._errors: list[str] = []
        self._poke = asyncio.Event()

    # ------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Static(id="spend")
        with VerticalScroll(id="board", can_focus=False):
            yield Static(id="columns")
        yield Static(id="detail")
        yield Static(id="machines")
        yield Static(id="message")
        yield Footer()

    def on_mount(self) -> None:
        self._publish(self._build())  # the board alone, at once; the machines follow
        self.run_worker(self._poll_loop(), exclusive=True, group="poll")

    # ------------------------------------------------------------ polling
    async def _poll_loop(self) -> None:
        while True:
            self._poke.clear()
            try:
                await self.poll()
            except CoordError as exc:  # the board unreadable, say: shown, tried again
                self._publish(self._build([f"status: {exc}"]))
            except Exception as exc:  # one bad pass never ends the app: shown, tried again
                self.say(f"the status pass failed: {type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.interval)

    async def poll(self) -> None:
        """Ask every machine once (and the forge, when due), and show the new snapshot."""
        report = await self.coord.status()
        self.polls += 1
        self._machines, self._polled_at = report.machines, time.time()
        due = self.issues_every is not None and self._polled_at - self._issues_at >= max(
            self.issues_every, self.interval
        )
        if due:
            self._issues_at = self._polled_at
            self._issues, self._errors = await self._read_issues()
        self._publish(self._build())

    async def _read_issues(self) -> tuple[dict[str, list[Issue]], list[str]]:
        issues: dict[str, list[Issue]] = {}
        errors: list[str] = []
        for repo in sorted(self.coord.config.repos):
            try:
                issues[repo] = list(await self.coord.forge(repo).list_issues(state="open"))
            except CoordError as exc:
                errors.append(f"{repo}: the forge did not list its issues: {exc}")
        return issues, errors

    def _build(self, errors: list[str] | None = None) -> Dashboard:
        return gather(self.coord, machines=self._machines, issues=self._issues,
                      errors=[*(errors or []), *self._errors],
                      polled_at=self._polled_at)  # fmt: skip

    def _publish(self, snap: Dashboard) -> None:
        self.snapshot = snap
        self.cards = list(snap.cards())
        keys = [c.key for c in self.cards]
        if self.selected_key not in keys:
            self.selected_key = keys[0] if keys else None
        self._render_all()

    # ------------------------------------------------------------ drawing
    @property
    def selected(self) -> Card | None:
        """Return the selected card, or None when the board has none."""
        return next((c for c in self.cards if c.key == self.selected_key), None)

    def _render_all(self) -> None:
        snap = self.snapshot
        if snap is None:
            return
        s = snap.spend
        at = snap.polled_at
        polled = time.strftime("%H:%M:%S", time.localtime(at)) if at else "never"
        self.query_one("#spend", Static).update(Text.assemble(
            ("spend today ", "bold"), f"${s.today_usd:.2f}", "   total ", f"${s.total_usd:.2f}",
            f"   machines polled {polled} (every {self.interval:g}s)",
        ))  # fmt: skip
        self.query_one("#columns", Static).update(self._board(snap))
        self.query_one("#detail", Static).update(self._detail())
        machines = [_machine_line(m) for m in snap.machines]
        machines += [Text(f"! {printable(e)}", style="red") for e in snap.errors]
        self.query_one("#machines", Static).update(Group(*machines))
        self.query_one("#message", Static).update(Text(self.message))

    def _board(self, snap: Dashboard) -> RenderableType:
        if not snap.repos:
            return Text("no repos in the config", style="dim")
        tables: list[RenderableType] = []
        for repo in snap.repos:
            table = Table(title=repo.repo, title_justify="left", expand=True, show_lines=False)
            for name in COLUMNS:
                hidden = repo.hidden.get(name, 0)
                count = len(repo.columns[name]) + hidden
                table.add_column(f"{name} ({count})", ratio=1, overflow="fold")
            height = max((len(v) for v in repo.columns.values()), default=0)
            for row in range(height):
                cells: list[RenderableType] = []
                for name in COLUMNS:
                    cards = repo.columns[name]
                    cells.append(_card_cell(cards[row], cards[row].key == self.selected_key)
                                 if row < len(cards) else "")  # fmt: skip
                table.add_row(*cells)
            tables.append(table)
        return Group(*tables)

    def _detail(self) -> Text:
        c = self.selected
        if c is None:
            return Text("no card selected", style="dim")
        head = Text.assemble((f"{c.key} ", "bold"), printable(c.title))
        bits = [f"column: {c.column}", f"stage: {c.stage}" if c.stage else "",
                f"state: {c.state}" if c.state else "", c.assignment or "", c.machine,
                c.tier, f"${c.cost_usd:.2f}", f"PR #{c.pr}" if c.pr else "",
                f"needs a person: {c.needs_human}" if c.needs_human else ""]  # fmt: skip
        head.append("\n" + "  ".join(b for b in bits if b), style="dim")
        if c.last_status:
            head.append("\n" + printable(c.last_status), style="cyan")
        acts = ", ".join(c.actions) or "none"
        head.append(f"\nactions: {acts}", style="bold" if c.actions else "dim")
        return head

    def say(self, message: str) -> None:
        """Show `message` in the status line."""
        self.message = message
        self.query_one("#message", Static).update(Text(printable(message)))

    # ------------------------------------------------------------ keys
    def action_move(self, step: int) -> None:
        """Select the next (step 1) or previous (-1) card."""
        if not self.cards:
            return
        keys = [c.key for c in self.cards]
        at = keys.index(self.selected_key) if self.selected_key in keys else 0
        self.selected_key = keys[max(0, min(len(keys) - 1, at + step))]
        self._render_all()

    def action_stage(self) -> None:
        """Run the selected card's stage action (its first valid one)."""
        c = self.selected
        if c is None:
            self.say("no card selected")
        elif not c.actions:
            self.say(f"{c.key}: no action is valid now ({c.column}, {c.state or 'no worker'})")
        else:
            self.action_act(c.actions[0])

    def action_act(self, action: str) -> None:
        """Run `action` on the selected card, or say why it is not valid for it."""
        c = self.selected
        if c is None:
            self.say("no card selected")
            return
        if action not in c.actions:
            valid = ", ".join(c.actions) or "none"
            self.say(f"{c.key}: {action} is not valid now ({c.column}, "
                     f"{c.state or 'no worker'}); valid: {valid}")  # fmt: skip
            return
        self.say(f"{c.key}: {action}…")
        self.run_worker(self._perform(c, action, action_body(c, action)), group="action")

    async def _perform(self, card: Card, action: str, body: Mapping[str, Any]) -> None:
        try:
            done = await perform(self.coord, action, body)
        except CoordError as exc:
            self.say(f"{card.key}: {action} failed: {exc}")
        except Exception as exc:  # a bug in a verb is shown, never ends the board
            self.say(f"{card.key}: {action} failed: {type(exc).__name__}: {exc}")
        else:
            self.say(f"{card.key}: {done.get('message') or action}")
        self._poke.set()  # show its effect now, not at the next interval

    def action_watch(self) -> None:
        """Follow the selected card's worker live."""
        c = self.selected
        if c is None or c.assignment is None:
            self.say("no worker to watch: " + (f"{c.key} has none" if c else "no card selected"))
            return
        self.push_screen(WatchScreen(self.coord, c.assignment, f"{c.key} {c.title}"))
