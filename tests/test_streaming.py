"""The live phrase policy (engine/streaming.py) on synthetic audio with a scripted VAD.

The VAD is injected: here it reports speech wherever the synthetic signal is loud, which
is exactly the contract the worker's Silero VAD fulfils; the real model runs in test_live.
"""

from __future__ import annotations

import numpy as np

from engine.config import LiveConfig
from engine.messages import Segment, Word
from engine.streaming import PhraseCutter, clean_segments, collapse_repeats, quietest_cut

SR = 16000


def loud_vad(min_silence_s: float) -> object:
    """Speech = runs of loud 10 ms frames, joined across gaps shorter than min_silence_s."""

    def vad(audio: np.ndarray) -> list[tuple[int, int]]:
        frame = SR // 100
        n = len(audio) // frame
        loud = np.abs(audio[: n * frame]).reshape(n, frame).max(axis=1) > 0.1
        runs: list[list[int]] = []
        for i, on in enumerate(loud):
            if on:
                if runs and (i - runs[-1][1]) * frame < min_silence_s * SR:
                    runs[-1][1] = i + 1
                else:
                    runs.append([i, i + 1])
        pad = SR // 10
        out = []
        for a, b in runs:
            end = b * frame
            end = len(audio) if end >= len(audio) - int(min_silence_s * SR) else end + pad
            out.append((max(0, a * frame - pad), min(len(audio), end)))
        return out

    return vad


def signal_of(*parts: tuple[str, float]) -> np.ndarray:
    """("speech", seconds) is a loud tone, ("pause", seconds) near silence."""
    out = []
    for kind, secs in parts:
        n = int(secs * SR)
        t = np.arange(n) / SR
        out.append(0.5 * np.sin(2 * np.pi * 220 * t) if kind == "speech"
                   else 0.001 * np.ones(n))
    return np.concatenate(out).astype(np.float32)


def run(audio: np.ndarray, cfg: LiveConfig, block_s: float = 0.1) -> list[tuple[str, int, int]]:
    """Feed blocks as the worker does; returns (kind, stream offset, n) of each decision."""
    cutter = PhraseCutter(cfg, loud_vad(cfg.end_silence_ms / 1000))  # type: ignore[arg-type]
    buf = np.zeros(0, np.float32)
    base, clock, out = 0, 0.0, []
    block = int(block_s * SR)
    for i in range(0, len(audio), block):
        buf = np.concatenate([buf, audio[i:i + block]])
        clock += block_s
        while (d := cutter.decide(buf, clock, 0.0)) is not None:
            out.append((d.kind, base, d.n))
            if d.kind != "partial":
                buf, base = buf[d.n:], base + d.n
    while (d := cutter.decide(buf, clock, 0.0, final=True)) is not None:
        out.append((d.kind, base, d.n))
        buf, base = buf[d.n:], base + d.n
        if not len(buf):
            break
    return out


def test_a_pause_commits_the_phrase_before_it_and_partials_come_during_speech() -> None:
    cfg = LiveConfig(end_silence_ms=300, partial_interval_s=1.0)
    audio = signal_of(("pause", 1.0), ("speech", 3.0), ("pause", 1.0), ("speech", 2.0),
                      ("pause", 1.0))
    decisions = run(audio, cfg)
    commits = [(base, n) for kind, base, n in decisions if kind == "commit"]
    assert len(commits) == 2
    # the first commit covers the first phrase and ends inside the pause after it
    first_end = commits[0][0] + commits[0][1]
    assert 4.0 * SR <= first_end <= 5.0 * SR
    partials = [base + n for kind, base, n in decisions if kind == "partial"]
    assert len(partials) >= 3  # during 3 s + 2 s of speech, about one per second
    # partials never cover the same audio twice without new audio in between
    assert len(set(partials)) == len(partials)


def test_silence_is_skipped_and_never_decoded() -> None:
    decisions = run(signal_of(("pause", 6.0)), LiveConfig())
    assert decisions and all(kind == "skip" for kind, _, _ in decisions)
    # everything but the last half second is acknowledged while it streams
    assert sum(n for _, _, n in decisions) == 6 * SR


def test_a_phrase_without_pauses_is_cut_at_max_phrase_length() -> None:
    cfg = LiveConfig(max_phrase_s=4.0)
    decisions = run(signal_of(("speech", 10.0)), cfg)
    commits = [n for kind, _, n in decisions if kind == "commit"]
    assert len(commits) >= 3
    assert max(commits[:-1]) <= 4.2 * SR


