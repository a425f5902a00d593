"""Scoring pieces the bench reports: WER's error kinds and words given the wrong speaker."""

from __future__ import annotations

import random

from engine.scoring import edit_distance, error_counts, wder


def test_error_kinds_sum_to_the_edit_distance() -> None:
    rng = random.Random(1)
    for _ in range(300):
        ref = [rng.choice("abcd") for _ in range(rng.randint(0, 9))]
        hyp = [rng.choice("abcd") for _ in range(rng.randint(0, 9))]
        assert sum(error_counts(ref, hyp)) == edit_distance(ref, hyp), (ref, hyp)
    assert error_counts("a b c d".split(), "a x c d e".split()) == (1, 0, 1)
    assert error_counts("a b c".split(), []) == (0, 3, 0)


def test_wder_maps_speakers_then_counts_words_on_the_wrong_one() -> None:
    ref = [(w, "ana") for w in "bom dia a todos".split()] + [(w, "rui") for w in "olá".split()]
    # labels are arbitrary: SPEAKER_07 is ana, SPEAKER_02 is rui; "todos" went to rui
    hyp = [("bom", "SPEAKER_07"), ("dia", "SPEAKER_07"), ("a", "SPEAKER_07"),
           ("todos", "SPEAKER_02"), ("olá", "SPEAKER_02")]
    assert abs(wder(ref, hyp) - 1 / 5) < 1e-9  # type: ignore[operator]
    assert abs(wder(ref, [(w, "X") for w, _ in ref]) - 1 / 5) < 1e-9  # type: ignore[operator]
    assert wder(ref, []) is None
