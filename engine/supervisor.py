"""Owns the worker processes: spawn, route commands, collect events, stop.

Every worker is started with the `spawn` context and talks only through queues. This
module is the seam where restarts, backoff and memory watching hook in: it already notices
a worker that died and reports it as a FAILED status event.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any

from engine.config import Config
from engine.messages import (
    EngineEvent,
    OpenFile,
    Role,
    Shutdown,
    WorkerError,
    WorkerState,
    WorkerStatus,
)
from engine.workers.base import worker_entry


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class Engine:
    """The set of worker processes for one console or CLI run."""

    def __init__(self, config: Config, diarization: bool = True) -> None:
        self.config = config
        self.roles: list[Role] = ["capture", "transcription"]
        if diarization:
            self.roles.append("diarization")
        self._ctx = mp.get_context("spawn")
        self.events: Queue[Any] = self._ctx.Queue()
        self.inboxes: dict[Role, Queue[Any]] = {r: self._ctx.Queue() for r in self.roles}
        self.procs: dict[Role, BaseProcess] = {}
        self.status: dict[Role, WorkerStatus] = {}
        self._next_stream = 0
        self._stopped = False

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start every worker; they load their models in parallel."""
        # fewer malloc arenas keep worker RSS close to what it really uses
        os.environ.setdefault("MALLOC_ARENA_MAX", "2")
        for role in self.roles:
            self._spawn(role)

    def _spawn(self, role: Role) -> None:
        proc = self._ctx.Process(target=worker_entry, name=f"transcrevai-{role}", daemon=True,
                                 args=(role, self.config, self.inboxes, self.events, os.getpid()))
        proc.start()
        self.procs[role] = proc
        self.status[role] = WorkerStatus(role, proc.pid or 0, WorkerState.STARTING)

    def stop(self, timeout: float = 3.0) -> None:
        """Ask workers to finish, then terminate whatever is left within `timeout`."""
        if self._stopped:
            return
        self._stopped = True
        for inbox in self.inboxes.values():
            try:
                inbox.put(Shutdown())
            except (ValueError, OSError):
                pass
        deadline = time.monotonic() + timeout
        while any(p.is_alive() for p in self.procs.values()) and time.monotonic() < deadline:
            # keep pipes moving: a worker cannot exit while its queue feeder is blocked on a
            # full pipe (events nobody reads, or the inbox of a worker that already died)
            self._discard(self.events)
            for role, proc in self.procs.items():
                if not proc.is_alive():
                    self._discard(self.inboxes[role])
            for proc in self.procs.values():
                proc.join(0.02)
        for proc in self.procs.values():
            if proc.is_alive():
                proc.terminate()
                proc.join(0.5)
            if proc.is_alive():
                proc.kill()
                proc.join(0.5)
        for q in [self.events, *self.inboxes.values()]:
            q.cancel_join_thread()
            q.close()

    @staticmethod
    def _discard(q: Queue[Any]) -> None:
        try:
            while True:
                q.get_nowait()
        except (queue.Empty, ValueError, OSError, EOFError):
            pass

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------- commands
    def open_file(self, path: str, realtime: bool = False, language: str | None = None) -> int:
        """Queue a file for reading; returns its stream id."""
        self._next_stream += 1
        self.inboxes["capture"].put(OpenFile(self._next_stream, str(path), realtime, language))
        return self._next_stream

    # -------------------------------------------------------------- events
    def poll(self, timeout: float = 0.1, max_batch: int = 512) -> list[EngineEvent]:
        """Events that arrived within `timeout` (a batch), plus any worker found dead."""
        batch: list[EngineEvent] = []
        try:
            batch.append(self.events.get(timeout=timeout))
            while len(batch) < max_batch:
                batch.append(self.events.get_nowait())
        except queue.Empty:
            pass
        for ev in batch:
            if isinstance(ev, WorkerStatus):
                self.status[ev.role] = ev
        batch.extend(self._check_alive())
        return batch

    def _check_alive(self) -> list[EngineEvent]:
        found: list[EngineEvent] = []
        for role, proc in self.procs.items():
            st = self.status.get(role)
            if proc.is_alive() or (st and st.state in (WorkerState.FAILED, WorkerState.STOPPED)):
                continue
            why = describe_exit(proc.exitcode)
            status = WorkerStatus(role, proc.pid or 0, WorkerState.FAILED, why)
            self.status[role] = status
            found += [WorkerError(role, proc.pid or 0, f"{role} worker {why}", fatal=True),
                      status]
        return found

    def ready(self) -> bool:
        return all(s.state in (WorkerState.READY, WorkerState.BUSY)
                   for s in self.status.values())
