"""The microphone through a real virtual mic (PulseAudio null sink -> ALSA -> PortAudio).

Each microphone runs in a child process (`python -m tests.test_mic MODE ...`) started with the
vmic's environment: PortAudio reads PULSE_SERVER and lists devices once, when sounddevice is
first imported, and this pytest process may have imported it long before.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tests.vmic import VMic, VMicError, require_vmic, start_vmic, vmic_or_fail

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "tests" / "data" / "wav" / "ptbr_fleurs_000.wav"
RATE = 16000


def _start() -> VMic:
    require_vmic()
    try:
        return start_vmic()
    except VMicError as exc:  # everything is installed, so this is a real failure
        pytest.fail(f"virtual mic failed to start: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def vmic() -> Iterator[VMic]:
    mic = _start()
    yield mic
    mic.stop()


@pytest.fixture()
def private_vmic() -> Iterator[VMic]:
    """A server of our own, for tests that kill or freeze it."""
    mic = vmic_or_fail(reuse=False)
    yield mic
    pid = _daemon_pid(mic)
    if pid:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    mic.stop()


def _daemon_pid(mic: VMic) -> int | None:
    try:
        return int((Path(mic.env["VMIC_DIR"]) / "pulse" / "pid").read_text())
    except (KeyError, OSError, ValueError):
        return None


class Child:
    """A `python -m tests.test_mic MODE` process speaking JSON lines."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.test_mic", *args],
                                     cwd=ROOT, env={**os.environ, **env}, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def message(self, timeout: float = 20) -> dict[str, Any]:
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            self.proc.kill()
            pytest.fail(f"child silent for {timeout} s: {self.proc.communicate()[1][-2000:]}")
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            pytest.fail(f"child ended ({self.proc.returncode}): "
                        f"{self.proc.stderr.read()[-2000:] if self.proc.stderr else ''}")
        return json.loads(line)

    def finish(self, timeout: float = 30) -> None:
        """Wait for the child to exit: one that hangs at exit is a bug too."""
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            err = self.proc.stderr.read()[-2000:] if self.proc.stderr else ""
            pytest.fail(f"child still running {timeout} s after its work: {err}")
        else:  # exited, and cleanly: a crash at exit is a bug too
            if self.proc.returncode != 0:
                err = self.proc.stderr.read()[-2000:] if self.proc.stderr else ""
                pytest.fail(f"child exited with {self.proc.returncode}: {err}")
        finally:
            for f in (self.proc.stdout, self.proc.stderr):
                if f:
                    f.close()


def _clip() -> np.ndarray:
    data, rate = sf.read(str(CLIP), dtype="float32")
    assert rate == RATE and data.ndim == 1
    return data


def _align(recorded: np.ndarray, played: np.ndarray) -> tuple[int, float]:
    """(lag of `played` inside `recorded`, normalised cross-correlation at that lag)."""
    from scipy.signal import correlate

    xc = correlate(recorded, played, mode="valid", method="fft")
    lag = int(np.argmax(xc))
    seg = recorded[lag:lag + len(played)]
    ncc = float(np.dot(seg, played) / (np.linalg.norm(seg) * np.linalg.norm(played) + 1e-12))
    return lag, ncc


def _record_while_playing(vmic: VMic, tmp_path: Path, audio: Path | np.ndarray,
                          seconds: float, device_rate: int | None = None) -> dict[str, Any]:
    out = tmp_path / "rec.npy"
    child = Child(vmic.env, "record", str(seconds), str(out), str(device_rate or 0))
    try:
        ready = child.message()
        assert ready["ready"], ready
        t_play = time.monotonic()
        player = vmic.play_async(audio)
        vmic.wait(player, timeout=seconds + 30)
        stats = child.message(timeout=seconds + 30)
    finally:
        child.finish()
    stats["t_play"] = t_play
    stats["audio"] = np.load(out)
    return stats


