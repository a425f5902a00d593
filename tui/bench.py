"""`transcrevai bench --console`: first frame time and key latency of the console.

`transcrevai replay FILE --speed fast` runs in a pseudo-terminal (80x24). First frame: from
launch until the gauges header is drawn. Key latency: once the models are loaded (both cores
then transcribe and diarize), `?` is pressed and timed until the help screen's title reaches
the terminal, then Esc and a settle (the output quiet for a moment, or a deadline while the
replay keeps redrawing); repeated. A press the help screen does not answer within
KEY_TIMEOUT_S is counted as timed out and enters the percentiles at KEY_TIMEOUT_S (a lower
bound for it), so a stalled console cannot look fast by losing its slow presses.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import Config

FIRST_FRAME_MARK = b"worker"  # the plain-text splash (tui/splash.py) has it too
CONSOLE_MARK = b"elapsed"  # the status bar: only the Textual console draws it
HELP_MARK = "TranscrevAI — keys".encode()
KEY_TIMEOUT_S = 5.0  # a press not answered by then is timed out
SETTLE_QUIET_S = 0.15  # after Esc: this long without output counts as settled ...
SETTLE_LIMIT_S = 1.0  # ... or this long at most (a fast replay may never go quiet)


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

    def settle(self, quiet: float = SETTLE_QUIET_S, limit: float = SETTLE_LIMIT_S) -> float:
        """Read output until none has come for `quiet` seconds or `limit` has passed, so the
        next press starts from a screen that has taken the last one; returns seconds waited."""
        t0 = last = time.perf_counter()
        while True:
            now = time.perf_counter()
            if now - last >= quiet or now - t0 >= limit:
                return now - t0
            wait = min(quiet - (now - last), limit - (now - t0))
            if select.select([self.master], [], [], max(0.0, wait))[0]:
                try:
                    os.read(self.master, 65536)
                except OSError:
                    return time.perf_counter() - t0  # the console has gone: nothing to wait for
                last = time.perf_counter()

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


@dataclass
class ConsoleTimes:
    """Seconds to the first frame and to the console's own frame per run; key -> screen
    seconds of the answered presses, and how many presses timed out."""

    frames: list[float] = field(default_factory=list)
    consoles: list[float] = field(default_factory=list)
    keys: list[float] = field(default_factory=list)
    timed_out: int = 0


def measure(path: str, runs: int = 3, presses: int = 10) -> ConsoleTimes:
    """Launch the console `runs` times; time its frames and `presses` help-key presses while
    the models are busy."""
    out = ConsoleTimes()
    for _ in range(runs):
        term = _Pty(path)
        if term.wait_for(FIRST_FRAME_MARK) is not None:
            out.frames.append(time.perf_counter() - term.t0)  # from launch, not Popen's return
        if term.wait_for(CONSOLE_MARK, seen=term.seen) is not None:
            out.consoles.append(time.perf_counter() - term.t0)
        term.wait_for(b"ready", 20)  # models loaded: from here both cores transcribe
        for _ in range(presses):
            term.drain()
            t0 = time.perf_counter()
            term.key(b"?")
            if term.wait_for(HELP_MARK, KEY_TIMEOUT_S) is not None:
                out.keys.append(time.perf_counter() - t0)
            else:
                out.timed_out += 1
            term.key(b"\x1b")
            term.settle()
        term.close()
    return out


def _rank(xs: list[float], q: float) -> float:
    """The q-quantile by nearest rank (xs not empty)."""
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def _median_s(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 3) if xs else None


def run_console_bench(cfg: Config, path: str, as_json: bool) -> int:
    """Print the console's frame times and key latency; 1 when the console drew no frame or
    answered no key press (there is then no latency to report)."""
    t = measure(path)
    # timed-out presses enter the percentiles at the timeout: a lower bound of their latency
    counted = t.keys + [KEY_TIMEOUT_S] * t.timed_out
    answered = bool(t.keys)
    report: dict[str, Any] = {
        "first_frame_s": [round(x, 3) for x in t.frames],
        "first_frame_median_s": _median_s(t.frames),
        "console_frame_s": [round(x, 3) for x in t.consoles],
        "console_frame_median_s": _median_s(t.consoles),
        "key_latency_p50_ms": round(1000 * _rank(counted, 0.5), 1) if answered else None,
        "key_latency_p95_ms": round(1000 * _rank(counted, 0.95), 1) if answered else None,
        "key_latency_percentiles": f"all presses; a timed-out one counts as {KEY_TIMEOUT_S:g} s",
        "key_presses": len(counted), "key_answered": len(t.keys),
        "key_timed_out": t.timed_out, "key_timeout_s": KEY_TIMEOUT_S, "key": "? (help screen)",
    }
    failure = None
    if not t.frames:
        failure = "the console drew no frame"
    elif not answered:
        failure = (f"no key press was answered: all {t.timed_out} presses of `?` timed out "
                   f"after {KEY_TIMEOUT_S:g} s (no help screen)")
    report["error"] = failure
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(f"first frame: median {report['first_frame_median_s']} s "
              f"(runs: {report['first_frame_s']}); console frame: median "
              f"{report['console_frame_median_s']} s (runs: {report['console_frame_s']})")
        if answered:
            print(f"key -> screen while replaying at full speed: p50 "
                  f"{report['key_latency_p50_ms']} ms, p95 {report['key_latency_p95_ms']} ms "
                  f"over {len(counted)} presses ({t.timed_out} timed out, counted as "
                  f"{KEY_TIMEOUT_S:g} s)")
    if failure:
        print(f"transcrevai: bench --console: {failure}", file=sys.stderr)
        return 1
    return 0
