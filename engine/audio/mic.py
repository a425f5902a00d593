"""Live microphone input as a stream of 16 kHz mono float32 blocks.

sounddevice is imported lazily: importing it fails with OSError when libportaudio2 is
missing, and file transcription must keep working on such machines. Every failure becomes a
`MicError` with one line a user can act on; a stream that dies mid-session (device unplugged,
sound server gone, callbacks stopping) surfaces from `read()` so the caller can `rescan()` and
retry instead of waiting forever on silence.
"""

from __future__ import annotations

import atexit
import glob
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from engine.messages import SAMPLE_RATE

__all__ = ["NO_SOUND_SERVER_FIX", "InputDevice", "MicError", "Microphone", "SoundServer",
           "input_label", "list_input_devices", "no_sound_server", "query_sound_server",
           "rescan", "use_source"]


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


# --- the PulseAudio server behind the ALSA "pulse"/"default" devices ---------------------
#
# PortAudio reaches PulseAudio (or pipewire-pulse) through ALSA's pulse plugin, which is a
# libpulse client: PULSE_SERVER picks the server (a laptop's, forwarded over `ssh -R`) and
# PULSE_SOURCE the source; a PortAudio device index cannot name either.

NO_SOUND_SERVER_FIX = ("start pulseaudio (pulseaudio --start), or forward a laptop's: on the "
                       "laptop `pactl load-module module-native-protocol-tcp port=4713 "
                       "listen=127.0.0.1 auth-ip-acl=127.0.0.1` and "
                       "`ssh -R 4713:localhost:4713 HOST`, then PULSE_SERVER=tcp:localhost:4713 "
                       "here")
PACTL_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class SoundServer:
    """What `pactl info` (or, without pactl, a socket probe) says about the sound server."""

    target: str              # PULSE_SERVER, or "default socket"
    reachable: bool
    error: str = ""          # one line, when not reachable
    name: str = ""           # "pulseaudio", "PulseAudio (on PipeWire 0.3.65)"
    address: str = ""        # pactl's "Server String"
    host: str = ""           # the server's host name
    default_source: str = ""
    checked_with: str = "pactl"  # pactl | socket


def use_source(source: str) -> None:
    """Record from this Pulse source in this process (PULSE_SOURCE, read by libpulse when the
    ALSA pulse plugin connects); "" keeps the environment's, i.e. the server's default."""
    if source:
        os.environ["PULSE_SOURCE"] = source


def _native_socket_default() -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    for path in (os.path.join(runtime, "pulse", "native"), "/var/run/pulse/native"):
        if os.path.exists(path):
            return path
    return os.path.join(runtime, "pulse", "native")


def _probe_socket(server: str, timeout: float) -> str:
    """Connect to the first entry of a PULSE_SERVER value (or the default socket) without
    libpulse; "" when something listens there, else why not (one line)."""
    entry = server.split()[0] if server.strip() else ""
    if entry.startswith("{"):  # "{machine-id}unix:/path": only for that machine
        entry = entry.split("}", 1)[-1]
    try:
        if not entry or entry.startswith("unix:") or entry.startswith("/"):
            path = entry[5:] if entry.startswith("unix:") else (entry or _native_socket_default())
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(path)
            return ""
        for prefix in ("tcp4:", "tcp6:", "tcp:"):
            if entry.startswith(prefix):
                entry = entry[len(prefix):]
                break
        host, _, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        with socket.create_connection((host.strip("[]") or "localhost", int(port or 4713)),
                                      timeout=timeout):
            return ""
    except (OSError, ValueError) as exc:
        return str(exc).strip() or type(exc).__name__


def query_sound_server(timeout: float = PACTL_TIMEOUT_S) -> SoundServer:
    """Ask the sound server this process would use who it is (bounded by `timeout`, so a
    hung server or a dead tunnel cannot hang the caller)."""
    target = os.environ.get("PULSE_SERVER") or "default socket"
    pactl = shutil.which("pactl")
    if pactl is None:  # pulseaudio-utils is optional: is anything listening at least?
        why = _probe_socket(os.environ.get("PULSE_SERVER", ""), timeout)
        return SoundServer(target, not why, f"{target}: {why}" if why else "",
                           checked_with="socket")
    try:
        proc = subprocess.run([pactl, "info"], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return SoundServer(target, False, f"{target}: no answer within {timeout:.0f} s")
    except OSError as exc:
        return SoundServer(target, False, f"pactl failed: {_one_line(exc)}")
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["not reachable"])[-1]
        return SoundServer(target, False, f"{target}: {why}")
    info = {k.strip(): v.strip() for k, v in
            (ln.split(":", 1) for ln in proc.stdout.splitlines() if ":" in ln)}
    return SoundServer(target, True, name=info.get("Server Name", ""),
                       address=info.get("Server String", ""), host=info.get("Host Name", ""),
                       default_source=info.get("Default Source", ""))


def _has_alsa_capture() -> bool:
    """A sound card with a capture device, usable without a sound server."""
    return bool(glob.glob("/dev/snd/pcmC*D*c"))


def no_sound_server(timeout: float = PACTL_TIMEOUT_S) -> str | None:
    """One line saying there is no sound server and how to fix it, or None when recording
    can work: a server answers, or (PULSE_SERVER unset) a sound card can be used directly."""
    found = query_sound_server(timeout)
    if found.reachable:
        return None
    if not os.environ.get("PULSE_SERVER") and _has_alsa_capture():
        return None
    return f"no sound server ({found.error}); fix: {NO_SOUND_SERVER_FIX}"


def input_label(device: InputDevice | None, server: SoundServer | None = None) -> str:
    """Where a live recording comes from, short enough for the status bar: "SOURCE @ SERVER"
    for a Pulse device ("vmic @ tcp:localhost:4713"), else the ALSA device's name."""
    name = device.name if device else "default"
    if device is not None and name not in ("default", "pulse") and "pulse" not in name.lower():
        return name  # a sound card opened directly: no sound server involved
    env_server = os.environ.get("PULSE_SERVER", "").strip()
    if server is None and not (os.environ.get("PULSE_SOURCE") and env_server):
        server = query_sound_server(2.0)
    source = (os.environ.get("PULSE_SOURCE") or (server.default_source if server else "")
              or "default")
    where = env_server.split()[0] if env_server else "local"
    if where.startswith("{"):
        where = where.split("}", 1)[-1]
    if server is not None and server.reachable and server.host and where == "local":
        where = server.host
    return f"{source} @ {where}"
