"""Seconds as clock strings, one definition per style.

Exports (SRT, WebVTT, TXT), the command line and the console all print times; each style is
defined once here so that a file and a screen showing the same moment agree to the character.
"""

from __future__ import annotations


def timestamp(t: float, sep: str = ".") -> str:
    """`HH:MM:SS.mmm` rounded to the millisecond, never negative.

    `sep` is what precedes the milliseconds: "," for SRT, "." for WebVTT and TXT.
    """
    ms = max(0, round(t * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def clock(t: float) -> str:
    """`HH:MM:SS`, whole seconds, never negative: fixed width for the console's columns."""
    t = max(0, int(t))
    return f"{t // 3600:02d}:{t % 3600 // 60:02d}:{t % 60:02d}"


def minutes(t: float) -> str:
    """`M:SS` with as many minutes as it takes (`75:03`): a duration in a one-line label."""
    mins, secs = divmod(int(t), 60)
    return f"{mins}:{secs:02d}"


def short_clock(t: float) -> str:
    """`M:SS`, or `H:MM:SS` from an hour on: the command line's listings."""
    h, rest = divmod(int(t), 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else minutes(rest)
