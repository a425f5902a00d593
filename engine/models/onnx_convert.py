"""The ONNX side of the quantization chain: converters, checks and probes in a child process.

The generic chain (levels, cache, manifest, table) is `engine.models.quantize`; this module
is what it runs for the diarization ONNX models: onnxruntime's dynamic INT8 quantization, our
own FP16 conversion, `onnx.checker`, and a probe that loads and runs a converted model in a
*child process* (a crash there fails the level, not the app), compared with FP32 on fixed
probe inputs and timed against it.

``python -m engine.models.onnx_convert --probe KIND MODEL OUT.npz [--reference FP32]`` is the
child side.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.messages import SAMPLE_RATE
from engine.models.quantize import (
    MAX_PROB_DIFF,
    MAX_SLOWDOWN,
    MIN_COSINE,
    MIN_FRAME_AGREEMENT,
    PROBE_TIMEOUT_S,
    Converter,
    LevelResult,
    run_child,
)

SEG_WINDOW = 10 * SAMPLE_RATE  # the segmentation model's 10 s window
_QUANT_OPS = {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
              "QLinearConv", "QLinearMatMul", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul",
              "MatMulIntegerToFloat"}
_EXCLUDED_OPS = ("Conv", "Reshape", "Concat", "Split", "Transpose", "Gather", "Slice")


# --------------------------------------------------------------------------- probe inputs
def _voice(rng: np.random.Generator, n: int, f0: float) -> np.ndarray:
    """A crude voiced signal: harmonics of a wobbling f0 with a syllable-like envelope."""
    t = np.arange(n) / SAMPLE_RATE
    pitch = f0 * (1.0 + 0.05 * np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
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
        n = int(seconds * SAMPLE_RATE)
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
    """What a probe child reported: outputs of the level (and of FP32) and their best times."""

    ok: bool
    reason: str
    outputs: list[np.ndarray] = field(default_factory=list)
    ref_outputs: list[np.ndarray] = field(default_factory=list)
    time: float = 0.0
    ref_time: float = 0.0


def probe_in_child(kind: str, model: Path, reference: Path | None = None, reps: int = 3,
                   timeout: float = PROBE_TIMEOUT_S,
                   cancel: threading.Event | None = None) -> ProbeOutcome:
    """Run the probe in a fresh interpreter; a segfault or hang becomes a failed outcome."""
    with tempfile.TemporaryDirectory(prefix="tq-probe-") as tmp:
        out = Path(tmp) / "probe.npz"
        cmd = [sys.executable, "-m", "engine.models.onnx_convert", "--probe", kind, str(model),
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


def validate_level(kind: str, level: str, source: Path, target: Path, convert: Converter,
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


def main(argv: list[str] | None = None) -> int:
    """Child probe entry point (run by probe_in_child)."""
    p = argparse.ArgumentParser(prog="python -m engine.models.onnx_convert")
    p.add_argument("--probe", nargs=3, metavar=("KIND", "MODEL", "OUT"), required=True)
    p.add_argument("--reference", type=Path)
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args(argv)
    kind, model, out = a.probe
    _run_probe(kind, Path(model), Path(out), a.reference, a.reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
