"""`?`: every key, in one place."""

from __future__ import annotations

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
    ("n", "rename the selected speaker"),
    ("/", "search (n/N: next/previous)"),
    ("l", "language"),
    ("g", "show / hide worker gauges"),
    ("p", "per-speaker panes"),
    ("?", "this help"),
    ("q", "quit"),
)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        lines = "\n".join(f"  {key:>6}  {what}" for key, what in KEYS)
        with Vertical(id="help-box"):
            yield Static("TranscrevAI — keys", id="help-title")
            yield Static(lines, id="help-keys")
            yield Static("Esc closes", id="help-foot")
