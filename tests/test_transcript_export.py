"""Speaker assignment and exporters on constructed transcripts."""

from __future__ import annotations

import json
import re

from engine.export import MAX_LINE, from_json, render, to_json
from engine.messages import Segment, SpeakerTurn, Word
from engine.transcript import UNKNOWN_SPEAKER, Transcript, assign_speakers
from tests.formats import parse_srt, parse_vtt


def _seg(words: list[tuple[float, float, str]]) -> Segment:
    ws = tuple(Word(a, b, t) for a, b, t in words)
    return Segment(ws[0].start, ws[-1].end, " ".join(w.text for w in ws), ws)


TURNS = [SpeakerTurn(0.0, 2.0, "SPEAKER_00"), SpeakerTurn(2.1, 5.0, "SPEAKER_01")]


def test_segment_spanning_a_speaker_change_is_split_at_the_word() -> None:
    seg = _seg([(0.1, 0.5, "Bom"), (0.5, 1.0, "dia,"), (1.0, 1.9, "Ana."),
                (2.2, 2.6, "Bom"), (2.6, 3.0, "dia!")])
    out = assign_speakers([seg], TURNS)
    assert [(s.speaker, s.text) for s in out] == [("SPEAKER_00", "Bom dia, Ana."),
                                                  ("SPEAKER_01", "Bom dia!")]
    assert out[0].end <= out[1].start


def test_isolated_short_word_is_folded_into_its_speaker() -> None:
    turns = [SpeakerTurn(0.0, 1.0, "A"), SpeakerTurn(1.0, 1.2, "B"), SpeakerTurn(1.2, 3.0, "A")]
    seg = _seg([(0.2, 0.9, "uma"), (1.0, 1.2, "só"), (1.3, 2.0, "frase")])
    out = assign_speakers([seg], turns)
    assert [s.speaker for s in out] == ["A"]


def test_words_outside_turns_take_the_nearest_or_unknown() -> None:
    near = _seg([(5.3, 5.6, "perto")])
    far = _seg([(9.0, 9.5, "longe")])
    out = assign_speakers([near, far], TURNS)
    assert [s.speaker for s in out] == ["SPEAKER_01", UNKNOWN_SPEAKER]


def _long_transcript() -> Transcript:
    words = [(i * 0.4, i * 0.4 + 0.35, f"palavra{i}") for i in range(40)]
    segs = assign_speakers([_seg(words[:30]), _seg(words[30:])],
                           [SpeakerTurn(0.0, 11.9, "SPEAKER_00"),
                            SpeakerTurn(11.9, 17.0, "SPEAKER_01")])
    return Transcript("x.wav", 16.0, "pt", "whisper-base int8", segs,
                      [SpeakerTurn(0.0, 11.9, "SPEAKER_00"),
                       SpeakerTurn(11.9, 17.0, "SPEAKER_01")], True,
                      names={"SPEAKER_01": "Ana <Souza>"})


def test_subtitles_respect_line_limits_and_names() -> None:
    tr = _long_transcript()
    srt = parse_srt(render(tr, "srt"))
    vtt = parse_vtt(render(tr, "vtt"))
    assert len(srt) > 2  # a 30-word segment cannot fit one 2x42 cue
    for cue in srt + vtt:  # the VTT voice tag is markup, not shown text
        assert all(len(re.sub(r"<[^>]*>", "", line)) <= MAX_LINE for line in cue.lines)
    assert srt[0].lines[0].startswith("SPEAKER_00: ")
    assert srt[-1].lines[0].startswith("Ana <Souza>: ")
    assert vtt[-1].lines[0].startswith("<v Ana Souza>")
    assert all(a.end <= b.start for a, b in zip(srt, srt[1:], strict=False))
    assert srt[0].start == round(tr.segments[0].start, 3)
    assert srt[-1].end == round(tr.segments[-1].end, 3)


def test_txt_groups_turns_and_rttm_lists_turns() -> None:
    tr = _long_transcript()
    txt = render(tr, "txt").splitlines()
    assert len(txt) == 2 and "SPEAKER_00: palavra0 " in txt[0] and "Ana <Souza>:" in txt[1]
    rttm = render(tr, "rttm").splitlines()
    assert rttm[0].split()[:5] == ["SPEAKER", "x", "1", "0.000", "11.900"]
    assert rttm[1].split()[7] == "Ana_<Souza>"


def test_json_round_trips() -> None:
    tr = _long_transcript()
    text = to_json(tr)
    back = from_json(text)
    assert back.segments == tr.segments and back.turns == tr.turns and back.names == tr.names
    assert json.loads(text)["speakers"][1] == {"id": "SPEAKER_01", "name": "Ana <Souza>"}
