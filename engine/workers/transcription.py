"""Transcription worker: faster-whisper over audio pieces cut at silences.

Audio is buffered per stream and cut into pieces of at most `max_chunk_s` at the widest
silence the VAD finds, so no word is split and the result depends only on the audio (a
successor restarted from the last acknowledged offset produces the same text).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from engine.channel import Sender
from engine.config import Config
from engine.messages import (
    SAMPLE_RATE,
    AudioChunk,
    EndOfStream,
    EngineEvent,
    PartialResult,
    ReloadModels,
    Role,
    Segment,
    StreamRewound,
    StreamStart,
    TranscriptResult,
    Word,
    WorkerInput,
    WorkerState,
    WorkerStatus,
)
from engine.models.registry import ModelError, resolve_whisper
from engine.streaming import Decision, PhraseCutter, clean_segments, collapse_repeats
from engine.transcript import gap_segment, uncovered
from engine.workers.base import Handler
from engine.workers.streams import StreamBuffer, StreamTable

FULL_WINDOW = 3000  # mel frames whisper's encoder is trained on (30 s)
WORD_REACH_S = 0.3  # speech this close to a word belongs to it (word times are rough)
RECHECK_PAD_S = 0.3  # context on each side of a stretch decoded again
PROMPT_CHARS = 200  # of the text before a stretch, given as the prompt
UNIT_PAUSE_MS = 200  # decode units may end at pauses this long (500 measured the same WER)


class TranscriptionHandler(Handler):
    def __init__(self, config: Config) -> None:
        self.config = config
        self.tc = config.transcription
        self.table = StreamTable()
        self.max_samples = int(self.tc.max_chunk_s * SAMPLE_RATE)
        self.model: Any = None
        self.vad_options: Any = None
        t = self.tc.temperature
        self.temperatures = ([t] + [x / 10 for x in range(2, 11, 2) if x / 10 > t]
                             if self.tc.temperature_fallback else [t])
        self.live: dict[int, PhraseCutter] = {}
        self.said: dict[int, str] = {}  # live: the end of what each stream committed
        self._dropped: list[tuple[str, str]] = []  # what the guards removed, this decode
        self.live_vad: Any = None
        self.window_frames = FULL_WINDOW  # encoder input length for the next decode
        self.source: Any = None
        self.level = ""
        self.model_desc = ""
        self.voices: Any = None  # VoiceChanges: is it another voice after a pause?

    def load(self) -> str:
        from faster_whisper.vad import VadOptions

        source = resolve_whisper(self.tc.model, self.config.paths.models_dir,
                                 self.tc.allow_download)
        self.source = source
        self._load_level()
        v = self.config.vad
        self.vad_options = VadOptions(threshold=v.threshold,
                                      min_silence_duration_ms=v.min_silence_ms,
                                      speech_pad_ms=v.speech_pad_ms,
                                      min_speech_duration_ms=v.min_speech_ms)
        self.live_vad = VadOptions(threshold=v.threshold,
                                   min_silence_duration_ms=self.config.live.end_silence_ms,
                                   speech_pad_ms=100, min_speech_duration_ms=v.min_speech_ms)
        self._patch_encoder_window()
        if ((self.tc.unit_max_s and self.tc.unit_voice_cuts)
                or (self.tc.recheck_min_s and self.tc.recheck_turns)):
            from engine.diarization.pipeline import VoiceChanges
            from engine.models.registry import diarization_paths

            try:
                self.voices = VoiceChanges(diarization_paths(self.config.paths.models_dir)[0])
            except ModelError:
                pass  # no segmentation model: units are cut at pauses alone
            else:  # its buffers now, not mid-session (a soak saw the peak rise by 25 MB)
                self.voices(np.zeros(SAMPLE_RATE, np.float32), [SAMPLE_RATE // 2])
        return self.model_desc

    def _load_level(self) -> None:
        """Load whisper at the chosen quantization level, falling back level by level."""
        from faster_whisper import WhisperModel

        from engine.models import levels

        source = self.source
        if source.local:
            folder = Path(source.model)
            choice = levels.choose(self.config, "whisper", folder,
                                   levels.whisper_digest(self.config, folder))
        else:  # a hub model name (downloads allowed): no chain, the pin or int8
            pin = levels.pinned(self.config, "whisper")
            choice = levels.Choice("whisper", pin or "int8", Path(source.model), False)
        errors = []
        for level in (choice.level, *choice.fallbacks):
            try:
                model = WhisperModel(source.model, device="cpu", compute_type=level,
                                     cpu_threads=self.tc.cpu_threads,
                                     local_files_only=source.local or not self.tc.allow_download)
            except (RuntimeError, ValueError, OSError) as exc:
                errors.append(f"{level}: {exc}")
                continue
            self.model, self.level = model, level
            shown = dataclasses.replace(choice, level=level)
            self.model_desc = f"{source.name} {levels.describe(shown, self.config)}"
            return
        raise ModelError(f"cannot load whisper model {source.model}: {'; '.join(errors)}")

    def _reload(self) -> Iterator[EngineEvent]:
        """Switch to the level the background chain validated (between two messages)."""
        import gc
        import os

        from engine.models import levels

        if not self.source.local:
            return
        folder = Path(self.source.model)
        choice = levels.choose(self.config, "whisper", folder,
                               levels.whisper_digest(self.config, folder))
        if choice.level == self.level and choice.validated:
            self.model_desc = f"{self.source.name} {choice.level}"
        else:
            self.model = None
            gc.collect()  # float32 weights go before int8 ones load: RSS stays in budget
            t0 = time.perf_counter()
            self._load_level()  # falls back to float32; a failure restarts the worker
            load_s = time.perf_counter() - t0
            yield WorkerStatus("transcription", os.getpid(), WorkerState.READY,
                               model=self.model_desc, load_s=load_s)
            return
        yield WorkerStatus("transcription", os.getpid(), WorkerState.READY, model=self.model_desc)

    def _patch_encoder_window(self) -> None:
        """Let live decodes use a shorter encoder window than 30 s.

        faster-whisper pads every input to 3000 mel frames, and the encoder's cost grows with
        that length: for a 3 s phrase padded to 13 s it ran ~7x faster, with the same WER on
        the dev clips (padding to less than ~10 s beyond the speech made whisper loop). The
        padding function is looked up in faster_whisper.transcribe at call time, so this
        process swaps it for one that pads to `self.window_frames`.
        """
        import faster_whisper.transcribe as fwt

        original = fwt.pad_or_trim

        def pad_or_trim(array: Any, length: int = FULL_WINDOW, *, axis: int = -1) -> Any:
            return original(array, self.window_frames, axis=axis)

        fwt.pad_or_trim = pad_or_trim

    def handle(self, msg: WorkerInput) -> Iterator[EngineEvent]:
        match msg:
            case ReloadModels():
                yield from self._reload()
            case StreamStart(live=True):
                if self.table.start(msg) is not None:
                    self.live[msg.stream_id] = PhraseCutter(self.config.live, self._vad,
                                                             self._pausing)
                    if msg.rewind:  # a seek: the text before it is no context for what follows
                        self.said.pop(msg.stream_id, None)
                        yield StreamRewound(msg.stream_id, "transcription", msg.start_sample)
            case StreamStart():
                self.table.start(msg)
            case AudioChunk(stream_id=sid) if sid in self.live:
                st = self.table.get(msg)
                if st is not None:
                    st.add(msg)
                    lag = time.monotonic() - msg.captured_at if msg.captured_at else 0.0
                    yield from self._live_step(sid, st, lag)
            case EndOfStream(stream_id=sid) if sid in self.live:
                st = self.table.get(msg)
                if st is None:
                    return
                yield from self._live_step(sid, st, 0.0, final=True)
                self.live.pop(sid, None)
                self.said.pop(sid, None)
                self.table.finish(sid, st.start_sample)
                yield TranscriptResult(sid, (), st.start_sample, st.start_sample, True, 0.0, 0.0)
            case AudioChunk():
                st = self.table.get(msg)
                if st is None:
                    return
                st.add(msg)
                # keep some look-ahead so the cut can fall in a silence
                while st.length >= self.max_samples + SAMPLE_RATE * 5:
                    yield self._decode(msg.stream_id, st, self._cut_point(st), final=False)
            case EndOfStream(stream_id=sid):
                st = self.table.get(msg)
                if st is None:
                    return
                while st.length > self.max_samples:
                    yield self._decode(sid, st, self._cut_point(st), final=False)
                result = self._decode(sid, st, st.length, final=True)
                self.table.finish(sid, result.upto_sample)
                yield result
            case _:
                return

    # ------------------------------------------------------------ live streams
    def _vad(self, audio: np.ndarray) -> list[tuple[int, int]]:
        from faster_whisper.vad import get_speech_timestamps

        return [(d["start"], d["end"]) for d in get_speech_timestamps(audio, self.live_vad)]

    def _pausing(self, audio: np.ndarray) -> bool:
        return tail_is_pause(audio, self.config.vad.threshold)

    def _live_step(self, sid: int, st: StreamBuffer, lag: float,
                   final: bool = False) -> Iterator[EngineEvent]:
        """Run the phrase policy on the open audio until it waits for more."""
        cutter = self.live[sid]
        lc = self.config.live
        if not final and lag > 0.5 and st.length < lc.max_phrase_s * SAMPLE_RATE:
            return  # more audio is already queued: decide once caught up (saves VAD runs)
        while True:
            decision = cutter.decide(st.audio(), time.monotonic(), lag, final)
            if decision is None:
                return
            yield self._live_act(sid, st, decision, lag)
            if final and st.length == 0:
                return

    def _live_act(self, sid: int, st: StreamBuffer, d: Decision,
                  lag: float) -> TranscriptResult | PartialResult:
        start = st.start_sample
        t0 = time.perf_counter()
        if d.kind == "partial":
            audio = st.audio()[: d.n]
            segs = self._transcribe(audio, start / SAMPLE_RATE, st.language, fast=True)
            text = collapse_repeats(" ".join(s.text for s in segs).strip())
            return PartialResult(sid, text, start, start + d.n)
        audio = st.take(d.n)
        segs = []
        self._dropped = []
        if d.kind == "commit" and len(audio) >= SAMPLE_RATE // 10:
            beam = 1 if lag > self.config.live.catch_up_lag_s else None
            segs = clean_segments(self._transcribe(audio, start / SAMPLE_RATE, st.language,
                                                   beam=beam, live=True), self._dropped)
            speech_n = d.speech_end if d.speech_end is not None else len(audio)
            if not segs and self.tc.recheck_min_s and \
                    speech_n >= self.tc.recheck_min_s * SAMPLE_RATE:
                segs = self._recheck_phrase(sid, audio, start, speech_n, st.language)
            if segs:
                self.said[sid] = (self.said.get(sid, "") + " " + " ".join(
                    s.text for s in segs if not s.gap))[-PROMPT_CHARS:]
            if segs and d.speech_end is not None and not segs[-1].words:
                # without word times whisper's last segment ends with the audio given to
                # it; the VAD knows where speech stopped
                end = round((start + d.speech_end) / SAMPLE_RATE, 3)
                last = segs[-1]
                if last.start < end < last.end:
                    segs[-1] = dataclasses.replace(last, end=end)
        self.table.published[sid] = st.start_sample
        self.settled_rss = release_freed()
        return TranscriptResult(sid, tuple(segs), start, st.start_sample, False,
                                work_s=time.perf_counter() - t0,
                                audio_s=len(audio) / SAMPLE_RATE,
                                dropped=tuple(self._dropped))

    def _recheck_phrase(self, sid: int, audio: np.ndarray, start: int, speech_n: int,
                        language: str | None) -> list[Segment]:
        """A live phrase with speech and no words: decoded again with the full window, the
        full beam and what was said before as the prompt, or committed as a gap."""
        found = clean_segments(self._transcribe(
            audio, start / SAMPLE_RATE, language, prompt=self.said.get(sid) or None,
            vad=False), self._dropped)
        return found or [gap_segment(start / SAMPLE_RATE, (start + speech_n) / SAMPLE_RATE,
                                     language or self.tc.language)]

    def _cut_point(self, st: StreamBuffer) -> int:
        """Where to end the next piece: the middle of the widest silence near the limit."""
        from faster_whisper.vad import get_speech_timestamps

        window = st.audio()[: self.max_samples]
        speech = get_speech_timestamps(window, self.vad_options)
        if not speech:
            return len(window)
        gaps = [(0, 0, speech[0]["start"])] + [
            (a["end"], b["start"], b["start"] - a["end"]) for a, b in zip(speech, speech[1:],
                                                                       strict=False)
        ] + [(speech[-1]["end"], len(window), len(window) - speech[-1]["end"])]
        # prefer gaps in the later half so pieces stay long (context helps whisper)
        late = [g for g in gaps if g[1] >= len(window) // 2 and g[2] > 0]
        if not late:
            return len(window)
        start, end, _ = max(late, key=lambda g: (g[2] >= SAMPLE_RATE * 0.3, g[2]))
        return max(1, (start + end) // 2)

    def _decode(self, sid: int, st: StreamBuffer, n: int, final: bool) -> TranscriptResult:
        offset_s = st.start_sample / SAMPLE_RATE
        start = st.start_sample
        audio = st.take(n) if n else np.zeros(0, np.float32)
        t0 = time.perf_counter()
        self._dropped = []
        segments: list[Segment] = []
        regions: list[tuple[int, int]] | None = None
        if len(audio) >= SAMPLE_RATE // 10:
            if self.tc.unit_max_s:
                regions = self._speech(audio)
                pauses = [(b + a) // 2 for (_, b), (a, _) in zip(regions, regions[1:],
                                                                  strict=False)]
                new_voice = (self.voices(audio, pauses)
                             if self.voices and self.tc.unit_voice_cuts and pauses else [])
                for a, b in decode_units(regions, len(audio), self.tc.unit_max_s,
                                         self.tc.unit_pad_ms, new_voice):
                    segments += clean_segments(self._transcribe(
                        audio[a:b], offset_s + a / SAMPLE_RATE, st.language, vad=False,
                        encoder_pad_s=self.tc.unit_encoder_pad_s), self._dropped)
            else:
                segments = self._transcribe(audio, offset_s, st.language)
        if self.tc.recheck_min_s and len(audio) >= SAMPLE_RATE // 2:
            speech = regions if regions is not None else self._speech(audio)
            if self.voices is not None and self.tc.recheck_turns:
                # the diarizer's speech too: a turn with no words is checked like a VAD
                # region (its model hears soft voices the VAD can miss)
                speech = sorted(speech + self.voices.activity(audio, self.tc.recheck_min_s))
            segments = self._cover(audio, offset_s, segments, st.language, speech)
        self.table.published[sid] = st.start_sample
        self.settled_rss = release_freed()
        return TranscriptResult(sid, tuple(segments), start, st.start_sample, final,
                                work_s=time.perf_counter() - t0,
                                audio_s=len(audio) / SAMPLE_RATE,
                                dropped=tuple(self._dropped))

    def _speech(self, audio: np.ndarray) -> list[tuple[int, int]]:
        """The VAD's speech regions (samples, unpadded), none longer than a decode unit,
        split at pauses of UNIT_PAUSE_MS: turns often change in shorter pauses than the
        VAD's own minimum silence."""
        from faster_whisper.vad import get_speech_timestamps

        vad = dataclasses.replace(self.vad_options, speech_pad_ms=0,
                                  min_silence_duration_ms=UNIT_PAUSE_MS,
                                  max_speech_duration_s=self.tc.unit_max_s or float("inf"))
        return [(d["start"], d["end"]) for d in get_speech_timestamps(audio, vad)]

    def _cover(self, audio: np.ndarray, offset_s: float, segments: list[Segment],
               language: str | None, speech: list[tuple[int, int]]) -> list[Segment]:
        """No speech lost silently: every stretch of speech with no word in it is decoded
        again on its own (whisper can skip a sentence even in a short window), with the
        text before it as the prompt; what still gives no words becomes a gap."""
        regions: list[tuple[float, float]] = []
        joined = self.config.vad.min_silence_ms / 1000
        for first, last in speech:  # rejoin what the unit cuts split: one stretch, one gap
            if regions and first / SAMPLE_RATE - regions[-1][1] < joined:
                regions[-1] = (regions[-1][0], max(regions[-1][1], last / SAMPLE_RATE))
            else:
                regions.append((first / SAMPLE_RATE, last / SAMPLE_RATE))
        spans = sorted((w.start - offset_s, w.end - offset_s)
                       for seg in segments for w in (seg.words or (seg,)))
        holes = uncovered(regions, spans, WORD_REACH_S, self.tc.recheck_min_s)
        if not holes:
            return segments
        added: list[Segment] = []
        for a, b in holes:
            lo, hi = max(0.0, a - RECHECK_PAD_S), min(len(audio) / SAMPLE_RATE, b + RECHECK_PAD_S)
            before = " ".join(s.text for s in segments if s.end - offset_s <= a + 0.05)
            piece = audio[int(lo * SAMPLE_RATE): int(hi * SAMPLE_RATE)]
            found = clean_segments(self._transcribe(
                piece, offset_s + lo, language, prompt=before[-PROMPT_CHARS:] or None,
                vad=False), self._dropped)
            kept = [s for s in found
                    if lo + offset_s - 0.05 <= (s.start + s.end) / 2 <= hi + offset_s + 0.05]
            added += kept or [gap_segment(offset_s + a, offset_s + b,
                                          language or self.tc.language)]
        return sorted(segments + added, key=lambda s: s.start)

    def _transcribe(self, audio: np.ndarray, offset_s: float, language: str | None,
                    fast: bool = False, beam: int | None = None,
                    live: bool = False, prompt: str | None = None,
                    vad: bool | None = None,
                    encoder_pad_s: float | None = None) -> list[Segment]:
        """Decode one piece. fast: the live partial line (beam 1, no word times, no
        fallback); live: a committed phrase (its own beam, short encoder window);
        encoder_pad_s: a file's decode unit, its encoder input cut to its length + this."""
        import ctranslate2

        # temperature fallback samples: seed by position so a piece decoded again after a
        # restart gives the same text as the first time
        ctranslate2.set_random_seed(int(offset_s * 1000) % (2**31))
        tc = self.tc
        language = language or tc.language
        language = None if language == "auto" else language
        lc = self.config.live
        if fast or live:
            beam = 1 if fast else beam or lc.commit_beam_size
            pad = lc.encoder_pad_s if fast else lc.commit_encoder_pad_s
            # rounded up to 0.1 s: a bounded set of encoder shapes (exact lengths grew the
            # worker to 522 MB over the corpus); coarser steps measured worse WER
            need = (len(audio) / SAMPLE_RATE + pad) * 100
            self.window_frames = (min(FULL_WINDOW, int(np.ceil(need / 10)) * 10)
                                  if pad > 0 else FULL_WINDOW)
        elif encoder_pad_s:
            beam = tc.beam_size
            # 5 s steps: four encoder shapes in all (whole seconds gave ten, and a long
            # session's peak memory rose each time a new one first came)
            need_s = 5 * np.ceil((len(audio) / SAMPLE_RATE + encoder_pad_s) / 5)
            self.window_frames = min(FULL_WINDOW, int(need_s) * 100)
        else:
            beam = tc.beam_size
            self.window_frames = FULL_WINDOW
        raw, info = self.model.transcribe(
            audio, language=language, beam_size=beam,
            temperature=[tc.temperature] if fast else self.temperatures,
            best_of=tc.best_of,
            condition_on_previous_text=tc.condition_on_previous_text,
            repetition_penalty=tc.repetition_penalty,
            initial_prompt=" ".join(p for p in (tc.initial_prompt, prompt) if p) or None,
            hotwords=", ".join(tc.vocabulary) or None,
            word_timestamps=(tc.word_timestamps and not (fast or live)
                             or live and lc.word_timestamps),
            # the partial line needs no times: with them, whisper closing a segment before
            # the audio's end made faster-whisper decode the rest again (up to 2x the cost,
            # and a commit waiting behind it)
            without_timestamps=fast,
            max_new_tokens=(int(min(len(audio) / SAMPLE_RATE, 30.0) * tc.max_tokens_per_s) + 16
                            if tc.max_tokens_per_s else None),
            # live audio has been through the VAD already
            vad_filter=(self.config.vad.enabled and not (fast or live)) if vad is None
            else vad,
            vad_parameters=self.vad_options,
        )
        out: list[Segment] = []
        for s in raw:
            text = s.text.strip()
            if not text:
                continue
            words = tuple(Word(_ms(w.start + offset_s), _ms(w.end + offset_s),
                               w.word.strip(), float(w.probability))
                          for w in (s.words or ()) if w.word.strip())
            out.append(Segment(_ms(s.start + offset_s), _ms(s.end + offset_s), text,
                               words, None, float(s.avg_logprob), float(s.no_speech_prob),
                               info.language))
        return out


