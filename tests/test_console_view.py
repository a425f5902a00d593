"""The transcript view over a long session (issue 16 point 5): its rendered lines stay
bounded however many segments arrive, while all of the transcript stays reachable by
scrolling, and segments removed from the end (a seek back) leave it as a fresh view."""

from __future__ import annotations

import gc

from textual.strip import Strip

from engine.config import load_config
from engine.messages import (
    DiarizationResult,
    EngineEvent,
    EngineMetrics,
    PartialResult,
    Segment,
    SpeakerTurn,
    StreamOpened,
    StreamRewound,
    TranscriptResult,
    Word,
    WorkerMetrics,
    WorkerState,
)
from engine.workers.spec import ROLES
from tests.conftest import count_calls
from tui.app import TranscrevApp
from tui.widgets.gauges import Gauges
from tui.widgets.partial_line import PartialLine
from tui.widgets.status_bar import StatusBar
from tui.widgets.transcript_view import TranscriptView

SEGMENTS = 6000  # about four hours of speech at one phrase every 2.5 s
WORDS = ("para as pessoas estranhas o panorama é desolador mas quem conhece sabe que "
         "não é bem assim").split()


def _segment(i: int) -> Segment:
    t = 2.5 * i
    words = tuple(Word(t + k * 0.15, t + k * 0.15 + 0.1, WORDS[(i + k) % len(WORDS)], 0.9)
                  for k in range(6 + i % 9))
    return Segment(t, words[-1].end, f"#{i} " + " ".join(w.text for w in words), words,
                   language="pt")


def _session(n: int, per_batch: int = 100) -> list[list[EngineEvent]]:
    """n phrases in batches (as the bridge posts them), each with its speakers' live turns
    (speakers change every three phrases)."""
    batches: list[list[EngineEvent]] = [[StreamOpened(1, "long.wav", 2.5 * n, 16000, 1, "wav")]]
    for b in range(0, n, per_batch):
        segs = tuple(_segment(i) for i in range(b, min(n, b + per_batch)))
        turns = tuple(SpeakerTurn(s.start, s.end + 0.3, f"SPEAKER_0{(b + k) // 3 % 3}")
                      for k, s in enumerate(segs))
        batches.append([TranscriptResult(1, segs, 0, int(segs[-1].end * 16000), False, 0, 0),
                        DiarizationResult(1, turns, int(turns[-1].end * 16000), False, 0, 0,
                                          incremental=True)])
    return batches


def _strips_alive() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, Strip))


def _screen(view: TranscriptView) -> list[str]:
    return [view.render_line(y).text for y in range(view.scrollable_content_region.height)]


async def test_a_long_session_keeps_few_rendered_lines_and_scrolls_back_to_the_start() -> None:
    app = TranscrevApp(load_config(), events=[], clock=lambda: 1000.0)
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one("#transcript", TranscriptView)
        strips_before = _strips_alive()  # other tests' apps may still hold some
        batches = _session(SEGMENTS)
        half = len(batches) // 2
        for batch in batches[:half]:
            app._apply(batch)
            await pilot.pause()
        strips_half = _strips_alive()
        for batch in batches[half:]:
            app._apply(batch)
            await pilot.pause()
        await pilot.pause()
        assert len(app.state.segments) == SEGMENTS  # the state keeps all of it (exports)
        total = view.virtual_size.height
        assert total > SEGMENTS  # every segment has its lines in the view's layout ...
        # ... but rendered lines are kept only for the last few hundred segments, not per
        # line of a four-hour transcript (a RichLog held every line: > 6000 strips here)
        assert view.cached_lines < 2000, view.cached_lines
        strips_end = _strips_alive()
        assert strips_end - strips_before < 4000 and strips_end - strips_half < 500, (
            strips_before, strips_half, strips_end)
        # it followed the end as it grew
        assert any(f"#{SEGMENTS - 1} " in line for line in _screen(view))
        view.scroll_home(animate=False)
        await pilot.pause()
        assert view.scroll_y == 0
        screen = _screen(view)
        assert screen[0].startswith("00:00:00 ● SPEAKER_00: #0 "), screen[:2]
        # the middle is there too, drawn on demand
        middle = SEGMENTS // 2
        top = view._top_of(middle)
        assert top is not None
        view.scroll_to(y=top, animate=False)
        await pilot.pause()
        assert f"#{middle} " in _screen(view)[0]
        # scrolled up, new segments do not pull the view away from what is being read
        app._apply(_session(SEGMENTS + 5)[-1][:1])
        await pilot.pause()
        assert f"#{middle} " in _screen(view)[0]
        view.scroll_end(animate=False)
        await pilot.pause()
        assert any(f"#{SEGMENTS + 4} " in line for line in _screen(view))


