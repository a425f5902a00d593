"""Console snapshots at 60x18 (the smallest it lays out in), 80x24 and 200x60, fed a
recorded event stream of a real run (tests/data/events_*.jsonl, made by
tests/record_events.py) with a frozen clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from engine import eventlog
from engine.config import load_config
from engine.messages import (
    DiarizationResult,
    EngineEvent,
    PartialResult,
    TranscriptResult,
    WorkerState,
    WorkerStatus,
)
from tests.conftest import DATA
from tui.app import TranscrevApp

SIZES = [(60, 18), (80, 24), (200, 60)]
IDS = [f"{w}x{h}" for w, h in SIZES]


def _events(name: str) -> list[EngineEvent]:
    return eventlog.loads((DATA / name).read_text())


def _app(events: list[EngineEvent]) -> TranscrevApp:
    return TranscrevApp(load_config(), events=events, clock=lambda: 1000.0)


def _until_restarting(events: list[EngineEvent]) -> list[EngineEvent]:
    for i, ev in enumerate(events):
        if isinstance(ev, WorkerStatus) and ev.state == WorkerState.RESTARTING:
            return events[: i + 1]
    raise AssertionError("the recorded stream has no restart")


def _until_partial(events: list[EngineEvent], commits: int = 4) -> list[EngineEvent]:
    """Cut a live stream where a phrase is being spoken after `commits` committed ones."""
    done = 0
    speakers: set[str] = set()
    for i, ev in enumerate(events):
        if isinstance(ev, TranscriptResult):
            done += len(ev.segments)
        if isinstance(ev, DiarizationResult):
            speakers |= {t.speaker for t in ev.turns}
        if isinstance(ev, PartialResult) and ev.text and done >= commits and len(speakers) > 1:
            return events[: i + 1]
    raise AssertionError("the recorded live stream has no partial after enough commits")


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_live_replay_with_a_partial_line(snap_compare: Callable[..., bool],
                                         size: tuple[int, int]) -> None:
    """A recording replayed through the live path: committed lines by speaker, and the
    phrase being spoken below them in its own style."""
    events = _until_partial(_events("events_dlg_live.jsonl"))
    assert snap_compare(_app(events), terminal_size=size)


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_idle(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    assert snap_compare(_app([]), terminal_size=size)


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_replay_with_speakers(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    assert snap_compare(_app(_events("events_dlg.jsonl")), terminal_size=size)


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_worker_restarting(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    events = _until_restarting(_events("events_dlg_restart.jsonl"))
    assert snap_compare(_app(events), terminal_size=size)


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_per_speaker_panes(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    assert snap_compare(_app(_events("events_dlg.jsonl")), terminal_size=size, press=["p"])


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_help_screen(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    assert snap_compare(_app([]), terminal_size=size, press=["question_mark"])


async def test_gauges_toggle_and_speakers_in_state() -> None:
    app = _app(_events("events_dlg.jsonl"))
    async with app.run_test(size=(80, 24)) as pilot:
        gauges = app.query_one("#gauges")
        assert gauges.display
        await pilot.press("g")
        assert not gauges.display
        await pilot.press("g")
        assert gauges.display
        assert len(app.state.speakers) >= 3
        await pilot.press("p")
        panes: Any = app.query("#panes TranscriptView")
        assert len(panes) == len(app.state.speakers)
        await pilot.press("q")
    assert app.return_code == 0 or app.return_code is None


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_export_dialog(snap_compare: Callable[..., bool], size: tuple[int, int]) -> None:
    assert snap_compare(_app(_events("events_dlg.jsonl")), terminal_size=size, press=["e"])


def test_replay_without_colour(snap_compare: Callable[..., bool],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_COLOR (as over some SSH setups): speakers stay apart by name and marker."""
    monkeypatch.setenv("NO_COLOR", "1")
    assert snap_compare(_app(_events("events_dlg.jsonl")), terminal_size=(80, 24))


def test_resized_in_the_middle_of_a_replay(snap_compare: Callable[..., bool]) -> None:
    """Drawn at 200x60, then the window narrows to 80x24: lines are wrapped again at the new
    width (none cut at the edge) and hang under their text."""

    async def narrow(pilot: Any) -> None:
        await pilot.pause()
        await pilot.resize_terminal(80, 24)
        await pilot.pause()

    assert snap_compare(_app(_events("events_dlg.jsonl")), terminal_size=(200, 60),
                        run_before=narrow)


def test_terminal_too_small(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(_app(_events("events_dlg.jsonl")), terminal_size=(50, 15))
