"""Dev script: DER of the ONNX diarizer on the corpus clips that have reference turns.

    python -m engine.diarization.evaluate --corpus /work/shared/corpus

Prints per clip and pooled DER without collar and with a +-0.25 s collar (pyannote.metrics'
``collar`` is the total width, hence 0.5), speakers found vs reference, and CPU seconds per
audio second of the diarizer call alone (process CPU time after one untimed warm-up call, so
single-threaded runs compare; it grows when another process competes for the same core).
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
import soundfile as sf
from pyannote.core import Annotation, Segment
from pyannote.metrics.diarization import DiarizationErrorRate

from engine.diarization.pipeline import DiarizationParams, Diarizer, Turn

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODELS = PROJECT_ROOT / "models" / "diarization"


def read_rttm(path: Path) -> Annotation:
    """Reference turns of one RTTM file as an Annotation (one uri per file assumed)."""
    ann = Annotation()
    for line in path.read_text().splitlines():
        f = line.split()
        if len(f) >= 8 and f[0] == "SPEAKER":
            start, dur = float(f[3]), float(f[4])
            ann[Segment(start, start + dur), len(ann)] = f[7]
    return ann


def to_annotation(turns: list[Turn]) -> Annotation:
    """Hypothesis turns as an Annotation (each turn its own track)."""
    ann = Annotation()
    for i, t in enumerate(turns):
        ann[Segment(t.start, t.end), i] = t.speaker
    return ann


def load_audio(path: Path) -> np.ndarray:
    """Mono float32 16 kHz samples (the corpus is 16 kHz mono already)."""
    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    if sr != 16000:
        raise ValueError(f"{path}: {sr} Hz, expected 16000")
    return audio.mean(axis=1)


def evaluate(corpus: Path, diarizer: Diarizer, verbose: bool = True) -> dict[str, Any]:
    """Run the diarizer on every manifest clip with an RTTM; returns the figures."""
    manifest = json.loads((corpus / "manifest.json").read_text())
    pooled = {0.0: DiarizationErrorRate(collar=0.0), 0.5: DiarizationErrorRate(collar=0.5)}
    rows = []
    total_cpu = total_audio = 0.0
    clips = [c for c in manifest["clips"] if c.get("rttm")]
    if clips:  # untimed warm-up: the first ONNX runs allocate and plan
        diarizer(load_audio(corpus / clips[0]["file"]), 16000)
    for clip in clips:
        audio = load_audio(corpus / clip["file"])
        ref = read_rttm(corpus / clip["rttm"])
        t0 = time.process_time()
        turns = diarizer(audio, 16000)
        cpu = time.process_time() - t0
        hyp = to_annotation(turns)
        dur = audio.shape[0] / 16000
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


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; ``--set name=value`` overrides a DiarizationParams field."""
    parser = argparse.ArgumentParser(description="DER of the ONNX diarizer on the dev corpus")
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
    diarizer = Diarizer(args.models / "segmentation-3.0.onnx", args.models / "campplus.onnx",
                        params, threads=args.threads)
    evaluate(args.corpus, diarizer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
