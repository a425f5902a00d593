"""What the console shows, folded from engine events (no Textual here, so it is unit-testable).

The transcript itself is the engine's TranscriptBuilder (segments arrive per transcribed
piece, speaker turns per diarized stream or live window); this adds what only the console
needs: worker gauges, the partial line, search, the user's names for speakers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.messages import (
    SAMPLE_RATE,
    DiarizationResult,
    EngineEvent,
    EngineFailed,
    EngineMetrics,
    MicLevel,
    MicStatus,
    PartialResult,
    Segment,
    SessionOpened,
    SpeakerTurn,
    StreamError,
    StreamOpened,
    StreamRewound,
    TranscriptResult,
    VoicesRecognised,
    WorkerError,
    WorkerMetrics,
    WorkerState,
    WorkerStatus,
)
from engine.transcript import UNKNOWN_SPEAKER, Transcript, TranscriptBuilder, fold
from engine.workers.spec import ROLES


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
    names: dict[str, str] = field(default_factory=dict)
    # speakers whose voice matched a profile: label -> (profile name, score); `rejected`:
    # labels the user said are not that person (kept with the session)
    recognised: dict[str, tuple[str, float]] = field(default_factory=dict)
    rejected: set[str] = field(default_factory=set)
    workers: dict[str, WorkerView] = field(
        default_factory=lambda: {r: WorkerView(r) for r in ROLES})
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
    session_paths: dict[int, str] = field(default_factory=dict)  # stream -> session metadata
    session_path: str = ""  # the shown session's metadata file (renames are stored there)
    vocabulary: tuple[str, ...] = ()  # terms whisper is told to expect (status bar)
    speed: float = 0.0  # a file's replay: audio s per wall s through the live path; 0 = fast
    position_s: float = 0.0  # a replay at speed 1/2: audio played so far
    done_s: float = 0.0  # audio transcribed so far (a fast replay's progress)

    def __post_init__(self) -> None:
        self.builder = TranscriptBuilder()

    @property
    def raw_segments(self) -> list[Segment]:
        return self.builder.raw

    @property
    def turns(self) -> list[SpeakerTurn]:
        return self.builder.turns

    # ------------------------------------------------------------ events
    def apply(self, ev: EngineEvent, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        match ev:
            case SessionOpened(stream_id=sid, meta_path=meta):
                self.session_paths[sid] = meta
                if sid == self.stream_id:
                    self.session_path = meta
            case StreamOpened(stream_id=sid, path=path, duration_s=dur):
                if sid != self.stream_id:  # a new recording: a new transcript
                    self.stream_id = sid
                    self.names = {}
                    self.recognised, self.rejected = {}, set()
                    self.partial, self.recorded_s = "", 0.0
                    self.position_s = self.done_s = 0.0
                    self.session_path = self.session_paths.get(sid, "")
                    self._changed(self.builder.reset())
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
                self.builder.touch()
            case MicStatus(state=mstate, detail=detail):
                self.mic_state, self.mic_detail = mstate, detail
                self.recording = mstate != "stopped"
            case MicLevel(rms_db=db, recorded_s=rec, overflows=ov):
                self.level_db, self.recorded_s, self.overflows = db, rec, ov
            case TranscriptResult(stream_id=sid) | DiarizationResult(stream_id=sid) if (
                    self.stream_id is not None and sid != self.stream_id):
                pass  # a stream the console is no longer showing
            case TranscriptResult(segments=segs):
                self.done_s = max(self.done_s, ev.upto_sample / SAMPLE_RATE)
                if segs:
                    self.language = segs[-1].language or self.language
                    self.partial = ""
                    self._changed(self.builder.add_segments(segs))
                if ev.final:  # all of it is transcribed: no lag, whatever metrics said last
                    self.lag_s = 0.0
            case DiarizationResult(turns=turns, incremental=True):
                if turns:
                    self._changed(self.builder.add_turns(turns))
            case DiarizationResult(turns=turns):
                # the offline pass: its labels are mapped onto the live ones, names survive
                self._changed(self.builder.set_live_turns(turns))
            case StreamRewound(stream_id=sid) | VoicesRecognised(stream_id=sid) if (
                    sid != self.stream_id):
                pass
            case VoicesRecognised(matches=matches):
                self.recognise(matches)
            case StreamRewound(role="capture", to_sample=to):
                self.position_s = to / SAMPLE_RATE  # a seek: the play position moved
            case StreamRewound(role="transcription", to_sample=to):
                # text from there on comes again; what came before this event is superseded
                self.partial = ""
                self.done_s = min(self.done_s, to / SAMPLE_RATE)
                self._changed(self.builder.drop_segments_from(to / SAMPLE_RATE))
            case StreamRewound(role="diarization", to_sample=to):
                self._changed(self.builder.trim_turns(to / SAMPLE_RATE))
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
            case WorkerError(message=msg, fatal=True) | EngineFailed(message=msg):
                self.errors.append(msg)
            case EngineMetrics(workers=workers, lag_s=lag):
                self.lag_s = lag
                if self.source_kind == "file" and ev.fed_s:
                    self.position_s = ev.fed_s
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

    def _changed(self, keep: int) -> None:
        """The transcript changed from labelled index `keep` on: search hits move with it."""
        labelled = self.builder.segments
        if self.query:  # segment indices move when speakers split segments
            needle = fold(self.query)
            self.matches = [m for m in self.matches if m < keep] + [
                i for i in range(keep, len(labelled)) if needle in fold(labelled[i].text)]
            self.match_pos = min(max(self.match_pos, 0), len(self.matches) - 1)

    @property
    def version(self) -> int:
        """Bumped when anything shown changes."""
        return self.builder.version

    def changed_from(self, since_version: int) -> int | None:
        """First segment index changed after `since_version` (None: redraw everything)."""
        return self.builder.changed_from(since_version)

    # ------------------------------------------------------------ views
    @property
    def segments(self) -> list[Segment]:
        return self.builder.segments

    @property
    def speakers(self) -> list[str]:
        return self.builder.speakers

    def name(self, label: str | None) -> str:
        """The user's name for a speaker, else the voice profile it matched, else its label."""
        label = label or UNKNOWN_SPEAKER
        if label in self.names:
            return self.names[label]
        return self.recognised[label][0] if label in self.recognised else label

    def shown_name(self, label: str | None) -> str:
        """The name on screen: a voice-profile name carries a sign (✓) the user can reject."""
        return self.name(label) + (" ✓" if self.is_recognised(label) else "")

    def is_recognised(self, label: str | None) -> bool:
        """Named after a voice profile (not by the user): shown with a sign."""
        return bool(label) and label in self.recognised and label not in self.names

    def recognise(self, matches: Sequence[tuple[str, str, float]]) -> None:
        """The latest matches of speakers to voice profiles (rejected ones stay unnamed)."""
        self.recognised = {label: (name, score) for label, name, score in matches
                           if label not in self.rejected}
        self.builder.touch()

    def reject(self, label: str) -> None:
        """The user says this speaker is not the profile's person: back to the label."""
        self.rejected.add(label)
        self.recognised.pop(label, None)
        self.builder.touch()

    def search(self, query: str) -> int:
        """Find segments containing `query` (accent-insensitive); returns how many."""
        self.query = query.strip()
        needle = fold(self.query)
        self.matches = [i for i, s in enumerate(self.builder.segments)
                        if needle and needle in fold(s.text)]
        self.match_pos = 0 if self.matches else -1
        self.builder.touch()
        return len(self.matches)

    def step_match(self, delta: int) -> int | None:
        """Move to the next (+1) or previous (-1) match; its segment index."""
        if not self.matches:
            return None
        self.match_pos = (self.match_pos + delta) % len(self.matches)
        self.builder.touch()
        return self.matches[self.match_pos]

    @property
    def current_match(self) -> int | None:
        return self.matches[self.match_pos] if self.matches else None

    def show_session(self, source: str, duration_s: float, segments: list[Segment],
                     turns: list[SpeakerTurn], names: dict[str, str], meta_path: str,
                     language: str = "", model: str = "",
                     recognised: Sequence[tuple[str, str, float]] = (),
                     rejected: Sequence[str] = ()) -> None:
        """Show a past session read from disk (no engine stream behind it)."""
        self.stream_id = -1  # results of any earlier stream are no longer shown
        self.source, self.source_kind, self.duration_s = source, "session", duration_s
        self.builder.reset(segments, turns if turns else None)
        self.names = dict(names)
        self.rejected = set(rejected)
        self.recognise(recognised)
        self.partial, self.recording, self.recorded_s = "", False, 0.0
        self.session_path = meta_path
        self.language, self.model = language or self.language, model or self.model
        self.started = None
        self._changed(0)

    def rename(self, label: str, name: str) -> None:
        """Name a speaker everywhere (an empty name restores the label)."""
        if name.strip():
            self.names[label] = name.strip()
        else:
            self.names.pop(label, None)
        self.builder.touch()

    def transcript(self) -> Transcript:
        """A snapshot for exports."""
        b = self.builder  # segments keep their own labels when there are no turns
        tr = Transcript(self.source or "session", self.duration_s, self.language, self.model,
                        list(b.segments), list(b.turns), bool(b.turns), dict(self.names))
        tr.recognise([(label, name, score) for label, (name, score) in self.recognised.items()])
        return tr

    def progress(self, now: float | None = None) -> tuple[float, float | None]:
        """A fast replay: the share of the file transcribed, and the seconds left at the
        pace so far (None until there is a pace to go by)."""
        if not self.duration_s:
            return 0.0, None
        done = min(1.0, self.done_s / self.duration_s)
        spent = self.elapsed_s(now)
        if done <= 0.0 or spent <= 0.0:
            return done, None
        return done, spent * (1.0 - done) / done

    def elapsed_s(self, now: float | None = None) -> float:
        if self.started is None:
            return 0.0
        return (time.monotonic() if now is None else now) - self.started
