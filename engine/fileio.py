"""Atomic file writes and file hashes, in one place.

A crash or kill in the middle of a write must never leave a half-written transcript, session
metadata, manifest or model file under its real name: everything is written to a temporary
file in the same folder (so the rename stays on one file system), flushed to disk, and then
renamed over the target in one step. A failed write removes its temporary file.

Temporary files are created by `tempfile.mkstemp`, i.e. readable by the owner only. Files a
user sees (exports) pass `mode=PUBLIC` to get what a plain `open()` would have created.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

PUBLIC = 0o666  # with the process umask applied, as open() would create the file


def _umask() -> int:
    """The process umask, read without changing it where the system allows (threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_beside(path: Path, mode: int | None) -> tuple[int, Path]:
    """An open descriptor and the name of a new temporary file in `path`'s folder.

    The name keeps `path`'s suffix last (libraries may look at it) and starts with a dot, so
    globs for the real files (`*.meta.json`, `*.manifest.json`) never see it.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                               dir=path.parent)
    if mode is not None:
        os.fchmod(fd, mode & ~_umask())
    return fd, Path(tmp)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: Path, *, mode: int | None = None) -> Iterator[BinaryIO]:
    """A binary file to write that replaces `path` only when the block ends normally.

    For writes streamed in pieces (model files of hundreds of MB are never held in memory).
    `mode`: permission bits before the umask (e.g. PUBLIC); None keeps mkstemp's 0600.
    """
    path = Path(path)
    fd, tmp = _temp_beside(path, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write `data` to `path` all-or-nothing (see atomic_open)."""
    with atomic_open(path, mode=mode) as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str, *, mode: int | None = None) -> None:
    """Write `text` (UTF-8) to `path` all-or-nothing (see atomic_open)."""
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


@contextmanager
def atomic_target(path: Path, *, mode: int | None = None) -> Iterator[Path]:
    """A temporary path for a library that writes files itself (an ONNX save, a quantizer).

    When the block ends normally, whatever was written there is flushed to disk and renamed
    to `path`; if the block deleted it (a rejected result), `path` is left as it was. If the
    block raises, the temporary file is removed.
    """
    path = Path(path)
    fd, tmp = _temp_beside(path, mode)
    os.close(fd)
    try:
        yield tmp
        if tmp.exists():
            _fsync_file(tmp)
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sha256_file(path: Path, block: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in blocks (model files are tens to hundreds of MB)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()
