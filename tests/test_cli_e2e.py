"""`transcrevai transcribe` end to end: real worker processes, real whisper base, real ONNX
diarization, on real speech from tests/data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import soundfile as sf

from engine.config import load_config
from engine.export import from_json, render
from engine.models.registry import assemble_whisper_base
from engine.scoring import edit_distance, normalize
from engine.transcript import Transcript
from engine.workers.spec import ROLES
from tests.conftest import (
    ROOT,
    assert_one_line_error,
    clip_path,
    clips,
    der,
    reference_turns,
    rttm_turns,
    run_cli,
    write_config,
)
from tests.formats import parse_srt, parse_vtt

WORKER_TITLES = {f"transcrevai: {r}" for r in ROLES}


def _wer(clip_id: str, text: str) -> float:
    ref = normalize(clips()[clip_id]["transcript"])
    return edit_distance(ref, normalize(text)) / len(ref)


def _der(clip_id: str, rttm_text: str) -> float:
    """DER (±0.25 s collar) of an exported RTTM against the clip's reference RTTM."""
    return der(reference_turns(clip_id), rttm_turns(rttm_text), clips()[clip_id]["duration_s"])


def _title(proc: psutil.Process) -> str:
    """The process title as `ps` shows it (setproctitle pads argv with empty strings)."""
    return " ".join(part for part in proc.cmdline() if part)


