"""Supervision with fake workers: backoff sequence, give-up, restart timing, shutdown.

The fake handlers (tests/fake_workers.py) stand in for models only; the processes, channels,
heartbeats and supervisor are the real ones.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from engine.config import Config, load_config
from engine.messages import EngineEvent, WorkerState, WorkerStatus
from engine.supervisor import Supervisor, backoff_delay

FAKE = "tests.fake_workers"


def _config(tmp_path: Path, **engine: float) -> Config:
    cfg = load_config()
    cfg = dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, log_dir=tmp_path))
    return cfg.replace("engine", **engine) if engine else cfg


def _run_until(engine: Supervisor, done: object, limit: float) -> list[tuple[float, EngineEvent]]:
    """Poll the engine, recording (time, event), until done(events) or `limit` seconds."""
    seen: list[tuple[float, EngineEvent]] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        for ev in engine.poll(0.05):
            seen.append((time.monotonic(), ev))
        if done(seen):  # type: ignore[operator]
            break
    return seen


def _statuses(seen: list[tuple[float, EngineEvent]], role: str) -> list[tuple[float,
                                                                              WorkerStatus]]:
    return [(t, e) for t, e in seen if isinstance(e, WorkerStatus) and e.role == role]


def test_backoff_doubles_caps_and_gives_up(tmp_path: Path) -> None:
    cfg = _config(tmp_path, backoff_initial_s=0.1, backoff_max_s=0.4, max_restarts=4,
                  restart_window_s=60.0)
    modules = {"capture": f"{FAKE}:make_crashing_handler", "transcription": FAKE}
    with Supervisor(cfg, diarization=False, handler_modules=modules) as engine:
        seen = _run_until(engine, lambda s: any(
            isinstance(e, WorkerStatus) and e.state == WorkerState.FAILED for _, e in s), 30)
        statuses = _statuses(seen, "capture")
        delays = [e.retry_in for _, e in statuses if e.state == WorkerState.RESTARTING]
        assert delays == [0.1, 0.2, 0.4, 0.4]
        failed = [e for _, e in statuses if e.state == WorkerState.FAILED]
        assert failed and "gave up after 4 restarts" in failed[0].detail
        # each successor started no earlier than its delay
        restarting = [t for t, e in statuses if e.state == WorkerState.RESTARTING]
        started = [t for t, e in statuses if e.state == WorkerState.STARTING
                   and e.detail.startswith("restart")]
        assert len(started) == 4
        for (t_dead, delay), t_new in zip(zip(restarting, delays, strict=False), started,
                                          strict=False):
            assert t_new - t_dead >= delay - 0.02
        # the other worker was never disturbed
        assert engine.slots["transcription"].restarts == 0
        assert engine.state("transcription") == WorkerState.READY


def test_first_restart_waits_two_seconds(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSCREVAI_FAKE_ONCE", str(tmp_path / "crashed-once"))
    cfg = _config(tmp_path)  # the default backoff
    assert backoff_delay(0, cfg.engine.backoff_initial_s, cfg.engine.backoff_max_s) == 2.0
    modules = {"capture": f"{FAKE}:make_crashing_handler", "transcription": FAKE}
    with Supervisor(cfg, diarization=False, handler_modules=modules) as engine:
        seen = _run_until(engine, lambda s: any(
            isinstance(e, WorkerStatus) and e.role == "capture"
            and e.state == WorkerState.READY for _, e in s), 30)
        statuses = _statuses(seen, "capture")
        t_dead = next(t for t, e in statuses if e.state == WorkerState.RESTARTING)
        t_new = next(t for t, e in statuses if e.state == WorkerState.STARTING
                     and e.detail == "restart 1")
        assert 1.95 <= t_new - t_dead <= 2.5
        assert engine.state("capture") == WorkerState.READY


def test_backoff_formula() -> None:
    assert [backoff_delay(n, 2.0, 30.0) for n in range(6)] == [2, 4, 8, 16, 30, 30]


def test_stop_ends_every_worker_within_three_seconds(tmp_path: Path) -> None:
    engine = Supervisor(_config(tmp_path), diarization=True,
                    handler_modules={r: FAKE for r in ("capture", "transcription",
                                                       "diarization")})
    engine.start()
    _run_until(engine, lambda s: all(sl.state == WorkerState.READY
                                     for sl in engine.slots.values()), 30)
    procs = list(engine.procs.values())
    t0 = time.monotonic()
    engine.stop()
    assert time.monotonic() - t0 <= 3.0
    assert not any(p.is_alive() for p in procs)
    assert all(p.exitcode == 0 for p in procs)  # they finished, not killed


def test_metrics_report_every_worker(tmp_path: Path) -> None:
    from engine.messages import EngineMetrics

    cfg = _config(tmp_path, heartbeat_interval=0.2)
    modules = {r: FAKE for r in ("capture", "transcription", "diarization")}
    with Supervisor(cfg, diarization=True, handler_modules=modules) as engine:
        seen = _run_until(engine, lambda s: sum(isinstance(e, EngineMetrics) for _, e in s) >= 8
                          and all(sl.rss > 0 for sl in engine.slots.values()), 30)
        last = [e for _, e in seen if isinstance(e, EngineMetrics)][-1]
        by_role = {w.role: w for w in last.workers}
        assert set(by_role) == {"capture", "transcription", "diarization"}
        for w in by_role.values():
            assert w.state == WorkerState.READY and w.model == "fake"
            assert 0 < w.rss_bytes < w.rss_limit_bytes
            assert w.heartbeat_age_s < cfg.engine.heartbeat_timeout  # beats keep arriving
            assert (w.restarts, w.crashes, w.memory_violations, w.hangs) == (0, 0, 0, 0)
        budget = cfg.limits.budget_mb("transcription")
        assert by_role["transcription"].rss_limit_bytes == budget * 2**20


@pytest.mark.parametrize("grace, hung", [(30.0, False), (1.5, True)])
def test_a_silent_worker_using_cpu_is_busy_until_its_grace_ends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grace: float, hung: bool) -> None:
    """A load that holds the GIL for ~4 s silences the heartbeat thread while the CPU time
    advances: with heartbeat_timeout 1 s it is not called hung within busy_grace_s (it comes
    up READY, no restart); past a shorter grace it is killed as hung. (The injected `hang`
    fault, which sleeps, is still caught at heartbeat_timeout: tests/test_faults.py.)"""
    monkeypatch.setenv("TRANSCREVAI_FAKE_HOLD_S", "4")
    cfg = _config(tmp_path, heartbeat_interval=0.2, heartbeat_timeout=1.0, busy_grace_s=grace,
                  backoff_initial_s=30.0)
    modules = {"capture": f"{FAKE}:make_gil_holding_handler", "transcription": FAKE}
    with Supervisor(cfg, diarization=False, handler_modules=modules) as engine:
        seen = _run_until(engine, lambda s: any(
            e.role == "capture" and e.state in (WorkerState.READY, WorkerState.RESTARTING)
            for _, e in _statuses(s, "capture")), 60)
        states = [e.state for _, e in _statuses(seen, "capture")]
        slot = engine.slots["capture"]
        if hung:
            assert WorkerState.RESTARTING in states and slot.hangs == 1, states
        else:
            assert WorkerState.READY in states and slot.hangs == 0 and slot.restarts == 0, states
