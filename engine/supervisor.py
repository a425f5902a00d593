"""Owns the worker processes: spawn, watch, restart, route acknowledgements, stop.

A worker that exits (any code, a signal, a C++ abort), raises, stops sending heartbeats for
`heartbeat_timeout`, or stays above its RSS budget is restarted after an exponential backoff
(2, 4, 8, 16, 30 s by default); more than `max_restarts` within `restart_window_s` marks it
failed and the engine runs degraded. Results are the acknowledgements: the supervisor passes
them to capture, which keeps unacknowledged audio and re-sends it to a successor, so a
restart loses nothing and duplicates nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import cast

import psutil

from engine.channel import Receiver, Sender, channel, ready
from engine.config import Config
from engine.messages import (
    SAMPLE_RATE,
    Acked,
    Attach,
    EngineEvent,
    EngineMetrics,
    Enrol,
    FaultSpec,
    Heartbeat,
    ListDevices,
    ModelLevels,
    OpenFile,
    Pace,
    Pause,
    PeerFinished,
    ReloadModels,
    Resend,
    Role,
    Seek,
    Shutdown,
    StopStream,
    StreamError,
    StreamOpened,
    StreamRewound,
    WorkerError,
    WorkerMetrics,
    WorkerState,
    WorkerStatus,
)
from engine.workers.base import worker_entry
from engine.workers.spec import SPECS, WORKERS, Acknowledging

log = logging.getLogger("transcrevai.engine")


BUSY_CPU_S = 0.05  # CPU a silent worker must use per heartbeat_timeout to count as busy


def _cpu_s(pid: int | None) -> float | None:
    """A process's CPU time (user + system, s), or None when it cannot be read."""
    if pid is None:
        return None
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(t.user + t.system)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def backoff_delay(n: int, initial: float, cap: float) -> float:
    """Delay before the (n+1)-th restart within the window: initial * 2**n, capped."""
    return min(initial * (2 ** n), cap)


@dataclass
class _Slot:
    role: Role
    proc: BaseProcess | None = None
    state: WorkerState = WorkerState.STARTING
    model: str = ""
    started: float = 0.0
    last_beat: float = 0.0
    rss: int = 0
    peak_rss: int = 0
    settled_rss: int = 0  # worker's RSS after it last returned freed heap (its heartbeat)
    cpu_s: float | None = None  # its CPU time when it last beat, or was last seen busy
    cpu_at: float = 0.0  # ... and when that was
    over_since: float | None = None
    restart_times: deque[float] = field(default_factory=deque)
    restarts: int = 0
    crashes: int = 0
    memory_violations: int = 0
    hangs: int = 0
    restart_at: float | None = None
    kill_reason: str | None = None
    last_error: str = ""
    no_retry: bool = False
    items_done: int = 0
    queue_depth: int = 0  # audio blocks waiting in the worker's inbox (last heartbeat)
    ratios: deque[float] = field(default_factory=lambda: deque(maxlen=10))
    fault: FaultSpec | None = None
    control: Sender | None = None  # supervisor -> worker
    events: Receiver | None = None  # worker -> supervisor
    audio: Sender | None = None  # consumers: capture -> this worker (the supervisor's copy)
    audio_given: bool = False  # that channel was handed to a capture worker

    @property
    def pid(self) -> int:
        return (self.proc.pid or 0) if self.proc is not None else 0

    def ratio(self) -> float | None:
        return sum(self.ratios) / len(self.ratios) if self.ratios else None


