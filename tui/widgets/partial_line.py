"""The phrase being spoken, before it commits: shown apart from committed text and styled
differently (dim italic, a leading "…"), replaced by each new partial, gone once it commits."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tui.state import ConsoleState


class PartialLine(Static):
    def __init__(self, state: ConsoleState, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.state = state
        self._shown: str | None = None

    def sync(self) -> None:
        text = self.state.partial
        if text == self._shown:
            return
        self._shown = text
        self.display = bool(text)
        self.update(Text(f"… {text}", style="italic dim") if text else "")
