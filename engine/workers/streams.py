"""Per-stream audio buffers for the consumer workers (transcription, diarization).

A StreamStart opens or resets a stream at an epoch and a sample offset; chunks of another
epoch are stale (queued before a re-send) and dropped, and audio before the buffer's end is
trimmed, so a re-send never produces the same audio twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.messages import AudioChunk, EndOfStream, StreamStart


@dataclass
class StreamBuffer:
    start_sample: int = 0  # offset of the first buffered sample in the stream
    epoch: int = 0
    language: str | None = None
    parts: list[np.ndarray] = field(default_factory=list)
    length: int = 0

    @property
    def end_sample(self) -> int:
        return self.start_sample + self.length

    def add(self, chunk: AudioChunk) -> None:
        """Append a chunk, trimming what the buffer already covers."""
        skip = self.end_sample - chunk.start_sample
        if skip >= len(chunk.samples):
            return
        samples = chunk.samples[skip:] if skip > 0 else chunk.samples
        self.parts.append(samples)
        self.length += len(samples)

    def audio(self) -> np.ndarray:
        """All buffered audio as one array (consolidated, so later takes do not copy again)."""
        if not self.parts:
            return np.zeros(0, np.float32)
        if len(self.parts) > 1:
            self.parts = [np.concatenate(self.parts)]
        return self.parts[0]

    def take(self, n: int) -> np.ndarray:
        """Remove and return the first n samples."""
        buf = self.audio()
        head, rest = buf[:n], buf[n:]
        self.parts = [rest] if len(rest) else []
        self.length = len(rest)
        self.start_sample += len(head)
        return head


class StreamTable:
    """The open streams of one consumer, with epoch checks."""

    def __init__(self) -> None:
        self.streams: dict[int, StreamBuffer] = {}
        self.published: dict[int, int] = {}  # stream -> offset up to which results went out
        self.finished: set[int] = set()  # streams whose final result went out

    def start(self, msg: StreamStart) -> StreamBuffer | None:
        old = self.streams.get(msg.stream_id)
        if msg.stream_id in self.finished or (old is not None and msg.epoch < old.epoch):
            return None  # a re-send of a stream this process already finished, or stale
        # never redo audio whose results this process already published
        start = max(msg.start_sample, self.published.get(msg.stream_id, 0))
        buf = StreamBuffer(start_sample=start, epoch=msg.epoch, language=msg.language)
        self.streams[msg.stream_id] = buf
        return buf

    def get(self, msg: AudioChunk | EndOfStream) -> StreamBuffer | None:
        """The stream a chunk belongs to, or None when the chunk is stale or unknown."""
        buf = self.streams.get(msg.stream_id)
        if buf is None or buf.epoch != msg.epoch:
            return None
        return buf

    def finish(self, stream_id: int, upto: int) -> None:
        """The final result of a stream went out: later re-sends of it are ignored."""
        self.streams.pop(stream_id, None)
        self.published[stream_id] = upto
        self.finished.add(stream_id)