def test_behind_live_no_partials_are_made() -> None:
    cfg = LiveConfig(catch_up_lag_s=1.0)
    cutter = PhraseCutter(cfg, loud_vad(0.3))  # type: ignore[arg-type]
    audio = signal_of(("speech", 2.0))
    assert cutter.decide(audio, 10.0, lag_s=0.0) is not None  # caught up: a partial
    cutter = PhraseCutter(cfg, loud_vad(0.3))  # type: ignore[arg-type]
    assert cutter.decide(audio, 10.0, lag_s=3.0) is None  # behind: wait, decode less


def test_quietest_cut_finds_the_dip() -> None:
    audio = signal_of(("speech", 1.0), ("pause", 0.05), ("speech", 1.0))
    cut = quietest_cut(audio, 0, len(audio))
    assert SR <= cut <= int(1.05 * SR)


def test_collapse_repeats_cuts_loops_and_keeps_normal_text() -> None:
    assert collapse_repeats("o que é o que é o que é o que é isso") == "o que é isso"
    assert collapse_repeats("é é é é é é é") == "é"
    assert collapse_repeats("sim, sim senhor") == "sim, sim senhor"


def _seg(text: str, logprob: float = -0.3, no_speech: float = 0.0) -> Segment:
    return Segment(0.0, 1.0, text, (Word(0.0, 1.0, text),), None, logprob, no_speech, "pt")


def test_clean_segments_drops_credits_and_unsure_silence() -> None:
    kept = clean_segments([
        _seg("Legendas pela comunidade Amara.org"),
        _seg("Obrigado.", logprob=-0.9, no_speech=0.8),
        _seg("Bom dia a todos."),
        _seg("???", logprob=-2.0),
    ])
    assert [s.text for s in kept] == ["Bom dia a todos."]


def test_clean_segments_says_what_each_guard_removed() -> None:
    """The bench scores what the guards remove against the reference: each removal is
    reported with its guard."""
    unsure = Segment(0.0, 1.0, "Obrigado.", (), None, -1.0, 0.9, "pt")
    garbled = Segment(1.0, 2.0, "xyz qwe", (), None, -2.0, 0.1, "pt")
    looped = Segment(2.0, 5.0, "é o que é o que é o que é o que", (), None, -0.2, 0.0, "pt")
    dropped: list[tuple[str, str]] = []
    kept = clean_segments([unsure, garbled, looped], dropped)
    assert [s.text for s in kept] == ["é o que"]
    assert dropped == [("no_speech", "Obrigado."), ("low_logprob", "xyz qwe"),
                       ("repeats", "é o que é o que é o que")]


def test_no_partial_starts_while_the_speaker_pauses() -> None:
    """A partial decode started in the pause that is about to close the phrase would hold
    up its commit; the injected pause check (Silero's tail in the worker) prevents it."""
    cfg = LiveConfig(partial_interval_s=1.0)
    audio = signal_of(("speech", 2.0))
    paused = PhraseCutter(cfg, loud_vad(0.3), lambda _a: True)  # type: ignore[arg-type]
    assert paused.decide(audio, 10.0, lag_s=0.0) is None
    talking = PhraseCutter(cfg, loud_vad(0.3), lambda _a: False)  # type: ignore[arg-type]
    decision = talking.decide(audio, 10.0, lag_s=0.0)
    assert decision is not None and decision.kind == "partial"


def test_a_long_phrase_commits_at_a_breath_without_a_partial_in_the_way() -> None:
    """Speech with only breaths in it: committed at a breath once it passes soft_phrase_s,
    close to the buffer's end, and no partial decode starts just before that (the commit
    would wait for it)."""
    cfg = LiveConfig(soft_phrase_s=4.0, max_phrase_s=12.0, partial_interval_s=0.5)
    parts: list[tuple[str, float]] = [("pause", 0.5)]
    for _ in range(6):
        parts += [("speech", 0.9), ("pause", 0.04)]
    decisions = run(signal_of(*parts), cfg)
    first = next(i for i, d in enumerate(decisions) if d[0] == "commit")
    _kind, base, cut = decisions[first]
    breaths = [0.5 + 0.94 * k - 0.02 for k in range(1, 6)]  # middles of the 40 ms breaths
    assert base == 0 and min(abs(cut / SR - b) for b in breaths) < 0.03, cut / SR
    assert cut / SR > 3.0  # the latest breath the soft cut may take, not an earlier one
    speech_start = int(0.4 * SR)  # the VAD's pad before the speech at 0.5 s
    late = [d for d in decisions[:first] if d[0] == "partial"
            and 3.5 * SR <= d[2] - speech_start < 4.0 * SR]
    assert late == []
