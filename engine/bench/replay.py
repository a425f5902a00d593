"""`transcrevai bench`: WER, DER, speed and memory on a corpus laid out like shared/corpus.

It drives the same engine as `transcribe` (one engine for all clips, so model loading is
measured once and kept out of the processing ratio).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from engine.bench.corpus import (
    clip_language,
    guard_losses,
    is_en,
    is_pt,
    load_corpus,
    pct,
    sum_counts,
)
from engine.config import Config
from engine.messages import SAMPLE_RATE
from engine.runner import Runner
from engine.scoring import (
    annotation,
    der_metric,
    edit_distance,
    error_counts,
    normalize,
    read_rttm,
    uem,
    wder,
)
from engine.supervisor import Supervisor
from engine.transcript import Transcript, uncovered


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
    subs: int = 0  # the WER's errors as substitutions, deletions, insertions
    dels: int = 0
    ins: int = 0
    gaps: int = 0  # stretches marked "[inaudible]" by the engine, and their seconds
    gap_s: float = 0.0
    # reference speech (segments/ or RTTM) in stretches of >= 0.5 s no word of the engine
    # touches, minus what the engine itself marked as gaps (None: no reference times)
    speech_without_words_s: float | None = None
    wder: float | None = None  # words given the wrong speaker (clips with segments/)
    # of speech_without_words_s, time neither the VAD nor the segmentation model hears as
    # speech (the engine's coverage check cannot see it: reference time with no voice found)
    unheard_s: float | None = None
    baseline_wer: float | None = None  # plain faster-whisper on the same clip (--baseline)
    baseline_errors: int | None = None
    baseline_sdi: tuple[int, int, int] | None = None
    baseline_ratio: float | None = None
    # words each hallucination/repetition guard removed, and how many of them were words
    # of the reference the transcript then lacked (a guard that eats speech shows here)
    guard_words: dict[str, int] | None = None
    guard_ref_words: dict[str, int] | None = None
    wer_without_vocabulary: float | None = None  # --vocabulary: the same clip without it


def run_bench(cfg: Config, args: argparse.Namespace) -> int:
    loaded = load_corpus(args)
    if loaded is None:
        return 2
    corpus, clips = loaded
    if args.faults:
        from engine.bench.faults import run_fault_bench

        return run_fault_bench(cfg, corpus, clips, args.json)
    # pooled DER over the real clips (what the report's label says); synthetic apart
    pooled = {"real": (der_metric(0.25), der_metric(0.0)),
              "synthetic": (der_metric(0.25), der_metric(0.0))}
    rows: list[ClipRow] = []
    diarize = cfg.diarization.enabled
    t_start = time.perf_counter()
    me = psutil.Process()
    listen: list[tuple[ClipRow, Path, list[tuple[float, float]], Transcript]] = []
    with Supervisor(cfg, diarization=diarize) as engine:
        runner = Runner(engine)
        runner.wait_ready()
        load_s = time.perf_counter() - t_start
        cpu0, wall0 = sum(me.cpu_times()[:2]), time.perf_counter()
        for clip in clips:
            runner.peak_rss_bytes = 0
            res = runner.transcribe(str(corpus / clip["file"]), language=clip_language(clip))
            tr = res.transcript
            ref = normalize(clip["transcript"])
            hyp = normalize(" ".join(s.text for s in tr.spoken))  # gaps are not words
            errors = edit_distance(ref, hyp)
            subs, dels, ins = error_counts(ref, hyp)
            # the clip's references, read once: per-sentence segments, speaker turns
            sentences = (json.loads((corpus / clip["segments_file"]).read_text())
                         if clip.get("segments_file") else [])
            ref_turns = read_rttm(corpus / clip["rttm"]) if clip.get("rttm") else []
            der = der_c0 = None
            found = None
            diar_failed = False
            if diarize:
                found = len({t.speaker for t in tr.turns}) if tr.diarized else None
                if clip.get("rttm"):
                    # a clip whose diarization failed is scored with no speech found (all
                    # of its reference time missed), never left out of the pool
                    diar_failed = not tr.diarized
                    ref_ann = annotation(ref_turns, clip["id"])
                    hyp_ann = annotation(tr.turns if tr.diarized else [], clip["id"])
                    whole = uem(clip["duration_s"])
                    m, m0 = pooled["synthetic" if clip.get("synthetic") else "real"]
                    der = m(ref_ann, hyp_ann, uem=whole)
                    der_c0 = m0(ref_ann, hyp_ann, uem=whole)
            audio = res.audio_s or clip["duration_s"]
            d_work = res.work_s.get("diarization")
            error = res.error or ("diarization failed" if diar_failed else None)
            rows.append(ClipRow(
                clip["id"], clip["language"], bool(clip.get("synthetic")), audio,
                errors / max(1, len(ref)), len(ref), errors, der, der_c0, found,
                int(clip.get("n_speakers") or 0), res.wall_s / audio,
                res.work_s.get("transcription", 0.0) / audio,
                None if d_work is None else d_work / audio,
                runner.peak_rss_bytes / 2**20, error, subs, dels, ins, len(tr.gaps),
                round(sum(g.end - g.start for g in tr.gaps), 2),
                _speech_without_words(
                    [(float(x["start"]), float(x["end"])) for x in sentences]
                    or [(t.start, t.end) for t in ref_turns], tr),
                _wder(sentences, tr)))
            listen.append((rows[-1], corpus / clip["file"],
                           [(float(x["start"]), float(x["end"])) for x in sentences]
                           or [(t.start, t.end) for t in ref_turns], tr))
            rows[-1].guard_words, rows[-1].guard_ref_words = guard_losses(res.dropped, ref, hyp)
        supervisor_cpu = (sum(me.cpu_times()[:2]) - cpu0) / max(1e-9, time.perf_counter() - wall0)
        workers = {w.role: w for w in engine.metrics().workers}
    hearing = _Hearing(cfg)  # after the run: its models would share the engine's CPUs
    for row, path, stretches, tr in listen:
        row.unheard_s = hearing.unheard(path, stretches, tr)
    if getattr(args, "baseline", False):
        _run_baseline(cfg, corpus, clips, rows)
    vocab = None
    if getattr(args, "vocabulary", None) is not None and cfg.transcription.vocabulary:
        vocab = _vocabulary_effect(cfg, corpus, clips, rows)
    report = _pooled(rows, pooled, load_s, runner.load_s)
    if vocab is not None:
        report["vocabulary"] = vocab
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
    return 1 if report["errors"] else 0


def _holes(stretches: list[tuple[float, float]], tr: Transcript) -> list[tuple[float, float]]:
    spans = sorted((w.start, w.end) for s in tr.spoken for w in (s.words or (s,)))
    spans += [(g.start, g.end) for g in tr.gaps]
    return uncovered(sorted(stretches), sorted(spans), 0.3, 0.5)


def _speech_without_words(stretches: list[tuple[float, float]], tr: Transcript) -> float | None:
    """Reference speech no hypothesis word touches (the engine's own coverage rule, applied
    to the reference's times), not counting what the engine marked as a gap."""
    if not stretches:
        return None
    return round(sum(b - a for a, b in _holes(stretches, tr)), 2)


class _Hearing:
    """Whether a stretch the reference calls speech holds a voice either of the engine's
    detectors hears (Silero VAD at the config's threshold, the segmentation model): what
    is left of `speech_without_words_s` outside both is time no check could find."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._seg: Any = None

    def unheard(self, path: Path, stretches: list[tuple[float, float]],
                tr: Transcript) -> float | None:
        holes = _holes(stretches, tr) if stretches else []
        if not stretches:
            return None
        if not holes:
            return 0.0
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        from engine.audio.source import read_audio
        from engine.diarization.pipeline import VoiceChanges
        from engine.models.registry import diarization_paths
        from engine.workers.transcription import UNIT_PAUSE_MS

        if self._seg is None:
            self._seg = VoiceChanges(diarization_paths(self.cfg.paths.models_dir)[0])
        audio = read_audio(path)
        v = self.cfg.vad  # as the coverage check runs it: unpadded, split at short pauses
        opts = VadOptions(threshold=v.threshold, min_silence_duration_ms=UNIT_PAUSE_MS,
                          speech_pad_ms=0, min_speech_duration_ms=v.min_speech_ms)
        vad = [(d["start"] / SAMPLE_RATE, d["end"] / SAMPLE_RATE)
               for d in get_speech_timestamps(audio, opts)]
        seg = [(a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in self._seg.activity(audio, 0.0)]
        heard = sorted(vad + seg)
        return round(sum(b - a for a, b in uncovered(holes, heard, 0.0, 0.0)), 2)


def _wder(sentences: list[dict[str, Any]], tr: Transcript) -> float | None:
    """WDER against per-sentence references (None without them, or without speakers)."""
    if not sentences or not tr.diarized:
        return None
    ref = [(w, str(s["speaker"])) for s in sentences for w in normalize(s["text"])]
    hyp = [(t, w.speaker or seg.speaker or "") for seg in tr.spoken for w in seg.words
           for t in normalize(w.text)]
    return wder(ref, hyp)


def _vocabulary_effect(cfg: Config, corpus: Path, clips: list[dict[str, Any]],
                       rows: list[ClipRow]) -> dict[str, Any]:
    """The same clips again without the terms (same engine otherwise, no diarization: WER
    only), and words inserted into non-speech (room noise, mains hum) with and without them:
    a vocabulary must fix words, not leak into silence."""
    import tempfile

    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(11)
    t = np.arange(20 * SAMPLE_RATE) / SAMPLE_RATE
    noises = {"room noise": 0.003 * rng.standard_normal(t.size),
              "hum": 0.05 * np.sin(2 * np.pi * 60 * t) + 0.001 * rng.standard_normal(t.size)}
    out: dict[str, Any] = {"terms": list(cfg.transcription.vocabulary)}
    with tempfile.TemporaryDirectory(prefix="transcrevai-vocab-") as tmp:
        paths = []
        for name, audio in noises.items():
            path = Path(tmp) / f"{name.replace(' ', '_')}.wav"
            sf.write(str(path), audio.astype(np.float32), SAMPLE_RATE)
            paths.append(path)
        for label, c in (("with", cfg), ("without", cfg.replace("transcription", vocabulary=()))):
            c = c.replace("diarization", enabled=False)
            with Supervisor(c, diarization=False) as engine:
                runner = Runner(engine)
                runner.wait_ready()
                inserted = 0
                for path in paths:
                    tr = runner.transcribe(str(path)).transcript
                    inserted += len(normalize(" ".join(s.text for s in tr.spoken)))
                out[f"nonspeech_words_{label}"] = inserted
                if label == "with":
                    continue
                for clip, row in zip(clips, rows, strict=True):
                    tr = runner.transcribe(str(corpus / clip["file"]),
                                           language=clip_language(clip)).transcript
                    ref = normalize(clip["transcript"])
                    row.wer_without_vocabulary = edit_distance(
                        ref, normalize(" ".join(s.text for s in tr.spoken))) / max(1, len(ref))
    pt_real = [r for r in rows if is_pt(r.language) and not r.synthetic]
    words = sum(r.ref_words for r in pt_real)
    out["wer_pt_without"] = (sum((r.wer_without_vocabulary or 0.0) * r.ref_words
                                 for r in pt_real) / words) if words else None
    return out


def _run_baseline(cfg: Config, corpus: Path, clips: list[dict[str, Any]],
                  rows: list[ClipRow]) -> None:
    """Plain faster-whisper beside the engine, in the same run: the same weights, compute
    type and threads, beam 5, the clip's language, faster-whisper's VAD filter, and its
    defaults for everything else (nothing of the project's decoding)."""
    from faster_whisper import WhisperModel

    from engine.models import levels
    from engine.models.registry import resolve_whisper

    tc = cfg.transcription
    source = resolve_whisper(tc.model, cfg.paths.models_dir, tc.allow_download)
    folder = Path(source.model)
    level = levels.choose(cfg, "whisper", folder, levels.whisper_digest(cfg, folder)).level
    model = WhisperModel(str(folder), device="cpu", compute_type=level,
                         cpu_threads=tc.cpu_threads, local_files_only=True)
    for clip, row in zip(clips, rows, strict=True):
        t0 = time.perf_counter()
        segs, _ = model.transcribe(str(corpus / clip["file"]), language=clip_language(clip),
                                   beam_size=5, vad_filter=True)
        hyp = normalize(" ".join(s.text for s in segs))
        ref = normalize(clip["transcript"])
        row.baseline_errors = edit_distance(ref, hyp)
        row.baseline_sdi = error_counts(ref, hyp)
        row.baseline_wer = row.baseline_errors / max(1, len(ref))
        row.baseline_ratio = (time.perf_counter() - t0) / row.duration_s


def _pooled(rows: list[ClipRow], pooled: dict[str, tuple[Any, Any]], load_s: float,
            worker_load_s: dict[str, float]) -> dict[str, Any]:
    def wer_of(sel: list[ClipRow]) -> float | None:
        words = sum(r.ref_words for r in sel)
        return sum(r.errors for r in sel) / words if words else None

    def der_of(group: str, synthetic: bool) -> tuple[float | None, float | None]:
        if not any(r.der is not None and r.synthetic == synthetic for r in rows):
            return None, None
        m, m0 = pooled[group]
        return abs(m), abs(m0)

    pt_real = [r for r in rows if is_pt(r.language) and not r.synthetic]
    real = [r for r in rows if not r.synthetic]
    audio = sum(r.duration_s for r in rows)
    based = [r for r in pt_real if r.baseline_errors is not None]
    wders = [r.wder for r in real if r.wder is not None]
    der, der_c0 = der_of("real", False)
    der_syn, der_syn_c0 = der_of("synthetic", True)
    return {
        "wer": wer_of(pt_real),
        "wer_pt_real_clips": len(pt_real),
        "wer_synthetic": wer_of([r for r in rows if r.synthetic]),
        "wer_en": wer_of([r for r in rows if is_en(r.language) and not r.synthetic]),
        "wer_pt_sdi": [sum(r.subs for r in pt_real), sum(r.dels for r in pt_real),
                       sum(r.ins for r in pt_real)],
        # plain faster-whisper on the same real PT clips in the same run (--baseline)
        "baseline_wer": (sum(r.baseline_errors or 0 for r in based)
                         / max(1, sum(r.ref_words for r in based))) if based else None,
        "baseline_processing_ratio": (
            sum((r.baseline_ratio or 0.0) * r.duration_s for r in based)
            / sum(r.duration_s for r in based)) if based else None,
        "gaps": sum(r.gaps for r in real),
        "gap_s": round(sum(r.gap_s for r in real), 2),
        "speech_without_words_s": round(sum(r.speech_without_words_s or 0.0 for r in real), 2),
        "unheard_s": round(sum(r.unheard_s or 0.0 for r in real), 2),
        "wder": sum(wders) / len(wders) if wders else None,  # mean over real clips with it
        "guard_words": sum_counts(r.guard_words for r in real),
        "guard_reference_words": sum_counts(r.guard_ref_words for r in real),
        "der": der,  # real clips with reference turns (PT and EN), ±0.25 s collar
        "der_c0": der_c0,
        "der_real_clips": sum(1 for r in rows if r.der is not None and not r.synthetic),
        "der_synthetic": der_syn,
        "der_synthetic_c0": der_syn_c0,
        "diarization_failures": sum(1 for r in rows if r.error == "diarization failed"),
        "processing_ratio": sum(r.processing_ratio * r.duration_s for r in rows) / audio
        if audio else None,
        "peak_rss_mb": max((r.peak_rss_mb for r in rows), default=0.0),
        "model_load_s": round(load_s, 2),
        "worker_load_s": {k: round(v, 2) for k, v in worker_load_s.items()},
        "audio_s": round(audio, 2),
        "errors": sum(1 for r in rows if r.error),
    }


def _print_table(rows: list[ClipRow], p: dict[str, Any]) -> None:
    base = any(r.baseline_wer is not None for r in rows)
    head = (f"{'clip':28} {'lang':5} {'dur s':>6} {'WER%':>6} {'S/D/I':>8} "
            + (f"{'base%':>6} " if base else "")
            + f"{'DER%':>6} {'DERc0%':>6} {'WDER%':>6} {'nowd s':>6} {'gaps':>4} "
            f"{'spk':>5} {'ratio':>6} {'asr':>6} {'diar':>6} {'RSS MB':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        spk = "-" if r.speakers_found is None else f"{r.speakers_found}/{r.speakers_ref}"
        diar = "-" if r.diarization_ratio is None else f"{r.diarization_ratio:6.3f}"
        name = r.id + (" *" if r.synthetic else "")
        sdi = f"{r.subs}/{r.dels}/{r.ins}"
        nowd = "-" if r.speech_without_words_s is None else f"{r.speech_without_words_s:6.1f}"
        print(f"{name:28} {r.language[:5]:5} {r.duration_s:6.1f} {pct(r.wer):>6} {sdi:>8} "
              + (f"{pct(r.baseline_wer):>6} " if base else "")
              + f"{pct(r.der):>6} {pct(r.der_c0):>6} {pct(r.wder):>6} {nowd:>6} {r.gaps:>4} "
              f"{spk:>5} {r.processing_ratio:6.3f} "
              f"{r.transcription_ratio:6.3f} {diar:>6} {r.peak_rss_mb:7.0f}"
              + (f"  ERROR {r.error}" if r.error else ""))
    print("-" * len(head))
    sub, dl, ins = p["wer_pt_sdi"]
    print(f"pooled: WER pt real ({p['wer_pt_real_clips']} clips) {pct(p['wer'])}% "
          f"(S/D/I {sub}/{dl}/{ins})"
          + (f"  plain faster-whisper {pct(p['baseline_wer'])}% (ratio "
             f"{p['baseline_processing_ratio']:.3f})" if p["baseline_wer"] is not None else "")
          + f"  WER synthetic {pct(p['wer_synthetic'])}%  WER en {pct(p['wer_en'])}%")
    print(f"pooled (real clips): speech without words {p['speech_without_words_s']:.1f} s "
          f"(heard as speech by neither the VAD nor the segmentation model: "
          f"{p['unheard_s']:.1f} s)  gaps marked {p['gaps']} ({p['gap_s']:.1f} s)  "
          f"WDER {pct(p['wder'])}%")
    guards = ", ".join(f"{g} {n} ({p['guard_reference_words'].get(g, 0)} of the reference)"
                       for g, n in sorted(p["guard_words"].items())) or "none"
    print(f"pooled (real clips): words removed by the guards: {guards}")
    if "vocabulary" in p:
        v = p["vocabulary"]
        print(f"vocabulary ({len(v['terms'])} terms): WER pt real {pct(p['wer'])}% with, "
              f"{pct(v['wer_pt_without'])}% without; words in 40 s of non-speech "
              f"{v['nonspeech_words_with']} with, {v['nonspeech_words_without']} without")
    print(f"pooled: DER real clips ({p['der_real_clips']}, ±0.25 s collar) {pct(p['der'])}%  "
          f"(no collar) {pct(p['der_c0'])}%  synthetic {pct(p['der_synthetic'])}% / "
          f"{pct(p['der_synthetic_c0'])}%  diarization failures {p['diarization_failures']}")
    print(f"pooled: processing ratio {p['processing_ratio']:.3f}  peak RSS "
          f"{p['peak_rss_mb']:.0f} MB  cold start to all workers ready "
          f"{p['model_load_s']:.2f} s {p['worker_load_s']}  audio {p['audio_s']:.0f} s")
    print(f"supervisor CPU {p['supervisor_cpu_percent']:.2f}%  workers: " + "; ".join(
        f"{role} ratio(last 10) {w['processing_ratio']} peak {w['peak_rss_mb']} MB "
        f"restarts {w['restarts']} crashes "
        f"{w['crashes']} memory {w['memory_violations']} hangs {w['hangs']}"
        for role, w in p["workers"].items()))
    print("* synthetic clip: only in the synthetic figures.  S/D/I: substitutions, deletions, "
          "insertions;  nowd s: reference speech no word touches (not marked as a gap);  "
          "WDER: words given the wrong speaker")
