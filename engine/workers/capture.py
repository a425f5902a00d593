"""Capture worker: turns a source (a file or the microphone) into audio chunks.

Chunks go straight to the transcription and diarization inboxes (one queue hop per stage).
Capture keeps the chunks transcription has not acknowledged yet, and reads at most
`max_read_ahead_s` ahead of it (backpressure: memory stays bounded on long files); a
restarted consumer gets exactly the audio it had not finished, from those chunks or, for
what is no longer held (diarization acknowledges a file only at its end), read again from
the file.

A microphone stream is written to its WAV as it is captured, and that file is what a
restarted consumer (or a restarted capture) reads back: nothing is held in memory for
re-sending, and a crash of this process loses only what the device delivered while no
capture process was running.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.audio.mic import (
    MicError,
    Microphone,
    input_label,
    no_sound_server,
    rescan,
    use_source,
)
from engine.audio.recorder import RecorderError, WavRecorder
from engine.audio.source import (
    AudioFileError,
    AudioInfo,
    probe,
    read_blocks,
    truncated_message,
)
from engine.channel import Sender
from engine.config import Config
from engine.messages import (
    SAMPLE_RATE,
    Acked,
    Attach,
    AudioChunk,
    EndOfStream,
    EngineEvent,
    InputDevices,
    ListDevices,
    MicLevel,
    MicStatus,
    OpenFile,
    Pace,
    Pause,
    Resend,
    Role,
    Seek,
    StopStream,
    StreamError,
    StreamOpened,
    StreamRewound,
    StreamStart,
    WorkerInput,
)
from engine.workers.base import Handler

LEVEL_EVERY_S = 0.1


@dataclass
class _Consumer:
    role: Role
    outputs: dict[Role, Sender]
    epoch: int = 0
    acked: int = 0
    skip_below: int = 0  # a restarted capture: this consumer already has audio before this
    # sent a rewind (a seek) and not yet heard it was done: its acks still come from the
    # audio before the seek, so they are ignored
    rewinding: bool = False

    def put(self, msg: object) -> None:
        """Send to the consumer's current channel (replaced when the consumer restarts)."""
        self.outputs[self.role].put(msg)


@dataclass
class _Stream:
    sid: int
    info: AudioInfo
    language: str | None
    realtime: bool
    speed: float
    blocks: Iterator[np.ndarray]
    consumers: dict[Role, _Consumer]
    offset: int = 0
    seq: int = 0
    done_reading: bool = False
    retained: deque[AudioChunk] = field(default_factory=deque)
    t0: float = field(default_factory=time.monotonic)
    live: bool = False
    block_samples: int = 0  # the read size, so a re-read gives the very same chunks


def _why_no_mic(exc: MicError, device: str | None) -> str:
    """A microphone that never opened: "no sound server" with its fix when that is the cause
    (PortAudio alone would only say there is no default input); a device asked for by name
    is reported as such."""
    if device:
        return str(exc)
    server = no_sound_server()
    if server:
        return server
    source = os.environ.get("PULSE_SOURCE")
    if source:
        return f"{exc} (source {source!r}: is it in `pactl list short sources`?)"
    return str(exc)


@dataclass
class _MicStream:
    sid: int
    path: str
    language: str | None
    device: str | None
    consumers: dict[Role, _Consumer]
    recorder: WavRecorder
    mic: Microphone | None = None
    offset: int = 0  # samples in the WAV (and sent)
    seq: int = 0
    backlog: Iterator[np.ndarray] | None = None  # a resumed stream: the WAV read back first
    backlog_at: int = 0
    stopping: bool = False
    done: bool = False
    retry_at: float = 0.0
    retry_delay: float = 0.0
    ever_opened: bool = False
    level_at: float = 0.0
    level_sq: float = 0.0
    level_n: int = 0
    level_peak: float = 0.0


