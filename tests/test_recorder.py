"""The live-session WAV recorder: real files, real child processes killed with SIGKILL, a
real full disk (a tiny tmpfs, when we may mount) and a real file size limit (RLIMIT_FSIZE)."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.audio.recorder import (
    RecorderError,
    WavRecorder,
    repair_recordings,
    repair_wav,
    session_wav_path,
)
from tests.conftest import skip_or_fail_in_ci

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000


def pattern(start: int, n: int) -> np.ndarray:
    """Audio whose every sample says where it is, so a prefix can be checked exactly."""
    idx = np.arange(start, start + n)
    return (np.sin(idx * 0.0137) * 0.5 + ((idx % 7) - 3) * 0.01).astype(np.float32)


def as_int16(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x, -1, 1) * 32767).astype(np.int16)


def read_int16(path: Path) -> np.ndarray:
    data, rate = sf.read(str(path), dtype="int16")
    assert rate == RATE
    return data


def test_blocks_read_back_equal(tmp_path: Path) -> None:
    path = tmp_path / "rec.wav"
    rng = np.random.default_rng(1)
    written = []
    with WavRecorder(path) as rec:
        pos = 0
        for n in (1600, 1, 777, 16000, 3):
            block = pattern(pos, n)
            rec.write(block)
            written.append(block)
            pos += n
            # the header is true after every write: readable at any moment
            assert sf.info(str(path)).frames == rec.frames == pos
        loud = rng.uniform(-3, 3, 500).astype(np.float32)
        loud[:3] = [np.nan, np.inf, -np.inf]
        rec.write(loud)
        written.append(np.nan_to_num(loud, nan=0.0, posinf=1.0, neginf=-1.0))
    expect = np.concatenate(written)
    got = read_int16(path)
    assert np.array_equal(got, as_int16(expect))
    info = sf.info(str(path))
    assert (info.channels, info.subtype) == (1, "PCM_16")
    floats, _ = sf.read(str(path), dtype="float32")
    assert np.max(np.abs(floats - np.clip(expect, -1, 1))) <= 1.5 / 32767


def test_refuses_to_overwrite_and_names_sessions(tmp_path: Path) -> None:
    now = datetime(2026, 11, 25, 18, 49, 17)
    first = session_wav_path(tmp_path / "recordings", now)
    assert first == tmp_path / "recordings" / "2026-11-25_18-49-17.wav"
    WavRecorder(first, claimed=True).close()
    second = session_wav_path(tmp_path / "recordings", now)
    assert second.name == "2026-11-25_18-49-17-2.wav"
    WavRecorder(second, claimed=True).close()
    assert session_wav_path(tmp_path / "recordings", now).name == "2026-11-25_18-49-17-3.wav"
    for kwargs in ({}, {"claimed": True}):  # a recording with audio in it is never reused
        with pytest.raises(RecorderError, match="already exists") as err:
            WavRecorder(first, **kwargs)  # type: ignore[arg-type]
        assert "\n" not in str(err.value)


def _claim_names(args: tuple[str, float]) -> tuple[str, str]:
    """One 'console': a recording name and a replay session id, claimed at `at`."""
    from engine.sessions import new_session_id

    folder, at = args
    while time.time() < at:
        pass
    now = datetime(2026, 12, 2, 18, 0, 0)  # the same second for every process
    return (session_wav_path(folder, now).name, new_session_id(Path(folder), "demo"))


def test_consoles_started_in_the_same_second_get_different_files(tmp_path: Path) -> None:
    """Six processes claim a recording name and a session id at the same instant: all
    different, so two consoles never write into each other's WAV or journal."""
    import multiprocessing as mp

    at = time.time() + 3.0
    with mp.get_context("spawn").Pool(6) as pool:
        names = pool.map(_claim_names, [(str(tmp_path), at)] * 6)
    wavs, ids = [n[0] for n in names], [n[1] for n in names]
    assert len(set(wavs)) == 6 and len(set(ids)) == 6, names


