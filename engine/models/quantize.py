"""Quantization fallback chain for the diarization ONNX models (issue 6).

Smaller/faster forms of a model are only worth using when they are proven correct on this
machine, and some failures are silent or fatal (see shared notes): an INT8 segmentation model
that fails ``onnx.checker`` still runs with drifting outputs, and an FP16 segmentation model
crashed onnxruntime with SIGSEGV. So each level is converted, checked, loaded and run in a
*child process* (a crash there fails the level, not the app), compared with FP32 on fixed
probe inputs, and timed against FP32. The first level that passes everything is used and
cached with a manifest; later calls reuse it after re-checking hashes, versions and the CPU.

Run ``python -m engine.models.quantize --probe KIND MODEL OUT.npz [--reference FP32]`` is the
child side; ``python -m engine.models.quantize MODELS_DIR CACHE_DIR`` prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

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
SEG_WINDOW = 160000  # 10 s at 16 kHz
_QUANT_OPS = {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
              "QLinearConv", "QLinearMatMul", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul",
              "MatMulIntegerToFloat"}
_EXCLUDED_OPS = ("Conv", "Reshape", "Concat", "Split", "Transpose", "Gather", "Slice")
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


# --------------------------------------------------------------------------- probe inputs
def _voice(rng: np.random.Generator, n: int, f0: float) -> np.ndarray:
    """A crude voiced signal: harmonics of a wobbling f0 with a syllable-like envelope."""
    t = np.arange(n) / 16000.0
    pitch = f0 * (1.0 + 0.05 * np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(pitch) / 16000.0
    sig = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = 0.5 * (1 + np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)))
    return np.asarray(sig * env, dtype=np.float64)


def probe_inputs(kind: str) -> list[np.ndarray]:
    """Fixed, deterministic inputs (seeded), so FP32 and every level see the same data."""
    rng = np.random.default_rng(20240606)
    if kind == "segmentation":
        n = SEG_WINDOW
        wav = 0.01 * rng.standard_normal(n)
        a, b = _voice(rng, n, 120.0), _voice(rng, n, 210.0)
        wav[: n // 2] += 0.3 * a[: n // 2]  # speaker A, then both, then B, then silence
        wav[n // 3 : 5 * n // 6] += 0.3 * b[n // 3 : 5 * n // 6]
        return [wav.astype(np.float32)[None, None, :]]
    from engine.diarization.features import fbank

    out = []
    for seconds, f0 in ((1.5, 110.0), (3.0, 180.0), (2.0, 240.0)):
        n = int(seconds * 16000)
        wav = 0.3 * _voice(rng, n, f0) + 0.01 * rng.standard_normal(n)
        feats = fbank(wav.astype(np.float32))
        feats = feats - feats.mean(axis=0, keepdims=True)
        out.append(feats[None].astype(np.float32))
    return out


# --------------------------------------------------------------------------- child side
def _run_probe(kind: str, model: Path, out: Path, reference: Path | None, reps: int) -> None:
    """Child process: load, run the probes, time interleaved with FP32, save to npz."""
    from engine.diarization.pipeline import _session

    inputs = probe_inputs(kind)
    sessions = [_session(model, 1)]
    if reference is not None:
        sessions.append(_session(reference, 1))
    names = [s.get_inputs()[0].name for s in sessions]
    results: dict[str, np.ndarray] = {}
    times: list[list[float]] = [[] for _ in sessions]
    for rep in range(reps + 1):  # rep 0 is a warm-up
        for si, (sess, name) in enumerate(zip(sessions, names, strict=True)):
            start = time.perf_counter()
            outs = [sess.run(None, {name: x})[0] for x in inputs]
            if rep:
                times[si].append(time.perf_counter() - start)
            if rep == 0:
                for i, o in enumerate(outs):
                    results[f"out{si}_{i}"] = np.asarray(o, dtype=np.float32)
    # the fastest run: other load on the machine only ever adds time, so the minimum of
    # interleaved runs compares the levels themselves (medians flipped verdicts under load)
    results["time"] = np.array([float(np.min(t)) if t else 0.0 for t in times])
    np.savez(out, **results)  # type: ignore[arg-type]


@dataclass
class ProbeOutcome:
    ok: bool
    reason: str
    outputs: list[np.ndarray] = field(default_factory=list)
    ref_outputs: list[np.ndarray] = field(default_factory=list)
    time: float = 0.0
    ref_time: float = 0.0


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


def probe_in_child(kind: str, model: Path, reference: Path | None = None, reps: int = 3,
                   timeout: float = PROBE_TIMEOUT_S,
                   cancel: threading.Event | None = None) -> ProbeOutcome:
    """Run the probe in a fresh interpreter; a segfault or hang becomes a failed outcome."""
    with tempfile.TemporaryDirectory(prefix="tq-probe-") as tmp:
        out = Path(tmp) / "probe.npz"
        cmd = [sys.executable, "-m", "engine.models.quantize", "--probe", kind, str(model),
               str(out), "--reps", str(reps)]
        if reference is not None:
            cmd += ["--reference", str(reference)]
        ok, why = run_child(cmd, timeout, cancel)
        if not ok:
            return ProbeOutcome(False, why.replace("child crashed", "onnxruntime child crashed"))
        data = np.load(out)
        n_in = len(probe_inputs(kind))
        outs = [data[f"out0_{i}"] for i in range(n_in)]
        refs = [data[f"out1_{i}"] for i in range(n_in)] if reference is not None else []
        t = data["time"]
        return ProbeOutcome(True, "", outs, refs, float(t[0]),
                            float(t[1]) if len(t) > 1 else 0.0)


def agreement(kind: str, outputs: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """Min cosine over probes (embedding) or frame argmax agreement (segmentation)."""
    if kind == "embedding":
        cos = []
        for a, b in zip(outputs, reference, strict=True):
            a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
            cos.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)))
        return min(cos)
    agree = [float(np.mean(a.argmax(-1) == b.argmax(-1)))
             for a, b in zip(outputs, reference, strict=True)]
    return min(agree)


# --------------------------------------------------------------------------- converters
def _quantized_nodes(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sum(1 for n in model.graph.node if n.op_type in _QUANT_OPS)


def convert_int8_conservative(kind: str, source: Path, target: Path) -> None:
    """Dynamic INT8 of MatMul/Gemm only: the smallest change, first to try."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(source))
    excluded = [n.name for n in model.graph.node if n.op_type in _EXCLUDED_OPS and n.name]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" advice is level 2's job
    try:
        quantize_dynamic(str(source), str(target), op_types_to_quantize=["MatMul", "Gemm"],
                         nodes_to_exclude=excluded, reduce_range=True,
                         weight_type=QuantType.QInt8,
                         extra_options={"WeightSymmetric": True, "MatMulConstBOnly": True})
    finally:
        root.setLevel(level)


