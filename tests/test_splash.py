"""The plain-text first frame drawn before Textual loads (tui/splash.py)."""

from __future__ import annotations

import io
import os
import pty

from tui.splash import ROLES, draw_splash


def test_splash_draws_every_worker_on_a_terminal() -> None:
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", encoding="utf-8", closefd=False) as out:
            assert draw_splash("meeting.wav", out)
        data = os.read(master, 65536).decode()
    finally:
        os.close(master)
        os.close(slave)
    assert "meeting.wav" in data and "\x1b[?1049h" in data
    for role in ROLES:
        assert role in data
    assert "\x1b[3" not in data.replace("\x1b[3;", "")  # no colour codes (NO_COLOR, 16 colours)


def test_splash_stays_off_pipes_and_files() -> None:
    out = io.StringIO()
    assert not draw_splash("x.wav", out)
    assert out.getvalue() == ""
