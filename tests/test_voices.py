"""Voice profiles (issue 17): enrol a speaker of a real session, then later sessions name that
voice, and only that voice; profiles are private files and never leave their folder.

Real engine (workers, models), real CAM++ embeddings, real clips: the dialogue's first voice
(the TTS-Portuguese Corpus speaker) is enrolled from a session of the dialogue, then two other
recordings of that speaker and one of another person are transcribed.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine.config import Config, load_config
from engine.export import EXPORT_FORMATS, render
from engine.runner import Runner
from engine.sessions import iter_sessions, load_session
from engine.supervisor import Supervisor
from engine.voices import Profile, VoiceError, VoiceStore, describe, recognise, voices_dir
from tests.conftest import clip_path, clips, reference_turns, run_cli, write_config

NAME = "Edresson Locutor"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Config, Runner]]:
    folder = tmp_path_factory.mktemp("voices")
    cfg = load_config(write_config(folder))
    with Supervisor(cfg) as engine:
        runner = Runner(engine)
        runner.wait_ready()
        yield folder, cfg, runner


def _voice_of(clip_id: str, turns: list[object], speaker: str) -> str:
    """The hypothesis label that overlaps the reference speaker's turns most."""
    ref = [t for t in reference_turns(clip_id) if t.speaker == speaker]
    overlap: dict[str, float] = {}
    for t in turns:
        for r in ref:
            o = min(t.end, r.end) - max(t.start, r.start)  # type: ignore[attr-defined]
            if o > 0:
                label = t.speaker  # type: ignore[attr-defined]
                overlap[label] = overlap.get(label, 0.0) + o
    return max(overlap, key=overlap.__getitem__)


def test_enrol_from_a_session_then_that_voice_is_named_elsewhere_and_forget_erases_it(
        home: tuple[Path, Config, Runner]) -> None:
    folder, cfg, runner = home
    rec = folder / "rec"
    dialogue = "ptbr_dlg_mixed_4spk"
    first = runner.transcribe(str(clip_path(dialogue)), session_dir=rec)
    assert first.ok, first.error
    assert not first.transcript.recognised  # no profiles yet: nobody is named
    sess = next(iter(iter_sessions(rec)))
    voice = clips()[dialogue]["speakers"][0]  # the manifest's first voice of the dialogue
    label = _voice_of(dialogue, sess.refined or sess.turns, voice)

    conf = str(folder / "config.toml")
    # a speaker with too little clean speech is refused, with the reason, in one line
    short = next(s for s in dict.fromkeys(t.speaker for t in sess.refined or sess.turns)
                 if s != label)
    proc = run_cli("--config", conf, "speakers", "enrol", sess.id, short, "Someone")
    assert proc.returncode == 2 and "clean speech" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("--config", conf, "speakers", "enrol", sess.id, label, NAME)
    assert proc.returncode == 0, proc.stderr

    # private: folder 0700, one 0600 file; listed by name, the voice itself never shown
    folder_v = voices_dir(cfg)
    assert stat.S_IMODE(folder_v.stat().st_mode) == 0o700
    files = list(folder_v.iterdir())
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    listing = run_cli("--config", conf, "speakers", "list")
    assert NAME in listing.stdout and listing.returncode == 0

    # other recordings of that voice get the name at once; another person's does not
    same = [c for c, meta in clips().items() if meta["speakers"] == [voice]]
    other = [c for c, meta in clips().items()
             if meta["n_speakers"] == 1 and voice not in meta["speakers"]]
    assert same and other
    for clip in same + other:
        res = runner.transcribe(str(clip_path(clip)), session_dir=rec)
        assert res.ok, res.error
        tr = res.transcript
        named = [s for s in tr.speakers if tr.name(s) == NAME]
        if clip in same:
            assert named and tr.recognised[named[0]] >= cfg.voices.threshold, (clip, tr.names)
            for fmt in EXPORT_FORMATS:  # the name goes out, never the voice
                text = render(tr, fmt)
                assert NAME in text or fmt == "rttm", fmt
            doc = json.loads(render(tr, "json"))
            assert all(set(s) <= {"id", "name", "recognised"} for s in doc["speakers"])
        else:
            assert not named and not tr.recognised, (clip, tr.names)
    # the sessions keep name and score only
    for s in iter_sessions(rec):
        journal = Path(str(s.meta_path).replace(".meta.json", ".jsonl")).read_text()
        for line in journal.splitlines():
            rec_line = json.loads(line)
            if rec_line["type"] == "voices":
                assert all(len(m) == 3 and isinstance(m[2], float)
                           for m in rec_line["matches"])
    named_sessions = [s for s in iter_sessions(rec)
                      if NAME in s.transcript().names.values()]
    assert len(named_sessions) == len(same)

    # forget: the file goes, and the next session names nobody
    proc = run_cli("--config", conf, "speakers", "forget", NAME)
    assert proc.returncode == 0, proc.stderr
    assert not list(folder_v.iterdir())
    res = runner.transcribe(str(clip_path(same[0])))
    assert res.ok and not res.transcript.recognised