class Supervisor:
    """The set of supervised worker processes for one console or CLI run."""

    def __init__(self, config: Config, diarization: bool = True,
                 faults: Sequence[FaultSpec] = (),
                 handler_modules: Mapping[Role, str] | None = None) -> None:
        self.config = config
        self.handler_modules = dict(handler_modules or {})  # tests swap in fake workers
        # every spec'd worker; `diarization=False` leaves out the optional ones
        self.specs = [w for w in WORKERS if w.required or diarization]
        self.roles: list[Role] = [w.role for w in self.specs]
        self.consumers: list[Role] = [w.role for w in self.specs if w.consumes_audio]
        self._acker: dict[type, Role] = {w.result: w.role for w in self.specs
                                         if w.result is not None}
        self._ctx = mp.get_context("spawn")
        self.slots: dict[Role, _Slot] = {r: _Slot(r) for r in self.roles}
        for spec in faults:
            if spec.role in self.slots:
                self.slots[spec.role].fault = spec
        self.streams: dict[int, OpenFile] = {}
        self.acks: dict[Role, dict[int, int]] = {r: {} for r in self.consumers}
        self.epochs: dict[Role, dict[int, int]] = {r: {} for r in self.consumers}
        self.finished: dict[Role, set[int]] = {r: set() for r in self.consumers}
        self.fed_s = 0.0
        self._pending_open: dict[int, OpenFile] = {}
        self.detections: list[tuple[Role, float]] = []  # (role, wall time a failure was seen)
        self._next_stream = 0
        self.stopped: set[int] = set()  # mic streams asked to stop
        self.paused = False
        self._stopped = False
        self._last_rss = 0.0
        self._last_metrics = 0.0
        self._chain_cancel = threading.Event()
        self._chain_thread: threading.Thread | None = None
        self._chain_event: ModelLevels | None = None  # set by the chain thread, sent by poll

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start every worker; they load their models in parallel."""
        # fewer malloc arenas keep worker RSS close to what it really uses
        os.environ.setdefault("MALLOC_ARENA_MAX", "2")
        # Live phrases give whisper a new input shape almost every decode. Measured over 25
        # decodes of varied lengths: oneDNN's per-shape primitive cache and glibc's sliding
        # mmap threshold grew transcription RSS +43% (and +50% over a 6-minute soak before it
        # levelled off); a fixed 4 MB mmap threshold and a 16-entry cache kept it flat, with
        # no measurable loss of speed.
        os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(4 << 20))
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")
        # offline by design: no library may reach a model hub or send telemetry (workers
        # inherit this environment); only an explicit allow_download lifts the hub part
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        os.environ.setdefault("DO_NOT_TRACK", "1")
        if not self.config.transcription.allow_download:
            for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
                os.environ.setdefault(key, "1")
        self._start_resource_tracker()
        for role in self.consumers:
            self._spawn(self.slots[role])
        self._spawn(self.slots["capture"])
        if self.config.models.quantize:
            self._chain_thread = threading.Thread(target=self._build_levels, daemon=True,
                                                  name="quantization-chain")
            self._chain_thread.start()

    def _build_levels(self) -> None:
        """Background thread: the model levels' own validation; poll() sends the outcome."""
        from engine.models.levels import validate_missing

        self._chain_event = validate_missing(self.config, self._chain_cancel)

    def _start_resource_tracker(self) -> None:
        """Start multiprocessing's resource tracker with its stderr in the engine log.

        A killed worker cannot unregister semaphores its libraries made (tqdm does), and the
        tracker would warn about them on the user's terminal at exit.
        """
        from multiprocessing import resource_tracker

        log_dir = self.config.paths.log_dir
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(log_dir / "engine.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError:
            fd = os.open(os.devnull, os.O_WRONLY)
        saved, saved_stream = os.dup(2), sys.stderr
        try:
            os.dup2(fd, 2)
            # a console (Textual) swaps sys.stderr for an object without a real descriptor;
            # the tracker hands sys.stderr's descriptor to its process
            sys.stderr = sys.__stderr__ or saved_stream
            resource_tracker.ensure_running()
        finally:
            sys.stderr = saved_stream
            os.dup2(saved, 2)
            os.close(saved)
            os.close(fd)

    def _spawn(self, slot: _Slot) -> None:
        """Start a worker on fresh channels (a dead peer may have left old ones broken)."""
        fault, slot.fault = slot.fault, None  # an injected fault hits the first incarnation only
        ctl_rx, ctl_tx = channel(self._ctx)
        ev_rx, ev_tx = channel(self._ctx)
        audio_rx: Receiver | None = None
        outputs: dict[Role, Sender] = {}
        if slot.role == "capture":
            for role in self.consumers:  # a capture that died may have left a channel broken
                consumer = self.slots[role]
                fresh = consumer.audio is not None and not consumer.audio_given
                outputs[role] = (consumer.audio if fresh and consumer.audio is not None
                                 else self._new_audio_channel(consumer))
                consumer.audio_given = True
        else:
            audio_rx, tx = channel(self._ctx)
            self._replace_audio(slot, tx)
        proc = self._ctx.Process(
            target=worker_entry, name=f"transcrevai-{slot.role}", daemon=True,
            args=(slot.role, self.config, ctl_rx, audio_rx, outputs, ev_tx, os.getpid(), fault,
                  self.handler_modules.get(slot.role, SPECS[slot.role].entry)))
        proc.start()
        for end in (ctl_rx, ev_tx, audio_rx):  # the child has its copies now
            if end is not None:
                end.conn.close()
        if slot.control is not None:
            slot.control.close(timeout=0.0)
        slot.control, slot.events = ctl_tx, ev_rx
        now = time.monotonic()
        slot.proc, slot.state, slot.started, slot.last_beat = proc, WorkerState.STARTING, now, now
        slot.over_since = slot.kill_reason = slot.restart_at = None
        slot.last_error = ""
        if slot.role != "capture":
            self._give_capture(slot)
        if slot.role == "diarization":  # a restarted diarizer missed these
            for sid, stream in self.streams.items():
                if stream.live and sid in self.finished.get("transcription", ()):
                    self._send("diarization", PeerFinished("transcription", sid))

    def _new_audio_channel(self, consumer: _Slot) -> Sender:
        """A fresh capture -> consumer channel; the consumer is told to read from it."""
        rx, tx = channel(self._ctx)
        if consumer.control is not None:
            consumer.control.put(Attach(consumer.role, rx))
        rx.conn.close()
        self._replace_audio(consumer, tx)
        return tx

    @staticmethod
    def _replace_audio(consumer: _Slot, tx: Sender) -> None:
        if consumer.audio is not None:
            consumer.audio.conn.close()
        consumer.audio, consumer.audio_given = tx, False

    def _give_capture(self, consumer: _Slot) -> None:
        capture = self.slots.get("capture")
        if capture is not None and capture.control is not None and consumer.audio is not None:
            capture.control.put(Attach(consumer.role, consumer.audio))
            consumer.audio_given = True

    def _send(self, role: Role, msg: object) -> None:
        control = self.slots[role].control
        if control is not None:
            control.put(msg)

    def stop(self, timeout: float = 3.0) -> None:
        """Ask workers to finish, then terminate whatever is left within `timeout`."""
        if self._stopped:
            return
        self._stopped = True
        self._chain_cancel.set()
        for role in self.roles:
            self._send(role, Shutdown())
        procs = [s.proc for s in self.slots.values() if s.proc is not None]
        deadline = time.monotonic() + timeout
        while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
            self._read_events(0.02)  # keep pipes moving so workers can flush and exit
            for proc in procs:
                proc.join(0.01)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(0.5)
            if proc.is_alive():
                proc.kill()
                proc.join(0.5)
        for slot in self.slots.values():
            for end in (slot.control, slot.audio):
                if end is not None:
                    end.close(timeout=0.0)
            if slot.events is not None:
                slot.events.close()

    def _read_events(self, timeout: float, max_batch: int = 512) -> list[EngineEvent]:
        receivers = [s.events for s in self.slots.values() if s.events is not None]
        batch: list[EngineEvent] = []
        if not receivers:
            time.sleep(timeout)
            return batch
        for rx in ready(receivers, timeout):
            while len(batch) < max_batch:
                try:
                    batch.append(rx.get_nowait())
                except queue.Empty:
                    break
                except (EOFError, OSError):  # that worker is gone; its slot handles the rest
                    self._drop_events(rx)
                    break
        return batch

    def _drop_events(self, rx: Receiver) -> None:
        for slot in self.slots.values():
            if slot.events is rx:
                slot.events = None
        rx.close()

    def __enter__(self) -> Supervisor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------- commands
    def open_file(self, path: str, realtime: bool = False, language: str | None = None,
                  speed: float = 1.0) -> int:
        """Queue a file for reading; returns its stream id."""
        self._next_stream += 1
        msg = OpenFile(self._next_stream, str(path), realtime, language, speed=speed)
        self._pending_open[msg.stream_id] = msg
        self._send("capture", msg)
        return msg.stream_id

    def open_mic(self, device: str | None = None, language: str | None = None) -> tuple[int, str]:
        """Start recording from a microphone into a new WAV under the recordings folder;
        returns the stream id and the WAV's path."""
        from engine.audio.recorder import session_wav_path

        path = str(session_wav_path(self.config.paths.recordings_dir))
        self._next_stream += 1
        msg = OpenFile(self._next_stream, path, True, language, live=True, source="mic",
                       device=device if device is not None else (self.config.live.device
                                                                 or None))
        self._pending_open[msg.stream_id] = msg
        self._send("capture", msg)
        return msg.stream_id, path

    def open_live_file(self, path: str, language: str | None = None, speed: float = 1.0) -> int:
        """A file fed at real-time pace through the live path (as if spoken into the mic):
        benchmarks and tests of the streaming policy without a sound card."""
        self._next_stream += 1
        msg = OpenFile(self._next_stream, str(path), True, language, speed=speed, live=True)
        self._pending_open[msg.stream_id] = msg
        self._send("capture", msg)
        return msg.stream_id

    def list_devices(self) -> None:
        """Ask capture for the input devices; an InputDevices event answers."""
        self._send("capture", ListDevices())

    def stop_stream(self, stream_id: int) -> None:
        """Stop a microphone stream, or a file stream where it is; its last results follow."""
        self.stopped.add(stream_id)
        self._send("capture", StopStream(stream_id))

    def seek(self, stream_id: int, by_s: float,
             spans: tuple[tuple[float, float], ...] = ()) -> None:
        """Move a paced replay's play position by `by_s` seconds, back to a phrase's start
        when it lands inside one of `spans` (StreamRewound follows from capture, then from
        each consumer as it restarts there)."""
        self._send("capture", Seek(stream_id, by_s, spans))

    def enrol(self, request: Enrol) -> None:
        """Ask diarization (it holds the voice model) to save a speaker's voice; a
        VoiceEnrolled event answers."""
        self._send("diarization", request)

    def pause(self, paused: bool) -> None:
        """Stop or resume reading sources (a restarted capture inherits the state)."""
        self.paused = paused
        self._send("capture", Pause(paused))

    def set_speed(self, speed: float) -> None:
        """Play real-time file streams at `speed` from now (a restarted capture keeps it)."""
        for table in (self.streams, self._pending_open):
            for sid, msg in table.items():
                if msg.realtime and msg.source == "file":
                    table[sid] = dataclasses.replace(msg, speed=speed)
        self._send("capture", Pace(speed))

    def kill(self, role: Role) -> None:
        """SIGKILL a worker now (fault injection from the supervisor's side)."""
        slot = self.slots[role]
        if slot.proc is not None and slot.proc.is_alive():
            slot.kill_reason = "killed by the supervisor (SIGKILL)"
            os.kill(slot.pid, signal.SIGKILL)

    # -------------------------------------------------------------- events
    def poll(self, timeout: float = 0.1, max_batch: int = 512) -> list[EngineEvent]:
        """Events that arrived within `timeout` (a batch), plus the supervisor's own."""
        batch = self._read_events(timeout, max_batch)
        extra: list[EngineEvent] = []
        for ev in batch:
            extra += self._observe(ev)
        extra += self._supervise(time.monotonic())
        if self._chain_event is not None:
            ev, self._chain_event = self._chain_event, None
            if not ev.error:
                for role in self.consumers:
                    self._send(role, ReloadModels())
            extra.append(ev)
        return batch + extra

    def _observe(self, ev: EngineEvent) -> list[EngineEvent]:
        now = time.monotonic()
        acker = self._acker.get(type(ev))
        if acker is not None:  # a worker's result: the audio it covers is done with
            res = cast(Acknowledging, ev)
            return self._acknowledge(acker, res.stream_id, res.upto_sample, res.final,
                                     res.work_s, res.audio_s)
        match ev:
            case Heartbeat(role=role):
                slot = self.slots[role]
                if slot.proc is not None and ev.pid == slot.pid:
                    slot.last_beat, slot.items_done = now, ev.items_done
                    slot.queue_depth = ev.queue_depth
                    slot.settled_rss = ev.settled_rss
                    slot.cpu_s, slot.cpu_at = _cpu_s(slot.pid), now
                    if role == "capture":
                        self.fed_s = ev.fed_s
            case WorkerStatus(role=role, state=state):
                slot = self.slots[role]
                if ev.pid == slot.pid and slot.state not in (WorkerState.FAILED,):
                    slot.state = state
                    slot.last_beat = now
                    slot.cpu_s, slot.cpu_at = _cpu_s(slot.pid), now
                    if state == WorkerState.READY:
                        slot.model = ev.model
                        if slot.restarts:
                            log.info("%s worker ready again after restart %d", role,
                                     slot.restarts)
            case WorkerError(role=role, message=msg):
                slot = self.slots[role]
                slot.last_error = msg
                slot.no_retry = slot.no_retry or not ev.retry
                log.warning("%s worker error: %s", role, msg)
            case StreamRewound(stream_id=sid, role="capture", to_sample=to):
                self.fed_s = to / SAMPLE_RATE  # the position moves now, not at the next beat
            case StreamRewound(stream_id=sid, role=role, to_sample=to) if role in self.acks:
                self.acks[role][sid] = to  # results from here on are after the seek
                self._send("capture", Acked(role, sid, to, rewound=True))
            case StreamOpened(stream_id=sid):
                if sid in self._pending_open:
                    self.streams[sid] = self._pending_open.pop(sid)
            case StreamError(stream_id=sid, partial=False):
                self._pending_open.pop(sid, None)
                self.streams.pop(sid, None)
            case _:
                pass
        return []

    def _acknowledge(self, role: Role, sid: int, upto: int, final: bool, work_s: float,
                     audio_s: float) -> list[EngineEvent]:
        if role not in self.acks:
            return []
        self.acks[role][sid] = max(self.acks[role].get(sid, 0), upto)
        if audio_s > 0:
            self.slots[role].ratios.append(work_s / audio_s)
        if final:
            self.finished[role].add(sid)
            stream = self.streams.get(sid)
            if role == "transcription" and "diarization" in self.slots and stream is not None \
                    and stream.live:
                self._send("diarization", PeerFinished(role, sid))
            if all(sid in self.finished[r] for r in self.consumers):
                self.streams.pop(sid, None)
        self._send("capture", Acked(role, sid, upto))
        return []

    # -------------------------------------------------------------- supervision
    def _supervise(self, now: float) -> list[EngineEvent]:
        out: list[EngineEvent] = []
        check_rss = now - self._last_rss >= 0.25
        if check_rss:
            self._last_rss = now
        for slot in self.slots.values():
            if slot.state == WorkerState.FAILED:
                continue
            if slot.restart_at is not None:
                if now >= slot.restart_at:
                    out += self._restart(slot)
                continue
            proc = slot.proc
            if proc is None:
                continue
            if proc.is_alive():
                if slot.state == WorkerState.STOPPED or slot.kill_reason is not None:
                    continue  # exiting, or already being killed
                silent = now - slot.last_beat
                if silent > self.config.engine.heartbeat_timeout and not self._busy(slot, silent,
                                                                                  now):
                    slot.hangs += 1
                    self._kill_for(slot, f"hung (no heartbeat for "
                                         f"{now - slot.last_beat:.1f} s)")
                elif check_rss:
                    self._watch_rss(slot, now)
                continue
            if slot.state == WorkerState.STOPPED and not self._stopped:
                slot.state = WorkerState.FAILED
            if self._stopped or slot.state == WorkerState.STOPPED:
                continue
            reason = slot.kill_reason or describe_exit(proc.exitcode)
            if slot.kill_reason is None:
                slot.crashes += 1
            if slot.last_error and slot.last_error not in reason:
                reason = f"{reason}: {slot.last_error}"
            out += self._failed(slot, now, reason)
        if now - self._last_metrics >= self.config.engine.heartbeat_interval:
            self._last_metrics = now
            out.append(self.metrics(now))
        return out

    def _busy(self, slot: _Slot, silent: float, now: float) -> bool:
        """A silent worker still using CPU is working, not hung: a native call that holds the
        GIL (its heartbeat thread cannot run), or a niced worker starved by a busy machine
        (measured: a CPU-bound job beside the engine kept diarization silent 5 s at a time
        while it loaded, and it was killed three times and given up). It gets busy_grace_s."""
        if silent > self.config.engine.busy_grace_s or slot.cpu_s is None:
            return False
        if now - slot.cpu_at < self.config.engine.heartbeat_timeout:
            return True  # it used CPU in the last window: judge the next one when it ends
        cpu = _cpu_s(slot.pid)
        if cpu is None or cpu - slot.cpu_s < BUSY_CPU_S:
            return False
        slot.cpu_s, slot.cpu_at = cpu, now
        return True

    def _watch_rss(self, slot: _Slot, now: float) -> None:
        try:
            slot.rss = psutil.Process(slot.pid).memory_info().rss
        except psutil.Error:
            return
        slot.peak_rss = max(slot.peak_rss, slot.rss)
        limit = self.config.limits.budget_mb(slot.role) * 2**20
        if slot.rss <= limit:
            slot.over_since = None
            return
        slot.over_since = slot.over_since or now
        if now - slot.over_since >= self.config.limits.over_limit_s:
            slot.memory_violations += 1
            self._kill_for(slot, f"over its memory limit ({slot.rss / 2**20:.0f} MB RSS > "
                                 f"{limit / 2**20:.0f} MB)")

    def _kill_for(self, slot: _Slot, reason: str) -> None:
        slot.kill_reason = reason
        log.warning("%s worker %s: killing pid %d", slot.role, reason, slot.pid)
        try:
            os.kill(slot.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _failed(self, slot: _Slot, now: float, reason: str) -> list[EngineEvent]:
        """A worker is gone: schedule its successor, or give up on it."""
        eng = self.config.engine
        pid = slot.pid
        window_start = now - eng.restart_window_s
        while slot.restart_times and slot.restart_times[0] < window_start:
            slot.restart_times.popleft()
        self.detections.append((slot.role, time.time()))
        events: list[EngineEvent] = [WorkerError(slot.role, pid, f"{slot.role} worker {reason}",
                                                 fatal=False)]
        if slot.no_retry or len(slot.restart_times) >= eng.max_restarts:
            why = reason if slot.no_retry else (
                f"{reason}; gave up after {len(slot.restart_times)} restarts within "
                f"{eng.restart_window_s:g} s")
            slot.state = WorkerState.FAILED
            log.error("%s worker failed: %s", slot.role, why)
            return events + [WorkerStatus(slot.role, pid, WorkerState.FAILED, why,
                                          restarts=slot.restarts)]
        delay = backoff_delay(len(slot.restart_times), eng.backoff_initial_s, eng.backoff_max_s)
        slot.restart_times.append(now)
        slot.restart_at = now + delay
        slot.state = WorkerState.RESTARTING
        log.warning("%s worker %s; restarting in %g s (restart %d of %d allowed)", slot.role,
                    reason, delay, len(slot.restart_times), eng.max_restarts)
        return events + [WorkerStatus(slot.role, pid, WorkerState.RESTARTING,
                                      f"restarting in {delay:g} s: {reason}", retry_in=delay,
                                      restarts=slot.restarts)]

    def _restart(self, slot: _Slot) -> list[EngineEvent]:
        slot.restarts += 1
        self._spawn(slot)
        if slot.role == "capture":
            if self.paused:
                self._send("capture", Pause(True))
            for sid, open_msg in self.streams.items():
                resume = []
                for r in self.consumers:
                    if sid in self.finished[r]:
                        continue
                    epoch = self.epochs[r].get(sid, 0) + 1
                    self.epochs[r][sid] = epoch
                    resume.append((r, epoch, self.acks[r].get(sid, 0)))
                fed = int(self.fed_s * SAMPLE_RATE) if sid == max(self.streams) else 0
                self._send("capture", dataclasses.replace(
                    open_msg, resume=tuple(resume), catch_up_samples=fed))
                if sid in self.stopped:
                    self._send("capture", StopStream(sid))
        else:
            acks = tuple((sid, self.acks[slot.role].get(sid, 0)) for sid in self.streams
                         if sid not in self.finished[slot.role])
            for sid, _ in acks:
                self.epochs[slot.role][sid] = self.epochs[slot.role].get(sid, 0) + 1
            self._send("capture", Resend(slot.role, acks))
        log.info("%s worker restarted (pid %d, restart %d)", slot.role, slot.pid, slot.restarts)
        return [WorkerStatus(slot.role, slot.pid, WorkerState.STARTING,
                             f"restart {slot.restarts}", restarts=slot.restarts)]

    # -------------------------------------------------------------- views
    def metrics(self, now: float | None = None) -> EngineMetrics:
        now = time.monotonic() if now is None else now
        workers = tuple(
            WorkerMetrics(s.role, s.state, s.pid, s.rss,
                          self.config.limits.budget_mb(s.role) * 2**20, now - s.last_beat,
                          s.restarts, s.crashes, s.memory_violations, s.hangs, s.ratio(),
                          s.items_done, s.model, s.peak_rss, s.queue_depth)
            for s in self.slots.values())
        done_s = max(self.acks.get("transcription", {}).values(), default=0) / SAMPLE_RATE
        return EngineMetrics(workers, max(0.0, self.fed_s - done_s), self.fed_s)

    def state(self, role: Role) -> WorkerState:
        return self.slots[role].state

    @property
    def procs(self) -> dict[Role, BaseProcess]:
        return {r: s.proc for r, s in self.slots.items() if s.proc is not None}
