"""Speaker colours and markers: distinct with colour, and still distinct without it."""

from __future__ import annotations

# Fixed colours, each a different colour again when the terminal has only 256 or 16: ANSI
# names were converted through Textual's theme first, where red, magenta and bright magenta
# all became #f4005f and cyan and bright cyan one colour too, so speakers 2, 6 and 8 looked
# alike (tests/test_console_sizes.py checks the 16- and 256-colour downgrades)
COLOURS = ("#00d7ff", "#ff5fd7", "#ffd700", "#5fd75f", "#5f87ff", "#ff5f5f", "#d75f00",
           "#00af87")
MARKERS = ("●", "■", "▲", "◆", "○", "□", "△", "◇")


def speaker_style(index: int) -> tuple[str, str]:
    """(colour, marker) for the index-th speaker in order of appearance."""
    if index < 0:
        return "white", "?"
    return COLOURS[index % len(COLOURS)], MARKERS[index % len(MARKERS)]

