"""Quantization fallback chain for the diarization ONNX models (issue 6).

Smaller/faster forms of a model are only worth using when they are proven correct on this
machine, and some failures are silent or fatal (see shared notes): an INT8 segmentation model
that fails ``onnx.checker`` still runs with drifting outputs, and an FP16 segmentation model
crashed onnxruntime with SIGSEGV. So each level is converted, checked, loaded and run in a
*child process* (a crash there fails the level, not the app), compared with FP32 on fixed
probe inputs, and timed against FP32. The first level that passes everything is used and
cached with a manifest; later calls reuse it after re-checking hashes, versions and the CPU.

This module is the generic chain (levels, results, cache, manifest, table, child processes),
shared with the whisper chain (`engine.models.ct2_chain`); the ONNX converters and probes are
`engine.models.onnx_convert`, which imports this module, so it is imported here only when a
chain is built. ``python -m engine.models.quantize MODELS_DIR CACHE_DIR`` prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from engine.fileio import PUBLIC, atomic_target, atomic_write_text, sha256_file

ModelKind = Literal["segmentation", "embedding"]
LEVELS: tuple[str, ...] = ("int8-conservative", "int8-simplified", "fp16", "fp32")
# Thresholds tuned on DER, not on the probe alone (measured on the pyannote sample, DER 5.21%
# with FP32): CAM++ FP16 has cosine 1.0000 and DER unchanged; CAM++ all-op INT8 has cosine
# 0.87. Every segmentation INT8 variant tried kept 0.998-1.0 probe frame agreement (0.976-1.0
# on real 10 s windows) yet moved DER by +1.7 to +6 points, with soft-output differences of
# 0.02-0.11. A 0.95 frame-agreement bar let those through, so segmentation must flip no frame
# of the probe and keep its class probabilities within MAX_PROB_DIFF.
MIN_COSINE = 0.99
MIN_FRAME_AGREEMENT = 0.999
MAX_PROB_DIFF = 0.02
# A level may be at most this much slower than FP32 (timings on a shared 2-core box are noisy).
MAX_SLOWDOWN = 1.2
PROBE_TIMEOUT_S = 120.0
CHILD_NICE = 10  # probes run below the workers: the app stays responsive meanwhile
MANIFEST_VERSION = 1


class QuantizeError(Exception):
    """The FP32 source itself cannot be used (the chain has nothing to fall back to)."""


class ChainCancelled(Exception):
    """The app stopped while a chain was being built; nothing was cached."""


@dataclass
class LevelResult:
    """Outcome of one level: result is accepted / failed / skipped / forbidden."""

    level: str
    result: str
    reason: str = ""
    size: int | None = None
    speed_ratio: float | None = None  # FP32 time / level time (>1 means faster)
    agreement: float | None = None  # min cosine (embedding) or frame agreement (segmentation)
    max_prob_diff: float | None = None  # segmentation: largest class-probability difference


@dataclass
class ChainResult:
    """What build_chain decided for one model, ready for format_table and the manifest."""

    model_kind: str
    source: Path
    source_sha256: str
    hash_status: str
    levels: list[LevelResult]
    in_use: str
    path: Path
    size: int
    speed_ratio: float | None
    agreement: float | None
    from_cache: bool = False
    manifest: Path | None = None  # the cache manifest written or read


# --------------------------------------------------------------------------- environment
def cpu_model() -> str:
    """CPU model string; a cached validation only holds on the CPU it was measured on."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def tool_versions() -> dict[str, str]:
    """Versions whose change invalidates a cached validation."""
    import onnx
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__}


# --------------------------------------------------------------------------- child processes
def run_child(cmd: list[str], timeout: float,
              cancel: threading.Event | None = None) -> tuple[bool, str]:
    """Run a probe interpreter at a low priority; (ok, why not). A crash, hang or cancel
    kills only the child."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=root,
                                preexec_fn=lambda: os.nice(CHILD_NICE))
        deadline = time.monotonic() + timeout
        while True:
            try:
                proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if cancel is not None and cancel.is_set():
                    proc.kill()
                    proc.wait()
                    return False, "cancelled"
                if time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    return False, f"probe timed out after {timeout:g} s (child killed)"
        if proc.returncode == 0:
            return True, ""
        if proc.returncode < 0:
            import signal

            try:
                sig = signal.Signals(-proc.returncode).name
            except ValueError:
                sig = str(-proc.returncode)
            return False, f"child crashed with {sig}"
        err.seek(0)
        tail = [ln for ln in err.read().decode(errors="replace").strip().splitlines()
                if ln.strip()]
        msg = tail[-1] if tail else f"exit code {proc.returncode}"
        return False, f"load/run failed in child: {msg[:300]}"



# A level's converter: (model kind, source, target) -> writes target (or nothing, for FP32).
Converter = Callable[[str, Path, Path], None]


# --------------------------------------------------------------------------- cache
def _manifest_path(cache_dir: Path, kind: str) -> Path:
    return cache_dir / f"{kind}.manifest.json"


def _artefact_path(cache_dir: Path, kind: str, level: str) -> Path:
    return cache_dir / f"{kind}.{level}.onnx"


def read_manifest(mpath: Path, version: int) -> tuple[dict[str, Any] | None, str]:
    """A cache manifest's content, or (None, why it cannot be used)."""
    if not mpath.is_file():
        return None, "no cache"
    try:
        man = json.loads(mpath.read_text())
    except (OSError, ValueError):
        return None, "cache manifest unreadable: rebuilt"
    if not isinstance(man, dict) or man.get("manifest_version") != version:
        return None, "cache manifest of another version: rebuilt"
    return man, ""


