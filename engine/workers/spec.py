"""The worker processes, one spec each: adding a worker means adding a line here (its
messages in engine/messages.py and its file in engine/workers/).

The supervisor spawns every spec'd worker, the config validates a memory budget per role,
and the console shows one gauge per role, all from this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from engine.messages import DiarizationResult, Role, TranscriptResult


class Acknowledging(Protocol):
    """What a worker's result event carries for the supervisor's acknowledgements."""

    @property
    def stream_id(self) -> int: ...
    @property
    def upto_sample(self) -> int: ...
    @property
    def final(self) -> bool: ...
    @property
    def work_s(self) -> float: ...
    @property
    def audio_s(self) -> float: ...


@dataclass(frozen=True)
class WorkerSpec:
    role: Role
    # module with make_handler(config, outputs) -> Handler (engine/workers/base.py)
    entry: str
    # RSS budget in MB ([limits.rss_mb] in config.toml overrides it); over it for
    # limits.over_limit_s the supervisor restarts the worker
    budget_mb: int
    # reads capture's audio (capture itself produces it for every consumer)
    consumes_audio: bool
    # False: when it fails for good the engine runs degraded instead of stopping
    required: bool = True
    # what a user loses while an optional worker is down (said in transcripts' warnings)
    without: str = ""
    # the event whose `upto_sample` acknowledges the audio this worker has finished with
    # (capture keeps unacknowledged audio to re-send to a successor)
    result: type | None = None


WORKERS: tuple[WorkerSpec, ...] = (
    WorkerSpec("capture", "engine.workers.capture", 256, consumes_audio=False),
    # whisper base: int8 290-420 MB measured; float32 (run until int8 is validated) up to
    # 663 MB while decoding (three restarts over a 640 MB budget on a busy machine)
    WorkerSpec("transcription", "engine.workers.transcription", 768, consumes_audio=True,
               result=TranscriptResult),
    WorkerSpec("diarization", "engine.workers.diarization", 512, consumes_audio=True,
               required=False, result=DiarizationResult, without="speakers are unknown"),
)
ROLES: tuple[Role, ...] = tuple(w.role for w in WORKERS)
SPECS: dict[str, WorkerSpec] = {w.role: w for w in WORKERS}
# the one worker that produces audio for the others (streams are opened through it)
SOURCE: Role = next(w.role for w in WORKERS if not w.consumes_audio)