def test_the_live_path_names_a_known_voice(home: tuple[Path, Config, Runner],
                                           tmp_path: Path) -> None:
    """Enrolled from a recording of that one person (FILE NAME), the voice is named in a
    live stream of the dialogue: on the speaker the reference says is that person."""
    folder, cfg, runner = home
    dialogue = "ptbr_dlg_mixed_4spk"
    voice = clips()[dialogue]["speakers"][0]
    same = [c for c, meta in clips().items() if meta["speakers"] == [voice]]
    # one person's recordings, joined: at least the 10 s a profile needs
    import soundfile as sf

    joined = tmp_path / "one_person.wav"
    audio = np.concatenate([sf.read(clip_path(c), dtype="float32")[0] for c in same * 2])
    sf.write(joined, audio, 16000)
    conf = str(folder / "config.toml")
    proc = run_cli("--config", conf, "speakers", "enrol", str(joined), NAME)
    assert proc.returncode == 0, proc.stderr
    try:
        live = runner.run_live(str(clip_path(dialogue)), "pt", speed=2.0)
        assert live.error is None
        names = {label: name for label, name, _ in live.recognised}
        assert list(names.values()) == [NAME], live.recognised
        # named while the stream still ran, not only by the pass at the end
        assert live.named_live_at is not None and live.named_live_at < 25.0
        label = next(iter(names))
        assert label == _voice_of(dialogue, live.refined or live.turns, voice)
        assert live.transcript().name(label) == NAME
    finally:
        VoiceStore(voices_dir(cfg)).forget(NAME)


