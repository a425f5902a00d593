"""The laptop's microphone over SSH, with real parts: a "laptop" PulseAudio server whose null
sink plays a PT-BR clip and which exposes its native protocol on TCP, a real `sshd` on
localhost, an `ssh -R` tunnel to it, and the engine's live path on the "server" side (which
has a silent PulseAudio of its own) reaching the laptop only through the tunnel. Skipped
outside CI when openssh-server or the virtual-mic parts are missing; failed in CI."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.config import load_config
from engine.messages import MicStatus
from engine.runner import Runner
from engine.scoring import normalize
from engine.supervisor import Supervisor
from tests.conftest import ROOT, clip_path, clips, run_cli, skip_or_fail_in_ci
from tests.vmic import (
    SINK,
    VMic,
    VMicError,
    finish_playing,
    missing_parts,
    start_recording,
    start_vmic,
    vmic_or_fail,
    wait_until,
)

CLIP = "ptbr_fleurs_000"  # 17.8 s of read PT-BR speech
LAPTOP_SOURCE = "laptop_mic"  # exists only on the laptop's server
SSHD = "/usr/sbin/sshd"  # sshd re-executes itself: it must be run by its absolute path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _require() -> None:
    missing = missing_parts()
    if not os.access(SSHD, os.X_OK):
        missing.append("sshd (openssh-server)")
    for tool in ("ssh", "ssh-keygen"):
        if not shutil.which(tool):
            missing.append(f"{tool} (openssh-client)")
    if missing:
        skip_or_fail_in_ci("microphone over SSH unavailable, missing: " + ", ".join(missing))


def _pactl(env: dict[str, str], *args: str, timeout: float = 5) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pactl", *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=timeout)


def _stop(proc: subprocess.Popen[bytes]) -> str:
    """Terminate a child we started (by its pid) and return what it wrote on stderr."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    return err.strip()


@pytest.fixture()
def laptop() -> Iterator[tuple[VMic, int]]:
    """The laptop's sound server: a virtual mic (.ci/vmic's recipe) with a source of its own
    name, reachable on TCP as the README tells a user to do it."""
    _require()
    try:
        mic = start_vmic(reuse=False)
    except VMicError as exc:
        pytest.fail(f"laptop's PulseAudio failed to start: {exc}", pytrace=False)
    try:
        port = _free_port()
        for args in (
                ("load-module", "module-native-protocol-tcp", f"port={port}",
                 "listen=127.0.0.1", "auth-ip-acl=127.0.0.1"),
                ("load-module", "module-remap-source", f"source_name={LAPTOP_SOURCE}",
                 f"master={SINK}.monitor"),
                ("suspend-sink", SINK, "1"), ("suspend-sink", SINK, "0")):
            done = _pactl(mic.env, *args)
            assert done.returncode == 0, f"pactl {' '.join(args)}: {done.stderr}"
        yield mic, port
    finally:
        mic.stop()


@pytest.fixture()
def server_side() -> Iterator[VMic]:
    """The server's own sound server: silent, and without the laptop's source."""
    _require()
    mic = vmic_or_fail(reuse=False, what="server's PulseAudio")
    yield mic
    mic.stop()


