"""Diarization worker: who spoke when, from ONNX segmentation + speaker embeddings.

For a file the speakers are clustered over the whole stream at its end, which is what gives
consistent labels across a recording; the work runs while transcription is still busy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.channel import Sender
from engine.config import Config
from engine.messages import (
    SAMPLE_RATE,
    AudioChunk,
    DiarizationResult,
    EndOfStream,
    EngineEvent,
    Enrol,
    PeerFinished,
    ReloadModels,
    Role,
    SpeakerTurn,
    SpeakerVoices,
    StreamRewound,
    StreamStart,
    VoiceEnrolled,
    VoicesRecognised,
    WorkerInput,
    WorkerState,
    WorkerStatus,
)
from engine.models.registry import diarization_paths
from engine.transcript import trimmed_turns
from engine.workers.base import Handler
from engine.workers.streams import StreamBuffer, StreamTable

LIVE_MATCH_EVERY_S = 5.0  # live: speakers matched against voice profiles this often
# a live stream's offline pass waits at most this long for transcription's last commit (a
# restarted transcription worker may never say it finished)
PEER_WAIT_S = 30.0


@dataclass
class _Ending:
    """A live stream that ended, waiting for transcription to finish it too."""

    st: StreamBuffer
    total: int
    deadline: float


class DiarizationHandler(Handler):
    def __init__(self, config: Config) -> None:
        self.config = config
        self.table = StreamTable()
        self.diarizer: Any = None
        self.live: dict[int, Any] = {}  # stream -> OnlineDiarizer
        self.online: Any = None  # loaded once, reset per live stream
        self.live_turns: dict[int, list[SpeakerTurn]] = {}
        self.live_paths: dict[int, str] = {}
        self.live_work: dict[int, tuple[float, float]] = {}  # since the last result
        self.params: Any = None
        self.choices: list[Any] = []
        self.model_desc = ""
        self._online_stale = False
        self.recogniser: Any = None
        self.profiles: dict[int, list[Any]] = {}  # live stream -> profiles read at its start
        self.named: dict[int, tuple[tuple[str, str, float], ...]] = {}  # last sent, live
        self.named_at: dict[int, float] = {}  # audio seconds of the last live match
        self.ending: dict[int, _Ending] = {}  # live streams waiting for their offline pass
        self.peers_done: set[int] = set()  # live streams transcription finished first
        self.want_voices: set[int] = set()  # file streams that end with SpeakerVoices

    def load(self) -> str:
        from engine.diarization.pipeline import DiarizationParams

        # Whisper's threads lose most when they share a core; at a lower priority diarization
        # runs in the time transcription leaves idle instead of stalling it.
        os.nice(self.config.diarization.nice)

        dc = self.config.diarization  # backend: "onnx" is the only one config accepts
        overrides: dict[str, Any] = {
            "num_speakers": dc.num_speakers or None,
            "min_speakers": dc.min_speakers or None,
            "max_speakers": dc.max_speakers or None,
        }
        if dc.clustering_threshold:
            overrides["clustering_threshold"] = dc.clustering_threshold
        self.params = DiarizationParams(**overrides)
        self._load_levels()
        from engine.voices import Recogniser

        self.recogniser = Recogniser(self.config)
        return self.model_desc

    def _load_levels(self) -> None:
        """Sessions at the chosen quantization levels; a level that fails to load falls back
        to the verified FP32 file."""
        from engine.diarization.pipeline import Diarizer
        from engine.models import levels
        from engine.models.registry import DIARIZATION_FILES

        seg, emb = diarization_paths(self.config.paths.models_dir)
        choices = [levels.choose(self.config, kind, path, DIARIZATION_FILES[path.name][0])
                   for kind, path in (("segmentation", seg), ("embedding", emb))]
        try:
            self.diarizer = Diarizer(choices[0].path, choices[1].path, self.params,
                                     threads=self.config.diarization.threads)
        except Exception:  # noqa: BLE001 - onnxruntime raises several types on a bad file
            choices = [levels.Choice(c.kind, "fp32", p, False)
                       for c, p in zip(choices, (seg, emb), strict=True)]
            self.diarizer = Diarizer(seg, emb, self.params,
                                     threads=self.config.diarization.threads)
        self.choices = choices
        self.model_desc = (f"seg {levels.describe(choices[0], self.config)} + CAM++ "
                           f"{levels.describe(choices[1], self.config)}")

    def _reload(self) -> Iterator[EngineEvent]:
        """Switch to newly validated levels; a live stream keeps its online diarizer (its
        speaker memory) until it ends."""
        before = [c.path for c in self.choices]
        self._load_levels()
        if [c.path for c in self.choices] != before:
            if self.live:
                self._online_stale = True
            else:
                self.online = None
        yield WorkerStatus("diarization", os.getpid(), WorkerState.READY, model=self.model_desc)

    def handle(self, msg: WorkerInput) -> Iterator[EngineEvent]:
        match msg:
            case ReloadModels():
                yield from self._reload()
            case PeerFinished(stream_id=sid):
                if sid in self.ending:
                    yield from self._finish_ending(sid)
                else:  # transcription got there first (or this worker restarted since)
                    self.peers_done.add(sid)
            case Enrol():
                from engine.voices import VoiceError

                try:
                    p = self.recogniser.enrol(msg.audio_path, msg.turns, msg.speaker, msg.name,
                                              msg.source)
                    yield VoiceEnrolled(p.name, p.seconds)
                except VoiceError as exc:
                    yield VoiceEnrolled(msg.name, 0.0, str(exc))
            case StreamStart(live=True):
                from engine.diarization.online import OnlineDiarizer

                for sid in list(self.ending):  # one online diarizer: the last stream ends first
                    yield from self._finish_ending(sid)
                if self.table.start(msg) is not None:
                    if self.online is None or self._online_stale:
                        seg, emb = (c.path for c in self.choices)
                        self.online = OnlineDiarizer(seg, emb,
                                                     threads=self.config.diarization.threads)
                        self._online_stale = False
                    sid = msg.stream_id
                    if msg.rewind and sid in self.live:  # a seek: same voices, new position
                        self.online.restart()
                        self.live_turns[sid] = trimmed_turns(self.live_turns.get(sid, []),
                                                             msg.start_sample / SAMPLE_RATE)
                        yield StreamRewound(sid, "diarization", msg.start_sample)
                    else:
                        self.online.reset()  # one live stream at a time: the mic or a file
                    self.live = {sid: self.online}
                    self.live_turns.setdefault(sid, [])
                    self.live_paths[sid] = msg.path
                    if not msg.rewind:
                        self.profiles[sid] = self.recogniser.profiles()
            case AudioChunk(stream_id=sid) if sid in self.live:
                st = self.table.get(msg)
                if st is not None:
                    yield from self._live_chunk(sid, st, msg)
            case EndOfStream(stream_id=sid) if sid in self.live:
                st = self.table.get(msg)
                if st is not None:
                    yield from self._live_ended(sid, st, msg.total_samples)
            case StreamStart():
                self.table.start(msg, spill=True)  # a whole file: kept on disk, not in RAM
                if msg.voices:
                    self.want_voices.add(msg.stream_id)
            case AudioChunk():
                st = self.table.get(msg)
                if st is not None:
                    st.add(msg)
            case EndOfStream(stream_id=sid, total_samples=total):
                st = self.table.get(msg)
                if st is None:
                    return
                audio = st.audio()
                offset_s = st.start_sample / SAMPLE_RATE
                t0 = time.perf_counter()
                release = getattr(st, "release", None)
                turns = self.diarizer(audio, SAMPLE_RATE, release=release) if len(audio) else []
                self.table.finish(sid, total)
                profiles = self.recogniser.profiles()
                if sid in self.want_voices:  # a piece: its voices, embedded once for both
                    from engine.voices import piece_voices, session_voices

                    self.want_voices.discard(sid)
                    embedder = self.recogniser.embedder()
                    clean = session_voices(embedder, audio, turns) if turns else {}
                    matches = self.recogniser.match_voices(clean, profiles)
                    yield SpeakerVoices(sid, tuple(piece_voices(embedder, audio, turns, clean)))
                else:
                    matches = self.recogniser.match_audio(audio, turns, profiles)
                yield VoicesRecognised(sid, tuple((m.speaker, m.name, m.score)
                                                  for m in matches), final=True)
                yield DiarizationResult(
                    sid, tuple(SpeakerTurn(round(t.start + offset_s, 3),
                                           round(t.end + offset_s, 3), t.speaker)
                               for t in turns),
                    total, True, work_s=time.perf_counter() - t0, audio_s=len(audio) / SAMPLE_RATE)
            case _:
                return


    # ------------------------------------------------------------ live streams
    def _live_chunk(self, sid: int, st: StreamBuffer, msg: AudioChunk) -> Iterator[EngineEvent]:
        """Feed the online diarizer; publish the turns it settled (labels within ~1.5 s).

        Audio is not kept here: the acknowledged offset is what the online diarizer has
        settled, so capture can forget the rest, and the offline pass reads the WAV."""
        before = st.end_sample
        st.add(msg)
        fresh = st.take(st.length)
        if not len(fresh) or st.end_sample <= before:
            return
        online = self.live[sid]
        t0 = time.perf_counter()
        turns = self._shift(online.feed(fresh), self._origin(sid, st))
        self.live_turns[sid] += turns
        yield from self._live_names(sid, online)
        work, audio = self.live_work.get(sid, (0.0, 0.0))
        work, audio = work + time.perf_counter() - t0, audio + len(fresh) / SAMPLE_RATE
        if turns or msg.seq % 10 == 0:
            settled = self._origin(sid, st) + int(online.processed_s * SAMPLE_RATE)
            self.table.published[sid] = settled
            yield DiarizationResult(sid, tuple(turns), settled, False, work_s=work,
                                    audio_s=audio, incremental=True)
            work, audio = 0.0, 0.0
        self.live_work[sid] = (work, audio)

    def _live_names(self, sid: int, online: Any) -> Iterator[EngineEvent]:
        """Live speakers matched against the voice profiles every few seconds of audio, as
        their voices firm up; sent when the naming changes."""
        from engine.voices import MATCH_MIN_S

        profiles = self.profiles.get(sid)
        at = online.processed_s
        if not profiles or at - self.named_at.get(sid, -LIVE_MATCH_EVERY_S) < LIVE_MATCH_EVERY_S:
            return
        self.named_at[sid] = at
        matches = self.recogniser.match_voices(online.voices(MATCH_MIN_S), profiles)
        named = tuple((m.speaker, m.name, m.score) for m in matches)
        if {(a, b) for a, b, _ in named} != {(a, b) for a, b, _ in self.named.get(sid, ())}:
            self.named[sid] = named
            yield VoicesRecognised(sid, named)

    def _origin(self, sid: int, st: StreamBuffer) -> int:
        """Stream offset where this process's online diarizer started (a restart resumes)."""
        return int(st.start_sample - self.live[sid].samples_fed)

    @staticmethod
    def _shift(turns: list[Any], origin: int) -> list[SpeakerTurn]:
        off = origin / SAMPLE_RATE
        return [SpeakerTurn(round(t.start + off, 3), round(t.end + off, 3), t.speaker)
                for t in turns]

    def _live_ended(self, sid: int, st: StreamBuffer, total: int) -> Iterator[EngineEvent]:
        """A live stream's end: its last turns and the offline pass wait until transcription
        has committed its last phrase. Run at once they shared the CPU with that commit, and
        niced as they are, still made it 2-3x slower (bench --live)."""
        if sid in self.peers_done:
            self.peers_done.discard(sid)
            yield from self._live_end(sid, st, total)
        else:
            self.ending[sid] = _Ending(st, total, time.monotonic() + PEER_WAIT_S)

    def busy(self) -> bool:
        now = time.monotonic()
        return any(now >= e.deadline for e in self.ending.values())

    def step(self) -> Iterator[EngineEvent]:
        now = time.monotonic()
        for sid in [s for s, e in self.ending.items() if now >= e.deadline]:
            yield from self._finish_ending(sid)

    def _finish_ending(self, sid: int) -> Iterator[EngineEvent]:
        end = self.ending.pop(sid)
        yield from self._live_end(sid, end.st, end.total)

    def _live_end(self, sid: int, st: StreamBuffer, total: int) -> Iterator[EngineEvent]:
        online = self.live.pop(sid)
        self.live_work.pop(sid, None)
        origin = st.start_sample - online.samples_fed
        t0 = time.perf_counter()
        last = self._shift(online.flush(), origin)
        live = self.live_turns.pop(sid, []) + last
        path = self.live_paths.pop(sid, "")
        self.table.finish(sid, total)
        found = self._refine(path, live, total)
        refined = found[0] if found is not None else None
        profiles = self.profiles.pop(sid, [])
        self.named.pop(sid, None)
        self.named_at.pop(sid, None)
        if profiles:  # the final word on names, from the whole recording when it was read
            matches = (self.recogniser.match_audio(found[1], refined or live, profiles)
                       if found is not None else self.recogniser.match_voices(
                           online.voices(0.0), profiles))
            yield VoicesRecognised(sid, tuple((m.speaker, m.name, m.score) for m in matches),
                                   final=True)
        if refined is None:
            yield DiarizationResult(sid, tuple(last), total, True,
                                    work_s=time.perf_counter() - t0, audio_s=0.0,
                                    incremental=True)
            return
        yield DiarizationResult(sid, tuple(last), total, False, 0.0, 0.0, incremental=True)
        yield DiarizationResult(sid, tuple(refined), total, True,
                                work_s=time.perf_counter() - t0, audio_s=total / SAMPLE_RATE)

    def _refine(self, path: str, live: list[SpeakerTurn],
                total: int) -> tuple[list[SpeakerTurn], np.ndarray] | None:
        """The offline pass over the whole recording, its speakers named after the live
        ones they overlap most (names the user gave live speakers stay attached)."""
        from engine.diarization.online import relabel_stable

        limit = self.config.live.refine_max_s
        if not path or not live or total > limit * SAMPLE_RATE or total <= 0:
            return None
        try:
            import soundfile as sf

            audio, rate = sf.read(path, frames=total, dtype="float32", always_2d=True)
        except (OSError, RuntimeError):
            return None
        if rate != SAMPLE_RATE:  # a live file fed at real-time pace: the file's own rate
            return None
        mono = audio.mean(axis=1, dtype=np.float32)
        turns = self.diarizer(mono, SAMPLE_RATE)
        offline = [SpeakerTurn(round(t.start, 3), round(t.end, 3), t.speaker) for t in turns]
        mapping = relabel_stable(live, offline)
        return [SpeakerTurn(t.start, t.end, mapping.get(t.speaker, t.speaker))
                for t in offline], mono


def make_handler(config: Config, outputs: Mapping[Role, Sender]) -> DiarizationHandler:
    return DiarizationHandler(config)
