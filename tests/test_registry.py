"""Whisper weights: assembled from the two packages, verified by SHA-256 before every load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.config import load_config
from engine.models.registry import (
    WHISPER_BASE_FILES,
    ModelError,
    assemble_whisper_base,
    diarization_paths,
    resolve_whisper,
    sha256_file,
)


def test_assembles_whisper_base_atomically_with_pinned_hashes(tmp_path: Path) -> None:
    folder = assemble_whisper_base(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == sorted(WHISPER_BASE_FILES)
    for name, (digest, size) in WHISPER_BASE_FILES.items():
        assert (folder / name).stat().st_size == size
        assert sha256_file(folder / name) == digest
    src = resolve_whisper("base", tmp_path, allow_download=False)
    assert src.verified and src.local and Path(src.model) == folder


@pytest.fixture
def whisper_copy(tmp_path: Path) -> Path:
    models = load_config().paths.models_dir
    assemble_whisper_base(models)
    shutil.copytree(models / "whisper-base", tmp_path / "whisper-base")
    return tmp_path


def test_a_flipped_byte_is_refused_naming_the_file(whisper_copy: Path) -> None:
    model = whisper_copy / "whisper-base" / "model.bin"
    with model.open("r+b") as fh:
        fh.seek(50_000_000)
        byte = fh.read(1)
        fh.seek(50_000_000)
        fh.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(ModelError, match=r"model\.bin fails its SHA-256 check"):
        resolve_whisper("base", whisper_copy, allow_download=False)


def test_a_truncated_file_is_refused(whisper_copy: Path) -> None:
    vocab = whisper_copy / "whisper-base" / "vocabulary.txt"
    vocab.write_bytes(vocab.read_bytes()[:-10])
    with pytest.raises(ModelError, match=r"vocabulary\.txt has"):
        resolve_whisper("base", whisper_copy, allow_download=False)


def test_a_hub_name_needs_explicit_permission(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="allow_download"):
        resolve_whisper("large-v3", tmp_path, allow_download=False)
    assert not resolve_whisper("large-v3", tmp_path, allow_download=True).local


def test_diarization_models_are_shipped_and_pinned() -> None:
    seg, emb = diarization_paths(load_config().paths.models_dir)
    assert seg.stat().st_size > 1_000_000 and emb.stat().st_size > 1_000_000


def test_tampered_diarization_model_is_refused(tmp_path: Path) -> None:
    src = load_config().paths.models_dir / "diarization"
    shutil.copytree(src, tmp_path / "diarization")
    with (tmp_path / "diarization" / "campplus.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelError, match=r"campplus\.onnx"):
        diarization_paths(tmp_path)
