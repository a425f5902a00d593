"""A finished or growing transcript: segments with speakers, and the merge of the two streams.

Transcription and diarization run independently; speakers are attached afterwards by time
overlap, word by word where words have times, and a segment that spans a change of speaker
is split there (a sentence read across two people is two lines, not one mislabelled line).

`TranscriptBuilder` is the one place where engine events become a transcript: the runner
(files and live streams) and the console fold segments and turns through it.
"""

from __future__ import annotations

import unicodedata
from bisect import bisect_right
from collections import deque
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


def gap_segment(start: float, end: float, language: str = "") -> Segment:
    """Speech with no words: marked where it was, so a reader knows text is missing."""
    return Segment(round(start, 3), round(end, 3), f"[inaudible {end - start:.1f} s]",
                   language=language, gap=True)


def uncovered(regions: list[tuple[float, float]], spans: list[tuple[float, float]],
              reach: float, min_s: float) -> list[tuple[float, float]]:
    """Parts of speech `regions` at least `min_s` long that no word span (widened by `reach`
    on each side) touches; spans sorted by start."""
    holes = []
    for a, b in regions:
        cur = a
        for ws, we in spans:
            if we + reach <= cur or ws - reach >= b:
                continue
            if ws - reach > cur:
                holes.append((cur, ws - reach))
            cur = max(cur, we + reach)
        if b > cur:
            holes.append((cur, b))
    return [(round(a, 3), round(b, 3)) for a, b in holes if b - a >= min_s]


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
    # label -> match score, for speakers named after a voice profile (never the voice itself)
    recognised: dict[str, float] = field(default_factory=dict)

    def recognise(self, matches: Sequence[tuple[str, str, float]]) -> None:
        """Name speakers after the voice profiles they match, unless the user named them;
        a later (final) set of matches replaces an earlier guess."""
        for label in self.recognised:
            self.names.pop(label, None)
        self.recognised = {}
        for label, name, score in matches:
            if label not in self.names:
                self.names[label] = name
                self.recognised[label] = score

    @property
    def speakers(self) -> list[str]:
        return speaker_order(self.segments)

    @property
    def gaps(self) -> list[Segment]:
        """Stretches of speech that gave no words (their speaker from the turns)."""
        return [s for s in self.segments if s.gap]

    @property
    def spoken(self) -> list[Segment]:
        """The segments with words (what scoring and search read)."""
        return [s for s in self.segments if not s.gap]

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
    return TranscriptBuilder(segments, turns).segments


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


def trimmed_turns(turns: Sequence[SpeakerTurn], t: float) -> list[SpeakerTurn]:
    """Turns as they were before `t`: later ones dropped, one across it cut there."""
    return [tt if tt.end <= t else SpeakerTurn(tt.start, round(t, 3), tt.speaker)
            for tt in turns if tt.start < t]


