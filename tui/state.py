"""What the console shows, folded from engine events (no Textual here, so it is unit-testable).

Segments arrive per transcribed piece and speaker turns per diarized stream; speaker labels
are re-attached whenever either changes, and the user's names for speakers survive that.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from engine.messages import (
    DiarizationResult,
    EngineEvent,
    EngineMetrics,
    MicLevel,
    MicStatus,
    PartialResult,
    Segment,
    SessionOpened,
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
    NEAREST_S,
    UNKNOWN_SPEAKER,
    Transcript,
    TurnIndex,
    fold,
    label_with,
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
    session_paths: dict[int, str] = field(default_factory=dict)  # stream -> session metadata
    session_path: str = ""  # the shown session's metadata file (renames are stored there)

    def __post_init__(self) -> None:
        self._labelled: list[Segment] = []
        self._speakers: list[str] = []
        self._first: dict[str, int] = {}  # speaker -> index of its first labelled segment
        self._pieces: list[int] = []  # labelled segments made from each raw segment
        self._index: TurnIndex | None = None
        # (version, first labelled index that changed): views redraw only from there
        self._changes: deque[tuple[int, int]] = deque(maxlen=256)
        self._forgotten = 0  # changes up to this version are no longer in _changes

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
                    self.raw_segments, self.turns, self.names = [], [], {}
                    self.partial, self.recorded_s = "", 0.0
                    self.session_path = self.session_paths.get(sid, "")
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
                    self._relabel(len(self.raw_segments) - len(segs))
            case DiarizationResult(turns=turns, incremental=True):
                if turns:
                    self.turns.extend(turns)
                    if self._index is None:
                        self._index = TurnIndex(self.turns)
                    else:
                        self._index.add(turns)
                    self._relabel(self._affected_from(min(t.start for t in turns)))
            case DiarizationResult(turns=turns):
                # the offline pass: its labels are mapped onto the live ones, names survive
                self.turns = list(turns)
                self._index = None
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

    def _affected_from(self, t: float) -> int:
        """First raw segment new turns starting at `t` can relabel (they end near or after
        it); live turns arrive for the recent end, so this walks back only a few segments."""
        j = len(self.raw_segments)
        while j > 0 and self.raw_segments[j - 1].end >= t - NEAREST_S - 0.01:
            j -= 1
        return j

    def _relabel(self, from_raw: int = 0) -> None:
        """Label raw segments from `from_raw` on; earlier labels stay as they were. A live
        session's cost per update thus stays flat however long the transcript grows."""
        if from_raw == 0:
            self._labelled, self._pieces, self._first = [], [], {}
            self._index = TurnIndex(self.turns) if self.turns else None
        keep = len(self._labelled) - sum(self._pieces[from_raw:])
        fresh: list[Segment] = []
        counts: list[int] = []
        for seg in self.raw_segments[from_raw:]:
            pieces = label_with([seg], self._index) if self._index is not None else [seg]
            fresh.extend(pieces)
            counts.append(len(pieces))
        self._labelled[keep:] = fresh
        self._pieces[from_raw:] = counts
        # speakers in order of first appearance: only those first seen in the tail move
        self._first = {k: i for k, i in self._first.items() if i < keep}
        for i in range(keep, len(self._labelled)):
            self._first.setdefault(self._labelled[i].speaker or UNKNOWN_SPEAKER, i)
        self._speakers = sorted(self._first, key=self._first.__getitem__)
        if self.query:  # segment indices move when speakers split segments
            needle = fold(self.query)
            self.matches = [m for m in self.matches if m < keep] + [
                i for i in range(keep, len(self._labelled))
                if needle in fold(self._labelled[i].text)]
            self.match_pos = min(max(self.match_pos, 0), len(self.matches) - 1)
        self.version += 1
        if len(self._changes) == self._changes.maxlen:
            self._forgotten = self._changes[0][0]
        self._changes.append((self.version, keep))

    def changed_from(self, since_version: int) -> int | None:
        """First segment index changed after `since_version` (None: redraw everything)."""
        if since_version < 0 or since_version < self._forgotten:
            return None  # never drawn, or too many changes ago to know
        first = len(self._labelled)
        for version, index in self._changes:
            if version > since_version:
                first = min(first, index)
        return first

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

    def show_session(self, source: str, duration_s: float, segments: list[Segment],
                     turns: list[SpeakerTurn], names: dict[str, str], meta_path: str,
                     language: str = "", model: str = "") -> None:
        """Show a past session read from disk (no engine stream behind it)."""
        self.stream_id = -1  # results of any earlier stream are no longer shown
        self.source, self.source_kind, self.duration_s = source, "session", duration_s
        self.raw_segments, self.turns, self.names = list(segments), list(turns), dict(names)
        self.partial, self.recording, self.recorded_s = "", False, 0.0
        self.session_path = meta_path
        self.language, self.model = language or self.language, model or self.model
        self.started = None
        self._relabel()

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
