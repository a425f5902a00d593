"""`transcrevai transcribe --cluster` on a real two-node Ray cluster (issue 18).

The cluster is Ray's own: `ray.cluster_utils.Cluster`, a head and a second node, each a
separate raylet with one CPU, on this machine (so removing one is a real node loss). The
command runs as a user runs it, in its own process, joining the cluster by address; actors
load the real models and run the real handlers. Nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, clip_path, run_cli, skip_or_fail_in_ci, write_config

CLIPS = ("ptbr_fleurs_000", "ptbr_ttspt_03", "ptbr_ttspt_09")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    try:
        from ray.cluster_utils import Cluster
    except ImportError:
        skip_or_fail_in_ci("ray is not installed (the cluster extra)")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    try:
        yield c
    finally:
        c.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("archive")
    for clip in CLIPS:
        shutil.copy(clip_path(clip), folder / f"{clip}.wav")
    return folder


@pytest.fixture(scope="module")
def local_outputs(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same files through this machine's engine: what the cluster must match."""
    out = tmp_path_factory.mktemp("local")
    proc = run_cli("transcribe", *sorted(str(p) for p in inputs.glob("*.wav")), "-f", "json",
                   "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def _config(out: Path, extra: str = "") -> str:
    """A config keeping the batch's sessions in a folder of the test's own (`OUT/../rec`),
    with `extra` TOML after it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = write_config(out.parent)
    cfg.write_text(cfg.read_text() + extra)
    return str(cfg)


def _on_cluster(cluster: Any, files: list[Path], out: Path, *extra: str,
                timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return run_cli("--config", _config(out), "transcribe", *map(str, files), "-f", "json",
                   "-o", str(out), "--cluster", cluster.address, *extra, timeout=timeout)


def _start(cluster: Any, files: list[Path], out: Path, actors: int,
           stderr: int = subprocess.PIPE, extra: str = "") -> subprocess.Popen[str]:
    """The batch command in the background (a driver the test can kill or watch)."""
    cmd = [sys.executable, "-m", "engine.cli", "--config", _config(out, extra), "transcribe",
           *map(str, files), "-f", "json", "-o", str(out), "--cluster", cluster.address,
           "--actors", str(actors)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)


def _first_line(proc: subprocess.Popen[str]) -> str:
    """The first finished file's line (piped: one line per finished file)."""
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert " -> " in first, first
    return first


def _kill_a_busy_actor() -> None:
    """SIGKILL an actor process while it runs audio (a file or a piece of one)."""
    deadline = time.monotonic() + 120
    busy: list[int] = []
    while not busy and time.monotonic() < deadline:
        found = subprocess.run(["pgrep", "-f", "ray::Pipeline.feed"], capture_output=True,
                               text=True)
        busy = [int(p) for p in found.stdout.split()]
        time.sleep(0.05)
    assert busy, "no actor ever ran"
    os.kill(busy[0], signal.SIGKILL)


def _same(a: Path, b: Path, names: list[str]) -> None:
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_plan_actors_from_the_cluster_cpus() -> None:
    from engine.cluster.batch import plan_actors

    nodes = [{"NodeID": "a", "Alive": True, "Resources": {"CPU": 4.0}},
             {"NodeID": "b", "Alive": True, "Resources": {"CPU": 1.0}},
             {"NodeID": "c", "Alive": False, "Resources": {"CPU": 8.0}}]
    # by default an actor per 2 CPUs, at least one per node; dead nodes get none
    assert plan_actors(nodes, 0, 2) == [("a", 2), ("a", 2), ("b", 1)]
    # --actors N: spread by CPUs, each actor's CPUs (its whisper threads) within its node's
    assert sorted(plan_actors(nodes, 3, 2)) == [("a", 2), ("a", 2), ("b", 1)]
    assert plan_actors(nodes, 1, 2) == [("a", 4)]
    assert plan_actors(nodes, 1, 2, max_cpus=1) == [("a", 1)]
    assert plan_actors([], 0, 2) == []


def test_long_recordings_are_cut_at_pauses_and_speakers_matched_by_voice(
        tmp_path: Path) -> None:
    """The rules of a split, without Ray: how many pieces (a whole multiple of the actors,
    none below split_piece_s), cuts in the pause nearest each even point, and the pieces'
    speakers made one set by their voices (each matched at most once, below the threshold
    a new speaker), numbered by first appearance on the recording's clock."""
    import numpy as np
    import soundfile as sf

    from engine.audio.source import probe
    from engine.cluster.split import PieceResult, cut_points, match_speakers, piece_count, stitch
    from engine.config import ClusterConfig
    from engine.messages import Segment, SpeakerTurn, Word
    from engine.transcript import Transcript

    cc = ClusterConfig()
    assert piece_count(cc.split_min_s - 1, 4, cc) == 1  # short: whole
    assert piece_count(3600, 1, cc) == 1  # one actor: whole
    assert piece_count(1200, 2, cc) == 4 and piece_count(400, 2, cc) == 2
    assert piece_count(400, 100, cc) == 3  # never pieces shorter than split_piece_s

    sr = 16000
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(60 * sr)).astype(np.float32)
    audio[int(27.0 * sr):int(27.6 * sr)] = 0.0  # the pause nearest the middle
    audio[int(15.0 * sr):int(16.0 * sr)] = 0.0  # a longer one, too far from it
    wav = tmp_path / "n.wav"
    sf.write(str(wav), audio, sr)
    (cut,) = cut_points(probe(wav), 2)
    assert 27.0 * sr <= cut <= 27.6 * sr

    a, b, c = (np.eye(3, dtype=np.float32)[i] for i in range(3))
    maps = match_speakers([[("S0", a, 10.0), ("S1", b, 5.0)],
                           [("S0", b * 0.9 + a * 0.1, 4.0), ("S1", c, 3.0)],
                           [("S0", a, 2.0), ("S1", a * 0.95 + b * 0.05, 2.0)]], 0.6)
    assert maps[0] == {"S0": 0, "S1": 1}
    assert maps[1] == {"S0": 1, "S1": 2}  # same voice as b; c is new
    assert maps[2]["S0"] == 0 and maps[2]["S1"] == 3  # a is taken once: the other is new

    def piece(start_s: float, spk: str) -> PieceResult:
        w = (Word(0.5, 1.0, "bom", speaker=spk),)
        tr = Transcript("x.wav", 10.0, "pt", "m",
                        [Segment(0.5, 1.0, "bom", w, speaker=spk)],
                        [SpeakerTurn(0.4, 1.1, spk)], True)
        return PieceResult(int(start_s * sr), tr, [(spk, a if spk == "S1" else b, 1.0)])

    tr = stitch("x.wav", 20.0, [piece(0.0, "S1"), piece(10.0, "S0"), piece(15.0, "S5")], 0.6)
    assert [(s.start, s.speaker) for s in tr.segments] == [
        (0.5, "SPEAKER_00"), (10.5, "SPEAKER_01"), (15.5, "SPEAKER_01")]
    assert tr.segments[1].words[0].start == 10.5
    assert tr.segments[1].words[0].speaker == "SPEAKER_01"
    assert [t.speaker for t in tr.turns] == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_01"]


