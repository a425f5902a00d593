"""Runs recordings through the engine and assembles their transcripts.

The CLI, the benchmark and the console all use this one path: workers are started
once, files are fed one after another, and each file's transcript is the merge of the
transcription and diarization results for its stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from engine.live import LiveStream
from engine.messages import (
    SAMPLE_RATE,
    DiarizationResult,
    EngineEvent,
    FaultFired,
    MicLevel,
    MicStatus,
    PartialResult,
    Segment,
    SessionOpened,
    StreamError,
    StreamOpened,
    StreamRewound,
    TranscriptResult,
    VoicesRecognised,
    WorkerError,
    WorkerState,
    WorkerStatus,
)
from engine.sessions import SessionWriter
from engine.supervisor import Supervisor
from engine.transcript import Transcript, TranscriptBuilder
from engine.workers.spec import SPECS

SEEK_SPANS = 64  # committed phrases a seek back may land in (phrases are ≤ 10 s: minutes)


class EngineFailure(Exception):
    """The engine cannot go on (a required worker failed); str() is one line."""


@dataclass
class FileResult:
    path: str
    transcript: Transcript
    wall_s: float = 0.0
    audio_s: float = 0.0
    error: str | None = None  # set when the file could not be (fully) transcribed
    work_s: dict[str, float] = field(default_factory=dict)
    # (filter, text) the hallucination/repetition guards removed (benchmarks score it)
    dropped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class FileJob:
    """One file's results folded into its transcript: the local runner's and a cluster
    driver's (engine.cluster.batch) one way of doing it."""

    sid: int
    result: FileResult
    builder: TranscriptBuilder = field(default_factory=TranscriptBuilder)
    transcribed: bool = False
    diarized: bool = False
    failed: bool = False
    covered: int = 0  # samples of the stream whose transcription has arrived
    writer: SessionWriter | None = None  # the session kept on disk (console replays)

    def take_transcript(self, ev: TranscriptResult, keep: bool = True) -> list[Segment] | None:
        """Fold a transcription result; its new segments, or None for a re-sent piece."""
        if self.transcribed or (ev.upto_sample <= self.covered and not ev.final):
            return None  # a re-sent piece this job already has
        fresh = [seg for seg in ev.segments if seg.start >= self.covered / SAMPLE_RATE - 0.01]
        if keep:
            self.builder.add_segments(fresh)
        res = self.result
        res.dropped += ev.dropped
        self.covered = max(self.covered, ev.upto_sample)
        res.work_s["transcription"] = res.work_s.get("transcription", 0) + ev.work_s
        self.transcribed = self.transcribed or ev.final
        return fresh

    def take_turns(self, ev: DiarizationResult, keep: bool = True) -> bool:
        """Fold the speaker turns (they replace earlier ones); False once diarized."""
        if self.diarized:
            return False
        if keep:
            self.builder.set_turns(ev.turns)
        self.result.work_s["diarization"] = ev.work_s
        self.diarized = ev.final
        return True

    def finish(self, model: str) -> FileResult:
        """The result with its transcript built (unless the job failed outright)."""
        tr = self.result.transcript
        tr.model = model
        if not self.failed:
            built = self.builder.transcript(self.result.path)
            tr.segments, tr.turns, tr.diarized = built.segments, built.turns, built.diarized
            tr.language = built.language
        return self.result


