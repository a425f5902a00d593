"""`transcrevai bench --soak MINUTES`: one long live session, watched for growth.

Users leave the console recording for hours, so the soak plays real speech through the live
path at real-time pace for MINUTES as one continuous stream (the corpus clips back to back,
looped, written to a temporary WAV block by block) and samples, every few seconds:

- RSS of every process (the supervisor/console process and each worker, by role),
- lag (audio fed minus audio transcribed) and the commit latency of recent phrases,
- worker restarts and the depth of the workers' inboxes,
- the cost of folding engine events into the console's transcript (when the console side
  passes an observer): it must not grow with the length of the session.

Growth is measured from the end of a warm-up (models settle, allocator pools fill) to the
end of the audio: the median of the last WINDOW samples before the audio ends against the
median of the first WINDOW after the warm-up (fewer each when the run is short, so the two
never share a sample). The speaker pass after the audio (it loads the recording once) is left
out. RSS is in MB of 2^20 bytes (as every other figure of the project); "total" is the
sum over all processes at each sample.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf

from engine.bench.corpus import real_clip_paths
from engine.config import Config
from engine.messages import SAMPLE_RATE, EngineEvent
from engine.runner import Runner
from engine.supervisor import Supervisor

Observer = Callable[[Sequence[EngineEvent]], None]
GAP_S = 0.6  # silence between clips: a pause ends the phrase like a real conversation
WINDOW = 3  # samples averaged (median) at each end of the growth window


@dataclass
class Sample:
    t_s: float
    rss_mb: dict[str, float]
    settled_mb: dict[str, float]  # per worker: RSS right after it last returned freed heap
    lag_s: float
    latency_p95_s: float | None  # commit latency of phrases committed since the last sample
    restarts: int  # worker restarts since the start (all workers)
    queue_depth: int  # audio blocks waiting in the workers' inboxes, summed over workers
    segments: int  # committed segments since the start
    observer_us_per_event: float | None  # mean console cost per event since the last sample
    ended: bool = False  # the audio is over: the end-of-session speaker pass runs now


@dataclass
class SoakReport:
    minutes: float
    audio_s: float
    warmup_s: float
    interval_s: float = 0.0  # seconds between samples
    samples: list[Sample] = field(default_factory=list)
    growth_pct: dict[str, float] = field(default_factory=dict)  # late / early median RSS - 1
    growth_mb: dict[str, float] = field(default_factory=dict)  # late - early median RSS
    # late - early median of the RSS workers report right after returning freed heap: the
    # floor a leak raises (sampled RSS swings with each decode)
    settled_growth_mb: dict[str, float] = field(default_factory=dict)
    growth_early_s: list[float] = field(default_factory=list)  # [first, last] sample time
    growth_late_s: list[float] = field(default_factory=list)  # of each window
    max_lag_s: float = 0.0  # over every sample, the speaker pass after the audio included
    restarts: int = 0  # worker restarts during the whole run
    max_queue_depth: int = 0  # largest summed inbox depth at one sample, in audio blocks
    observer_growth: float | None = None  # late / early median console cost per event
    error: str | None = None


def build_loop_wav(clips: list[Path], seconds: float, out: Path) -> float:
    """The clips back to back (with short pauses), repeated to `seconds`; written as it goes."""
    written = 0
    target = int(seconds * SAMPLE_RATE)
    gap = np.zeros(int(GAP_S * SAMPLE_RATE), dtype=np.float32)
    with sf.SoundFile(str(out), "w", SAMPLE_RATE, 1, "PCM_16") as fh:
        while written < target:
            for clip in clips:
                audio, sr = sf.read(str(clip), dtype="float32", always_2d=True)
                mono = audio.mean(axis=1)
                if sr != SAMPLE_RATE:
                    import soxr

                    mono = soxr.resample(mono, sr, SAMPLE_RATE)
                for block in (mono, gap):
                    take = block[: target - written]
                    fh.write(take)
                    written += len(take)
                if written >= target:
                    break
    return written / SAMPLE_RATE


def _rss(engine: Supervisor) -> dict[str, float]:
    out = {"supervisor": psutil.Process().memory_info().rss / 2**20}
    for role, proc in engine.procs.items():
        try:
            if proc.pid and proc.is_alive():
                out[role] = psutil.Process(proc.pid).memory_info().rss / 2**20
        except psutil.Error:
            continue
    return out


def _settled(engine: Supervisor) -> dict[str, float]:
    return {role: round(slot.settled_rss / 2**20, 1) for role, slot in engine.slots.items()
            if slot.settled_rss}


def run_soak(cfg: Config, args: argparse.Namespace, observer: Observer | None = None) -> int:
    paths = real_clip_paths(args)
    if paths is None:
        return 2
    minutes = float(args.soak)
    report = soak(cfg, paths, minutes, observer, verbose=not args.json)
    if args.json:
        doc = asdict(report)
        print(json.dumps(doc, indent=2))
    else:
        print(format_report(report))
    return 0 if report.error is None else 1


def soak(cfg: Config, clips: list[Path], minutes: float, observer: Observer | None = None,
         verbose: bool = False, interval_s: float | None = None) -> SoakReport:
    """Play `minutes` of looped speech through the live path and sample the processes."""
    seconds = minutes * 60.0
    every = interval_s or max(2.0, min(30.0, seconds / 40))
    # whisper's RSS climbs for the first ~55 s (allocator pools, encoder window sizes) and
    # then stays flat (measured), so growth is counted from 60 s or 20% of the run
    warmup = min(max(60.0, 0.2 * seconds), 0.5 * seconds)
    report = SoakReport(minutes, 0.0, warmup, every)
    cost = {"events": 0, "s": 0.0}

    def on_event(ev: EngineEvent) -> None:
        if observer is not None:
            t0 = time.perf_counter()
            observer([ev])
            cost["s"] += time.perf_counter() - t0
            cost["events"] += 1

    with tempfile.TemporaryDirectory(prefix="transcrevai-soak-") as tmp:
        wav = Path(tmp) / "soak.wav"
        report.audio_s = build_loop_wav(clips, seconds, wav)
        with Supervisor(cfg, diarization=cfg.diarization.enabled) as engine:
            runner = Runner(engine, on_event=on_event)
            runner.wait_ready()
            live = runner.start_live(str(wav), speed=1.0, journal=False)
            t0 = time.monotonic()
            next_at = t0 + every
            seen_lat = 0
            if verbose:
                print(LEGEND, flush=True)
            while not live.done:
                runner.pump(0.05)
                now = time.monotonic()
                if now < next_at and not live.done:
                    continue
                next_at = now + every
                lat = live.stats.commit_latency_s[seen_lat:]
                seen_lat += len(lat)
                m = engine.metrics()
                depth = sum(w.queue_depth for w in m.workers)
                per_event = (1e6 * cost["s"] / cost["events"]) if cost["events"] else None
                cost["s"], cost["events"] = 0.0, 0
                sample = Sample(round(now - t0, 1), _rss(engine), _settled(engine),
                                round(m.lag_s, 2),
                                round(float(np.percentile(lat, 95)), 2) if lat else None,
                                sum(w.restarts for w in m.workers), depth, len(live.segments),
                                round(per_event, 1) if per_event is not None else None,
                                # the speaker pass starts as the last audio arrives (a
                                # sample 0.3 s after the end held it, measured): from 1 s
                                # before the end a sample may hold it
                                ended=live.done or now - t0 >= report.audio_s - 1.0)
                report.samples.append(sample)
                if verbose:
                    print(_row(sample), flush=True)
            runner.live = None
            report.error = live.error
    _summarise(report)
    return report


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else 0.0


def _summarise(r: SoakReport) -> None:
    # from the end of the warm-up to the end of the audio: the offline speaker pass after it
    # loads the whole recording once (bounded by live.refine_max_s), which is not growth
    after = [s for s in r.samples if s.t_s >= r.warmup_s and not s.ended]
    if len(after) >= 2:
        n = min(WINDOW, len(after) // 2)  # the early and late windows never overlap
        head, tail = after[:n], after[-n:]
        r.growth_early_s = [head[0].t_s, head[-1].t_s]
        r.growth_late_s = [tail[0].t_s, tail[-1].t_s]
        roles = sorted({k for s in after for k in s.rss_mb})
        for role in [*roles, "total"]:
            def val(s: Sample, role: str = role) -> float:
                return sum(s.rss_mb.values()) if role == "total" else s.rss_mb.get(role, 0.0)

            a, b = _median([val(s) for s in head]), _median([val(s) for s in tail])
            if a > 0:
                r.growth_pct[role] = round(100.0 * (b - a) / a, 2)
                r.growth_mb[role] = round(b - a, 1)
        for role in sorted({k for s in after for k in s.settled_mb}):
            a = _median([s.settled_mb[role] for s in head if role in s.settled_mb])
            b = _median([s.settled_mb[role] for s in tail if role in s.settled_mb])
            if a > 0:
                r.settled_growth_mb[role] = round(b - a, 1)
        costs_a = [s.observer_us_per_event for s in head if s.observer_us_per_event]
        costs_b = [s.observer_us_per_event for s in tail if s.observer_us_per_event]
        if costs_a and costs_b:
            r.observer_growth = round(_median(costs_b) / max(_median(costs_a), 1e-9), 2)
    r.max_lag_s = max((s.lag_s for s in r.samples), default=0.0)
    r.restarts = max((s.restarts for s in r.samples), default=0)
    r.max_queue_depth = max((s.queue_depth for s in r.samples), default=0)


LEGEND = ("t: seconds since the stream started; RSS in MB (2^20 bytes) per process; lag: audio "
          "fed minus audio transcribed; p95 commit: phrases committed since the last sample; "
          "restarts: since the start; queued: audio blocks in the workers' inboxes; segments: "
          "committed so far; console µs/event: mean since the last sample")


def _row(s: Sample) -> str:
    rss = "  ".join(f"{k} {v:6.0f}" for k, v in sorted(s.rss_mb.items()))
    lat = "-" if s.latency_p95_s is None else f"{s.latency_p95_s:.2f}"
    obs = "-" if s.observer_us_per_event is None else f"{s.observer_us_per_event:.0f}"
    return (f"t {s.t_s:6.0f} s  RSS MB: {rss}  lag {s.lag_s:5.2f} s  p95 commit {lat} s  "
            f"restarts {s.restarts}  queued {s.queue_depth}  segments {s.segments}  "
            f"console µs/event {obs}" + ("  (audio over)" if s.ended else ""))


def format_report(r: SoakReport) -> str:
    """The summary, each figure labelled with its unit and the samples it is taken over."""
    lines = [f"soak: {r.audio_s / 60:.1f} min of speech through the live path at real-time "
             f"pace; {len(r.samples)} samples, one every {r.interval_s:.0f} s; warm-up "
             f"{r.warmup_s:.0f} s"]
    if r.growth_pct:
        (e0, e1), (l0, l1) = r.growth_early_s, r.growth_late_s
        lines.append(f"  RSS growth, median of the samples at {e0:.0f}-{e1:.0f} s -> median "
                     f"at {l0:.0f}-{l1:.0f} s (after the warm-up, before the end of the audio; "
                     f"MB = 2^20 bytes):")
        lines += [f"    {k}: {v:+.2f}% ({r.growth_mb.get(k, 0.0):+.1f} MB)"
                  + (" (all processes)" if k == "total" else "")
                  for k, v in r.growth_pct.items()]
        lines += [f"    {k}, RSS right after a decode returned its freed heap (a leak's "
                  f"floor): {v:+.1f} MB" for k, v in r.settled_growth_mb.items()]
    else:
        lines.append("  RSS growth: not measured (fewer than 2 samples between the warm-up and "
                     "the end of the audio; run longer)")
    lines.append(f"  max lag (audio fed - transcribed) at any sample {r.max_lag_s:.2f} s; "
                 f"worker restarts {r.restarts}; max audio blocks queued in worker inboxes "
                 f"(summed over workers) {r.max_queue_depth}")
    if r.observer_growth is not None:
        lines.append(f"  console cost per engine event, median of the late window / the early "
                     f"one: {r.observer_growth:.2f}x")
    if r.error:
        lines.append(f"  error: {r.error}")
    return "\n".join(lines)
