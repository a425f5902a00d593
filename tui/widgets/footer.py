"""Textual's key footer without its leak.

The footer is composed again whenever the screen's bindings change: each dialog opened or
closed (help, search, export...). Each key it yields binds to the footer's `compact` with
`data_bind`, which adds a watcher to the footer; Textual drops a footer's watchers of closed
widgets only when `compact` changes, which it never does here. So every dialog kept the keys
of the footer it replaced, with their rendered lines: measured, 254 dead keys and ~3,500
objects per `?` press, which made the console's RSS grow with each dialog, not with the
transcript. This footer forgets the watchers of keys that are gone before composing again.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Footer as TextualFooter


class Footer(TextualFooter):
    def compose(self) -> ComposeResult:
        watchers = getattr(self, "__watchers", None)  # where Textual's reactive keeps them
        if isinstance(watchers, dict):
            for name, bound in watchers.items():
                watchers[name] = [(node, callback) for node, callback in bound
                                  if node.is_attached and not getattr(node, "_closing", False)]
        yield from super().compose()
