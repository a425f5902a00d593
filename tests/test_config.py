"""config.toml parsing: defaults, and errors that name the offending key."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from tests.conftest import assert_one_line_error, run_cli


def test_project_config_loads_with_expected_defaults() -> None:
    cfg = load_config()
    assert cfg.source == DEFAULT_CONFIG_PATH
    assert cfg.transcription.language == "pt"
    assert cfg.transcription.compute_type == "auto"  # the validated level (int8 here)
    assert cfg.models.quantize
    assert cfg.transcription.cpu_threads >= 1  # never 0 (= 4 threads, thrashes on 2 cores)
    assert cfg.vad.enabled
    assert cfg.paths.models_dir == DEFAULT_CONFIG_PATH.parent / "models"


@pytest.mark.parametrize(("text", "needle"), [
    ("[transcription]\nbeem_size = 5\n", "transcription.beem_size"),
    ("[transcription]\nbeam_size = 'five'\n", "transcription.beam_size"),
    ("[transcription]\ncpu_threads = 0\n", "transcription.cpu_threads"),
    ("[transcription]\ncompute_type = 'float16'\n", "transcription.compute_type"),
    ("[vad]\nenabled = 1\n", "vad.enabled"),
    ("[diarization]\nmin_speakers = 4\nmax_speakers = 2\n", "diarization.min_speakers"),
    ("[nonsense]\nx = 1\n", "nonsense"),
    ("transcription = 3\n", "transcription"),
])
def test_bad_values_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(path)


def test_relative_paths_resolve_from_the_config_folder(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[paths]\nmodels_dir = "m"\n')
    assert load_config(path).paths.models_dir == tmp_path / "m"


def test_malformed_toml_is_one_line_on_the_cli(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[transcription\nbeam_size = 5\n")
    line = assert_one_line_error(run_cli("--config", str(bad), "transcribe", "x.wav"))
    assert "not valid TOML" in line and str(bad) in line


def test_unknown_key_is_one_line_on_the_cli(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[diarization]\nthreshhold = 0.5\n")
    proc = run_cli("--config", str(bad), "transcribe", "x.wav")
    assert "diarization.threshhold" in assert_one_line_error(proc)
    assert proc.returncode == 2


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    line = assert_one_line_error(run_cli("--config", str(tmp_path / "nope.toml"),
                                         "transcribe", "x.wav"))
    assert "nope.toml" in line


@pytest.mark.parametrize(("text", "needle"), [
    ("[vad]\nthreshold = 2.0\n", "vad.threshold"),
    ("[live]\nend_silence_ms = 10\n", "live.end_silence_ms"),
    ("[live]\nblock_s = 'fast'\n", "live.block_s"),
    ("[limits.rss_mb]\ntranscription = -5\n", "limits.rss_mb.transcription"),
    ("[limits.rss_mb]\ntranslation = 500\n", "limits.rss_mb.translation"),
    ("[limits]\ntranscription_mb = 500\n", "[limits.rss_mb]"),
    ("[diarization]\nbackend = 'pyannote'\n", "diarization.backend"),
    ("[transcription]\nvocabulary = 'Fisichella'\n", "transcription.vocabulary"),
    ("[transcription]\nvocabulary = [1, 2]\n", "transcription.vocabulary"),
    ("[models]\nforbid = 'int4'\n", "models.forbid"),
    ("[models]\nforbid = 'fp32'\n", "models.forbid"),
    ("[models]\nquantize = 'yes'\n", "models.quantize"),
    ("[paths]\nmodels_dir = 3\n", "paths.models_dir"),
    ("[paths]\nmodels_dir = 'no/such/folder'\n", "paths.models_dir"),
    ("[paths]\nrecordings_dir = 'a-file'\n", "paths.recordings_dir"),
    ("[engine]\nmax_read_ahead_s = 20\n", "engine.max_read_ahead_s"),
])
def test_config_errors_on_the_cli_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    """Every command refuses a bad config in one line naming the key (exit 2)."""
    (tmp_path / "a-file").write_text("not a folder")
    cfg = tmp_path / "c.toml"
    models = DEFAULT_CONFIG_PATH.parent / "models"
    if "models_dir" not in text:  # a valid models folder, so only the bad key is wrong
        text = (text.replace("[paths]\n", f'[paths]\nmodels_dir = "{models}"\n')
                if "[paths]" in text else f'[paths]\nmodels_dir = "{models}"\n' + text)
    cfg.write_text(text)
    for args in (("transcribe", "x.wav"), ("sessions",)):
        proc = run_cli("--config", str(cfg), *args)
        assert needle in assert_one_line_error(proc)
        assert proc.returncode == 2


def test_another_config_file_is_used(tmp_path: Path) -> None:
    """--config PATH: its recordings folder is the one listed (created when missing)."""
    cfg = tmp_path / "c.toml"
    models = DEFAULT_CONFIG_PATH.parent / "models"
    cfg.write_text(f'[paths]\nmodels_dir = "{models}"\nrecordings_dir = "rec"\n')
    proc = run_cli("--config", str(cfg), "sessions")
    assert proc.returncode == 0, proc.stderr
    assert not proc.stdout.strip()  # no sessions in the new folder


def test_memory_budgets_default_from_the_worker_spec() -> None:
    """A role left out of [limits.rss_mb] keeps its spec's budget; a given one overrides."""
    from engine.config import parse_config
    from engine.workers.spec import WORKERS

    cfg = parse_config({"limits": {"rss_mb": {"transcription": 700}}}, DEFAULT_CONFIG_PATH.parent)
    assert cfg.limits.budget_mb("transcription") == 700
    for spec in WORKERS:
        if spec.role != "transcription":
            assert cfg.limits.budget_mb(spec.role) == spec.budget_mb
