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
