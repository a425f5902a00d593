"""The evaluation corpus (a folder laid out like shared/corpus) and shared report helpers."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from engine.config import PROJECT_ROOT

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


def clip_language(clip: dict[str, Any]) -> str | None:
    """Manifest languages look like "pt-BR" or "pt (variety not stated)": the code."""
    return re.sub(r"[^a-z].*", "", clip["language"].lower()) or None


def is_pt(clip_language_field: str) -> bool:
    return clip_language_field.lower().startswith("pt")


def is_en(clip_language_field: str) -> bool:
    return clip_language_field.lower().startswith("en")


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:5.1f}"
