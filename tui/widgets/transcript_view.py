"""The conversation: committed segments grouped by speaker turn.

Virtual (Textual's line API): the view keeps, per segment shown, only the line it starts
on; lines are wrapped when drawn, and those of the last hundred-odd segments drawn are kept
in a small LRU cache. Hours of transcript cost a few integers per segment, not a stored line
each, and an update lays out only what changed: new segments are appended, a live speaker
update (or a seek back) redraws from the first segment it touched, and the whole transcript
is laid out again, by counting rows rather than drawing them, only when the width, the
names or the search change.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict

from rich.console import Console
from rich.segment import Segment as RichSegment
from rich.table import Table
from rich.text import Text
from textual import events
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from engine.messages import Segment
from engine.timefmt import clock
from tui.state import ConsoleState
from tui.widgets.speakers import speaker_style

MIN_WIDTH = 20  # narrower panes are drawn at this width and cropped
CACHED_SEGMENTS = 128  # rendered segments kept per view (a 60-row screen shows fewer)


def segment_parts(state: ConsoleState, seg: Segment, first_of_turn: bool,
                  only: str | None = None, hit: int = 0,
                  plain: bool = False) -> tuple[Text, Text]:
    """A segment's prefix (time and speaker, or the indent under them) and its text."""
    speakers = state.speakers
    label = seg.speaker or "UNKNOWN"
    colour, marker = speaker_style(speakers.index(label) if label in speakers else -1)
    if plain:
        colour = ""
    line = Text()
    if first_of_turn:
        line.append(f"{clock(seg.start)} ", style="dim")
        if only is None:
            line.append(f"{marker} {state.shown_name(label)}: ",
                        style=f"bold {colour}".strip())
    else:
        line.append(" " * 9, style="dim")
        if only is None:
            line.append("  ", style=colour)
    style = colour if only is None else ""
    if hit:
        style = f"{style} reverse" if hit == 2 else f"{style} underline"
    return line, Text(seg.text, style=style.strip())


def render_segment(state: ConsoleState, seg: Segment, first_of_turn: bool,
                   only: str | None = None, hit: int = 0, plain: bool = False) -> Table:
    """One segment's line; `hit` 1 marks a search match, 2 the current one; `plain` (no
    colour): speakers differ by name and marker only, text keeps full contrast. The text
    sits in a column of its own, so its wrapped lines hang under it, not under the label."""
    return hanging(*segment_parts(state, seg, first_of_turn, only, hit, plain))


def hanging(prefix: Text, body: Text) -> Table:
    """`prefix` then `body`, the body's wrapped lines indented to where it starts (a prefix
    wider than half the width wraps too, so narrow panes still show the text)."""
    grid = Table.grid(padding=0)
    grid.add_column(no_wrap=False, max_width=max(1, prefix.cell_len))
    grid.add_column(ratio=1, overflow="fold")
    grid.add_row(prefix, body)
    return grid


def hanging_rows(console: Console, prefix: Text, body: Text, width: int) -> int | None:
    """How many rows `hanging(prefix, body)` takes at `width`, without laying out the
    table (laying out hours of transcript at a new width counts rows only): one when it
    fits, else the body wrapped beside a prefix that keeps its width (the table gives the
    body what the prefix leaves). None where the table would wrap the prefix too."""
    room = width - prefix.cell_len
    if "\n" in body.plain or room < prefix.cell_len:
        return None
    if body.cell_len <= room:
        return 1
    return len(body.wrap(console, room, overflow="fold"))


