"""Reading audio files: any rate/depth/channels works, bad files fail with one clear line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.audio.source import AudioFileError, probe, read_blocks
from tests.conftest import clip_path


def _tone(sr: int, seconds: float, channels: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    mono = 0.3 * np.sin(2 * np.pi * freq * t)
    return np.stack([mono] * channels, axis=1).astype(np.float32)


def _dominant_hz(x: np.ndarray, sr: int = 16000) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)])


@pytest.mark.parametrize(("sr", "channels", "fmt", "subtype"), [
    (44100, 2, "WAV", "PCM_24"),
    (8000, 1, "WAV", "PCM_U8"),
    (48000, 6, "WAV", "FLOAT"),
    (96000, 1, "WAV", "PCM_32"),
    (22050, 2, "FLAC", "PCM_16"),
    (16000, 1, "OGG", "VORBIS"),
])
def test_any_format_is_resampled_to_16k_mono(tmp_path: Path, sr: int, channels: int, fmt: str,
                                            subtype: str) -> None:
    path = tmp_path / f"tone.{fmt.lower()}"
    sf.write(path, _tone(sr, 2.5, channels), sr, format=fmt, subtype=subtype)
    info = probe(path)
    assert (info.sample_rate, info.channels) == (sr, channels)
    blocks = list(read_blocks(info, 4000))
    assert all(len(b) == 4000 for b in blocks[:-1]) and 0 < len(blocks[-1]) <= 4000
    audio = np.concatenate(blocks)
    assert audio.dtype == np.float32
    assert abs(len(audio) - 2.5 * 16000) <= 64
    assert abs(_dominant_hz(audio) - 440.0) < 5.0


def test_real_clip_reads_unchanged_at_16k() -> None:
    path = clip_path("ptbr_fleurs_000")
    ref, sr = sf.read(path, dtype="float32")
    assert sr == 16000
    audio = np.concatenate(list(read_blocks(probe(path), 16000)))
    np.testing.assert_array_equal(audio, ref)


def _wav_bytes(tmp_path: Path, seconds: float = 1.0) -> bytes:
    path = tmp_path / "ok.wav"
    sf.write(path, _tone(16000, seconds, 1), 16000, subtype="PCM_16")
    return path.read_bytes()


@pytest.mark.parametrize(("name", "make", "needle"), [
    ("missing.wav", None, "no such file"),
    ("folder.wav", "dir", "directory"),
    ("empty.wav", b"", "empty file"),
    ("notes.wav", "Este arquivo é texto, não áudio.\n".encode() * 20, "not a readable audio"),
    ("noise.wav", bytes(range(256)) * 40, "not a readable audio"),
])
def test_bad_files_raise_one_line(tmp_path: Path, name: str, make: object, needle: str) -> None:
    path = tmp_path / name
    if make == "dir":
        path.mkdir()
    elif isinstance(make, bytes):
        path.write_bytes(make)
    with pytest.raises(AudioFileError) as err:
        probe(path)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert str(path) in str(err.value)


def test_zero_length_wav_has_no_audio(tmp_path: Path) -> None:
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(AudioFileError, match="contains no audio"):
        probe(path)


def test_truncated_wav_is_flagged_and_what_is_there_is_read(tmp_path: Path) -> None:
    whole = _wav_bytes(tmp_path, 2.0)
    path = tmp_path / "cut.wav"
    path.write_bytes(whole[: len(whole) // 2])
    info = probe(path)
    assert info.truncated
    got = sum(len(b) for b in read_blocks(info, 16000))
    assert 0.9 * 16000 <= got <= 1.05 * 16000
    assert not probe(tmp_path / "ok.wav").truncated


def test_reading_from_a_sample_gives_the_rest_of_the_file() -> None:
    """A replay seeked mid-way reads the file from there (16 kHz sample index)."""
    path = clip_path("ptbr_fleurs_000")
    ref, _ = sf.read(path, dtype="float32")
    audio = np.concatenate(list(read_blocks(probe(path), 4000, start_sample=80_000)))
    np.testing.assert_array_equal(audio, ref[80_000:])
