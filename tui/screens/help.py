"""`?`: every key, in one place."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = (
    ("r", "record / stop"),
    ("space", "pause / resume"),
    ("o", "open a recording"),
    ("e", "export the transcript"),
    ("n", "rename a speaker"),
    ("/", "search"),
    ("] [", "next / previous match"),
    ("esc", "clear the search"),
    ("l", "language"),
    ("d", "microphone (input device)"),
    ("g", "show / hide worker gauges"),
    ("p", "per-speaker panes"),
    ("?", "this help"),
    ("q", "quit"),
)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(justify="right", style="bold")
        table.add_column()
        for key, what in KEYS:
            table.add_row(key, what)
        with Vertical(id="help-box"):
            yield Static("TranscrevAI — keys", id="help-title")
            yield Static(table, id="help-keys")
            yield Static("Esc closes", id="help-foot")
