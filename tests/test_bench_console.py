"""`bench --console` report, without a terminal: timed-out presses and a console that
answers none."""

from __future__ import annotations

import json

import pytest

import tui.bench
from tui.bench import KEY_TIMEOUT_S, ConsoleTimes, run_console_bench


def _report(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
            times: ConsoleTimes) -> tuple[int, dict[str, object], str]:
    monkeypatch.setattr(tui.bench, "measure", lambda path: times)
    code = run_console_bench(None, "x.wav", True)  # type: ignore[arg-type]
    out = capsys.readouterr()
    return code, json.loads(out.out), out.err


def test_timed_out_presses_are_counted_and_enter_the_p95_at_the_timeout(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    times = ConsoleTimes([0.1], [0.3], [0.02] * 18, timed_out=2)
    code, report, _ = _report(monkeypatch, capsys, times)
    assert code == 0 and report["error"] is None
    assert report["key_timed_out"] == 2 and report["key_presses"] == 20
    assert report["key_latency_p50_ms"] == 20.0
    assert report["key_latency_p95_ms"] == 1000 * KEY_TIMEOUT_S


def test_no_answered_press_is_an_error_not_a_crash(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, report, err = _report(monkeypatch, capsys, ConsoleTimes([0.1], [0.3], [], 10))
    assert code == 1 and report["key_latency_p95_ms"] is None
    assert "no key press was answered" in err and report["key_timed_out"] == 10
