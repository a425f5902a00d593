"""Live sessions from a real virtual microphone (PulseAudio null sink): the console records a
PT-BR dialogue played into the mic, and a capture worker killed mid-session loses nothing it
had recorded. Skipped outside CI when PulseAudio/PortAudio are missing; failed in CI."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import correlate

from engine.config import Config, load_config
from engine.messages import EngineEvent, MicStatus, SpeakerTurn, WorkerState
from engine.runner import Runner
from engine.scoring import edit_distance, normalize
from engine.sessions import find_session
from engine.supervisor import Supervisor
from tests.conftest import clip_path, clips, der, reference_turns
from tests.test_live import LIVE_DER_MAX, REFINED_DER_MAX
from tests.vmic import (
    VMic,
    VMicError,
    finish_playing,
    require_vmic,
    start_recording,
    start_vmic,
)

SR = 16000
DIALOGUE = "ptbr_dlg_mixed_4spk"


@pytest.fixture(scope="module")
def vmic() -> Iterator[VMic]:
    require_vmic()
    try:
        mic = start_vmic()
    except VMicError as exc:  # everything is installed, so this is a real failure
        pytest.fail(f"virtual mic failed to start: {exc}", pytrace=False)
    yield mic
    mic.stop()


@pytest.fixture()
def mic_env(vmic: VMic, monkeypatch: pytest.MonkeyPatch) -> VMic:
    """Workers are spawned from this process: they must inherit the mic's server."""
    for key, value in vmic.env.items():
        monkeypatch.setenv(key, value)
    return vmic


def _config(tmp: Path) -> Config:
    return load_config().replace("paths", recordings_dir=tmp, log_dir=tmp / ".logs")


def _played() -> np.ndarray:
    audio, rate = sf.read(str(clip_path(DIALOGUE)), dtype="float32")
    assert rate == SR
    return audio


def _alignment(recorded: np.ndarray, played: np.ndarray) -> tuple[int, float]:
    """Offset of `played` inside `recorded` and the normalised correlation there."""
    lag = int(np.argmax(correlate(recorded, played, mode="valid", method="fft")))
    seg = recorded[lag:lag + len(played)]
    ref = played[: len(seg)]
    ncc = float(np.dot(seg, ref) / (np.linalg.norm(seg) * np.linalg.norm(ref) + 1e-12))
    return lag, ncc


def _wer(text: str) -> float:
    """Word error rate against the manifest's reference transcript."""
    ref = normalize(clips()[DIALOGUE]["transcript"])
    return edit_distance(ref, normalize(text)) / len(ref)


