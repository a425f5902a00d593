"""The evaluation corpus (a folder laid out like shared/corpus) and shared report helpers."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.config import PROJECT_ROOT
from engine.scoring import normalize

DEFAULT_CORPUS = PROJECT_ROOT.parent / "shared" / "corpus"


def load_corpus(args: argparse.Namespace) -> tuple[Path, list[dict[str, Any]]] | None:
    """The corpus folder and its clips (filtered by --clips); None after a one-line error."""
    corpus: Path = args.corpus or DEFAULT_CORPUS
    manifest_path = corpus / "manifest.json"
    if not manifest_path.is_file():
        print(f"transcrevai: {manifest_path}: no corpus manifest here (use --corpus DIR)",
              file=sys.stderr)
        return None
    clips = json.loads(manifest_path.read_text())["clips"]
    if args.clips:
        clips = [c for c in clips if args.clips in c["id"]]
    return corpus, clips


def real_clip_paths(args: argparse.Namespace) -> list[Path] | None:
    """The corpus's recorded (non-synthetic) clips, for runs that loop real speech; None
    after a one-line error."""
    loaded = load_corpus(args)
    if loaded is None:
        return None
    corpus, clips = loaded
    paths = [corpus / c["file"] for c in clips if not c.get("synthetic")]
    if not paths:
        print("transcrevai: no (non-synthetic) clips in the corpus", file=sys.stderr)
        return None
    return paths


def clip_language(clip: dict[str, Any]) -> str | None:
    """Manifest languages look like "pt-BR" or "pt (variety not stated)": the code."""
    return re.sub(r"[^a-z].*", "", clip["language"].lower()) or None


def is_pt(clip_language_field: str) -> bool:
    return clip_language_field.lower().startswith("pt")


def is_en(clip_language_field: str) -> bool:
    return clip_language_field.lower().startswith("en")


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:5.1f}"


def guard_losses(dropped: list[tuple[str, str]], ref: list[str],
                 hyp: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Words removed per guard, and those of them the reference has and the transcript
    lacks (what the guard cost in deletions)."""
    from collections import Counter

    missing = Counter(ref) - Counter(hyp)
    words: dict[str, int] = {}
    eaten: dict[str, int] = {}
    for guard, text in dropped:
        tokens = normalize(text)
        words[guard] = words.get(guard, 0) + len(tokens)
        hit = Counter(tokens) & missing
        missing -= hit
        eaten[guard] = eaten.get(guard, 0) + sum(hit.values())
    return words, eaten


def sum_counts(dicts: Iterable[dict[str, int] | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in (d or {}).items():
            out[k] = out.get(k, 0) + v
    return out