def test_a_long_recording_runs_as_pieces_on_both_nodes_with_one_set_of_speakers(
        cluster: Any, tmp_path: Path) -> None:
    """A recording past split_min_s is cut at pauses into pieces that run on both nodes at
    once; the dialogue's four people, heard in every piece, keep one label each across the
    recording (voices matched across pieces), on the recording's clock. Run again with an
    actor SIGKILLed mid-piece, the piece runs again and the output is byte-identical."""
    import json

    import numpy as np
    import soundfile as sf

    from engine.messages import SpeakerTurn
    from engine.scoring import edit_distance, normalize
    from tests.conftest import clips, der, reference_turns

    clip = "ptbr_dlg_mixed_4spk"
    audio, sr = sf.read(str(clip_path(clip)), dtype="float32")
    reps, pause = 3, np.zeros(sr, np.float32)
    span = (len(audio) + len(pause)) / sr
    wav = tmp_path / "reuniao.wav"
    sf.write(str(wav), np.concatenate([audio, pause] * reps), sr)
    ref = [SpeakerTurn(t.start + k * span, t.end + k * span, t.speaker)
           for k in range(reps) for t in reference_turns(clip)]
    out = tmp_path / "out" / "reuniao.json"
    cfg = Path(_config(out, "[cluster]\nsplit_min_s = 60.0\nsplit_piece_s = 30.0\n"))
    proc = run_cli("--config", str(cfg), "transcribe", str(wav), "-f", "json", "-o", str(out),
                   "--cluster", cluster.address, "--actors", "2", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "2 pieces cut at pauses" in proc.stderr, proc.stderr
    doc = json.loads(out.read_text())
    turns = [SpeakerTurn(t["start"], t["end"], t["speaker"]) for t in doc["turns"]]
    assert len({t.speaker for t in turns}) == 4, turns
    assert der(ref, turns, reps * span) < 0.10
    starts = [s["start"] for s in doc["segments"]]
    assert starts == sorted(starts) and starts[-1] > 2 * span
    words = normalize(clips()[clip]["transcript"]) * reps
    hyp = normalize(" ".join(s["text"] for s in doc["segments"]))
    assert edit_distance(words, hyp) / len(words) < 0.15

    again = tmp_path / "again" / "reuniao.json"
    again.parent.mkdir()
    cmd = [sys.executable, "-m", "engine.cli", "--config", str(cfg), "transcribe", str(wav),
           "-f", "json", "-o", str(again), "--cluster", cluster.address, "--actors", "2"]
    run = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    _kill_a_busy_actor()
    _, stderr = run.communicate(timeout=600)
    assert run.returncode == 0, stderr
    assert again.read_bytes() == out.read_bytes()  # as if undisturbed
    from engine.sessions import iter_sessions

    ended = [x for x in iter_sessions(out.parent / "rec") if Path(x.meta.audio) == wav]
    assert len(ended) == 2  # once per command: the killed piece did not end it twice


def _tampered_models(folder: Path) -> Path:
    """A node's own models folder (TRANSCREVAI_MODELS_DIR) with one flipped byte."""
    src = ROOT / "models"
    folder.mkdir()
    (folder / "whisper-base").symlink_to(src / "whisper-base")
    shutil.copytree(src / "diarization", folder / "diarization")
    seg = folder / "diarization" / "segmentation-3.0.onnx"
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0x01
    seg.write_bytes(bytes(data))
    return folder


def test_a_batch_resumes_after_its_driver_dies_identical_to_local_and_bad_parts_fail_alone(
        cluster: Any, inputs: Path, local_outputs: Path, tmp_path: Path) -> None:
    """The driver is killed once its first file is written; the same command run again
    (with a damaged file added, and a third node whose weights were tampered with) skips
    that file by the manifest, names the bad node and gives it nothing, fails the bad file
    with one line, and every transcript is byte-identical to this machine's."""
    files = sorted(inputs.glob("*.wav"))
    out = tmp_path / "out"
    proc = _start(cluster, files, out, 2, stderr=subprocess.DEVNULL)
    first = _first_line(proc)
    proc.kill()
    proc.wait()
    bad = tmp_path / "quebrado.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk")
    from engine.cluster.pipeline import MODELS_ENV

    tampered = cluster.add_node(num_cpus=1, env_vars={
        MODELS_ENV: str(_tampered_models(tmp_path / "node3-models"))})
    cluster.wait_for_nodes()
    try:
        again = _on_cluster(cluster, files + [bad], out, "--actors", "3")
    finally:
        cluster.remove_node(tampered)
    assert again.returncode == 2, again.stderr  # one input was bad, the rest went on
    errors = [ln for ln in again.stderr.splitlines() if ln.strip()]
    assert len(errors) == 2, errors
    file_line, node_line = sorted(errors, key=lambda ln: "quebrado.wav" not in ln)
    assert "quebrado.wav" in file_line, errors
    assert "SHA-256" in node_line and "gets no files" in node_line, errors
    redone = [ln.split(" -> ")[0] for ln in again.stdout.splitlines() if " -> " in ln]
    assert first.split(" -> ")[0] not in redone and len(redone) == len(files) - 1, redone
    _same(local_outputs, out, [f"{c}.json" for c in CLIPS])
    # each transcript is also a session: listed, marked as the cluster's, its text the file's
    listed = run_cli("--config", _config(out), "sessions")
    rows = [ln for ln in listed.stdout.splitlines()[1:] if ln.strip()]
    assert len(rows) == len(files) and all(" cluster " in ln for ln in rows), listed.stdout
    import json

    from engine.sessions import iter_sessions

    kept = {Path(sess.meta.audio).name: sess for sess in iter_sessions(tmp_path / "rec")}
    for clip in CLIPS:
        text = [s["text"] for s in json.loads((out / f"{clip}.json").read_text())["segments"]]
        assert [seg.text for seg in kept[f"{clip}.wav"].transcript().spoken] == text


