"""Shown instead of the console while the terminal is below the smallest size it lays out in."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Center, Middle
from textual.screen import Screen
from textual.widgets import Static

MIN_WIDTH, MIN_HEIGHT = 60, 18


class TooSmallScreen(Screen[None]):
    """Nothing stops meanwhile: recording and transcription go on behind it, and the console
    comes back as it was when the window is large enough again."""

    def compose(self) -> ComposeResult:
        with Middle(), Center():
            yield Static(id="too-small-text")

    def show(self, width: int, height: int) -> None:
        self.query_one("#too-small-text", Static).update(
            f"Terminal too small: {width}×{height}\n"
            f"TranscrevAI needs at least {MIN_WIDTH}×{MIN_HEIGHT}.\n"
            "Enlarge the window; recording goes on.")

    def on_mount(self) -> None:
        self.show(self.app.size.width, self.app.size.height)
