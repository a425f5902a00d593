"""Voice profiles: a speaker's voice remembered on this machine, so later sessions name them.

A profile is one CAM++ embedding (the model the diarizer already runs) averaged over a
person's clean speech, with how many seconds and which recordings built it. It is biometric
data, so it stays local and private: one file per voice (mode 0600) in a folder of its own
(mode 0700, `<recordings>/.voices` unless `[voices] folder` says otherwise), never in an
export, a session or a log (those carry the name and the match score only). `forget` deletes
the file; deleting the folder erases them all.

Matching is a cosine score between a session speaker's embedding and each profile; a
speaker takes a profile's name only at or above the threshold, and two speakers of one
session never take the same name (best score first).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import Config
from engine.fileio import atomic_write_bytes
from engine.messages import SAMPLE_RATE, SpeakerTurn

SUFFIX = ".voice.npz"
MIN_PIECE_S = 1.0  # shorter stretches give unsteady embeddings
MAX_PIECE_S = 8.0  # longer ones are embedded in parts (the embedding model's sweet spot)


class VoiceError(Exception):
    """A one-line reason for the user (no such voice, too little speech, a bad file)."""


@dataclass
class Profile:
    name: str
    vector: np.ndarray  # unit CAM++ embedding, speech-weighted mean over every enrolment
    seconds: float  # clean speech behind it
    sources: list[str] = field(default_factory=list)  # recordings it was built from
    created: str = ""
    updated: str = ""


def voices_dir(cfg: Config) -> Path:
    """Where profiles live: `[voices] folder`, else `.voices` in the recordings folder."""
    folder = cfg.voices.folder
    if not folder:
        return cfg.paths.recordings_dir / ".voices"
    path = Path(folder).expanduser()
    if not path.is_absolute():
        path = (cfg.source.parent if cfg.source else Path.cwd()) / path
    return path


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


class VoiceStore:
    """The profiles in one folder (created 0700 on first save; files 0600)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _path(self, name: str) -> Path:
        digest = hashlib.sha256(name.strip().casefold().encode("utf-8")).hexdigest()[:16]
        return self.folder / f"{digest}{SUFFIX}"

    def list(self) -> list[Profile]:
        """Every profile, by name; unreadable files are skipped (a half-copied folder)."""
        out = []
        if self.folder.is_dir():
            for path in sorted(self.folder.glob(f"*{SUFFIX}")):
                try:
                    out.append(_load(path))
                except (OSError, ValueError, KeyError):
                    continue
        return sorted(out, key=lambda p: p.name.casefold())

    def get(self, name: str) -> Profile | None:
        path = self._path(name)
        try:
            return _load(path) if path.exists() else None
        except (OSError, ValueError, KeyError) as exc:
            raise VoiceError(f"voice profile {name!r} is unreadable ({exc})") from None

    def save(self, profile: Profile) -> Path:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)  # also when it existed with looser rights
        path = self._path(profile.name)
        buf = io.BytesIO()
        meta = {"name": profile.name, "seconds": round(profile.seconds, 2),
                "sources": profile.sources, "created": profile.created,
                "updated": profile.updated}
        np.savez(buf, vector=profile.vector.astype(np.float32),
                 meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8))
        atomic_write_bytes(path, buf.getvalue(), mode=None)  # mkstemp's 0600
        os.chmod(path, 0o600)
        return path

    def rename(self, old: str, new: str) -> Profile:
        profile = self.get(old)
        if profile is None:
            raise VoiceError(f"no voice profile named {old!r} (see `transcrevai speakers list`)")
        if not new.strip():
            raise VoiceError("the new name is empty")
        if self._path(new) != self._path(old) and self.get(new) is not None:
            raise VoiceError(f"a voice profile named {new!r} already exists; forget it first")
        old_path = self._path(old)
        profile.name, profile.updated = new.strip(), _stamp()
        self.save(profile)
        if self._path(new) != old_path:
            old_path.unlink(missing_ok=True)
        return profile

    def forget(self, name: str) -> None:
        """Remove every trace of the voice: its file is the only place it is kept."""
        path = self._path(name)
        if not path.exists():
            raise VoiceError(f"no voice profile named {name!r} (see `transcrevai speakers list`)")
        path.unlink()


def _load(path: Path) -> Profile:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(bytes(z["meta"]).decode("utf-8"))
        vector = np.asarray(z["vector"], dtype=np.float32)
    return Profile(str(meta["name"]), vector, float(meta["seconds"]), list(meta["sources"]),
                   str(meta.get("created", "")), str(meta.get("updated", "")))


