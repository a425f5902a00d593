"""Record the engine's event stream for a real run, for the console's snapshot tests.

    python -m tests.record_events CLIP OUT.jsonl [ROLE:KIND:AFTER_S | --live]

--live plays the clip through the live path at real-time pace (partials, live speaker turns).

Heartbeats are left out (the console shows the supervisor's metrics instead).
"""

from __future__ import annotations

import sys
from pathlib import Path

from engine import eventlog
from engine.cli import parse_fault
from engine.config import load_config
from engine.messages import EngineEvent, Heartbeat
from engine.runner import Runner
from engine.supervisor import Supervisor


def record(clip: str, faults: list[str]) -> list[EngineEvent]:
    cfg = load_config()
    events: list[EngineEvent] = []
    live = "--live" in faults
    faults = [f for f in faults if f != "--live"]
    with Supervisor(cfg, faults=[parse_fault(f) for f in faults]) as engine:
        runner = Runner(engine, on_event=events.append)
        runner.wait_ready()
        if live:
            runner.run_live(clip, "pt")
        else:
            runner.transcribe(clip)
    return [e for e in events if not isinstance(e, Heartbeat)]


if __name__ == "__main__":
    events = record(sys.argv[1], sys.argv[3:])
    Path(sys.argv[2]).write_text(eventlog.dumps(events))
    print(f"{len(events)} events")
