"""The whisper (CTranslate2) side of the quantization chain: int8 → int8_float32 → float16 →
float32.

CTranslate2 quantizes while it loads, so a level is a `compute_type`, not a file. A level is
accepted when CTranslate2 supports it on this CPU, it loads and transcribes a bundled probe
clip in a child process (a crash there fails the level, not the app), its words agree with
float32 on that clip and it is not slower than float32. float16 is recorded as unavailable on
a CPU where CTranslate2 does not offer it (it would raise ValueError on load).

``python -m engine.models.ct2_chain --probe LEVEL FOLDER OUT.json`` is the child side.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

from engine.fileio import atomic_write_text
from engine.models.quantize import (
    MAX_SLOWDOWN,
    PROBE_TIMEOUT_S,
    ChainCancelled,
    ChainResult,
    LevelResult,
    QuantizeError,
    cpu_model,
    read_manifest,
    run_child,
)

WHISPER_LEVELS: tuple[str, ...] = ("int8", "int8_float32", "float16", "float32")
# Word agreement with float32 on the probe clip (1 - word error rate between the two texts).
# int8 and int8_float32 gave the same words as float32 on the bundled clip (measured).
MIN_WORD_AGREEMENT = 0.9
PROBE_CLIP = Path(__file__).resolve().parents[2] / "models" / "probe_ptbr.wav"
MANIFEST_VERSION = 1
MANIFEST_NAME = "whisper.manifest.json"


def ct2_versions() -> dict[str, str]:
    """Versions whose change invalidates a cached whisper validation."""
    import ctranslate2
    import faster_whisper

    return {"ctranslate2": ctranslate2.__version__, "faster_whisper": faster_whisper.__version__}


def supported_levels() -> set[str]:
    import ctranslate2

    return set(ctranslate2.get_supported_compute_types("cpu"))


def word_agreement(text: str, reference: str) -> float:
    """1 - word error rate of `text` against `reference` (clamped at 0), as the bench counts."""
    from engine.scoring import edit_distance, normalize

    hyp, ref = normalize(text), normalize(reference)
    if not ref:
        return 1.0 if not hyp else 0.0
    return max(0.0, 1.0 - edit_distance(ref, hyp) / len(ref))


# --------------------------------------------------------------------------- child side
def _run_probe(level: str, folder: Path, out: Path, reference: str | None, threads: int,
               reps: int) -> None:
    """Child: load the level (and float32), transcribe the probe interleaved, save JSON."""
    import soundfile as sf
    from faster_whisper import WhisperModel

    audio, _sr = sf.read(PROBE_CLIP, dtype="float32")
    levels = [level] + ([reference] if reference else [])
    models = [WhisperModel(str(folder), device="cpu", compute_type=lv, cpu_threads=threads,
                           local_files_only=True) for lv in levels]
    texts = [""] * len(models)
    times: list[list[float]] = [[] for _ in models]
    for rep in range(reps + 1):  # rep 0 is a warm-up
        for i, model in enumerate(models):
            start = time.perf_counter()
            segs, _info = model.transcribe(audio, language="pt", beam_size=5, vad_filter=False,
                                           condition_on_previous_text=False,
                                           temperature=0.0)
            text = " ".join(s.text.strip() for s in segs)
            if rep:
                times[i].append(time.perf_counter() - start)
            else:
                texts[i] = text
    # the fastest run of each (other load only adds time; see onnx_convert._run_probe)
    out.write_text(json.dumps({"texts": texts, "times": [min(t) for t in times]}))


# --------------------------------------------------------------------------- cache
def _manifest(cache_dir: Path) -> Path:
    return cache_dir / MANIFEST_NAME


def cached_whisper(folder: Path, cache_dir: Path, src_hash: str, allowed: set[str] | None,
                   pinned: str | None) -> tuple[ChainResult | None, str]:
    """The cached decision, or (None, why it cannot be used)."""
    mpath = _manifest(cache_dir)
    man, why = read_manifest(mpath, MANIFEST_VERSION)
    if man is None:
        return None, why
    checks = [
        (man.get("source") == str(folder) and man.get("source_sha256") == src_hash,
         "model changed since cache"),
        (man.get("versions") == ct2_versions(), "ctranslate2 version changed: revalidated"),
        (man.get("cpu") == cpu_model(), "CPU changed: revalidated"),
        (man.get("pinned") == pinned and man.get("allowed") == (
            sorted(allowed) if allowed is not None else None), "config changed since cache"),
    ]
    for ok, why in checks:
        if not ok:
            return None, why
    try:
        levels = [LevelResult(**lv) for lv in man["levels"]]
        chosen = next(lv for lv in levels if lv.level == man["level"])
    except (KeyError, TypeError, StopIteration):
        return None, "cache manifest incomplete: rebuilt"
    size = (folder / "model.bin").stat().st_size
    return ChainResult("whisper", folder, src_hash, "", levels, chosen.level, folder, size,
                       chosen.speed_ratio, chosen.agreement, from_cache=True,
                       manifest=mpath), "cache ok"


def _write(cache_dir: Path, res: ChainResult, allowed: set[str] | None,
           pinned: str | None) -> None:
    man = {
        "manifest_version": MANIFEST_VERSION,
        "model_kind": "whisper",
        "source": str(res.source),
        "source_sha256": res.source_sha256,
        "level": res.in_use,
        "versions": ct2_versions(),
        "cpu": cpu_model(),
        "pinned": pinned,
        "allowed": sorted(allowed) if allowed is not None else None,
        "levels": [asdict(lv) for lv in res.levels],
        "thresholds": {"min_word_agreement": MIN_WORD_AGREEMENT, "max_slowdown": MAX_SLOWDOWN},
        "probe": PROBE_CLIP.name,
    }
    atomic_write_text(_manifest(cache_dir), json.dumps(man, indent=2))


# --------------------------------------------------------------------------- the chain
def _probe(level: str, folder: Path, threads: int, reps: int, timeout: float,
           cancel: threading.Event | None) -> tuple[bool, str, dict[str, list]]:
    with tempfile.TemporaryDirectory(prefix="tq-ct2-") as tmp:
        out = Path(tmp) / "probe.json"
        cmd = [sys.executable, "-m", "engine.models.ct2_chain", "--probe", level, str(folder),
               str(out), "--threads", str(threads), "--reps", str(reps)]
        if level != "float32":
            cmd += ["--reference", "float32"]
        ok, why = run_child(cmd, timeout, cancel)
        if cancel is not None and cancel.is_set():
            raise ChainCancelled("quantization chain cancelled")
        if not ok:
            return False, why.replace("child crashed", "CTranslate2 child crashed"), {}
        return True, "", json.loads(out.read_text())


def build_whisper_chain(folder: Path, cache_dir: Path, src_hash: str,
                        allowed: set[str] | None = None, pinned: str | None = None, *,
                        threads: int = 2, reps: int = 3, timeout: float = PROBE_TIMEOUT_S,
                        cancel: threading.Event | None = None,
                        supported: set[str] | None = None) -> ChainResult:
    """First level that CTranslate2 offers here, loads in a child, agrees with float32 on the
    probe clip and is not slower; float32 is the last resort. `supported` overrides what
    CTranslate2 reports (tests use it)."""
    folder, cache_dir = Path(folder), Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if pinned is not None and pinned not in WHISPER_LEVELS:
        raise ValueError(f"unknown whisper level {pinned!r}; known: {', '.join(WHISPER_LEVELS)}")
    cached, why = cached_whisper(folder, cache_dir, src_hash, allowed, pinned)
    if cached is not None:
        cached.hash_status = "ok (verified before load); cache ok"
        return cached
    if not PROBE_CLIP.is_file():
        raise QuantizeError(f"probe clip missing: {PROBE_CLIP}")
    have = supported_levels() if supported is None else supported
    import ctranslate2

    levels: list[LevelResult] = []
    chosen: LevelResult | None = None
    for level in WHISPER_LEVELS:
        if chosen is not None:
            levels.append(LevelResult(level, "skipped", f"{chosen.level} already accepted"))
        elif level != "float32" and allowed is not None and level not in allowed:
            levels.append(LevelResult(level, "forbidden", "forbidden by config"))
        elif pinned is not None and level not in (pinned, "float32"):
            levels.append(LevelResult(level, "skipped", f"config pins {pinned}"))
        elif level not in have:
            levels.append(LevelResult(
                level, "unavailable", f"CTranslate2 {ctranslate2.__version__} offers only "
                f"{', '.join(sorted(have))} on this CPU (loading {level} raises ValueError)"))
        else:
            lr = _validate(level, folder, threads, reps, timeout, cancel)
            levels.append(lr)
            if lr.result == "accepted":
                chosen = lr
    if chosen is None:
        raise QuantizeError(f"no whisper level of {folder} is usable, not even float32")
    res = ChainResult("whisper", folder, src_hash,
                      "ok (verified before load)" + ("" if why == "no cache" else f"; {why}"),
                      levels, chosen.level, folder, (folder / "model.bin").stat().st_size,
                      chosen.speed_ratio, chosen.agreement, manifest=_manifest(cache_dir))
    _write(cache_dir, res, allowed, pinned)
    return res


def _validate(level: str, folder: Path, threads: int, reps: int, timeout: float,
              cancel: threading.Event | None) -> LevelResult:
    ok, why, data = _probe(level, folder, threads, reps, timeout, cancel)
    if not ok:
        return LevelResult(level, "failed", why)
    texts, times = data["texts"], data["times"]
    if level == "float32":
        return LevelResult(level, "accepted", "the reference", speed_ratio=1.0, agreement=1.0)
    agree = word_agreement(texts[0], texts[1])
    speed = times[1] / times[0] if times[0] > 0 else None
    lr = LevelResult(level, "accepted", "", speed_ratio=speed, agreement=agree)
    if agree < MIN_WORD_AGREEMENT:
        lr.result = "failed"
        lr.reason = f"word agreement {agree:.3f} < {MIN_WORD_AGREEMENT} with float32"
    elif speed is not None and speed < 1 / MAX_SLOWDOWN:
        lr.result, lr.reason = "skipped", f"slower than float32 ({1 / speed:.2f}x the time)"
    else:
        lr.reason = (f"word agreement {agree:.3f} >= {MIN_WORD_AGREEMENT}, "
                     f"{speed or 0:.2f}x float32 speed")
    return lr


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.models.ct2_chain")
    p.add_argument("--probe", nargs=3, metavar=("LEVEL", "FOLDER", "OUT"), required=True)
    p.add_argument("--reference")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=2)
    a = p.parse_args(argv)
    level, folder, out = a.probe
    _run_probe(level, Path(folder), Path(out), a.reference, a.threads, a.reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
