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