class TranscriptBuilder:
    """Committed segments and speaker turns folded into a labelled transcript, incrementally.

    Each segment is labelled on its own, so adding segments labels only the new ones, and
    live turns (which arrive for the recent end) relabel only the segments they can reach:
    the cost per update stays flat however long a session grows. A whole new set of turns
    (a file's diarization, the offline pass at the end of a live session) relabels all.
    Until turns are set, segments keep the speaker they came with (None: not diarized).
    """

    CHANGES_KEPT = 256

    def __init__(self, segments: Sequence[Segment] = (),
                 turns: Sequence[SpeakerTurn] | None = None) -> None:
        self.raw: list[Segment] = list(segments)
        self.turns: list[SpeakerTurn] = list(turns or [])
        self.has_turns = turns is not None  # turns were given (an empty set labels UNKNOWN)
        self.version = 0  # bumped on every change
        self._labelled: list[Segment] = []
        self._pieces: list[int] = []  # labelled segments made from each raw segment
        self._first: dict[str, int] = {}  # speaker -> index of its first labelled segment
        self._speakers: list[str] = []
        self._index: TurnIndex | None = None
        # (version, first labelled index that changed): views redraw only from there
        self._changes: deque[tuple[int, int]] = deque(maxlen=self.CHANGES_KEPT)
        self._forgotten = 0  # changes up to this version are no longer in _changes
        self._relabel(0)

    # ------------------------------------------------------------ updates
    def reset(self, segments: Sequence[Segment] = (),
              turns: Sequence[SpeakerTurn] | None = None) -> int:
        """Start over with these (the version keeps counting, so views notice)."""
        self.raw, self.turns, self.has_turns = list(segments), list(turns or []), \
            turns is not None
        return self._relabel(0)

    def touch(self) -> None:
        """Something shown beside the segments changed (names, a partial line, search)."""
        self.version += 1

    def add_segments(self, segments: Sequence[Segment]) -> int:
        """Append committed segments; returns the first labelled index that changed."""
        self.raw.extend(segments)
        return self._relabel(len(self.raw) - len(segments))

    def add_turns(self, turns: Sequence[SpeakerTurn]) -> int:
        """Live turns for the recent end: relabel only the segments they can reach."""
        self.turns.extend(turns)
        self.has_turns = True
        if self._index is None:
            self._index = TurnIndex(self.turns)
        else:
            self._index.add(turns)
        return self._relabel(self._affected_from(min(t.start for t in turns)) if turns
                             else len(self.raw))

    def set_turns(self, turns: Sequence[SpeakerTurn]) -> int:
        """A whole new set of turns (replacing any before): relabel everything."""
        self.turns, self.has_turns = list(turns), True
        return self._relabel(0)

    def set_live_turns(self, turns: Sequence[SpeakerTurn]) -> int:
        """Like set_turns, but no turns at all means "not diarized" (a silent session)."""
        if turns:
            return self.set_turns(turns)
        self.turns, self.has_turns = [], False
        return self._relabel(0)

    def drop_segments_from(self, t: float) -> int:
        """A replay seeked back to `t`: its segments from there on are transcribed again
        (one across `t` too: audio from `t` is all the workers hear again)."""
        first = next((i for i, seg in enumerate(self.raw) if seg.end > t), len(self.raw))
        del self.raw[first:]
        return self._relabel(first)

    def trim_turns(self, t: float) -> int:
        """A replay seeked back to `t`: speaker turns end there (they come again)."""
        self.turns = trimmed_turns(self.turns, t)
        if self._index is not None:
            self._index = TurnIndex(self.turns)
        return self._relabel(self._affected_from(t))

    def _affected_from(self, t: float) -> int:
        """First raw segment that turns starting at `t` can relabel (they end near or after
        it); live turns arrive for the recent end, so this walks back only a few segments."""
        j = len(self.raw)
        while j > 0 and self.raw[j - 1].end >= t - NEAREST_S - 0.01:
            j -= 1
        return j

    def _relabel(self, from_raw: int) -> int:
        if from_raw == 0:
            self._labelled, self._pieces, self._first = [], [], {}
            self._index = TurnIndex(self.turns) if self.has_turns else None
        keep = len(self._labelled) - sum(self._pieces[from_raw:])
        fresh: list[Segment] = []
        counts: list[int] = []
        for seg in self.raw[from_raw:]:
            pieces = label_with([seg], self._index) if self._index is not None else [seg]
            fresh.extend(pieces)
            counts.append(len(pieces))
        self._labelled[keep:] = fresh
        self._pieces[from_raw:] = counts
        # speakers in order of first appearance: only those first seen in the tail move
        self._first = {k: i for k, i in self._first.items() if i < keep}
        for i in range(keep, len(self._labelled)):
            self._first.setdefault(self._labelled[i].speaker or UNKNOWN_SPEAKER, i)
        self._speakers = sorted(self._first, key=self._first.__getitem__)
        self.version += 1
        if len(self._changes) == self._changes.maxlen:
            self._forgotten = self._changes[0][0]
        self._changes.append((self.version, keep))
        return keep

    # ------------------------------------------------------------ views
    @property
    def segments(self) -> list[Segment]:
        """Labelled segments (split where the speaker changes)."""
        return self._labelled

    @property
    def speakers(self) -> list[str]:
        """In order of appearance; computed once per change (views ask per line)."""
        return self._speakers

    def changed_from(self, since_version: int) -> int | None:
        """First segment index changed after `since_version` (None: redraw everything)."""
        if since_version < 0 or since_version < self._forgotten:
            return None  # never drawn, or too many changes ago to know
        first = len(self._labelled)
        for version, index in self._changes:
            if version > since_version:
                first = min(first, index)
        return first

    def transcript(self, source: str, duration_s: float = 0.0, model: str = "",
                   names: dict[str, str] | None = None) -> Transcript:
        """A snapshot: segments labelled by the turns (UNKNOWN where none were given)."""
        tr = Transcript(source, duration_s, model=model,
                        segments=list(self._labelled) if self.has_turns
                        else without_speakers(self.raw),
                        turns=list(self.turns), diarized=self.has_turns,
                        names=dict(names or {}))
        tr.language = next((s.language for s in tr.segments if s.language), "")
        return tr
