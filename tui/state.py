"""What the console shows, folded from engine events (no Textual here, so it is unit-testable).

Segments arrive per transcribed piece and speaker turns per diarized stream; speaker labels
are re-attached whenever either changes, and the user's names for speakers survive that.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from engine.messages import (
    DiarizationResult,
    EngineEvent,
    EngineMetrics,
    MicLevel,
    MicStatus,
    PartialResult,
    Segment,
    SpeakerTurn,
    StreamError,
    StreamOpened,
    TranscriptResult,
    WorkerError,
    WorkerMetrics,
    WorkerState,
    WorkerStatus,
)
from engine.transcript import (
    UNKNOWN_SPEAKER,
    Transcript,
    assign_speakers,
    fold,
    speaker_order,
)

ROLES_SHOWN = ("capture", "transcription", "diarization")


@dataclass
class WorkerView:
    role: str
    state: WorkerState = WorkerState.STARTING
    detail: str = ""
    model: str = ""
    rss_bytes: int = 0
    rss_limit_bytes: int = 0
    heartbeat_age_s: float = 0.0
    restarts: int = 0
    processing_ratio: float | None = None
    retry_at: float | None = None  # monotonic time of the next restart

    def state_text(self, now: float) -> str:
        if self.state == WorkerState.RESTARTING and self.retry_at is not None:
            return f"restarting in {max(0.0, self.retry_at - now):.0f} s"
        if self.state == WorkerState.FAILED:
            return f"failed: {self.detail}" if self.detail else "failed"
        return self.state.value


@dataclass
class ConsoleState:
    source: str = ""
    source_kind: str = "idle"  # idle | file | mic
    duration_s: float = 0.0
    language: str = "pt"
    model: str = ""
    started: float | None = None
    lag_s: float = 0.0
    raw_segments: list[Segment] = field(default_factory=list)
    turns: list[SpeakerTurn] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)
    workers: dict[str, WorkerView] = field(
        default_factory=lambda: {r: WorkerView(r) for r in ROLES_SHOWN})
    errors: list[str] = field(default_factory=list)
    paused: bool = False
    recording: bool = False  # a live microphone session is being captured
    mic_state: str = ""  # recording | lost | stopped
    mic_detail: str = ""
    level_db: float = -120.0
    recorded_s: float = 0.0
    overflows: int = 0
    partial: str = ""  # the phrase being spoken (live), replaced when it commits
    stream_id: int | None = None
    query: str = ""
    matches: list[int] = field(default_factory=list)  # segment indices
    match_pos: int = -1
    version: int = 0  # bumped when the transcript changes

    def __post_init__(self) -> None:
        self._labelled: list[Segment] = []
        self._speakers: list[str] = []

    # ------------------------------------------------------------ events
    def apply(self, ev: EngineEvent, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        match ev:
            case StreamOpened(stream_id=sid, path=path, duration_s=dur):
                if sid != self.stream_id:  # a new recording: a new transcript
                    self.stream_id = sid
                    self.raw_segments, self.turns, self.names = [], [], {}
                    self.partial, self.recorded_s = "", 0.0
                    self._relabel()
                mic = ev.format.startswith("mic")
                self.source, self.source_kind, self.duration_s = path, \
                    "mic" if mic else "file", dur
                self.recording = mic
                self.started = now
            case (TranscriptResult(stream_id=sid) | DiarizationResult(stream_id=sid)
                  | PartialResult(stream_id=sid) | MicStatus(stream_id=sid)
                  | MicLevel(stream_id=sid)) if (
                    self.stream_id is not None and sid != self.stream_id):
                pass  # a stream the console is no longer showing
            case PartialResult(text=text):
                self.partial = text
                self.version += 1
            case MicStatus(state=mstate, detail=detail):
                self.mic_state, self.mic_detail = mstate, detail
                self.recording = mstate != "stopped"
            case MicLevel(rms_db=db, recorded_s=rec, overflows=ov):
                self.level_db, self.recorded_s, self.overflows = db, rec, ov
            case TranscriptResult(stream_id=sid) | DiarizationResult(stream_id=sid) if (
                    self.stream_id is not None and sid != self.stream_id):
                pass  # a stream the console is no longer showing
            case TranscriptResult(segments=segs):
                if segs:
                    self.raw_segments.extend(segs)
                    self.language = segs[-1].language or self.language
                    self.partial = ""
                    self._relabel()
            case DiarizationResult(turns=turns, incremental=True):
                if turns:
                    self.turns.extend(turns)
                    self._relabel()
            case DiarizationResult(turns=turns):
                # the offline pass: its labels are mapped onto the live ones, names survive
                self.turns = list(turns)
                self._relabel()
            case StreamError(message=msg):
                self.errors.append(msg)
            case WorkerStatus(role=role):
                w = self.workers.setdefault(role, WorkerView(role))
                w.state, w.detail = ev.state, ev.detail
                w.restarts = max(w.restarts, ev.restarts)
                w.retry_at = now + ev.retry_in if ev.state == WorkerState.RESTARTING else None
                if ev.model:
                    w.model = ev.model
                    if role == "transcription":
                        self.model = ev.model
            case WorkerError(message=msg, fatal=True):
                self.errors.append(msg)
            case EngineMetrics(workers=workers, lag_s=lag):
                self.lag_s = lag
                for m in workers:
                    self._metrics(m)
            case _:
                pass

    def _metrics(self, m: WorkerMetrics) -> None:
        w = self.workers.setdefault(m.role, WorkerView(m.role))
        w.rss_bytes, w.rss_limit_bytes = m.rss_bytes, m.rss_limit_bytes
        w.heartbeat_age_s, w.restarts = m.heartbeat_age_s, m.restarts
        w.processing_ratio = m.processing_ratio
        if m.model:
            w.model = m.model
        if w.state != WorkerState.RESTARTING:
            w.state = m.state

    def _relabel(self) -> None:
        self._labelled = (assign_speakers(self.raw_segments, self.turns) if self.turns
                          else list(self.raw_segments))
        self._speakers = speaker_order(self._labelled)
        if self.query:  # segment indices move when speakers split segments
            needle = fold(self.query)
            self.matches = [i for i, s in enumerate(self._labelled) if needle in fold(s.text)]
            self.match_pos = min(max(self.match_pos, 0), len(self.matches) - 1)
        self.version += 1

    # ------------------------------------------------------------ views
    @property
    def segments(self) -> list[Segment]:
        return self._labelled

    @property
    def speakers(self) -> list[str]:
        """In order of appearance; computed once per relabel (render asks per line)."""
        return self._speakers

    def name(self, label: str | None) -> str:
        label = label or UNKNOWN_SPEAKER
        return self.names.get(label, label)

    def search(self, query: str) -> int:
        """Find segments containing `query` (accent-insensitive); returns how many."""
        self.query = query.strip()
        needle = fold(self.query)
        self.matches = [i for i, s in enumerate(self._labelled)
                        if needle and needle in fold(s.text)]
        self.match_pos = 0 if self.matches else -1
        self.version += 1
        return len(self.matches)

    def step_match(self, delta: int) -> int | None:
        """Move to the next (+1) or previous (-1) match; its segment index."""
        if not self.matches:
            return None
        self.match_pos = (self.match_pos + delta) % len(self.matches)
        self.version += 1
        return self.matches[self.match_pos]

    @property
    def current_match(self) -> int | None:
        return self.matches[self.match_pos] if self.matches else None

    def rename(self, label: str, name: str) -> None:
        """Name a speaker everywhere (an empty name restores the label)."""
        if name.strip():
            self.names[label] = name.strip()
        else:
            self.names.pop(label, None)
        self.version += 1

    def transcript(self) -> Transcript:
        """A snapshot for exports."""
        return Transcript(self.source or "session", self.duration_s, self.language, self.model,
                          list(self._labelled), list(self.turns), bool(self.turns),
                          dict(self.names))

    def elapsed_s(self, now: float | None = None) -> float:
        if self.started is None:
            return 0.0
        return (time.monotonic() if now is None else now) - self.started
