"""One row per worker: state, memory against its limit, heartbeat age, restarts, speed, model."""

from __future__ import annotations

import time

from rich.table import Table
from rich.text import Text
from textual import events
from textual.widgets import Static

from tui.state import ConsoleState, WorkerView

BAR = 6
NARROW = 70  # columns below which the heartbeat age is left out
MEDIUM = 90  # ... and the model


def memory_bar(w: WorkerView) -> Text:
    if not w.rss_limit_bytes:
        return Text("-", style="dim")
    frac = min(1.0, w.rss_bytes / w.rss_limit_bytes)
    filled = round(frac * BAR)
    style = "red" if frac >= 0.9 else "yellow" if frac >= 0.75 else "green"
    text = Text("█" * filled, style=style)
    text.append("░" * (BAR - filled), style="dim")
    text.append(f" {w.rss_bytes / 2**20:.0f}/{w.rss_limit_bytes / 2**20:.0f}MB")
    return text


def state_text(w: WorkerView, now: float) -> Text:
    styles = {"ready": "green", "busy": "bold green", "loading": "yellow",
              "starting": "yellow", "restarting": "bold yellow", "failed": "bold red",
              "stopped": "dim"}
    return Text(w.state_text(now), style=styles.get(w.state.value, ""))


class Gauges(Static):
    """Refreshed on a timer by the app, not per engine message."""

    def __init__(self, state: ConsoleState, heartbeat_interval: float,
                 **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.state = state
        self.heartbeat_interval = heartbeat_interval
        self._shown: tuple[bool, bool, tuple[tuple[str, ...], ...]] | None = None  # last shown
        self._now: float | None = None  # the time of the last sync

    def on_resize(self, _event: events.Resize) -> None:
        """Columns follow the new width at once, not at the next tick: for up to a tick the
        table kept the old width's columns (a snapshot under load caught it). Times stay as
        the last tick saw them (the app's clock); the next tick moves them on."""
        if self._now is not None:
            self.sync(self._now)

    def sync(self, now: float | None = None) -> None:
        """Columns a narrow terminal has no room for are left out whole (model first, then
        heartbeat age) rather than cut mid-word."""
        now = time.monotonic() if now is None else now
        self._now = now
        width = self.content_size.width or self.app.size.width
        rows: list[list[str | Text]] = []
        for w in self.state.workers.values():
            late = w.heartbeat_age_s > 2 * self.heartbeat_interval
            beat = Text(f"{w.heartbeat_age_s:.1f}s", style="bold red" if late else "")
            ratio = "-" if w.processing_ratio is None else f"{w.processing_ratio:.2f}"
            cells: list[str | Text] = [w.role, state_text(w, now), memory_bar(w)]
            if width >= NARROW:
                cells.append(beat)
            cells += [str(w.restarts), ratio]
            if width >= MEDIUM:
                cells.append(w.model or "-")
            rows.append(cells)
        # on a timer (4 Hz) while the values change about once a heartbeat: an unchanged
        # table is not drawn again, and the screen is laid out again only for another
        # number of rows (the widget's height)
        shown = (width >= NARROW, width >= MEDIUM, tuple(
            tuple(c.markup if isinstance(c, Text) else c for c in cells) for cells in rows))
        if shown == self._shown:
            return
        layout = self._shown is None or len(shown[2]) != len(self._shown[2])
        self._shown = shown
        table = Table(box=None, expand=True, pad_edge=False, show_edge=False)
        table.add_column("worker", no_wrap=True, style="bold", min_width=13)
        table.add_column("state", no_wrap=True, min_width=8, overflow="ellipsis")
        table.add_column("memory", no_wrap=True, min_width=18)
        if width >= NARROW:
            table.add_column("beat", no_wrap=True, justify="right")
        table.add_column("rst", no_wrap=True, justify="right")
        table.add_column("ratio", no_wrap=True, justify="right")
        if width >= MEDIUM:
            table.add_column("model", no_wrap=True, overflow="ellipsis", ratio=1)
        for cells in rows:
            table.add_row(*cells)
        self.update(table, layout=layout)
