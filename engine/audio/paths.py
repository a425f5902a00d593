"""Checks on an audio path that need no decoding libraries (cheap enough for start-up)."""

from __future__ import annotations

import os
from pathlib import Path


class AudioFileError(Exception):
    """A file that cannot be used as audio; str() is one line for the user."""


def check_file(path: str | os.PathLike[str]) -> Path:
    """Raise AudioFileError unless `path` is an existing, readable, non-empty file."""
    p = Path(path)
    if not p.exists():
        raise AudioFileError(f"{p}: no such file")
    if p.is_dir():
        raise AudioFileError(f"{p}: is a directory, not an audio file")
    if not os.access(p, os.R_OK):
        raise AudioFileError(f"{p}: permission denied")
    if p.stat().st_size == 0:
        raise AudioFileError(f"{p}: empty file")
    return p