def _pre_process(source: Path, target: Path) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(target), skip_symbolic_shape=False)
    except Exception:  # noqa: BLE001 - CAM++ needs skip_symbolic_shape (measured)
        quant_pre_process(str(source), str(target), skip_symbolic_shape=True)


def convert_int8_simplified(kind: str, source: Path, target: Path) -> None:
    """quant_pre_process (fixes the topological order the checker rejects) + all-op QUInt8.

    All ops rather than MatMul only: MatMul-only leaves CAM++ (225 Conv, no MatMul)
    untouched and gave segmentation less speed (measured, see report).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    pre = target.with_suffix(".pre.onnx")
    try:
        _pre_process(source, pre)
        quantize_dynamic(str(pre), str(target), weight_type=QuantType.QUInt8)
    finally:
        pre.unlink(missing_ok=True)


def convert_fp16(kind: str, source: Path, target: Path) -> None:
    """FP16 weights and compute with FP32 graph inputs/outputs (Cast at the edges).

    onnxconverter-common is not a dependency here, so this is a small converter of our own:
    every float tensor (initializers, Constant values, Cast targets, subgraph outputs) becomes
    float16, and casts are put after each float input and before each float output.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    f32, f16 = TensorProto.FLOAT, TensorProto.FLOAT16

    def half(t: onnx.TensorProto) -> onnx.TensorProto:
        arr = numpy_helper.to_array(t)
        arr = np.clip(arr, -65504.0, 65504.0).astype(np.float16)
        return numpy_helper.from_array(arr, t.name)

    def walk(graph: onnx.GraphProto, top: bool) -> None:
        for i, init in enumerate(graph.initializer):
            if init.data_type == f32:
                graph.initializer[i].CopyFrom(half(init))
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == f32:
                    attr.t.CopyFrom(half(attr.t))
                elif attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g, False)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for g in attr.graphs:
                        walk(g, False)
                if node.op_type == "Cast" and attr.name == "to" and attr.i == f32:
                    attr.i = f16
        del graph.value_info[:]
        if not top:
            for out in graph.output:
                if out.type.tensor_type.elem_type == f32:
                    out.type.tensor_type.elem_type = f16

    walk(model.graph, True)
    g = model.graph
    renames: dict[str, str] = {}
    casts_in = []
    for inp in g.input:
        if inp.type.tensor_type.elem_type == f32:
            renames[inp.name] = inp.name + "__fp16"
            casts_in.append(helper.make_node("Cast", [inp.name], [renames[inp.name]], to=f16,
                                             name=inp.name + "__cast_in"))

    def rename_inputs(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            for k, name in enumerate(node.input):
                if name in renames:
                    node.input[k] = renames[name]
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    rename_inputs(attr.g)

    rename_inputs(g)
    casts_out = []
    for out in g.output:
        if out.type.tensor_type.elem_type == f32:
            inner = out.name + "__fp16"
            for node in g.node:
                for k, name in enumerate(node.output):
                    if name == out.name:
                        node.output[k] = inner
            casts_out.append(helper.make_node("Cast", [inner], [out.name], to=f32,
                                              name=out.name + "__cast_out"))
    nodes = casts_in + list(g.node) + casts_out
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(model, str(target))


def _keep(kind: str, source: Path, target: Path) -> None:
    """FP32 is the source itself: nothing to convert, and no copy is cached."""


Converter = Callable[[str, Path, Path], None]
CONVERTERS: dict[str, Converter] = {
    "int8-conservative": convert_int8_conservative,
    "int8-simplified": convert_int8_simplified,
    "fp16": convert_fp16,
    "fp32": _keep,
}


def _did_something(level: str, path: Path) -> str | None:
    """None if the level changed the model, else why it is pointless."""
    if level.startswith("int8") and _quantized_nodes(path) == 0:
        return "quantized nothing (0 QuantizeLinear/MatMulInteger/ConvInteger nodes)"
    if level == "fp16":
        import onnx

        m = onnx.load(str(path))
        if not any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer):
            return "converted nothing to float16"
    return None


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
    conv = dict(CONVERTERS)
    conv.update(converters or {})

    ref = probe_in_child(model_kind, source, reference=None, reps=1, timeout=timeout,
                         cancel=cancel)
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
        if level == "fp32":  # the source itself: nothing written, nothing to rename
            lr = _validate_level(model_kind, level, source, source, conv[level], timeout, reps,
                                 cancel)
            _check_cancel(cancel)
            path = source
        else:  # written under a temporary name, renamed only once accepted
            path = _artefact_path(cache_dir, model_kind, level)
            with atomic_target(path, mode=PUBLIC) as target:
                lr = _validate_level(model_kind, level, source, target, conv[level], timeout,
                                     reps, cancel)
                _check_cancel(cancel)
                if lr.result != "accepted":
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