class TranscriptView(ScrollView, can_focus=True):
    """All speakers, or (with `speaker`) one speaker's lines only."""

    DEFAULT_CSS = """
    TranscriptView {
        background: $surface;
        color: $foreground;
        overflow-y: scroll;
        overflow-x: hidden;
        &:focus {
            background-tint: $foreground 5%;
        }
    }
    """

    def __init__(self, state: ConsoleState, speaker: str | None = None,
                 **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.state = state
        self.speaker = speaker
        self._version = -1
        self._shown = 0  # segments of the state looked at (shown here or not)
        self._order: list[int] = []  # segment indices shown, ascending
        self._tops: list[int] = []  # the first line of each, in the same order
        self._height = 0  # lines in all
        self._cache: OrderedDict[int, list[Strip]] = OrderedDict()  # segment -> its lines
        self._names: dict[str, str] = {}
        self._search: tuple[str, int | None] = ("", None)
        self._hits: set[int] = set()
        self._width = 0  # the width lines are wrapped at (0: not laid out yet)
        self._stale = False  # the width changed: lay everything out again
        self._end_y = 0  # the last line scrolled to when at the end, as last laid out

    # ------------------------------------------------------------ updates
    def sync(self) -> None:
        """Bring the view up to date with the state: append new segments, redraw from the
        first segment whose label changed (live speaker updates touch only the last few; a
        seek back removes the end), and everything only when the width, names or the search
        change."""
        if self.state.version == self._version and not self._stale:
            return
        width = self._content_width()
        if not width:  # not laid out yet: the first resize draws
            self._stale = True
            return
        segs = self.state.segments
        search = (self.state.query, self.state.current_match)
        start = self.state.changed_from(self._version)
        moved = search != self._search  # a new search or match: show it
        # follow the end when it was in view, and back to it when a search is cleared
        at_end = self._at_end() or (moved and not self.state.query)
        keep = None  # (segment, line within it) at the top, to stay on across a redraw
        if start is None or self._stale or width != self._width or \
                self._names != self._names_shown() or moved:
            if not at_end and self._height:
                keep = self._at(int(self.scroll_y))
            self.clear()
        elif start < self._shown or self._shown > len(segs):
            self._truncate(min(start, len(segs)))
        elif self._shown == len(segs):  # something beside the segments changed (a partial)
            self._version = self.state.version
            return
        self._stale = False
        self._width = width
        self._hits = set(self.state.matches)
        self._search = search
        self._names = self._names_shown()
        for i in range(self._shown, len(segs)):
            if self.speaker is None or segs[i].speaker == self.speaker:
                self._order.append(i)
                self._tops.append(self._height)
                self._height += self._rows_of(i)
        self._shown = len(segs)
        self._version = self.state.version
        self.virtual_size = Size(width, self._height)
        self._end_y = self.max_scroll_y
        self.refresh()
        current = self.state.current_match
        if moved and current is not None and (top := self._top_of(current)) is not None:
            self.scroll_to(y=max(0, top - 2), animate=False)  # to the match
        elif keep is not None and (top := self._top_of(keep[0])) is not None:
            self.scroll_to(y=top + keep[1], animate=False)  # where the user was reading
        elif at_end and not self.state.query:
            self.scroll_end(animate=False, immediate=False, x_axis=False)

    def clear(self) -> TranscriptView:
        """Forget everything shown (the next sync lays the transcript out again)."""
        self._shown = 0
        self._order, self._tops, self._height = [], [], 0
        self._cache.clear()
        self.virtual_size = Size(self._width, 0)
        self.refresh()
        return self

    def _truncate(self, first: int) -> None:
        """Drop segments from index `first` on (they changed or are gone)."""
        k = bisect_right(self._order, first - 1)
        if k < len(self._order):
            self._height = self._tops[k]
        del self._order[k:]
        del self._tops[k:]
        for i in [i for i in self._cache if i >= first]:
            del self._cache[i]
        self._shown = first

    def on_resize(self, event: events.Resize) -> None:
        """Lines are wrapped at the view's width: a new width lays them out again, so
        nothing is cut off when the window narrows and lines fill it again when it widens
        (the segment at the top stays there, or the end in view)."""
        if self._stale or self._content_width() != self._width:  # (or shown again)
            self._stale = True
            self.sync()
        elif self._at_end() and not self.state.query:  # taller or shorter: keep the end
            self.scroll_end(animate=False, immediate=False, x_axis=False)
        self._end_y = self.max_scroll_y

    def _names_shown(self) -> dict[str, str]:
        """Speakers shown under another name than their label (the user's, or a voice
        profile's): a change relabels lines anywhere in the transcript."""
        return {label: name for label in self.state.speakers
                if (name := self.state.name(label)) != label}

    def _at_end(self) -> bool:
        """Scrolled to the end as last laid out (then the view follows new lines): the
        size may have changed since, moving the end, or a scroll there may be pending."""
        return self.scroll_y >= min(self._end_y, self.max_scroll_y)

    # ------------------------------------------------------------ drawing
    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        strip = self._line(scroll_y + y)
        if strip is None:
            line = Strip.blank(width, self.rich_style)
        else:
            line = strip.crop_extend(scroll_x, scroll_x + width, self.rich_style)
        return line.apply_style(self.rich_style)

    @property
    def lines(self) -> list[Strip]:
        """Every line of the transcript as shown, rendered now (tests and checks: a long
        transcript's lines are not kept anywhere)."""
        out: list[Strip] = []
        for i in self._order:
            out.extend(self._lines_of(i))
        return out

    @property
    def cached_lines(self) -> int:
        """Rendered lines held in memory (bounded however long the transcript grows)."""
        return sum(len(strips) for strips in self._cache.values())

    def _content_width(self) -> int:
        width = self.scrollable_content_region.width
        return max(width, MIN_WIDTH) if width > 0 else 0

    def _at(self, line: int) -> tuple[int, int] | None:
        """(segment index, line within it) of a line of the view."""
        k = bisect_right(self._tops, line) - 1
        if k < 0 or line >= self._height:
            return None
        return self._order[k], line - self._tops[k]

    def _top_of(self, index: int) -> int | None:
        """The first line of segment `index` (None: not shown here)."""
        k = bisect_right(self._order, index) - 1
        if k < 0 or self._order[k] != index:
            return None
        return self._tops[k]

    def _line(self, line: int) -> Strip | None:
        at = self._at(line)
        if at is None:
            return None
        index, row = at
        strips = self._cache.get(index)
        if strips is None:
            strips = self._lines_of(index)
            self._remember(index, strips)
        else:
            self._cache.move_to_end(index)
        return strips[row] if row < len(strips) else None

    def _remember(self, index: int, strips: list[Strip]) -> None:
        self._cache[index] = strips
        self._cache.move_to_end(index)
        while len(self._cache) > CACHED_SEGMENTS:
            self._cache.popitem(last=False)

    def _parts(self, index: int) -> tuple[Text, Text] | None:
        """Segment `index`'s prefix and text as shown here (its label on a new turn only)."""
        segs = self.state.segments
        if index >= len(segs):  # gone from the state, not yet synced
            return None
        seg = segs[index]
        first = index == 0 or segs[index - 1].speaker != seg.speaker
        hit = 2 if index == self._search[1] else 1 if index in self._hits else 0
        return segment_parts(self.state, seg, first, self.speaker, hit,
                             plain=self.app.no_color)

    def _rows_of(self, index: int) -> int:
        """Rows segment `index` takes at the view's width; counted, not drawn, where that
        gives the same as drawing (tests/test_console_view.py checks it does)."""
        parts = self._parts(index)
        rows = None if parts is None else hanging_rows(self.app.console, *parts,
                                                       self._width or MIN_WIDTH)
        if rows is not None:
            return rows
        strips = self._lines_of(index)
        self._remember(index, strips)
        return len(strips)

    def _lines_of(self, index: int) -> list[Strip]:
        """Segment `index` wrapped at the view's width."""
        width = self._width or MIN_WIDTH
        parts = self._parts(index)
        if parts is None:
            return [Strip.blank(width)]
        console = self.app.console
        lines = list(RichSegment.split_lines(
            console.render(hanging(*parts), console.options.update_width(width))))
        if not lines:
            return [Strip.blank(width)]
        strips = Strip.from_lines(lines)
        for strip in strips:
            strip.adjust_cell_length(width)
        return strips
