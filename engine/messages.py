"""Every message that crosses a process boundary.

Plain frozen dataclasses (picklable under the `spawn` start method). Consumers dispatch with
one `match` on the class; no stringly-typed dicts travel between processes.

Times are seconds from the start of a stream; audio inside the engine is 16 kHz mono float32.
Audio carries sample offsets so a supervisor can tell exactly which audio a worker has
finished (its acknowledged offset) and re-send the rest to a successor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

import numpy as np

SAMPLE_RATE = 16000

Role = Literal["capture", "transcription", "diarization"]
ROLES: tuple[Role, ...] = ("capture", "transcription", "diarization")


class WorkerState(StrEnum):
    STARTING = "starting"
    LOADING = "loading"
    READY = "ready"
    BUSY = "busy"
    STOPPED = "stopped"
    FAILED = "failed"


# ---------------------------------------------------------------- transcript data


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    text: str
    probability: float = 1.0
    speaker: str | None = None


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    speaker: str | None = None
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    language: str = ""


@dataclass(frozen=True)
class SpeakerTurn:
    start: float
    end: float
    speaker: str


# ---------------------------------------------------------------- commands and audio


@dataclass(frozen=True)
class OpenFile:
    """Ask the capture worker to read a file as stream `stream_id`."""

    stream_id: int
    path: str
    realtime: bool = False
    language: str | None = None  # overrides transcription.language for this stream


@dataclass(frozen=True)
class StreamStart:
    """First message of a stream to the audio consumers: per-stream options."""

    stream_id: int
    language: str | None = None


@dataclass(frozen=True)
class AudioChunk:
    stream_id: int
    seq: int
    start_sample: int
    samples: np.ndarray = field(repr=False)

    @property
    def end_sample(self) -> int:
        return self.start_sample + len(self.samples)


@dataclass(frozen=True)
class EndOfStream:
    stream_id: int
    total_samples: int


@dataclass(frozen=True)
class Shutdown:
    """Finish nothing more; exit the worker loop."""


WorkerInput = OpenFile | StreamStart | AudioChunk | EndOfStream | Shutdown


# ---------------------------------------------------------------- events to the engine


@dataclass(frozen=True)
class StreamOpened:
    stream_id: int
    path: str
    duration_s: float
    sample_rate: int
    channels: int
    format: str


@dataclass(frozen=True)
class StreamError:
    """The source could not be read (further); the message is one line for a user."""

    stream_id: int
    message: str
    partial: bool = False  # True when audio before the error was delivered


@dataclass(frozen=True)
class TranscriptResult:
    stream_id: int
    segments: tuple[Segment, ...]
    upto_sample: int  # all audio before this offset is transcribed (the worker's ack)
    final: bool
    work_s: float
    audio_s: float


@dataclass(frozen=True)
class DiarizationResult:
    stream_id: int
    turns: tuple[SpeakerTurn, ...]
    upto_sample: int
    final: bool
    work_s: float
    audio_s: float


@dataclass(frozen=True)
class WorkerStatus:
    role: Role
    pid: int
    state: WorkerState
    detail: str = ""
    model: str = ""  # model and quantization level in use, once loaded
    load_s: float = 0.0


@dataclass(frozen=True)
class Heartbeat:
    role: Role
    pid: int
    time: float
    rss_bytes: int
    cpu_percent: float
    queue_depth: int
    items_done: int
    state: WorkerState


@dataclass(frozen=True)
class WorkerError:
    """An exception inside a worker, reported before it exits or while it continues."""

    role: Role
    pid: int
    message: str
    fatal: bool
    stream_id: int | None = None


EngineEvent = (
    StreamOpened | StreamError | TranscriptResult | DiarizationResult | WorkerStatus | Heartbeat
    | WorkerError
)
