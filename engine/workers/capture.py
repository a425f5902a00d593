"""Capture worker: turns a source (a file now, the microphone later) into audio chunks.

Chunks go straight to the transcription and diarization inboxes (one queue hop per stage);
the engine only sees small events about the stream.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from multiprocessing.queues import Queue
from typing import Any

from engine.audio.source import AudioFileError, probe, read_blocks
from engine.config import Config
from engine.messages import (
    SAMPLE_RATE,
    AudioChunk,
    EndOfStream,
    EngineEvent,
    OpenFile,
    Role,
    StreamError,
    StreamOpened,
    StreamStart,
    WorkerInput,
)


class CaptureHandler:
    def __init__(self, config: Config, inboxes: Mapping[Role, Queue[Any]]) -> None:
        self.block = max(1, int(config.engine.chunk_s * SAMPLE_RATE))
        self.outputs = [q for role, q in inboxes.items() if role != "capture"]

    def load(self) -> str:
        return "file reader"

    def _send(self, msg: StreamStart | AudioChunk | EndOfStream) -> None:
        for q in self.outputs:
            q.put(msg)

    def handle(self, msg: WorkerInput) -> Iterator[EngineEvent]:
        match msg:
            case OpenFile(stream_id=sid, path=path, realtime=realtime, language=language):
                yield from self._read_file(sid, path, realtime, language)
            case _:
                return

    def _read_file(self, sid: int, path: str, realtime: bool,
                   language: str | None) -> Iterator[EngineEvent]:
        try:
            info = probe(path)
        except AudioFileError as exc:
            yield StreamError(sid, str(exc))
            return
        yield StreamOpened(sid, str(info.path), info.duration_s, info.sample_rate,
                           info.channels, f"{info.format}/{info.subtype}")
        self._send(StreamStart(sid, language))
        offset = seq = 0
        t0 = time.monotonic()
        try:
            for block in read_blocks(info, self.block):
                if realtime:  # pace like a microphone: never run ahead of the wall clock
                    ahead = offset / SAMPLE_RATE - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
                self._send(AudioChunk(sid, seq, offset, block))
                offset += len(block)
                seq += 1
        except AudioFileError as exc:
            yield StreamError(sid, str(exc), partial=offset > 0)
        if info.truncated:
            yield StreamError(sid, f"{info.path}: file is truncated (the header promises more "
                                   f"audio than it holds); transcribed the "
                                   f"{offset / SAMPLE_RATE:.1f} s present", partial=True)
        self._send(EndOfStream(sid, offset))


def make_handler(config: Config, inboxes: Mapping[Role, Queue[Any]]) -> CaptureHandler:
    return CaptureHandler(config, inboxes)
