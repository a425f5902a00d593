"""Sessions (issue 7): a real replay kept on disk, listed, exported in every format, renamed,
searched across sessions (accent-insensitive), read back after a torn journal line; batch
transcription with outputs beside each file and a progress bar on a terminal.

The session is made by the real engine (real workers and models) through the same path the
console's replay uses; the commands run as separate processes like a user would run them.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import load_config
from engine.export import from_json, render
from engine.runner import Runner
from engine.sessions import (
    JOURNAL_SUFFIX,
    META_SUFFIX,
    SessionWriter,
    find_session,
    iter_sessions,
    load_session,
    search_sessions,
)
from engine.supervisor import Supervisor
from engine.transcript import fold
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


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recordings folder with one real session: the 4-speaker dialogue, replayed."""
    folder = tmp_path_factory.mktemp("sessions")
    write_config(folder)
    rec = folder / "rec"
    with Supervisor(load_config(folder / "config.toml")) as engine:
        runner = Runner(engine)
        runner.wait_ready()
        result = runner.transcribe(str(clip_path("ptbr_dlg_mixed_4spk")), session_dir=rec)
        assert result.ok, result.error
    return folder


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("--config", str(home / "config.toml"), *args)


def _only(home: Path) -> str:
    sessions = list(iter_sessions(home / "rec"))
    assert len(sessions) == 1
    return sessions[0].id


def test_a_replay_is_a_session_on_disk(home: Path) -> None:
    sid = _only(home)
    meta = json.loads((home / "rec" / f"{sid}{META_SUFFIX}").read_text())
    assert meta["source"] == "file" and meta["status"] == "complete"
    assert meta["audio"] == str(clip_path("ptbr_dlg_mixed_4spk").resolve())
    assert meta["duration_s"] > 10 and meta["engine_version"] and meta["started"]
    # the whisper level the quantization chain chose on this machine (cached: no rebuild)
    from engine.models import levels

    in_use = {r.model_kind: r.in_use for r in levels.build_all(load_config())}
    assert in_use["whisper"] in meta["model"] and meta["language"] == "pt"
    lines = [json.loads(x) for x in (home / "rec" / f"{sid}{JOURNAL_SUFFIX}").read_text()
             .splitlines()]
    segs = [x for x in lines if x["type"] == "segment"]
    assert [x["id"] for x in segs] == list(range(len(segs))) and len(segs) >= 3
    for key in ("start", "end", "text", "words", "model", "language", "speaker"):
        assert all(key in x for x in segs), key
    assert any(x["words"] for x in segs)
    assert sum(x["type"] == "refined" for x in lines) == 1


def test_sessions_lists_date_duration_speakers_words(home: Path) -> None:
    sid = _only(home)
    sess = find_session(sid, home / "rec")
    proc = _cli(home, "sessions")
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith(sid))
    fields = row.split()
    assert fields[1] == sess.meta.started[:10]  # the date
    assert str(sess.words) in fields and "complete" in fields
    assert abs(len(sess.speakers) - clips()["ptbr_dlg_mixed_4spk"]["n_speakers"]) <= 1
    assert str(len(sess.speakers)) in fields
    mins, secs = divmod(int(sess.duration_s), 60)
    assert f"{mins}:{secs:02d}" in fields


