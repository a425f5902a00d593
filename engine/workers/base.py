"""The loop every worker process runs; the role-specific part is a Handler.

Shape: set the process title and memory cap, load the model, announce READY, then
`get -> handle -> publish -> heartbeat` until Shutdown. A daemon thread sends heartbeats with
the worker's own RSS/CPU and exits the process if the parent disappears, so a killed engine
never leaves workers behind. An exception while handling is reported and ends the process:
the supervisor restarts it and re-sends what it had not finished.
"""

from __future__ import annotations

import importlib
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping

import psutil

from engine.channel import Receiver, Sender, ready
from engine.config import Config
from engine.messages import (
    SAMPLE_RATE,
    Attach,
    EngineEvent,
    FaultFired,
    FaultSpec,
    Heartbeat,
    Role,
    Shutdown,
    WorkerError,
    WorkerInput,
    WorkerState,
    WorkerStatus,
    one_line,
)
from engine.workers.spec import SPECS


class Handler:
    """The role-specific part of a worker: everything `worker_entry` calls on it.

    A worker's file subclasses this (its module's `make_handler(config, outputs)` returns
    one); only capture, which produces audio between messages, overrides step/busy/fed_s.
    """

    fed_s: float = 0.0  # audio fed to consumers so far, current stream (heartbeats carry it)
    settled_rss: int = 0  # RSS after the last decode gave its freed heap back (a leak's floor)

    def load(self) -> str:
        """Load models; return a short description of what is in use (e.g. 'whisper-base int8')."""
        raise NotImplementedError

    def handle(self, msg: WorkerInput) -> Iterator[EngineEvent]:
        """Process one input; yield the events to publish."""
        raise NotImplementedError

    def busy(self) -> bool:
        """True while there is work to do between messages (step() is then called)."""
        return False

    def step(self) -> Iterator[EngineEvent]:
        """A bit of incremental work between messages; yield the events to publish."""
        return iter(())


class InjectedFault(RuntimeError):
    """Raised inside a worker by the `raise` fault kind."""


class _Beat:
    """State shared between the worker loop and its heartbeat thread."""

    def __init__(self) -> None:
        self.state = WorkerState.STARTING
        self.items_done = 0
        self.fed_s = 0.0
        self.settled_rss = 0
        self.silent = False  # the `hang` fault: stop heartbeats and stall
        self.depth: Callable[[], int] = lambda: 0


def _heartbeat_loop(role: Role, beat: _Beat, events: Sender, interval: float,
                    parent_pid: int) -> None:
    proc = psutil.Process()
    proc.cpu_percent(None)
    while True:
        time.sleep(interval)
        if os.getppid() != parent_pid:  # parent died: we were re-parented
            os._exit(0)
        if beat.silent:
            continue
        events.put(Heartbeat(role, os.getpid(), time.time(), proc.memory_info().rss,
                             proc.cpu_percent(None), beat.depth(), beat.items_done, beat.state,
                             beat.fed_s, beat.settled_rss))


def _limit_address_space(config: Config, role: Role) -> None:
    """Cap virtual memory well above the RSS budget: a runaway allocation fails cleanly."""
    factor = config.limits.address_space_factor
    try:
        import resource
    except ImportError:  # non-Unix: the supervisor's RSS watch alone applies
        return
    if factor <= 0:
        return
    cap = int(config.limits.budget_mb(role) * factor * 2**20)
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ValueError, OSError):
        pass


class _Fault:
    """Arms an injected fault when the worker gets its first input."""

    def __init__(self, spec: FaultSpec | None, beat: _Beat, events: Sender, role: Role):
        self.spec, self.beat, self.events, self.role = spec, beat, events, role
        self.armed = False
        self.raise_now = False
        self.leak: list[bytearray] = []

    def arm(self) -> None:
        if self.spec is None or self.armed:
            return
        self.armed = True
        threading.Timer(self.spec.after_s, self._fire).start()

    def _fire(self) -> None:
        assert self.spec is not None
        kind = self.spec.kind
        os.write(2, f"injected fault: {kind}\n".encode())
        self.events.put(FaultFired(self.role, os.getpid(), kind, time.time()))
        if kind == "crash":
            self.events.close(timeout=1.0)  # let the announcement out first
            os._exit(70)
        elif kind == "kill":  # as an OOM killer would: no chance to say goodbye
            self.events.close(timeout=1.0)  # let the announcement out first
            os.kill(os.getpid(), signal.SIGKILL)
        elif kind == "hang":
            self.beat.silent = True
        elif kind == "raise":
            self.raise_now = True
            os.kill(os.getpid(), signal.SIGUSR1)
        elif kind == "leak":
            while True:  # grow RSS until the supervisor (or RLIMIT_AS) stops us
                try:
                    self.leak.append(bytearray(b"\x01" * (32 << 20)))
                except MemoryError:
                    time.sleep(0.1)
                time.sleep(0.05)


