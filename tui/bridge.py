"""A thread that owns the engine for the console and posts its events in batches.

The app never touches the engine's channels: commands go into a thread-local queue, and
events come back as one message per batch (at most ~20 per second), so a flood of engine
events costs the UI one refresh, not one per event.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from engine.config import Config
from engine.messages import EngineEvent, EngineFailed, Enrol
from engine.runner import EngineFailure, Runner
from engine.supervisor import Supervisor

BATCH_S = 0.05
log = logging.getLogger("transcrevai.console")


@dataclass(frozen=True)
class OpenCommand:
    path: str
    realtime: bool
    language: str | None = None
    speed: float = 1.0


@dataclass(frozen=True)
class RecordCommand:
    language: str | None = None
    device: str | None = None


@dataclass(frozen=True)
class StopRecordingCommand:
    pass


@dataclass(frozen=True)
class SeekCommand:
    by_s: float


Command = OpenCommand | RecordCommand | StopRecordingCommand | SeekCommand


class EngineBridge(threading.Thread):
    """Runs the engine; `post(batch)` is called with lists of events from this thread."""

    def __init__(self, config: Config, post: Callable[[list[EngineEvent]], None]) -> None:
        super().__init__(name="engine-bridge", daemon=True)
        self.config = config
        self.post = post
        self.commands: queue.Queue[Command | None] = queue.Queue()
        self._batch: list[EngineEvent] = []
        self._last_post = 0.0
        self._stop_event = threading.Event()
        self.engine: Supervisor | None = None

    def open(self, path: str, realtime: bool = True, language: str | None = None,
             speed: float = 1.0) -> None:
        self.commands.put(OpenCommand(path, realtime, language, speed))

    def record(self, language: str | None = None, device: str | None = None) -> None:
        """Start a microphone session (WAV + journal under recordings/)."""
        self.commands.put(RecordCommand(language, device))

    def list_devices(self) -> None:
        """Thread-safe (like pause): capture answers with an InputDevices event."""
        if self.engine is not None:
            self.engine.list_devices()

    def stop_recording(self) -> None:
        self.commands.put(StopRecordingCommand())

    def set_speed(self, speed: float) -> None:
        """Thread-safe (like pause): a replay plays on at `speed` from where it is."""
        if self.engine is not None:
            self.engine.set_speed(speed)

    def seek(self, by_s: float) -> None:
        """A paced replay plays on `by_s` seconds later (negative: earlier)."""
        self.commands.put(SeekCommand(by_s))

    def enrol(self, request: Enrol) -> None:
        """Thread-safe: diarization saves the voice and answers with VoiceEnrolled."""
        if self.engine is not None:
            self.engine.enrol(request)

    def pause(self, paused: bool) -> None:
        """Thread-safe: the engine's command channel takes messages from any thread."""
        if self.engine is not None:
            self.engine.pause(paused)

    def stop(self) -> None:
        self._stop_event.set()
        self.commands.put(None)

    def _collect(self, ev: EngineEvent) -> None:
        self._batch.append(ev)
        now = time.monotonic()
        if now - self._last_post >= BATCH_S:
            self._flush(now)

    def _flush(self, now: float) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            self.post(batch)
        self._last_post = now

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # never die silently: the console shows it, the log has it
            log.exception("engine bridge failed")
            self.post([EngineFailed(f"engine failed: {exc}")])

    def _run(self) -> None:
        from engine.audio.recorder import repair_recordings

        # a session cut short by a crash or power cut: make its WAV whole before anything
        for path in repair_recordings(self.config.paths.recordings_dir):
            log.warning("repaired the header of %s (an interrupted recording)", path)
        engine = self.engine = Supervisor(self.config, diarization=self.config.diarization.enabled)
        try:
            engine.start()
            # the console folds the events into its own transcript: the runner keeps none
            runner = Runner(engine, on_event=self._collect, should_stop=self._stop_event.is_set,
                            keep_transcripts=False)
            while not self._stop_event.is_set():
                try:
                    cmd = self.commands.get(timeout=0.05)
                except queue.Empty:
                    cmd = None
                try:
                    match cmd:
                        case OpenCommand() if runner.live is not None:
                            # another file while one replays: that one ends where it is
                            runner.stop_live()
                            self.commands.put(cmd)  # opened once its last results are in
                            self._drain_live(runner)
                        case OpenCommand(realtime=True):
                            # at speed 1 or 2 a replay goes through the live path, as the
                            # microphone would: partial line, phrases, live speaker labels,
                            # then the same speaker pass at the end
                            runner.start_live(cmd.path, cmd.language, cmd.speed,
                                              session_dir=self.config.paths.recordings_dir)
                        case OpenCommand():
                            runner.transcribe(cmd.path, realtime=cmd.realtime,
                                              language=cmd.language, speed=cmd.speed,
                                              session_dir=self.config.paths.recordings_dir)
                        case RecordCommand() if runner.live is None:
                            runner.start_live(None, cmd.language, device=cmd.device)
                        case StopRecordingCommand():
                            runner.stop_live()
                        case SeekCommand():
                            runner.seek(cmd.by_s)
                        case _:
                            runner.pump(0.05)
                    self._finish_live(runner)
                except EngineFailure as exc:
                    self._collect(EngineFailed(str(exc)))
                self._flush(time.monotonic())
            if runner.live is not None:  # quitting while recording: keep every last phrase
                runner.stop_live()
                self._drain_live(runner)
        finally:
            engine.stop()
            self._flush(time.monotonic())

    def _drain_live(self, runner: Runner, limit_s: float = 5.0) -> None:
        """Wait (up to limit_s) for a stopped live stream's last results, then close it."""
        deadline = time.monotonic() + limit_s
        while runner.live is not None and time.monotonic() < deadline:
            runner.pump(0.05)
            self._finish_live(runner)
            self._flush(time.monotonic())
        if runner.live is not None:
            runner.close_live(runner.live)
            runner.live = None

    @staticmethod
    def _finish_live(runner: Runner) -> None:
        live = runner.live
        if live is not None and live.done:
            runner.close_live(live)
            runner.live = None
