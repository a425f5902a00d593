"""Dev tool: DER of the ONNX diarizers on the corpus clips that have reference turns.

    python -m engine.bench.diarization offline --corpus ../shared/corpus [--set NAME=VALUE]
    python -m engine.bench.diarization online --corpus ../shared/corpus [--set NAME=VALUE]

`offline` prints per clip and pooled DER without collar and with a +-0.25 s collar, speakers
found vs reference, and CPU seconds per audio second of the diarizer call alone (process CPU
time after one untimed warm-up call, so single-threaded runs compare). `online` compares the
online diarizer (fed in blocks as a microphone would) with the offline one: DER, speakers,
CPU ratio and label delay.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from pyannote.metrics.diarization import DiarizationErrorRate

from engine.audio.source import read_audio
from engine.config import PROJECT_ROOT
from engine.diarization.online import OnlineDiarizer, OnlineParams
from engine.diarization.pipeline import DiarizationParams, Diarizer
from engine.messages import SAMPLE_RATE, SpeakerTurn
from engine.models.registry import diarization_paths
from engine.scoring import annotation, read_rttm

DEFAULT_MODELS = PROJECT_ROOT / "models"


def evaluate(corpus: Path, diarizer: Diarizer, verbose: bool = True) -> dict[str, Any]:
    """Run the diarizer on every manifest clip with an RTTM; returns the figures."""
    manifest = json.loads((corpus / "manifest.json").read_text())
    pooled = {0.0: DiarizationErrorRate(collar=0.0), 0.5: DiarizationErrorRate(collar=0.5)}
    rows = []
    total_cpu = total_audio = 0.0
    clips = [c for c in manifest["clips"] if c.get("rttm")]
    if clips:  # untimed warm-up: the first ONNX runs allocate and plan
        diarizer(read_audio(corpus / clips[0]["file"]), SAMPLE_RATE)
    for clip in clips:
        audio = read_audio(corpus / clip["file"])
        ref = annotation(read_rttm(corpus / clip["rttm"]))
        t0 = time.process_time()
        turns = diarizer(audio, SAMPLE_RATE)
        cpu = time.process_time() - t0
        hyp = annotation(turns)
        dur = audio.shape[0] / SAMPLE_RATE
        total_cpu += cpu
        total_audio += dur
        row = {
            "clip": clip["id"],
            "der": pooled[0.0](ref, hyp),
            "der_collar": pooled[0.5](ref, hyp),
            "found": len(hyp.labels()),
            "ref": len(ref.labels()),
            "cpu_per_s": cpu / dur,
        }
        rows.append(row)
        if verbose:
            print(f"{row['clip']:24s} DER {100 * row['der']:6.2f}%  collar±0.25 "
                  f"{100 * row['der_collar']:6.2f}%  speakers {row['found']}/{row['ref']}  "
                  f"CPU {row['cpu_per_s']:.4f} s/s", flush=True)
    result = {
        "clips": rows,
        "pooled_der": abs(pooled[0.0]),
        "pooled_der_collar": abs(pooled[0.5]),
        "cpu_per_s": total_cpu / max(total_audio, 1e-9),
    }
    if verbose:
        print(f"{'POOLED':24s} DER {100 * result['pooled_der']:6.2f}%  collar±0.25 "
              f"{100 * result['pooled_der_collar']:6.2f}%  CPU {result['cpu_per_s']:.4f} s/s")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {rss:.0f} MB")
    return result


def offline_main(argv: list[str] | None = None) -> int:
    """``--set name=value`` overrides a DiarizationParams field."""
    parser = argparse.ArgumentParser(description="DER of the ONNX diarizer on a corpus")
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a DiarizationParams field, e.g. --set step_s=2")
    args = parser.parse_args(argv)
    fields = {f.name: f for f in dataclasses.fields(DiarizationParams)}
    overrides: dict[str, Any] = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in fields:
            parser.error(f"unknown parameter {name!r}")
        overrides[name] = None if value.lower() == "none" else json.loads(value)
    params = DiarizationParams(**overrides)
    print(params)
    seg, emb = diarization_paths(args.models)
    evaluate(args.corpus, Diarizer(seg, emb, params, threads=args.threads))
    return 0


def run_stream(
    diarizer: OnlineDiarizer, audio: np.ndarray, block_s: float = 0.2
) -> tuple[list[SpeakerTurn], list[float], float]:
    """Feed ``audio`` in blocks as a microphone would; returns the turns, the label delay of
    each (stream position when returned minus turn end) and the CPU seconds spent."""
    block = max(1, int(round(block_s * SAMPLE_RATE)))
    turns: list[SpeakerTurn] = []
    delays: list[float] = []
    cpu = 0.0
    for i in range(0, audio.shape[0], block):
        t0 = time.process_time()
        got = diarizer.feed(audio[i : i + block])
        cpu += time.process_time() - t0
        pos = min(audio.shape[0], i + block) / SAMPLE_RATE
        turns += got
        delays += [pos - t.end for t in got]
    t0 = time.process_time()
    got = diarizer.flush()
    cpu += time.process_time() - t0
    turns += got
    delays += [audio.shape[0] / SAMPLE_RATE - t.end for t in got]
    return turns, delays, cpu


def online_main(argv: list[str] | None = None) -> int:
    """Offline vs online DER (collar +-0.25 s), speakers, CPU ratio and label delay per clip;
    ``--set name=value`` overrides an OnlineParams field."""
    parser = argparse.ArgumentParser(description="online vs offline diarization on a corpus")
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--block", type=float, default=0.2, help="feed block, seconds")
    parser.add_argument("--no-offline", action="store_true", help="skip the offline pass")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    fields = {f.name for f in dataclasses.fields(OnlineParams)}
    overrides: dict[str, Any] = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in fields:
            parser.error(f"unknown parameter {name!r}")
        overrides[name] = json.loads(value)
    params = OnlineParams(**overrides)
    print(params)
    seg, emb = diarization_paths(args.models)
    offline = Diarizer(seg, emb, threads=1)
    manifest = json.loads((args.corpus / "manifest.json").read_text())
    clips = [c for c in manifest["clips"] if c.get("rttm")]
    pooled_off, pooled_on = DiarizationErrorRate(collar=0.5), DiarizationErrorRate(collar=0.5)
    print(f"{'clip':24s} {'offDER':>7s} {'onDER':>7s} {'spk on/off/ref':>15s} "
          f"{'ratio':>6s} {'d50':>5s} {'d95':>5s}")
    all_delays: list[float] = []
    cpu_total = audio_total = 0.0
    for clip in clips:
        audio = read_audio(args.corpus / clip["file"])
        ref = annotation(read_rttm(args.corpus / clip["rttm"]))
        off_der, n_off = float("nan"), 0
        if not args.no_offline:
            off = annotation(offline(audio, SAMPLE_RATE))
            off_der, n_off = pooled_off(ref, off), len(off.labels())
        online = OnlineDiarizer(seg, emb, params, threads=1)
        turns, delays, cpu = run_stream(online, audio, args.block)
        hyp = annotation(turns)
        on_der = pooled_on(ref, hyp)
        dur = audio.shape[0] / SAMPLE_RATE
        cpu_total += cpu
        audio_total += dur
        all_delays += delays
        d = np.percentile(delays, [50, 95]) if delays else np.array([np.nan, np.nan])
        print(f"{clip['id']:24s} {100 * off_der:6.2f}% {100 * on_der:6.2f}% "
              f"{len(hyp.labels()):>5d}/{n_off}/{len(ref.labels())}      "
              f"{cpu / dur:6.3f} {d[0]:5.2f} {d[1]:5.2f}", flush=True)
    d = np.percentile(all_delays, [50, 95]) if all_delays else np.array([np.nan, np.nan])
    off_pool = abs(pooled_off) if not args.no_offline else float("nan")
    print(f"{'POOLED':24s} {100 * off_pool:6.2f}% {100 * abs(pooled_on):6.2f}% "
          f"{'':15s} {cpu_total / max(audio_total, 1e-9):6.3f} {d[0]:5.2f} {d[1]:5.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("offline", "online"):
        print("usage: python -m engine.bench.diarization offline|online --corpus DIR ...",
              file=sys.stderr)
        return 2
    return (offline_main if args[0] == "offline" else online_main)(args[1:])


if __name__ == "__main__":
    sys.exit(main())
