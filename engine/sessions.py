"""Sessions on disk: every live recording or console replay is a durable object.

A session is a set of sidecar files under `recordings/` sharing one name (its id):

- `ID.wav` — the audio (microphone sessions; a replay's audio stays where it is and the
  metadata points at it);
- `ID.jsonl` — the journal: one JSON line per committed segment (id, start, end, speaker,
  text, words with times, model, language) and per batch of speaker turns, appended, flushed
  and fsynced as they arrive, so a crash or kill loses nothing already committed;
- `ID.meta.json` — small metadata (source, audio, device, started, duration, speaker names,
  engine version, status), rewritten atomically (temp file + rename).

Reading is forgiving: a torn last journal line (the process died mid-write) is skipped with a
warning, never a failure. A session whose writer died is reported as interrupted.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.fileio import atomic_write_text
from engine.messages import Segment, SpeakerTurn, Word
from engine.transcript import (
    Transcript,
    assign_speakers,
    fold,
    trimmed_turns,
    without_speakers,
)

META_SUFFIX = ".meta.json"
JOURNAL_SUFFIX = ".jsonl"
META_VERSION = 1


class SessionError(Exception):
    """A session that cannot be found or read; str() is one line naming it."""


def engine_version() -> str:
    try:
        from importlib.metadata import version

        return version("transcrevai")
    except Exception:  # noqa: BLE001 - not installed as a distribution (a bare checkout)
        return "0+unknown"


def _atomic_json(path: Path, doc: dict[str, Any]) -> None:
    """Metadata is rewritten whole: a kill mid-write keeps the previous version."""
    atomic_write_text(path, json.dumps(doc, ensure_ascii=False, indent=2))


@dataclass
class SessionMeta:
    """What `ID.meta.json` holds."""

    id: str
    source: str  # "mic" | "file" | "cluster" (a file transcribed by a batch on Ray actors)
    audio: str  # the recording (mic) or the replayed file
    started: str  # ISO 8601, local time with offset
    device: str = ""
    duration_s: float = 0.0
    speaker_names: dict[str, str] = field(default_factory=dict)
    # speakers the user said are not the voice profile they matched (stay unnamed)
    rejected_voices: list[str] = field(default_factory=list)
    engine_version: str = ""
    model: str = ""
    language: str = ""
    status: str = "recording"  # recording | complete | interrupted
    pid: int = 0  # the writer; a "recording" session whose writer is gone was interrupted
    version: int = META_VERSION

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> SessionMeta:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in doc.items() if k in known})


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_session_id(recordings_dir: Path, stem: str = "") -> str:
    """`YYYY-MM-DD_HH-MM-SS[_stem]`, unique in the folder: its journal is claimed as an
    empty file, so two consoles starting in the same second never share one."""
    base = time.strftime("%Y-%m-%d_%H-%M-%S") + (f"_{stem}" if stem else "")
    recordings_dir.mkdir(parents=True, exist_ok=True)
    sid, n = base, 1
    while True:
        if not (recordings_dir / f"{sid}{META_SUFFIX}").exists():
            try:
                os.close(os.open(recordings_dir / f"{sid}{JOURNAL_SUFFIX}",
                                 os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
                return sid
            except FileExistsError:
                pass
        n += 1
        sid = f"{base}-{n}"


class SessionWriter:
    """Writes one session's journal and metadata as the engine commits results."""

    def __init__(self, folder: Path, meta: SessionMeta) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.meta = folder, meta
        self.meta_path = folder / f"{meta.id}{META_SUFFIX}"
        self.journal_path = folder / f"{meta.id}{JOURNAL_SUFFIX}"
        self._f: Any = open(self.journal_path, "a", encoding="utf-8")  # noqa: SIM115
        self._next_id = 0
        self.failed = ""  # why the session stopped being written (a full disk); reported once
        meta.pid = os.getpid()
        meta.engine_version = meta.engine_version or engine_version()
        self.save_meta()

    @classmethod
    def for_recording(cls, wav: Path, device: str = "") -> SessionWriter:
        """A microphone session: the id is the WAV's name, the sidecars sit beside it."""
        meta = SessionMeta(wav.stem, "mic", str(wav), datetime.now().astimezone().isoformat(
            timespec="seconds"), device=device)
        return cls(wav.parent, meta)

    @classmethod
    def for_file(cls, recordings_dir: Path, audio: str) -> SessionWriter:
        """A replay of a file: a new id in recordings/, pointing at the file where it is."""
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(audio).stem)[:40]
        meta = SessionMeta(new_session_id(recordings_dir, stem), "file",
                           str(Path(audio).resolve()),
                           datetime.now().astimezone().isoformat(timespec="seconds"))
        return cls(recordings_dir, meta)

    def save_meta(self) -> None:
        """Write the metadata; speaker names and rejected voices are the file's (the user's
        decisions go straight to disk, possibly from another thread, and must survive this
        writer's updates). A failed write leaves the previous file whole (temp + rename)."""
        names = _names_on_disk(self.meta_path)
        if names is not None:
            self.meta.speaker_names = names
        rejected = _on_disk(self.meta_path, "rejected_voices")
        if isinstance(rejected, list):
            self.meta.rejected_voices = [str(x) for x in rejected]
        try:
            _atomic_json(self.meta_path, asdict(self.meta))
        except OSError as exc:
            self._fail(exc)
            if not self.meta_path.exists():
                raise

    def _fail(self, exc: OSError) -> None:
        import errno

        why = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (
            exc.strerror or str(exc))
        self.failed = self.failed or (f"cannot write session {self.meta.id} in {self.folder} "
                                      f"({why}); what was written before is kept")

    def _write(self, record: dict[str, Any]) -> None:
        """Append one journal line. On a full disk the journal stops at its last whole
        line (a torn one is skipped when read) and `failed` says why."""
        if self._f is None or self.failed:
            return
        try:
            self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as exc:
            self._fail(exc)

    def segment(self, seg: Segment, model: str = "") -> None:
        self._write({
            "type": "segment", "id": self._next_id, "start": seg.start, "end": seg.end,
            "speaker": seg.speaker, "text": seg.text, "language": seg.language,
            "model": model, "avg_logprob": round(seg.avg_logprob, 3),
            "words": [{"start": w.start, "end": w.end, "word": w.text,
                       "probability": round(w.probability, 3)} for w in seg.words],
            **({"gap": True} if seg.gap else {}),
        })
        self._next_id += 1
        if model and not self.meta.model:
            self.meta.model = model
        if seg.language and not self.meta.language:
            self.meta.language = seg.language

    def turns(self, turns: list[SpeakerTurn] | tuple[SpeakerTurn, ...],
              refined: bool = False) -> None:
        """Live turns (appended to earlier ones) or the offline pass (replaces them)."""
        self._write({"type": "refined" if refined else "turns",
                     "turns": [[t.start, t.end, t.speaker] for t in turns]})

    def voices(self, matches: tuple[tuple[str, str, float], ...] | list[Any]) -> None:
        """Speakers named after voice profiles: name and score only, never the voice."""
        self._write({"type": "voices", "matches": [[a, b, round(c, 3)] for a, b, c in matches]})

    def seek(self, role: str, to_s: float) -> None:
        """A replay seeked back to `to_s`: `role`'s records from there on are superseded
        (segments for "transcription", live turns for "diarization")."""
        self._write({"type": "seek", "role": role, "to": round(to_s, 3)})

    def close(self, duration_s: float | None = None, status: str = "complete") -> None:
        if self._f is not None:
            try:
                self._f.close()
            except OSError as exc:  # the last buffered bytes did not fit
                self._fail(exc)
            self._f = None
        if duration_s is not None:
            self.meta.duration_s = round(duration_s, 3)
        self.meta.status = status
        self.save_meta()