def worker_entry(role: Role, config: Config, control: Receiver, data: Receiver | None,
                 outputs: Mapping[Role, Sender], events: Sender, parent_pid: int,
                 fault: FaultSpec | None = None, module_name: str | None = None) -> None:
    """Process target (importable, so it works under the `spawn` start method).

    `control` carries the supervisor's commands, `data` (consumers) the audio from capture,
    `outputs` (capture) the channels to the consumers, `events` everything to the supervisor.
    """
    try:
        import setproctitle

        setproctitle.setproctitle(f"transcrevai: {role}")
    except ImportError:  # pragma: no cover - optional on exotic platforms
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine decides when workers stop
    _redirect_stderr(config, role)
    _limit_address_space(config, role)
    if config.engine.worker_nice:
        os.nice(config.engine.worker_nice)
    pid = os.getpid()
    beat = _Beat()
    chunk_bytes = max(1, int(config.engine.chunk_s * SAMPLE_RATE * 4))  # float32
    inputs = [control] + ([data] if data is not None else [])
    beat.depth = lambda: sum(r.pending_bytes() for r in inputs[1:]) // chunk_bytes
    injector = _Fault(fault, beat, events, role)

    def _raise_injected(signum: int, frame: object) -> None:
        if injector.raise_now:
            raise InjectedFault(f"injected fault in {role} worker")

    signal.signal(signal.SIGUSR1, _raise_injected)
    threading.Thread(target=_heartbeat_loop, name="heartbeat", daemon=True,
                     args=(role, beat, events, config.engine.heartbeat_interval,
                           parent_pid)).start()

    beat.state = WorkerState.LOADING
    events.put(WorkerStatus(role, pid, WorkerState.LOADING))
    t0 = time.perf_counter()
    try:
        # "package.module" or "package.module:factory" (tests use fake workers)
        name, _, factory = (module_name or SPECS[role].entry).partition(":")
        module = importlib.import_module(name)
        handler: Handler = getattr(module, factory or "make_handler")(config, outputs)
        model = handler.load()
    except Exception as exc:  # a worker that cannot load reports why and exits
        from engine.models.registry import ModelError

        beat.state = WorkerState.FAILED
        traceback.print_exc()
        events.put(WorkerError(role, pid, one_line(exc), fatal=True,
                               retry=not isinstance(exc, ModelError)))
        events.close()
        os._exit(1)
    beat.state = WorkerState.READY
    events.put(WorkerStatus(role, pid, WorkerState.READY, model=model,
                            load_s=time.perf_counter() - t0))

    busy = handler.busy
    msg: object = None
    try:
        while True:
            while beat.silent:  # injected hang: no heartbeats, no progress
                time.sleep(1.0)
            waiting = ready(inputs, 0.0 if busy() else 0.5)
            if not waiting:
                if busy():
                    beat.state = WorkerState.BUSY
                    for event in handler.step():
                        events.put(event)
                    beat.fed_s = handler.fed_s
                    beat.state = WorkerState.BUSY if busy() else WorkerState.READY
                continue
            for receiver in waiting:
                if receiver not in inputs:  # replaced by an Attach earlier in this batch
                    continue
                try:
                    msg = receiver.get_nowait()
                except queue.Empty:
                    continue
                except EOFError:
                    if receiver is control:  # the supervisor is gone
                        raise SystemExit(0) from None
                    inputs.remove(receiver)  # capture died; a new channel will be attached
                    continue
                if isinstance(msg, Shutdown):
                    raise SystemExit(0)
                if isinstance(msg, Attach) and isinstance(msg.end, Receiver):
                    for old in inputs[1:]:
                        old.close()
                    inputs[1:] = [msg.end]
                    continue
                injector.arm()
                beat.state = WorkerState.BUSY
                for event in handler.handle(msg):  # type: ignore[arg-type]
                    events.put(event)
                beat.items_done += 1
                beat.settled_rss = handler.settled_rss
                beat.state = WorkerState.BUSY if busy() else WorkerState.READY
    except SystemExit:
        pass
    except Exception as exc:
        traceback.print_exc()
        events.put(WorkerError(role, pid, one_line(exc), fatal=True,
                               stream_id=getattr(msg, "stream_id", None)))
        events.close()
        os._exit(1)
    beat.state = WorkerState.STOPPED
    events.put(WorkerStatus(role, pid, WorkerState.STOPPED))
    for out in outputs.values():
        out.close(timeout=1.0)
    events.close()
    os._exit(0)


def _redirect_stderr(config: Config, role: Role) -> None:
    """Send this process's fds 1 and 2 (tracebacks, C++ library messages) to a log file.

    A user sees one-line errors through events; the details stay in the log.
    """
    log_dir = config.paths.log_dir
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(log_dir / f"{role}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 2)
    os.dup2(fd, 1)  # nothing a library prints may reach a console's screen
    os.close(fd)
    os.write(2, f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}\n".encode())