class CaptureHandler(Handler):
    def __init__(self, config: Config, outputs: Mapping[Role, Sender]) -> None:
        self.block = max(1, int(config.engine.chunk_s * SAMPLE_RATE))
        self.max_ahead = int(config.engine.max_read_ahead_s * SAMPLE_RATE)
        self.outputs: dict[Role, Sender] = dict(outputs)
        self.streams: dict[int, _Stream] = {}
        self.mics: dict[int, _MicStream] = {}
        self.live = config.live
        use_source(config.live.source)  # before PortAudio connects to the sound server
        self.live_block = max(1, int(config.live.block_s * SAMPLE_RATE))
        self.fed_s = 0.0
        self.paused_at: float | None = None

    def load(self) -> str:
        return "file reader + mic"

    # ---------------------------------------------------------------- messages
    def handle(self, msg: WorkerInput) -> Iterator[EngineEvent]:
        match msg:
            case OpenFile(source="mic"):
                yield from self._open_mic(msg)
            case OpenFile():
                yield from self._open(msg)
            case ListDevices():
                yield self._devices()
            case StopStream(stream_id=sid) if sid in self.mics:
                self.mics[sid].stopping = True
            case StopStream(stream_id=sid) if sid in self.streams:
                stopped = self.streams[sid]
                if not stopped.done_reading:  # a replay closed mid-way: it ends where it is
                    yield from self._finish(stopped)
            case Pace(speed=speed):
                ref = self.paused_at or time.monotonic()
                for paced in self.streams.values():
                    if paced.realtime:  # the same play position, from now at the new pace
                        played = min((ref - paced.t0) * paced.speed,
                                     paced.offset / SAMPLE_RATE)
                        paced.speed = max(speed, 0.01)
                        paced.t0 = ref - played / paced.speed
            case Acked(role=role, stream_id=sid, upto_sample=upto) if sid in self.mics:
                m = self.mics[sid]
                if role in m.consumers:
                    m.consumers[role].acked = max(m.consumers[role].acked, upto)
                if m.done and all(c.acked >= m.offset for c in m.consumers.values()):
                    del self.mics[sid]
            case Acked(role=role, stream_id=sid, upto_sample=upto, rewound=rewound):
                st = self.streams.get(sid)
                if st is not None and role in st.consumers:
                    c = st.consumers[role]
                    if rewound:
                        c.rewinding = False
                        c.acked = upto
                    elif not c.rewinding:
                        c.acked = max(c.acked, upto)
                    self._release(st)
            case Seek(stream_id=sid, by_s=by, spans=spans) if sid in self.streams:
                yield from self._seek(self.streams[sid], by, spans)
            case Pause(paused=True):
                self.paused_at = self.paused_at or time.monotonic()
            case Pause(paused=False):
                if self.paused_at is not None:  # real-time pacing picks up where it stopped
                    for st in self.streams.values():
                        st.t0 += time.monotonic() - self.paused_at
                self.paused_at = None
            case Attach(role=role, end=end):
                old = self.outputs.get(role)
                self.outputs[role] = end
                if old is not None:
                    old.close(timeout=0.0)
            case Resend(role=role, acks=acks):
                known = dict(acks)
                for st in self.streams.values():
                    if role in st.consumers:
                        self._resend(st, role, known.get(st.sid, 0))
                for m in self.mics.values():
                    if role in m.consumers:
                        self._resend_mic(m, role, known.get(m.sid, 0))
            case _:
                return

    def _open(self, msg: OpenFile) -> Iterator[EngineEvent]:
        try:
            info = probe(msg.path)
        except AudioFileError as exc:
            yield StreamError(msg.stream_id, str(exc))
            return
        if not msg.resume:
            yield StreamOpened(msg.stream_id, str(info.path), info.duration_s, info.sample_rate,
                               info.channels, f"{info.format}/{info.subtype}")
        consumers = {role: _Consumer(role, self.outputs) for role in self.outputs}
        for role, epoch, offset in msg.resume:
            if role in consumers:
                consumers[role] = _Consumer(role, self.outputs, epoch, offset, offset)
        block = self.live_block if msg.live else self.block
        st = _Stream(msg.stream_id, info, msg.language, msg.realtime, max(msg.speed, 0.01),
                     read_blocks(info, block), consumers, live=msg.live, block_samples=block)
        if msg.resume:  # the previous capture had fed this much already: no pacing before it
            st.t0 -= msg.catch_up_samples / SAMPLE_RATE / st.speed
        self.streams[msg.stream_id] = st
        for c in consumers.values():
            c.put(StreamStart(st.sid, st.language, c.epoch, c.skip_below, live=st.live,
                              path=str(st.info.path)))

    # ---------------------------------------------------------------- the microphone
    def _open_mic(self, msg: OpenFile) -> Iterator[EngineEvent]:
        """Start (or, after a restart of this process, continue) a live recording."""
        sid = msg.stream_id
        consumers = {role: _Consumer(role, self.outputs) for role in self.outputs}
        for role, epoch, offset in msg.resume:
            if role in consumers:
                consumers[role] = _Consumer(role, self.outputs, epoch, offset, offset)
        try:
            if msg.resume:
                recorder = WavRecorder.append(msg.path)
            else:
                recorder = WavRecorder(msg.path, claimed=True)
        except RecorderError as exc:
            yield StreamError(sid, str(exc), partial=bool(msg.resume))
            for c in consumers.values():
                c.put(EndOfStream(sid, 0, c.epoch))
            return
        m = _MicStream(sid, msg.path, msg.language, msg.device, consumers, recorder,
                       offset=recorder.frames, ever_opened=bool(msg.resume))
        if msg.resume:
            floor = min((c.acked for c in consumers.values()), default=m.offset)
            m.backlog, m.backlog_at = self._read_wav(m.path, floor, m.offset), floor
        else:
            yield StreamOpened(sid, msg.path, 0.0, SAMPLE_RATE, 1, "mic/PCM_16")
        self.mics[sid] = m
        for c in consumers.values():
            c.put(StreamStart(sid, m.language, c.epoch, c.skip_below, live=True, path=m.path))

    def _devices(self) -> InputDevices:
        from engine.audio.mic import list_input_devices

        try:
            if not any(m.mic is not None for m in self.mics.values()):
                rescan(wait_s=0.5)  # see devices plugged in since start (never mid-recording)
            found = list_input_devices()
        except MicError as exc:
            return InputDevices((), str(exc))
        return InputDevices(tuple(
            (str(d.index), f"{d.name} ({d.default_samplerate:.0f} Hz"
                           f"{', default' if d.is_default else ''})") for d in found))

    def _read_wav(self, path: str, start: int, stop: int) -> Iterator[np.ndarray]:
        import soundfile as sf

        if stop <= start:
            return
        with sf.SoundFile(path) as f:
            f.seek(start)
            left = stop - start
            while left > 0:
                block = f.read(min(self.block, left), dtype="float32")
                if not len(block):
                    return
                left -= len(block)
                yield block

    def _send_mic(self, m: _MicStream, block: np.ndarray, start: int) -> None:
        now = time.monotonic()
        chunk = AudioChunk(m.sid, m.seq, start, block, 0, now)
        m.seq += 1
        for c in m.consumers.values():
            if chunk.end_sample > c.skip_below:
                c.put(AudioChunk(m.sid, chunk.seq, start, block, c.epoch, now))

    def _mic_step(self, m: _MicStream) -> Iterator[EngineEvent]:
        if m.backlog is not None:  # resumed: what the consumers had not finished, first
            block = next(m.backlog, None)
            if block is not None:
                self._send_mic(m, block, m.backlog_at)
                m.backlog_at += len(block)
                return
            m.backlog = None
        if m.stopping:
            yield from self._stop_mic(m)
            return
        if m.mic is None:
            now = time.monotonic()
            if now < m.retry_at:
                time.sleep(min(0.05, m.retry_at - now))
                return
            yield from self._start_mic(m)
            return
        try:
            block = m.mic.read(timeout=0.05)
        except MicError as exc:
            yield from self._lost(m, str(exc))
            return
        if block is None or not len(block):
            return
        if self.paused_at is not None:
            return  # paused: the device keeps running (no overflow), nothing is recorded
        try:
            m.recorder.write(block)
        except RecorderError as exc:  # disk full: keep what is written, stop cleanly
            yield StreamError(m.sid, str(exc), partial=True)
            yield from self._stop_mic(m)
            return
        self._send_mic(m, block, m.offset)
        m.offset += len(block)
        self.fed_s = m.offset / SAMPLE_RATE
        yield from self._level(m, block)

    def _start_mic(self, m: _MicStream) -> Iterator[EngineEvent]:
        try:
            if m.retry_delay:
                rescan()  # PortAudio lists devices once: a device that came back is new
            mic = Microphone(m.device or None, self.live.block_s)
            mic.start()
        except MicError as exc:
            if not m.ever_opened:  # no microphone at all: say so once, end the stream
                m.recorder.close()
                Path(m.path).unlink(missing_ok=True)
                yield StreamError(m.sid, _why_no_mic(exc, m.device))
                m.stopping = True
                yield from self._stop_mic(m, announce=False)
                return
            yield from self._lost(m, str(exc))
            return
        m.mic, m.ever_opened, m.retry_delay = mic, True, 0.0
        # where it records from: "SOURCE @ SERVER" for a Pulse source ("vmic @
        # tcp:localhost:4713", a laptop's mic over `ssh -R`), else the device's name
        yield MicStatus(m.sid, "recording", input_label(mic.device_info), path=m.path)

    def _lost(self, m: _MicStream, why: str) -> Iterator[EngineEvent]:
        if m.mic is not None:
            m.mic.stop()
            m.mic = None
        try:
            m.recorder.flush()
        except RecorderError:
            pass
        m.retry_delay = min(self.live.mic_retry_max_s, max(0.5, m.retry_delay * 2))
        m.retry_at = time.monotonic() + m.retry_delay
        yield MicStatus(m.sid, "lost", why, m.retry_delay, m.path)

    def _stop_mic(self, m: _MicStream, announce: bool = True) -> Iterator[EngineEvent]:
        if m.mic is not None:
            m.mic.stop()
            m.mic = None
        try:
            m.recorder.close()
        except RecorderError as exc:
            yield StreamError(m.sid, str(exc), partial=True)
        m.done = True
        for c in m.consumers.values():
            c.put(EndOfStream(m.sid, m.offset, c.epoch))
        if announce:
            yield MicStatus(m.sid, "stopped", f"{m.offset / SAMPLE_RATE:.1f} s recorded",
                            path=m.path)
        if not m.consumers:
            del self.mics[m.sid]

    def _level(self, m: _MicStream, block: np.ndarray) -> Iterator[EngineEvent]:
        m.level_sq += float(np.dot(block, block))
        m.level_n += len(block)
        m.level_peak = max(m.level_peak, float(np.max(np.abs(block))))
        now = time.monotonic()
        if now - m.level_at >= LEVEL_EVERY_S and m.level_n:
            rms = (m.level_sq / m.level_n) ** 0.5
            yield MicLevel(m.sid, _db(rms), _db(m.level_peak), m.offset / SAMPLE_RATE,
                           m.mic.overflows if m.mic else 0)
            m.level_at, m.level_sq, m.level_n, m.level_peak = now, 0.0, 0, 0.0

    def _resend_mic(self, m: _MicStream, role: Role, ack: int) -> None:
        """A restarted consumer: the WAV from its acknowledged offset, then live audio."""
        c = m.consumers[role]
        c.epoch += 1
        c.acked = max(c.acked, ack)
        c.skip_below = 0
        c.rewinding = False  # a new process: its acks are for what it is sent now
        c.put(StreamStart(m.sid, m.language, c.epoch, c.acked, live=True, path=m.path))
        if not m.recorder.closed:
            m.recorder.flush(fsync=False)
        for block_start, block in self._blocks_from(m.path, c.acked, m.offset):
            c.put(AudioChunk(m.sid, -1, block_start, block, c.epoch, 0.0))
        if m.done:
            c.put(EndOfStream(m.sid, m.offset, c.epoch))

    def _blocks_from(self, path: str, start: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
        at = start
        for block in self._read_wav(path, start, stop):
            yield at, block
            at += len(block)

    # ---------------------------------------------------------------- reading
    def busy(self) -> bool:
        return (any(not st.done_reading for st in self.streams.values())
                or any(not m.done for m in self.mics.values()))

    def step(self) -> Iterator[EngineEvent]:
        """Read and send the next block of the oldest stream still being read."""
        mic = next((m for m in self.mics.values() if not m.done), None)
        if mic is not None:
            yield from self._mic_step(mic)
            return
        if self.paused_at is not None:
            time.sleep(0.02)
            return
        st = next(s for s in self.streams.values() if not s.done_reading)
        lead = st.consumers.get("transcription")
        if lead is not None and st.offset - lead.acked > self.max_ahead:
            time.sleep(0.02)  # backpressure: wait for transcription's acknowledgements
            return
        if st.realtime:  # pace like a microphone: never run ahead of the wall clock
            ahead = st.offset / SAMPLE_RATE / st.speed - (time.monotonic() - st.t0)
            if ahead > 0:
                time.sleep(min(ahead, 0.05))
                return
        try:
            block = next(st.blocks, None)
        except AudioFileError as exc:
            yield StreamError(st.sid, str(exc), partial=st.offset > 0)
            block = None
        if block is None:
            yield from self._finish(st)
            return
        now = time.monotonic()
        chunk = AudioChunk(st.sid, st.seq, st.offset, block, 0, now)
        st.retained.append(chunk)
        st.offset += len(block)
        st.seq += 1
        self.fed_s = st.offset / SAMPLE_RATE
        for c in st.consumers.values():
            if chunk.end_sample > c.skip_below:
                c.put(AudioChunk(st.sid, chunk.seq, chunk.start_sample, block, c.epoch, now))

    def _seek(self, st: _Stream, by: float,
              spans: tuple[tuple[float, float], ...] = ()) -> Iterator[EngineEvent]:
        """Move a paced replay's play position by `by` seconds: reading goes on from there
        and every consumer restarts there (a rewind keeps the voices it has heard), so a
        seek back transcribes that stretch again and a seek forward leaves a stretch out."""
        if not st.realtime or st.done_reading:
            return  # a fast replay has no play position; a finished one nothing to move
        ref = self.paused_at or time.monotonic()
        played = min((ref - st.t0) * st.speed, st.offset / SAMPLE_RATE)
        to_s = min(max(0.0, played + by), st.info.duration_s)
        if by < 0:  # never back into the middle of a phrase, committed or still open
            to_s = min([to_s] + [a for a, b in spans if a < to_s < b])
            lead = st.consumers.get("transcription")
            if lead is not None and not lead.rewinding:
                to_s = min(to_s, lead.acked / SAMPLE_RATE)  # where committed text ends
        to = int(round(to_s * SAMPLE_RATE))
        st.blocks = read_blocks(st.info, st.block_samples, to)
        st.offset = to
        st.retained.clear()
        st.t0 = ref - to_s / st.speed
        self.fed_s = to_s
        for c in st.consumers.values():
            c.epoch += 1
            c.acked, c.skip_below, c.rewinding = to, 0, True
            c.put(StreamStart(st.sid, st.language, c.epoch, to, live=st.live,
                              path=str(st.info.path), rewind=True))
        yield StreamRewound(st.sid, "capture", to)

    def _finish(self, st: _Stream) -> Iterator[EngineEvent]:
        st.done_reading = True
        if st.info.truncated:
            yield StreamError(st.sid, truncated_message(st.info, st.offset), partial=True)
        for c in st.consumers.values():
            c.put(EndOfStream(st.sid, st.offset, c.epoch))
        self._release(st)

    # ---------------------------------------------------------------- acks and re-sending
    def _release(self, st: _Stream) -> None:
        """Drop chunks transcription has acknowledged; forget finished streams.

        Only transcription's window is held (it is bounded by the read-ahead). Diarization
        acknowledges a file only at its end, so holding its audio would hold the whole file;
        a restarted consumer that is further behind gets that part read again from the file.
        """
        acks = [c.acked for c in st.consumers.values()]
        lead = st.consumers.get("transcription")
        floor = lead.acked if lead is not None else min(acks, default=st.offset)
        while st.retained and st.retained[0].end_sample <= floor:
            st.retained.popleft()
        if st.done_reading and min(acks, default=st.offset) >= st.offset:
            del self.streams[st.sid]

    def _resend(self, st: _Stream, role: Role, ack: int) -> None:
        """Give a restarted consumer the stream again from its acknowledged offset."""
        c = st.consumers[role]
        c.epoch += 1
        c.acked = max(c.acked, ack)
        c.skip_below = 0
        c.rewinding = False  # a new process: its acks are for what it is sent now
        c.put(StreamStart(st.sid, st.language, c.epoch, c.acked, live=st.live,
                          path=str(st.info.path)))
        held_from = st.retained[0].start_sample if st.retained else st.offset
        if c.acked < held_from:
            _read_again(st, c, c.acked, held_from)
        for chunk in st.retained:
            if chunk.end_sample > c.acked:
                c.put(AudioChunk(st.sid, chunk.seq, chunk.start_sample, chunk.samples,
                                       c.epoch))
        if st.done_reading:
            c.put(EndOfStream(st.sid, st.offset, c.epoch))


def _read_again(st: _Stream, c: _Consumer, start: int, stop: int) -> None:
    """Send samples [start, stop) of a file stream again, read from the file with the same
    block size (so the same chunks at the same offsets); used for rare re-sends only."""
    offset = seq = 0
    try:
        for block in read_blocks(st.info, st.block_samples):
            end = offset + len(block)
            if end > start:
                c.put(AudioChunk(st.sid, seq, offset, block, c.epoch))
            offset, seq = end, seq + 1
            if offset >= stop:
                return
    except AudioFileError as exc:  # the file changed or vanished: that consumer ends short
        print(f"re-reading {st.info.path} for {c.role} failed: {exc}", file=sys.stderr)


def _db(x: float) -> float:
    return round(20 * float(np.log10(max(x, 1e-6))), 1)


def make_handler(config: Config, outputs: Mapping[Role, Sender]) -> CaptureHandler:
    return CaptureHandler(config, outputs)
