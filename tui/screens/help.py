"""`?`: every key, in one place.

The list is built from the app's bindings (key as the footer shows it, and the binding's
tooltip, else its description), so it cannot drift from what the keys actually do.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

DOCTOR = ("Microphone, sound server, models or terminal not working? In a shell, run\n"
          "  transcrevai doctor\n"
          "It checks each of them and says how to fix what it finds.")


class KeyList:
    """Keys right-aligned in bold, their text wrapped beside them: what a two-column
    `Table.grid(padding=(0, 2))` draws, segment for segment, at a fraction of its cost. The
    first `?` of a session spent most of its 60-80 ms in Rich's table layout, measured and
    drawn again in each of Textual's layout passes; this wraps once per width."""

    GAP = 2

    def __init__(self, rows: Iterable[tuple[str, str]]) -> None:
        self.rows = [(key, Text(text)) for key, text in rows]
        self.key_w = max((cell_len(k) for k, _ in self.rows), default=0)
        self.text_w = max((t.cell_len for _, t in self.rows), default=0)
        self.word_w = max((cell_len(w) for _, t in self.rows for w in t.plain.split()),
                          default=0)
        self.style = Style(bold=True)
        self._drawn: dict[int, list[list[Segment]]] = {}

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        lead = self.key_w + self.GAP
        return Measurement(min(lead + self.word_w, options.max_width),
                           min(lead + self.text_w, options.max_width))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        lines = self._drawn.get(width)
        if lines is None:
            lead = self.key_w + self.GAP
            text_w = max(1, min(width, lead + self.text_w) - lead)
            lines = []
            for key, text in self.rows:
                for i, line in enumerate(text.wrap(console, text_w)):
                    line.set_length(text_w)
                    head = ([Segment(" " * (self.key_w - cell_len(key)) + key, self.style),
                             Segment(" " * self.GAP, self.style)] if i == 0
                            else [Segment(" " * lead, self.style)])
                    lines.append([*head, *line.render(console), Segment.line()])
            self._drawn[width] = lines
        for segments in lines:
            yield from segments


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def __init__(self, bindings: Iterable[BindingType]) -> None:
        """`bindings`: the keys to list, in order (the app's BINDINGS)."""
        super().__init__()
        self.keys = list(Binding.make_bindings(bindings))

    def compose(self) -> ComposeResult:
        keys = KeyList((self.app.get_key_display(binding),
                        binding.tooltip or binding.description) for binding in self.keys)
        with VerticalScroll(id="help-box"):  # scrolls in a short terminal
            yield Static("TranscrevAI — keys", id="help-title")
            yield Static(keys, id="help-keys")
            yield Static(DOCTOR, id="help-doctor")
            yield Static("Esc closes · ↑/↓ scroll", id="help-foot")
