"""`transcrevai bench --console`: first frame time and key latency of the console.

`transcrevai replay FILE --speed 1` runs in a pseudo-terminal (80x24): the live path, as a
user watching a recording play (`--speed fast` was measured before). First frame: from launch
until the gauges header is drawn. Key latency: once the models are loaded (both cores
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
import re
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from engine.config import Config

FIRST_FRAME_MARK = b"worker"  # the plain-text splash (tui/splash.py) has it too
CONSOLE_MARK = b"elapsed"  # the status bar: only the Textual console draws it
HELP_MARK = "TranscrevAI — keys".encode()
KEY_TIMEOUT_S = 5.0  # a press not answered by then is timed out
SETTLE_QUIET_S = 0.15  # after Esc: this long without output counts as settled ...
SETTLE_LIMIT_S = 1.0  # ... or this long at most (a fast replay may never go quiet)


class _Pty:
    """`transcrevai replay FILE --speed SPEED` in an 80x24 pseudo-terminal."""

    def __init__(self, path: str, speed: str = "1") -> None:
        exe = Path(sys.executable).with_name("transcrevai")
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color"}
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([str(exe), "replay", path, "--speed", speed],
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


def measure(path: str, runs: int = 3, presses: int = 10, speed: str = "1") -> ConsoleTimes:
    """Launch the console `runs` times; time its frames and `presses` help-key presses while
    the models are busy."""
    out = ConsoleTimes()
    for _ in range(runs):
        term = _Pty(path, speed)
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
        "replay": "speed 1 (the live path)",
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
            print(f"key -> screen while a replay at speed 1 transcribes: p50 "
                  f"{report['key_latency_p50_ms']} ms, p95 {report['key_latency_p95_ms']} ms "
                  f"over {len(counted)} presses ({t.timed_out} timed out, counted as "
                  f"{KEY_TIMEOUT_S:g} s)")
    if failure:
        print(f"transcrevai: bench --console: {failure}", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------ a long session
PROGRESS = re.compile(rb"(\d{1,3})% (?:ETA|speakers)")
SAMPLE_EVERY_S = 5.0
PRESS_EVERY_S = 20.0
EARLY_MIN = 10.0  # the level a long session is compared with: its first 10 minutes of audio


@dataclass
class LongSession:
    """A long recording replayed fast in the console: its RSS and key latency as it goes."""

    minutes: float
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # t, audio min, MB
    keys: list[tuple[float, float | None]] = field(default_factory=list)  # audio min, s/None
    finished: bool = False


def measure_long(path: str, minutes: float, limit_s: float) -> LongSession:
    """`transcrevai replay LONG.wav --speed fast` in a pseudo-terminal: every few seconds the
    console process's RSS (its workers are other processes) and the audio position read off
    its progress bar; every PRESS_EVERY_S one `?` press timed to the help screen."""
    out = LongSession(minutes)
    term = _Pty(path, "fast")
    console = psutil.Process(term.proc.pid)
    term.wait_for(b"ready", 60)
    t0 = time.perf_counter()
    position = 0.0
    next_sample = next_press = 0.0
    try:
        while time.perf_counter() - t0 < limit_s and term.proc.poll() is None:
            now = time.perf_counter() - t0
            term.wait_for(b"\x00", 0.2)  # read what came (the mark never does)
            found = PROGRESS.findall(term.seen)
            if found:
                position = min(100, int(found[-1])) / 100 * minutes
            if now >= next_sample:
                next_sample = now + SAMPLE_EVERY_S
                out.samples.append((round(now, 1), round(position, 2),
                                    round(console.memory_info().rss / 2**20, 1)))
            if now >= next_press:
                next_press = now + PRESS_EVERY_S
                term.drain()
                k0 = time.perf_counter()
                term.key(b"?")
                answered = term.wait_for(HELP_MARK, KEY_TIMEOUT_S)
                out.keys.append((round(position, 2),
                                 None if answered is None else time.perf_counter() - k0))
                term.key(b"\x1b")
                term.settle()
            if b"100% speakers" in term.seen[-4096:] and position >= minutes:
                out.finished = True
                break
    finally:
        term.close()
    return out


def _p95_ms(presses: list[float | None]) -> float | None:
    counted = [KEY_TIMEOUT_S if s is None else s for s in presses]
    return round(1000 * _rank(counted, 0.95), 1) if counted else None


def run_long_console_bench(cfg: Config, args: Any) -> int:
    """`bench --console --minutes N`: N minutes of the corpus's real speech looped into one
    WAV, replayed fast in the console; the console's RSS after all of it against its level
    at the end of the first 10 minutes of audio, and key p95 early against late."""
    from engine.bench.corpus import real_clip_paths
    from engine.bench.soak import build_loop_wav

    paths = real_clip_paths(args)
    if paths is None:
        return 2
    minutes = float(args.minutes)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / f"long_{minutes:g}min.wav"
        build_loop_wav(paths, minutes * 60, wav)
        s = measure_long(str(wav), minutes, limit_s=minutes * 60 * 1.5 + 300)
    early = [mb for _, pos, mb in s.samples if pos <= EARLY_MIN]
    level = early[-1] if early else None
    final = statistics.median([mb for _, _, mb in s.samples[-3:]]) if s.samples else None
    first = [k for pos, k in s.keys if pos <= EARLY_MIN]
    last = [k for pos, k in s.keys if pos >= 0.8 * minutes]
    report: dict[str, Any] = {
        "minutes": minutes, "finished": s.finished,
        "console_rss_mb_at_10_min": level, "console_rss_mb_at_end": final,
        "console_rss_growth_pct": round(100 * (final - level) / level, 1)
        if level and final else None,
        "key_p95_ms_first_10_min": _p95_ms(first), "key_presses_first_10_min": len(first),
        "key_p95_ms_last_20_pct": _p95_ms(last), "key_presses_last_20_pct": len(last),
        "key_timed_out": sum(1 for _, k in s.keys if k is None),
        "samples": s.samples,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"console, {minutes:g} min replayed fast ({'finished' if s.finished else 'cut'}"
              f"): RSS {level} MB after the first {EARLY_MIN:g} min of audio -> {final} MB at "
              f"the end ({report['console_rss_growth_pct']}%); key p95 "
              f"{report['key_p95_ms_first_10_min']} ms in the first {EARLY_MIN:g} min "
              f"({len(first)} presses), {report['key_p95_ms_last_20_pct']} ms in the last "
              f"20% ({len(last)} presses), {report['key_timed_out']} timed out")
    return 0 if s.finished else 1
