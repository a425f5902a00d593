"""Scoring: word error rate, diarization error rate, reference turns (RTTM).

One small module used by the benchmarks, the tests and the model validation (which compares
a quantized whisper's words with float32's). It depends on nothing else of the engine but
the transcript types, so the model layer can use it without pulling in a benchmark.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.messages import SpeakerTurn


def normalize(text: str) -> list[str]:
    """Lowercase, punctuation and symbols to spaces; accents and digits kept."""
    chars = [" " if unicodedata.category(c)[0] in "PSZC" else c for c in text.lower()]
    return "".join(chars).split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def read_rttm(path: Path) -> list[SpeakerTurn]:
    """Reference speaker turns of one RTTM file."""
    turns = []
    for line in path.read_text().splitlines():
        f = line.split()
        if len(f) >= 8 and f[0] == "SPEAKER":
            start, dur = float(f[3]), float(f[4])
            turns.append(SpeakerTurn(start, start + dur, f[7]))
    return turns


def annotation(turns: Iterable[Any], uri: str = "") -> Any:
    """Turns (anything with start, end, speaker) as a pyannote Annotation, a track each."""
    from pyannote.core import Annotation
    from pyannote.core import Segment as PSegment

    ann = Annotation(uri=uri or None)
    for i, t in enumerate(turns):
        if t.end > t.start:
            ann[PSegment(t.start, t.end), i] = t.speaker
    return ann


def uem(duration_s: float) -> Any:
    """The whole clip as the scored region (pyannote would otherwise guess it and warn)."""
    from pyannote.core import Segment as PSegment
    from pyannote.core import Timeline

    return Timeline([PSegment(0.0, duration_s)])


def der_metric(collar_s: float = 0.25) -> Any:
    """A pooling DER metric; `collar_s` is the tolerance each side of a boundary
    (pyannote.metrics' `collar` is the total width, hence twice it)."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    return DiarizationErrorRate(collar=2 * collar_s, skip_overlap=False)