def _latency(stats: dict[str, Any], lag: int) -> float:
    """Seconds from launching the player to the clip's first sample being captured: the
    block holding sample `lag` came out of read() at t; that sample was captured earlier by
    however many samples followed it in the block."""
    for t, end in stats["blocks"]:
        if end > lag:
            return float(t - (end - lag) / RATE - stats["t_play"])
    raise AssertionError("lag beyond the recording")


def test_records_played_clip_exactly(vmic: VMic, tmp_path: Path) -> None:
    clip = _clip()
    stats = _record_while_playing(vmic, tmp_path, CLIP, len(clip) / RATE + 1.5)
    rec = stats["audio"]
    lag, ncc = _align(rec, clip)
    latency = _latency(stats, lag)
    print(f"\nncc={ncc:.5f} lag={lag} latency={latency * 1000:.0f} ms "
          f"frames={stats['frames_read']} wall={stats['elapsed']:.3f} s "
          f"overflows={stats['overflows']} device_rate={stats['device_rate']}")
    assert stats["device_rate"] == RATE
    assert ncc >= 0.99
    assert stats["overflows"] == 0 and stats["dropped"] == 0
    # real time: the stream delivered what the wall clock says, within 2 blocks
    assert abs(stats["frames_read"] - stats["elapsed"] * RATE) <= 0.2 * RATE
    assert stats["frames_captured"] == stats["frames_read"] == len(rec)
    assert 0 <= latency < 1.0


def test_resampled_device_rate(vmic: VMic, tmp_path: Path) -> None:
    """A device that cannot run at 16 kHz (forced to 44.1 kHz): the streaming resampler
    keeps its state across blocks, so the result still matches the clip sample by sample."""
    clip = _clip()[: 5 * RATE]
    stats = _record_while_playing(vmic, tmp_path, clip, 6.5, device_rate=44100)
    rec = stats["audio"]
    lag, ncc = _align(rec, clip)
    seg = rec[lag:lag + len(clip)]
    resid = seg - clip * (np.dot(seg, clip) / np.dot(clip, clip))
    print(f"\nresampled ncc={ncc:.5f} residual rms={np.sqrt(np.mean(resid ** 2)):.5f} "
          f"max={np.max(np.abs(resid)):.4f} overflows={stats['overflows']}")
    assert stats["device_rate"] == 44100
    assert ncc >= 0.99
    assert stats["overflows"] == 0
    assert abs(stats["frames_captured"] / 44100 - stats["frames_read"] / RATE) < 0.05
    # a click at a block border would stand out against the residual's typical size
    assert np.max(np.abs(resid)) < 0.05


def test_devices_and_device_not_found(vmic: VMic) -> None:
    child = Child(vmic.env, "devices", "no-such-mic")
    try:
        report = child.message()
    finally:
        child.finish()
    defaults = [d for d in report["devices"] if d["is_default"]]
    assert len(defaults) == 1 and defaults[0]["max_input_channels"] > 0
    assert report["not_found"] == "input device 'no-such-mic' not found"
    assert report["bad_index"] == "input device 999 not found"


def test_rescan_sees_a_server_started_later(vmic: VMic, tmp_path: Path) -> None:
    """sounddevice imported while no server answers lists nothing; rescan() fixes that."""
    empty = tmp_path / "run"
    empty.mkdir(mode=0o700)
    env = {"PULSE_SERVER": f"unix:{empty}/none", "XDG_RUNTIME_DIR": str(empty),
           "VMIC_LATER": vmic.env["PULSE_SERVER"]}
    child = Child(env, "rescan")
    try:
        report = child.message()
    finally:
        child.finish()
    assert report["before"] == "no microphone: no default input device"
    assert report["after_default"] and report["frames"] > 0


