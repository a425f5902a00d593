"""`?`: every key, in one place.

The list is built from the app's bindings (key as the footer shows it, and the binding's
tooltip, else its description), so it cannot drift from what the keys actually do.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

DOCTOR = ("Microphone, sound server, models or terminal not working? In a shell, run\n"
          "  transcrevai doctor\n"
          "It checks each of them and says how to fix what it finds.")


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def __init__(self, bindings: Iterable[BindingType]) -> None:
        """`bindings`: the keys to list, in order (the app's BINDINGS)."""
        super().__init__()
        self.keys = list(Binding.make_bindings(bindings))

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(justify="right", style="bold")
        table.add_column()
        for binding in self.keys:
            table.add_row(self.app.get_key_display(binding),
                          binding.tooltip or binding.description)
        with VerticalScroll(id="help-box"):  # scrolls in a short terminal
            yield Static("TranscrevAI — keys", id="help-title")
            yield Static(table, id="help-keys")
            yield Static(DOCTOR, id="help-doctor")
            yield Static("Esc closes · ↑/↓ scroll", id="help-foot")