def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None off glibc."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()
_SELF = psutil.Process()


def release_freed() -> int:
    """Give the heap pages a decode freed back to the system and return the RSS after it.
    A decode allocates and frees tens of MB; left in the heap they made the worker's RSS
    swing by up to 60 MB between samples, so only RSS taken right after this shows whether
    a long session keeps something (the soak's leak test reads it from heartbeats)."""
    if _TRIM is not None:
        _TRIM(0)
    return int(_SELF.memory_info().rss)


def decode_units(speech: list[tuple[int, int]], n: int, max_s: float,
                 pad_ms: int, new_voice: Sequence[bool] = ()) -> list[tuple[int, int]]:
    """Decode units (samples) of a piece of n samples: each speech region padded by pad_ms
    (never past half the pause to its neighbour), then merged with the next while the unit
    stays within max_s and the voice does not change (`new_voice[i - 1]`: region i is
    another voice than region i - 1). Short units keep whisper from skipping a sentence;
    audio outside every region is not decoded."""
    pad = pad_ms * SAMPLE_RATE // 1000
    limit = int(max_s * SAMPLE_RATE)
    units: list[tuple[int, int]] = []
    for i, (a, b) in enumerate(speech):
        lo = max(0, a - pad, (speech[i - 1][1] + a) // 2 if i else 0)
        hi = min(n, b + pad, (b + speech[i + 1][0]) // 2 if i + 1 < len(speech) else n)
        if units and hi - units[-1][0] <= limit and not (
                i - 1 < len(new_voice) and new_voice[i - 1]):
            units[-1] = (units[-1][0], hi)
        else:
            units.append((lo, hi))
    return units


def _ms(t: float) -> float:
    """A plain float rounded to the millisecond (exports are exact to the ms)."""
    return round(float(t), 3)


PAUSE_WINDOWS = 5  # Silero frames of 32 ms: the last 160 ms


def tail_is_pause(audio: np.ndarray, threshold: float) -> bool:
    """Is the end of `audio` silence by the VAD's own measure (every one of its last frames
    below the level where Silero ends speech)? It sees a pause before the phrase-closing
    silence is long enough; Silero scores each frame apart, so the tail alone suffices."""
    from faster_whisper.vad import get_vad_model

    n = PAUSE_WINDOWS * 512
    if len(audio) < n:
        return False
    probs = get_vad_model()(np.ascontiguousarray(audio[len(audio) - n:], dtype=np.float32))
    return float(np.max(probs)) < max(threshold - 0.15, 0.01)


def make_handler(config: Config, outputs: Mapping[Role, Sender]) -> TranscriptionHandler:
    return TranscriptionHandler(config)
