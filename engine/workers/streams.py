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


class SpillBuffer(StreamBuffer):
    """A whole-file buffer kept on disk instead of in memory.

    Diarization clusters a recording as a whole, so it must hold all of it; an hour is
    230 MB of float32 and joining the chunks doubled that, past the worker's memory budget.
    Chunks go to an unnamed temporary file as they arrive; `audio()` maps the file read-only,
    and `release(n)` drops the pages before sample n from this process's memory once the
    diarizer has moved past them, so RSS stays near one batch of windows however long.
    """

    def __init__(self, start_sample: int = 0, epoch: int = 0,
                 language: str | None = None) -> None:
        super().__init__(start_sample, epoch, language)
        import tempfile

        self._file = tempfile.TemporaryFile(prefix="transcrevai-diar-")
        self._map: np.memmap | None = None

    def add(self, chunk: AudioChunk) -> None:
        skip = self.end_sample - chunk.start_sample
        if skip >= len(chunk.samples):
            return
        samples = chunk.samples[skip:] if skip > 0 else chunk.samples
        self._file.write(np.ascontiguousarray(samples, dtype=np.float32).tobytes())
        self.length += len(samples)

    def audio(self) -> np.ndarray:
        if self.length == 0:
            return np.zeros(0, np.float32)
        if self._map is None or len(self._map) != self.length:
            self._file.flush()
            self._map = np.memmap(self._file, dtype=np.float32, mode="r", shape=(self.length,))
        return self._map

    def release(self, upto: int) -> None:
        """The diarizer is done with samples before `upto`: give their pages back."""
        import mmap

        m = getattr(self._map, "_mmap", None)
        if m is None or upto <= 0:
            return
        nbytes = (min(upto, self.length) * 4) // mmap.PAGESIZE * mmap.PAGESIZE
        if nbytes:
            m.madvise(mmap.MADV_DONTNEED, 0, nbytes)

    def close(self) -> None:
        self._map = None
        self._file.close()

    def take(self, n: int) -> np.ndarray:  # pragma: no cover - whole-file use only
        raise NotImplementedError("a spilled buffer is read whole at the end")


class StreamTable:
    """The open streams of one consumer, with epoch checks."""

    def __init__(self) -> None:
        self.streams: dict[int, StreamBuffer] = {}
        self.published: dict[int, int] = {}  # stream -> offset up to which results went out
        self.finished: set[int] = set()  # streams whose final result went out

    def start(self, msg: StreamStart, spill: bool = False) -> StreamBuffer | None:
        """Open (or reset) a stream; `spill` keeps its audio on disk (whole-file users)."""
        old = self.streams.get(msg.stream_id)
        if msg.stream_id in self.finished or (old is not None and msg.epoch < old.epoch):
            return None  # a re-send of a stream this process already finished, or stale
        if msg.rewind:  # a seek: what was published from there on is superseded
            self.published[msg.stream_id] = msg.start_sample
        # never redo audio whose results this process already published
        start = max(msg.start_sample, self.published.get(msg.stream_id, 0))
        cls = SpillBuffer if spill else StreamBuffer
        buf = cls(start_sample=start, epoch=msg.epoch, language=msg.language)
        if isinstance(old, SpillBuffer):
            old.close()
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
        buf = self.streams.pop(stream_id, None)
        if isinstance(buf, SpillBuffer):
            buf.close()
        self.published[stream_id] = upto
        self.finished.add(stream_id)
