"""One long recording on several actors at once: cut at silences, stitched back.

The driver cuts a long file into pieces at its quietest moments near evenly spaced points
(from the audio alone, so the same file is always cut the same way), each piece runs as a
stream of its own on whichever actor is free, and the pieces' transcripts are joined on the
recording's clock. Each piece's diarization labels its speakers on its own; the actor sends
every speaker's voice (CAM++ embedding) with its turns, and the pieces' speakers become one
set by matching those voices, as the live diarizer matches speakers across windows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from engine.audio.source import AudioInfo, read_blocks
from engine.config import ClusterConfig
from engine.messages import SAMPLE_RATE, Segment, SpeakerTurn
from engine.transcript import Transcript

SEARCH_S = 10.0  # a cut falls within this of its evenly spaced point ...
QUIET_S = 0.3  # ... at the centre of the quietest stretch this long
FRAME = SAMPLE_RATE // 100  # 10 ms energy frames


def piece_count(duration_s: float, actors: int, cc: ClusterConfig) -> int:
    """How many pieces a recording runs as: one unless it is long and there are several
    actors; then one or two per actor (a whole multiple, so every actor gets the same
    share; two let a fast actor take over from a slow one), none shorter than
    `split_piece_s`."""
    used = min(actors, int(duration_s // cc.split_piece_s))
    if cc.split_min_s <= 0 or used < 2 or duration_s < cc.split_min_s:
        return 1
    return used * max(1, min(2, int(duration_s // (cc.split_piece_s * used))))


def total_samples(info: AudioInfo) -> int:
    """The recording's length at 16 kHz (what the reader yields)."""
    return int(math.ceil(info.frames * SAMPLE_RATE / info.sample_rate))


