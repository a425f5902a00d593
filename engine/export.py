"""Transcript exporters: TXT, SRT, WebVTT, JSON, RTTM.

Subtitles follow the usual broadcast limits (at most 2 lines of 42 characters per cue); a
long segment becomes several cues split at word times, so a cue never shows more than a
reader can take in.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from engine.messages import Segment, SpeakerTurn, Word
from engine.timefmt import timestamp
from engine.transcript import UNKNOWN_SPEAKER, Transcript, gap_segment

MAX_LINE = 42
MAX_LINES = 2


def to_txt(tr: Transcript) -> str:
    """Speaker-prefixed paragraphs: consecutive segments of one speaker are grouped."""
    lines: list[str] = []
    group: list[Segment] = []

    def flush() -> None:
        if group:
            text = " ".join(s.text for s in group)
            lines.append(f"[{timestamp(group[0].start, '.')} - {timestamp(group[-1].end, '.')}] "
                         f"{tr.name(group[0].speaker)}: {text}")
        group.clear()

    for seg in tr.segments:
        if group and seg.speaker != group[0].speaker:
            flush()
        group.append(seg)
    flush()
    return "\n".join(lines) + ("\n" if lines else "")


def _fits(text: str) -> bool:
    return len(textwrap.wrap(text, MAX_LINE)) <= MAX_LINES


def _cues(seg: Segment, prefix: str) -> list[tuple[float, float, str]]:
    """Split one segment into cues that fit MAX_LINES x MAX_LINE (prefix counted)."""
    if _fits(prefix + seg.text):
        return [(seg.start, seg.end, seg.text)]
    words = list(seg.words) or _spread_words(seg)
    cues: list[tuple[float, float, str]] = []
    current: list[Word] = []
    for w in words:
        candidate = " ".join(x.text for x in [*current, w])
        if current and not _fits(prefix + candidate):
            cues.append((current[0].start, current[-1].end, " ".join(x.text for x in current)))
            current = []
        current.append(w)
    if current:
        cues.append((current[0].start, current[-1].end, " ".join(x.text for x in current)))
    # first cue starts with the segment, last ends with it; keep times monotonic
    fixed: list[tuple[float, float, str]] = []
    for i, (a, b, text) in enumerate(cues):
        a = seg.start if i == 0 else max(a, fixed[-1][1])
        b = seg.end if i == len(cues) - 1 else max(b, a + 0.001)
        fixed.append((a, max(a, b), text))
    return fixed


def _spread_words(seg: Segment) -> list[Word]:
    """Words with times spread by character count, for segments without word times."""
    tokens = seg.text.split()
    total = sum(len(t) + 1 for t in tokens) or 1
    out: list[Word] = []
    t = seg.start
    for tok in tokens:
        d = (seg.end - seg.start) * (len(tok) + 1) / total
        out.append(Word(t, t + d, tok))
        t += d
    return out


def _subtitle_cues(tr: Transcript, prefix: Callable[[Segment], str]) -> list[tuple[float, float,
                                                                                     str, Segment]]:
    cues = []
    for seg in tr.segments:
        for a, b, text in _cues(seg, prefix(seg)):
            cues.append((a, b, text, seg))
    # never overlap the next cue: players show overlapping cues stacked
    out = []
    for i, (a, b, text, seg) in enumerate(cues):
        if i + 1 < len(cues):
            b = min(b, cues[i + 1][0])
        out.append((a, max(a, b), text, seg))
    return out


def to_srt(tr: Transcript) -> str:
    blocks = []
    cues = _subtitle_cues(tr, lambda s: f"{tr.name(s.speaker)}: ")
    for i, (a, b, text, seg) in enumerate(cues, 1):
        body = "\n".join(textwrap.wrap(f"{tr.name(seg.speaker)}: {text}", MAX_LINE))
        blocks.append(f"{i}\n{timestamp(a, ',')} --> {timestamp(b, ',')}\n{body}\n")
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(tr: Transcript) -> str:
    blocks = ["WEBVTT\n"]
    for a, b, text, seg in _subtitle_cues(tr, lambda s: ""):
        name = " ".join(re.sub(r"[<>&]", " ", tr.name(seg.speaker)).split())
        body = "\n".join(textwrap.wrap(_vtt_escape(text), MAX_LINE))
        blocks.append(f"{timestamp(a, '.')} --> {timestamp(b, '.')}\n<v {name}>{body}\n")
    return "\n".join(blocks)


def to_json(tr: Transcript) -> str:
    doc = {
        "source": tr.source,
        "duration": round(tr.duration_s, 3),
        "language": tr.language,
        "model": tr.model,
        "diarized": tr.diarized,
        "speakers": [{"id": s, "name": tr.name(s),
                      **({"recognised": tr.recognised[s]} if s in tr.recognised else {})}
                     for s in tr.speakers],
        "segments": [
            {"id": i, "start": s.start, "end": s.end, "speaker": s.speaker,
             "text": s.text, "language": s.language, "avg_logprob": round(s.avg_logprob, 4),
             "no_speech_prob": round(s.no_speech_prob, 4),
             "words": [{"start": w.start, "end": w.end, "word": w.text,
                        "probability": round(w.probability, 4), "speaker": w.speaker}
                       for w in s.words]}
            for i, s in enumerate(tr.spoken)
        ],
        # speech that gave no words even when decoded again on its own
        "gaps": [{"start": g.start, "end": g.end, "speaker": g.speaker} for g in tr.gaps],
        "turns": [asdict(t) for t in tr.turns],
        "warnings": tr.warnings,
    }
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def to_rttm(tr: Transcript) -> str:
    """Speaker turns (from diarization; from the labelled segments without it)."""
    uri = re.sub(r"\s+", "_", Path(tr.source).stem) or "audio"
    turns = tr.turns or [SpeakerTurn(s.start, s.end, s.speaker or UNKNOWN_SPEAKER)
                         for s in tr.segments]
    lines = []
    for t in turns:
        start, end, spk = t.start, t.end, t.speaker
        name = re.sub(r"\s+", "_", tr.name(spk))
        lines.append(f"SPEAKER {uri} 1 {start:.3f} {end - start:.3f} <NA> <NA> {name} <NA> <NA>")
    return "\n".join(lines) + ("\n" if lines else "")


def from_json(text: str) -> Transcript:
    """Read back what to_json wrote (names, segments, words, turns)."""
    doc = json.loads(text)
    segments = [
        Segment(s["start"], s["end"], s["text"],
                tuple(Word(w["start"], w["end"], w["word"], w["probability"], w["speaker"])
                      for w in s["words"]),
                s["speaker"], s["avg_logprob"], s["no_speech_prob"], s.get("language", ""))
        for s in doc["segments"]
    ]
    gaps = [replace(gap_segment(g["start"], g["end"], doc.get("language", "")),
                    speaker=g.get("speaker"))
            for g in doc.get("gaps", [])]
    segments = sorted(segments + gaps, key=lambda s: s.start)
    return Transcript(
        source=doc["source"], duration_s=doc["duration"], language=doc["language"],
        model=doc["model"], segments=segments,
        turns=[SpeakerTurn(t["start"], t["end"], t["speaker"]) for t in doc["turns"]],
        diarized=doc["diarized"],
        names={s["id"]: s["name"] for s in doc["speakers"] if s["name"] != s["id"]},
        recognised={s["id"]: float(s["recognised"]) for s in doc["speakers"]
                    if "recognised" in s},
        warnings=list(doc.get("warnings", [])))


@dataclass(frozen=True)
class ExportFormat:
    """One export format: everything the command line and the console need to offer it."""

    name: str  # what --format takes
    suffix: str  # of the written file
    label: str  # the console's export menu
    render: Callable[[Transcript], str]


# The one list of formats: FORMATS, the CLI's choices and the console's menu derive from it.
EXPORT_FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("txt", ".txt", "TXT — speaker paragraphs", to_txt),
    ExportFormat("srt", ".srt", "SRT subtitles", to_srt),
    ExportFormat("vtt", ".vtt", "WebVTT subtitles", to_vtt),
    ExportFormat("json", ".json", "JSON — segments and words", to_json),
    ExportFormat("rttm", ".rttm", "RTTM — speaker turns", to_rttm),
)}
FORMATS: tuple[str, ...] = tuple(EXPORT_FORMATS)


def render(tr: Transcript, fmt: str) -> str:
    """The transcript as text in format `fmt` (one of FORMATS)."""
    return EXPORT_FORMATS[fmt].render(tr)