def test_non_ascii_file_name(tmp_path: Path) -> None:
    path = tmp_path / "sessões" / "reunião çãé 日本語.wav"
    with WavRecorder(path) as rec:
        rec.write(pattern(0, 4000))
    assert np.array_equal(read_int16(path), as_int16(pattern(0, 4000)))
    with WavRecorder.append(path) as rec:
        rec.write(pattern(4000, 4000))
    assert np.array_equal(read_int16(path), as_int16(pattern(0, 8000)))


CHILD_WRITER = r"""
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
from engine.audio.recorder import WavRecorder
from tests.test_recorder import pattern
rec = WavRecorder(sys.argv[2], header_every_s=float(sys.argv[3]), fsync_every_s=None)
pos = 0
while True:
    rec.write(pattern(pos, 1600))
    pos += 1600
    print(pos, flush=True)   # reported only after write() returned
"""


@pytest.mark.parametrize("header_every_s", [0.0, 0.5])
def test_sigkill_mid_stream_leaves_valid_wav(tmp_path: Path, header_every_s: float) -> None:
    path = tmp_path / "killed.wav"
    proc = subprocess.Popen([sys.executable, "-c", CHILD_WRITER, str(ROOT), str(path),
                             str(header_every_s)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    reported = 0
    deadline = time.monotonic() + 30
    while reported < 5 * RATE and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        reported = int(line)
    os.kill(proc.pid, signal.SIGKILL)  # while it keeps writing
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert reported >= 5 * RATE

    # valid as it is, before any repair, and missing at most header_every_s + one block
    got = read_int16(path)
    assert len(got) >= reported - header_every_s * RATE - 1600
    assert np.array_equal(got, as_int16(pattern(0, len(got))))

    frames = repair_wav(path)
    after = read_int16(path)
    assert len(after) >= reported and len(after) >= len(got)
    assert frames in (None, len(after))
    assert np.array_equal(after, as_int16(pattern(0, len(after))))
    assert repair_wav(path) is None  # repaired once is repaired


def _write_closed(path: Path, n: int) -> None:
    with WavRecorder(path) as rec:
        rec.write(pattern(0, n))


def _set_sizes(path: Path, riff: int, data: int) -> None:
    with path.open("r+b") as fh:
        fh.seek(4)
        fh.write(struct.pack("<I", riff))
        fh.seek(40)
        fh.write(struct.pack("<I", data))


def test_repair_hand_corrupted_headers(tmp_path: Path) -> None:
    n = 9000
    good = tmp_path / "good.wav"
    _write_closed(good, n)
    assert repair_wav(good) is None

    zero = tmp_path / "zero.wav"  # killed before the first header update
    _write_closed(zero, n)
    _set_sizes(zero, 36, 0)
    assert repair_wav(zero) == n
    assert np.array_equal(read_int16(zero), as_int16(pattern(0, n)))

    half = tmp_path / "half.wav"  # header lags and a write was cut in the middle of a frame
    _write_closed(half, n)
    _set_sizes(half, 36 + 2 * 4000, 2 * 4000)
    with half.open("ab") as fh:
        fh.write(b"\x12")
    assert repair_wav(half) == n
    assert half.stat().st_size == 44 + 2 * n
    assert np.array_equal(read_int16(half), as_int16(pattern(0, n)))

    short = tmp_path / "short.wav"  # header promises more than the disk kept (power cut)
    _write_closed(short, n)
    os.truncate(short, 44 + 2 * 5000 + 1)
    assert repair_wav(short) == 5000
    assert np.array_equal(read_int16(short), as_int16(pattern(0, 5000)))

    # another tool's WAV with a chunk before the data is consistent: left byte-identical
    foreign = tmp_path / "foreign.wav"
    foreign.write_bytes((ROOT / "tests/data/wav/ptbr_fleurs_000.wav").read_bytes())
    assert repair_wav(foreign) is None
    assert foreign.read_bytes() == (ROOT / "tests/data/wav/ptbr_fleurs_000.wav").read_bytes()

    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav at all")
    with pytest.raises(RecorderError, match="not a WAV file") as err:
        repair_wav(junk)
    assert "\n" not in str(err.value)

    _set_sizes(zero, 36, 0)
    _set_sizes(half, 36, 0)
    (tmp_path / "empty.wav").write_bytes(b"")
    assert repair_recordings(tmp_path) == [half, zero]
    assert repair_recordings(tmp_path) == []
    assert repair_recordings(tmp_path / "missing") == []


def test_append_continues_a_recording(tmp_path: Path) -> None:
    path = tmp_path / "session.wav"
    _write_closed(path, 16000)
    with WavRecorder.append(path) as rec:
        assert rec.frames == 16000
        rec.write(pattern(16000, 8000))
    assert np.array_equal(read_int16(path), as_int16(pattern(0, 24000)))

    # after a crash: header lagging and a half frame; append repairs, then continues
    _set_sizes(path, 36 + 2 * 100, 2 * 100)
    with path.open("ab") as fh:
        fh.write(b"\x01")
    rec = WavRecorder.append(path)
    assert rec.frames == 24000
    rec.write(pattern(24000, 1000))
    rec.close()
    rec.close()
    assert np.array_equal(read_int16(path), as_int16(pattern(0, 25000)))
    with pytest.raises(RecorderError, match="closed"):
        rec.write(pattern(0, 10))


def _check_full(path: Path, frames: int, message: str, why: str) -> None:
    assert why in message and "\n" not in message, message
    assert path.name in message
    got = read_int16(path)  # valid, and holds exactly what was written
    assert len(got) == frames > 0
    assert path.stat().st_size == 44 + 2 * frames
    assert np.array_equal(got, as_int16(pattern(0, frames)))
    assert repair_wav(path) is None


def test_disk_full_on_tmpfs(tmp_path: Path) -> None:
    """A real ENOSPC: a 64 KiB tmpfs (needs root and mount rights; skipped otherwise outside
    CI, the RLIMIT_FSIZE test below covers the same code path without privileges; in CI,
    which runs as root, a failed mount fails the test)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        skip_or_fail_in_ci(f"cannot mount a tmpfs: {exc}")
    if done.returncode != 0:
        skip_or_fail_in_ci(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        path = mnt / "full.wav"
        rec = WavRecorder(path)
        pos = 0
        with pytest.raises(RecorderError) as err:
            for _ in range(1000):
                rec.write(pattern(pos, 1601))  # odd sizes: the disk fills mid-block
                pos += 1601
        assert rec.frames < pos + 1601
        with pytest.raises(RecorderError):  # stays failed, does not write past the hole
            rec.write(pattern(0, 10))
        rec.close()
        _check_full(path, rec.frames, str(err.value), "disk full")
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30)


CHILD_LIMITED = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
from engine.audio.recorder import RecorderError, WavRecorder
from tests.test_recorder import pattern
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: EFBIG
rec = WavRecorder(sys.argv[2])
pos = 0
try:
    while True:
        rec.write(pattern(pos, 1600))
        pos += 1600
except RecorderError as exc:
    rec.close()
    print(json.dumps({"frames": rec.frames, "error": str(exc)}))
"""


def test_file_size_limit_like_disk_full(tmp_path: Path) -> None:
    """No privileges needed: RLIMIT_FSIZE in a child makes write() fail with EFBIG part-way,
    which the recorder handles exactly like ENOSPC. The limit is odd: half a frame fits."""
    path = tmp_path / "limited.wav"
    limit = 44 + 2 * 10_000 + 1
    out = subprocess.run([sys.executable, "-c", CHILD_LIMITED, str(ROOT), str(path),
                          str(limit)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["frames"] == 10_000
    _check_full(path, report["frames"], report["error"], "file size limit")