def _try_cache(kind: str, source: Path, cache_dir: Path, src_hash: str,
               allowed: set[str] | None, pinned: str | None) -> tuple[ChainResult | None, str]:
    """A ChainResult from a valid manifest, or (None, why the cache was not used)."""
    mpath = _manifest_path(cache_dir, kind)
    man, why = read_manifest(mpath, MANIFEST_VERSION)
    if man is None:
        return None, why
    if man.get("source_sha256") != src_hash:
        return None, "source changed since cache: rebuilt"
    if man.get("versions") != tool_versions():
        return None, "onnxruntime/onnx version changed: revalidated"
    if man.get("cpu") != cpu_model():
        return None, "CPU changed: revalidated"
    level: str = man.get("level", "")
    if allowed is not None and level not in allowed:
        return None, f"cached level {level} now forbidden: rebuilt"
    if pinned is not None and level != pinned:
        return None, f"cached level {level} is not the pinned {pinned}: rebuilt"
    if man.get("pinned") != pinned or man.get("allowed") != (
            sorted(allowed) if allowed is not None else None):
        return None, "config changed since cache: rebuilt"
    art = cache_dir / man["artefact"]
    if not art.is_file():
        return None, "cached artefact missing: rebuilt"
    if sha256_file(art) != man.get("artefact_sha256"):
        return None, "cached artefact fails its SHA-256 check (tampered): rebuilt"
    levels = [LevelResult(**lv) for lv in man["levels"]]
    chosen = next(lv for lv in levels if lv.level == level)
    return ChainResult(kind, source, src_hash, "", levels, level, art, art.stat().st_size,
                       chosen.speed_ratio, chosen.agreement, from_cache=True,
                       manifest=mpath), "cache ok"


def _write_manifest(cache_dir: Path, res: ChainResult, allowed: set[str] | None,
                    pinned: str | None) -> None:
    man = {
        "manifest_version": MANIFEST_VERSION,
        "model_kind": res.model_kind,
        "source": str(res.source),
        "source_sha256": res.source_sha256,
        "level": res.in_use,
        # FP32 is the source (absolute path, joined as such); others live beside the manifest.
        "artefact": str(res.path) if res.in_use == "fp32" else res.path.name,
        "artefact_sha256": sha256_file(res.path),
        "versions": tool_versions(),
        "cpu": cpu_model(),
        "pinned": pinned,
        "allowed": sorted(allowed) if allowed is not None else None,
        "levels": [asdict(lv) for lv in res.levels],
        "thresholds": {"min_cosine": MIN_COSINE, "min_frame_agreement": MIN_FRAME_AGREEMENT,
                       "max_prob_diff": MAX_PROB_DIFF, "max_slowdown": MAX_SLOWDOWN},
    }
    atomic_write_text(_manifest_path(cache_dir, res.model_kind), json.dumps(man, indent=2),
                      mode=PUBLIC)