@pytest.fixture()
def sshd(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A real sshd on a free localhost port with its own host key, accepting one key made
    here; yields (port, client key)."""
    _require()
    keys = tmp_path / "ssh"
    keys.mkdir(mode=0o700)
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)],
                       check=True, capture_output=True, timeout=30)
    authorized = keys / "authorized_keys"
    authorized.write_text((keys / "client_key.pub").read_text())
    authorized.chmod(0o600)
    port = _free_port()
    config = keys / "sshd_config"
    config.write_text("\n".join((
        "ListenAddress 127.0.0.1", f"Port {port}", f"HostKey {keys / 'host_key'}",
        f"AuthorizedKeysFile {authorized}", "PubkeyAuthentication yes",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no",
        "AllowTcpForwarding yes", "PidFile none", "LogLevel VERBOSE", "")))
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation folder
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def listening() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    try:
        if not wait_until(lambda: proc.poll() is not None or listening(), 10):
            pytest.fail("sshd does not listen", pytrace=False)
        if proc.poll() is not None:
            pytest.fail(f"sshd exited: {_stop(proc)}", pytrace=False)
        yield port, keys / "client_key"
    finally:
        _stop(proc)


def _overlap(reference: str, text: str) -> float:
    """Share of the reference's words that the transcript has (each counted once per use)."""
    ref, hyp = Counter(normalize(reference)), Counter(normalize(text))
    return sum((ref & hyp).values()) / max(1, sum(ref.values()))


def test_laptop_microphone_over_ssh_tunnel(laptop: tuple[VMic, int], server_side: VMic,
                                          sshd: tuple[int, Path], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    mic, laptop_port = laptop
    ssh_port, key = sshd
    tunnel_port = _free_port()
    tunnel = subprocess.Popen(
        ["ssh", "-F", "/dev/null", "-N", "-i", str(key), "-p", str(ssh_port),
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ExitOnForwardFailure=yes",
         "-R", f"127.0.0.1:{tunnel_port}:127.0.0.1:{laptop_port}",
         f"{getpass.getuser()}@127.0.0.1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    via_tunnel = {"PULSE_SERVER": f"tcp:127.0.0.1:{tunnel_port}"}
    try:
        if not wait_until(lambda: tunnel.poll() is not None
                          or _pactl(via_tunnel, "info").returncode == 0, 20, step=0.2):
            pytest.fail("the laptop's sound server does not answer through the tunnel",
                        pytrace=False)
        if tunnel.poll() is not None:
            pytest.fail(f"ssh -R failed: {_stop(tunnel)}", pytrace=False)
        # the server side's own sound server has no such source: only the tunnel leads to it
        assert LAPTOP_SOURCE in _pactl(via_tunnel, "list", "short", "sources").stdout
        assert LAPTOP_SOURCE not in _pactl(server_side.env, "list", "short",
                                           "sources").stdout

        # the server side: its own runtime folder (its own PulseAudio), PULSE_SERVER = tunnel
        monkeypatch.setenv("XDG_RUNTIME_DIR", server_side.env["XDG_RUNTIME_DIR"])
        monkeypatch.setenv("PULSE_SERVER", via_tunnel["PULSE_SERVER"])
        monkeypatch.delenv("PULSE_SOURCE", raising=False)
        monkeypatch.delenv("VMIC_DIR", raising=False)
        cfg = (load_config()
               .replace("paths", recordings_dir=tmp_path / "rec", log_dir=tmp_path / "logs")
               .replace("live", source=LAPTOP_SOURCE)  # what `live --source` sets
               .replace("diarization", enabled=False))
        statuses: list[MicStatus] = []
        with Supervisor(cfg, diarization=False) as engine:
            runner = Runner(engine, on_event=lambda ev: statuses.append(ev)
                            if isinstance(ev, MicStatus) else None)
            runner.wait_ready()
            live = start_recording(runner)
            player = mic.play_async(clip_path(CLIP))  # the laptop plays the clip
            finish_playing(runner, player, clips()[CLIP]["duration_s"] + 20, 30)
            mic.wait(player)
            runner.close_live(live)
    finally:
        ssh_err = _stop(tunnel)
    assert live.error is None, (live.error, ssh_err)
    recording = [s for s in statuses if s.state == "recording"]
    assert recording, statuses
    origin = recording[0].detail
    # the console shows where it records from: the laptop's source, through the tunnel
    assert origin == f"{LAPTOP_SOURCE} @ tcp:127.0.0.1:{tunnel_port}", origin
    text = " ".join(s.text for s in live.segments)
    reference = (ROOT / "tests" / "data" / "txt" / f"{CLIP}.txt").read_text(encoding="utf-8")
    overlap = _overlap(reference, text)
    print(f"over ssh -R from {origin}: {overlap:.0%} of the reference words: {text}")
    assert overlap >= 0.5, f"{overlap:.0%} of the reference words; got {text!r}"


def test_live_without_a_sound_server_says_so_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`live` with nothing answering: one line naming the problem and its fix, exit 1, no
    traceback and no console; sessions (and doctor) still run."""
    if not shutil.which("pactl"):
        skip_or_fail_in_ci("pactl missing (pulseaudio-utils)")
    dead = {"PULSE_SERVER": f"unix:{tmp_path}/nobody-here", "XDG_RUNTIME_DIR": str(tmp_path)}
    env = {k: v for k, v in os.environ.items() if k not in ("PULSE_SOURCE", "VMIC_DIR")}
    out = subprocess.run([sys.executable, "-m", "tui.cli", "live"], capture_output=True,
                         text=True, timeout=60, cwd=ROOT, env={**env, **dead},
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 1, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "no sound server" in lines[0] and "PULSE_SERVER=tcp:localhost:4713" in lines[0]
    assert "ssh -R 4713:localhost:4713" in lines[0] and "Traceback" not in out.stderr
    assert run_cli("sessions", env=dead, timeout=60).returncode == 0

    from engine.audio.mic import NO_SOUND_SERVER_FIX
    from engine.doctor import check_sound_server

    for key, value in dead.items():
        monkeypatch.setenv(key, value)
    check = check_sound_server()
    assert check.status == "warn" and check.fix == NO_SOUND_SERVER_FIX

    # `r` in a console opened without a sound server: the same line, as a stream error
    cfg = (load_config()
           .replace("paths", recordings_dir=tmp_path / "rec", log_dir=tmp_path / "logs")
           .replace("diarization", enabled=False))
    with Supervisor(cfg, diarization=False) as engine:
        runner = Runner(engine)
        runner.wait_ready()
        live = runner.start_live(None, "pt")
        deadline = time.monotonic() + 30
        while not live.done:
            assert time.monotonic() < deadline, "no microphone did not end the stream"
            runner.pump(0.1)
    assert live.error is not None and live.error.startswith("no sound server"), live.error
    assert NO_SOUND_SERVER_FIX in live.error and "\n" not in live.error
    assert not list((tmp_path / "rec").glob("*.wav"))  # no empty recording left behind


def test_status_bar_names_the_source_and_host() -> None:
    """The console's status bar puts where a recording comes from beside the REC badge,
    cut short so the bar stays one line."""
    from engine.messages import MicLevel, StreamOpened
    from tui.state import ConsoleState
    from tui.widgets.status_bar import mic_origin

    state = ConsoleState()
    state.apply(StreamOpened(1, "/tmp/rec.wav", 0.0, 16000, 1, "mic/PCM_16"))
    assert mic_origin(state) == ""
    where = "laptop_mic @ tcp:localhost:4713"
    state.apply(MicStatus(1, "recording", where, path="/tmp/rec.wav"))
    state.apply(MicLevel(1, -20.0, -10.0, 1.0, 0))
    assert mic_origin(state) == where
    long = "alsa_input.usb-Blue_Microphones_Yeti-00.analog-stereo @ tcp:localhost:4713"
    state.apply(MicStatus(1, "recording", long))
    assert len(mic_origin(state)) == 36 and mic_origin(state).endswith("…")
    state.apply(MicStatus(1, "stopped", "1.0 s recorded"))
    assert mic_origin(state) == ""
