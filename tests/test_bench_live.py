"""`bench --live` pooling, without the engine: what each pooled figure is made of."""

from __future__ import annotations

from typing import Any

from engine.bench.live import _pooled, _score, der_metric
from engine.live import LiveStream
from engine.messages import SpeakerTurn
from tests.conftest import DATA, clips


def _metrics() -> dict[str, tuple[Any, Any]]:
    return {g: (der_metric(0.25), der_metric(0.25)) for g in ("real", "synthetic")}


def _stream(turns: list[SpeakerTurn]) -> LiveStream:
    """A finished stream; the offline pass ran when there were live turns (as it does)."""
    live = LiveStream(1, "x.wav", mic=False, turns=list(turns),
                      refined=list(turns) or None)
    live.stats.overflows = 0
    return live


def test_a_failed_live_diarization_is_scored_and_counted_not_dropped() -> None:
    clip = clips()["en_pyannote_sample"]
    metrics = _metrics()
    row = _score(clip, DATA, _stream([]), True, metrics, 2**30, 1.0, 2.0)
    assert row.diarization_failed and row.offline_pass_failed
    assert row.der_live == 1.0 and row.der_refined == 1.0  # all reference speech missed
    assert row.error == "diarization failed"
    report = _pooled([row], metrics)
    assert report["der_live"] == 1.0 and report["diarization_failures"] == 1
    assert report["errors"] == 1


def test_synthetic_clips_stay_out_of_the_real_figures() -> None:
    real = clips()["en_pyannote_sample"]
    fake = {**clips()["ptbr_dlg_mixed_4spk"], "synthetic": True}
    metrics = _metrics()
    turns = [SpeakerTurn(0.0, 30.0, "A")]
    rows = [_score(real, DATA, _stream(turns), True, metrics, 100 * 2**20, 1.0, 10.0),
            _score(fake, DATA, _stream([]), True, metrics, 900 * 2**20, 9.0, 10.0)]
    rows[1].overflows = 3
    report = _pooled(rows, metrics)
    assert report["real_clips"] == 1 and report["der_clips"] == 1
    assert report["peak_rss_mb"] == 100 and report["overflows"] == 0
    assert report["cpu_percent"] == 10.0 and report["diarization_failures"] == 0
    syn = report["synthetic"]
    assert syn["peak_rss_mb"] == 900 and syn["overflows"] == 3 and syn["der_live"] == 1.0
    assert syn["diarization_failures"] == 1 and report["errors"] == 1