async def test_console_records_a_dialogue_from_the_microphone(mic_env: VMic,
                                                              tmp_path: Path) -> None:
    from tui.app import TranscrevApp
    from tui.screens.choose import ChooseScreen

    app = TranscrevApp(_config(tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + 90
        while not all(w.state in (WorkerState.READY, WorkerState.BUSY)
                      for w in app.state.workers.values()):
            assert time.monotonic() < deadline, "workers did not load"
            await pilot.pause(0.2)
        await pilot.press("r")
        deadline = time.monotonic() + 20
        while app.state.mic_state != "recording":
            assert time.monotonic() < deadline, f"mic not recording: {app.state.errors}"
            await pilot.pause(0.1)
        assert app.state.source_kind == "mic" and app.state.recording
        player = mic_env.play_async(clip_path(DIALOGUE))
        partials: set[str] = set()
        levels: set[float] = set()
        deadline = time.monotonic() + clips()[DIALOGUE]["duration_s"] + 30
        while player.poll() is None:
            assert time.monotonic() < deadline, "the clip did not finish playing"
            await pilot.pause(0.1)
            if app.state.partial:
                partials.add(app.state.partial)
            levels.add(app.state.level_db)
        assert player.returncode == 0
        await pilot.pause(1.5)  # the last phrase's pause, as a speaker would leave it
        await pilot.press("r")
        deadline = time.monotonic() + 60
        wav = Path(app.state.source)
        journal = wav.with_suffix(".jsonl")
        while not (journal.exists() and '"refined"' in journal.read_text()):
            assert time.monotonic() < deadline, "no offline speaker pass after stopping"
            await pilot.pause(0.2)
        await pilot.pause(0.3)
        assert not app.state.recording and app.state.mic_state == "stopped"
        text = " ".join(s.text for s in app.state.segments)
        committed = [s.text for s in app.state.raw_segments]
        speakers = set(app.state.speakers)
        # `d` lists the input devices capture can open; the choice is used by the next `r`
        await pilot.press("d")
        deadline = time.monotonic() + 15
        while not isinstance(app.screen, ChooseScreen):
            assert time.monotonic() < deadline, "no device list"
            await pilot.pause(0.1)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.device is not None and app.device.isdigit()

    # the recording is the audio that was played (a real capture path, not a copy)
    recorded, rate = sf.read(str(wav), dtype="float32")
    assert rate == SR
    lag, ncc = _alignment(recorded, _played())
    assert ncc >= 0.99, ncc
    assert len(recorded) >= lag + len(_played()) - SR // 10
    # committed text, partials while speaking, a moving level meter
    assert _wer(text) <= 0.25, text  # the path gives about 15%
    assert len(partials) >= 5
    assert max(levels) > -40 and min(levels) < max(levels)
    # the manifest's speakers (one off at most: over-clustering fails too), and turns that
    # are the reference RTTM's, as they arrived and after the offline pass
    n_ref = int(clips()[DIALOGUE]["n_speakers"])
    assert abs(len(speakers) - n_ref) <= 1, speakers
    sess = find_session(wav.stem, tmp_path)
    assert sess.refined is not None and sess.turns
    assert abs(len({t.speaker for t in sess.refined}) - n_ref) <= 1
    # the recording starts before the clip is played: the reference shifted by `lag`
    ref = [SpeakerTurn(t.start + lag / SR, t.end + lag / SR, t.speaker)
           for t in reference_turns(DIALOGUE)]
    duration = len(recorded) / SR
    assert der(ref, sess.refined, duration) <= REFINED_DER_MAX
    assert der(ref, sess.turns, duration) <= LIVE_DER_MAX
    # every committed phrase is in the journal beside the recording
    lines = [json.loads(x) for x in journal.read_text().splitlines()]
    segment_lines = [x for x in lines if x["type"] == "segment"]
    assert [x["text"] for x in segment_lines] == committed
    assert [x["id"] for x in segment_lines] == list(range(len(committed)))


def test_capture_killed_mid_session_keeps_the_recording_and_resumes(mic_env: VMic,
                                                                    tmp_path: Path) -> None:
    cfg = _config(tmp_path).replace("engine", backoff_initial_s=0.5)
    statuses: list[MicStatus] = []

    def watch(ev: EngineEvent) -> None:
        if isinstance(ev, MicStatus):
            statuses.append(ev)

    with Supervisor(cfg) as engine:
        runner = Runner(engine, on_event=watch)
        runner.wait_ready()
        live = start_recording(runner)
        player = mic_env.play_async(clip_path(DIALOGUE))
        deadline = time.monotonic() + 60
        while live.recorded_s < 12.0:
            assert time.monotonic() < deadline, f"12 s not recorded: {live.recorded_s}"
            assert player.poll() is None, "clip ended before the kill"
            runner.pump(0.05)
        before = sf.read(live.path, dtype="float32")[0]  # a valid WAV while recording
        engine.kill("capture")
        killed_at = time.monotonic()
        while sum(s.state == "recording" for s in statuses) < 2:
            assert time.monotonic() - killed_at < 20, "capture did not resume"
            runner.pump(0.05)
        resumed_after = time.monotonic() - killed_at
        finish_playing(runner, player, clips()[DIALOGUE]["duration_s"] + 30, 60)
        restarts = {w.role: w.restarts for w in engine.metrics().workers}

    assert restarts["capture"] == 1 and restarts["transcription"] == 0
    after, rate = sf.read(live.path, dtype="float32")
    assert rate == SR
    # everything recorded before the kill is still there, unchanged
    assert len(after) >= len(before)
    assert np.array_equal(after[: len(before)], before)
    played = _played()
    lag, ncc = _alignment(before, played[: len(before) // 2])
    assert ncc >= 0.99
    # and recording went on into the same file after the restart
    assert len(after) / SR >= len(before) / SR + (len(played) / SR - 12.0) - resumed_after - 2.0
    # text from both sides of the kill was committed
    kill_s = len(before) / SR
    assert any(s.end <= kill_s for s in live.segments)
    assert any(s.start >= kill_s for s in live.segments)


def test_microphone_lost_mid_session_is_retried_and_the_session_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sound server dies mid-session (the device disappears): what was recorded stays,
    the state says so, capture retries with backoff, and recording resumes into the same
    WAV once the server is back."""
    import os
    import signal
    import subprocess

    require_vmic()
    try:
        mic = start_vmic(reuse=False)  # a server of our own: this test kills it
    except VMicError as exc:
        pytest.fail(f"virtual mic failed to start: {exc}", pytrace=False)
    for key, value in mic.env.items():
        monkeypatch.setenv(key, value)
    statuses: list[MicStatus] = []
    try:
        with Supervisor(_config(tmp_path)) as engine:
            runner = Runner(engine, on_event=lambda ev: statuses.append(ev)
                                     if isinstance(ev, MicStatus) else None)
            runner.wait_ready()
            live = start_recording(runner)
            player = mic.play_async(clip_path(DIALOGUE))
            deadline = time.monotonic() + 60
            while live.recorded_s < 8.0:
                assert time.monotonic() < deadline, f"8 s not recorded: {live.recorded_s}"
                runner.pump(0.05)
            pid = int((Path(mic.env["VMIC_DIR"]) / "pulse" / "pid").read_text())
            os.kill(pid, signal.SIGKILL)
            player.wait(10)
            lost_at = time.monotonic()
            while live.mic_state != "lost":
                assert time.monotonic() - lost_at < 10, "loss not noticed"
                runner.pump(0.05)
            recorded_at_loss = sf.info(live.path).frames
            time.sleep(1.0)
            restarted = subprocess.run(["bash", str(Path(__file__).parent.parent / ".ci/vmic"),
                                        "start"], env={**os.environ, **mic.env},
                                       capture_output=True, text=True, timeout=30)
            assert restarted.returncode == 0, restarted.stderr
            while live.mic_state != "recording":
                assert time.monotonic() - lost_at < 30, "microphone not resumed"
                runner.pump(0.05)
            mic.play(_played()[: 6 * SR])  # more speech after the server came back
            end = time.monotonic() + 1.5
            while time.monotonic() < end:
                runner.pump(0.05)
            runner.stop_live()
            deadline = time.monotonic() + 60
            while not live.done:
                assert time.monotonic() < deadline, "session did not finish"
                runner.pump(0.05)
            capture_restarts = {w.role: w.restarts for w in engine.metrics().workers}["capture"]
    finally:
        mic.stop()
    lost = [s for s in statuses if s.state == "lost"]
    assert lost and "\n" not in lost[0].detail and lost[0].retry_in > 0
    assert capture_restarts == 0  # a lost device is not a crashed worker
    audio, _ = sf.read(live.path, dtype="float32")
    assert len(audio) >= recorded_at_loss + 5 * SR  # kept, then more after the return
    _, ncc = _alignment(audio[:recorded_at_loss], _played()[: 6 * SR])
    assert ncc >= 0.99
    assert any(s.start >= recorded_at_loss / SR for s in live.segments)
