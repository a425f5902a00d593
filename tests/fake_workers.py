"""Fake worker handlers for supervisor tests (no models: fast, deterministic failures).

Used only where the behaviour under test is the supervisor's own (backoff timing, give-up),
so the real models would add minutes without testing anything more.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from engine.channel import Sender
from engine.config import Config
from engine.messages import EngineEvent, Role, WorkerInput
from engine.workers.base import Handler


class _Idle(Handler):
    def load(self) -> str:
        return "fake"

    def handle(self, msg: WorkerInput) -> Iterator[EngineEvent]:
        return iter(())


class _CrashOnLoad(_Idle):
    """Dies at load; with TRANSCREVAI_FAKE_ONCE set to a path, only the first time."""

    def load(self) -> str:
        marker = os.environ.get("TRANSCREVAI_FAKE_ONCE")
        if marker:
            if Path(marker).exists():
                return "fake"
            Path(marker).touch()
        os._exit(3)


def make_handler(config: Config, outputs: Mapping[Role, Sender]) -> _Idle:
    return _Idle()


def make_crashing_handler(config: Config, outputs: Mapping[Role, Sender]) -> _Idle:
    return _CrashOnLoad()


class _HoldsGilAtLoad(_Idle):
    """Loads for about TRANSCREVAI_FAKE_HOLD_S seconds inside one C call that never lets the
    GIL go (builtin sum over a range runs no bytecode), as a long native model load can: the
    heartbeat thread cannot run meanwhile, but the process's CPU time advances."""

    def load(self) -> str:
        import time

        hold = float(os.environ.get("TRANSCREVAI_FAKE_HOLD_S", "6"))
        best = float("inf")
        for _ in range(3):  # the fastest of three: the hold is then at least `hold` long
            t0 = time.perf_counter()
            sum(range(2_000_000))
            best = min(best, time.perf_counter() - t0)
        sum(range(int(2_000_000 / max(best, 1e-6) * hold)))
        return "fake"


def make_gil_holding_handler(config: Config, outputs: Mapping[Role, Sender]) -> _Idle:
    return _HoldsGilAtLoad()