def test_server_crash_raises_then_retry_works(private_vmic: VMic) -> None:
    """The sound server dies (SIGKILL): read() raises MicError; once a server is back,
    rescan() + start() on the same Microphone records again."""
    pid = _daemon_pid(private_vmic)
    assert pid
    child = Child(private_vmic.env, "lost", "retry")
    try:
        assert child.message()["ready"]
        os.kill(pid, signal.SIGKILL)
        t_kill = time.monotonic()
        report = child.message()
        restarted = subprocess.run(["bash", str(ROOT / ".ci" / "vmic"), "start"],
                                   env={**os.environ, **private_vmic.env},
                                   capture_output=True, text=True, timeout=30)
        assert restarted.returncode == 0, restarted.stderr
        child.tell("retry")
        again = child.message()
    finally:
        child.finish()
    print(f"\nserver killed: {report}; retry: {again}")
    assert report["error"].startswith("microphone 'default' lost: ")
    assert "\n" not in report["error"]
    assert report["at"] - t_kill < 3.0
    assert again["frames"] > 0 and again["overflows"] == 0


def test_frozen_server_is_a_stall(private_vmic: VMic) -> None:
    """A hung server (SIGSTOP) sends no callbacks at all: read() gives up after stall_s."""
    pid = _daemon_pid(private_vmic)
    assert pid
    child = Child(private_vmic.env, "lost")
    try:
        assert child.message()["ready"]
        os.kill(pid, signal.SIGSTOP)
        t_stop = time.monotonic()
        report = child.message()
        os.kill(pid, signal.SIGCONT)
    finally:
        child.finish()
    print(f"\nserver frozen: {report}")
    assert report["error"] == "microphone 'default' lost: no audio for 2.0 s"
    assert 1.9 <= report["at"] - t_stop < 3.5


# --- child side ---------------------------------------------------------------------------


def _say(**kw: Any) -> None:
    print(json.dumps(kw), flush=True)


def _child(argv: list[str]) -> None:
    from engine.audio.mic import MicError, Microphone, list_input_devices, rescan

    mode = argv[0]
    if mode == "record":
        seconds, out, rate = float(argv[1]), argv[2], int(argv[3]) or None
        mic = Microphone(None, 0.1, device_rate=rate)
        mic.start()
        blocks = []
        first = mic.read(5.0)
        assert first is not None
        t0 = time.monotonic() - len(first) / RATE  # when the first sample was captured
        blocks.append(first)
        _say(ready=True)
        marks = [(time.monotonic(), len(first))]
        while time.monotonic() - t0 < seconds:
            b = mic.read(1.0)
            if b is not None:
                blocks.append(b)
                marks.append((time.monotonic(), marks[-1][1] + len(b)))
        elapsed = time.monotonic() - t0
        mic.stop()
        audio = np.concatenate(blocks)
        np.save(out, audio)
        _say(frames_read=mic.frames_read, frames_captured=mic.frames_captured,
             overflows=mic.overflows, dropped=mic.dropped_blocks, device_rate=mic.device_rate,
             elapsed=elapsed, blocks=marks)
    elif mode == "devices":
        devices = [d.__dict__ for d in list_input_devices()]
        errors = []
        for dev in (argv[1], 999):
            try:
                Microphone(dev).start()
                errors.append("")
            except MicError as exc:
                errors.append(str(exc))
        _say(devices=devices, not_found=errors[0], bad_index=errors[1])
    elif mode == "rescan":
        try:
            Microphone(None).start()
            before = ""
        except MicError as exc:
            before = str(exc)
        os.environ["PULSE_SERVER"] = os.environ["VMIC_LATER"]
        rescan()
        after = any(d.is_default for d in list_input_devices())
        mic = Microphone(None)
        mic.start()
        got = mic.read(3.0)
        mic.stop()
        _say(before=before, after_default=after, frames=0 if got is None else len(got))
    elif mode == "lost":
        mic = Microphone(None, 0.1)
        mic.start()
        assert mic.read(5.0) is not None
        _say(ready=True)
        try:
            while True:
                mic.read(0.5)
        except MicError as exc:
            _say(error=str(exc), at=time.monotonic())
        if argv[1:] == ["retry"]:
            sys.stdin.readline()
            rescan()
            mic.start()
            frames = 0
            t0 = time.monotonic()
            while time.monotonic() - t0 < 1.0:
                got = mic.read(1.0)
                frames += 0 if got is None else len(got)
            _say(frames=frames, overflows=mic.overflows)
        mic.stop()
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    _child(sys.argv[1:])
