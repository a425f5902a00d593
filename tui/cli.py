"""The `transcrevai` command: the console, plus every headless command of engine.cli."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from engine import cli
from engine.config import Config
from engine.messages import EngineEvent

SPEEDS = {"1": 1.0, "2": 2.0, "fast": 0.0}


def run_console(cfg: Config, args: argparse.Namespace) -> int:
    if args.command == "bench" and args.soak:  # the soak also times the console's state
        from engine.bench.soak import run_soak
        from tui.state import ConsoleState

        cli.prepare_levels(cfg)
        state = ConsoleState()

        def observe(events: Sequence[EngineEvent]) -> None:
            for ev in events:
                state.apply(ev)

        return run_soak(cfg, args, observe)
    if args.command == "bench" and args.minutes:  # bench --console --minutes N
        from tui.bench import run_long_console_bench

        return run_long_console_bench(cfg, args)
    if args.command == "bench":  # bench --console
        from tui.bench import run_console_bench

        clip = cli.PROJECT_ROOT / "recordings" / "demo_ptbr_4spk.wav"
        return run_console_bench(cfg, str(clip), args.json)
    from tui.splash import draw_splash

    draw_splash(getattr(args, "file", None) or "")
    from tui.app import TranscrevApp

    app = TranscrevApp(cfg, replay=getattr(args, "file", None),
                       speed=SPEEDS[getattr(args, "speed", "1")], record=args.command == "live")
    app.run()
    return cli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main(argv, console=run_console)


if __name__ == "__main__":
    sys.exit(main())
