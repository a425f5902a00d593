"""Capture's pause: while paused no audio is read or sent; resuming keeps real-time pace.

Runs the capture handler in this process on real channels (pipes) and a real file."""

from __future__ import annotations

import multiprocessing as mp
import queue
import time

from engine.channel import Receiver, channel
from engine.config import load_config
from engine.messages import AudioChunk, OpenFile, Pause
from engine.workers.capture import CaptureHandler
from tests.conftest import clip_path


def _drain(rx: Receiver) -> int:
    n = 0
    while True:
        try:
            msg = rx.get(0.05)
        except queue.Empty:
            return n
        n += isinstance(msg, AudioChunk)


def _run(handler: CaptureHandler, seconds: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for _ in handler.step():
            pass


def test_pause_stops_reading_and_resume_continues() -> None:
    rx, tx = channel(mp.get_context("spawn"))
    handler = CaptureHandler(load_config(), {"transcription": tx})
    list(handler.handle(OpenFile(1, str(clip_path("ptbr_fleurs_000")), realtime=True)))
    _run(handler, 1.6)
    before = _drain(rx)
    assert 1 <= before <= 3  # ~1 s chunks at real-time pace
    list(handler.handle(Pause(True)))
    _run(handler, 1.5)
    assert _drain(rx) == 0
    assert handler.busy()  # still has the rest of the file to read
    list(handler.handle(Pause(False)))
    _run(handler, 1.6)
    after = _drain(rx)
    assert 1 <= after <= 3  # the paused time was not "caught up" in a burst
    tx.close()