@pytest.fixture(scope="module")
def dialogue(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One real run on the 4-speaker PT-BR dialogue, watching process titles while it runs."""
    out = tmp_path_factory.mktemp("dlg") / "dialogue.json"
    cmd = [sys.executable, "-m", "engine.cli", "transcribe", str(clip_path("ptbr_dlg_mixed_4spk")),
           "--format", "json", "--output", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    seen: set[str] = set()
    pids: set[int] = set()

    def watch() -> None:
        while proc.poll() is None:
            for k in psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None \
                    else []:
                try:
                    title = _title(k)
                except psutil.Error:
                    continue
                if title in WORKER_TITLES:
                    seen.add(title)
                    pids.add(k.pid)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    stdout, stderr = proc.communicate(timeout=600)
    watcher.join()
    return {"rc": proc.returncode, "stderr": stderr, "json": out.read_text() if out.exists()
            else "", "titles": seen, "pids": pids}


def test_dialogue_runs_in_titled_worker_processes(dialogue: dict[str, object]) -> None:
    assert dialogue["rc"] == 0, dialogue["stderr"]
    assert dialogue["titles"] == WORKER_TITLES
    # none of them outlives the command
    alive = [p for p in dialogue["pids"] if psutil.pid_exists(p)  # type: ignore[attr-defined]
             and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive


def test_dialogue_transcript_and_speakers(dialogue: dict[str, object]) -> None:
    tr = from_json(str(dialogue["json"]))
    assert tr.diarized and tr.language == "pt"
    text = " ".join(s.text for s in tr.segments)
    # measured 12% to 30% on different 2-core machines with the same weights (whisper base
    # drops a sentence of this clip on some: issue 15); above that, decoding broke
    assert _wer("ptbr_dlg_mixed_4spk", text) <= 0.32, text
    found = len({t.speaker for t in tr.turns})
    assert abs(found - clips()["ptbr_dlg_mixed_4spk"]["n_speakers"]) <= 1, found
    assert _der("ptbr_dlg_mixed_4spk", render(tr, "rttm")) <= 0.15
    # every segment has a speaker from the turns and words inside the segment
    labels = {t.speaker for t in tr.turns}
    for seg in tr.segments:
        assert seg.speaker in labels
        assert all(seg.start - 0.01 <= w.start <= w.end <= seg.end + 0.01 for w in seg.words)
    starts = [s.start for s in tr.segments]
    assert starts == sorted(starts)


def test_every_format_of_a_real_transcript_parses(dialogue: dict[str, object]) -> None:
    tr = from_json(str(dialogue["json"]))
    srt, vtt = parse_srt(render(tr, "srt")), parse_vtt(render(tr, "vtt"))
    assert len(srt) >= len(tr.segments) and len(vtt) == len(srt)
    txt = render(tr, "txt")
    assert all(line.startswith("[") and "SPEAKER_" in line for line in txt.splitlines())
    assert json.loads(render(tr, "json"))["segments"]


def assert_rttm_is_the_turns(rttm_text: str, tr: Transcript) -> None:
    """An exported RTTM says what the transcript's turns say: the same speakers, the same
    times to the millisecond (DER 0 with no collar), one line per turn."""
    exported = rttm_turns(rttm_text)
    assert tr.turns and len(exported) == len(tr.turns)
    names = {t.speaker: tr.name(t.speaker).replace(" ", "_") for t in tr.turns}
    assert {t.speaker for t in exported} == set(names.values())
    for e, t in zip(sorted(exported, key=lambda t: t.start),
                    sorted(tr.turns, key=lambda t: t.start), strict=True):
        assert abs(e.start - t.start) <= 0.0015 and abs(e.end - t.end) <= 0.0015, (e, t)
    assert der(tr.turns, exported, tr.duration_s, collar_s=0.0) <= 0.001


def test_rttm_export_is_the_transcript_turns(dialogue: dict[str, object]) -> None:
    tr = from_json(str(dialogue["json"]))
    assert_rttm_is_the_turns(render(tr, "rttm"), tr)


def test_two_speaker_call_diarization(tmp_path: Path) -> None:
    out = tmp_path / "sample.rttm"
    proc = run_cli("transcribe", str(clip_path("en_pyannote_sample")), "--language", "en",
                   "--format", "rttm", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    rttm = out.read_text()
    assert len({ln.split()[7] for ln in rttm.splitlines()}) == clips()[
        "en_pyannote_sample"]["n_speakers"]
    assert _der("en_pyannote_sample", rttm) <= 0.03


def test_srt_to_stdout_without_diarization() -> None:
    proc = run_cli("transcribe", str(clip_path("ptbr_fleurs_000")), "--format", "srt",
                   "--no-diarization")
    assert proc.returncode == 0, proc.stderr
    cues = parse_srt(proc.stdout)
    assert _wer("ptbr_fleurs_000", " ".join(" ".join(c.lines) for c in cues)
                .replace("UNKNOWN: ", "")) <= 0.2


def _cut_wav(tmp_path: Path) -> Path:
    data = clip_path("ptbr_fleurs_000").read_bytes()
    path = tmp_path / "cortado ção.wav"
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_wav_keeps_what_is_there_and_exits_non_zero(tmp_path: Path) -> None:
    proc = run_cli("transcribe", str(_cut_wav(tmp_path)), "--no-diarization")
    line = assert_one_line_error(proc)
    assert proc.returncode == 3 and "truncated" in line
    # the first half is there: the text is about half the reference's words and matches a
    # prefix of it (the cut falls mid-word, so the best prefix length is searched near it)
    hyp = normalize(" ".join(re.sub(r"^\[[^\]]*\]\s*\S+:\s*", "", ln)
                             for ln in proc.stdout.splitlines()))
    ref = normalize(clips()["ptbr_fleurs_000"]["transcript"])
    assert 0.3 * len(ref) <= len(hyp) <= 0.7 * len(ref), hyp
    best = min(edit_distance(ref[:n], hyp) / n for n in range(len(hyp) - 3, len(hyp) + 4))
    assert best <= 0.3, hyp


@pytest.mark.parametrize("kind", ["missing", "dir", "text", "empty", "zero", "garbage"])
def test_bad_input_is_one_line_without_starting_models(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.wav"
    if kind == "dir":
        path.mkdir()
    elif kind == "text":
        path.write_text("isto não é áudio\n" * 50)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "zero":
        path.write_bytes(clip_path("ptbr_fleurs_000").read_bytes()[:44])
    elif kind == "garbage":
        path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(range(200)))
    t0 = time.monotonic()
    proc = run_cli("transcribe", str(path))
    line = assert_one_line_error(proc)
    assert proc.returncode == 2 and str(path) in line
    assert time.monotonic() - t0 < 20  # refused up front, not after loading models


def test_a_bad_file_in_a_batch_does_not_stop_the_others(tmp_path: Path) -> None:
    good = clip_path("ptbr_fleurs_000")
    proc = run_cli("transcribe", str(tmp_path / "nope.wav"), str(good), "--no-diarization",
                   "--format", "vtt", "--output", str(tmp_path / "out"))
    assert "nope.wav" in assert_one_line_error(proc)
    assert parse_vtt((tmp_path / "out" / "ptbr_fleurs_000.vtt").read_text())


def test_model_hash_mismatch_is_one_line_naming_the_file(tmp_path: Path) -> None:
    models = load_config().paths.models_dir
    assemble_whisper_base(models)
    shutil.copytree(models / "whisper-base", tmp_path / "whisper-base")
    (tmp_path / "diarization").symlink_to(models / "diarization")
    with (tmp_path / "whisper-base" / "model.bin").open("r+b") as fh:
        fh.seek(1_000_000)
        b = fh.read(1)
        fh.seek(1_000_000)
        fh.write(bytes([b[0] ^ 0xFF]))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[paths]\nmodels_dir = "{tmp_path}"\nlog_dir = "{tmp_path}/logs"\n')
    proc = run_cli("--config", str(cfg), "transcribe", str(clip_path("ptbr_fleurs_000")))
    line = assert_one_line_error(proc)
    assert proc.returncode == 1 and "model.bin" in line and "SHA-256" in line


def test_bench_reports_figures_as_json() -> None:
    proc = run_cli("bench", "--corpus", str(ROOT / "tests/data"), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert {c["id"] for c in doc["clips"]} == set(clips())
    pooled = doc["pooled"]
    for key in ("wer", "der", "der_c0", "processing_ratio", "peak_rss_mb", "model_load_s"):
        assert isinstance(pooled[key], float | int), key
    assert pooled["wer"] <= 0.25 and pooled["der"] <= 0.10
    assert 100 < pooled["peak_rss_mb"] < 2000


def test_without_diarization_models_the_transcript_still_comes(tmp_path: Path) -> None:
    models = load_config().paths.models_dir
    assemble_whisper_base(models)
    (tmp_path / "whisper-base").symlink_to(models / "whisper-base")  # no diarization/ here
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[paths]\nmodels_dir = "{tmp_path}"\nlog_dir = "{tmp_path}/logs"\n')
    proc = run_cli("--config", str(cfg), "transcribe", str(clip_path("ptbr_fleurs_000")))
    line = assert_one_line_error(proc)
    assert proc.returncode == 3 and "diarization unavailable" in line
    assert "segmentation-3.0.onnx" in line
    assert _wer("ptbr_fleurs_000", proc.stdout.split(":", 3)[-1]) <= 0.2


def test_every_sentence_of_the_dialogue_has_words(dialogue: dict[str, object]) -> None:
    """Whisper base, decoding the 30 s window whole, skipped the second sentence (5-11 s)
    and gave its speaker a lone "É"; each stretch of speech without words is now decoded
    again on its own. Each reference sentence (tests/data/segments/) must get most of its
    words, at its own time."""
    tr = from_json(str(dialogue["json"]))
    ref = json.loads((ROOT / "tests/data/segments/ptbr_dlg_mixed_4spk.json").read_text())
    words = [w for s in tr.spoken for w in s.words]
    for sentence in ref:
        said = normalize(sentence["text"])
        heard = normalize(" ".join(w.text for w in words
                                   if sentence["start"] - 0.5 <= (w.start + w.end) / 2
                                   <= sentence["end"] + 0.5))
        assert len(heard) >= len(said) // 2, (sentence["text"], heard)
        assert edit_distance(said, heard) / len(said) <= 0.6, (sentence["text"], heard)
    assert not tr.gaps  # every stretch of this clip has words


def test_a_vocabulary_fixes_a_name_and_adds_nothing_to_silence(
        dialogue: dict[str, object], tmp_path: Path) -> None:
    """`--vocabulary FILE` (one term a line) is passed to whisper as hotwords: a name base
    gets wrong comes out right, and the terms do not appear in non-speech."""
    vocab = ROOT / "tests/data/vocabulary_dlg.txt"
    terms = [t for t in vocab.read_text().splitlines() if t and not t.startswith("#")]
    name = normalize(terms[0])
    without = normalize(" ".join(s.text for s in from_json(str(dialogue["json"])).spoken))
    assert not set(name) <= set(without)  # what this test is about: base misses it
    out = tmp_path / "v.json"
    proc = run_cli("transcribe", str(clip_path("ptbr_dlg_mixed_4spk")), "--format", "json",
                   "--vocabulary", str(vocab), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    tr = from_json(out.read_text())
    assert set(name) <= set(normalize(" ".join(s.text for s in tr.spoken)))
    assert _wer("ptbr_dlg_mixed_4spk", " ".join(s.text for s in tr.spoken)) <= \
        _wer("ptbr_dlg_mixed_4spk", " ".join(s.text for s in from_json(
            str(dialogue["json"])).spoken))
    # 8 s of room noise: no words, with or without the terms
    rng = np.random.default_rng(3)
    quiet = tmp_path / "quiet.wav"
    sf.write(str(quiet), (0.003 * rng.standard_normal(8 * 16000)).astype(np.float32), 16000)
    proc = run_cli("transcribe", str(quiet), "--format", "json", "--no-diarization",
                   "--vocabulary", str(vocab))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["segments"] == []


def test_babble_that_looks_like_speech_is_reported_as_a_gap(tmp_path: Path) -> None:
    """A crowd (32 voices at once): where the VAD calls it speech and whisper gives no words
    even decoded again on its own (measured at int8 and float32), the transcript marks it
    "[inaudible N s]" instead of passing over it in silence. Whatever whisper makes of a
    crowd, every stretch of it the VAD calls speech ends with words or a gap, and the
    sentence before it keeps its words."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    from engine.transcript import uncovered

    speech, sr = sf.read(str(clip_path("ptbr_fleurs_000")), dtype="float32")
    voices, _ = sf.read(str(clip_path("ptbr_dlg_mixed_4spk")), dtype="float32")
    rng = np.random.default_rng(2)
    crowd_audio = sum(np.roll(voices, int(rng.integers(len(voices))))
                      for _ in range(32))[: 12 * sr]
    crowd_audio = (0.3 * crowd_audio / np.abs(crowd_audio).max()).astype(np.float32)
    wav = tmp_path / "sentence_then_crowd.wav"
    pause = np.zeros(sr, np.float32)
    audio = np.concatenate([speech, pause, crowd_audio, pause]).astype(np.float32)
    sf.write(str(wav), audio, sr)
    crowd = (len(speech) + sr) / sr, (len(speech) + sr + len(crowd_audio)) / sr
    out = tmp_path / "t.json"
    proc = run_cli("transcribe", str(wav), "--format", "json", "--no-diarization",
                   "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    tr = from_json(out.read_text())
    assert _wer("ptbr_fleurs_000", " ".join(
        s.text for s in tr.spoken if s.end <= crowd[0] + 0.5)) <= 0.3
    gaps = json.loads(out.read_text())["gaps"]
    assert gaps and all(crowd[0] - 0.5 <= g["start"] < g["end"] <= crowd[1] + 0.5
                        for g in gaps), gaps
    assert "[inaudible" in render(tr, "txt")
    speech_s = [(d["start"] / sr, d["end"] / sr) for d in get_speech_timestamps(
        audio, VadOptions(speech_pad_ms=0))]
    marked = sorted([(w.start, w.end) for s in tr.spoken for w in s.words]
                    + [(g["start"], g["end"]) for g in gaps])
    assert uncovered(speech_s, marked, 0.3, 0.5) == []


def test_speech_the_vad_misses_is_checked_where_the_diarizer_hears_it(tmp_path: Path) -> None:
    """Coverage counts the diarizer's speech, not the VAD's alone. With the VAD made deaf
    (threshold 0.95 keeps 0.5 s of the dialogue's second sentence, a softer voice) and short
    units (so no neighbour's unit spans it), that sentence is lost without the check; with
    it, the segmentation model's speech (what the turns are made of) has no words there, so
    it is decoded again on its own and comes back (measured: 7.4-11.2 s)."""
    ref = "perdeu o controle do carro"
    audio, sr = sf.read(str(clip_path("ptbr_dlg_mixed_4spk")), dtype="float32")
    wav = tmp_path / "two_sentences.wav"  # its first two sentences: half the decoding
    sf.write(str(wav), audio[: int(11.6 * sr)], sr)
    found = {}
    for turns in (False, True):
        (tmp_path / str(turns)).mkdir()
        cfg = write_config(tmp_path / str(turns))
        cfg.write_text(cfg.read_text() + "[vad]\nthreshold = 0.95\n[transcription]\n"
                       f"unit_max_s = 3.0\nrecheck_turns = {str(turns).lower()}\n")
        proc = run_cli("--config", str(cfg), "transcribe", str(wav), "--format", "json",
                       "--no-diarization")
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        found[turns] = " ".join(s["text"] for s in doc["segments"]
                                if 5.0 <= s["start"] and s["end"] <= 11.5).lower()
        found[turns] += " " + " ".join(f"gap {g['start']}-{g['end']}" for g in doc["gaps"])
    assert ref not in found[False], found
    assert ref in found[True], found


def test_a_bad_vocabulary_file_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("transcribe", str(clip_path("ptbr_fleurs_000")), "--vocabulary",
                   str(tmp_path / "none.txt"))
    assert "--vocabulary" in assert_one_line_error(proc) and proc.returncode == 2


def test_bench_measures_a_vocabulary_against_none_and_on_non_speech() -> None:
    proc = run_cli("bench", "--corpus", str(ROOT / "tests/data"), "--clips", "dlg",
                   "--no-diarization", "--vocabulary",
                   str(ROOT / "tests/data/vocabulary_dlg.txt"), "--json")
    assert proc.returncode == 0, proc.stderr
    pooled = json.loads(proc.stdout)["pooled"]
    vocab = pooled["vocabulary"]
    assert vocab["terms"] and vocab["wer_pt_without"] is not None
    assert pooled["wer"] <= vocab["wer_pt_without"]  # the names help, on this clip
    assert vocab["nonspeech_words_with"] == vocab["nonspeech_words_without"] == 0