class Embedder:
    """CAM++ speaker embeddings of plain audio stretches (the diarizer's model and features)."""

    def __init__(self, embedding_path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(embedding_path), opts,
                                             providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    @classmethod
    def from_config(cls, cfg: Config) -> Embedder:
        from engine.models.registry import diarization_paths

        return cls(diarization_paths(cfg.paths.models_dir)[1], cfg.diarization.threads)

    def embed(self, audio: np.ndarray) -> np.ndarray | None:
        """A unit embedding of 16 kHz mono speech, None when too short to embed."""
        from engine.diarization.features import fbank

        feats = fbank(np.asarray(audio, dtype=np.float32))
        if feats.shape[0] < 2:
            return None
        feats = feats - feats.mean(axis=0, keepdims=True)  # per utterance, as in training
        vec = self._session.run(None, {self._input: feats[None]})[0][0]
        norm = float(np.linalg.norm(vec))
        return (vec / norm).astype(np.float32) if norm > 0 else None

    def voice(self, audio: np.ndarray, spans: Sequence[tuple[float, float]]
              ) -> tuple[np.ndarray | None, float]:
        """One speaker's embedding from their stretches (seconds): each embedded in parts of
        at most MAX_PIECE_S, averaged by length; with the seconds used."""
        total: np.ndarray[Any, Any] = np.zeros(0, dtype=np.float32)
        used = 0.0
        for a, b in spans:
            t = a
            while b - t >= MIN_PIECE_S:
                e = min(b, t + MAX_PIECE_S)
                if b - e < MIN_PIECE_S:
                    e = b  # no short tail left on its own
                vec = self.embed(audio[int(t * SAMPLE_RATE):int(e * SAMPLE_RATE)])
                if vec is not None:
                    total = vec * (e - t) if total.size == 0 else total + vec * (e - t)
                    used += e - t
                t = e
        if total.size == 0:
            return None, 0.0
        return (total / float(np.linalg.norm(total))).astype(np.float32), used


def clean_spans(turns: Sequence[SpeakerTurn], speaker: str) -> list[tuple[float, float]]:
    """`speaker`'s speech where nobody else talks (overlaps give mixed embeddings)."""
    others = sorted((t.start, t.end) for t in turns if t.speaker != speaker)
    out: list[tuple[float, float]] = []
    for t in sorted((t for t in turns if t.speaker == speaker), key=lambda t: t.start):
        pieces = [(t.start, t.end)]
        for a, b in others:
            if b <= t.start or a >= t.end:
                continue
            pieces = [q for p0, p1 in pieces for q in ((p0, min(p1, a)), (max(p0, b), p1))
                      if q[1] - q[0] > 0]
        out += [p for p in pieces if p[1] - p[0] >= MIN_PIECE_S]
    return out


def speech_spans(audio: np.ndarray, start_s: float = 0.0,
                 end_s: float | None = None) -> list[tuple[float, float]]:
    """Where a one-person recording has speech (silero VAD), within [start_s, end_s)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    lo = int(start_s * SAMPLE_RATE)
    hi = len(audio) if end_s is None else min(len(audio), int(end_s * SAMPLE_RATE))
    found = get_speech_timestamps(audio[lo:hi], VadOptions(min_silence_duration_ms=300,
                                                           speech_pad_ms=100))
    return [((lo + d["start"]) / SAMPLE_RATE, (lo + d["end"]) / SAMPLE_RATE) for d in found]


def enrol(store: VoiceStore, embedder: Embedder, audio: np.ndarray,
          spans: Sequence[tuple[float, float]], name: str, source: str,
          min_s: float, who: str = "") -> Profile:
    """Add a person's speech (`spans` of `audio`) to the profile `name`, created if new.
    Refused with the reason when the stretches hold less than `min_s` of clean speech."""
    name = name.strip()
    if not name:
        raise VoiceError("a voice needs a name")
    vec, seconds = embedder.voice(audio, spans)
    if vec is None or seconds < min_s:
        whose = f" from {who}" if who else ""
        raise VoiceError(f"only {seconds:.1f} s of clean speech{whose} (at least {min_s:g} s "
                         "alone, without overlap, is needed for a voice profile); record more "
                         "or enrol from another session too")
    old = store.get(name)
    now = _stamp()
    if old is None:
        profile = Profile(name, vec, seconds, [source], now, now)
    else:  # several sessions add to one profile, weighted by their speech
        total = old.vector * old.seconds + vec * seconds
        profile = Profile(old.name, (total / float(np.linalg.norm(total))).astype(np.float32),
                          old.seconds + seconds, [*old.sources, source], old.created, now)
    store.save(profile)
    return profile


@dataclass(frozen=True)
class Match:
    speaker: str  # the session's label
    name: str  # the profile's name
    score: float


def recognise(voices: dict[str, np.ndarray], profiles: Sequence[Profile],
              threshold: float) -> list[Match]:
    """Session speakers (label -> unit embedding) named after the profiles they match: best
    scores first, each profile and each speaker at most once, none under the threshold."""
    pairs = sorted(((float(np.dot(v, p.vector)), label, p.name)
                    for label, v in voices.items() for p in profiles), reverse=True)
    taken_labels: set[str] = set()
    taken_names: set[str] = set()
    out = []
    for score, label, name in pairs:
        if score < threshold:
            break
        if label in taken_labels or name in taken_names:
            continue
        taken_labels.add(label)
        taken_names.add(name)
        out.append(Match(label, name, round(score, 3)))
    return sorted(out, key=lambda m: m.speaker)


MATCH_MAX_S = 60.0  # a speaker's longest clean turns up to this are embedded to match
MATCH_MIN_S = 1.5  # a speaker with less clean speech is not matched (too unsure)


def session_voices(embedder: Embedder, audio: np.ndarray,
                   turns: Sequence[SpeakerTurn]) -> dict[str, np.ndarray]:
    """Each speaker's embedding over their longest clean turns (at most MATCH_MAX_S);
    speakers with less than MATCH_MIN_S of clean speech get none."""
    out = {}
    for label in dict.fromkeys(t.speaker for t in turns):
        spans, kept = [], 0.0
        for a, b in sorted(clean_spans(turns, label), key=lambda s: s[0] - s[1]):
            if kept >= MATCH_MAX_S:
                break
            spans.append((a, b))
            kept += b - a
        if kept < MATCH_MIN_S:
            continue
        vec, _ = embedder.voice(audio, sorted(spans))
        if vec is not None:
            out[label] = vec
    return out


def piece_voices(embedder: Embedder, audio: np.ndarray, turns: Sequence[SpeakerTurn],
                 clean: dict[str, np.ndarray] | None = None
                 ) -> list[tuple[str, np.ndarray, float]]:
    """Every speaker's voice in a piece of a split recording, with its seconds: as
    session_voices (`clean`, when already computed), but a speaker with little clean speech
    is embedded from all of it (an unsure voice still beats founding a new speaker for each
    short turn)."""
    out = []
    if clean is None:
        clean = session_voices(embedder, audio, turns)
    for label in dict.fromkeys(t.speaker for t in turns):
        spans = (clean_spans(turns, label) if label in clean
                 else sorted((t.start, t.end) for t in turns if t.speaker == label))
        vec = clean.get(label)
        if vec is None:
            vec, _ = embedder.voice(audio, spans)
        if vec is not None:
            out.append((label, vec, round(sum(b - a for a, b in spans), 3)))
    return out


class Recogniser:
    """The diarization worker's side: profiles read when a stream needs them (so an enrol
    or forget in another process counts from the next stream), the embedding model loaded
    only once there are profiles."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.store = VoiceStore(voices_dir(cfg))
        self._embedder: Embedder | None = None

    def profiles(self) -> list[Profile]:
        return self.store.list() if self.cfg.voices.enabled else []

    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder.from_config(self.cfg)
        return self._embedder

    def enrol(self, audio_path: str, turns: Sequence[SpeakerTurn], speaker: str, name: str,
              source: str) -> Profile:
        """A session speaker's voice saved as (or added to) the profile `name`."""
        from engine.audio.source import AudioFileError, read_audio

        if not self.cfg.voices.enabled:
            raise VoiceError("voice profiles are turned off ([voices] enabled = false)")
        try:
            audio = read_audio(audio_path)
        except AudioFileError as exc:
            raise VoiceError(str(exc)) from None
        return enrol(self.store, self.embedder(), audio, clean_spans(turns, speaker), name,
                     source, self.cfg.voices.min_enrol_s, speaker)

    def match_audio(self, audio: np.ndarray, turns: Sequence[SpeakerTurn],
                    profiles: Sequence[Profile]) -> list[Match]:
        """Speakers of a whole recording named after the profiles their voices match."""
        if not profiles or not turns:
            return []
        voices = session_voices(self.embedder(), audio, turns)
        return recognise(voices, profiles, self.cfg.voices.threshold)

    def match_voices(self, voices: dict[str, np.ndarray],
                     profiles: Sequence[Profile]) -> list[Match]:
        """Live: the online diarizer's speaker centroids against the profiles."""
        return recognise(voices, profiles, self.cfg.voices.threshold) if profiles else []


def describe(profile: Profile) -> dict[str, Any]:
    """What `speakers list` shows: never the embedding itself."""
    return {"name": profile.name, "seconds": round(profile.seconds, 1),
            "recordings": len(profile.sources), "created": profile.created,
            "updated": profile.updated}
