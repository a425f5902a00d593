"""One-way message channels between exactly one writer process and one reader process.

multiprocessing.Queue shares locks between all its users: a process killed while its feeder
thread holds the write lock (or while it waits in get() holding the read lock) blocks every
other user forever. These channels are a bare pipe with no shared lock: the writer's
messages go out through a feeder thread of its own (put() never blocks), and the reader owns
its end alone. A channel whose writer or reader died is replaced by a fresh one; the ends can
be handed to a running process inside a message (file descriptors travel with them).
"""

from __future__ import annotations

import collections
import fcntl
import queue
import termios
import threading
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from multiprocessing.reduction import ForkingPickler
from typing import Any


class Sender:
    """The writing end. put() queues the message; a feeder thread writes it to the pipe."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._buf: collections.deque[bytes] = collections.deque()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.broken = False

    def __reduce__(self) -> tuple[Any, ...]:
        return (Sender, (self.conn,))

    def put(self, obj: object) -> None:
        data = bytes(ForkingPickler.dumps(obj))
        with self._cv:
            if self._closed or self.broken:
                return
            self._buf.append(data)
            if self._thread is None:
                self._thread = threading.Thread(target=self._feed, name="channel-feeder",
                                                daemon=True)
                self._thread.start()
            self._cv.notify()

    def _feed(self) -> None:
        while True:
            with self._cv:
                while not self._buf and not self._closed:
                    self._cv.wait()
                if not self._buf:
                    return
                data = self._buf.popleft()
            try:
                self.conn.send_bytes(data)
            except (OSError, ValueError):  # reader gone: nothing will read the rest
                with self._cv:
                    self.broken = True
                    self._buf.clear()
                return

    def close(self, timeout: float = 2.0) -> None:
        """Flush what is queued (up to `timeout`), then close the pipe end."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():
            self.conn.close()


class Receiver:
    """The reading end; only one process reads it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def __reduce__(self) -> tuple[Any, ...]:
        return (Receiver, (self.conn,))

    def get(self, timeout: float | None = None) -> Any:
        """The next message; queue.Empty after `timeout`; EOFError once the writer is gone."""
        if not self.conn.poll(timeout):
            raise queue.Empty
        return ForkingPickler.loads(self.conn.recv_bytes())

    def get_nowait(self) -> Any:
        return self.get(0.0)

    def pending_bytes(self) -> int:
        """Bytes waiting in the pipe (a cheap measure of queue depth)."""
        try:
            buf = bytearray(4)
            fcntl.ioctl(self.conn.fileno(), termios.FIONREAD, buf)
            return int.from_bytes(buf, "little")
        except (OSError, ValueError):
            return 0

    def close(self) -> None:
        self.conn.close()


def channel(ctx: BaseContext) -> tuple[Receiver, Sender]:
    reader, writer = ctx.Pipe(duplex=False)
    return Receiver(reader), Sender(writer)


def ready(receivers: list[Receiver], timeout: float | None) -> list[Receiver]:
    """The receivers with a message (or EOF) waiting, after at most `timeout` seconds."""
    by_conn = {id(r.conn): r for r in receivers}
    return [by_conn[id(c)] for c in wait([r.conn for r in receivers], timeout)]
