"""The live path on real models and real worker processes, without a sound card: files fed
at real-time pace through capture's live mode (the virtual-mic tests add PulseAudio)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.config import Config, load_config
from engine.runner import Runner
from engine.scoring import edit_distance, normalize
from engine.supervisor import Supervisor
from tests.conftest import DATA, clip_path, clips, der, reference_turns

SR = 16000
# DER bounds (±0.25 s collar) against the reference RTTM of the 4-speaker dialogue
REFINED_DER_MAX = 0.15  # the offline pass after the stream (measured 0.07; the file path's bound)
LIVE_DER_MAX = 0.20  # the online labels as they arrived (measured 0.08)


def _config(tmp: Path) -> Config:
    return load_config().replace("paths", recordings_dir=tmp, log_dir=tmp / ".logs")


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    with Supervisor(_config(tmp_path_factory.mktemp("live"))) as engine:
        r = Runner(engine)
        r.wait_ready()
        yield r


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spectrum / np.sqrt(f), n)
    return (x / np.sqrt(np.mean(x * x))).astype(np.float32)


def _noises(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(7)
    n = 5 * SR
    t = np.arange(n) / SR
    hum = sum(0.3 / k * np.sin(2 * np.pi * 50 * k * t) for k in (1, 2, 3, 5))
    cases = {
        "digital_silence": np.zeros(n, np.float32),
        "pink_noise_-26dB": 0.05 * _pink(n, rng),
        "pink_noise_-14dB": 0.2 * _pink(n, rng),
        "hum_50Hz": np.asarray(hum, np.float32),
    }
    out = {}
    for name, audio in cases.items():
        out[name] = folder / f"{name}.wav"
        sf.write(out[name], audio, SR, subtype="PCM_16")
    return out


def test_silence_noise_and_hum_give_no_text(runner: Runner, tmp_path: Path) -> None:
    for name, path in _noises(tmp_path).items():
        live = runner.run_live(str(path), speed=2.0)
        assert live.error is None, (name, live.error)
        assert live.segments == [], (name, [s.text for s in live.segments])
        assert live.stats.partial_texts == [], (name, live.stats.partial_texts)


def test_a_dialogue_streams_partials_commits_and_speaker_labels(runner: Runner) -> None:
    clip = clips()["ptbr_dlg_mixed_4spk"]
    live = runner.run_live(str(clip_path(clip["id"])), language="pt")
    assert live.error is None
    # WER against the manifest's reference transcript (the path gives about 15% here)
    ref = normalize(clip["transcript"])
    hyp = normalize(" ".join(s.text for s in live.segments if not s.gap))
    wer = edit_distance(ref, hyp) / len(ref)
    assert wer <= 0.25, (wer, hyp)
    # partial text while each phrase is spoken, regularly during speech (the interval itself
    # is a benchmark figure, `bench --live`; a loaded CI machine must not fail on it)
    assert len(live.stats.partial_texts) >= 5
    gaps = np.diff(live.stats.partial_times)
    assert np.median(gaps[gaps < 4.0]) <= 2.5
    # speaker turns arrive while the stream runs, then the offline pass refines them
    assert live.stats.label_delay_s and max(live.stats.label_delay_s) <= 15.0  # bench: p50
    # as many speakers as the manifest says (one off at most: over-clustering fails too),
    # and the turns are the reference RTTM's, live and after the offline pass
    reference_speakers = int(clip["n_speakers"])
    assert live.refined is not None
    assert abs(len({t.speaker for t in live.refined}) - reference_speakers) <= 1
    assert abs(len({t.speaker for t in live.turns}) - reference_speakers) <= 1
    ref_turns, duration = reference_turns(clip["id"]), clip["duration_s"]
    live_der = der(ref_turns, live.turns, duration)
    refined_der = der(ref_turns, live.refined, duration)
    print({"wer": wer, "live_der": live_der, "refined_der": refined_der})
    assert refined_der <= REFINED_DER_MAX, refined_der
    assert live_der <= LIVE_DER_MAX, live_der
    # the refined labels reuse the live ones (names given during the session stay)
    assert {t.speaker for t in live.refined} & {t.speaker for t in live.turns}
    # committed segments never overlap and keep their order
    ends = [s.end for s in live.segments]
    starts = [s.start for s in live.segments]
    assert all(a <= b + 1e-6 for a, b in zip(ends, starts[1:], strict=False))
    # no speech committed as nothing: every reference sentence has committed words at its
    # time (a phrase with speech and no words is decoded again, or marked as a gap)
    sentences = json.loads((DATA / clip["segments_file"]).read_text())
    spoken = [s for s in live.segments if not s.gap]
    for sentence in sentences:
        assert any(s.start < sentence["end"] and s.end > sentence["start"] for s in spoken), \
            (sentence["text"], [(s.start, s.end, s.text) for s in live.segments])


def test_bench_live_reports_latency_and_partials_as_json() -> None:
    import json

    from tests.conftest import ROOT, run_cli

    proc = run_cli("bench", "--live", "--corpus", str(ROOT / "tests/data"), "--clips",
                   "ptbr_fleurs_000", "--json")
    assert proc.returncode == 0, proc.stderr
    pooled = json.loads(proc.stdout)["pooled"]
    for key in ("latency_p50_s", "latency_p95_s", "label_delay_p50_s", "partial_interval_s",
                "wer", "peak_rss_mb", "cpu_percent"):
        assert isinstance(pooled[key], float | int), key
    assert pooled["wer"] <= 0.3
    assert 0 < pooled["latency_p50_s"] <= pooled["latency_p95_s"] < 10
    assert pooled["overflows"] == 0


def test_a_missing_microphone_is_one_line_and_replay_still_works(tmp_path: Path) -> None:
    cfg = _config(tmp_path).replace("live", device="no-such-microphone-xyz")
    with Supervisor(cfg) as engine:
        r = Runner(engine)
        r.wait_ready()
        live = r.start_live(None)
        deadline = time.monotonic() + 30
        while not live.done:
            assert time.monotonic() < deadline, "a missing microphone did not end the stream"
            r.pump(0.1)
        assert live.error is not None and "\n" not in live.error
        assert "no-such-microphone-xyz" in live.error or "PortAudio" in live.error
        assert not list(tmp_path.glob("*.wav"))  # no empty recording left behind
        r.live = None
        res = r.transcribe(str(clip_path("ptbr_fleurs_000")))
        assert res.ok and res.transcript.segments


def test_a_replay_seeked_back_and_on_keeps_one_transcript(runner: Runner,
                                                          tmp_path: Path) -> None:
    """A replay at speed 2 seeked back 6 s transcribes that stretch again from a phrase's
    start without doubling it (what was in flight before the seek is dropped when each
    worker says it restarted),
    then seeked on 5 s leaves that stretch out; the session on disk holds the same text, and
    the voices heard before the seek keep their labels after it."""
    from engine.messages import StreamRewound
    from engine.sessions import load_session

    clip = clips()["ptbr_dlg_mixed_4spk"]
    rewound: list[StreamRewound] = []
    # what the stream held just as each worker's restart landed: later events may already
    # carry results from the new position, so a look after all three have come is too late
    at_rewind: dict[str, tuple[list, list]] = {}

    def on_event(ev: object) -> None:
        if isinstance(ev, StreamRewound):
            rewound.append(ev)
            at_rewind[ev.role] = (list(live.segments), list(live.turns))

    runner.on_event = on_event
    try:
        live = runner.start_live(str(clip_path(clip["id"])), "pt", speed=2.0,
                                 session_dir=tmp_path)
        engine = runner.engine

        def play_until(position_s: float) -> None:
            deadline = time.monotonic() + 60
            while engine.fed_s < position_s or not live.segments:
                assert time.monotonic() < deadline and not live.done, engine.fed_s
                runner.pump(0.05)

        play_until(12.0)
        before = [(s.start, s.end, s.text) for s in live.segments]
        runner.seek(-6.0)
        deadline = time.monotonic() + 30
        while {ev.role for ev in rewound} != {"capture", "transcription", "diarization"}:
            assert time.monotonic() < deadline, rewound
            runner.pump(0.05)
        back_to = {ev.to_sample for ev in rewound}
        assert len(back_to) == 1, rewound  # every worker restarted at the same sample
        back_s = back_to.pop() / SR
        assert 0.0 <= back_s <= 8.5, (back_s, before)
        # back to where a phrase starts, never into one (committed or still open)
        assert not [b for b in before if b[0] < back_s < b[1]], (back_s, before)
        # text from the new position on is gone until it is transcribed again
        assert all(s.end <= back_s for s in at_rewind["transcription"][0])
        assert all(t.end <= back_s + 1e-3 for t in at_rewind["diarization"][1])

        play_until(back_s + 8.0)
        rewound.clear()
        runner.seek(5.0)
        while not rewound:
            runner.pump(0.05)
        skip_from, skip_to = back_s + 8.0, rewound[0].to_sample / SR
        assert skip_to >= skip_from + 4.0, (skip_from, skip_to)
        while not live.done:
            runner.pump(0.05)
        runner.live = None
        runner.close_live(live)
    finally:
        runner.on_event = None
    assert live.error is None
    segs = live.segments
    assert all(a.end <= b.start + 1e-6 for a, b in zip(segs, segs[1:], strict=False)), \
        [(s.start, s.end, s.text) for s in segs]
    # the stretch played twice has its words once; the skipped one has none
    assert not [s for s in segs if skip_from + 1.0 < s.start < skip_to - 1.0]
    sentences = json.loads((DATA / clip["segments_file"]).read_text())
    spoken = [s for s in segs if not s.gap]
    for sentence in sentences:
        if sentence["end"] <= skip_from - 0.5 or sentence["start"] >= skip_to + 0.5:
            assert any(s.start < sentence["end"] and s.end > sentence["start"]
                       for s in spoken), (sentence["text"], [(s.start, s.text) for s in segs])
    # the voices met before the seek are labelled as before (no new label per restart)
    assert len({t.speaker for t in live.turns}) <= int(clip["n_speakers"]) + 1, live.turns
    # the session's journal, read back, holds the same segments (seek records applied)
    assert live.journal is None
    meta = next(tmp_path.glob("*.meta.json"))
    kept = load_session(meta)
    assert [(s.start, s.text) for s in kept.segments] == [(s.start, s.text) for s in segs]
    assert all(t.end <= back_s + 1e-3 or t.start >= back_s - 1e-3 for t in kept.turns) or \
        kept.refined is not None


def test_the_pause_check_hears_silence_and_not_speech() -> None:
    """The live policy's pause check on the real Silero model: after speech stops it says
    pause, and inside the reference sentences it mostly does not (short gaps between words
    are pauses too)."""
    from engine.audio.source import read_audio
    from engine.workers.transcription import tail_is_pause

    clip = clips()["ptbr_dlg_mixed_4spk"]
    audio = read_audio(clip_path(clip["id"]))
    threshold = load_config().vad.threshold
    sentences = json.loads((DATA / clip["segments_file"]).read_text())
    inside = [tail_is_pause(audio[: int(t * SR)], threshold)
              for s in sentences for t in np.arange(s["start"] + 0.5, s["end"] - 0.2, 0.1)]
    assert len(inside) > 50 and sum(inside) / len(inside) < 0.3, sum(inside) / len(inside)
    quiet = np.concatenate([audio[: int(sentences[0]["end"] * SR)],
                            np.zeros(SR // 2, np.float32)])
    assert tail_is_pause(quiet, threshold)