class Runner:
    """Feeds recordings and live streams to a Supervisor and folds its events into transcripts."""

    def __init__(self, engine: Supervisor,
                 on_event: Callable[[EngineEvent], None] | None = None,
                 should_stop: Callable[[], bool] = lambda: False,
                 keep_transcripts: bool = True) -> None:
        self.engine = engine
        self.on_event = on_event
        self.should_stop = should_stop  # checked while waiting (the console quitting)
        # False: results only flow to on_event and sessions on disk (the console folds them
        # itself, so one copy of a long transcript is held, not two)
        self.keep_transcripts = keep_transcripts
        self.load_s: dict[str, float] = {}
        self.models: dict[str, str] = {}
        self.peak_rss_bytes = 0
        self._job: FileJob | None = None
        self._degraded: dict[str, str] = {}  # optional workers that failed for good: why
        self._down: dict[str, str] = {}  # required workers that failed for good
        self._last_rss = 0.0
        self.incidents: list[EngineEvent] = []  # restarts and worker errors, for reports
        self.live: LiveStream | None = None
        self._session_failed: set[int] = set()

    @property
    def diarizing(self) -> bool:
        return "diarization" in self.engine.roles and "diarization" not in self._degraded

    def _degraded_warnings(self, only: str | None = None) -> list[str]:
        """What a transcript lacks while optional workers are down (`only`: that one)."""
        return [f"{role} unavailable ({why}); {SPECS[role].without}"
                for role, why in self._degraded.items()
                if role in self.engine.roles and only in (None, role)]

    def wait_ready(self, timeout: float | None = None) -> float:
        """Block until every worker has loaded its model; returns seconds waited."""
        limit = timeout or self.engine.config.engine.startup_timeout
        t0 = time.monotonic()
        while not all(r in self.load_s or r in self._degraded for r in self.engine.roles):
            if time.monotonic() - t0 > limit:
                raise EngineFailure(f"workers not ready after {limit:.0f} s")
            self.pump(0.1)
        return time.monotonic() - t0

    def transcribe(self, path: str, realtime: bool = False,
                   language: str | None = None, speed: float = 1.0,
                   session_dir: Path | None = None,
                   on_progress: Callable[[float, str], None] | None = None) -> FileResult:
        """Run one file through the engine; errors of the file are in FileResult.error.
        With `session_dir` the run is kept there as a session (journal + metadata);
        `on_progress(fraction, phase)` is called while waiting (progress bars)."""
        if self._down:
            raise EngineFailure(next(iter(self._down.values())))
        result = FileResult(path, Transcript(source=path))
        job = self._job = FileJob(self.engine.open_file(path, realtime, language, speed), result)
        if session_dir is not None:
            job.writer = self._open_session(job.sid, lambda: SessionWriter.for_file(
                session_dir, path))
        result.transcript.warnings += self._degraded_warnings()
        t0 = time.perf_counter()
        try:
            while not self._done(job) and not self.should_stop():
                self.pump(0.1)
                if on_progress is not None:
                    audio_s = result.audio_s or 0.0
                    frac = min(1.0, job.covered / SAMPLE_RATE / audio_s) if audio_s else 0.0
                    on_progress(1.0 if job.transcribed else frac,
                                "speakers" if job.transcribed else "transcribing")
        finally:
            self._job = None
            if job.writer is not None:
                done = job.transcribed and job.diarized and not job.failed
                job.writer.close(result.audio_s or None,
                                 "complete" if done and not result.error else "interrupted")
        result.wall_s = time.perf_counter() - t0
        return job.finish(self.models.get("transcription", ""))

    # -------------------------------------------------------------- live streams
    def start_live(self, source: str | None = None, language: str | None = None,
                   speed: float = 1.0, journal: bool = True,
                   device: str | None = None,
                   session_dir: Path | None = None) -> LiveStream:
        """Start recording from the microphone (source None) or feed a file at real-time
        pace through the live path (the console's replay at speed 1 or 2; kept as a session
        in `session_dir` when given); events then update `self.live` as `pump` runs."""
        if self._down:
            raise EngineFailure(next(iter(self._down.values())))
        if source is None:
            sid, path = self.engine.open_mic(device, language)
            live = LiveStream(sid, path, mic=True, model=self.models.get("transcription", ""),
                              keep=self.keep_transcripts)
            if journal:
                live.journal = self._open_session(sid, lambda: SessionWriter.for_recording(
                    Path(path), device or ""))
        else:
            sid = self.engine.open_live_file(source, language, speed)
            live = LiveStream(sid, source, mic=False, model=self.models.get("transcription", ""),
                              keep=self.keep_transcripts)
            if journal and session_dir is not None:
                live.journal = self._open_session(sid, lambda: SessionWriter.for_file(
                    session_dir, source))
        if not self.diarizing:
            live.diarized = True
        self.live = live
        return live

    def stop_live(self) -> None:
        """Stop the microphone, or a replay where it is; the last phrase and the speaker
        pass follow (see `done`)."""
        if self.live is not None:
            self.engine.stop_stream(self.live.sid)

    def seek(self, by_s: float) -> None:
        """Move a paced replay's play position by `by_s` seconds; a seek back transcribes
        that stretch again (superseded text and turns go when the workers say they restarted,
        so what was in flight never mixes in), a seek forward leaves a stretch out."""
        if self.live is not None and not self.live.mic:
            self.engine.seek(self.live.sid, by_s, tuple(self.live.spans[-SEEK_SPANS:]))

    def run_live(self, source: str, language: str | None = None,
                 speed: float = 1.0) -> LiveStream:
        """Feed a whole file through the live path and wait for its last results."""
        live = self.start_live(source, language, speed)
        while not live.done and not self.should_stop():
            self.pump(0.05)
        self.live = None
        self.close_live(live)
        return live

    @staticmethod
    def close_live(live: LiveStream) -> None:
        """Close a live stream's session: duration, and complete unless it was cut short."""
        if live.journal is not None:
            live.journal.close(live.recorded_s or None,
                               "complete" if live.done and live.error is None else "interrupted")
            live.journal = None

    def _open_session(self, sid: int, make: Callable[[], SessionWriter]) -> SessionWriter | None:
        """Create a session's files; a recordings folder that cannot be written is reported
        and the transcription goes on without a session."""
        try:
            writer = make()
        except OSError as exc:
            self._emit(StreamError(sid, f"cannot keep the session: {exc.strerror or exc}",
                                   partial=True))
            return None
        self._emit(SessionOpened(sid, str(writer.meta_path)))
        return writer

    def _emit(self, ev: EngineEvent) -> None:
        if self.on_event is not None:
            self.on_event(ev)

    def _done(self, job: FileJob) -> bool:
        if job.failed:
            return True
        if not self.diarizing:
            job.diarized = True
        return job.transcribed and job.diarized

    # -------------------------------------------------------------- events
    def pump(self, timeout: float) -> None:
        for ev in self.engine.poll(timeout):
            self._handle(ev)
            if self.on_event is not None:
                self.on_event(ev)
        now = time.monotonic()
        if now - self._last_rss >= 0.1:
            self._last_rss = now
            self.peak_rss_bytes = max(self.peak_rss_bytes, self.rss_bytes())

    def rss_bytes(self) -> int:
        """RSS of this process plus every live worker."""
        total = 0
        pids = [p.pid for p in self.engine.procs.values() if p.pid and p.is_alive()]
        for pid in [None, *pids]:
            try:
                total += psutil.Process(pid).memory_info().rss
            except psutil.Error:
                pass
        return total

    def _report_session_failure(self, sid: int, writer: SessionWriter | None) -> None:
        """Once: the session's files stopped being written (a full disk); the engine goes on."""
        if writer is not None and writer.failed and sid not in self._session_failed:
            self._session_failed.add(sid)
            self._emit(StreamError(sid, writer.failed, partial=True))

    def _handle(self, ev: EngineEvent) -> None:
        job = self._job
        live = self.live
        if live is not None and getattr(ev, "stream_id", None) == live.sid:
            live.apply(ev, time.monotonic(), self.diarizing)
            self._report_session_failure(live.sid, live.journal)
            if isinstance(ev, StreamError | TranscriptResult | DiarizationResult | MicStatus
                          | MicLevel | PartialResult | StreamOpened | StreamRewound
                          | VoicesRecognised):
                return
        match ev:
            case WorkerStatus(role=role, state=WorkerState.READY, load_s=load_s, model=model):
                self.load_s.setdefault(role, load_s)
                self.models[role] = model
            case WorkerStatus(role=role, state=WorkerState.FAILED, detail=why) \
                    if not SPECS[role].required:
                self._degraded[role] = why
                if live is not None and role == "diarization":
                    live.diarized = True
                if job is not None:
                    job.result.transcript.warnings += self._degraded_warnings(role)
            case WorkerStatus(role=role, state=WorkerState.FAILED, detail=why):
                msg = why if role in why else f"{role} worker: {why}"
                self._down[role] = msg
                if live is not None:
                    live.error = msg
                    return
                if job is None:
                    raise EngineFailure(msg)
                # keep what was transcribed so far: the file ends here, partially
                job.result.error = job.result.error or f"stopped part-way: {msg}"
                job.transcribed = job.diarized = True
            case WorkerStatus(state=WorkerState.RESTARTING) | WorkerError() | FaultFired():
                self.incidents.append(ev)
            case StreamOpened(stream_id=sid, duration_s=dur) if job and sid == job.sid:
                job.result.audio_s = job.result.transcript.duration_s = dur
            case StreamError(stream_id=sid, message=msg, partial=partial) if job and sid == job.sid:
                job.result.error = msg
                job.result.transcript.warnings.append(msg)
                if not partial:
                    job.failed = True
            case TranscriptResult(stream_id=sid) if job and sid == job.sid:
                fresh = job.take_transcript(ev, self.keep_transcripts)
                if fresh is not None and job.writer is not None:
                    for seg in fresh:
                        job.writer.segment(seg, self.models.get("transcription", ""))
                    self._report_session_failure(job.sid, job.writer)
            case VoicesRecognised(stream_id=sid, matches=matches) if job and sid == job.sid:
                job.result.transcript.recognise(matches)
                if job.writer is not None:
                    job.writer.voices(matches)
            case DiarizationResult(stream_id=sid) if job and sid == job.sid:
                if job.take_turns(ev, self.keep_transcripts) and job.writer is not None \
                        and ev.final:
                    job.writer.turns(list(ev.turns), refined=True)
            case _:
                pass
