"""`transcrevai bench --cluster ADDRESS`: batch throughput on Ray actors beside the local engine.

The same corpus files run first through the local engine (one supervisor, files one after
another, as `transcribe A B ...` does), then on the cluster with 1, 2, ... actors (up to what
the cluster's CPUs allow at `[cluster] cpus_per_actor`, or `--actors N` at most). Reported per
run: wall time of the batch, audio seconds per wall second, the ratio to the local engine,
the actors' start (model load) time, which is paid once per actor and kept apart, and how many
transcripts are byte-identical (JSON export) to the local ones. All files use the
configuration's language, on both sides, so the comparison is of the same work.

Then one long recording (`--long MINUTES`, built from the corpus's Portuguese clips) runs on
one one-CPU actor whole and on two one-CPU actors cut into pieces: does one file finish
faster on more actors, and do its speakers stay one set across the pieces.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.bench import corpus as cb
from engine.config import Config
from engine.export import to_json
from engine.runner import FileResult, Runner
from engine.supervisor import Supervisor


@dataclass
class ClusterRun:
    label: str  # "local engine" or "N actors"
    actors: int  # 0 for the local engine
    cpus_per_actor: int
    start_s: float  # engine or actors up, models loaded
    wall_s: float  # the batch itself
    audio_s: float
    identical: int | None  # files whose JSON equals the local engine's (None: local itself)
    files: int
    failed: int
    nodes: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        """Audio seconds per wall second (the batch, model load apart)."""
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0


def _local(cfg: Config, files: list[str]) -> tuple[ClusterRun, dict[str, str]]:
    t0 = time.perf_counter()
    outputs: dict[str, str] = {}
    audio = 0.0
    failed = 0
    with Supervisor(cfg, diarization=cfg.diarization.enabled) as engine:
        runner = Runner(engine)
        runner.wait_ready()
        started = time.perf_counter()
        for f in files:
            res = runner.transcribe(f)
            failed += res.error is not None
            audio += res.audio_s
            outputs[f] = to_json(res.transcript)
        wall = time.perf_counter() - started
    return ClusterRun("local engine", 0, cfg.transcription.cpu_threads, started - t0, wall,
                      audio, None, len(files), failed), outputs


def _on_cluster(cfg: Config, address: str, actors: int, cpus: int, files: list[str],
                local: dict[str, str]) -> ClusterRun:
    from engine.cluster.batch import ClusterBatch

    t0 = time.perf_counter()
    batch = ClusterBatch(cfg, address, actors, cpus)
    started = time.perf_counter()
    got: dict[str, FileResult] = {}

    def emit(result: FileResult, _where: str) -> None:
        got[result.path] = result

    names = sorted(rep.name for _h, rep in batch.actors)
    try:
        batch.run(files, emit)
        wall = time.perf_counter() - started
    finally:
        batch.close()
    same = sum(1 for f, r in got.items() if r.error is None and to_json(r.transcript) == local[f])
    label = f"{len(names)} actor{'s' if len(names) != 1 else ''}"
    return ClusterRun(label, len(names), min(batch.cpus), started - t0, wall,
                      sum(r.audio_s for r in got.values()), same, len(files),
                      sum(1 for r in got.values() if r.error is not None), names)


@dataclass
class LongRun:
    """One long recording on one one-CPU actor (whole) and on two (cut into pieces)."""

    minutes: float
    one_wall_s: float
    split_wall_s: float
    pieces: int
    speakers_one: int
    speakers_split: int
    der_split_vs_one: float  # % of speech time, ±0.25 s collar, the whole run as reference
    words_differ: float  # % word edits between the two transcripts (the whole as reference)
    failed: int

    @property
    def speedup(self) -> float:
        return self.one_wall_s / self.split_wall_s if self.split_wall_s > 0 else 0.0


def long_recording(corpus: Path, clips: list[dict[str, Any]], minutes: float,
                   folder: Path) -> Path:
    """MINUTES of the corpus's real Portuguese clips one after another (looped, as the soak
    builds its speech): a meeting-length recording with many voices, some coming back."""
    from engine.bench.soak import build_loop_wav

    real = [corpus / c["file"] for c in clips
            if not c.get("synthetic") and cb.clip_language(c) == "pt"]
    if not real:
        raise ValueError("no real Portuguese clips in the corpus")
    path = folder / f"long_{minutes:g}min.wav"
    build_loop_wav(real, minutes * 60, path)
    return path


def _long(cfg: Config, address: str, path: Path) -> LongRun:
    from engine.cluster.batch import ClusterBatch, ClusterError
    from engine.cluster.split import piece_count
    from engine.scoring import annotation, der_metric, edit_distance, normalize, uem

    got: dict[int, FileResult] = {}
    wall: dict[int, float] = {}
    pieces = 1
    for n in (1, 2):
        batch = ClusterBatch(cfg, address, n, 1, max_cpus=1)
        try:
            if len(batch.actors) < n:
                raise ClusterError(f"{n} one-CPU actors did not start")
            if n == 2:
                pieces = piece_count(got[1].audio_s, n, cfg.cluster)

            def emit(result: FileResult, _where: str, n: int = n) -> None:
                got[n] = result

            t0 = time.perf_counter()
            batch.run([str(path)], emit)
            wall[n] = time.perf_counter() - t0
        finally:
            batch.close()
    one, split = got[1].transcript, got[2].transcript
    der = der_metric(0.25)(annotation(one.turns), annotation(split.turns),
                           uem=uem(one.duration_s))
    ref = normalize(" ".join(s.text for s in one.spoken))
    hyp = normalize(" ".join(s.text for s in split.spoken))
    return LongRun(round(one.duration_s / 60, 2), wall[1], wall[2], pieces,
                   len({t.speaker for t in one.turns}), len({t.speaker for t in split.turns}),
                   round(100 * float(der), 2),
                   round(100 * edit_distance(ref, hyp) / max(1, len(ref)), 2),
                   sum(r.error is not None for r in got.values()))


def run_cluster_bench(cfg: Config, args: argparse.Namespace) -> int:
    """Local engine, then 1..N actors on the cluster, on the same corpus files; 1 when a run
    failed a file or a cluster transcript differs from the local one."""
    from engine.cluster.batch import ClusterError, connect, plan_actors

    loaded = cb.load_corpus(args)
    if loaded is None:
        return 2
    corpus, clips = loaded
    files = [str(corpus / c["file"]) for c in clips]
    if not files:
        print("transcrevai: no clips to run", file=sys.stderr)
        return 2
    cpus = max(1, cfg.cluster.cpus_per_actor)
    try:
        ray = connect(args.cluster)
    except ClusterError as exc:
        print(f"transcrevai: {exc}", file=sys.stderr)
        return 2
    most = args.actors or len(plan_actors(ray.nodes(), 0, cpus))
    local_run, local = _local(cfg, files)
    runs = [local_run]
    for n in range(1, most + 1):
        try:
            runs.append(_on_cluster(cfg, args.cluster, n, cpus, files, local))
        except ClusterError as exc:
            print(f"transcrevai: {n} actors: {exc}", file=sys.stderr)
            return 1
    long = None
    if args.long and args.long > 0:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="transcrevai-long-") as tmp:
            try:
                path = long_recording(corpus, clips, args.long, Path(tmp))
                long = _long(cfg, args.cluster, path)
            except (ClusterError, ValueError) as exc:
                print(f"transcrevai: long recording: {exc}", file=sys.stderr)
                return 1
    if args.json:
        print(json.dumps({"files": len(files), "runs": [
            {**asdict(r), "throughput": round(r.throughput, 3),
             "vs_local": round(r.throughput / local_run.throughput, 3)
             if local_run.throughput else None} for r in runs],
            "long": None if long is None else {**asdict(long),
                                               "speedup": round(long.speedup, 3)}}, indent=2))
    else:
        _print(runs, local_run)
        if long is not None:
            _print_long(long)
    bad = any(r.failed or (r.identical or 0) < r.files for r in runs[1:])
    return 1 if bad or (long is not None and long.failed) else 0


def _print_long(r: LongRun) -> None:
    print(f"\none {r.minutes:.1f}-minute recording, actors of one CPU each:")
    print(f"  1 actor, whole:           {r.one_wall_s:7.1f} s wall, {r.speakers_one} speakers")
    print(f"  2 actors, {r.pieces} pieces:       {r.split_wall_s:7.1f} s wall, "
          f"{r.speakers_split} speakers  -> {r.speedup:.2f}x faster (target >= 1.6x: "
          f"{'met' if r.speedup >= 1.6 else 'NOT met'})")
    print(f"  pieces against whole: speaker DER {r.der_split_vs_one:.2f}% (speakers matched "
          f"across pieces by voice), words differing {r.words_differ:.2f}% (other cut points "
          "make other decode units)" + (f"; {r.failed} failed" if r.failed else ""))


def _print(runs: list[ClusterRun], local: ClusterRun) -> None:
    head = (f"{'run':16} {'CPUs/actor':>10} {'start s':>8} {'wall s':>8} {'audio s':>8} "
            f"{'audio s/s':>9} {'vs local':>8} {'identical':>9}")
    print(head)
    print("-" * len(head))
    for r in runs:
        ratio = r.throughput / local.throughput if local.throughput else 0.0
        print(f"{r.label:16} {r.cpus_per_actor:>10} {r.start_s:8.1f} {r.wall_s:8.1f} "
              f"{r.audio_s:8.1f} {r.throughput:9.2f} {ratio:8.2f} "
              + (f"{r.identical:>4}/{r.files:<4}" if r.identical is not None else f"{'-':>9}")
              + (f"  {r.failed} failed" if r.failed else ""))
    print("-" * len(head))
    print("audio s/s: audio seconds transcribed (with speakers) per wall second of the batch; "
          "start: models loaded, once per engine or actor, not in the batch's wall time")

