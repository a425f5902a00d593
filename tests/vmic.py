"""A real virtual microphone for tests: a private PulseAudio server with a null sink.

Whatever is played into the sink is heard by the default source, which PortAudio reaches
through ALSA's "pulse"/"default" devices, so the whole capture path runs for real. The server
itself is started by `.ci/vmic` (one recipe for CI and tests). Processes that should hear the
mic need `VMic.env` in their environment *before* they import sounddevice.
"""

from __future__ import annotations

import ctypes.util
import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "vmic"
SINK = "vmic_sink"
_ENV_KEYS = ("PULSE_SERVER", "XDG_RUNTIME_DIR", "VMIC_DIR")


class VMicError(Exception):
    """The virtual microphone could not be started or used; str() is one line."""


def _pactl_answers(env: dict[str, str]) -> bool:
    try:
        info = subprocess.run(["pactl", "list", "short", "sinks"], env={**os.environ, **env},
                              capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return info.returncode == 0 and any(
        line.split("\t")[1:2] == [SINK] for line in info.stdout.splitlines())


@dataclass
class VMic:
    """A running virtual mic; `stop()` tears it down only if this object started it."""

    env: dict[str, str]
    owned: bool
    _tmp: Path | None = None
    _children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def server(self) -> str:
        return self.env["PULSE_SERVER"]

    def _child_env(self) -> dict[str, str]:
        env = {**os.environ, **self.env}
        env.pop("PULSE_SINK", None)
        return env

    def play_async(self, audio: str | os.PathLike[str] | np.ndarray,
                   sample_rate: int = 16000) -> subprocess.Popen[bytes]:
        """Start playing into the mic; paplay/pacat pace themselves in real time.

        A file goes through paplay; an array (float, mono or frames x channels) is piped to
        pacat by a thread, so no temporary file is left behind.
        """
        env = self._child_env()
        if not isinstance(audio, np.ndarray):
            path = os.fspath(audio)
            if not os.path.isfile(path):
                raise VMicError(f"{path}: no such file")
            try:
                proc = subprocess.Popen(["paplay", "-d", SINK, path], env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
            except OSError as exc:
                raise VMicError(f"cannot run paplay: {exc}") from None
            self._children.append(proc)
            return proc
        data = np.asarray(audio, dtype="<f4")
        channels = 1 if data.ndim == 1 else int(data.shape[1])
        try:
            proc = subprocess.Popen(
                ["pacat", "-p", "-d", SINK, "--raw", "--format=float32le",
                 f"--rate={int(sample_rate)}", f"--channels={channels}"],
                env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE)
        except OSError as exc:
            raise VMicError(f"cannot run pacat: {exc}") from None
        payload = np.ascontiguousarray(data).tobytes()

        def feed() -> None:
            assert proc.stdin is not None
            try:
                proc.stdin.write(payload)
            except (BrokenPipeError, ValueError):
                pass
            finally:
                try:
                    proc.stdin.close()
                except (BrokenPipeError, ValueError):
                    pass

        threading.Thread(target=feed, name="vmic-feed", daemon=True).start()
        self._children.append(proc)
        return proc

    def play(self, audio: str | os.PathLike[str] | np.ndarray, sample_rate: int = 16000,
             block: bool = True) -> subprocess.Popen[bytes]:
        """Play into the mic; with block=True wait until the player has drained."""
        proc = self.play_async(audio, sample_rate)
        if block:
            self.wait(proc)
        return proc

    def wait(self, proc: subprocess.Popen[bytes], timeout: float = 600) -> None:
        """Wait for a player; raise if it failed (a silent failure would look like a dead mic)."""
        proc.wait(timeout=timeout)
        err = proc.stderr.read() if proc.stderr else b""
        if proc.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            raise VMicError(f"player failed ({proc.returncode}): {lines[-1] if lines else ''}")

    def stop(self) -> None:
        """Stop players we started and, if we own it, the server (by pid, via .ci/vmic)."""
        for proc in self._children:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            if proc.stderr:
                proc.stderr.close()
        self._children.clear()
        if self.owned:
            subprocess.run(["bash", str(SCRIPT), "stop"], env={**os.environ, **self.env},
                           capture_output=True, timeout=30)
            self.owned = False
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> VMic:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_vmic(reuse: bool = True) -> VMic:
    """Reuse the mic named by $PULSE_SERVER (e.g. CI's) if it answers, else start a private one.

    A server that answers but has no `vmic_sink` is not reused: playing into it would reach
    somebody's real speakers.
    """
    if reuse and os.environ.get("PULSE_SERVER"):
        env = {k: os.environ[k] for k in _ENV_KEYS if os.environ.get(k)}
        if _pactl_answers(env):
            return VMic(env=env, owned=False)
    if not shutil.which("pulseaudio") or not shutil.which("pactl"):
        raise VMicError("PulseAudio not installed (pulseaudio, pulseaudio-utils)")
    # short path: a unix socket path is limited to 108 bytes
    tmp = Path(tempfile.mkdtemp(prefix="vmic-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k not in _ENV_KEYS}
    env["VMIC_DIR"] = str(tmp / "s")
    try:
        out = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True,
                             text=True, timeout=30)
    except subprocess.TimeoutExpired:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
        raise VMicError(".ci/vmic start timed out") from None
    if out.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
        lines = out.stderr.strip().splitlines()
        raise VMicError(lines[-1] if lines else f".ci/vmic start failed ({out.returncode})")
    found: dict[str, str] = {}
    for stmt in out.stdout.replace("\n", ";").split(";"):
        stmt = stmt.strip()
        if stmt.startswith("export ") and "=" in stmt:
            key, _, value = stmt[len("export "):].partition("=")
            found[key] = value
    return VMic(env={k: found[k] for k in _ENV_KEYS if k in found}, owned=True, _tmp=tmp)


def missing_parts() -> list[str]:
    """What this machine lacks for a virtual mic (empty when everything is there)."""
    missing = []
    for tool, pkg in (("pulseaudio", "pulseaudio"), ("pactl", "pulseaudio-utils"),
                      ("paplay", "pulseaudio-utils"), ("pacat", "pulseaudio-utils")):
        if not shutil.which(tool):
            missing.append(f"{tool} ({pkg})")
    if not ctypes.util.find_library("portaudio"):
        missing.append("PortAudio (libportaudio2)")
    if not glob.glob("/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so") and not glob.glob(
            "/usr/lib/alsa-lib/libasound_module_pcm_pulse.so"):
        missing.append("ALSA pulse plugin (libasound2-plugins)")
    return list(dict.fromkeys(missing))


def require_vmic() -> None:
    """Skip (locally) or fail (in CI) a test that needs the virtual mic on a machine without it.

    CI must never pass silently by skipping the only real microphone tests.
    """
    import pytest

    missing = missing_parts()
    if not missing:
        return
    reason = "virtual mic unavailable, missing: " + ", ".join(missing)
    if "CI" in os.environ:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def wait_until(pred: Callable[[], object], timeout: float, step: float = 0.02) -> bool:
    """Poll `pred()` until true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def vmic_or_fail(reuse: bool = True, what: str = "virtual mic") -> VMic:
    """The virtual microphone for a test: skipped outside CI when parts are missing (see
    require_vmic), a test failure when the server does not start. reuse=False: a server of
    the test's own (to kill or freeze, or a second one)."""
    import pytest

    require_vmic()
    try:
        return start_vmic(reuse=reuse)
    except VMicError as exc:
        pytest.fail(f"{what} failed to start: {exc}", pytrace=False)


def finish_playing(runner: Any, player: Any, play_limit_s: float, done_limit_s: float) -> None:
    """Pump the engine until the clip has played, a phrase-ending pause, then stop the live
    stream and pump until its last results are in (each wait bounded: a failure, not a hang)."""
    deadline = time.monotonic() + play_limit_s
    while player.poll() is None:
        assert time.monotonic() < deadline, "the clip did not finish playing"
        runner.pump(0.05)
    end = time.monotonic() + 1.5  # the last phrase's pause
    while time.monotonic() < end:
        runner.pump(0.05)
    runner.stop_live()
    deadline = time.monotonic() + done_limit_s
    while not runner.live.done:
        assert time.monotonic() < deadline, "session did not finish"
        runner.pump(0.05)


def start_recording(runner: Any, limit_s: float = 20.0) -> Any:
    """A microphone session in PT, once capture says it is recording (its LiveStream)."""
    live = runner.start_live(None, "pt")
    deadline = time.monotonic() + limit_s
    while live.mic_state != "recording":
        assert time.monotonic() < deadline, f"mic not recording: {live.error}"
        runner.pump(0.05)
    return live