def test_exports_of_the_session_validate(home: Path, tmp_path: Path) -> None:
    sid = _only(home)
    outs = {}
    for fmt in ("txt", "srt", "vtt", "json", "rttm"):
        target = tmp_path / f"out.{fmt}"
        proc = _cli(home, "export", sid[:10], "--format", fmt, "--output", str(target))
        assert proc.returncode == 0, proc.stderr
        outs[fmt] = target.read_text()
    srt, vtt = parse_srt(outs["srt"]), parse_vtt(outs["vtt"])
    tr = from_json(outs["json"])
    assert len(srt) >= len(tr.segments) and len(vtt) == len(srt)
    assert all(c.lines[0].split(":")[0].startswith("SPEAKER_") for c in srt)
    assert all("<v SPEAKER_" in "".join(c.lines) for c in vtt)
    # at most 2 lines of 42 characters (the SRT name prefix counts; a VTT voice tag does
    # not show), cues never overlap the next one
    import re

    assert all(len(line) <= 42 for c in srt for line in c.lines)
    assert all(len(re.sub(r"^<v [^>]*>", "", line)) <= 42 for c in vtt for line in c.lines)
    for cues in (srt, vtt):
        assert all(a.end <= b.start for a, b in zip(cues, cues[1:], strict=False))
        assert all(c.end > c.start for c in cues)
    # JSON round-trips exactly; the RTTM is the session's own turns, and those are the
    # dialogue's speakers (against the manifest's reference RTTM)
    assert from_json(render(tr, "json")) == tr
    assert json.loads(outs["json"]) == json.loads(render(tr, "json"))
    from tests.test_cli_e2e import assert_rttm_is_the_turns

    assert_rttm_is_the_turns(outs["rttm"], tr)
    clip = clips()["ptbr_dlg_mixed_4spk"]
    assert der(reference_turns(clip["id"]), rttm_turns(outs["rttm"]),
               clip["duration_s"]) <= 0.15
    # stdout by default: the same bytes as the file
    assert _cli(home, "export", sid, "--format", "srt").stdout == outs["srt"]
    # timestamps exact to the millisecond and monotonic
    starts = [s.start for s in tr.segments]
    assert starts == sorted(starts)
    assert all(round(c.start, 3) == c.start for c in srt)


def test_rename_is_stored_and_used_by_every_export(home: Path, tmp_path: Path) -> None:
    work = tmp_path / "home"
    shutil.copytree(home, work)
    write_config(work)
    sid = _only(work)
    proc = _cli(work, "sessions", "rename", sid, "SPEAKER_00", "Ana Souza")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((work / "rec" / f"{sid}{META_SUFFIX}").read_text())
    assert meta["speaker_names"] == {"SPEAKER_00": "Ana Souza"}
    srt = _cli(work, "export", sid, "--format", "srt").stdout
    vtt = _cli(work, "export", sid, "--format", "vtt").stdout
    txt = _cli(work, "export", sid, "--format", "txt").stdout
    rttm = _cli(work, "export", sid, "--format", "rttm").stdout
    js = json.loads(_cli(work, "export", sid, "--format", "json").stdout)
    assert "Ana Souza: " in srt and "SPEAKER_00" not in srt
    assert "<v Ana Souza>" in vtt and "Ana Souza" in txt and "Ana_Souza" in rttm
    assert {"id": "SPEAKER_00", "name": "Ana Souza"} in js["speakers"]
    # renaming by the current name works too; a speaker that does not exist is one line
    assert _cli(work, "sessions", "rename", sid, "Ana Souza", "Ana").returncode == 0
    assert "Ana: " in _cli(work, "export", sid, "--format", "srt").stdout
    line = assert_one_line_error(_cli(work, "sessions", "rename", sid, "SPEAKER_99", "X"))
    assert "SPEAKER_99" in line
    assert "nope" in assert_one_line_error(_cli(work, "export", "nope"))


def test_search_across_sessions_is_accent_insensitive(home: Path, tmp_path: Path) -> None:
    sid = _only(home)
    tr = load_session(home / "rec" / f"{sid}{META_SUFFIX}").transcript()
    accented = next(w.strip(".,?!") for s in tr.segments for w in s.text.split()
                    if fold(w) != w.lower() and len(w) > 3)
    plain = fold(accented)
    assert plain != accented.lower()
    hits = search_sessions(home / "rec", plain)
    assert hits and all(fold(plain) in fold(h.text) for h in hits)
    proc = _cli(home, "sessions", "search", plain.upper())
    assert proc.returncode == 0 and sid in proc.stdout and accented in proc.stdout
    assert _cli(home, "sessions", "search", "zzqxj").stdout == ""


