"""The console in a real terminal: tmux runs `transcrevai replay`, we read the screen."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT, clip_path

TMUX = shutil.which("tmux")
if TMUX is None:
    if os.environ.get("CI"):
        raise RuntimeError("tmux is required in CI (.ci/run installs it)")
    pytest.skip("tmux is not installed (CI installs it)", allow_module_level=True)


def _tmux(*args: str) -> str:
    return subprocess.run([TMUX, "-L", "transcrevai-test", *args], capture_output=True,
                          text=True, check=False).stdout  # type: ignore[list-item]


def _screen_until(pred: object, limit: float) -> str:
    return _screen_of("s", pred, limit)


def _screen_of(target: str, pred: object, limit: float) -> str:
    """The screen of tmux session `target` once `pred` holds for it (or at `limit` s)."""
    t0, screen = time.monotonic(), ""
    while time.monotonic() - t0 < limit:
        screen = _tmux("capture-pane", "-p", "-t", target)
        if pred(screen):  # type: ignore[operator]
            return screen
        time.sleep(0.25)
    return screen


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "c.toml"
    config.write_text(f'[paths]\nmodels_dir = "{ROOT / "models"}"\n'
                      f'recordings_dir = "{tmp_path}"\nlog_dir = "{tmp_path}/logs"\n')
    return config


def test_replay_in_tmux_shows_speakers_text_and_gauges_then_quits(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("transcrevai")
    marker = tmp_path / "exit-code"
    config = _config(tmp_path)
    cmd = f"cd {ROOT} && {exe} --config {config} replay {clip_path('ptbr_dlg_mixed_4spk')} " \
          f"--speed fast; echo $? > {marker}"
    _tmux("kill-server")
    _tmux("new-session", "-d", "-s", "s", "-x", "80", "-y", "24", cmd)
    try:
        first = _screen_until(lambda s: "worker" in s, 10)
        assert "capture" in first and "transcription" in first
        screen = _screen_until(lambda s: "SPEAKER_01" in s and "raposa" in s, 120)
        assert "SPEAKER_00" in screen and "SPEAKER_01" in screen
        assert "raposa" in screen  # text from the clip
        assert "/512MB" in screen  # memory gauges against their limits
        # `y` copies the transcript through OSC 52: tmux (set-clipboard on) takes it into
        # its paste buffer, as a local terminal would into the clipboard
        _tmux("set-option", "-g", "set-clipboard", "on")
        _tmux("send-keys", "-t", "s", "y")
        deadline = time.monotonic() + 10
        while "raposa" not in _tmux("show-buffer") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "raposa" in _tmux("show-buffer") and "SPEAKER_01" in _tmux("show-buffer")
        parent = psutil.Process(int(_tmux("display-message", "-p", "-t", "s",
                                           "#{pane_pid}").strip()))
        workers = [p.pid for p in parent.children(recursive=True)
                   if " ".join(x for x in p.cmdline() if x).startswith("transcrevai: ")]
        assert len(workers) == 3
        _tmux("send-keys", "-t", "s", "q")
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.read_text().strip() == "0"
        time.sleep(0.5)
        assert not [p for p in workers if psutil.pid_exists(p)
                    and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    finally:
        _tmux("kill-server")


def test_two_live_consoles_record_at_once_into_their_own_files_and_quit_after_confirming(
        tmp_path: Path) -> None:
    """Two `transcrevai live` consoles (two logins) started in the same second, on one
    recordings folder: each records at once into a session of its own (its own WAV and
    journal, never the other's); q asks first, y stops and keeps the WAV."""
    from tests.vmic import vmic_or_fail

    mic = vmic_or_fail()
    config = _config(tmp_path)
    exe = Path(sys.executable).with_name("transcrevai")
    _tmux("kill-server")
    env = [x for k, v in mic.env.items() for x in ("-e", f"{k}={v}")]
    targets = ("s", "s2")
    time.sleep(1.0 - time.time() % 1.0)  # both start at the beginning of one second
    for t in targets:
        _tmux("new-session", "-d", *env, "-s", t, "-x", "100", "-y", "30",
              f"cd {ROOT} && {exe} --config {config} live; echo $? > {tmp_path / t}.exit")
    try:
        for t in targets:
            screen = _screen_of(t, lambda s: "REC" in s, 60)
            assert "REC" in screen, (t, screen)
        mic.play(clip_path("ptbr_fleurs_000"))
        for t in targets:
            screen = _screen_of(t, lambda s: "informações" in s or "informacoes" in s, 60)
            assert "informa" in screen, (t, screen)
        for t in targets:
            _tmux("send-keys", "-t", t, "q")
            screen = _screen_of(t, lambda s: "Stop and quit" in s, 10)
            assert "Recording is in progress" in screen, (t, screen)
            _tmux("send-keys", "-t", t, "y")
        for t in targets:
            marker = tmp_path / f"{t}.exit"
            deadline = time.monotonic() + 30
            while not marker.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert marker.read_text().strip() == "0", t
        wavs = sorted(tmp_path.glob("*.wav"))
        assert len(wavs) == 2, wavs
        for wav in wavs:
            assert wav.stat().st_size > 16000 * 2 * 10
            assert wav.with_suffix(".jsonl").read_text().count('"segment"') >= 1
            meta = json.loads(wav.with_suffix(".meta.json").read_text())
            assert meta["status"] == "complete" and meta["source"] == "mic"
            assert meta["duration_s"] > 10 and meta["audio"] == str(wav), meta
        assert len({json.loads(w.with_suffix(".meta.json").read_text())["pid"]
                    for w in wavs}) == 2  # each session written by its own console
    finally:
        _tmux("kill-server")
        mic.stop()


def test_killed_live_session_reopens_with_every_committed_segment(tmp_path: Path) -> None:
    """SIGKILL the whole console (and its workers) while it records: the WAV stays valid,
    the session is listed as interrupted and exports every segment committed before."""
    from tests.conftest import run_cli
    from tests.formats import parse_srt
    from tests.vmic import vmic_or_fail

    mic = vmic_or_fail()
    config = _config(tmp_path)
    exe = Path(sys.executable).with_name("transcrevai")
    _tmux("kill-server")
    env = [x for k, v in mic.env.items() for x in ("-e", f"{k}={v}")]
    _tmux("new-session", "-d", *env, "-s", "s", "-x", "100", "-y", "30",
          f"cd {ROOT} && exec {exe} --config {config} live")
    try:
        assert "REC" in _screen_until(lambda s: "REC" in s, 30)
        mic.play_async(clip_path("ptbr_dlg_mixed_4spk"))
        journal: Path | None = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = list(tmp_path.glob("*.jsonl"))
            if found and found[0].read_text().count('"segment"') >= 3:
                journal = found[0]
                break
            time.sleep(0.2)
        assert journal is not None, "no three committed phrases within 60 s"
        console = psutil.Process(int(_tmux("display-message", "-p", "-t", "s",
                                           "#{pane_pid}").strip()))
        procs = [console, *console.children(recursive=True)]
        for proc in procs:
            proc.kill()
        psutil.wait_procs(procs, timeout=10)
        committed = [json.loads(x) for x in journal.read_text().splitlines()
                     if '"segment"' in x]
    finally:
        _tmux("kill-server")
        mic.stop()
    sid = journal.stem
    listing = run_cli("--config", str(config), "sessions")
    row = next(line for line in listing.stdout.splitlines() if line.startswith(sid))
    assert row.split()[-1] == "interrupted", row
    exported = run_cli("--config", str(config), "export", sid, "--format", "json")
    assert exported.returncode == 0, exported.stderr
    segs = json.loads(exported.stdout)["segments"]
    assert [s["text"] for s in segs] == [c["text"] for c in committed]
    srt = run_cli("--config", str(config), "export", sid, "--format", "srt")
    assert len(parse_srt(srt.stdout)) >= len(committed)
    # no file is corrupted: the WAV reads whole, the metadata parses
    import soundfile as sf

    wav = journal.with_suffix(".wav")
    info = sf.info(str(wav))
    assert info.frames > 16000 * 5 and info.samplerate == 16000
    assert len(sf.read(str(wav))[0]) == info.frames
    assert json.loads(journal.with_suffix(".meta.json").read_text())["source"] == "mic"
