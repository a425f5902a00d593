"""The console at any terminal size: resized mid-session nothing is lost or cut, wrapped
lines hang under their text, below 60x18 a clear screen says so, and `y` copies through
OSC 52. Fed the recorded event stream of a real run (tests/data/events_dlg.jsonl)."""

from __future__ import annotations

from engine import eventlog
from engine.config import load_config
from tests.conftest import DATA
from tui.app import TranscrevApp
from tui.screens.too_small import TooSmallScreen
from tui.widgets.transcript_view import TranscriptView


def _app() -> TranscrevApp:
    events = eventlog.loads((DATA / "events_dlg.jsonl").read_text())
    return TranscrevApp(load_config(), events=events, clock=lambda: 1000.0)


def _lines(app: TranscrevApp) -> list[str]:
    return [strip.text for strip in app.query_one("#transcript", TranscriptView).lines]


def _words(text: str) -> list[str]:
    return text.split()


async def test_resizing_keeps_every_word_and_hangs_wrapped_lines() -> None:
    app = _app()
    async with app.run_test(size=(200, 60)) as pilot:
        await pilot.pause()
        said = [w for seg in app.state.segments for w in _words(seg.text)]
        assert len(said) > 50
        for width, height in ((60, 18), (250, 70), (80, 24), (61, 40)):
            await pilot.resize_terminal(width, height)
            await pilot.pause()
            view = app.query_one("#transcript", TranscriptView)
            lines = _lines(app)
            inner = view.scrollable_content_region.width
            assert all(len(line.rstrip()) <= inner for line in lines), (width, inner)
            shown = " ".join(lines)
            # every word of every segment is on screen, in order (no line cut at the edge)
            pos = 0
            for word in said:
                found = shown.find(word, pos)
                assert found >= 0, (width, word)
                pos = found + len(word)
            # a wrapped line starts under the text: at least as far in as the time column
            wrapped = [line for line in lines if line[:9].strip() == "" and line.strip()]
            assert wrapped and all(len(line) - len(line.lstrip()) >= 9 for line in wrapped)
            if width <= 80:  # long segments wrap at this width
                prefix = next(line for line in lines if "SPEAKER_" in line)
                text_col = prefix.index(": ") + 2
                assert any(len(line) - len(line.lstrip()) >= text_col for line in wrapped)


async def test_below_the_minimum_a_screen_says_so_and_the_console_comes_back() -> None:
    app = _app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        before = _lines(app)
        await pilot.resize_terminal(59, 24)
        await pilot.pause()
        assert isinstance(app.screen, TooSmallScreen)
        assert "too small: 59×24" in str(app.screen.query_one("#too-small-text").render())
        await pilot.resize_terminal(70, 17)
        await pilot.pause()
        assert "70×17" in str(app.screen.query_one("#too-small-text").render())
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert not isinstance(app.screen, TooSmallScreen)
        assert _lines(app) == before


async def test_y_copies_the_match_or_the_whole_transcript() -> None:
    app = _app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.press("y")
        whole = app.clipboard
        assert all(seg.text in whole for seg in app.state.segments)
        word = app.state.segments[2].text.split()[-1].strip(".,?!")
        app.state.search(word)
        await pilot.press("y")
        seg = app.state.segments[app.state.current_match or 0]
        assert app.clipboard.endswith(seg.text) and f"{seg.speaker}: " in app.clipboard


async def test_help_scrolls_in_a_short_terminal_and_points_to_doctor() -> None:
    from textual.containers import VerticalScroll

    from tui.screens.help import HelpScreen

    app = _app()
    async with app.run_test(size=(60, 18)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        box = app.screen.query_one("#help-box", VerticalScroll)
        assert box.max_scroll_y > 0  # more keys than rows: it scrolls instead of cutting
        box.scroll_end(animate=False)
        await pilot.pause()
        doctor = app.screen.query_one("#help-doctor")
        assert "transcrevai doctor" in str(doctor.render())
        assert box.region.contains_region(doctor.region)  # reachable on screen


async def test_speaker_colours_stay_distinct_in_16_and_256_colour_terminals() -> None:
    """As the console draws them: through Textual's ANSI-to-theme filter (on unless the app
    runs in ANSI mode), then down to what a 256- or 16-colour terminal shows."""
    from rich.color import Color, ColorSystem
    from rich.style import Style
    from textual.filter import ANSIToTruecolor

    from tui.widgets.speakers import COLOURS, MARKERS, speaker_style

    app = _app()
    async with app.run_test(size=(80, 24)):
        to_theme = ANSIToTruecolor(app.ansi_theme)
    background = Color.parse("#000000")
    styles = [speaker_style(i) for i in range(len(COLOURS))]
    drawn = [to_theme.truecolor_style(Style(color=colour), background).color
             for colour, _ in styles]
    for system in (ColorSystem.STANDARD, ColorSystem.EIGHT_BIT):
        down = [c.downgrade(system).number for c in drawn if c is not None]
        assert len(set(down)) == len(COLOURS), (system, down)
    assert len({marker for _, marker in styles}) == len(MARKERS)  # apart without colour too
