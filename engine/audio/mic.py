"""Live microphone input as a stream of 16 kHz mono float32 blocks.

sounddevice is imported lazily: importing it fails with OSError when libportaudio2 is
missing, and file transcription must keep working on such machines. Every failure becomes a
`MicError` with one line a user can act on; a stream that dies mid-session (device unplugged,
sound server gone, callbacks stopping) surfaces from `read()` so the caller can `rescan()` and
retry instead of waiting forever on silence.
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from engine.messages import SAMPLE_RATE

__all__ = ["InputDevice", "MicError", "Microphone", "list_input_devices", "rescan"]


class MicError(Exception):
    """The microphone cannot be used (any more); str() is one line for the user."""


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    default_samplerate: float
    max_input_channels: int
    is_default: bool


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _sd() -> ModuleType:
    """Import sounddevice on first use, so a missing PortAudio is a MicError, not a crash."""
    global _exit_hook
    try:
        import sounddevice
    except OSError:
        raise MicError("no microphone: PortAudio library not found "
                       "(install libportaudio2)") from None
    except ImportError as exc:
        raise MicError(f"no microphone: sounddevice unavailable ({_one_line(exc)})") from None
    if not _exit_hook:
        # registered after sounddevice's own handler, so it runs first
        atexit.register(_before_portaudio_exit, sounddevice)
        _exit_hook = True
    return sounddevice


_exit_hook = False


def _before_portaudio_exit(sd: ModuleType, wait_s: float = 2.0) -> None:
    """Let lost streams finish closing; if one is stuck (a hung sound server), skip
    PortAudio's exit handler: it would wait on that stream forever and the process with it."""
    deadline = time.monotonic() + wait_s
    with _closing_lock:
        pending = list(_closing)
    for t in pending:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in pending):
        atexit.unregister(sd._exit_handler)


_closing: list[threading.Thread] = []  # streams being closed in the background
_closing_lock = threading.Lock()


def _close_stream(stream: Any) -> None:
    try:
        stream.abort(ignore_errors=True)  # does not wait for buffers to drain
        stream.close(ignore_errors=True)
    except Exception:  # a lost device may fail to close; nothing left to save
        pass


def rescan(wait_s: float = 2.0) -> None:
    """Re-initialise PortAudio, which lists devices only once (a mic plugged in later,
    or a sound server started after the first import, is invisible until then).

    Waits up to `wait_s` for lost streams still closing: terminating under them may hang.
    """
    sd = _sd()
    deadline = time.monotonic() + wait_s
    with _closing_lock:
        pending = list(_closing)
    for t in pending:
        t.join(max(0.0, deadline - time.monotonic()))
    with _closing_lock:
        _closing[:] = [t for t in _closing if t.is_alive()]
    try:
        sd._terminate()
    except Exception:  # already terminated is fine
        pass
    try:
        sd._initialize()
    except Exception as exc:  # PortAudioError or OSError alike
        raise MicError(f"no microphone: PortAudio failed to start ({_one_line(exc)})") from None


def _default_input_index(sd: ModuleType) -> int:
    try:
        return int(sd.default.device[0])  # PortAudio's default input; -1 when there is none
    except (TypeError, ValueError, IndexError):
        return -1


def list_input_devices() -> list[InputDevice]:
    """The devices that can record, in PortAudio order (empty if there are none)."""
    sd = _sd()
    try:
        devices = sd.query_devices()
    except Exception as exc:
        raise MicError(f"cannot list microphones ({_one_line(exc)})") from None
    default = _default_input_index(sd)
    return [InputDevice(int(d["index"]), str(d["name"]), float(d["default_samplerate"]),
                        int(d["max_input_channels"]), int(d["index"]) == default)
            for d in devices if int(d["max_input_channels"]) > 0]


def _resolve(device: str | int | None) -> InputDevice:
    inputs = list_input_devices()
    if device is None or (isinstance(device, str) and device.strip().lower() in ("", "default")):
        for d in inputs:
            if d.is_default:
                return d
        # no declared default: the ALSA "default"/"pulse" devices are the system default
        for name in ("default", "pulse"):
            for d in inputs:
                if d.name == name:
                    return d
        raise MicError("no microphone: no default input device")
    if isinstance(device, int) or (isinstance(device, str) and device.strip().isdigit()):
        idx = int(device)
        for d in inputs:
            if d.index == idx:
                return d
        if not isinstance(device, str):
            raise MicError(f"input device {idx} not found")
    assert isinstance(device, str)
    want = device.strip()
    for match in (lambda d: d.name == want,
                  lambda d: d.name.lower() == want.lower(),
                  lambda d: want.lower() in d.name.lower()):
        found = [d for d in inputs if match(d)]
        if found:
            return found[0]
    raise MicError(f"input device {device!r} not found")


