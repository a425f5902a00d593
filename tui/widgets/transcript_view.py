"""The conversation: committed segments grouped by speaker turn.

Line-based (RichLog), so hours of text cost no more per update than minutes: new segments
are appended, a live speaker update redraws from the first segment it relabelled, and the
whole log is redrawn only when names or the search change.
"""

from __future__ import annotations

from bisect import bisect_left

from rich.table import Table
from rich.text import Text
from textual import events
from textual.geometry import Size
from textual.widgets import RichLog

from engine.messages import Segment
from engine.timefmt import clock
from tui.state import ConsoleState
from tui.widgets.speakers import speaker_style


def render_segment(state: ConsoleState, seg: Segment, first_of_turn: bool,
                   only: str | None = None, hit: int = 0, plain: bool = False) -> Table:
    """One segment's line; `hit` 1 marks a search match, 2 the current one; `plain` (no
    colour): speakers differ by name and marker only, text keeps full contrast. The text
    sits in a column of its own, so its wrapped lines hang under it, not under the label."""
    speakers = state.speakers
    label = seg.speaker or "UNKNOWN"
    colour, marker = speaker_style(speakers.index(label) if label in speakers else -1)
    if plain:
        colour = ""
    line = Text()
    if first_of_turn:
        line.append(f"{clock(seg.start)} ", style="dim")
        if only is None:
            line.append(f"{marker} {state.name(label)}: ", style=f"bold {colour}".strip())
    else:
        line.append(" " * 9, style="dim")
        if only is None:
            line.append("  ", style=colour)
    style = colour if only is None else ""
    if hit:
        style = f"{style} reverse" if hit == 2 else f"{style} underline"
    return hanging(line, Text(seg.text, style=style.strip()))


def hanging(prefix: Text, body: Text) -> Table:
    """`prefix` then `body`, the body's wrapped lines indented to where it starts (a prefix
    wider than half the width wraps too, so narrow panes still show the text)."""
    grid = Table.grid(padding=0)
    grid.add_column(no_wrap=False, max_width=max(1, prefix.cell_len))
    grid.add_column(ratio=1, overflow="fold")
    grid.add_row(prefix, body)
    return grid


_NOBODY = object()  # "no previous line": differs even from an unlabelled speaker (None)


class TranscriptView(RichLog):
    """All speakers, or (with `speaker`) one speaker's lines only."""

    def __init__(self, state: ConsoleState, speaker: str | None = None,
                 **kwargs: object) -> None:
        super().__init__(wrap=True, markup=False, auto_scroll=True, min_width=20,
                         **kwargs)  # type: ignore[arg-type]
        self.state = state
        self.speaker = speaker
        self._version = -1
        self._shown = 0
        self._line_of: dict[int, int] = {}  # segment index -> first line in the log
        self._order: list[int] = []  # segment indices shown, ascending (for bisect)
        self._search: tuple[str, int | None] = ("", None)
        self._width = 0  # the width lines were last wrapped at
        self._stale = False  # wrapped at another width: redraw everything

    def sync(self) -> None:
        """Bring the log up to date with the state: append new segments, redraw from the
        first segment whose label changed (live speaker updates touch only the last few), and
        everything only when names or the search change."""
        if self.state.version == self._version and not self._stale:
            return
        segs = self.state.segments
        search = (self.state.query, self.state.current_match)
        start = self.state.changed_from(self._version)
        if start is None or self._stale or self._names_changed() or \
                search != self._search or self._shown > len(segs):
            self._stale = False
            self.clear()
            self._shown = 0
            self._line_of = {}
            self._order = []
        elif start < self._shown:
            k = bisect_left(self._order, start)
            cut = self._line_of[self._order[k]] if k < len(self._order) else len(self.lines)
            for i in self._order[k:]:
                del self._line_of[i]
            del self._order[k:]
            self._truncate(cut)
            self._shown = start
        hits = set(self.state.matches)
        current = self.state.current_match
        prev: object = segs[self._shown - 1].speaker if self._shown else _NOBODY
        for i in range(self._shown, len(segs)):
            seg = segs[i]
            if self.speaker is None or seg.speaker == self.speaker:
                self._line_of[i] = len(self.lines)
                self._order.append(i)
                hit = 2 if i == current else 1 if i in hits else 0
                self.write(render_segment(self.state, seg, seg.speaker != prev, self.speaker,
                                          hit, plain=self.app.no_color))
            prev = seg.speaker
        self._shown = len(segs)
        self._version = self.state.version
        self._names = dict(self.state.names)
        self._search = search
        self.auto_scroll = not self.state.query  # stay on the match while searching
        if current is not None and current in self._line_of:
            self.scroll_to(y=max(0, self._line_of[current] - 2), animate=False)

    def on_resize(self, event: events.Resize) -> None:
        """Lines are wrapped when written: a new width redraws them all, so nothing is cut
        off when the window narrows and lines fill it again when it widens."""
        super().on_resize(event)
        width = event.size.width
        if width and width != self._width:
            first = self._width == 0
            self._width = width
            if not first:
                self._stale = True
                self.sync()

    def _truncate(self, n_lines: int) -> None:
        """Drop the log's lines from `n_lines` on (RichLog can only append or clear)."""
        del self.lines[n_lines:]
        self._line_cache.clear()
        self.virtual_size = Size(self._widest_line_width, len(self.lines))
        self.refresh()

    def _names_changed(self) -> bool:
        return getattr(self, "_names", {}) != self.state.names
