"""`transcrevai bench --live`: every clip through the live path at real-time pace.

Without a sound card, capture reads each file at real-time pace with the live block size and
consumers run their streaming policies, exactly as for a microphone (the virtual-mic test
covers the PulseAudio hop itself). Reported per clip and pooled:

- WER of committed text (what a user is left with; partials are not scored),
- DER (±0.25 s collar) of the live speaker turns, and of the offline pass at the end,
- end-of-phrase -> committed-text latency: wall time a phrase committed minus the wall time
  its last word was played (the stream's start + the segment's end),
- speaker-label delay: commit -> the online diarizer has settled that audio,
- partial refresh interval during speech (median gap between partial updates),
- peak RSS of all processes, CPU % of all processes, capture overflows.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import psutil

from engine.bench.corpus import load_corpus, pct
from engine.config import Config
from engine.runner import Runner
from engine.scoring import annotation, edit_distance, normalize, read_rttm, uem
from engine.supervisor import Supervisor


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
    label_delays: list[float]
    partial_gaps: list[float]
    peak_rss_mb: float
    overflows: int
    error: str | None = None


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
    loaded = load_corpus(args)
    if loaded is None:
        return 2
    corpus, clips = loaded
    from pyannote.metrics.diarization import DiarizationErrorRate

    m_live = DiarizationErrorRate(collar=0.5, skip_overlap=False)
    m_refined = DiarizationErrorRate(collar=0.5, skip_overlap=False)
    rows: list[LiveRow] = []
    cpu_s = wall_s = 0.0
    with Supervisor(cfg, diarization=cfg.diarization.enabled) as engine:
        runner = Runner(engine)
        runner.wait_ready()
        for clip in clips:
            runner.peak_rss_bytes = 0
            lang = re.sub(r"[^a-z].*", "", clip["language"].lower()) or None
            c0, w0 = _cpu_seconds(engine), time.perf_counter()
            live = runner.run_live(str(corpus / clip["file"]), language=lang)
            cpu_s += _cpu_seconds(engine) - c0
            wall_s += time.perf_counter() - w0
            tr = live.transcript(live_labels=True)
            ref = normalize(clip["transcript"])
            errors = edit_distance(ref, normalize(" ".join(s.text for s in tr.segments)))
            der_l = der_r = None
            found = len({t.speaker for t in live.turns}) if live.turns else None
            if clip.get("rttm") and runner.diarizing:
                ref_ann = annotation(read_rttm(corpus / clip["rttm"]), clip["id"])
                whole = uem(clip["duration_s"])
                der_l = m_live(ref_ann, annotation(live.turns, clip["id"]), uem=whole)
                if live.refined is not None:
                    der_r = m_refined(ref_ann, annotation(live.refined, clip["id"]), uem=whole)
            st = live.stats
            gaps = _partial_gaps(st.partial_times)
            rows.append(LiveRow(
                clip["id"], clip["language"], bool(clip.get("synthetic")), clip["duration_s"],
                errors / max(1, len(ref)), len(ref), errors, der_l, der_r, found,
                int(clip.get("n_speakers") or 0), _q(st.commit_latency_s, 0.5),
                _q(st.commit_latency_s, 0.95), _q(st.label_delay_s, 0.5),
                _q(gaps, 0.5), st.commit_latency_s, st.label_delay_s, gaps,
                runner.peak_rss_bytes / 2**20, st.overflows, live.error))
        workers = {w.role: round(w.peak_rss_bytes / 2**20) for w in engine.metrics().workers}
    report = _pooled(rows, m_live, m_refined, cpu_s, wall_s)
    report["worker_peak_rss_mb"] = workers
    if args.json:
        print(json.dumps({"clips": [{k: v for k, v in r.__dict__.items()
                                     if k not in ("latencies", "label_delays", "partial_gaps")}
                                    for r in rows], "pooled": report}, indent=2,
                         ensure_ascii=False))
    else:
        _print(rows, report)
    return 0


def _pooled(rows: list[LiveRow], m_live: Any, m_refined: Any, cpu_s: float,
            wall_s: float) -> dict[str, Any]:
    pt = [r for r in rows if r.language.lower().startswith("pt") and not r.synthetic]
    words = sum(r.ref_words for r in pt)
    en = [r for r in rows if r.language.lower().startswith("en")]
    real = [r for r in rows if not r.synthetic]  # synthetic clips are reported apart
    lat = [x for r in real for x in r.latencies]
    delays = [x for r in real for x in r.label_delays]
    gaps = [x for r in real for x in r.partial_gaps]
    has_der = any(r.der_live is not None for r in rows)
    return {
        "wer": sum(r.errors for r in pt) / words if words else None,
        "wer_pt_real_clips": len(pt),
        "der_live": abs(m_live) if has_der else None,  # every clip with turns
        "der_refined": abs(m_refined) if any(r.der_refined is not None for r in rows)
        else None,
        "latency_p50_s": _q(lat, 0.5),
        "latency_p95_s": _q(lat, 0.95),
        "label_delay_p50_s": _q(delays, 0.5),
        "partial_interval_s": _q(gaps, 0.5),
        "partial_interval_p95_s": _q(gaps, 0.95),
        "phrases": len(lat),
        "peak_rss_mb": round(max((r.peak_rss_mb for r in rows), default=0.0)),
        "cpu_percent": round(100 * cpu_s / wall_s, 1) if wall_s else None,
        "wer_en": (sum(r.errors for r in en) / sum(r.ref_words for r in en)
                   if sum(r.ref_words for r in en) else None),
        "overflows": sum(r.overflows for r in rows),
        "audio_s": round(sum(r.duration_s for r in rows), 1),
        "errors": sum(1 for r in rows if r.error),
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
        print(f"{name:28} {r.duration_s:6.1f} {pct(r.wer):>6} {pct(r.der_live):>7} "
              f"{pct(r.der_refined):>6} {spk:>5} {_s(r.latency_p50_s):>6} "
              f"{_s(r.latency_p95_s):>6} {_s(r.label_delay_p50_s):>7} "
              f"{_s(r.partial_interval_s):>6} {r.peak_rss_mb:7.0f}"
              + (f"  ERROR {r.error}" if r.error else ""))
    print("-" * len(head))
    print(f"pooled: WER pt real ({p['wer_pt_real_clips']} clips) {pct(p['wer'])}%  "
          f"WER en {pct(p['wer_en'])}%  "
          f"DER live {pct(p['der_live'])}%  DER after the offline pass "
          f"{pct(p['der_refined'])}%  (±0.25 s collar)")
    print(f"pooled: phrase end -> committed p50 {_s(p['latency_p50_s'])} s, p95 "
          f"{_s(p['latency_p95_s'])} s over {p['phrases']} phrases; speaker label delay p50 "
          f"{_s(p['label_delay_p50_s'])} s; partial every {_s(p['partial_interval_s'])} s "
          f"(p95 {_s(p['partial_interval_p95_s'])} s)")
    print(f"pooled: peak RSS {p['peak_rss_mb']} MB, CPU {p['cpu_percent']}% (of one core, all "
          f"processes), capture overflows {p['overflows']}, audio {p['audio_s']} s; "
          f"worker peaks {p['worker_peak_rss_mb']} MB")
    print("* synthetic clip: not in the pooled figures")
