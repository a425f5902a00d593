"""`transcrevai bench`: WER, DER, speed and memory on a corpus laid out like shared/corpus.

It drives the same engine as `transcribe` (one engine for all clips, so model loading is
measured once and kept out of the processing ratio).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from engine.config import PROJECT_ROOT, Config
from engine.messages import (
    FAULT_KINDS,
    ROLES,
    FaultFired,
    FaultSpec,
    SpeakerTurn,
    WorkerState,
    WorkerStatus,
)
from engine.session import FileTranscriber
from engine.supervisor import Engine

DEFAULT_CORPUS = PROJECT_ROOT.parent / "shared" / "corpus"


def normalize(text: str) -> list[str]:
    """Lowercase, punctuation and symbols to spaces; accents and digits kept."""
    chars = [" " if unicodedata.category(c)[0] in "PSZC" else c for c in text.lower()]
    return "".join(chars).split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def read_rttm(path: Path) -> list[SpeakerTurn]:
    turns = []
    for line in path.read_text().splitlines():
        f = line.split()
        if len(f) >= 8 and f[0] == "SPEAKER":
            start, dur = float(f[3]), float(f[4])
            turns.append(SpeakerTurn(start, start + dur, f[7]))
    return turns


def _annotation(turns: list[SpeakerTurn], uri: str) -> Any:
    from pyannote.core import Annotation
    from pyannote.core import Segment as PSegment

    ann = Annotation(uri=uri)
    for i, t in enumerate(turns):
        if t.end > t.start:
            ann[PSegment(t.start, t.end), i] = t.speaker
    return ann


def _uem(duration_s: float) -> Any:
    """Score the whole clip (pyannote would otherwise guess the extent and warn)."""
    from pyannote.core import Segment as PSegment
    from pyannote.core import Timeline

    return Timeline([PSegment(0.0, duration_s)])


@dataclass
class ClipRow:
    id: str
    language: str
    synthetic: bool
    duration_s: float
    wer: float | None
    ref_words: int
    errors: int
    der: float | None
    der_c0: float | None
    speakers_found: int | None
    speakers_ref: int
    processing_ratio: float
    transcription_ratio: float
    diarization_ratio: float | None
    peak_rss_mb: float
    error: str | None = None


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:5.1f}"


def load_corpus(args: argparse.Namespace) -> tuple[Path, list[dict[str, Any]]] | None:
    """The corpus folder and its clips (filtered by --clips); None after a one-line error."""
    corpus: Path = args.corpus or DEFAULT_CORPUS
    manifest_path = corpus / "manifest.json"
    if not manifest_path.is_file():
        print(f"transcrevai: {manifest_path}: no corpus manifest here (use --corpus DIR)",
              file=sys.stderr)
        return None
    clips = json.loads(manifest_path.read_text())["clips"]
    if args.clips:
        clips = [c for c in clips if args.clips in c["id"]]
    return corpus, clips


def run_bench(cfg: Config, args: argparse.Namespace) -> int:
    loaded = load_corpus(args)
    if loaded is None:
        return 2
    corpus, clips = loaded
    from pyannote.metrics.diarization import DiarizationErrorRate

    metric = DiarizationErrorRate(collar=0.5, skip_overlap=False)  # collar = total width
    metric_c0 = DiarizationErrorRate(collar=0.0, skip_overlap=False)
    if args.faults:
        return run_fault_bench(cfg, corpus, clips, args.json)
    rows: list[ClipRow] = []
    diarize = cfg.diarization.enabled
    t_start = time.perf_counter()
    me = psutil.Process()
    with Engine(cfg, diarization=diarize) as engine:
        runner = FileTranscriber(engine)
        runner.wait_ready()
        load_s = time.perf_counter() - t_start
        cpu0, wall0 = sum(me.cpu_times()[:2]), time.perf_counter()
        for clip in clips:
            runner.peak_rss_bytes = 0
            # manifest languages look like "pt-BR" or "pt (variety not stated)"
            lang = re.sub(r"[^a-z].*", "", clip["language"].lower()) or None
            res = runner.transcribe(str(corpus / clip["file"]), language=lang)
            tr = res.transcript
            ref = normalize(clip["transcript"])
            hyp = normalize(" ".join(s.text for s in tr.segments))
            errors = edit_distance(ref, hyp)
            der = der_c0 = None
            found = None
            if diarize and tr.diarized:
                found = len({t.speaker for t in tr.turns})
                if clip.get("rttm"):
                    ref_ann = _annotation(read_rttm(corpus / clip["rttm"]), clip["id"])
                    hyp_ann = _annotation(tr.turns, clip["id"])
                    uem = _uem(clip["duration_s"])
                    der = metric(ref_ann, hyp_ann, uem=uem)
                    der_c0 = metric_c0(ref_ann, hyp_ann, uem=uem)
            audio = res.audio_s or clip["duration_s"]
            d_work = res.work_s.get("diarization")
            rows.append(ClipRow(
                clip["id"], clip["language"], bool(clip.get("synthetic")), audio,
                errors / max(1, len(ref)), len(ref), errors, der, der_c0, found,
                int(clip.get("n_speakers") or 0), res.wall_s / audio,
                res.work_s.get("transcription", 0.0) / audio,
                None if d_work is None else d_work / audio,
                runner.peak_rss_bytes / 2**20, res.error))
        supervisor_cpu = (sum(me.cpu_times()[:2]) - cpu0) / max(1e-9, time.perf_counter() - wall0)
        workers = {w.role: w for w in engine.metrics().workers}
    report = _pooled(rows, metric, metric_c0, load_s, runner.load_s)
    report["supervisor_cpu_percent"] = round(100 * supervisor_cpu, 2)
    report["workers"] = {
        role: {"processing_ratio": None if w.processing_ratio is None
               else round(w.processing_ratio, 4), "restarts": w.restarts,
               "crashes": w.crashes, "memory_violations": w.memory_violations,
               "hangs": w.hangs, "model": w.model,
               "peak_rss_mb": round(w.peak_rss_bytes / 2**20)}
        for role, w in workers.items()}
    if args.json:
        print(json.dumps({"clips": [r.__dict__ for r in rows], "pooled": report}, indent=2,
                         ensure_ascii=False))
    else:
        _print_table(rows, report)
    return 0


def _pooled(rows: list[ClipRow], metric: Any, metric_c0: Any, load_s: float,
            worker_load_s: dict[str, float]) -> dict[str, Any]:
    def wer_of(sel: list[ClipRow]) -> float | None:
        words = sum(r.ref_words for r in sel)
        return sum(r.errors for r in sel) / words if words else None

    pt_real = [r for r in rows if r.language.lower().startswith("pt") and not r.synthetic]
    audio = sum(r.duration_s for r in rows)
    has_der = any(r.der is not None for r in rows)
    return {
        "wer": wer_of(pt_real),
        "wer_pt_real_clips": len(pt_real),
        "wer_synthetic": wer_of([r for r in rows if r.synthetic]),
        "wer_en": wer_of([r for r in rows if r.language.lower().startswith("en")]),
        "der": abs(metric) if has_der else None,
        "der_c0": abs(metric_c0) if has_der else None,
        "processing_ratio": sum(r.processing_ratio * r.duration_s for r in rows) / audio
        if audio else None,
        "peak_rss_mb": max((r.peak_rss_mb for r in rows), default=0.0),
        "model_load_s": round(load_s, 2),
        "worker_load_s": {k: round(v, 2) for k, v in worker_load_s.items()},
        "audio_s": round(audio, 2),
        "errors": sum(1 for r in rows if r.error),
    }


def _print_table(rows: list[ClipRow], p: dict[str, Any]) -> None:
    head = (f"{'clip':28} {'lang':5} {'dur s':>6} {'WER%':>6} {'DER%':>6} {'DERc0%':>6} "
            f"{'spk':>5} {'ratio':>6} {'asr':>6} {'diar':>6} {'RSS MB':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        spk = "-" if r.speakers_found is None else f"{r.speakers_found}/{r.speakers_ref}"
        diar = "-" if r.diarization_ratio is None else f"{r.diarization_ratio:6.3f}"
        name = r.id + (" *" if r.synthetic else "")
        print(f"{name:28} {r.language:5} {r.duration_s:6.1f} {_pct(r.wer):>6} {_pct(r.der):>6} "
              f"{_pct(r.der_c0):>6} {spk:>5} {r.processing_ratio:6.3f} "
              f"{r.transcription_ratio:6.3f} {diar:>6} {r.peak_rss_mb:7.0f}"
              + (f"  ERROR {r.error}" if r.error else ""))
    print("-" * len(head))
    print(f"pooled: WER pt real ({p['wer_pt_real_clips']} clips) {_pct(p['wer'])}%  "
          f"WER synthetic {_pct(p['wer_synthetic'])}%  WER en {_pct(p['wer_en'])}%")
    print(f"pooled: DER (±0.25 s collar) {_pct(p['der'])}%  DER (no collar) {_pct(p['der_c0'])}%")
    print(f"pooled: processing ratio {p['processing_ratio']:.3f}  peak RSS "
          f"{p['peak_rss_mb']:.0f} MB  cold start to all workers ready "
          f"{p['model_load_s']:.2f} s {p['worker_load_s']}  audio {p['audio_s']:.0f} s")
    print(f"supervisor CPU {p['supervisor_cpu_percent']:.2f}%  workers: " + "; ".join(
        f"{role} ratio(last 10) {w['processing_ratio']} peak {w['peak_rss_mb']} MB "
        f"restarts {w['restarts']} crashes "
        f"{w['crashes']} memory {w['memory_violations']} hangs {w['hangs']}"
        for role, w in p["workers"].items()))
    print("* synthetic clip (reported separately)")




def run_fault_bench(cfg: Config, corpus: Path, clips: list[dict[str, Any]],
                    as_json: bool) -> int:
    """Every worker x every fault kind on one clip: detection latency, restarts, same text."""
    clip = max(clips, key=lambda c: (c.get("n_speakers") or 0, c["duration_s"]))
    path = str(corpus / clip["file"])
    lang = re.sub(r"[^a-z].*", "", clip["language"].lower()) or None

    def run(faults: list[FaultSpec]) -> tuple[list[tuple[Any, ...]], FileTranscriber, Engine,
                                              float, float]:
        t0 = time.perf_counter()
        with Engine(cfg, diarization=cfg.diarization.enabled, faults=faults) as engine:
            runner = FileTranscriber(engine)
            ready_s = runner.wait_ready()
            res = runner.transcribe(path, language=lang)
            if faults:  # a fault may fire after the work is done: watch until it is seen
                limit = time.monotonic() + cfg.engine.heartbeat_timeout + \
                    cfg.limits.over_limit_s + 5
                while not engine.detections and time.monotonic() < limit:
                    runner.pump(0.1)
        lines = [(s.start, s.end, s.speaker, s.text) for s in res.transcript.segments]
        return lines, runner, engine, ready_s, time.perf_counter() - t0

    clean, _, _, cold_s, clean_wall = run([])
    after = {"capture": 0.5, "transcription": 1.5, "diarization": 1.0}
    rows = []
    for role in ROLES:
        for kind in FAULT_KINDS:
            lines, runner, engine, _, wall = run([FaultSpec(role, kind, after[role])])
            fired = [e.time for e in runner.incidents
                     if isinstance(e, FaultFired)]
            seen = [t for r, t in engine.detections if r == role]
            latency = (seen[0] - fired[0]) if fired and seen else None
            delays = [e.retry_in for e in runner.incidents if isinstance(e, WorkerStatus)
                      and e.state == WorkerState.RESTARTING and e.role == role]
            rows.append({"role": role, "kind": kind, "detected": bool(seen),
                         "detection_s": None if latency is None else round(latency, 3),
                         "restarts": engine.slots[role].restarts, "backoff_s": delays,
                         "same_transcript": lines == clean, "wall_s": round(wall, 2)})
    if as_json:
        print(json.dumps({"clip": clip["id"], "cold_start_s": round(cold_s, 2),
                          "undisturbed_wall_s": round(clean_wall, 2), "faults": rows},
                         indent=2))
        return 0
    print(f"clip {clip['id']}: undisturbed run {clean_wall:.1f} s, cold start {cold_s:.2f} s; "
          f"heartbeat timeout {cfg.engine.heartbeat_timeout:g} s")
    print(f"{'worker':14} {'fault':6} {'detected':>8} {'latency s':>9} {'restarts':>8} "
          f"{'backoff':>8} {'same text':>9} {'wall s':>7}")
    for r in rows:
        lat = "-" if r["detection_s"] is None else f"{r['detection_s']:.2f}"
        print(f"{r['role']:14} {r['kind']:6} {str(r['detected']):>8} {lat:>9} "
              f"{r['restarts']:>8} {str(r['backoff_s']):>8} {str(r['same_transcript']):>9} "
              f"{r['wall_s']:7.1f}")
    return 0 if all(r["same_transcript"] and r["detected"] for r in rows) else 1
