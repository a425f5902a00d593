"""Capture worker: turns a source (a file now, the microphone later) into audio chunks.

Chunks go straight to the transcription and diarization inboxes (one queue hop per stage).
Capture keeps every chunk a consumer has not acknowledged yet, so a restarted consumer gets
exactly the audio it had not finished, and it reads at most `max_read_ahead_s` ahead of
transcription (backpressure: memory stays bounded on long files).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from engine.audio.source import AudioFileError, AudioInfo, probe, read_blocks
from engine.channel import Sender
from engine.config import Config
from engine.messages import (
    SAMPLE_RATE,
    Acked,
    Attach,
    AudioChunk,
    EndOfStream,
    EngineEvent,
    OpenFile,
    Pause,
    Resend,
    Role,
    StreamError,
    StreamOpened,
    StreamStart,
    WorkerInput,
)


@dataclass
class _Consumer:
    role: Role
    outputs: dict[Role, Sender]
    epoch: int = 0
    acked: int = 0
    skip_below: int = 0  # a restarted capture: this consumer already has audio before this

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


class CaptureHandler:
    def __init__(self, config: Config, outputs: Mapping[Role, Sender]) -> None:
        self.block = max(1, int(config.engine.chunk_s * SAMPLE_RATE))
        self.max_ahead = int(config.engine.max_read_ahead_s * SAMPLE_RATE)
        self.outputs: dict[Role, Sender] = dict(outputs)
        self.streams: dict[int, _Stream] = {}
        self.fed_s = 0.0
        self.paused_at: float | None = None

    def load(self) -> str:
        return "file reader"

    # ---------------------------------------------------------------- messages
    def handle(self, msg: WorkerInput) -> Iterator[EngineEvent]:
        match msg:
            case OpenFile():
                yield from self._open(msg)
            case Acked(role=role, stream_id=sid, upto_sample=upto):
                st = self.streams.get(sid)
                if st is not None and role in st.consumers:
                    c = st.consumers[role]
                    c.acked = max(c.acked, upto)
                    self._release(st)
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
        st = _Stream(msg.stream_id, info, msg.language, msg.realtime, max(msg.speed, 0.01),
                     read_blocks(info, self.block), consumers)
        if msg.resume:  # the previous capture had fed this much already: no pacing before it
            st.t0 -= msg.catch_up_samples / SAMPLE_RATE / st.speed
        self.streams[msg.stream_id] = st
        for c in consumers.values():
            c.put(StreamStart(st.sid, st.language, c.epoch, c.skip_below))

    # ---------------------------------------------------------------- reading
    def busy(self) -> bool:
        return any(not st.done_reading for st in self.streams.values())

    def step(self) -> Iterator[EngineEvent]:
        """Read and send the next block of the oldest stream still being read."""
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
        chunk = AudioChunk(st.sid, st.seq, st.offset, block)
        st.retained.append(chunk)
        st.offset += len(block)
        st.seq += 1
        self.fed_s = st.offset / SAMPLE_RATE
        for c in st.consumers.values():
            if chunk.end_sample > c.skip_below:
                c.put(AudioChunk(st.sid, chunk.seq, chunk.start_sample, block, c.epoch))

    def _finish(self, st: _Stream) -> Iterator[EngineEvent]:
        st.done_reading = True
        if st.info.truncated:
            yield StreamError(st.sid, f"{st.info.path}: file is truncated (the header promises "
                                      f"more audio than it holds); transcribed the "
                                      f"{st.offset / SAMPLE_RATE:.1f} s present", partial=True)
        for c in st.consumers.values():
            c.put(EndOfStream(st.sid, st.offset, c.epoch))
        self._release(st)

    # ---------------------------------------------------------------- acks and re-sending
    def _release(self, st: _Stream) -> None:
        """Drop chunks every consumer has acknowledged; forget finished streams."""
        floor = min(c.acked for c in st.consumers.values()) if st.consumers else st.offset
        while st.retained and st.retained[0].end_sample <= floor:
            st.retained.popleft()
        if st.done_reading and floor >= st.offset:
            del self.streams[st.sid]

    def _resend(self, st: _Stream, role: Role, ack: int) -> None:
        """Give a restarted consumer the stream again from its acknowledged offset."""
        c = st.consumers[role]
        c.epoch += 1
        c.acked = max(c.acked, ack)
        c.skip_below = 0
        c.put(StreamStart(st.sid, st.language, c.epoch, c.acked))
        for chunk in st.retained:
            if chunk.end_sample > c.acked:
                c.put(AudioChunk(st.sid, chunk.seq, chunk.start_sample, chunk.samples,
                                       c.epoch))
        if st.done_reading:
            c.put(EndOfStream(st.sid, st.offset, c.epoch))


def make_handler(config: Config, outputs: Mapping[Role, Sender]) -> CaptureHandler:
    return CaptureHandler(config, outputs)
