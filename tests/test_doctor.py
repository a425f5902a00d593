"""`transcrevai doctor`: the real CLI on the project's config and on one without models."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, run_cli

NAMES = ("config", "whisper model", "diarization models", "quantization levels", "portaudio",
         "sound server", "microphone", "terminal", "disk")


def _by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc["checks"]}


def _no_models_config(tmp_path: Path) -> Path:
    """The project's config with [paths] models_dir pointing at an empty folder."""
    empty = tmp_path / "models"
    empty.mkdir()
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    text, n = re.subn(r'(?m)^models_dir\s*=\s*"[^"]*"', f'models_dir = "{empty}"', text)
    assert n == 1
    text = re.sub(r'(?m)^recordings_dir\s*=\s*"[^"]*"',
                  f'recordings_dir = "{tmp_path / "rec"}"', text)
    text = re.sub(r'(?m)^log_dir\s*=\s*"[^"]*"', f'log_dir = "{tmp_path / "logs"}"', text)
    cfg = tmp_path / "config.toml"
    cfg.write_text(text, encoding="utf-8")
    return cfg


def _doctor(*config: str, code: int) -> dict[str, dict[str, str]]:
    """`doctor --json` run as a user would: its exit code, no traceback, every check."""
    proc = run_cli(*config, "doctor", "--json", timeout=120)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == code, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["blocking"] is (code != 0)
    checks = _by_name(doc)
    assert list(checks) == list(NAMES)
    return checks


def test_doctor_json_on_project_config() -> None:
    checks = _doctor(code=0)
    for c in checks.values():
        assert set(c) == {"name", "status", "detail", "fix"}
        assert c["status"] in {"ok", "warn", "fail"}
        assert c["detail"]
        if c["status"] != "ok":
            assert c["fix"], c
    for name in ("config", "diarization models"):
        assert checks[name]["status"] == "ok", checks[name]
    # a fresh clone joins whisper's files from the installed packages on first use
    assert checks["whisper model"]["status"] in {"ok", "warn"}, checks["whisper model"]
    assert "model.bin" in checks["whisper model"]["detail"]
    # a sound server and a microphone may or may not be there: never blocking either way
    for name in ("portaudio", "sound server", "microphone"):
        assert checks[name]["status"] in {"ok", "warn"}, checks[name]


def test_doctor_missing_models_blocks(tmp_path: Path) -> None:
    cfg = _no_models_config(tmp_path)
    checks = _doctor("--config", str(cfg), code=1)
    assert checks["config"]["status"] == "ok"
    whisper = checks["whisper model"]
    # the packages are installed, so the first run would join the files: a warning
    assert whisper["status"] == "warn" and "first use" in whisper["detail"]
    assert "model.bin" in whisper["detail"] and str(tmp_path) in whisper["detail"]
    assert whisper["fix"] and "\n" not in whisper["fix"]
    assert checks["diarization models"]["status"] == "fail"  # diarization is on in config.toml
    assert checks["quantization levels"]["status"] == "warn"  # never blocking
    for name in ("portaudio", "sound server", "microphone"):
        assert checks[name]["status"] in {"ok", "warn"}, checks[name]
    assert not any(tmp_path.joinpath("models").iterdir())  # doctor never writes models

    human = run_cli("--config", str(cfg), "doctor", timeout=120)
    assert human.returncode == 1
    assert "Traceback" not in human.stderr
    lines = human.stdout.splitlines()
    i = next(i for i, ln in enumerate(lines) if "whisper model" in ln)
    assert lines[i + 1].strip().startswith("fix: "), lines[i:i + 2]


def test_doctor_tampered_whisper_and_diarization_off(tmp_path: Path) -> None:
    """A whisper file with the right size but a flipped byte fails its hash; with diarization
    off the missing ONNX files only warn."""
    cfg = _no_models_config(tmp_path)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace(
        "[diarization]\nenabled = true", "[diarization]\nenabled = false"), encoding="utf-8")
    folder = tmp_path / "models" / "whisper-base"
    folder.mkdir()
    src = ROOT / "models" / "whisper-base"
    for f in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (folder / f).write_bytes((src / f).read_bytes())
    data = bytearray((src / "config.json").read_bytes())
    data[10] ^= 0xFF
    (folder / "config.json").write_bytes(bytes(data))
    (folder / "model.bin").symlink_to(src / "model.bin")
    proc = run_cli("--config", str(cfg), "doctor", "--json", timeout=120)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 1, proc.stdout + proc.stderr
    checks = _by_name(json.loads(proc.stdout))
    whisper = checks["whisper model"]
    assert whisper["status"] == "fail"
    assert "SHA-256" in whisper["detail"] and "config.json" in whisper["detail"]
    assert "delete" in whisper["fix"]
    assert checks["diarization models"]["status"] == "warn"


def test_doctor_bad_config_is_a_failed_check(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[vad]\nthreshold = 5\n", encoding="utf-8")
    proc = run_cli("--config", str(bad), "doctor", "--json", timeout=120)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 1
    checks = _by_name(json.loads(proc.stdout))
    assert checks["config"]["status"] == "fail"
    assert "vad.threshold" in checks["config"]["detail"]
    assert checks["terminal"]["status"] in {"ok", "warn"}  # the checks without config still ran
