"""A live stream through the engine: committed phrases, partial text, speaker turns, journal.

Used by the console (`r`), by `transcrevai bench --live` and by tests. Sources: the
microphone (recorded into a WAV under recordings/) or a file fed at real-time pace through
the same live path (benchmarks without a sound card).

A microphone stream is a session (engine/sessions.py): its journal gets one line per
committed phrase and per batch of speaker turns, flushed as they arrive, so a crash loses no
committed text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.messages import (
    SAMPLE_RATE,
    DiarizationResult,
    EngineEvent,
    MicLevel,
    MicStatus,
    PartialResult,
    Segment,
    SpeakerTurn,
    StreamError,
    StreamOpened,
    StreamRewound,
    TranscriptResult,
    VoicesRecognised,
)
from engine.sessions import SessionWriter
from engine.transcript import Transcript, TranscriptBuilder, trimmed_turns


@dataclass
class LiveStats:
    """What `bench --live` reports about one stream (wall times are time.monotonic())."""

    t0: float | None = None  # wall time of stream sample 0 (first chunk's capture time)
    # phrase end (its last segment's end) -> the phrase committed, one per committed phrase
    commit_latency_s: list[float] = field(default_factory=list)
    # each segment's end -> committed: a phrase's earlier segments count from their own end
    # (they were on screen as partial text meanwhile)
    segment_latency_s: list[float] = field(default_factory=list)
    label_delay_s: list[float] = field(default_factory=list)  # committed -> speaker known
    partial_times: list[float] = field(default_factory=list)
    partial_texts: list[str] = field(default_factory=list)
    overflows: int = 0


@dataclass
class LiveStream:
    """State of one live stream, folded from engine events."""

    sid: int
    path: str
    mic: bool
    # False: committed text goes to the journal only (the console folds events itself)
    keep: bool = True
    turns: list[SpeakerTurn] = field(default_factory=list)  # live labels, as they came
    refined: list[SpeakerTurn] | None = None  # the offline pass at the end
    partial: str = ""
    transcribed: bool = False
    diarized: bool = False
    error: str | None = None
    mic_state: str = ""
    recorded_s: float = 0.0
    stats: LiveStats = field(default_factory=LiveStats)
    journal: SessionWriter | None = None
    model: str = ""  # recorded with each committed segment
    # (filter, text) the hallucination/repetition guards removed (benchmarks score it)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    _unlabelled: list[tuple[float, float]] = field(default_factory=list)  # (seg end, wall)
    # (start, end) of each committed segment, kept even when the text is not (seeks snap)
    spans: list[tuple[float, float]] = field(default_factory=list)
    # (label, profile name, score): speakers whose voice matched a profile (latest word)
    recognised: tuple[tuple[str, str, float], ...] = ()
    named_live_at: float | None = None  # stream seconds settled when a voice was first named
    _labelled_upto: float = 0.0
    # committed segments labelled by the live turns, then by the refined ones
    builder: TranscriptBuilder = field(default_factory=TranscriptBuilder)

    @property
    def segments(self) -> list[Segment]:
        """Committed segments as transcribed (before speakers are attached)."""
        return self.builder.raw

    @property
    def done(self) -> bool:
        return (self.transcribed and self.diarized) or self.error is not None and (
            not self.mic or self.mic_state in ("", "stopped"))

    def apply(self, ev: EngineEvent, now: float, diarizing: bool) -> None:
        match ev:
            case StreamOpened():
                # capture starts pacing (a file) or recording (the mic) as it sends this
                self.stats.t0 = self.stats.t0 or now
            case TranscriptResult() as r:
                self.dropped += r.dropped
                if r.segments:
                    self.partial = ""
                    if self.keep:
                        self.builder.add_segments(r.segments)
                    self.spans += [(seg.start, seg.end) for seg in r.segments]
                    for seg in r.segments:
                        self._journal_segment(seg)
                        if self.stats.t0 is not None:
                            self.stats.segment_latency_s.append(now - (self.stats.t0 + seg.end))
                        self._unlabelled.append((seg.end, now))
                    if self.stats.t0 is not None:
                        end = max(seg.end for seg in r.segments)
                        self.stats.commit_latency_s.append(now - (self.stats.t0 + end))
                elif r.final:
                    self.partial = ""
                self.transcribed = self.transcribed or r.final
                if not diarizing:
                    self.diarized = True
            case PartialResult(text=text):
                self.partial = text
                self.stats.partial_times.append(now)
                if text:
                    self.stats.partial_texts.append(text)
            case DiarizationResult(incremental=True, turns=turns) as d:
                if turns:
                    self.turns += turns
                    if self.keep and self.refined is None:
                        self.builder.add_turns(turns)
                    if self.journal:
                        self.journal.turns(turns)
                settled = d.upto_sample / SAMPLE_RATE
                keep = []
                for end, at in self._unlabelled:
                    if end <= settled:
                        self.stats.label_delay_s.append(max(0.0, now - at))
                    else:
                        keep.append((end, at))
                self._unlabelled = keep
                self.diarized = self.diarized or d.final
            case DiarizationResult(turns=turns) as d:
                self.refined = list(turns)
                if self.keep:
                    self.builder.set_live_turns(self.refined)
                if self.journal:
                    self.journal.turns(turns, refined=True)
                self.diarized = self.diarized or d.final
            case StreamRewound(role="transcription", to_sample=to):
                at = to / SAMPLE_RATE
                self.partial = ""
                self.builder.drop_segments_from(at)
                self.spans = [(a, b) for a, b in self.spans if b <= at]
                self._unlabelled = [(end, w) for end, w in self._unlabelled if end <= at]
                if self.journal:
                    self.journal.seek("transcription", at)
            case StreamRewound(role="diarization", to_sample=to):
                at = to / SAMPLE_RATE
                self.turns = trimmed_turns(self.turns, at)
                if self.keep and self.refined is None:
                    self.builder.trim_turns(at)
                if self.journal:
                    self.journal.seek("diarization", at)
            case VoicesRecognised(matches=matches, final=final):
                self.recognised = matches
                if matches and not final and self.named_live_at is None:
                    self.named_live_at = self.builder.raw[-1].end if self.builder.raw else 0.0
                if self.journal:
                    self.journal.voices(matches)
            case MicStatus(state=state):
                self.mic_state = state
            case MicLevel(recorded_s=rec, overflows=ov):
                self.recorded_s, self.stats.overflows = rec, ov
            case StreamError(message=msg, partial=partial):
                if not partial or not self.mic:
                    self.error = msg
                else:
                    self.error = self.error or msg

    def _journal_segment(self, seg: Segment) -> None:
        if self.journal is not None:
            self.journal.segment(seg, self.model)

    def transcript(self, live_labels: bool = False, model: str = "") -> Transcript:
        """The transcript; speakers from the offline pass when it ran (unless live_labels)."""
        builder = self.builder
        if live_labels and self.refined is not None:  # the live labels, relabelled once
            builder = TranscriptBuilder(self.segments, self.turns or None)
        tr = builder.transcript(self.path, self.recorded_s, model=model)
        tr.recognise(self.recognised)
        return tr