def record_transcript(recordings_dir: Path, tr: Transcript, device: str = "",
                      source: str = "cluster") -> Path:
    """Keep a finished transcript (a cluster batch's file) as a complete session, so
    `sessions` lists, searches and exports it like a console's; only names and scores of
    recognised voices are kept, never a voice. Raises OSError when the folder is unusable."""
    writer = SessionWriter.for_file(recordings_dir, tr.source)
    writer.meta.source, writer.meta.device = source, device
    for seg in tr.segments:
        writer.segment(seg, tr.model)
    if tr.turns:
        writer.turns(tr.turns, refined=True)
    if tr.recognised:
        writer.voices([(label, tr.names.get(label, label), score)
                       for label, score in tr.recognised.items()])
    writer.close(tr.duration_s, "complete")
    if writer.failed:
        raise OSError(writer.failed)
    return writer.meta_path


def _on_disk(meta_path: Path, key: str) -> Any:
    try:
        return json.loads(meta_path.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def _names_on_disk(meta_path: Path) -> dict[str, str] | None:
    names = _on_disk(meta_path, "speaker_names")
    return dict(names) if isinstance(names, dict) else None


def _update_meta(meta_path: Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Apply a user's decision to a session's metadata file, keeping everything else."""
    try:
        doc = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SessionError(f"session metadata {meta_path} is missing") from None
    except (OSError, ValueError) as exc:
        raise SessionError(f"cannot read {meta_path}: {exc}") from None
    change(doc)
    try:
        _atomic_json(meta_path, doc)
    except OSError as exc:
        raise SessionError(f"cannot write {meta_path}: {exc.strerror or exc}") from None
    return doc


def store_rejection(meta_path: Path, label: str) -> list[str]:
    """Keep in a session that `label` is not the voice profile it matched."""
    def change(doc: dict[str, Any]) -> None:
        doc["rejected_voices"] = list(dict.fromkeys([*(doc.get("rejected_voices") or []),
                                                     label]))

    return list(_update_meta(meta_path, change)["rejected_voices"])


def store_name(meta_path: Path, label: str, name: str) -> dict[str, str]:
    """Set (or, with an empty name, clear) a speaker's display name in a session's metadata
    file, keeping everything else in it; returns the names now stored."""
    def change(doc: dict[str, Any]) -> None:
        names = dict(doc.get("speaker_names") or {})
        if name.strip():
            names[label] = name.strip()
        else:
            names.pop(label, None)
        doc["speaker_names"] = names

    return dict(_update_meta(meta_path, change)["speaker_names"])


# --------------------------------------------------------------------------- reading
@dataclass
class Session:
    meta: SessionMeta
    meta_path: Path
    segments: list[Segment] = field(default_factory=list)
    turns: list[SpeakerTurn] = field(default_factory=list)
    refined: list[SpeakerTurn] | None = None
    warnings: list[str] = field(default_factory=list)
    recognised: list[tuple[str, str, float]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.meta.id

    @property
    def status(self) -> str:
        if self.meta.status == "recording" and not _pid_alive(self.meta.pid):
            return "interrupted"
        return self.meta.status

    def transcript(self) -> Transcript:
        """Speakers from the offline pass when it ran, else the live turns; names applied."""
        turns = self.refined if self.refined is not None else self.turns
        tr = Transcript(self.meta.audio, self.duration_s, self.meta.language,
                        self.meta.model, names=dict(self.meta.speaker_names))
        tr.segments = (assign_speakers(self.segments, turns) if turns
                       else without_speakers(self.segments))
        tr.turns, tr.diarized = list(turns), bool(turns)
        tr.language = tr.language or next((s.language for s in tr.segments if s.language), "")
        tr.warnings = list(self.warnings)
        tr.recognise([m for m in self.recognised  # names the user gave win
                      if m[0] not in self.meta.rejected_voices])
        return tr

    @property
    def duration_s(self) -> float:
        if self.meta.duration_s:
            return self.meta.duration_s
        if self.meta.source == "mic":  # interrupted: the WAV has what was captured
            try:
                import soundfile as sf

                return float(sf.info(self.meta.audio).duration)
            except Exception:  # noqa: BLE001 - unreadable audio: fall back to the text
                pass
        return max((s.end for s in self.segments), default=0.0)

    @property
    def words(self) -> int:
        return sum(len(s.text.split()) for s in self.segments)

    @property
    def speakers(self) -> list[str]:
        """Speakers the diarizer found (from the turns: listing many sessions must not
        relabel every transcript)."""
        turns = self.refined if self.refined is not None else self.turns
        return list(dict.fromkeys(t.speaker for t in turns)) if self.segments else []


def _read_journal(path: Path, sess: Session) -> None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SessionError(f"cannot read {path}: {exc.strerror or exc}") from None
    lines = raw.split(b"\n")
    last = len(lines) - 1
    while last >= 0 and not lines[last].strip():
        last -= 1
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
            _apply(rec, sess)
        except (ValueError, KeyError, TypeError, IndexError):
            where = "last line" if i == last else f"line {i + 1}"
            what = "torn (the writer stopped mid-line)" if i == last else "unreadable"
            sess.warnings.append(f"{path.name}: {where} {what}; skipped")


def _apply(rec: dict[str, Any], sess: Session) -> None:
    kind = rec.get("type", "segment")
    if kind == "segment":
        words = tuple(Word(float(w["start"]), float(w["end"]), str(w["word"]),
                           float(w.get("probability", 1.0))) for w in rec.get("words", []))
        sess.segments.append(Segment(float(rec["start"]), float(rec["end"]), str(rec["text"]),
                                     words, rec.get("speaker"),
                                     float(rec.get("avg_logprob", 0.0)),
                                     language=str(rec.get("language") or ""),
                                     gap=bool(rec.get("gap", False))))
        if rec.get("model") and not sess.meta.model:
            sess.meta.model = str(rec["model"])
    elif kind == "turns":
        sess.turns += [SpeakerTurn(float(a), float(b), str(s)) for a, b, s in rec["turns"]]
    elif kind == "voices":
        sess.recognised = [(str(a), str(b), float(c)) for a, b, c in rec["matches"]]
    elif kind == "seek" and rec["role"] == "transcription":
        to = float(rec["to"])
        sess.segments = [seg for seg in sess.segments if seg.end <= to]
    elif kind == "seek":
        sess.turns = trimmed_turns(sess.turns, float(rec["to"]))
    elif kind == "refined":
        sess.refined = [SpeakerTurn(float(a), float(b), str(s)) for a, b, s in rec["turns"]]
    else:
        raise KeyError(kind)


def _meta_for(journal: Path) -> SessionMeta:
    """Metadata for a journal without its sidecar (an older or half-created session)."""
    wav = journal.with_suffix(".wav")
    started = datetime.fromtimestamp(journal.stat().st_mtime).astimezone()
    return SessionMeta(journal.stem, "mic" if wav.exists() else "file", str(wav),
                       started.isoformat(timespec="seconds"), status="interrupted")


def load_session(meta_path: Path) -> Session:
    """Read one session from its `.meta.json` (or its journal when the metadata is missing)."""
    if meta_path.name.endswith(META_SUFFIX):
        sid = meta_path.name[: -len(META_SUFFIX)]
        journal = meta_path.with_name(sid + JOURNAL_SUFFIX)
        try:
            meta = SessionMeta.from_dict(json.loads(meta_path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise SessionError(f"no session {sid} ({meta_path} is missing)") from None
        except (OSError, ValueError, TypeError) as exc:
            if not journal.exists():
                raise SessionError(f"{meta_path}: unreadable session metadata ({exc})") from None
            meta = _meta_for(journal)
    else:
        journal = meta_path
        meta = _meta_for(journal)
    sess = Session(meta, meta_path.with_name(meta.id + META_SUFFIX))
    _read_journal(journal, sess)
    return sess


def iter_sessions(recordings_dir: Path) -> Iterator[Session]:
    """Every session in the folder, oldest first; unreadable ones are skipped."""
    if not recordings_dir.is_dir():
        return
    seen: set[str] = set()
    paths = sorted(recordings_dir.glob(f"*{META_SUFFIX}")) + sorted(
        recordings_dir.glob(f"*{JOURNAL_SUFFIX}"))
    found: list[Session] = []
    for path in paths:
        sid = path.name[: -len(META_SUFFIX)] if path.name.endswith(META_SUFFIX) else path.stem
        if sid in seen or path.name.startswith("."):
            continue
        seen.add(sid)
        try:
            found.append(load_session(path))
        except SessionError:
            continue
    yield from sorted(found, key=lambda s: (s.meta.started, s.id))


def find_session(ref: str, recordings_dir: Path) -> Session:
    """A session by id, unique id prefix, or path to any of its files."""
    path = Path(ref).expanduser()
    if path.suffix in (".wav", ".jsonl", ".json") and path.exists():
        stem = path.name[: -len(META_SUFFIX)] if path.name.endswith(META_SUFFIX) else path.stem
        meta = path.with_name(stem + META_SUFFIX)
        return load_session(meta if meta.exists() else path.with_name(stem + JOURNAL_SUFFIX))
    ids = [s for s in iter_sessions(recordings_dir) if s.id == ref]
    if not ids:
        ids = [s for s in iter_sessions(recordings_dir) if s.id.startswith(ref)]
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise SessionError(f"no session '{ref}' in {recordings_dir} (see `transcrevai sessions`)")
    raise SessionError(f"'{ref}' matches {len(ids)} sessions: "
                       f"{', '.join(s.id for s in ids[:5])}{'…' if len(ids) > 5 else ''}")


def rename_speaker(sess: Session, speaker: str, name: str) -> str:
    """Store a display name for a speaker label (or a current name) in the session."""
    labels = {s.speaker for s in sess.transcript().segments if s.speaker}
    labels |= {t.speaker for t in (sess.refined or sess.turns)}
    if speaker not in labels:
        by_name = [lb for lb, nm in sess.meta.speaker_names.items() if nm == speaker]
        if len(by_name) != 1:
            known = ", ".join(sorted(labels)) or "none"
            raise SessionError(f"session {sess.id} has no speaker '{speaker}' (speakers: "
                               f"{known})")
        speaker = by_name[0]
    if not sess.meta_path.exists():  # a journal without metadata: create it first
        try:
            _atomic_json(sess.meta_path, asdict(sess.meta))
        except OSError as exc:
            raise SessionError(f"cannot write {sess.meta_path}: {exc.strerror or exc}") from None
    sess.meta.speaker_names = store_name(sess.meta_path, speaker, name)
    return speaker


@dataclass(frozen=True)
class Hit:
    session: str
    index: int  # segment index in the session's transcript
    start: float
    speaker: str
    text: str


def search_sessions(recordings_dir: Path, text: str) -> list[Hit]:
    """Segments containing `text` in every session (case- and accent-insensitive)."""
    needle = fold(text.strip())
    hits: list[Hit] = []
    if not needle:
        return hits
    for sess in iter_sessions(recordings_dir):
        tr = sess.transcript()
        for i, seg in enumerate(tr.segments):
            if needle in fold(seg.text):
                hits.append(Hit(sess.id, i, seg.start, tr.name(seg.speaker), seg.text.strip()))
    return hits
