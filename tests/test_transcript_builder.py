"""The one transcript builder: incremental folding gives what a fresh fold of everything gives.

Pure data (no models, no processes): random segments with word times and random speaker
turns, fed in the orders the runner, live streams and the console feed them.
"""

from __future__ import annotations

import random

from engine.live import LiveStream
from engine.messages import (
    DiarizationResult,
    EngineFailed,
    Segment,
    SpeakerTurn,
    TranscriptResult,
    Word,
)
from engine.transcript import UNKNOWN_SPEAKER, TranscriptBuilder, assign_speakers
from tui.state import ConsoleState


def _segments(rng: random.Random, n: int) -> list[Segment]:
    out, t = [], 0.0
    for i in range(n):
        words = []
        for j in range(rng.randint(1, 6)):
            d = rng.uniform(0.1, 0.6)
            words.append(Word(t, t + d, f"w{i}_{j}"))
            t += d + rng.uniform(0.0, 0.2)
        out.append(Segment(words[0].start, words[-1].end, " ".join(w.text for w in words),
                           tuple(words), language="pt"))
        t += rng.uniform(0.0, 1.5)
    return out


def _turns(rng: random.Random, end: float) -> list[SpeakerTurn]:
    out, t = [], 0.0
    while t < end:
        d = rng.uniform(0.3, 4.0)
        out.append(SpeakerTurn(t, t + d, f"SPEAKER_{rng.randint(0, 3):02d}"))
        t += d + rng.uniform(0.0, 0.5)
    return out


def test_incremental_folds_equal_a_fresh_fold() -> None:
    for seed in range(20):
        rng = random.Random(seed)
        segs = _segments(rng, 40)
        turns = _turns(rng, segs[-1].end + 1)
        expected = assign_speakers(segs, turns)
        # live: segments and turns interleaved as they arrive, recent end only
        live = TranscriptBuilder()
        si = ti = 0
        while si < len(segs) or ti < len(turns):
            if ti >= len(turns) or (si < len(segs) and rng.random() < 0.5):
                live.add_segments(segs[si:si + 2])
                si += 2
            else:
                live.add_turns(turns[ti:ti + 3])
                ti += 3
        assert live.segments == expected, seed
        # a file: segments first, then the whole diarization
        whole = TranscriptBuilder()
        whole.add_segments(segs)
        assert all(s.speaker is None for s in whole.segments)  # kept as they came
        whole.set_turns(turns)
        assert whole.segments == expected
        order = list(dict.fromkeys(s.speaker for s in expected))
        assert whole.speakers == live.speakers == order


def test_changed_from_names_the_first_segment_a_view_must_redraw() -> None:
    rng = random.Random(7)
    segs = _segments(rng, 30)
    b = TranscriptBuilder()
    b.add_segments(segs[:20])
    seen = b.version
    first = b.add_segments(segs[20:])
    assert b.changed_from(seen) == first == 20
    assert b.changed_from(b.version) == len(b.segments)  # nothing new since
    assert b.changed_from(-1) is None  # never drawn: everything


def test_without_turns_a_transcript_is_not_diarized() -> None:
    rng = random.Random(3)
    segs = _segments(rng, 5)
    tr = TranscriptBuilder(segs).transcript("x.wav", 10.0)
    assert not tr.diarized and {s.speaker for s in tr.segments} == {UNKNOWN_SPEAKER}
    tr = TranscriptBuilder(segs, []).transcript("x.wav", 10.0)  # diarized, nobody found
    assert tr.diarized and {s.speaker for s in tr.segments} == {UNKNOWN_SPEAKER}


def test_a_live_stream_that_does_not_keep_holds_no_transcript() -> None:
    """The console's engine thread runs streams with keep=False: one copy, the console's."""
    rng = random.Random(5)
    segs = _segments(rng, 10)
    turns = _turns(rng, segs[-1].end)
    kept, lean = LiveStream(1, "x.wav", mic=False), LiveStream(1, "x.wav", mic=False, keep=False)
    for live in (kept, lean):
        live.apply(TranscriptResult(1, tuple(segs), 0, 16000, False, 0.1, 1.0), 0.0, True)
        live.apply(DiarizationResult(1, tuple(turns), 16000, False, 0.1, 1.0, incremental=True),
                   0.0, True)
    assert kept.transcript().segments == assign_speakers(segs, turns)
    assert lean.segments == [] and lean.turns == turns  # turns are small; text is not kept


def test_the_console_shows_an_engine_failure_as_an_error() -> None:
    state = ConsoleState()
    state.apply(EngineFailed("transcription worker failed: gave up after 3 restarts"))
    assert state.errors == ["transcription worker failed: gave up after 3 restarts"]


def test_a_finished_stream_shows_no_lag() -> None:
    """Metrics sampled mid-file said 15 s behind; the final result means nothing is."""
    from engine.messages import EngineMetrics, StreamOpened

    state = ConsoleState()
    state.apply(StreamOpened(1, "x.wav", 30.0, 16000, 1, "wav"))
    state.apply(EngineMetrics((), 15.0))
    assert state.lag_s == 15.0
    state.apply(TranscriptResult(1, (), 0, 16000 * 15, False, 1.0, 15.0))
    assert state.lag_s == 15.0
    state.apply(TranscriptResult(1, (), 16000 * 15, 16000 * 30, True, 1.0, 15.0))
    assert state.lag_s == 0.0


def test_a_seek_back_folds_like_a_transcript_that_never_went_past_it() -> None:
    """A replay seeked back to t: segments ending after t and turns past t go, and the
    labelled transcript equals a fresh fold of what was before t (the stretch then comes
    again and is added as usual)."""
    from engine.transcript import trimmed_turns

    for seed in range(10):
        rng = random.Random(seed)
        segs = _segments(rng, 30)
        turns = _turns(rng, segs[-1].end + 1)
        b = TranscriptBuilder()
        b.add_segments(segs)
        b.add_turns(turns)
        t = rng.uniform(segs[5].start, segs[-5].end)
        b.drop_segments_from(t)
        b.trim_turns(t)
        kept = [s for s in segs if s.end <= t]
        assert b.raw == kept and all(tt.end <= t + 1e-3 for tt in b.turns)
        assert b.segments == assign_speakers(kept, trimmed_turns(turns, t))
        again = [s for s in segs if s.end > t]
        b.add_segments(again)
        b.add_turns([tt for tt in turns if tt.end > t])
        assert [s.text for s in b.raw] == [s.text for s in segs]
