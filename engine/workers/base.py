"""The loop every worker process runs; the role-specific part is a Handler.

Shape: set the process title, load the model, announce READY, then
`get -> handle -> publish -> heartbeat` until Shutdown. A daemon thread sends heartbeats with
the worker's own RSS/CPU and exits the process if the parent disappears, so a killed engine
never leaves workers behind.
"""

from __future__ import annotations

import importlib
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from multiprocessing.queues import Queue
from typing import Any, Protocol

import psutil

from engine.config import Config
from engine.messages import (
    EngineEvent,
    Heartbeat,
    Role,
    Shutdown,
    WorkerError,
    WorkerInput,
    WorkerState,
    WorkerStatus,
)


class Handler(Protocol):
    """The role-specific part of a worker."""

    def load(self) -> str:
        """Load models; return a short description of what is in use (e.g. 'whisper-base int8')."""

    def handle(self, msg: WorkerInput) -> Iterator[EngineEvent]:
        """Process one input; yield the events to publish."""


def one_line(exc: BaseException) -> str:
    """An exception as one line for a user: the message without the traceback."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class _Beat:
    """State shared between the worker loop and its heartbeat thread."""

    def __init__(self) -> None:
        self.state = WorkerState.STARTING
        self.items_done = 0


def _heartbeat_loop(role: Role, beat: _Beat, inbox: Queue[Any], events: Queue[Any],
                    interval: float, parent_pid: int) -> None:
    proc = psutil.Process()
    proc.cpu_percent(None)
    while True:
        time.sleep(interval)
        if os.getppid() != parent_pid:  # parent died: we were re-parented
            os._exit(0)
        try:
            depth = inbox.qsize()
        except NotImplementedError:  # macOS
            depth = -1
        try:
            events.put(Heartbeat(role, os.getpid(), time.time(), proc.memory_info().rss,
                                 proc.cpu_percent(None), depth, beat.items_done, beat.state))
        except (ValueError, OSError):  # queue closed during shutdown
            return


def worker_entry(role: Role, config: Config, inboxes: Mapping[Role, Queue[Any]],
                 events: Queue[Any], parent_pid: int) -> None:
    """Process target (importable, so it works under the `spawn` start method)."""
    try:
        import setproctitle

        setproctitle.setproctitle(f"transcrevai: {role}")
    except ImportError:  # pragma: no cover - optional on exotic platforms
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine decides when workers stop
    _redirect_stderr(config, role)
    pid = os.getpid()
    inbox = inboxes[role]
    beat = _Beat()
    threading.Thread(target=_heartbeat_loop, name="heartbeat", daemon=True,
                     args=(role, beat, inbox, events, config.engine.heartbeat_interval,
                           parent_pid)).start()

    beat.state = WorkerState.LOADING
    events.put(WorkerStatus(role, pid, WorkerState.LOADING))
    t0 = time.perf_counter()
    try:
        module = importlib.import_module(f"engine.workers.{role}")
        handler: Handler = module.make_handler(config, inboxes)
        model = handler.load()
    except Exception as exc:  # a worker that cannot load reports why and exits
        beat.state = WorkerState.FAILED
        events.put(WorkerError(role, pid, one_line(exc), fatal=True))
        events.put(WorkerStatus(role, pid, WorkerState.FAILED, one_line(exc)))
        _drain_and_close(events)
        os._exit(1)
    beat.state = WorkerState.READY
    events.put(WorkerStatus(role, pid, WorkerState.READY, model=model,
                            load_s=time.perf_counter() - t0))

    while True:
        try:
            msg = inbox.get(timeout=0.5)
        except queue.Empty:
            continue
        if isinstance(msg, Shutdown):
            break
        beat.state = WorkerState.BUSY
        try:
            for event in handler.handle(msg):
                events.put(event)
        except Exception as exc:
            traceback.print_exc()
            events.put(WorkerError(role, pid, one_line(exc), fatal=False,
                                   stream_id=getattr(msg, "stream_id", None)))
        beat.items_done += 1
        beat.state = WorkerState.READY
    beat.state = WorkerState.STOPPED
    events.put(WorkerStatus(role, pid, WorkerState.STOPPED))
    _drain_and_close(events)


def _redirect_stderr(config: Config, role: Role) -> None:
    """Send this process's fd 2 (Python tracebacks and C++ library messages) to a log file.

    A user sees one-line errors through events; the details stay in the log.
    """
    log_dir = config.paths.log_dir
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(log_dir / f"{role}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 2)
    os.close(fd)
    os.write(2, f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}\n".encode())


def _drain_and_close(events: Queue[Any]) -> None:
    """Make sure queued events reach the pipe before the process exits."""
    events.close()
    events.join_thread()