async def test_segments_removed_from_the_end_leave_the_view_as_a_fresh_one() -> None:
    """A seek back: the state's transcript loses its end; the view drops those lines without
    drawing the rest again, and then shows what a fresh view of the state shows."""
    app = TranscrevApp(load_config(), events=[], clock=lambda: 1000.0)
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one("#transcript", TranscriptView)
        for batch in _session(300, per_batch=20):
            app._apply(batch)
        await pilot.pause()
        cleared = count_calls(view, "clear")
        back_to = app.state.segments[-40].start  # a seek back: the end is transcribed again
        app._apply([StreamRewound(1, "transcription", int(back_to * 16000)),
                    StreamRewound(1, "diarization", int(back_to * 16000))])
        await pilot.pause()
        assert cleared == [0]
        assert 250 < len(app.state.segments) < 300
        shown = [strip.text for strip in view.lines]
        assert view.virtual_size.height == len(shown)
        view._version = -1  # a full layout from the state
        view.sync()
        assert [strip.text for strip in view.lines] == shown
        last = app.state.segments[-1].text
        assert any(last[:30] in line for line in _screen(view))  # the new end is in view


async def test_rows_counted_without_drawing_match_the_drawn_rows() -> None:
    """A new width lays hours of transcript out again by counting rows, not drawing them:
    the count must be what drawing gives, or lines would land on the wrong segment."""
    from engine import eventlog
    from tests.conftest import DATA
    from tui.widgets.transcript_view import hanging, hanging_rows, segment_parts

    events = eventlog.loads((DATA / "events_dlg.jsonl").read_text())
    app = TranscrevApp(load_config(), events=events, clock=lambda: 1000.0)
    async with app.run_test(size=(80, 24)):
        state = app.state
        long_word = Segment(1.0, 2.0, "palavra" * 12 + " e mais " + "x" * 50)
        segs = list(state.segments) + [_segment(i) for i in range(40)] + [long_word]
        console = app.console
        counted = 0
        for width in range(20, 130, 3):
            for k, seg in enumerate(segs):
                for first, only in ((True, None), (False, None), (True, "SPEAKER_00"),
                                    (False, "SPEAKER_00")):
                    prefix, body = segment_parts(state, seg, first, only, k % 3)
                    rows = hanging_rows(console, prefix, body, width)
                    if rows is None:
                        continue
                    drawn = console.render_lines(hanging(prefix, body),
                                                 console.options.update_width(width), pad=False)
                    assert rows == len(drawn), (width, seg.text, first, only)
                    counted += 1
        assert counted > 5000


async def test_partials_and_gauge_ticks_do_not_lay_out_the_screen_again() -> None:
    """While a phrase is spoken a partial arrives with nearly every engine batch, and the
    status bar and gauges tick four times a second: none of that changes a widget's size,
    so none of it may cost a layout of the whole screen (key latency at speed 1)."""
    app = TranscrevApp(load_config(), events=[], clock=lambda: 1000.0)
    async with app.run_test(size=(80, 24)) as pilot:
        for batch in _session(50, per_batch=10):
            app._apply(batch)
        app._apply([PartialResult(1, "uma frase", 0, 0)])
        app.refresh_gauges()
        await pilot.pause()
        layouts = 0
        for widget in (app.query_one(PartialLine), app.query_one(StatusBar),
                       app.query_one(Gauges), app.query_one("#transcript", TranscriptView)):
            original = widget.refresh

            def counting(*args: object, _original: object = original,
                         **kwargs: object) -> object:
                nonlocal layouts
                layouts += bool(kwargs.get("layout"))
                return _original(*args, **kwargs)  # type: ignore[operator]

            widget.refresh = counting  # type: ignore[method-assign,assignment]
        for k in range(40):
            metrics = EngineMetrics(tuple(
                WorkerMetrics(role, WorkerState.BUSY, 1, (300 + k) << 20, 1 << 30, 0.1 * k, 0,
                              0, 0, 0, 0.5, k, "small") for role in ROLES), 0.5)
            app._apply([PartialResult(1, f"uma frase que cresce {k}", 0, 0), metrics])
            app.refresh_gauges()
            await pilot.pause()
        assert layouts == 0
        assert "uma frase que cresce 39" in str(app.query_one(PartialLine).render())


async def test_the_transcript_hidden_behind_the_panes_is_up_to_date_when_shown_again() -> None:
    app = TranscrevApp(load_config(), events=[], clock=lambda: 1000.0)
    async with app.run_test(size=(80, 24)) as pilot:
        batches = _session(60, per_batch=10)
        for batch in batches[:3]:
            app._apply(batch)
        await pilot.pause()
        await pilot.press("p")  # per-speaker panes: the transcript is hidden
        for batch in batches[3:]:
            app._apply(batch)
        await pilot.pause()
        await pilot.press("p")  # and shown again, with no batch after
        await pilot.pause()
        view = app.query_one("#transcript", TranscriptView)
        assert any("#59 " in line for line in _screen(view))
        assert len(view.lines) == view.virtual_size.height


