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


def align(ref: list[str], hyp: list[str]) -> list[tuple[int | None, int | None]]:
    """A minimal-edit alignment: (ref index, hyp index) pairs; None on one side is a
    deletion (hyp None) or an insertion (ref None). Its cost equals edit_distance."""
    n, m = len(ref), len(hyp)
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        cost[i][0] = i
    for j in range(m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i][j] = min(cost[i - 1][j] + 1, cost[i][j - 1] + 1,
                             cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]))
    pairs: list[tuple[int | None, int | None]] = []
    i, j = n, m
    while i or j:
        if i and j and cost[i][j] == cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i and cost[i][j] == cost[i - 1][j] + 1:
            pairs.append((i - 1, None))
            i -= 1
        else:
            pairs.append((None, j - 1))
            j -= 1
    return pairs[::-1]


def error_counts(ref: list[str], hyp: list[str]) -> tuple[int, int, int]:
    """(substitutions, deletions, insertions) of a minimal alignment; they sum to
    edit_distance(ref, hyp)."""
    pairs = align(ref, hyp)
    subs = sum(1 for i, j in pairs if i is not None and j is not None and ref[i] != hyp[j])
    dels = sum(1 for _, j in pairs if j is None)
    ins = sum(1 for i, _ in pairs if i is None)
    return subs, dels, ins


def wder(ref: list[tuple[str, str]], hyp: list[tuple[str, str]]) -> float | None:
    """Word diarization error rate: of the reference words aligned to a hypothesis word
    (matched or substituted), the share whose speaker is wrong once hypothesis speakers are
    mapped one-to-one onto reference speakers in the way that makes the most right.
    `ref`/`hyp`: (normalized word, speaker) in order. None when nothing aligns."""
    from scipy.optimize import linear_sum_assignment

    pairs = [(ref[i][1], hyp[j][1]) for i, j in align([w for w, _ in ref], [w for w, _ in hyp])
             if i is not None and j is not None]
    if not pairs:
        return None
    rs = sorted({r for r, _ in pairs})
    hs = sorted({h for _, h in pairs})
    counts = [[sum(1 for p in pairs if p == (r, h)) for h in hs] for r in rs]
    rows, cols = linear_sum_assignment(counts, maximize=True)
    right = sum(counts[r][c] for r, c in zip(rows, cols, strict=True))
    return 1.0 - right / len(pairs)


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