class Microphone:
    """Capture from one input device; `read()` hands out blocks in order.

    The PortAudio callback only copies and counts (it must never block); downmixing is done
    there, resampling in `read()`, on the caller's thread.
    """

    def __init__(self, device: str | int | None = None, block_s: float = 0.1, *,
                 device_rate: int | None = None, stall_s: float = 2.0,
                 max_queue_s: float = 60.0) -> None:
        """`device_rate` forces the device's sample rate (otherwise 16 kHz if accepted, else
        the device default); `stall_s` is how long without callbacks counts as a dead mic."""
        if block_s <= 0:
            raise ValueError("block_s must be > 0")
        self.device = device
        self.block_s = float(block_s)
        self.stall_s = float(stall_s)
        self._want_rate = device_rate
        self.device_info: InputDevice | None = None
        self.device_rate = 0
        self.channels = 0
        self.overflows = 0          # PortAudio input overflow flags seen in the callback
        self.frames_captured = 0    # device frames delivered by PortAudio
        self.frames_read = 0        # 16 kHz frames handed out by read()
        self.dropped_blocks = 0     # blocks dropped because nobody called read() for long
        self._queue: queue.Queue[np.ndarray] = queue.Queue()
        self._max_blocks = max(4, int(max_queue_s / self.block_s))
        self._stream: Any = None
        self._resampler: Any = None
        self._last_callback = 0.0
        self._finished = threading.Event()
        self._error: str | None = None

    # --- PortAudio thread -------------------------------------------------------------------

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status.input_overflow:
            self.overflows += 1
        self._last_callback = time.monotonic()
        self.frames_captured += frames
        if indata.shape[1] == 1:
            block = indata[:, 0].copy()
        else:
            block = indata.mean(axis=1, dtype=np.float32)
        if self._queue.qsize() >= self._max_blocks:
            self.dropped_blocks += 1
            return
        self._queue.put(block)

    def _on_finished(self) -> None:
        self._finished.set()

    # --- caller's thread --------------------------------------------------------------------

    def _pick_format(self, sd: ModuleType, dev: InputDevice) -> tuple[int, int]:
        channels_options = [1] + ([min(dev.max_input_channels, 2)]
                                  if dev.max_input_channels > 1 else [])
        rates = ([self._want_rate] if self._want_rate
                 else [SAMPLE_RATE, int(round(dev.default_samplerate))])
        last: BaseException | None = None
        for rate in rates:
            for ch in channels_options:
                try:
                    sd.check_input_settings(device=dev.index, channels=ch, samplerate=rate,
                                            dtype="float32")
                    return rate, ch
                except Exception as exc:  # PortAudioError / ValueError
                    last = exc
        raise MicError(f"input device {dev.name!r} cannot record "
                       f"({_one_line(last) if last else 'no usable format'})")

    def start(self) -> None:
        """Open the device; raises MicError (one line) if it cannot record."""
        if self._stream is not None:
            return
        sd = _sd()
        dev = _resolve(self.device)
        rate, channels = self._pick_format(sd, dev)
        self.device_info, self.device_rate, self.channels = dev, rate, channels
        self._resampler = None
        if rate != SAMPLE_RATE:
            import soxr
            # one stream for the whole session: state carries over, so no clicks at borders
            self._resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32",
                                                  quality="HQ")
        self._finished.clear()
        self._error = None
        while not self._queue.empty():  # a retry after a lost device starts afresh
            self._queue.get_nowait()
        stream = None
        try:
            stream = sd.InputStream(device=dev.index, samplerate=rate, channels=channels,
                                    dtype="float32", blocksize=max(1, int(rate * self.block_s)),
                                    callback=self._callback, finished_callback=self._on_finished)
            self._last_callback = time.monotonic()
            stream.start()
        except Exception as exc:  # PortAudioError and friends
            if stream is not None:
                _close_stream(stream)
            raise MicError(f"cannot open input device {dev.name!r} ({_one_line(exc)})") from None
        self._stream = stream

    def _health(self) -> str | None:
        """Why the stream is dead, or None while it still looks alive."""
        stream = self._stream
        if self._finished.is_set():
            return "stream stopped"
        try:
            if stream is not None and not stream.active:
                return "stream inactive"
        except Exception as exc:
            return _one_line(exc)
        silent = time.monotonic() - self._last_callback
        if silent > max(self.stall_s, 3 * self.block_s):
            return f"no audio for {silent:.1f} s"
        return None

    def read(self, timeout: float) -> np.ndarray | None:
        """The next 16 kHz mono block, or None if none arrived within `timeout` seconds.

        Raises MicError once the device is lost, so the caller can rescan() and retry.
        """
        if self._stream is None:
            if self._error:
                raise MicError(self._error)
            raise MicError("microphone not started")
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            try:
                block = self._queue.get(timeout=max(0.0, min(0.25, deadline - time.monotonic())))
            except queue.Empty:
                why = self._health()
                if why is not None:
                    name = self.device_info.name if self.device_info else self.device
                    self._error = f"microphone {name!r} lost: {why}"
                    self._close(wait_s=0.0)
                    raise MicError(self._error) from None
                if time.monotonic() >= deadline:
                    return None
                continue
            if self._resampler is not None:
                block = self._resampler.resample_chunk(block, last=False)
                if not len(block):
                    continue
            self.frames_read += len(block)
            return block.astype(np.float32, copy=False)

    @property
    def running(self) -> bool:
        return self._stream is not None

    def _close(self, wait_s: float) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            # in a thread: with a hung sound server abort() blocks until the server wakes
            t = threading.Thread(target=_close_stream, args=(stream,), name="mic-close",
                                 daemon=True)
            with _closing_lock:
                _closing[:] = [c for c in _closing if c.is_alive()]
                _closing.append(t)
            t.start()
            t.join(wait_s)

    def stop(self) -> None:
        """Close the device; blocks still queued are discarded."""
        self._close(wait_s=2.0)
        while not self._queue.empty():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    def __enter__(self) -> Microphone:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
