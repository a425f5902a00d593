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


def test_long_session_report_compares_the_first_ten_minutes_with_the_end(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: object) -> None:
    """`bench --console --minutes N` on a stand-in measurement (the pseudo-terminal run takes
    as long as the replay): the level is the last sample within the first 10 minutes of
    audio, the end the median of the last three; keys early and late apart."""
    import argparse

    from tests.conftest import DATA
    from tui.bench import LongSession, run_long_console_bench

    session = LongSession(60.0, samples=[(5.0, 2.0, 90.0), (60.0, 9.5, 100.0),
                                         (200.0, 40.0, 104.0), (400.0, 59.0, 106.0),
                                         (405.0, 60.0, 108.0), (410.0, 60.0, 107.0)],
                          keys=[(1.0, 0.05), (5.0, None), (55.0, 0.08)], finished=True)
    monkeypatch.setattr(tui.bench, "measure_long", lambda path, minutes, limit_s: session)
    monkeypatch.setattr("engine.bench.soak.build_loop_wav", lambda paths, seconds, out: 0.0)
    args = argparse.Namespace(corpus=DATA, clips=None, minutes=60.0, json=True)
    assert run_long_console_bench(None, args) == 0  # type: ignore[arg-type]
    report = json.loads(capsys.readouterr().out)
    assert report["console_rss_mb_at_10_min"] == 100.0
    assert report["console_rss_mb_at_end"] == 107.0 and report["console_rss_growth_pct"] == 7.0
    assert report["key_p95_ms_first_10_min"] == 1000 * KEY_TIMEOUT_S  # the timed-out press
    assert report["key_presses_last_20_pct"] == 1 and report["key_timed_out"] == 1
    session.finished = False
    assert run_long_console_bench(None, args) == 1  # type: ignore[arg-type]
