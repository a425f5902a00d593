"""The TranscrevAI console: transcript, per-speaker panes, worker gauges, keyboard control.

It renders engine events and sends commands; models and audio live in the engine's worker
processes. A bridge thread owns the engine and posts event batches; gauges and the status
line refresh on a timer (4 Hz), not per message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal
from textual.message import Message
from textual.widgets import Footer

from engine.config import Config
from engine.messages import EngineEvent
from tui.bridge import EngineBridge
from tui.screens.help import HelpScreen
from tui.state import ConsoleState
from tui.widgets.gauges import Gauges
from tui.widgets.status_bar import StatusBar
from tui.widgets.transcript_view import TranscriptView


class EngineEvents(Message):
    """A batch of engine events, posted from the bridge thread."""

    def __init__(self, events: list[EngineEvent]) -> None:
        super().__init__()
        self.events = events


class TranscrevApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "TranscrevAI"
    BINDINGS = [
        Binding("r", "record", "Record"),
        Binding("space", "pause", "Pause"),
        Binding("o", "open", "Open"),
        Binding("e", "export", "Export"),
        Binding("n", "rename", "Rename"),
        Binding("slash", "search", "Search"),
        Binding("l", "language", "Lang"),
        Binding("g", "toggle_gauges", "Gauges"),
        Binding("p", "toggle_panes", "Speakers"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit_console", "Quit"),
    ]

    def __init__(self, config: Config, replay: str | None = None, speed: float = 1.0,
                 events: Sequence[EngineEvent] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`events`: a recorded event stream to show instead of running the engine, and
        `clock`: a fixed clock (tests)."""
        super().__init__()
        self.config = config
        self.clock = clock
        self.state = ConsoleState(language=config.transcription.language)
        self.replay = replay
        self.speed = speed  # 0: as fast as the engine goes
        self.recorded = list(events) if events is not None else None
        self.bridge: EngineBridge | None = None

    def compose(self) -> ComposeResult:
        yield StatusBar(self.state, id="status")
        with Horizontal(id="main"):
            yield TranscriptView(self.state, id="transcript")
            yield Grid(id="panes", classes="hidden")
        yield Gauges(self.state, self.config.engine.heartbeat_interval, id="gauges")
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(0.25, self.refresh_gauges)
        if self.recorded is not None:
            self._apply(self.recorded)
        else:
            self.bridge = EngineBridge(self.config, self._post_from_thread)
            self.bridge.start()
            if self.replay:
                self.bridge.open(self.replay, realtime=self.speed > 0, speed=self.speed or 1.0)
        self.refresh_gauges()

    def _post_from_thread(self, batch: list[EngineEvent]) -> None:
        self.post_message(EngineEvents(batch))

    def on_engine_events(self, message: EngineEvents) -> None:
        self._apply(message.events)

    def _apply(self, events: Sequence[EngineEvent]) -> None:
        version = self.state.version
        now = self.clock()
        for ev in events:
            self.state.apply(ev, now)
        if self.state.version != version:
            self.query_one("#transcript", TranscriptView).sync()
            for pane in self.query("#panes TranscriptView").results(TranscriptView):
                pane.sync()

    def refresh_gauges(self) -> None:
        now = self.clock()
        self.query_one("#status", StatusBar).sync(now)
        gauges = self.query_one("#gauges", Gauges)
        if gauges.display:
            gauges.sync(now)

    # ------------------------------------------------------------ actions
    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_toggle_gauges(self) -> None:
        gauges = self.query_one("#gauges", Gauges)
        gauges.display = not gauges.display

    def action_toggle_panes(self) -> None:
        panes = self.query_one("#panes", Grid)
        if panes.has_class("hidden"):
            panes.remove_children()
            # as many side-by-side columns as fit at ~38 cells each (2x2 at 80 columns)
            count = max(1, len(self.state.speakers))
            panes.styles.grid_size_columns = max(1, min(count, self.size.width // 38))
            for label in self.state.speakers:
                view = TranscriptView(self.state, speaker=label, classes="pane")
                view.border_title = self.state.name(label)
                panes.mount(view)
                view.sync()
            panes.remove_class("hidden")
            self.query_one("#transcript").add_class("hidden")
        else:
            panes.add_class("hidden")
            self.query_one("#transcript").remove_class("hidden")

    def action_record(self) -> None:
        self.notify("Microphone capture is not available yet; open a recording with o.",
                    severity="warning")

    def action_pause(self) -> None:
        self.notify("Pause is not available yet.", severity="warning")

    def action_open(self) -> None:
        self.notify("Opening recordings from the console is not available yet.",
                    severity="warning")

    def action_export(self) -> None:
        self.notify("Export from the console is not available yet; use transcrevai "
                    "transcribe --format.", severity="warning")

    def action_rename(self) -> None:
        self.notify("Renaming speakers is not available yet.", severity="warning")

    def action_search(self) -> None:
        self.notify("Search is not available yet.", severity="warning")

    def action_language(self) -> None:
        self.notify(f"Language: {self.state.language}", severity="information")

    def action_quit_console(self) -> None:
        self.exit()

    def on_unmount(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()
            self.bridge.join(timeout=5)