def _validate_level(kind: str, level: str, source: Path, target: Path, convert: Converter,
                    timeout: float, reps: int,
                    cancel: threading.Event | None = None) -> LevelResult:
    """Convert, check, probe in a child, compare with FP32 and time one level."""
    import onnx

    try:
        convert(kind, source, target)
    except Exception as exc:  # noqa: BLE001 - any converter error fails just this level
        return LevelResult(level, "failed", f"conversion failed: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200] if str(exc) else ''}")
    size = target.stat().st_size
    try:
        onnx.checker.check_model(str(target))  # path form: works beyond 2 GB
    except Exception as exc:  # noqa: BLE001 - checker raises several types
        first = " ".join(str(exc).split())[:300]
        return LevelResult(level, "failed", f"onnx.checker: {type(exc).__name__}: {first}",
                           size=size)
    if level != "fp32":
        try:
            pointless = _did_something(level, target)
        except Exception as exc:  # noqa: BLE001
            pointless = f"cannot inspect: {exc}"
        if pointless:
            return LevelResult(level, "skipped", pointless, size=size)
    out = probe_in_child(kind, target, reference=source, reps=reps, timeout=timeout,
                         cancel=cancel)
    if not out.ok:
        return LevelResult(level, "failed", out.reason, size=size)
    agree = agreement(kind, out.outputs, out.ref_outputs)
    speed = out.ref_time / out.time if out.time > 0 else None
    lr = LevelResult(level, "accepted", "", size=size, speed_ratio=speed, agreement=agree)
    limit = MIN_COSINE if kind == "embedding" else MIN_FRAME_AGREEMENT
    metric = "min cosine" if kind == "embedding" else "frame agreement"
    diff_txt = ""
    if kind == "segmentation":
        lr.max_prob_diff = max(float(np.abs(np.exp(a) - np.exp(b)).max())
                               for a, b in zip(out.outputs, out.ref_outputs, strict=True))
        diff_txt = f", prob diff {lr.max_prob_diff:.3f}"
    if agree < limit:
        lr.result, lr.reason = "failed", f"{metric} {agree:.4f} < {limit}{diff_txt}"
    elif lr.max_prob_diff is not None and lr.max_prob_diff > MAX_PROB_DIFF:
        lr.result = "failed"
        lr.reason = f"class probabilities differ by {lr.max_prob_diff:.3f} > {MAX_PROB_DIFF}"
    elif level != "fp32" and speed is not None and speed < 1 / MAX_SLOWDOWN:
        lr.result, lr.reason = "skipped", f"slower than FP32 ({1 / speed:.2f}x the time)"
    else:
        lr.reason = f"{metric} {agree:.4f} >= {limit}{diff_txt}, {speed or 0:.2f}x FP32 speed"
    return lr


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
    """Child probe entry point, or build both chains and print the table."""
    p = argparse.ArgumentParser(prog="python -m engine.models.quantize")
    p.add_argument("--probe", nargs=3, metavar=("KIND", "MODEL", "OUT"))
    p.add_argument("--reference", type=Path)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("models_dir", nargs="?", type=Path)
    p.add_argument("cache_dir", nargs="?", type=Path)
    a = p.parse_args(argv)
    if a.probe:
        kind, model, out = a.probe
        _run_probe(kind, Path(model), Path(out), a.reference, a.reps)
        return 0
    if a.models_dir is None or a.cache_dir is None:
        p.error("give MODELS_DIR and CACHE_DIR (or --probe)")
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