# --------------------------------------------------------------------------- the chain
def build_chain(
    model_kind: ModelKind,
    source: Path,
    cache_dir: Path,
    allowed: set[str] | None = None,
    pinned: str | None = None,
    *,
    expected_sha256: str | None = None,
    converters: Mapping[str, Converter] | None = None,
    timeout: float = PROBE_TIMEOUT_S,
    reps: int = 3,
    cancel: threading.Event | None = None,
) -> ChainResult:
    """Pick the first level that converts, passes the checker, runs in a child, agrees with
    FP32 and is not slower; reuse a cached pick when its hashes, versions and CPU still match.

    `converters` overrides level converters (tests use it to feed deliberately broken files).
    FP32 is always allowed as the last resort: forbidding it would leave nothing to run.
    Artefacts are written under a temporary name and renamed once accepted, and the manifest
    last, so a kill mid-build never leaves a manifest naming a half-written file.
    `cancel` (an Event) stops the build between steps and kills a running probe.
    """
    source = Path(source)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if pinned is not None and pinned not in LEVELS:
        raise ValueError(f"unknown level {pinned!r}; known: {', '.join(LEVELS)}")
    src_hash = sha256_file(source)
    if expected_sha256 is None:
        hash_status = "not pinned"
    elif src_hash == expected_sha256:
        hash_status = "ok (matches pinned sha256)"
    else:
        raise QuantizeError(f"{source} fails its SHA-256 check (got {src_hash[:12]}…)")

    cached, why = _try_cache(model_kind, source, cache_dir, src_hash, allowed, pinned)
    if cached is not None:
        cached.hash_status = hash_status + "; cached artefact hash ok"
        return cached
    from engine.models import onnx_convert  # it imports this module: not at the top

    conv = dict(onnx_convert.CONVERTERS)
    conv.update(converters or {})

    ref = onnx_convert.probe_in_child(model_kind, source, reference=None, reps=1,
                                      timeout=timeout, cancel=cancel)
    _check_cancel(cancel)
    if not ref.ok:
        raise QuantizeError(f"FP32 source {source} does not run: {ref.reason}")

    levels: list[LevelResult] = []
    chosen: LevelResult | None = None
    chosen_path: Path | None = None
    for level in LEVELS:
        if chosen is not None:
            levels.append(LevelResult(level, "skipped", f"{chosen.level} already accepted"))
            continue
        if level != "fp32" and allowed is not None and level not in allowed:
            levels.append(LevelResult(level, "forbidden", "forbidden by config"))
            continue
        if pinned is not None and level not in (pinned, "fp32"):
            levels.append(LevelResult(level, "skipped", f"config pins {pinned}"))
            continue
        # FP32 is the source itself (nothing written); other levels are written under a
        # temporary name and renamed only once accepted
        path = source if level == "fp32" else _artefact_path(cache_dir, model_kind, level)
        with (nullcontext(source) if path == source
              else atomic_target(path, mode=PUBLIC)) as target:
            lr = onnx_convert.validate_level(model_kind, level, source, target, conv[level],
                                             timeout, reps, cancel)
            _check_cancel(cancel)
            if lr.result != "accepted" and target != source:
                target.unlink(missing_ok=True)
        levels.append(lr)
        if lr.result == "accepted":
            chosen, chosen_path = lr, path
    if chosen is None or chosen_path is None:
        raise QuantizeError(f"no level of {source} is usable, not even FP32")
    res = ChainResult(model_kind, source, src_hash,
                      hash_status + ("" if why == "no cache" else f"; {why}"), levels,
                      chosen.level, chosen_path, chosen_path.stat().st_size, chosen.speed_ratio,
                      chosen.agreement, manifest=_manifest_path(cache_dir, model_kind))
    _write_manifest(cache_dir, res, allowed, pinned)
    return res


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise ChainCancelled("quantization chain cancelled")


# --------------------------------------------------------------------------- console table
def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_table(results: Iterable[ChainResult]) -> str:
    """Human-readable table for `transcrevai models`: what was tried, why, and what runs."""
    lines: list[str] = []
    for r in results:
        lines.append(f"{r.model_kind}: {r.source}")
        lines.append(f"  sha256 {r.source_sha256[:16]}…  hash: {r.hash_status}")
        lines.append(f"  {'level':<18} {'result':<10} {'size':>10} {'speed':>7} {'agree':>7}  "
                     "reason")
        for lv in r.levels:
            size = "-" if lv.size is None else f"{lv.size / 1e6:.2f} MB"
            lines.append(f"  {lv.level:<18} {lv.result:<10} {size:>10} "
                         f"{_fmt(lv.speed_ratio, '.2f'):>7} {_fmt(lv.agreement, '.4f'):>7}  "
                         f"{lv.reason}")
        lines.append(f"  in use: {r.in_use} ({r.size / 1e6:.2f} MB, "
                     f"{_fmt(r.speed_ratio, '.2f')}x FP32 speed, agreement "
                     f"{_fmt(r.agreement, '.4f')}){' [from cache]' if r.from_cache else ''}"
                     f"  -> {r.path}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Build both diarization chains and print the table."""
    p = argparse.ArgumentParser(prog="python -m engine.models.quantize")
    p.add_argument("models_dir", type=Path)
    p.add_argument("cache_dir", type=Path)
    a = p.parse_args(argv)
    from engine.models.registry import DIARIZATION_FILES, diarization_paths

    seg, emb = diarization_paths(a.models_dir)
    res = [build_chain("segmentation", seg, a.cache_dir,
                       expected_sha256=DIARIZATION_FILES[seg.name][0]),
           build_chain("embedding", emb, a.cache_dir,
                       expected_sha256=DIARIZATION_FILES[emb.name][0])]
    print(format_table(res), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
