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
