"""`transcrevai bench --console`: first frame time and key latency of the console.

`transcrevai replay FILE --speed fast` runs in a pseudo-terminal (80x24). First frame: from
launch until the gauges header is drawn. Key latency: once the models are loaded (both cores
then transcribe and diarize), `?` is pressed and timed until the help screen's title reaches
the terminal, then Esc; repeated.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import statistics
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

from engine.config import Config

FIRST_FRAME_MARK = b"worker"  # the plain-text splash (tui/splash.py) has it too
CONSOLE_MARK = b"elapsed"  # the status bar: only the Textual console draws it
HELP_MARK = "TranscrevAI — keys".encode()


class _Pty:
    """`transcrevai replay FILE --speed fast` in an 80x24 pseudo-terminal."""

    def __init__(self, path: str) -> None:
        exe = Path(sys.executable).with_name("transcrevai")
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color"}
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([str(exe), "replay", path, "--speed", "fast"],
                                     stdin=slave, stdout=slave, stderr=slave, env=env,
                                     close_fds=True)
        os.close(slave)
        self.seen = b""

    def wait_for(self, mark: bytes, limit: float = 30.0, seen: bytes = b"") -> float | None:
        """Seconds until `mark` appears in the output (None on timeout); `seen` is output
        already read that counts."""
        t0 = time.perf_counter()
        self.seen = seen
        if mark in seen:
            return 0.0
        while time.perf_counter() - t0 < limit:
            ready, _, _ = select.select([self.master], [], [], 0.01)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:
                    return None
                if mark in self.seen:
                    return time.perf_counter() - t0
        return None

    def drain(self) -> None:
        while select.select([self.master], [], [], 0.0)[0]:
            try:
                os.read(self.master, 65536)
            except OSError:
                return

    def key(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        self.key(b"q")
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self.master)


def measure(path: str, runs: int = 3,
            presses: int = 10) -> tuple[list[float], list[float], list[float]]:
    """Seconds to the first frame and to the console's own frame per run, and key -> screen
    seconds while models are busy."""
    frames: list[float] = []
    consoles: list[float] = []
    keys: list[float] = []
    for _ in range(runs):
        term = _Pty(path)
        if term.wait_for(FIRST_FRAME_MARK) is not None:
            frames.append(time.perf_counter() - term.t0)  # from launch, not from Popen's return
        if term.wait_for(CONSOLE_MARK, seen=term.seen) is not None:
            consoles.append(time.perf_counter() - term.t0)
        term.wait_for(b"ready", 20)  # models loaded: from here both cores transcribe
        for _ in range(presses):
            term.drain()
            t0 = time.perf_counter()
            term.key(b"?")
            got = term.wait_for(HELP_MARK, 5)
            if got is not None:
                keys.append(time.perf_counter() - t0)
            term.key(b"\x1b")
            term.wait_for(b"", 0.15)
        term.close()
    return frames, consoles, keys


def run_console_bench(cfg: Config, path: str, as_json: bool) -> int:
    frames, consoles, lat = measure(path)
    report: dict[str, Any] = {
        "first_frame_s": [round(x, 3) for x in frames],
        "first_frame_median_s": round(statistics.median(frames), 3) if frames else None,
        "console_frame_s": [round(x, 3) for x in consoles],
        "console_frame_median_s": (round(statistics.median(consoles), 3) if consoles
                                   else None),
        "key_latency_p50_ms": round(1000 * statistics.median(lat), 1),
        "key_latency_p95_ms": round(1000 * sorted(lat)[int(0.95 * (len(lat) - 1))], 1),
        "key_presses": len(lat), "key": "? (help screen)",
    }
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(f"first frame: median {report['first_frame_median_s']} s "
              f"(runs: {report['first_frame_s']}); console frame: median "
              f"{report['console_frame_median_s']} s (runs: {report['console_frame_s']})")
        print(f"key -> screen while replaying at full speed: p50 "
              f"{report['key_latency_p50_ms']} ms, p95 {report['key_latency_p95_ms']} ms "
              f"over {len(lat)} presses")
    return 0
