"""Every message that crosses a process boundary.

Plain frozen dataclasses (picklable under the `spawn` start method). Consumers dispatch with
one `match` on the class; no stringly-typed dicts travel between processes.

Times are seconds from the start of a stream; audio inside the engine is 16 kHz mono float32.
Audio carries sample offsets so a supervisor can tell exactly which audio a worker has
finished (its acknowledged offset) and re-send the rest to a successor.

Re-sending uses per-stream epochs: a StreamStart with a higher epoch resets a consumer's
state for that stream to `start_sample`, and chunks of older epochs are dropped. Capture is
the only producer of a consumer's inbox, so queue order makes this race-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the console imports these messages; numpy is not needed to do so
    import numpy as np

SAMPLE_RATE = 16000

Role = Literal["capture", "transcription", "diarization"]


class WorkerState(StrEnum):
    STARTING = "starting"
    LOADING = "loading"
    READY = "ready"
    BUSY = "busy"
    RESTARTING = "restarting"
    STOPPED = "stopped"
    FAILED = "failed"


FaultKind = Literal["crash", "kill", "hang", "leak", "raise"]
FAULT_KINDS: tuple[FaultKind, ...] = ("crash", "kill", "hang", "leak", "raise")


@dataclass(frozen=True)
class FaultSpec:
    """A fault to inject into a worker `after_s` seconds after its first input."""

    role: Role
    kind: FaultKind
    after_s: float


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
    # a stretch of speech that yielded no words even when decoded again on its own: shown
    # as "[inaudible N s]" in that speaker's place, listed apart as a gap in JSON
    gap: bool = False


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
    # set when a restarted capture worker takes over a stream: per consumer role, the
    # (epoch, sample offset) to resume from
    resume: tuple[tuple[Role, int, int], ...] = ()
    catch_up_samples: int = 0  # resumed: read this much without real-time pacing
    speed: float = 1.0  # with realtime: audio seconds per wall second
    # live: consumers use their streaming policies (partial text, online speaker labels)
    live: bool = False
    # "mic": record from `device` into the WAV at `path` (which a restarted capture reopens
    # and reads back for consumers that had not acknowledged all of it)
    source: Literal["file", "mic"] = "file"
    device: str | None = None


@dataclass(frozen=True)
class StopStream:
    """To capture: stop recording a mic stream; consumers then get its EndOfStream."""

    stream_id: int


@dataclass(frozen=True)
class ListDevices:
    """To capture: report the input devices (PortAudio lives in that process only)."""


@dataclass(frozen=True)
class StreamStart:
    """First message of a stream to the audio consumers: per-stream options."""

    stream_id: int
    language: str | None = None
    epoch: int = 0
    start_sample: int = 0
    live: bool = False
    path: str = ""  # live: the audio on disk (the offline speaker pass at the end reads it)
    # a replay seeked to `start_sample`: start there even before audio already published,
    # drop what came from `start_sample` on, keep the voices heard so far
    rewind: bool = False
    # a piece of a recording split across cluster actors: diarization ends it with each
    # speaker's voice (SpeakerVoices), so the driver can match speakers across pieces
    voices: bool = False


@dataclass(frozen=True)
class AudioChunk:
    stream_id: int
    seq: int
    start_sample: int
    samples: np.ndarray = field(repr=False)
    epoch: int = 0
    # time.monotonic() (one clock for all processes) when capture got the chunk's last
    # sample: consumers measure how far behind live they are from it
    captured_at: float = 0.0

    @property
    def end_sample(self) -> int:
        return self.start_sample + len(self.samples)


@dataclass(frozen=True)
class EndOfStream:
    stream_id: int
    total_samples: int
    epoch: int = 0


@dataclass(frozen=True)
class Acked:
    """To capture: `role` has published results up to `upto_sample` of a stream."""

    role: Role
    stream_id: int
    upto_sample: int
    # `role` restarted the stream at `upto_sample` after a seek (its acks before this were
    # for the audio before the seek)
    rewound: bool = False


@dataclass(frozen=True)
class PeerFinished:
    """To diarization: transcription has committed a live stream's last phrase. The
    stream's last speaker turns and offline pass wait for it: run at once they shared the
    CPU with that last commit and delayed it 2-3x (bench --live)."""

    role: Role
    stream_id: int


@dataclass(frozen=True)
class Resend:
    """To capture: a successor of `role` needs every open stream again from its ack point."""

    role: Role
    acks: tuple[tuple[int, int], ...]  # (stream_id, upto_sample) as the supervisor knows them


@dataclass(frozen=True)
class Pause:
    """To capture: stop (or go on) reading sources; nothing already read is dropped."""

    paused: bool


@dataclass(frozen=True)
class Pace:
    """To capture: play real-time file streams at `speed` audio seconds per wall second from
    where they are now (a replay sped up or slowed down mid-way)."""

    speed: float


@dataclass(frozen=True)
class Seek:
    """To capture: move a real-time file stream's play position by `by_s` seconds (negative:
    back). Its consumers restart at the new position (StreamStart with rewind) and each says
    so with StreamRewound, so results from before and after the seek never mix."""

    stream_id: int
    by_s: float
    # committed segments (start, end) near the play position: a seek back that lands inside
    # one moves to its start, so the phrase is transcribed again whole, not from mid-word
    spans: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class Enrol:
    """To diarization: remember `speaker`'s voice (their clean turns in `audio_path`) as the
    profile `name` (VoiceEnrolled answers). Diarization does it because it holds the voice
    model: the console loads none."""

    audio_path: str
    turns: tuple[SpeakerTurn, ...]
    speaker: str
    name: str
    source: str  # what the profile records it came from (a session id or a file)


@dataclass(frozen=True)
class Attach:
    """A fresh channel end replacing a broken one (a peer was restarted).

    To capture: the Sender for consumer `role`; to a consumer: the Receiver of its audio.
    """

    role: Role
    end: Any


@dataclass(frozen=True)
class Shutdown:
    """Finish nothing more; exit the worker loop."""


@dataclass(frozen=True)
class ReloadModels:
    """Validated quantization levels are now cached: load them between two messages."""


WorkerInput = (OpenFile | StopStream | ListDevices | StreamStart | AudioChunk | EndOfStream
               | Acked | PeerFinished | Resend | Attach | Pause | Pace | Seek | Enrol | Shutdown
               | ReloadModels)


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
    from_sample: int
    upto_sample: int  # all audio before this offset is transcribed (the worker's ack)
    final: bool
    work_s: float
    audio_s: float
    # (filter, text) the hallucination/repetition guards removed from this piece
    dropped: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class PartialResult:
    """Live: the text of the phrase still being spoken; replaced by the next partial and
    dropped when the phrase commits (a TranscriptResult from `from_sample` on)."""

    stream_id: int
    text: str
    from_sample: int
    upto_sample: int


@dataclass(frozen=True)
class DiarizationResult:
    stream_id: int
    turns: tuple[SpeakerTurn, ...]
    upto_sample: int
    final: bool
    work_s: float
    audio_s: float
    # live: `turns` are new settled turns to add; otherwise they replace all turns (the
    # offline pass, whose labels are mapped onto the live ones so user names survive)
    incremental: bool = False


@dataclass(frozen=True)
class MicStatus:
    """The microphone of a live stream: recording, lost (retrying in N s) or stopped."""

    stream_id: int
    state: Literal["recording", "lost", "stopped"]
    detail: str = ""
    retry_in: float = 0.0
    path: str = ""  # the session's WAV


@dataclass(frozen=True)
class InputDevices:
    """The microphones capture can open: (device id for config/OpenFile, label)."""

    devices: tuple[tuple[str, str], ...]
    error: str = ""


@dataclass(frozen=True)
class MicLevel:
    """Input level for the meter, ~10 per second while recording."""

    stream_id: int
    rms_db: float
    peak_db: float
    recorded_s: float
    overflows: int


@dataclass(frozen=True)
class WorkerStatus:
    role: Role
    pid: int
    state: WorkerState
    detail: str = ""
    model: str = ""  # model and quantization level in use, once loaded
    load_s: float = 0.0
    retry_in: float = 0.0  # with RESTARTING: seconds until the successor starts
    restarts: int = 0


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
    fed_s: float = 0.0  # capture: audio seconds sent downstream in the current stream
    settled_rss: int = 0  # RSS right after the worker last returned freed heap (0: never)


@dataclass(frozen=True)
class WorkerError:
    """An exception inside a worker, reported before it exits or while it continues."""

    role: Role
    pid: int
    message: str
    fatal: bool
    stream_id: int | None = None
    retry: bool = True  # False: restarting cannot help (e.g. a model file fails its hash)


@dataclass(frozen=True)
class FaultFired:
    """From a worker: an injected fault fired at wall-clock `time` (for detection latency)."""

    role: Role
    pid: int
    kind: FaultKind
    time: float


@dataclass(frozen=True)
class WorkerMetrics:
    """The supervisor's view of one worker, published every heartbeat interval."""

    role: Role
    state: WorkerState
    pid: int
    rss_bytes: int
    rss_limit_bytes: int
    heartbeat_age_s: float
    restarts: int
    crashes: int
    memory_violations: int
    hangs: int
    processing_ratio: float | None  # work time / audio time, rolling over the last 10 items
    items_done: int
    model: str
    peak_rss_bytes: int = 0
    queue_depth: int = 0


