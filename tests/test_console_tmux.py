"""The console in a real terminal: tmux runs `transcrevai replay`, we read the screen."""

from __future__ import annotations

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
    t0, screen = time.monotonic(), ""
    while time.monotonic() - t0 < limit:
        screen = _tmux("capture-pane", "-p", "-t", "s")
        if pred(screen):  # type: ignore[operator]
            return screen
        time.sleep(0.25)
    return screen


def test_replay_in_tmux_shows_speakers_text_and_gauges_then_quits(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("transcrevai")
    marker = tmp_path / "exit-code"
    cmd = f"cd {ROOT} && {exe} replay {clip_path('ptbr_dlg_mixed_4spk')} --speed fast; " \
          f"echo $? > {marker}"
    _tmux("kill-server")
    _tmux("new-session", "-d", "-s", "s", "-x", "80", "-y", "24", cmd)
    try:
        first = _screen_until(lambda s: "worker" in s, 10)
        assert "capture" in first and "transcription" in first
        screen = _screen_until(lambda s: "SPEAKER_01" in s and "raposa" in s, 120)
        assert "SPEAKER_00" in screen and "SPEAKER_01" in screen
        assert "raposa" in screen  # text from the clip
        assert "/512MB" in screen  # memory gauges against their limits
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


def test_live_in_tmux_records_from_the_mic_and_quits_after_confirming(tmp_path: Path) -> None:
    """`transcrevai live` starts recording at once; q asks first, y stops and keeps the WAV."""
    from tests.vmic import VMicError, require_vmic, start_vmic

    require_vmic()
    try:
        mic = start_vmic()
    except VMicError as exc:
        pytest.fail(f"virtual mic failed to start: {exc}", pytrace=False)
    config = tmp_path / "c.toml"
    config.write_text(f'[paths]\nmodels_dir = "{ROOT / "models"}"\n'
                      f'recordings_dir = "{tmp_path}"\nlog_dir = "{tmp_path}/logs"\n')
    exe = Path(sys.executable).with_name("transcrevai")
    marker = tmp_path / "exit-code"
    cmd = f"cd {ROOT} && {exe} --config {config} live; echo $? > {marker}"
    _tmux("kill-server")
    env = [x for k, v in mic.env.items() for x in ("-e", f"{k}={v}")]
    _tmux("new-session", "-d", *env, "-s", "s", "-x", "100", "-y", "30", cmd)
    try:
        screen = _screen_until(lambda s: "REC" in s, 30)
        assert "REC" in screen, screen
        mic.play(clip_path("ptbr_fleurs_000"))
        screen = _screen_until(lambda s: "informações" in s or "informacoes" in s, 30)
        assert "SPEAKER_00" in screen or "informa" in screen, screen
        _tmux("send-keys", "-t", "s", "q")
        screen = _screen_until(lambda s: "Stop and quit" in s, 10)
        assert "Recording is in progress" in screen
        _tmux("send-keys", "-t", "s", "y")
        deadline = time.monotonic() + 20
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.read_text().strip() == "0"
        wavs = list(tmp_path.glob("*.wav"))
        assert len(wavs) == 1 and wavs[0].stat().st_size > 16000 * 2 * 10
        assert wavs[0].with_suffix(".jsonl").read_text().count('"segment"') >= 1
    finally:
        _tmux("kill-server")
        mic.stop()
