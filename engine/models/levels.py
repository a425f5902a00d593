"""Which quantization level each model runs at, from the config and the validated cache.

Workers ask `choose()` while loading: it only reads the cache manifests (and the hash of a
cached artefact), so a first start is never held up by validation. When nothing validated is
cached yet, the worker runs the reference level (FP32 / float32) and the supervisor builds the
chains in the background with `build_all()`, then tells the workers to reload.

Heavy imports (numpy, onnx, ctranslate2) stay inside functions: config and the console
import the level names from here.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.config import Config
    from engine.messages import ModelLevels
    from engine.models.quantize import ChainResult

ONNX_LEVELS: tuple[str, ...] = ("int8-conservative", "int8-simplified", "fp16", "fp32")
WHISPER_LEVELS: tuple[str, ...] = ("int8", "int8_float32", "float16", "float32")
KINDS: tuple[str, ...] = ("whisper", "segmentation", "embedding")
REFERENCE = {"whisper": "float32", "segmentation": "fp32", "embedding": "fp32"}
CACHE_DIR = "cache"  # under paths.models_dir
log = logging.getLogger("transcrevai.engine")


@dataclass(frozen=True)
class Choice:
    """What a worker loads for one model: a level and the file or folder to load."""

    kind: str
    level: str
    path: Path
    validated: bool  # False: the reference level run while (or because) nothing is validated
    fallbacks: tuple[str, ...] = ()  # further levels to try at load if this one fails


def cache_dir(config: Config) -> Path:
    return config.paths.models_dir / CACHE_DIR


def parse_forbid(text: str) -> set[str]:
    return {x.strip() for x in text.split(",") if x.strip()}


def allowed(config: Config, kind: str) -> set[str] | None:
    """Levels the chain may try for `kind` (None = all); the reference is always allowed."""
    forbid = parse_forbid(config.models.forbid)
    names = WHISPER_LEVELS if kind == "whisper" else ONNX_LEVELS
    if not forbid & set(names):
        return None
    return {lv for lv in names if lv not in forbid}


def pinned(config: Config, kind: str) -> str | None:
    value = {"whisper": config.transcription.compute_type,
             "segmentation": config.models.segmentation,
             "embedding": config.models.embedding}[kind]
    return None if value == "auto" else value


def whisper_digest(config: Config, folder: Path) -> str:
    """The model.bin hash a whisper cache entry is keyed on (pinned for the bundled base)."""
    from engine.models.registry import WHISPER_BASE_FILES, sha256_file

    if config.transcription.model == "base":
        return WHISPER_BASE_FILES["model.bin"][0]
    return sha256_file(folder / "model.bin")


def describe(choice: Choice, config: Config) -> str:
    """The level as the gauges show it; '(validating)' while the chain may still switch it."""
    waiting = not choice.validated and config.models.quantize
    return choice.level + (" (validating)" if waiting else "")


def _sources(config: Config, kind: str, verify: bool = True) -> tuple[Path, str]:
    """(source, its pinned sha256). With `verify` the files are checked (raising ModelError
    like a worker load would); without, only located: every start asks whether the cache
    holds, and the workers verify the same files as they load, so hashing them here too
    would double that work."""
    from engine.models.registry import (
        DIARIZATION_DIR,
        DIARIZATION_FILES,
        diarization_paths,
        resolve_whisper,
    )

    if kind == "whisper":
        if verify or config.transcription.model != "base":
            src = resolve_whisper(config.transcription.model, config.paths.models_dir,
                                  config.transcription.allow_download)
            folder = Path(src.model)
        else:
            folder = config.paths.models_dir / "whisper-base"
        return folder, whisper_digest(config, folder)
    if verify:
        seg, emb = diarization_paths(config.paths.models_dir)
        path = seg if kind == "segmentation" else emb
    else:
        name = "segmentation-3.0.onnx" if kind == "segmentation" else "campplus.onnx"
        path = config.paths.models_dir / DIARIZATION_DIR / name
    return path, DIARIZATION_FILES[path.name][0]


def cached(config: Config, kind: str, source: Path, digest: str) -> ChainResult | None:
    """The validated decision for `kind` if the cache still holds for this config."""
    if kind == "whisper":
        from engine.models.ct2_chain import cached_whisper

        res, _why = cached_whisper(source, cache_dir(config), digest, allowed(config, kind),
                                   pinned(config, kind))
        return res
    from engine.models.quantize import _try_cache

    res, _why = _try_cache(kind, source, cache_dir(config), digest, allowed(config, kind),
                           pinned(config, kind))
    return res


def choose(config: Config, kind: str, source: Path, digest: str) -> Choice:
    """The level to load now: validated and cached, else the pin (whisper), else reference."""
    ref = REFERENCE[kind]
    if config.models.quantize:
        try:
            res = cached(config, kind, source, digest)
        except (OSError, ValueError):
            res = None
        if res is not None:
            order = WHISPER_LEVELS if kind == "whisper" else ONNX_LEVELS
            later = tuple(lv.level for lv in res.levels if lv.result == "accepted"
                          and order.index(lv.level) > order.index(res.in_use))
            return Choice(kind, res.in_use, res.path, True,
                          later if ref in later else later + (ref,))
    pin = pinned(config, kind)
    if kind == "whisper" and pin is not None:
        # CTranslate2 converts at load: a pinned compute type needs no artefact
        return Choice(kind, pin, source, False, () if pin == ref else (ref,))
    return Choice(kind, ref, source, False)


def needs_build(config: Config) -> list[str]:
    """Kinds whose validated level is not cached (empty: nothing to do in the background)."""
    if not config.models.quantize:
        return []
    todo = []
    for kind in KINDS:
        if kind != "whisper" and not config.diarization.enabled:
            continue
        try:
            source, digest = _sources(config, kind, verify=False)
            if cached(config, kind, source, digest) is None:
                todo.append(kind)
        except Exception:  # noqa: BLE001 - a model that cannot load is the worker's error
            continue
    return todo


def build(config: Config, kind: str, cancel: threading.Event | None = None) -> ChainResult:
    """Run (or reuse) the chain for one model; slow on first use (child processes)."""
    source, digest = _sources(config, kind)
    if kind == "whisper":
        from engine.models.ct2_chain import build_whisper_chain

        return build_whisper_chain(source, cache_dir(config), digest, allowed(config, kind),
                                   pinned(config, kind), threads=config.transcription.cpu_threads,
                                   cancel=cancel)
    from engine.models.quantize import build_chain

    return build_chain(kind, source, cache_dir(config), allowed(config, kind),  # type: ignore[arg-type]
                       pinned(config, kind), expected_sha256=digest, cancel=cancel)


def build_all(config: Config, kinds: list[str] | None = None,
              cancel: threading.Event | None = None) -> list[ChainResult]:
    """Chains for every model in use (diarization models only when diarization is on)."""
    todo = kinds if kinds is not None else [
        k for k in KINDS if k == "whisper" or config.diarization.enabled]
    return [build(config, kind, cancel) for kind in todo]


def summary(results: list[ChainResult]) -> str:
    """One line for logs and the console: the level in use per model."""
    return ", ".join(f"{r.model_kind} {r.in_use}" for r in results)


def validate_missing(config: Config, cancel: threading.Event) -> ModelLevels | None:
    """Validate the levels the cache lacks (first start, or after an onnxruntime/CPU change).

    Runs in the background while workers use the reference level; the result (None: nothing
    was missing, or `cancel` was set) tells the supervisor whether to have them reload.
    Probes run in child processes at a low priority.
    """
    from engine.messages import ModelLevels, one_line
    from engine.models.quantize import ChainCancelled

    t0 = time.monotonic()
    try:
        todo = needs_build(config)
        if not todo:
            return None
        log.info("validating quantization levels for %s in the background", todo)
        results = build_all(config, todo, cancel=cancel)
    except ChainCancelled:
        return None
    except Exception as exc:  # noqa: BLE001 - the app goes on at the reference level
        log.warning("quantization chain failed: %s", one_line(exc))
        return ModelLevels((), time.monotonic() - t0, one_line(exc))
    log.info("quantization levels ready: %s", summary(results))
    return ModelLevels(tuple((r.model_kind, r.in_use) for r in results), time.monotonic() - t0)