@dataclass(frozen=True)
class SessionOpened:
    """A stream is being kept as a session on disk (its metadata file), for rename/export."""

    stream_id: int
    meta_path: str


def one_line(exc: BaseException) -> str:
    """An exception as one line for a user (a message's text): no traceback, no newlines."""
    return " ".join(str(exc).split()) or type(exc).__name__


@dataclass(frozen=True)
class EngineFailed:
    """In-process, from whoever drives the engine (the runner, the console's engine thread):
    it cannot go on (a required worker failed for good, or the thread itself failed). Kept
    apart from WorkerError, which is one worker's and names its pid."""

    message: str


@dataclass(frozen=True)
class ModelLevels:
    """The supervisor's background quantization chain finished (or failed: `error`)."""

    levels: tuple[tuple[str, str], ...]  # (model kind, level in use)
    elapsed_s: float
    error: str = ""


@dataclass(frozen=True)
class VoicesRecognised:
    """From diarization: speakers of a stream whose voice matches a profile, as
    (label, profile name, score). Live: sent when the guess changes; at the end of a stream
    (before its final DiarizationResult): the final word, which replaces earlier ones."""

    stream_id: int
    matches: tuple[tuple[str, str, float], ...]
    final: bool = False


@dataclass(frozen=True)
class SpeakerVoices:
    """From diarization, at the end of a stream started with `voices`: each speaker's
    embedding (unit CAM++ vector) and the seconds of speech behind it, before the final
    DiarizationResult. Labels are the stream's own; a split recording's pieces are made
    one set of speakers with them."""

    stream_id: int
    voices: tuple[tuple[str, np.ndarray, float], ...] = field(repr=False)


@dataclass(frozen=True)
class VoiceEnrolled:
    """From diarization: the answer to Enrol (`error` set when refused, one line)."""

    name: str
    seconds: float
    error: str = ""


@dataclass(frozen=True)
class StreamRewound:
    """From a consumer: it restarted `stream_id` at `to_sample` after a seek. Its results
    before this event cover audio up to the old position; a result at or after `to_sample`
    that came before it is superseded."""

    stream_id: int
    role: Role
    to_sample: int


@dataclass(frozen=True)
class EngineMetrics:
    workers: tuple[WorkerMetrics, ...]
    lag_s: float  # audio fed to the engine minus audio transcribed, current stream
    fed_s: float = 0.0  # audio fed to the engine so far, current stream (a replay's position)


EngineEvent = (
    StreamOpened | StreamError | TranscriptResult | PartialResult | DiarizationResult
    | MicStatus | MicLevel | InputDevices | WorkerStatus | Heartbeat | WorkerError
    | FaultFired | EngineMetrics | ModelLevels | SessionOpened | EngineFailed | StreamRewound
    | VoicesRecognised | VoiceEnrolled | SpeakerVoices
)
