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
        """A new partial arrives with most engine batches while a phrase is spoken: the
        screen is laid out again only when the line shows, hides or needs another number of
        rows than it has, else just this line is redrawn."""
        text = self.state.partial
        if text == self._shown:
            return
        self._shown = text
        line = Text(f"… {text}", style="italic dim") if text else Text()
        self.display = bool(text)
        self.update(line, layout=self._height_for(line) != self.size.height)

    def _height_for(self, line: Text) -> int:
        """The height `line` lays out to (-1: not known until laid out)."""
        width = self.content_size.width
        if not line:
            return 0
        if width <= 0:
            return -1
        height = len(line.wrap(self.app.console, width)) + self.styles.gutter.height
        limit = self.styles.max_height
        if limit is not None and limit.is_cells:
            height = min(height, int(limit.value))
        return height
