"""Hardening (issue 8): a generated corpus of bad and odd inputs through `transcrevai
transcribe`, the offline guarantee with sockets blocked, a full recordings disk mid-session,
and a short soak.

Everything runs the real command and the real engine; the blocked network is real (a
`sitecustomize` in every process of the run, workers included, refuses IP sockets and DNS),
the full disk is a real tmpfs.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import ROOT, clip_path, run_cli, skip_or_fail_in_ci

TIME_BOUND_S = 120.0
# peak RSS of a 12-minute file over a 3-minute one, MB (measured -4 to +1; see the test)
LONG_FILE_MB_MAX = {"capture": 12.0, "diarization": 12.0}


# --------------------------------------------------------------------------- bad inputs
def _speech(seconds: float = 2.5) -> np.ndarray:
    audio, sr = sf.read(str(clip_path("ptbr_fleurs_000")), dtype="float32")
    assert sr == 16000
    return audio[int(1.0 * sr): int((1.0 + seconds) * sr)]


def _resample(x: np.ndarray, sr: int) -> np.ndarray:
    import soxr

    return soxr.resample(x, 16000, sr) if sr != 16000 else x


def build_corpus(folder: Path) -> list[tuple[str, Path, str]]:
    """(case name, path, expectation) with expectation 'ok', 'fail' or 'either'."""
    folder.mkdir(parents=True, exist_ok=True)
    speech = _speech()
    cases: list[tuple[str, Path, str]] = []

    def add(name: str, path: Path, expect: str) -> None:
        cases.append((name, path, expect))

    add("missing path", folder / "does-not-exist.wav", "fail")
    (folder / "a-directory.wav").mkdir()
    add("directory", folder / "a-directory.wav", "fail")
    (folder / "empty.wav").write_bytes(b"")
    add("empty file", folder / "empty.wav", "fail")
    sf.write(str(folder / "zero.wav"), np.zeros(0, np.float32), 16000)
    add("zero-length WAV", folder / "zero.wav", "fail")
    good = folder / "good.wav"
    sf.write(str(good), speech, 16000, subtype="PCM_16")
    data = good.read_bytes()
    (folder / "truncated.wav").write_bytes(data[: len(data) // 2])
    add("truncated WAV", folder / "truncated.wav", "either")
    (folder / "header-only-garbage.wav").write_bytes(data[:44] + os.urandom(len(data) - 44))
    add("WAV header, garbage data", folder / "header-only-garbage.wav", "either")
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(2000)
    (folder / "picture.wav").write_bytes(png)
    add("PNG renamed .wav", folder / "picture.wav", "fail")
    (folder / "notes.wav").write_text("isto não é áudio\n" * 50, encoding="utf-8")
    add("text file as .wav", folder / "notes.wav", "fail")
    (folder / "notes.txt").write_text("hello\n")
    add("text file", folder / "notes.txt", "fail")
    (folder / "zip.wav").write_bytes(b"PK\x03\x04" + os.urandom(500))
    add("zip renamed .wav", folder / "zip.wav", "fail")
    (folder / "riff-only.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVE")
    add("RIFF header only", folder / "riff-only.wav", "fail")
    sf.write(str(folder / "speech.flac"), speech, 16000, format="FLAC")
    add("FLAC", folder / "speech.flac", "ok")
    sf.write(str(folder / "speech.ogg"), speech, 16000, format="OGG", subtype="VORBIS")
    add("OGG Vorbis", folder / "speech.ogg", "ok")
    for subtype in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"):
        p = folder / f"depth-{subtype}.wav"
        sf.write(str(p), speech, 16000, subtype=subtype)
        add(f"WAV {subtype}", p, "ok")
    for sr in (8000, 11025, 22050, 32000, 44100, 48000, 96000):
        p = folder / f"rate-{sr}.wav"
        sf.write(str(p), _resample(speech, sr), sr, subtype="PCM_16")
        add(f"{sr} Hz", p, "ok")
    for ch in (2, 3, 6, 8):
        p = folder / f"channels-{ch}.wav"
        sf.write(str(p), np.tile(speech[:, None], (1, ch)) * 0.9, 16000, subtype="PCM_16")
        add(f"{ch} channels", p, "ok")
    p = folder / "ação e coração — fala.wav"
    shutil.copy(good, p)
    add("non-ASCII name", p, "ok")
    p = folder / "name with  spaces.wav"
    shutil.copy(good, p)
    add("spaces in name", p, "ok")
    (folder / "link.wav").symlink_to(good)
    add("symlink", folder / "link.wav", "ok")
    (folder / "dangling.wav").symlink_to(folder / "gone.wav")
    add("dangling symlink", folder / "dangling.wav", "fail")
    p = folder / "no-permission.wav"
    shutil.copy(good, p)
    p.chmod(0)
    add("no permission", p, "fail" if os.geteuid() != 0 else "either")  # root reads anyway
    p = folder / "silence.wav"
    sf.write(str(p), np.zeros(16000 * 3, np.float32), 16000)
    add("silence", p, "ok")
    p = folder / "clipped-noise.wav"
    sf.write(str(p), np.clip(np.random.default_rng(1).normal(0, 2, 16000 * 2), -1, 1),
             16000)
    add("loud noise", p, "ok")
    p = folder / "tiny.wav"
    sf.write(str(p), speech[:10], 16000)
    add("10 samples", p, "ok")
    # random byte mutations of a real WAV: flips, truncations, insertions, header damage
    rng = random.Random(20261126)
    for i in range(64):
        buf = bytearray(data)
        kind = ("flip-header", "flip-data", "truncate", "insert", "zero-header")[i % 5]
        if kind == "flip-header":
            for _ in range(rng.randint(1, 4)):
                buf[rng.randrange(0, 44)] = rng.randrange(256)
        elif kind == "flip-data":
            for _ in range(rng.randint(1, 200)):
                buf[rng.randrange(44, len(buf))] = rng.randrange(256)
        elif kind == "truncate":
            del buf[rng.randrange(1, len(buf)):]
        elif kind == "insert":
            at = rng.randrange(0, len(buf))
            buf[at:at] = os.urandom(rng.randint(1, 64))
        else:
            start = rng.randrange(0, 40)
            buf[start:start + rng.randint(1, 8)] = bytes(8)[: len(buf[start:start + 8])]
        p = folder / f"mutant-{i:02d}-{kind}.wav"
        p.write_bytes(bytes(buf))
        add(f"mutation {i} ({kind})", p, "either")
    return cases


def _run_case(case: tuple[str, Path, str]) -> dict[str, object]:
    name, path, expect = case
    t0 = time.monotonic()
    try:
        proc = run_cli("transcribe", str(path), "--format", "json", timeout=TIME_BOUND_S)
    except subprocess.TimeoutExpired:
        return {"name": name, "timeout": True}
    return {"name": name, "expect": expect, "rc": proc.returncode, "stdout": proc.stdout,
            "stderr": proc.stderr, "s": time.monotonic() - t0}


def _check_alone(r: dict[str, object], problems: list[str]) -> None:
    """One file, one run: exit 0 with a JSON transcript on stdout, or one clear line."""
    name = r["name"]
    if r.get("timeout"):
        problems.append(f"{name}: no result within {TIME_BOUND_S:.0f} s")
        return
    stderr, rc = str(r["stderr"]), int(r["rc"])  # type: ignore[call-overload]
    if "Traceback" in stderr:
        problems.append(f"{name}: traceback\n{stderr}")
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if rc == 0:
        try:
            doc = json.loads(str(r["stdout"]))
            assert isinstance(doc["segments"], list)
        except (ValueError, KeyError, AssertionError):
            problems.append(f"{name}: exit 0 without a JSON transcript")
        if r["expect"] == "fail":
            problems.append(f"{name}: expected a clear failure, got exit 0")
    else:
        if len(lines) != 1:
            problems.append(f"{name}: exit {rc} with {len(lines)} stderr lines: {lines}")
        if r["expect"] == "ok":
            problems.append(f"{name}: expected a transcript, got exit {rc}: {lines}")


@pytest.mark.timeout(1200)
def test_a_hundred_bad_or_odd_inputs(tmp_path: Path) -> None:
    """Over a hundred bad or odd inputs: the ones that must be refused, and a few that must
    work, each through its own `transcrevai transcribe` (exit code, one line, JSON on stdout);
    then every input that may decode, all in one batch run into a folder, where each one ends
    as a JSON transcript or as one line naming it, and a damaged file never stops the batch
    (one engine start for ninety files, not ninety starts)."""
    cases = build_corpus(tmp_path / "inputs")
    assert len(cases) >= 100
    alone = [c for c in cases if c[2] == "fail"]
    alone += [c for c in cases if c[0] in ("FLAC", "8 channels", "silence", "symlink")]
    batch = [c for c in cases if c[2] != "fail"]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    problems: list[str] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = pool.submit(
            run_cli, "transcribe", *[str(c[1]) for c in batch], "--format", "json",
            "--output", str(out_dir), timeout=TIME_BOUND_S * 10)
        for r in pool.map(_run_case, alone):  # quick: refused before the engine starts
            _check_alone(r, problems)
        proc = pending.result()
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    outputs = {p.name for p in out_dir.iterdir()}
    # speech.flac and speech.ogg do not write one transcript over the other
    assert {"speech.flac.json", "speech.ogg.json"} <= outputs and "speech.json" not in outputs
    ok = refused = 0
    said: set[str] = set()
    for name, path, expect in batch:
        mine = [ln for ln in lines if str(path) in ln]
        json_out = [o for o in outputs if o in (f"{path.stem}.json", f"{path.name}.json")]
        if json_out:
            ok += 1
            doc = json.loads((out_dir / json_out[0]).read_text())
            if not isinstance(doc.get("segments"), list):
                problems.append(f"{name}: {json_out[0]} is not a transcript")
        else:
            refused += 1
            if len([ln for ln in mine if "warning" not in ln]) != 1:
                problems.append(f"{name}: no transcript and {len(mine)} lines naming it: "
                                f"{mine}")
            if expect == "ok":
                problems.append(f"{name}: expected a transcript, got {mine}")
        said.update(mine)
    # nothing else on stderr (progress and the closing count go to a terminal only)
    assert not [ln for ln in lines if ln not in said], lines
    # 2: some input was refused; 3: all transcribed, some with a warning
    assert proc.returncode == (2 if refused else 3 if said else 0), (proc.returncode, lines)
    print(f"{len(cases)} cases: {len(alone)} alone, {len(batch)} in one batch "
          f"({ok} transcribed, {refused} refused)")
    assert not problems, "\n".join(problems)
    assert ok >= 25 and refused + len([c for c in alone if c[2] == "fail"]) >= 10


# --------------------------------------------------------------------------- offline
BLOCKER = '''
import os, socket
_LOG = os.environ.get("TRANSCREVAI_NET_LOG", "/dev/null")
_Real = socket.socket
def _note(what):
    with open(_LOG, "a") as fh:
        fh.write(f"{os.getpid()} {what}\\n")
class _Blocked(_Real):
    def _check(self, addr):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _note(f"connect {addr!r}")
            raise OSError(101, "network blocked by the test")
    def connect(self, addr):
        self._check(addr)
        return super().connect(addr)
    def connect_ex(self, addr):
        self._check(addr)
        return super().connect_ex(addr)
    def sendto(self, data, *args):
        self._check(args[-1])
        return super().sendto(data, *args)
socket.socket = _Blocked
_gai = socket.getaddrinfo
def _getaddrinfo(host, *a, **k):
    if host not in (None, "localhost", "127.0.0.1", "::1"):
        _note(f"resolve {host!r}")
        raise socket.gaierror(-3, "name resolution blocked by the test")
    return _gai(host, *a, **k)
socket.getaddrinfo = _getaddrinfo
'''


def _blocked_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    log = tmp_path / "net.log"
    return {"PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "TRANSCREVAI_NET_LOG": str(log)}, log


def test_a_full_transcription_with_sockets_blocked(tmp_path: Path) -> None:
    env, log = _blocked_env(tmp_path)
    # the blocker works: a plain HTTP request fails and is logged
    probe = subprocess.run([sys.executable, "-c", "import urllib.request as u; "
                            "u.urlopen('http://example.com', timeout=5)"],
                           capture_output=True, text=True, env={**os.environ, **env})
    assert probe.returncode != 0 and "blocked by the test" in probe.stderr
    assert "example.com" in log.read_text()
    log.unlink()
    # the whole engine (three worker processes, diarization on) with the network blocked
    proc = run_cli("transcribe", str(clip_path("ptbr_dlg_mixed_4spk")), "--format", "json",
                   env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert len(doc["segments"]) >= 3 and doc["diarized"]
    assert not log.exists(), log.read_text()  # nothing even tried


def test_model_validation_runs_offline_too(tmp_path: Path) -> None:
    """The quantization chain (child processes) in a fresh models folder, network blocked."""
    from engine.config import load_config

    env, log = _blocked_env(tmp_path)
    models = tmp_path / "models"
    models.mkdir()
    real = load_config().paths.models_dir
    for name in ("whisper-base", "diarization"):
        (models / name).symlink_to(real / name)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[paths]\nmodels_dir = "{models}"\nlog_dir = "{tmp_path}/logs"\n'
                   '[diarization]\nenabled = false\n')
    proc = run_cli("--config", str(cfg), "models", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert [d["model_kind"] for d in json.loads(proc.stdout)] == ["whisper"]
    assert not log.exists(), log.read_text()


# --------------------------------------------------------------------------- full disk
def test_recordings_disk_filling_up_mid_session(tmp_path: Path) -> None:
    """A live session on a 300 KiB tmpfs: recording stops with a clear message, the WAV and
    the session files stay valid up to what fit."""
    from engine.config import load_config
    from engine.messages import MicStatus, StreamError
    from engine.runner import Runner
    from engine.sessions import find_session
    from engine.supervisor import Supervisor
    from tests.vmic import require_vmic, vmic_or_fail

    require_vmic()
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False, timeout=30)
    if done.returncode != 0:  # mount rights, not a package: the recorder's disk-full path
        # is covered everywhere by test_recorder's file-size-limit test; CI runs as root
        skip_or_fail_in_ci(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        mic = vmic_or_fail()
    except BaseException:
        subprocess.run(["umount", str(mnt)], check=False)
        raise
    import dataclasses

    cfg = load_config()
    cfg = dataclasses.replace(cfg, paths=dataclasses.replace(
        cfg.paths, recordings_dir=mnt, log_dir=tmp_path / "logs"))
    events: list[object] = []
    try:
        os.environ.update(mic.env)
        with Supervisor(cfg) as engine:
            runner = Runner(engine, on_event=events.append)
            runner.wait_ready()
            live = runner.start_live(None)
            mic.play_async(clip_path("ptbr_dlg_mixed_4spk"))
            deadline = time.monotonic() + 90
            while not live.done and time.monotonic() < deadline:
                runner.pump(0.1)
            assert live.done, "the session did not stop on a full disk"
            runner.close_live(live)
            wav = Path(live.path)
        errors = [e.message for e in events if isinstance(e, StreamError)]
        assert any("disk full" in m and str(mnt) in m for m in errors), errors
        assert any(isinstance(e, MicStatus) and e.state == "stopped" for e in events)
        info = sf.info(str(wav))
        audio, _ = sf.read(str(wav))
        assert len(audio) == info.frames > 16000 * 3  # the header matches what is there
        sess = find_session(wav.stem, mnt)
        assert sess.meta.source == "mic"
        assert all(s.text for s in sess.segments)
    finally:
        for key in mic.env:
            os.environ.pop(key, None)
        mic.stop()
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# --------------------------------------------------------------------------- soak
def soak_growth(report: dict[str, Any]) -> dict[str, float]:
    """MB per minute from an early 30 s window after the warm-up to the last 30 s of audio
    (medians), per process; for transcription, of its RSS right after each decode gave its
    freed heap back (see the soak test)."""
    samples = report["samples"]
    # the offline speaker pass at the end of the audio loads the recording once: not growth
    stop = next((s["t_s"] for s in samples if s["ended"]), samples[-1]["t_s"])
    warmup = report["warmup_s"]

    def window(lo: float, hi: float) -> list[dict[str, Any]]:
        found = [s for s in samples if lo <= s["t_s"] < hi and not s["ended"]]
        assert len(found) >= 5, (lo, hi, len(found))
        return found

    early, late = window(warmup, warmup + 30), window(stop - 36, stop - 6)
    minutes = float(np.median([s["t_s"] for s in late]) - np.median([s["t_s"] for s in early]))
    minutes /= 60
    assert minutes >= 0.4, minutes
    out = {role: float(np.median([s["rss_mb"][role] for s in late])
                       - np.median([s["rss_mb"][role] for s in early])) / minutes
           for role in ("supervisor", "capture", "diarization")}
    out["transcription"] = float(np.median([s["settled_mb"]["transcription"] for s in late])
                                 - np.median([s["settled_mb"]["transcription"]
                                              for s in early])) / minutes
    return out


def test_short_soak_has_no_memory_growth(tmp_path: Path) -> None:
    """Two minutes of looped speech through the live path (console state included), and no
    process whose memory climbs: a leak of 2 MB a minute fails. Capture, diarization and the
    supervisor are flat (measured within 0.1 MB/min). Transcription's RSS swings by up to
    60 MB between samples as decodes allocate and free (its peaks rose 19-25 MB in some full
    runs with no leak), so it is judged by the RSS it reports right after each decode has
    returned its freed heap: measured 258.3 -> 259.9 MB over 3 minutes with a CPU-bound job
    beside it; a slower leak needs a longer `bench --soak`."""
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("transcrevai")), "bench", "--soak", "2",
         "--corpus", str(ROOT / "tests" / "data"), "--json"],
        capture_output=True, text=True, timeout=800, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert len(report["samples"]) >= 20
    assert report["restarts"] == 0 and report["error"] is None
    growth = soak_growth(report)
    print({"growth": growth, "observer_growth": report["observer_growth"],
           "max_lag_s": report["max_lag_s"], "max_queue_depth": report["max_queue_depth"]})
    for role in ("supervisor", "capture", "diarization", "transcription"):
        assert growth[role] <= 2.0, (role, growth)
    assert report["observer_growth"] is not None and report["observer_growth"] < 3.0
    assert report["max_lag_s"] < 30 and report["max_queue_depth"] < 100


# --------------------------------------------------------------------------- long files
def _most_ahead(most: list[float], ev: object) -> None:
    """Keep the most audio (s) fed to the engine and not yet transcribed (its metrics)."""
    from engine.messages import EngineMetrics

    if isinstance(ev, EngineMetrics):
        most[0] = max(most[0], ev.lag_s)


@pytest.mark.timeout(1800)  # 15 minutes of audio through the whole engine
def test_a_long_file_is_never_held_whole_in_memory(tmp_path: Path) -> None:
    """12 minutes (speech at the start, middle and end, room noise between) against 3 minutes
    with the same three stretches of speech (so the same decodes): every worker's peak memory
    stays within a few MB. Holding the audio whole (46 MB as float32 for the long file, twice
    that while joining) would show as tens of MB more."""
    from engine.config import load_config
    from engine.runner import Runner
    from engine.supervisor import Supervisor

    cfg = load_config()
    speech, _ = sf.read(str(clip_path("ptbr_dlg_mixed_4spk")), dtype="float32")
    rng = np.random.default_rng(7)

    def write(path: Path, minutes: int) -> None:
        with sf.SoundFile(str(path), "w", 16000, 1, "PCM_16") as fh:
            for m in range(minutes):
                block = (0.003 * rng.standard_normal(60 * 16000)).astype(np.float32)
                if m in (0, minutes // 2, minutes - 1):
                    block[: len(speech)] += speech
                fh.write(block)

    short, long = tmp_path / "short.wav", tmp_path / "long.wav"
    write(short, 3)
    write(long, 12)
    peaks: dict[str, dict[str, float]] = {}
    aheads: dict[str, float] = {}  # most audio (s) read ahead of what was transcribed
    for path in (short, long):
        with Supervisor(cfg) as engine:  # fresh workers: peaks of this file alone
            ahead = [0.0]
            runner = Runner(engine, on_event=partial(_most_ahead, ahead))
            runner.wait_ready()
            runner.pump(1.0)  # the supervisor samples every worker's RSS at least once
            loaded = {w.role: w.rss_bytes for w in engine.metrics().workers}
            result = runner.transcribe(str(path))
            assert result.ok, result.error
            assert len(result.transcript.segments) >= 3 and result.transcript.diarized
            metrics = engine.metrics()
            assert all(w.restarts == 0 for w in metrics.workers)
            # growth over the worker's own RSS once loaded: how much a model load takes
            # varies by ~35 MB between runs (measured), what a file adds should not
            peaks[path.stem] = {w.role: (w.peak_rss_bytes - loaded[w.role]) / 2**20
                                for w in metrics.workers}
            aheads[path.stem] = ahead[0]
    print(peaks, aheads)
    # the long file's audio is 46 MB as float32 (34 MB more than the short one's): capture or
    # diarization holding it whole, or even half of it, would exceed these bounds
    for role in ("capture", "diarization"):
        assert peaks["long"][role] - peaks["short"][role] < LONG_FILE_MB_MAX[role], (role, peaks)
    # whisper's own peak varies by ~30 MB between runs of the same decodes (measured growth
    # 134-166 MB on identical input), so transcription is held to what bounds the audio it
    # holds: capture reads at most engine.max_read_ahead_s ahead of what is transcribed
    # (unbounded, it would read the 12 minutes at disk speed: 700 s ahead)
    limit = cfg.engine.max_read_ahead_s + 2 * cfg.engine.chunk_s
    assert aheads["long"] <= limit, (aheads, limit)