def test_a_node_lost_mid_batch_leaves_the_batch_to_the_other(
        cluster: Any, inputs: Path, local_outputs: Path, tmp_path: Path) -> None:
    """The second node is removed while the batch runs; its actor's file starts again on the
    node that remains, identical to this machine's transcript. (A SIGKILLed actor, restarted
    by Ray, is tested with a piece of a long file above.) Last in this module: the cluster
    keeps one node after it."""
    files = sorted(inputs.glob("*.wav"))
    out = tmp_path / "out"
    # the lost actor cannot come back (no CPU left): retired after 10 s, not the default 30
    proc = _start(cluster, files, out, 2, extra="[cluster]\nrestart_wait_s = 10.0\n")
    first = _first_line(proc)  # both actors loaded and the batch under way
    cluster.remove_node(cluster.list_all_nodes()[1])
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    done = [ln for ln in (first + stdout).splitlines() if " -> " in ln]
    assert sorted(ln.split(" -> ")[0] for ln in done) == sorted(map(str, files)), done
    _same(local_outputs, out, [f"{c}.json" for c in CLIPS])


def test_progress_shows_the_batch_and_each_node() -> None:
    """The terminal line: the batch as a whole, then each node's actors, files, audio and
    speed; a node that got no work says why."""
    from engine.cluster.batch import NodeReport, Progress

    nodes = [NodeReport("h1/10", "aaaaaa11", files=3, audio_s=120.0),
             NodeReport("h1/11", "aaaaaa11", files=1, audio_s=60.0),
             NodeReport("actor 3", "bbbbbb22", error="weights fail their SHA-256 check")]
    progress = Progress(10, done=4, audio_s=180.0, total_audio_s=900.0,
                        t0=time.monotonic() - 60.0)
    line = progress.line(nodes)
    assert line.startswith("files 4/10 · audio 0.05 h · 3.0× real time · ETA 4.0 min"), line
    assert "h1 aaaaaa: 2 actors, 4 files, 3.0 min, 3.0×" in line, line
    assert "actor 3 bbbbbb: 0 actors, 0 files" in line and "SHA-256" in line, line
