"""A plain-text first frame, drawn before Textual is imported.

Importing Textual alone takes ~0.4 s on this machine, so the console's own first frame lands
at ~0.65 s. Over SSH a blank terminal for that long looks hung; this frame (no colours, no
Textual, a few escape codes) shows each worker's loading state within ~0.1 s of launch and is
replaced by the console as soon as it draws.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from engine.workers.spec import ROLES  # light: dataclasses only (~25 ms), no Textual, no models


def draw_splash(source: str = "", out: TextIO | None = None) -> bool:
    """Draw the frame on the alternate screen if `out` is a terminal; returns whether it did."""
    out = out or sys.stdout
    if not out.isatty() or os.environ.get("TERM") == "dumb":
        return False
    try:
        cols = os.get_terminal_size(out.fileno()).columns or 80  # 0: size not set yet
    except OSError:
        cols = 80
    lines = ["TranscrevAI — starting" + (f": {source}" if source else ""), "",
             f"{'worker':<15}{'state':<12}model"]
    lines += [f"{role:<15}{'starting':<12}loading…" for role in ROLES]
    text = "".join(f"\x1b[{i + 1};1H{line[:cols]}" for i, line in enumerate(lines))
    # alternate screen, cursor hidden: Textual switches to the same screen and redraws it
    out.write("\x1b[?1049h\x1b[?25l\x1b[2J" + text)
    out.flush()
    return True
