"""`transcrevai bench --live`: every clip through the live path at real-time pace.

Without a sound card, capture reads each file at real-time pace with the live block size and
consumers run their streaming policies, exactly as for a microphone (the virtual-mic test
covers the PulseAudio hop itself). Reported per clip, then pooled over the real clips (the
synthetic ones are pooled apart, in figures named as such):

- WER of committed text (what a user is left with; partials are not scored),
- DER (±0.25 s collar) of the live speaker turns, and of the offline pass at the end; a clip
  whose diarization gave no turns is scored as finding no speech and counted as a failure,
- end-of-phrase -> committed-text latency: wall time a phrase committed minus the wall time
  its last word was played (the stream's start + its last segment's end); also per segment,
  where a phrase's earlier segments count from their own end (shown as partial text until
  the phrase commits),
- speaker-label delay: commit -> the online diarizer has settled that audio,
- partial refresh interval during speech (median gap between partial updates),
- peak RSS of all processes, CPU % of all processes, capture overflows.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from engine.bench import corpus as cb
from engine.config import Config
from engine.live import LiveStream
from engine.runner import Runner
from engine.scoring import annotation, der_metric, edit_distance, normalize, read_rttm, uem
from engine.supervisor import Supervisor

GROUPS = ("real", "synthetic")


@dataclass
class LiveRow:
    id: str
    language: str
    synthetic: bool
    duration_s: float
    wer: float | None
    ref_words: int
    errors: int
    der_live: float | None
    der_refined: float | None
    speakers_live: int | None
    speakers_ref: int
    latency_p50_s: float | None
    latency_p95_s: float | None
    label_delay_p50_s: float | None
    partial_interval_s: float | None
    latencies: list[float]
    segment_latencies: list[float]
    label_delays: list[float]
    partial_gaps: list[float]
    peak_rss_mb: float
    overflows: int
    cpu_s: float  # CPU seconds of all processes while this clip played
    wall_s: float
    diarization_failed: bool = False  # live turns wanted (reference turns, diarizer on): none
    offline_pass_failed: bool = False  # no offline pass at the end: DER after it scored empty
    error: str | None = None
    # words each guard removed, and those of them the reference has and the text lacks
    guard_words: dict[str, int] | None = None
    guard_ref_words: dict[str, int] | None = None


def _q(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(round(q * (len(s) - 1))))], 3)


def _partial_gaps(times: list[float], limit: float = 4.0) -> list[float]:
    """Gaps between successive partials of one phrase (longer gaps are between phrases)."""
    return [b - a for a, b in zip(times, times[1:], strict=False) if b - a <= limit]


def _cpu_seconds(engine: Supervisor) -> float:
    total = 0.0
    for pid in [None, *(p.pid for p in engine.procs.values() if p.pid and p.is_alive())]:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def run_live_bench(cfg: Config, args: argparse.Namespace) -> int:
    """Play each clip live and print per-clip and pooled figures; 1 when a clip errored (its
    stream failed or its diarization gave nothing), so scripts see a broken run."""
    loaded = cb.load_corpus(args)
    if loaded is None:
        return 2
    corpus, clips = loaded
    # one pooling metric per group, live and after the offline pass: a pooled DER is over
    # exactly the clips its label names
    metrics = {g: (der_metric(0.25), der_metric(0.25)) for g in GROUPS}
    rows: list[LiveRow] = []
    diarize = cfg.diarization.enabled
    with Supervisor(cfg, diarization=diarize) as engine:
        runner = Runner(engine)
        runner.wait_ready()
        for clip in clips:
            runner.peak_rss_bytes = 0
            c0, w0 = _cpu_seconds(engine), time.perf_counter()
            live = runner.run_live(str(corpus / clip["file"]), language=cb.clip_language(clip))
            cpu_s, wall_s = _cpu_seconds(engine) - c0, time.perf_counter() - w0
            rows.append(_score(clip, corpus, live, diarize, metrics, runner.peak_rss_bytes,
                               cpu_s, wall_s))
        workers = {w.role: round(w.peak_rss_bytes / 2**20) for w in engine.metrics().workers}
    report = _pooled(rows, metrics)
    report["worker_peak_rss_mb"] = workers
    if args.json:
        print(json.dumps({"clips": [{k: v for k, v in r.__dict__.items()
                                     if k not in ("latencies", "segment_latencies", "label_delays",
                                                  "partial_gaps")}
                                    for r in rows], "pooled": report}, indent=2,
                         ensure_ascii=False))
    else:
        _print(rows, report)
    return 1 if report["errors"] else 0


def _score(clip: dict[str, Any], corpus: Path, live: LiveStream, diarize: bool,
           metrics: dict[str, tuple[Any, Any]], peak_rss: int, cpu_s: float,
           wall_s: float) -> LiveRow:
    """One clip's row; its DER goes into its group's pooled metrics."""
    tr = live.transcript(live_labels=True)
    ref = normalize(clip["transcript"])
    hyp = normalize(" ".join(s.text for s in tr.spoken))
    errors = edit_distance(ref, hyp)
    der_l = der_r = None
    diar_failed = refine_failed = False
    found = len({t.speaker for t in live.turns}) if live.turns else None
    if clip.get("rttm") and diarize:
        # no live turns (the diarizer failed or found nothing) is scored as no speech found,
        # never left out of the pool; likewise a missing offline pass for its DER
        diar_failed = not live.turns
        refine_failed = live.refined is None
        ref_ann = annotation(read_rttm(corpus / clip["rttm"]), clip["id"])
        whole = uem(clip["duration_s"])
        m_live, m_refined = metrics["synthetic" if clip.get("synthetic") else "real"]
        der_l = m_live(ref_ann, annotation(live.turns, clip["id"]), uem=whole)
        der_r = m_refined(ref_ann, annotation(live.refined or [], clip["id"]), uem=whole)
    st = live.stats
    gaps = _partial_gaps(st.partial_times)
    return LiveRow(
        clip["id"], clip["language"], bool(clip.get("synthetic")), clip["duration_s"],
        errors / max(1, len(ref)), len(ref), errors, der_l, der_r, found,
        int(clip.get("n_speakers") or 0), _q(st.commit_latency_s, 0.5),
        _q(st.commit_latency_s, 0.95), _q(st.label_delay_s, 0.5),
        _q(gaps, 0.5), st.commit_latency_s, st.segment_latency_s, st.label_delay_s, gaps,
        peak_rss / 2**20, st.overflows, round(cpu_s, 2), round(wall_s, 2), diar_failed,
        refine_failed, live.error or ("diarization failed" if diar_failed else None),
        *cb.guard_losses(live.dropped, ref, hyp))


def _group(rows: list[LiveRow], metrics: tuple[Any, Any]) -> dict[str, Any]:
    """DER, peak RSS, CPU, overflows and audio pooled over `rows` (one group of clips)."""
    scored = [r for r in rows if r.der_live is not None]
    cpu_s, wall_s = sum(r.cpu_s for r in rows), sum(r.wall_s for r in rows)
    return {
        "clips": len(rows),
        "der_live": abs(metrics[0]) if scored else None,
        "der_refined": abs(metrics[1]) if scored else None,
        "der_clips": len(scored),
        "diarization_failures": sum(1 for r in rows if r.diarization_failed),
        "offline_pass_failures": sum(1 for r in rows if r.offline_pass_failed),
        "peak_rss_mb": round(max((r.peak_rss_mb for r in rows), default=0.0)) if rows
        else None,
        "cpu_percent": round(100 * cpu_s / wall_s, 1) if wall_s else None,
        "overflows": sum(r.overflows for r in rows),
        "audio_s": round(sum(r.duration_s for r in rows), 1),
    }


def _wer(rows: list[LiveRow]) -> float | None:
    words = sum(r.ref_words for r in rows)
    return sum(r.errors for r in rows) / words if words else None


def _pooled(rows: list[LiveRow], metrics: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    real = [r for r in rows if not r.synthetic]
    synthetic = [r for r in rows if r.synthetic]
    pt = [r for r in real if cb.is_pt(r.language)]
    lat = [x for r in real for x in r.latencies]
    seg_lat = [x for r in real for x in r.segment_latencies]
    delays = [x for r in real for x in r.label_delays]
    gaps = [x for r in real for x in r.partial_gaps]
    syn = _group(synthetic, metrics["synthetic"])
    return {
        "wer": _wer(pt),  # PT real clips
        "wer_pt_real_clips": len(pt),
        "wer_en": _wer([r for r in real if cb.is_en(r.language)]),  # EN real clips
        "wer_synthetic": _wer(synthetic),
        "latency_p50_s": _q(lat, 0.5),
        "latency_p95_s": _q(lat, 0.95),
        "label_delay_p50_s": _q(delays, 0.5),
        "partial_interval_s": _q(gaps, 0.5),
        "partial_interval_p95_s": _q(gaps, 0.95),
        "phrases": len(lat),
        "segment_latency_p95_s": _q(seg_lat, 0.95),
        "segments": len(seg_lat),
        # real clips: DER (±0.25 s collar), peak RSS, CPU, overflows, audio
        **{k: v for k, v in _group(real, metrics["real"]).items() if k != "clips"},
        "real_clips": len(real),
        "synthetic": syn,  # the same figures over the synthetic clips only
        "errors": sum(1 for r in rows if r.error),
        "guard_words": cb.sum_counts(r.guard_words for r in real),
        "guard_reference_words": cb.sum_counts(r.guard_ref_words for r in real),
    }


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _print(rows: list[LiveRow], p: dict[str, Any]) -> None:
    head = (f"{'clip':28} {'dur s':>6} {'WER%':>6} {'DERlive':>7} {'DERoff':>6} {'spk':>5} "
            f"{'lat50':>6} {'lat95':>6} {'label50':>7} {'part50':>6} {'RSS MB':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        spk = "-" if r.speakers_live is None else f"{r.speakers_live}/{r.speakers_ref}"
        name = r.id + (" *" if r.synthetic else "")
        print(f"{name:28} {r.duration_s:6.1f} {cb.pct(r.wer):>6} {cb.pct(r.der_live):>7} "
              f"{cb.pct(r.der_refined):>6} {spk:>5} {_s(r.latency_p50_s):>6} "
              f"{_s(r.latency_p95_s):>6} {_s(r.label_delay_p50_s):>7} "
              f"{_s(r.partial_interval_s):>6} {r.peak_rss_mb:7.0f}"
              + (f"  ERROR {r.error}" if r.error else ""))
    print("-" * len(head))
    s = p["synthetic"]
    print(f"pooled: WER pt real ({p['wer_pt_real_clips']} clips) {cb.pct(p['wer'])}%  "
          f"WER en real {cb.pct(p['wer_en'])}%  WER synthetic {cb.pct(p['wer_synthetic'])}%")
    print(f"pooled: DER real clips ({p['der_clips']}, ±0.25 s collar) live "
          f"{cb.pct(p['der_live'])}%, after the offline pass {cb.pct(p['der_refined'])}%; "
          f"diarization failures {p['diarization_failures']}, offline pass missing "
          f"{p['offline_pass_failures']}")
    guards = ", ".join(f"{g} {n} ({p['guard_reference_words'].get(g, 0)} of the reference)"
                       for g, n in sorted(p["guard_words"].items())) or "none"
    print(f"pooled (real clips): words removed by the guards: {guards}")
    print(f"pooled: phrase end -> committed p50 {_s(p['latency_p50_s'])} s, p95 "
          f"{_s(p['latency_p95_s'])} s over {p['phrases']} phrases of real clips (segment end "
          f"-> committed p95 {_s(p['segment_latency_p95_s'])} s over {p['segments']}); speaker "
          f"label delay p50 {_s(p['label_delay_p50_s'])} s; partial every "
          f"{_s(p['partial_interval_s'])} s (p95 {_s(p['partial_interval_p95_s'])} s)")
    print(f"pooled: real clips ({p['real_clips']}, {p['audio_s']} s audio): peak RSS "
          f"{p['peak_rss_mb']} MB, CPU {p['cpu_percent']}% (of one core, all processes), "
          f"capture overflows {p['overflows']}; worker peaks (whole run) "
          f"{p['worker_peak_rss_mb']} MB")
    if s["clips"]:
        print(f"synthetic clips ({s['clips']}, {s['audio_s']} s audio): DER ({s['der_clips']}) "
              f"live {cb.pct(s['der_live'])}%, after the offline pass {cb.pct(s['der_refined'])}%, "
              f"diarization failures {s['diarization_failures']}; peak RSS "
              f"{s['peak_rss_mb']} MB, CPU {s['cpu_percent']}%, overflows {s['overflows']}")
    print("* synthetic clip: only in the synthetic figures")
