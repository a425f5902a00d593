"""config.toml -> frozen dataclasses.

Every key is checked against the dataclass fields, so a typo or a wrong type is an error that
names the key instead of a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.models.levels import ONNX_LEVELS, WHISPER_LEVELS, parse_forbid
from engine.workers.spec import ROLES, SPECS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config.toml"


class ConfigError(ValueError):
    """A bad configuration file or value; the message names the key."""


def _range(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    return {"range": (lo, hi)}


def _choice(*values: str, refused: dict[str, str] | None = None) -> dict[str, Any]:
    """Allowed values; `refused` names known values that are not built, with the reason."""
    return {"choices": values, "refused": refused or {}}


@dataclass(frozen=True)
class PathsConfig:
    models_dir: Path = Path("models")
    recordings_dir: Path = Path("recordings")
    log_dir: Path = Path("recordings/.logs")


@dataclass(frozen=True)
class TranscriptionConfig:
    model: str = "base"
    # "auto" = the quantization chain picks (validated int8 here); a level pins it
    compute_type: str = field(
        default="auto", metadata=_choice("auto", "int8", "int8_float32", "float32")
    )
    cpu_threads: int = field(default=2, metadata=_range(1, 64))
    language: str = "pt"
    beam_size: int = field(default=5, metadata=_range(1, 20))
    temperature: float = field(default=0.0, metadata=_range(0.0, 1.0))
    # retry at higher temperatures when a decode loops (compression ratio) or is unsure.
    # Off: with short decode units, the token cap and the repeat guard it changed no word
    # on the dev corpus (files) and cost 2.3x on hard audio; live PT WER 18.5% off, 19.5% on
    temperature_fallback: bool = False
    # candidates sampled per fallback temperature: each one costs decoder memory
    best_of: int = field(default=2, metadata=_range(1, 10))
    condition_on_previous_text: bool = False
    # > 1 discourages repetition loops, but 1.1 measured 4 points worse pooled WER here
    repetition_penalty: float = field(default=1.0, metadata=_range(1.0, 2.0))
    word_timestamps: bool = True
    initial_prompt: str = ""
    # names and jargon whisper should expect (hotwords); `--vocabulary FILE` adds to them
    vocabulary: tuple[str, ...] = ()
    # cap on tokens per decode, per second of audio (0 = none): real speech stays far below
    # it, while a repetition loop is cut short instead of running to 448 tokens per try
    max_tokens_per_s: float = field(default=8.0, metadata=_range(0.0, 100.0))
    allow_download: bool = False
    # Audio is cut into pieces of about this length at silences before decoding.
    max_chunk_s: float = field(default=30.0, metadata=_range(5.0, 600.0))
    # Decode units: within a piece, the VAD's speech regions (padded by unit_pad_ms) merged
    # with their neighbours up to unit_max_s, each decoded on its own. Whisper base, given a
    # 30 s window whole, skips sentences (most often where the voice changes); 0 = decode
    # each piece whole with faster-whisper's own VAD (the plain path). 12 s: with the voice
    # cuts, PT WER 14.7% against 16.8% at 8 s and 15.1% at 15 s (dialogue 7.0% in all three)
    unit_max_s: float = field(default=12.0, metadata=_range(0.0, 30.0))
    unit_pad_ms: int = field(default=200, metadata=_range(0, 2000))
    # never merge across a pause where the voice changes (the segmentation model, run on a
    # window around the pause, says who talks on each side); false = pauses alone
    unit_voice_cuts: bool = True
    # a unit's encoder input is its length plus this, not a fixed 30 s (0 = always 30 s)
    unit_encoder_pad_s: float = field(default=15.0, metadata=_range(0.0, 30.0))
    # coverage: a stretch of speech (VAD, unpadded) this long or longer with no word in it
    # is decoded again on its own, the text before it as the prompt; what still gives no
    # words is marked "[inaudible N s]". 0 turns the check off
    recheck_min_s: float = field(default=0.5, metadata=_range(0.0, 30.0))
    # ... and so is a stretch the segmentation model (what diarization turns are made of)
    # calls speech: the VAD misses soft and distant voices that the diarizer hears
    recheck_turns: bool = True


@dataclass(frozen=True)
class VadConfig:
    enabled: bool = True
    threshold: float = field(default=0.5, metadata=_range(0.05, 0.95))
    min_silence_ms: int = field(default=500, metadata=_range(50, 10000))
    speech_pad_ms: int = field(default=400, metadata=_range(0, 2000))
    min_speech_ms: int = field(default=250, metadata=_range(0, 5000))


@dataclass(frozen=True)
class DiarizationConfig:
    enabled: bool = True
    # onnx: pyannote segmentation-3.0 + CAM++ on onnxruntime (the only backend built; the
    # pyannote.audio pipeline needs torch and hub weights, so "pyannote" is refused at load)
    backend: str = field(default="onnx", metadata=_choice("onnx", refused={
        "pyannote": "the pyannote.audio pipeline is not built into this version (it needs "
                    "torch and the hub's gated weights); use \"onnx\", the same models run "
                    "on onnxruntime"}))
    threads: int = field(default=1, metadata=_range(1, 64))
    nice: int = field(default=10, metadata=_range(0, 19))  # lower priority than transcription
    clustering_threshold: float = field(default=0.0, metadata=_range(0.0, 2.0))
    # 0 means "find automatically".
    num_speakers: int = field(default=0, metadata=_range(0, 32))
    min_speakers: int = field(default=0, metadata=_range(0, 32))
    max_speakers: int = field(default=0, metadata=_range(0, 32))


@dataclass(frozen=True)
class VoicesConfig:
    """Voice profiles (biometric data: kept on this machine only, files 0600)."""

    enabled: bool = True  # false: no profile is read, made or matched
    folder: str = ""  # "" = .voices in the recordings folder; relative = from this file's folder
    # cosine score from which a speaker takes a profile's name (`bench --speakers`)
    threshold: float = field(default=0.6, metadata=_range(-1.0, 1.0))
    min_enrol_s: float = field(default=10.0, metadata=_range(1.0, 600.0))  # clean speech


@dataclass(frozen=True)
class EngineConfig:
    chunk_s: float = field(default=1.0, metadata=_range(0.05, 10.0))
    heartbeat_interval: float = field(default=1.0, metadata=_range(0.05, 60.0))
    heartbeat_timeout: float = field(default=5.0, metadata=_range(0.2, 600.0))
    # a silent worker whose CPU time still advances (a long native call holding the GIL, or
    # a niced worker starved by a busy machine) is killed only after this long
    busy_grace_s: float = field(default=30.0, metadata=_range(0.2, 3600.0))
    startup_timeout: float = field(default=120.0, metadata=_range(1.0, 3600.0))
    # workers run below the supervisor/console's priority so keys and heartbeats stay prompt
    worker_nice: int = field(default=5, metadata=_range(0, 19))
    # restarts: delays backoff_initial_s * 2**n capped at backoff_max_s (2, 4, 8, 16, 30 s);
    # more than max_restarts within restart_window_s marks the worker failed
    backoff_initial_s: float = field(default=2.0, metadata=_range(0.0, 600.0))
    backoff_max_s: float = field(default=30.0, metadata=_range(0.0, 3600.0))
    max_restarts: int = field(default=3, metadata=_range(0, 1000))
    restart_window_s: float = field(default=300.0, metadata=_range(1.0, 86400.0))
    # capture reads at most this far ahead of what transcription has finished (backpressure;
    # bounds the audio held for re-sending); must exceed transcription.max_chunk_s
    max_read_ahead_s: float = field(default=120.0, metadata=_range(10.0, 3600.0))


@dataclass(frozen=True)
class LiveConfig:
    """The microphone path: capture device and the streaming transcription policy."""

    device: str = ""  # "" = the system's default input; else a device name (part) or index
    # the PulseAudio/PipeWire source to record from (PULSE_SOURCE for the capture worker; the
    # server is PULSE_SERVER's, e.g. a laptop's over `ssh -R`); "" = the server's default
    source: str = ""
    block_s: float = field(default=0.1, metadata=_range(0.02, 1.0))  # capture block
    # a pause this long ends a phrase, which is then committed (decoded once more, final)
    end_silence_ms: int = field(default=300, metadata=_range(100, 3000))
    partial_interval_s: float = field(default=1.0, metadata=_range(0.2, 10.0))
    max_phrase_s: float = field(default=12.0, metadata=_range(2.0, 30.0))
    # longer than this, a phrase is committed at a near-silent dip (a breath) if it has one
    soft_phrase_s: float = field(default=6.0, metadata=_range(2.0, 30.0))
    # whisper pads every input to a 30 s encoder window; live phrases are padded to their
    # length + this instead (the encoder costs ~7x less for a 3 s phrase); 0 = 30 s always
    encoder_pad_s: float = field(default=10.0, metadata=_range(0.0, 30.0))
    # the same for the committing decode; 0 = the full 30 s window, which measured no
    # better WER on the dev clips (18.2% vs 16.4%) and ~1 s more latency
    commit_encoder_pad_s: float = field(default=10.0, metadata=_range(0.0, 30.0))
    commit_beam_size: int = field(default=5, metadata=_range(1, 20))
    # word times make faster-whisper decode the few hundred ms after the last word as a
    # window of its own (a second full decode per phrase, where it also invents words)
    word_timestamps: bool = False
    # further behind live than this: no partials, beam 1 and longer phrases until caught up
    catch_up_lag_s: float = field(default=2.0, metadata=_range(0.5, 60.0))
    # at the end of a session re-label speakers with the offline pass (up to this long)
    refine_max_s: float = field(default=1800.0, metadata=_range(0.0, 86400.0))
    mic_retry_max_s: float = field(default=10.0, metadata=_range(0.5, 600.0))


@dataclass(frozen=True)
class ModelsConfig:
    """Quantization levels of the models (the whisper pin is transcription.compute_type)."""

    # validate smaller/faster levels (in the background at first start) and use them
    quantize: bool = True
    segmentation: str = field(default="auto", metadata=_choice("auto", *ONNX_LEVELS))
    embedding: str = field(default="auto", metadata=_choice("auto", *ONNX_LEVELS))
    # comma-separated levels never tried, e.g. "fp16, int8-simplified"
    forbid: str = ""


@dataclass(frozen=True)
class ClusterConfig:
    """`transcrevai transcribe --cluster`: batches on a Ray cluster (the `cluster` extra)."""

    # "" = this machine's engine; "local" = a private Ray for the run; "auto" = the cluster
    # this machine is part of; or a Ray address host:port
    address: str = ""
    actors: int = field(default=0, metadata=_range(0, 4096))  # 0 = from the cluster's CPUs
    cpus_per_actor: int = field(default=2, metadata=_range(1, 256))
    # a recording this long or longer is cut at silences into pieces that run on several
    # actors at once, speakers matched across pieces by voice (0 = never split); pieces are
    # at least split_piece_s long, about two per actor so a slow one does not hold the file
    split_min_s: float = field(default=300.0, metadata=_range(0.0, 1e6))
    split_piece_s: float = field(default=120.0, metadata=_range(10.0, 1e6))
    # two pieces' speakers are one person when their voices are at least this similar
    # (cosine of CAM++ embeddings; other people in the corpus scored at most 0.53)
    stitch_threshold: float = field(default=0.6, metadata=_range(-1.0, 1.0))
    # a lost actor that Ray has not restarted (models loaded again) within this is retired
    # and its work goes to the others
    restart_wait_s: float = field(default=30.0, metadata=_range(1.0, 3600.0))


RSS_MB_RANGE = (32, 65536)


@dataclass(frozen=True)
class LimitsConfig:
    """RSS budgets per worker (MB); the supervisor restarts a worker that stays above it."""

    # [limits.rss_mb] role = MB; a role left out keeps its budget from engine/workers/spec.py
    rss_mb: dict[str, int] = field(default_factory=dict)
    # RLIMIT_AS (virtual memory) = this factor x the RSS budget; virtual size is several
    # times RSS (thread stacks, mapped libraries), so a tight cap breaks thread creation
    address_space_factor: float = field(default=4.0, metadata=_range(0.0, 64.0))
    over_limit_s: float = field(default=2.0, metadata=_range(0.0, 600.0))

    def budget_mb(self, role: str) -> int:
        """The RSS budget of a worker role: the config's, else the spec's default."""
        return self.rss_mb.get(role) or SPECS[role].budget_mb


@dataclass(frozen=True)
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    transcription: TranscriptionConfig = field(default_factory=TranscriptionConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    diarization: DiarizationConfig = field(default_factory=DiarizationConfig)
    voices: VoicesConfig = field(default_factory=VoicesConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    source: Path | None = None

    def replace(self, section: str, **changes: Any) -> Config:
        """A copy with some keys of one section changed (CLI flags override the file)."""
        current = getattr(self, section)
        return dataclasses.replace(self, **{section: dataclasses.replace(current, **changes)})


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            Path: "a path string"}.get(tp, str(tp))


def _coerce(key: str, value: Any, tp: Any, meta: typing.Mapping[str, Any]) -> Any:
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str or tp is Path:
        ok = isinstance(value, str)
    else:  # pragma: no cover - schema bug
        raise TypeError(f"unsupported config type {tp} for {key}")
    if not ok:
        raise ConfigError(f"'{key}' must be {_type_name(tp)}, got {value!r}")
    if tp is Path:
        value = Path(value)
    choices = meta.get("choices")
    refused = meta.get("refused", {})
    if value in refused:
        raise ConfigError(f"'{key}' = {value!r} is refused: {refused[value]}")
    if choices and value not in choices:
        raise ConfigError(f"'{key}' must be one of {', '.join(choices)}; got {value!r}")
    lo, hi = meta.get("range", (None, None))
    if lo is not None and value < lo or hi is not None and value > hi:
        raise ConfigError(f"'{key}' must be between {lo} and {hi}; got {value!r}")
    return value


def _build_section(name: str, cls: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"'{name}' must be a table ([{name}])")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key not in fields:
            raise ConfigError(_unknown_key(name, key, sorted(fields)))
        if hints[key] == dict[str, int]:
            values[key] = _budgets(f"{name}.{key}", raw)
        elif hints[key] == tuple[str, ...]:
            values[key] = _terms(f"{name}.{key}", raw)
        else:
            values[key] = _coerce(f"{name}.{key}", raw, hints[key], fields[key].metadata)
    return cls(**values)


def _unknown_key(section: str, key: str, known: list[str]) -> str:
    role = key.removesuffix("_mb")
    if section == "limits" and key.endswith("_mb") and role in ROLES:
        return f"'limits.{key}' is now '{role}' in the table [limits.rss_mb]"
    return f"unknown key '{section}.{key}' (known keys: {', '.join(known)})"


def _terms(key: str, data: Any) -> tuple[str, ...]:
    """A list of short strings (vocabulary terms), stripped, empty ones dropped."""
    if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
        raise ConfigError(f"'{key}' must be a list of strings, e.g. [\"Fisichella\"]")
    terms = tuple(t.strip() for t in data if t.strip())
    if any(len(t) > 100 for t in terms):
        raise ConfigError(f"'{key}': a term is longer than 100 characters")
    return terms


def _budgets(key: str, data: Any) -> dict[str, int]:
    """A table of per-role memory budgets: every key a worker role, every value MB."""
    if not isinstance(data, dict):
        raise ConfigError(f"'{key}' must be a table ([{key}]) of worker role = MB")
    lo, hi = RSS_MB_RANGE
    for role, mb in data.items():
        if role not in ROLES:
            raise ConfigError(f"'{key}.{role}': no such worker (workers: {', '.join(ROLES)})")
        _coerce(f"{key}.{role}", mb, int, {"range": (lo, hi)})
    return dict(data)


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)
            if isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name])}


def parse_config(data: dict[str, Any], base_dir: Path, source: Path | None = None) -> Config:
    """Validate a TOML mapping; relative paths are taken from the config file's folder."""
    sections = _section_types()
    built: dict[str, Any] = {}
    for name, raw in data.items():
        if name not in sections:
            raise ConfigError(f"unknown section '{name}' (known: {', '.join(sections)})")
        built[name] = _build_section(name, sections[name], raw)
    cfg = Config(**built, source=source)
    paths = cfg.paths
    cfg = dataclasses.replace(cfg, paths=PathsConfig(
        models_dir=_absolute(paths.models_dir, base_dir),
        recordings_dir=_absolute(paths.recordings_dir, base_dir),
        log_dir=_absolute(paths.log_dir, base_dir),
    ))
    _check_cross_fields(cfg)
    return cfg