def cut_points(info: AudioInfo, pieces: int) -> list[int]:
    """Sample indices (16 kHz) where the pieces meet: near each evenly spaced point, the
    middle of the quietest QUIET_S within SEARCH_S of it (a pause, where no word is cut)."""
    total = total_samples(info)
    cuts: list[int] = []
    span = int(SEARCH_S * SAMPLE_RATE)
    for k in range(1, pieces):
        target = total * k // pieces
        lo = max(cuts[-1] + SAMPLE_RATE if cuts else 0, target - span)
        audio = np.zeros(0, np.float32)
        for block in read_blocks(info, 2 * span, start_sample=lo):
            audio = block
            break
        frames = len(audio) // FRAME
        win = int(QUIET_S * 100)
        if frames <= win:
            cuts.append(target)
            continue
        energy = (audio[: frames * FRAME].reshape(frames, FRAME) ** 2).mean(axis=1)
        rolling = np.convolve(energy, np.ones(win), mode="valid")
        # among equally quiet stretches (digital silence), the one nearest the target
        near = np.abs(np.arange(len(rolling)) + win / 2 - (target - lo) / FRAME)
        best = int(np.lexsort((near, np.round(rolling, 12)))[0])
        cuts.append(lo + (best + win // 2) * FRAME)
    return cuts


def match_speakers(pieces: Sequence[Sequence[tuple[str, np.ndarray, float]]],
                   threshold: float) -> list[dict[str, int]]:
    """For each piece, its labels -> one numbering for the whole recording. A piece's
    speakers take the most similar voices heard in earlier pieces (each at most once, at
    least `threshold` cosine), the rest are new; voices are pooled by seconds of speech."""
    pooled: list[np.ndarray] = []
    maps: list[dict[str, int]] = []
    for voices in pieces:
        m: dict[str, int] = {}
        pairs = sorted(((float(vec @ (c / max(1e-9, float(np.linalg.norm(c))))), i, j)
                        for i, (_, vec, _) in enumerate(voices)
                        for j, c in enumerate(pooled)), reverse=True)
        taken: set[int] = set()
        for sim, i, j in pairs:
            if sim < threshold:
                break
            if voices[i][0] in m or j in taken:
                continue
            m[voices[i][0]] = j
            taken.add(j)
        for label, vec, secs in voices:
            if label not in m:
                m[label] = len(pooled)
                pooled.append(np.zeros_like(vec))
            pooled[m[label]] = pooled[m[label]] + vec * max(secs, 0.1)
        maps.append(m)
    return maps


@dataclass
class PieceResult:
    """What one piece gave: its transcript on its own clock, and its speakers' voices."""

    start: int  # samples of the recording where the piece begins
    transcript: Transcript
    voices: list[tuple[str, np.ndarray, float]] = field(default_factory=list)
    work_s: dict[str, float] = field(default_factory=dict)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None
    samples: int = 0  # audio it was fed (16 kHz)


def _shift_segment(seg: Segment, dt: float, label: dict[str, str]) -> Segment:
    def who(s: str | None) -> str | None:
        return label.get(s, s) if s is not None else None

    words = tuple(replace(w, start=round(w.start + dt, 3), end=round(w.end + dt, 3),
                          speaker=who(w.speaker)) for w in seg.words)
    return replace(seg, start=round(seg.start + dt, 3), end=round(seg.end + dt, 3),
                   words=words, speaker=who(seg.speaker))


def stitch(source: str, duration_s: float, pieces: Sequence[PieceResult],
           threshold: float) -> Transcript:
    """The recording's transcript from its pieces: times on the recording's clock and one
    set of speakers, numbered by first appearance as a whole-file diarization numbers them."""
    maps = match_speakers([p.voices for p in pieces], threshold)
    extra = max((max(m.values(), default=-1) for m in maps), default=-1) + 1
    for m, p in zip(maps, pieces, strict=True):  # speakers too short to embed: their own
        for t in p.transcript.turns:
            if t.speaker not in m:
                m[t.speaker] = extra
                extra += 1
    order: dict[int, None] = {}
    for m, p in zip(maps, pieces, strict=True):
        for t in sorted(p.transcript.turns, key=lambda t: t.start):
            order.setdefault(m[t.speaker], None)
    final = {g: f"SPEAKER_{k:02d}" for k, g in enumerate(order)}
    out = Transcript(source=source, duration_s=duration_s)
    names: dict[str, tuple[str, float]] = {}
    for m, p in zip(maps, pieces, strict=True):
        tr = p.transcript
        dt = p.start / SAMPLE_RATE
        label = {local: final[g] for local, g in m.items()}
        out.segments += [_shift_segment(s, dt, label) for s in tr.segments]
        out.turns += [SpeakerTurn(round(t.start + dt, 3), round(t.end + dt, 3),
                                  label[t.speaker]) for t in tr.turns]
        out.diarized = out.diarized or tr.diarized
        out.language = out.language or tr.language
        out.warnings += tr.warnings
        for local, score in tr.recognised.items():
            g = label.get(local, local)
            if score > names.get(g, ("", -2.0))[1]:
                names[g] = (tr.names[local], score)
    out.diarized = out.diarized and all(p.transcript.diarized for p in pieces)
    out.recognise([(g, name, score) for g, (name, score) in sorted(names.items())])
    return out


def plan(info: AudioInfo, actors: int, cc: ClusterConfig) -> list[tuple[int, int]]:
    """The pieces of one recording as (first sample, end sample) at 16 kHz."""
    n = piece_count(info.duration_s, actors, cc)
    if n == 1:
        return [(0, total_samples(info))]
    edges = [0, *cut_points(info, n), total_samples(info)]
    return list(zip(edges, edges[1:], strict=False))


def describe(pieces: Sequence[tuple[int, int]]) -> str:
    """For progress lines: the pieces' lengths."""
    return ", ".join(f"{(b - a) / SAMPLE_RATE / 60:.1f}" for a, b in pieces) + " min"


__all__ = ["PieceResult", "cut_points", "describe", "match_speakers", "piece_count", "plan",
           "stitch"]
