"""Shared helpers: the test corpus in tests/data and running the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"


def clips() -> dict[str, dict[str, Any]]:
    """The test corpus manifest (a subset of the evaluation corpus), by clip id."""
    doc = json.loads((DATA / "manifest.json").read_text())
    return {c["id"]: c for c in doc["clips"]}


def count_calls(obj: Any, name: str) -> list[int]:
    """Wrap `obj.name` so each call is counted in the returned one-item list."""
    count = [0]
    original = getattr(obj, name)

    def counting(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return original(*args, **kwargs)

    setattr(obj, name, counting)
    return count


def write_config(folder: Path) -> Path:
    """A config.toml in `folder` with the project's models and recordings/logs under it."""
    cfg = folder / "config.toml"
    cfg.write_text(f'[paths]\nmodels_dir = "{ROOT / "models"}"\n'
                   f'recordings_dir = "{folder / "rec"}"\nlog_dir = "{folder / "logs"}"\n')
    return cfg


def clip_path(clip_id: str) -> Path:
    return DATA / clips()[clip_id]["file"]


def run_cli(*args: str, timeout: float = 600, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `transcrevai ARGS` as a user would (a separate process)."""
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd or ROOT,
                          env={**os.environ, **(env or {})})


def skip_or_fail_in_ci(reason: str) -> None:
    """Skip a test this machine cannot run; in CI (env CI set) fail it instead, so a CI run
    never passes by skipping what it was set up to test."""
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def rttm_turns(text: str) -> list[Any]:
    """The speaker turns of an RTTM document (what an export wrote)."""
    from engine.messages import SpeakerTurn

    turns = []
    for line in text.splitlines():
        f = line.split()
        assert len(f) == 10 and f[0] == "SPEAKER", line
        start, dur = float(f[3]), float(f[4])
        turns.append(SpeakerTurn(start, start + dur, f[7]))
    return turns


def der(ref: list[Any], hyp: list[Any], duration_s: float, collar_s: float = 0.25) -> float:
    """Diarization error rate of `hyp` against `ref` (turns) over the whole clip; `collar_s`
    is the tolerance each side of a reference boundary."""
    from engine.scoring import annotation, der_metric, uem

    return float(der_metric(collar_s)(annotation(ref), annotation(hyp), uem=uem(duration_s)))


def reference_turns(clip_id: str) -> list[Any]:
    """The manifest's reference turns of a clip (its RTTM)."""
    from engine.scoring import read_rttm

    rttm = clips()[clip_id]["rttm"]
    assert rttm, f"{clip_id} has no reference RTTM"
    return read_rttm(DATA / rttm)


def assert_one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """A failure a user caused: non-zero exit, exactly one line on stderr, no traceback."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session", autouse=True)
def validated_levels() -> None:
    """Validate the repo's quantization levels once, before any engine starts; otherwise
    each engine would start the background chain and compete for the 2 cores."""
    from engine.config import load_config
    from engine.models import levels
    from engine.models.quantize import QuantizeError
    from engine.models.registry import ModelError

    cfg = load_config()
    if levels.needs_build(cfg):
        try:
            levels.build_all(cfg)
        except (ModelError, QuantizeError):
            pass  # the tests that need the models report it themselves
