"""The key footer as one widget drawing one line.

Textual's footer is a container of one widget per key, composed again each time the
screen's bindings change: every dialog opened or closed. Those widgets were the console's
main garbage: measured, 858 dead widgets with their styles, caches and message queues per
half minute of `?` presses, all in reference cycles, whose collection paused the console for
100-180 ms at a time (the slowest key presses). Earlier it also leaked its keys' watchers.
This footer keeps no child widgets: a change of bindings only redraws the line. A click on
a key presses that key, as in Textual's.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import Widget


class Footer(Widget, can_focus=False):
    COMPONENT_CLASSES = {"footer--key", "footer--description"}
    DEFAULT_CSS = """
    Footer {
        dock: bottom;
        height: 1;
        background: $footer-background;
        color: $footer-foreground;
        .footer--key {
            color: $footer-key-foreground;
            background: $footer-key-background;
            text-style: bold;
        }
        .footer--description {
            color: $footer-description-foreground;
            background: $footer-description-background;
        }
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._spans: list[tuple[int, int, str, bool]] = []  # (x0, x1, key, enabled)

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)

    def _bindings_changed(self, screen: Screen[object]) -> None:
        if screen is self.screen:
            self.refresh()

    def _shown(self) -> list[tuple[Binding, bool]]:
        """The screen's active bindings that show, one per action, in binding order."""
        seen: set[str] = set()
        out: list[tuple[Binding, bool]] = []
        for _node, binding, enabled, _tooltip in self.screen.active_bindings.values():
            if binding.show and binding.action not in seen:
                seen.add(binding.action)
                out.append((binding, enabled))
        return out

    def render(self) -> Text:
        key_style = self.get_component_rich_style("footer--key")
        desc_style = self.get_component_rich_style("footer--description")
        line = Text(no_wrap=True, overflow="crop")
        spans: list[tuple[int, int, str, bool]] = []
        for binding, enabled in self._shown():
            start = len(line)
            dim = Style() if enabled else Style(dim=True)
            line.append(f" {self.app.get_key_display(binding)} ", key_style + dim)
            line.append(f"{binding.description} ", desc_style + dim)
            spans.append((start, len(line), binding.key, enabled))
        palette = self._palette()
        if palette is not None:  # the command palette's key, at the right end as in Textual's
            key = f" {self.app.get_key_display(palette)} "
            width = len(key) + len(palette.description) + 1
            room = self.size.width - width
            if room > len(line):
                line.append(" " * (room - len(line)))
                spans.append((room, room + width, palette.key, True))
                line.append(key, key_style)
                line.append(f"{palette.description} ", desc_style)
        self._spans = spans
        return line

    def _palette(self) -> Binding | None:
        if not self.app.ENABLE_COMMAND_PALETTE:
            return None
        found = self.screen.active_bindings.get(self.app.COMMAND_PALETTE_BINDING)
        return found[1] if found is not None else None

    def on_click(self, event: events.Click) -> None:
        for x0, x1, key, enabled in self._spans:
            if x0 <= event.x < x1:
                if enabled:
                    self.app.simulate_key(key.split(",")[0])
                else:
                    self.app.bell()
                return