async def test_a_search_scrolls_to_its_match_and_clearing_it_back_to_the_end() -> None:
    app = TranscrevApp(load_config(), events=[], clock=lambda: 1000.0)
    async with app.run_test(size=(80, 24)) as pilot:
        for batch in _session(400):
            app._apply(batch)
        await pilot.pause()
        view = app.query_one("#transcript", TranscriptView)
        app.state.search("#17 ")
        app._sync_transcript()
        await pilot.pause()
        assert any("#17 " in line for line in _screen(view))
        for batch in _session(420)[-1:]:  # more arrive while searching: the match stays
            app._apply(batch)
        await pilot.pause()
        assert any("#17 " in line for line in _screen(view))
        await pilot.press("escape")
        await pilot.pause()
        assert any("#419 " in line for line in _screen(view))


async def test_dialogs_opened_and_closed_leave_no_widgets_behind_and_footer_keys_click() -> None:
    """Textual's footer composes a widget per key at every screen change; those dead
    widgets (858 per half minute of `?` presses) were collected in 100-180 ms pauses, the
    slowest key presses, and earlier leaked outright. tui.widgets.footer draws one line:
    30 dialogs opened and closed leave the app's widget count where it was, the line follows
    the screen's keys, and a click on a key presses it."""
    from textual.app import App, ComposeResult
    from textual.binding import Binding
    from textual.screen import ModalScreen
    from textual.widget import Widget
    from textual.widgets import Static

    from tui.widgets.footer import Footer

    class Dialog(ModalScreen[None]):
        BINDINGS = [Binding("escape", "app.pop_screen", "Close")]

        def compose(self) -> ComposeResult:
            yield Static("a dialog")

    class Console(App[None]):
        BINDINGS = [Binding("question_mark", "open", "Help"), Binding("q", "quit", "Quit"),
                    Binding("r", "record", "Record"), Binding("o", "noop", "Open")]
        recorded = 0

        def compose(self) -> ComposeResult:
            yield Static("console")
            yield Footer(id="footer")

        def action_open(self) -> None:
            self.push_screen(Dialog())

        def action_record(self) -> None:
            self.recorded += 1

        def action_noop(self) -> None:
            pass

    def widgets(app: App[None]) -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, Widget) and o.app is app)

    app = Console()
    async with app.run_test(size=(80, 24)) as pilot:
        footer = app.query_one("#footer", Footer)
        line = str(footer.render())
        assert "Record" in line and "Help" in line and "Close" not in line
        await pilot.press("question_mark")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        before = widgets(app)
        for _ in range(30):
            await pilot.press("question_mark")
            await pilot.pause()
            await pilot.press("escape")
            await pilot.pause()
        assert widgets(app) <= before, (before, widgets(app))
        assert not footer.children
        x = line.index("Record")
        await pilot.click("#footer", offset=(x, 0))
        await pilot.pause()
        assert app.recorded == 1


def test_full_collections_wait_for_a_pause_in_the_keys() -> None:
    """The console's oldest-generation collections (70-180 ms each when automatic) run when
    Python's own rule makes one due, but on its timer: after a second without keys, or once
    MAX_WAIT_S has passed while keys keep coming; never when none is due (an idle console
    costs nothing). The objects of the console's start are frozen out of them; closing gives
    the process its own collector back."""
    from tui import gc_pause

    now = [100.0]
    col = gc_pause.IdleCollector(clock=lambda: now[0])
    saved = gc.get_threshold()

    def make_due() -> None:  # the gen-1 collections after which Python would collect all
        for _ in range(saved[2]):
            gc.collect(1)

    col.start()
    try:
        assert gc.get_threshold()[2] == gc_pause.GEN2_OFF and gc.get_freeze_count() > 0
        now[0] += gc_pause.EVERY_S + 1
        assert not col.tick()  # quiet and a while since the last, but none due
        make_due()
        col.key()
        now[0] += gc_pause.QUIET_S / 2
        assert not col.tick()  # due, but a key just now: not yet
        now[0] += gc_pause.QUIET_S
        assert col.tick() and col.full_runs == 1  # quiet: collected
        make_due()
        assert not col.tick()  # and not again straight away
        t_end = now[0] + gc_pause.MAX_WAIT_S + 1
        while now[0] < t_end:  # keys all the time
            col.key()
            col.tick()
            now[0] += 0.2
        assert col.full_runs == 2  # once, when the wait ran out
    finally:
        col.stop()
    assert gc.get_threshold() == saved and gc.get_freeze_count() == 0


async def test_the_help_screen_is_built_once() -> None:
    """`?` shows the same help screen each time: building it per press was most of a press's
    time (p50 46 -> 16 ms) and garbage afterwards."""
    from tui.screens.help import HelpScreen

    app = TranscrevApp(load_config(), events=[], clock=lambda: 1000.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        first = app.screen
        assert isinstance(first, HelpScreen)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("question_mark")
        await pilot.pause()
        assert app.screen is first