def _absolute(path: Path, base_dir: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (base_dir / path)


def _check_cross_fields(cfg: Config) -> None:
    if cfg.engine.max_read_ahead_s <= cfg.transcription.max_chunk_s:
        raise ConfigError("'engine.max_read_ahead_s' must exceed 'transcription.max_chunk_s'")
    known = set(ONNX_LEVELS) | set(WHISPER_LEVELS)
    for level in parse_forbid(cfg.models.forbid):
        if level in ("fp32", "float32"):
            raise ConfigError(f"'models.forbid' cannot forbid {level}: it is the last resort "
                              "every chain falls back to")
        if level not in known:
            raise ConfigError(f"'models.forbid' names unknown level {level!r} (known: "
                              f"{', '.join(lv for lv in (*ONNX_LEVELS, *WHISPER_LEVELS))})")
    d = cfg.diarization
    if d.min_speakers and d.max_speakers and d.min_speakers > d.max_speakers:
        raise ConfigError("'diarization.min_speakers' must not exceed 'diarization.max_speakers'")


def check_paths(cfg: Config) -> None:
    """Paths a run needs, checked before any work starts (messages name the key).

    The models folder must exist (it holds the diarization models); the recordings folder is
    created when missing (a safe default) but must be a folder if it exists.
    """
    models = cfg.paths.models_dir
    if not models.is_dir():
        what = "is not a folder" if models.exists() else "does not exist"
        raise ConfigError(f"'paths.models_dir' = {models} {what} (it must hold the "
                          "diarization models; the default is the project's models/)")
    for key in ("recordings_dir", "log_dir"):
        folder: Path = getattr(cfg.paths, key)
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"'paths.{key}' = {folder} is a file, not a folder")


def load_config(path: Path | None = None) -> Config:
    """Read a config file (default: the project's config.toml); missing default -> defaults."""
    target = path or DEFAULT_CONFIG_PATH
    if path is None and not target.exists():
        return parse_config({}, PROJECT_ROOT)
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {target}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {target}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{target}: not valid TOML: {exc}") from None
    try:
        return parse_config(data, target.resolve().parent, source=target)
    except ConfigError as exc:
        raise ConfigError(f"{target}: {exc}") from None


__all__ = [
    "Config", "ConfigError", "DiarizationConfig", "EngineConfig", "LimitsConfig", "LiveConfig",
    "ModelsConfig", "PathsConfig", "TranscriptionConfig", "VadConfig", "check_paths",
    "load_config", "parse_config",
]
