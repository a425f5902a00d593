"""A finished or growing transcript: segments with speakers, and the merge of the two streams.

Transcription and diarization run independently; speakers are attached afterwards by time
overlap, word by word where words have times, and a segment that spans a change of speaker
is split there (a sentence read across two people is two lines, not one mislabelled line).
"""

from __future__ import annotations

import unicodedata
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from engine.messages import Segment, SpeakerTurn, Word

UNKNOWN_SPEAKER = "UNKNOWN"
NEAREST_S = 1.0  # a word outside every turn takes the nearest turn within this distance
_MIN_RUN_S = 0.4  # a one-word speaker run shorter than this is folded into its neighbour


def fold(text: str) -> str:
    """Case- and accent-insensitive form for searching Portuguese ("voce" finds "você")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def speaker_order(segments: Sequence[Segment]) -> list[str]:
    """Speaker labels in order of first appearance."""
    seen: dict[str, None] = {}
    for s in segments:
        seen.setdefault(s.speaker or UNKNOWN_SPEAKER, None)
    return list(seen)


@dataclass
class Transcript:
    source: str
    duration_s: float = 0.0
    language: str = ""
    model: str = ""
    segments: list[Segment] = field(default_factory=list)
    turns: list[SpeakerTurn] = field(default_factory=list)
    diarized: bool = False
    names: dict[str, str] = field(default_factory=dict)  # speaker label -> display name
    warnings: list[str] = field(default_factory=list)

    @property
    def speakers(self) -> list[str]:
        return speaker_order(self.segments)

    def name(self, label: str | None) -> str:
        label = label or UNKNOWN_SPEAKER
        return self.names.get(label, label)


class TurnIndex:
    """Speaker turns sorted by start, for overlap queries; grows as live turns arrive."""

    def __init__(self, turns: Sequence[SpeakerTurn] = ()) -> None:
        self.turns: list[SpeakerTurn] = []
        self.starts: list[float] = []
        self.max_len = 0.0
        self.add(turns)

    def add(self, turns: Sequence[SpeakerTurn]) -> None:
        """Insert turns in order (live turns arrive in time order: appends, O(1) each)."""
        for t in sorted(turns, key=lambda t: t.start):
            i = bisect_right(self.starts, t.start)
            self.starts.insert(i, t.start)
            self.turns.insert(i, t)
            self.max_len = max(self.max_len, t.end - t.start)

    def __len__(self) -> int:
        return len(self.turns)

    def speaker(self, start: float, end: float) -> str | None:
        """The speaker overlapping [start, end] most, else the nearest within NEAREST_S."""
        overlap: dict[str, float] = {}
        lo = bisect_right(self.starts, start - self.max_len - NEAREST_S)
        hi = bisect_right(self.starts, end + NEAREST_S)
        best_gap, nearest = NEAREST_S, None
        for t in self.turns[lo:hi]:
            ov = min(end, t.end) - max(start, t.start)
            if ov > 0:
                overlap[t.speaker] = overlap.get(t.speaker, 0.0) + ov
            else:
                gap = max(t.start - end, start - t.end)
                if gap < best_gap:
                    best_gap, nearest = gap, t.speaker
        if overlap:
            return max(overlap, key=lambda k: overlap[k])
        return nearest


def _smooth(words: list[Word]) -> list[Word]:
    """Fold isolated short one-word runs into the surrounding speaker."""
    out = list(words)
    for i, w in enumerate(out):
        prev_spk = out[i - 1].speaker if i > 0 else None
        next_spk = out[i + 1].speaker if i + 1 < len(out) else None
        if w.speaker in (prev_spk, next_spk) or w.end - w.start >= _MIN_RUN_S:
            continue
        target = prev_spk if prev_spk is not None else next_spk
        if target is not None:
            out[i] = replace(w, speaker=target)
    return out


def assign_speakers(segments: Sequence[Segment], turns: Sequence[SpeakerTurn]) -> list[Segment]:
    """Label segments (and their words) with speakers; split segments at speaker changes."""
    return label_with(segments, TurnIndex(turns))


def label_with(segments: Sequence[Segment], index: TurnIndex) -> list[Segment]:
    """assign_speakers with a prepared index (the console relabels only the recent end)."""
    out: list[Segment] = []
    for seg in segments:
        if not seg.words:
            out.append(replace(seg, speaker=index.speaker(seg.start, seg.end) or UNKNOWN_SPEAKER))
            continue
        words = _smooth([replace(w, speaker=index.speaker(w.start, w.end) or UNKNOWN_SPEAKER)
                         for w in seg.words])
        runs: list[list[Word]] = []
        for w in words:
            if runs and runs[-1][-1].speaker == w.speaker:
                runs[-1].append(w)
            else:
                runs.append([w])
        if len(runs) == 1:
            out.append(replace(seg, speaker=runs[0][0].speaker, words=tuple(words)))
            continue
        for i, run in enumerate(runs):
            start = seg.start if i == 0 else run[0].start
            end = seg.end if i == len(runs) - 1 else run[-1].end
            out.append(replace(seg, start=start, end=max(end, start), words=tuple(run),
                               text=" ".join(w.text for w in run), speaker=run[0].speaker))
    return out


def without_speakers(segments: Sequence[Segment]) -> list[Segment]:
    return [replace(s, speaker=UNKNOWN_SPEAKER) for s in segments]
