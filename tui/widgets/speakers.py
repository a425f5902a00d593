"""Speaker colours and markers: distinct with colour, and still distinct without it."""

from __future__ import annotations

# ANSI base colours: shown in 16- and 256-colour terminals alike (no true colour needed)
COLOURS = ("cyan", "magenta", "yellow", "green", "blue", "red", "bright_cyan",
           "bright_magenta")
MARKERS = ("●", "■", "▲", "◆", "○", "□", "△", "◇")


def speaker_style(index: int) -> tuple[str, str]:
    """(colour, marker) for the index-th speaker in order of appearance."""
    if index < 0:
        return "white", "?"
    return COLOURS[index % len(COLOURS)], MARKERS[index % len(MARKERS)]

