"""One line: source, elapsed, lag behind live, language, model."""

from __future__ import annotations

import time
from pathlib import Path

from textual.widgets import Static

from engine.timefmt import clock, minutes
from tui.state import ConsoleState

METER = 8


def mic_badge(s: ConsoleState) -> str:
    if s.mic_state == "lost":
        return f"MIC LOST ({s.mic_detail})"
    if s.recording:
        return f"● REC {clock(s.recorded_s)}"
    return "mic: stopped"


def mic_origin(s: ConsoleState, width: int = 36) -> str:
    """Where the recording comes from ("vmic @ tcp:localhost:4713": a laptop's mic over
    `ssh -R`), cut to `width` so the status bar stays one line; "" when not recording."""
    if s.mic_state != "recording" or not s.recording or not s.mic_detail:
        return ""
    text = s.mic_detail
    return text if len(text) <= width else text[: width - 1] + "…"


def progress_bar(done: float, eta_s: float | None) -> str:
    """A fast replay's progress: bar, percent and time left (no colour needed to read it)."""
    filled = max(0, min(METER, int(done * METER)))
    eta = f"ETA {minutes(eta_s)}" if eta_s is not None and done < 1.0 else (
        "speakers…" if done >= 1.0 else "ETA …")
    return "█" * filled + "░" * (METER - filled) + f" {done * 100:.0f}% {eta}"


def level_meter(db: float) -> str:
    """-60..0 dBFS as a bar of block characters (no colour needed to read it)."""
    filled = max(0, min(METER, round((db + 60) / 60 * METER)))
    return "▮" * filled + "▯" * (METER - filled) + f" {max(db, -99):.0f} dB"


class StatusBar(Static):
    def __init__(self, state: ConsoleState, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.state = state
        self._text: str | None = None

    def sync(self, now: float | None = None) -> None:
        s = self.state
        now = time.monotonic() if now is None else now
        source = f"{s.source_kind}: {Path(s.source).name}" if s.source else "idle"
        parts = [source, f"elapsed {clock(s.elapsed_s(now))}", f"lag {s.lag_s:.1f} s",
                 f"lang {s.language}", s.model or "model loading…"]
        if s.source_kind == "file" and s.speed > 0:  # a replay through the live path
            parts[1] = (f"▶ {s.speed:g}× {minutes(s.position_s)} / "
                        f"{minutes(s.duration_s)}")
        elif s.source_kind == "file":
            parts[1] = progress_bar(*s.progress(now))
        if s.source_kind == "mic":
            parts[0] = f"{mic_badge(s)} {Path(s.source).name}"
            if mic_origin(s):  # where it records from says more than the WAV's name
                parts[0] = f"{mic_badge(s)} ◂ {mic_origin(s)}"
            parts.insert(1, level_meter(s.level_db) if s.recording else "")
            if s.overflows:
                parts.append(f"{s.overflows} overflows")
        if s.vocabulary:
            shown = ", ".join(s.vocabulary[:3]) + ("…" if len(s.vocabulary) > 3 else "")
            parts.append(f"vocab {len(s.vocabulary)}: {shown}")
        if s.query:
            pos = f"{s.match_pos + 1}/{len(s.matches)}" if s.matches else "0/0"
            parts.insert(0, f"/{s.query} {pos}")
        if s.paused:
            parts.insert(0, "PAUSED")
        if s.errors:
            parts.append(f"! {s.errors[-1]}")
        text = " │ ".join(parts)
        if text != self._text:  # one row whatever it says: no layout, just this line
            self._text = text
            self.update(text, layout=False)
