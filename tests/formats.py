"""Strict parsers for the subtitle formats, written for the tests (they reject sloppy output)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SRT_TIME = r"(\d{2}):(\d{2}):(\d{2}),(\d{3})"
_VTT_TIME = r"(\d{2}):(\d{2}):(\d{2})\.(\d{3})"


@dataclass
class Cue:
    start: float
    end: float
    lines: list[str]


def _secs(h: str, m: str, s: str, ms: str) -> float:
    assert int(m) < 60 and int(s) < 60
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def _check(cues: list[Cue]) -> list[Cue]:
    prev_start = -1.0
    for c in cues:
        assert c.end >= c.start, c
        assert c.start >= prev_start, "cues out of order"
        prev_start = c.start
        assert 1 <= len(c.lines) <= 2, c
        assert all(line.strip() for line in c.lines), c
    return cues


def parse_srt(text: str) -> list[Cue]:
    assert text.strip(), "empty SRT"
    cues = []
    blocks = text.strip("\n").split("\n\n")
    for i, block in enumerate(blocks, 1):
        lines = block.split("\n")
        assert lines[0] == str(i), f"bad index in block {i}: {lines[0]!r}"
        m = re.fullmatch(f"{_SRT_TIME} --> {_SRT_TIME}", lines[1])
        assert m, f"bad timing line {lines[1]!r}"
        g = m.groups()
        cues.append(Cue(_secs(*g[:4]), _secs(*g[4:]), lines[2:]))
    return _check(cues)


def parse_vtt(text: str) -> list[Cue]:
    head, _, body = text.partition("\n\n")
    assert head.strip() == "WEBVTT", "missing WEBVTT header"
    cues = []
    for block in body.strip("\n").split("\n\n"):
        lines = block.split("\n")
        m = re.fullmatch(f"{_VTT_TIME} --> {_VTT_TIME}", lines[0])
        assert m, f"bad timing line {lines[0]!r}"
        assert "-->" not in "".join(lines[1:])
        g = m.groups()
        cues.append(Cue(_secs(*g[:4]), _secs(*g[4:]), lines[1:]))
    return _check(cues)