def test_two_speakers_never_share_a_name_and_weak_matches_stay_unnamed(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(3)

    def unit(v: np.ndarray) -> np.ndarray:
        return (v / np.linalg.norm(v)).astype(np.float32)

    a, b = unit(rng.standard_normal(192)), unit(rng.standard_normal(192))
    near_a = unit(a + 0.2 * unit(rng.standard_normal(192)))
    profiles = [Profile("Ana", a, 20.0), Profile("Bruno", b, 20.0)]
    # both speakers sound most like Ana: only the closer one gets her name
    matches = recognise({"SPEAKER_00": near_a, "SPEAKER_01": unit(a + 0.5 * b)}, profiles, 0.6)
    assert [(m.speaker, m.name) for m in matches] == [("SPEAKER_00", "Ana")]
    assert recognise({"SPEAKER_00": unit(rng.standard_normal(192))}, profiles, 0.6) == []
    # the store: rename keeps the voice, a taken name is refused, forget of nobody says so
    store = VoiceStore(tmp_path / "v")
    store.save(profiles[0])
    store.save(profiles[1])
    with pytest.raises(VoiceError, match="already exists"):
        store.rename("Ana", "bruno")
    store.rename("Ana", "Ana Lima")
    got = store.get("Ana Lima")
    assert got is not None and np.allclose(got.vector, a) and store.get("Ana") is None
    assert "vector" not in describe(got)
    with pytest.raises(VoiceError, match="no voice profile"):
        store.forget("Nobody")
    assert os.stat(tmp_path / "v").st_mode & 0o077 == 0


def test_voice_profiles_can_be_turned_off(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text() + "\n[voices]\nenabled = false\n")
    proc = run_cli("--config", str(cfg), "speakers", "list")
    assert proc.returncode == 2 and "turned off" in proc.stderr
    assert not (tmp_path / "rec" / ".voices").exists()


def test_a_session_reads_back_recognised_names_but_the_users_win(tmp_path: Path) -> None:
    from engine.messages import Segment, SpeakerTurn
    from engine.sessions import SessionWriter, store_name

    w = SessionWriter.for_file(tmp_path, str(clip_path("ptbr_fleurs_000")))
    w.segment(Segment(0.0, 1.0, "olá", speaker="SPEAKER_00"))
    w.segment(Segment(1.0, 2.0, "tudo bem", speaker="SPEAKER_01"))
    w.turns([SpeakerTurn(0.0, 1.0, "SPEAKER_00"), SpeakerTurn(1.0, 2.0, "SPEAKER_01")])
    w.voices((("SPEAKER_00", "Ana", 0.81), ("SPEAKER_01", "Bruno", 0.7)))
    w.close(2.0)
    store_name(w.meta_path, "SPEAKER_01", "Beto")
    tr = load_session(w.meta_path).transcript()
    assert tr.names == {"SPEAKER_00": "Ana", "SPEAKER_01": "Beto"}
    assert tr.recognised == {"SPEAKER_00": 0.81}


def test_bench_speakers_measures_the_threshold_it_uses() -> None:
    """`bench --speakers` on the test clips: same-voice and other-voice scores, the ROC, the
    operating point, no false name at the threshold in use, the enrolled voice's turns in
    the other recordings named."""
    from tests.conftest import ROOT

    proc = run_cli("bench", "--speakers", "--corpus", str(ROOT / "tests/data"), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["genuine"] >= 2 and doc["impostor"] >= 3
    assert doc["genuine_min"] > doc["impostor_max"]
    assert doc["operating_point"] <= doc["threshold_in_use"]
    assert doc["false_names"] == 0 and doc["named_share"] >= 0.8, doc
    assert {"threshold", "far", "frr"} <= set(doc["roc"][0]) and 0 <= doc["eer"] <= 0.5


def test_several_recordings_add_to_one_profile(tmp_path: Path) -> None:
    from engine.audio.source import read_audio
    from engine.voices import Embedder, enrol, speech_spans

    cfg = load_config()
    store, embedder = VoiceStore(tmp_path / "v"), Embedder.from_config(cfg)
    audio = read_audio(clip_path("ptbr_fleurs_000"))
    half = len(audio) / 16000 / 2
    first = enrol(store, embedder, audio, speech_spans(audio, 0, half), "Ana", "a", 5.0)
    both = enrol(store, embedder, audio, speech_spans(audio, half), "ana", "b", 5.0)
    assert both.name == "Ana" and both.sources == ["a", "b"]
    assert both.seconds == pytest.approx(first.seconds * 2, rel=0.4)
    assert float(np.dot(both.vector, first.vector)) > 0.8 and len(store.list()) == 1


async def test_the_voices_screen_renames_and_forgets(tmp_path: Path) -> None:
    import dataclasses

    from textual.widgets import Input

    from tui.app import TranscrevApp
    from tui.screens.confirm import ConfirmScreen

    cfg = load_config()
    cfg = dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths,
                                                             recordings_dir=tmp_path))
    store = VoiceStore(voices_dir(cfg))
    store.save(Profile("Ana", np.ones(192, np.float32) / np.sqrt(192), 12.0, ["s1"]))
    app = TranscrevApp(cfg, events=[])
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("v", "enter", "enter")  # Ana, rename
        app.screen.query_one(Input).value = "Ana Lima"
        await pilot.press("enter")
        await pilot.pause()
        assert [p.name for p in store.list()] == ["Ana Lima"]
        await pilot.press("v", "enter", "down", "enter")  # Ana Lima, forget
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await pilot.pause()
    assert store.list() == [] and not list(voices_dir(cfg).iterdir())