def test_a_torn_last_line_is_skipped_with_a_warning(home: Path, tmp_path: Path) -> None:
    work = tmp_path / "home"
    shutil.copytree(home, work)
    write_config(work)
    sid = _only(work)
    journal = work / "rec" / f"{sid}{JOURNAL_SUFFIX}"
    n = sum('"segment"' in x for x in journal.read_text().splitlines())
    with journal.open("a") as fh:
        fh.write('{"type": "segment", "id": 99, "start": 31.2, "te')  # died mid-write
    sess = find_session(sid, work / "rec")
    assert len(sess.segments) == n
    assert any("torn" in w and "last line" in w for w in sess.warnings)
    proc = _cli(work, "export", sid, "--format", "json")
    assert proc.returncode == 0
    assert "torn" in proc.stderr and "Traceback" not in proc.stderr
    assert len(json.loads(proc.stdout)["segments"]) >= n


def test_a_session_whose_writer_died_is_interrupted(tmp_path: Path) -> None:
    """A writer that never closed (its process is gone): listed as interrupted, readable."""
    rec = tmp_path / "rec"
    code = ("import sys, os; sys.path.insert(0, sys.argv[2]);"
            "from pathlib import Path; from engine.sessions import SessionWriter;"
            "from engine.messages import Segment;"
            "w = SessionWriter.for_file(Path(sys.argv[1]), 'x.wav');"
            "w.segment(Segment(0.0, 1.5, 'olá você'), 'whisper-base int8');"
            "os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(rec), str(ROOT)], check=True)
    (sess,) = list(iter_sessions(rec))
    assert sess.status == "interrupted" and [s.text for s in sess.segments] == ["olá você"]
    assert search_sessions(rec, "VOCE")[0].session == sess.id


def test_writer_keeps_names_set_meanwhile(tmp_path: Path) -> None:
    """A rename stored while the session is still being written survives its close."""
    from engine.messages import Segment, SpeakerTurn
    from engine.sessions import store_name

    w = SessionWriter.for_file(tmp_path, "a.wav")
    w.segment(Segment(0.0, 1.0, "um"))
    w.turns([SpeakerTurn(0.0, 1.0, "SPEAKER_00")])
    store_name(w.meta_path, "SPEAKER_00", "Bia")
    w.close(1.0)
    sess = load_session(w.meta_path)
    assert sess.meta.speaker_names == {"SPEAKER_00": "Bia"} and sess.status == "complete"
    assert sess.transcript().name("SPEAKER_00") == "Bia"


def test_batch_writes_beside_each_file_and_goes_on_after_a_failure(tmp_path: Path) -> None:
    a = tmp_path / "um arquivo.wav"
    b = tmp_path / "dois.wav"
    shutil.copy(clip_path("ptbr_fleurs_000"), a)
    shutil.copy(clip_path("en_pyannote_sample"), b)
    bad = tmp_path / "quebrado.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    # run under a terminal (pty) to see the progress bar; the glob is expanded by us
    proc = _in_pty([sys.executable, "-m", "engine.cli", "transcribe", str(tmp_path / "*.wav"),
                    "--format", "srt", "--no-diarization"])
    assert proc["rc"] == 2, proc["out"]  # one input was bad
    assert parse_srt(a.with_suffix(".srt").read_text())
    assert parse_srt(b.with_suffix(".srt").read_text())
    assert not bad.with_suffix(".srt").exists()
    out = proc["out"]
    assert "quebrado.wav" in out and "Traceback" not in out
    assert "[1/2] dois.wav" in out and "[2/2] um arquivo.wav" in out
    assert "█" in out and "%" in out  # the bar
    assert "2 of 3 files transcribed, 1 failed" in out


def _in_pty(cmd: list[str], timeout: float = 600) -> dict[str, object]:
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.chdir(ROOT)
        os.execv(cmd[0], cmd)
    import select
    import signal
    import time

    chunks = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"{cmd[1:]} still running after {timeout:.0f} s: "
                        f"{b''.join(chunks)[-2000:].decode(errors='replace')}")
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    return {"rc": os.waitstatus_to_exitcode(status),
            "out": b"".join(chunks).decode(errors="replace")}
