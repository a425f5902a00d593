"""Reading audio files as a stream of 16 kHz mono float32 blocks.

Files are read block by block (never whole), downmixed and resampled on the fly, so an
hours-long recording costs the same memory as a short one. Every failure becomes an
`AudioFileError` with one line a user can act on.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from engine.audio.paths import AudioFileError, check_file
from engine.messages import SAMPLE_RATE

__all__ = ["AudioFileError", "AudioInfo", "probe", "read_audio", "read_blocks"]


@dataclass(frozen=True)
class AudioInfo:
    path: Path
    frames: int
    sample_rate: int
    channels: int
    format: str
    subtype: str
    truncated: bool  # the header promises more audio than the file holds

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _wav_declared_data_bytes(path: Path) -> tuple[int, int] | None:
    """(declared data bytes, bytes actually present) of a RIFF/WAVE file, else None."""
    try:
        with path.open("rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            size = os.fstat(fh.fileno()).st_size
            while True:
                hdr = fh.read(8)
                if len(hdr) < 8:
                    return None
                cid, clen = hdr[:4], struct.unpack("<I", hdr[4:])[0]
                if cid == b"data":
                    # 0 and 0xFFFFFFFF mean "unknown length" (streamed writers)
                    if clen in (0, 0xFFFFFFFF):
                        return None
                    return clen, size - fh.tell()
                fh.seek(clen + (clen & 1), 1)
    except OSError:
        return None


def probe(path: str | os.PathLike[str]) -> AudioInfo:
    """Check that `path` is a readable audio file with at least one frame."""
    p = check_file(path)
    try:
        info = sf.info(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioFileError(f"{p}: not a readable audio file ({_short(exc)})") from None
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioFileError(f"{p}: invalid audio header")
    if info.frames <= 0:
        raise AudioFileError(f"{p}: contains no audio")
    truncated = False
    declared = _wav_declared_data_bytes(p)
    if declared is not None:
        want, have = declared
        truncated = have < want
    return AudioInfo(p, int(info.frames), int(info.samplerate), int(info.channels),
                     str(info.format), str(info.subtype), truncated)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read_blocks(info: AudioInfo, block_samples: int,
                start_sample: int = 0) -> Iterator[np.ndarray]:
    """Yield 16 kHz mono float32 blocks of exactly `block_samples` (the last may be shorter),
    from `start_sample` (16 kHz) on: a replay seeked mid-way.

    Raises AudioFileError if decoding fails part-way; blocks yielded before stay valid.
    """
    resampler = (soxr.ResampleStream(info.sample_rate, SAMPLE_RATE, 1, dtype="float32",
                                     quality="HQ")
                 if info.sample_rate != SAMPLE_RATE else None)
    pending: list[np.ndarray] = []
    pending_len = 0
    in_block = max(1024, int(block_samples * info.sample_rate / SAMPLE_RATE))

    def emit(out: np.ndarray) -> Iterator[np.ndarray]:
        nonlocal pending, pending_len
        if len(out):
            pending.append(out)
            pending_len += len(out)
        while pending_len >= block_samples:
            buf = np.concatenate(pending)
            yield np.ascontiguousarray(buf[:block_samples])
            rest = buf[block_samples:]
            pending, pending_len = ([rest], len(rest)) if len(rest) else ([], 0)

    try:
        with sf.SoundFile(str(info.path)) as fh:
            if start_sample > 0:
                fh.seek(min(int(round(start_sample * info.sample_rate / SAMPLE_RATE)),
                            max(fh.frames, 0)))
            for block in fh.blocks(blocksize=in_block, dtype="float32", always_2d=True):
                mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
                mono = np.nan_to_num(mono, nan=0.0, posinf=1.0, neginf=-1.0)
                if resampler is not None:
                    mono = resampler.resample_chunk(mono, last=False)
                yield from emit(mono.astype(np.float32, copy=False))
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioFileError(f"{info.path}: decoding failed part-way ({_short(exc)})") from None
    if resampler is not None:
        yield from emit(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    if pending_len:
        yield np.concatenate(pending).astype(np.float32, copy=False)


def truncated_message(info: AudioInfo, samples: int) -> str:
    """What a user is told about a file whose header promises more than it holds."""
    return (f"{info.path}: file is truncated (the header promises more audio than it holds); "
            f"transcribed the {samples / SAMPLE_RATE:.1f} s present")


def read_audio(path: str | os.PathLike[str], block_s: float = 10.0) -> np.ndarray:
    """A whole (short) file as 16 kHz mono float32, through the same reader as the engine.

    For tests, benchmarks and model probes; the engine itself streams blocks."""
    info = probe(path)
    blocks = list(read_blocks(info, max(1, int(block_s * SAMPLE_RATE))))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
