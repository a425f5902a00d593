"""`transcrevai bench --faults`: every worker x every fault kind on one clip.

Reports detection latency, restarts, backoff and whether the transcript equals an undisturbed
run. `kill` is a SIGKILL sent from this (outside) process to the worker, as an OOM killer
would; the other kinds are injected inside the worker (crash, hang, leak, raise). The exit
code is non-zero when a fault was not detected or changed the transcript, JSON included.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from engine.bench.corpus import clip_language
from engine.config import Config
from engine.messages import (
    FAULT_KINDS,
    FaultFired,
    FaultKind,
    FaultSpec,
    Role,
    WorkerState,
    WorkerStatus,
)
from engine.runner import Runner
from engine.supervisor import Supervisor
from engine.workers.spec import ROLES

# seconds after the clip is opened (outside kill) or after the worker's first input (inside)
AFTER_S: dict[str, float] = {"capture": 0.5, "transcription": 1.5, "diarization": 1.0}


def _kill_later(engine: Supervisor, role: Role, after_s: float, fired: list[float]) -> None:
    """SIGKILL the worker's current process after `after_s`, from outside; the kill time
    goes into `fired`."""
    def go() -> None:
        time.sleep(after_s)
        pid = engine.slots[role].pid
        if pid:
            fired.append(time.time())
            os.kill(pid, signal.SIGKILL)

    threading.Thread(target=go, daemon=True, name=f"kill-{role}").start()


def run_fault_bench(cfg: Config, corpus: Path, clips: list[dict[str, Any]],
                    as_json: bool) -> int:
    clip = max(clips, key=lambda c: (c.get("n_speakers") or 0, c["duration_s"]))
    path = str(corpus / clip["file"])
    lang = clip_language(clip)

    def run(role: Role | None, kind: FaultKind | None) -> dict[str, Any]:
        t0 = time.perf_counter()
        inject = [FaultSpec(role, kind, AFTER_S[role])] if role and kind and kind != "kill" else []
        fired: list[float] = []
        with Supervisor(cfg, diarization=cfg.diarization.enabled, faults=inject) as engine:
            runner = Runner(engine)
            ready_s = runner.wait_ready()
            if role and kind == "kill":
                _kill_later(engine, role, AFTER_S[role], fired)
            res = runner.transcribe(path, language=lang)
            if role:  # a fault may fire after the work is done: watch until it is seen
                limit = time.monotonic() + cfg.engine.heartbeat_timeout + \
                    cfg.limits.over_limit_s + 5
                while not engine.detections and time.monotonic() < limit:
                    runner.pump(0.1)
                # and until its successor is up: a fault survived is a worker back at work
                limit = time.monotonic() + cfg.engine.backoff_max_s + \
                    cfg.engine.startup_timeout
                while engine.detections and time.monotonic() < limit and not (
                        engine.slots[role].restarts
                        and engine.state(role) in (WorkerState.READY, WorkerState.BUSY)):
                    runner.pump(0.1)
                recovered = bool(engine.slots[role].restarts) and \
                    engine.state(role) in (WorkerState.READY, WorkerState.BUSY)
            else:
                recovered = True
        fired += [e.time for e in runner.incidents if isinstance(e, FaultFired)]
        seen = [t for r, t in engine.detections if r == role]
        return {
            "lines": [(s.start, s.end, s.speaker, s.text) for s in res.transcript.segments],
            "ready_s": ready_s, "wall_s": time.perf_counter() - t0,
            "detected": bool(seen),
            "detection_s": round(seen[0] - fired[0], 3) if fired and seen else None,
            "restarts": engine.slots[role].restarts if role else 0,
            "recovered": recovered,
            "backoff_s": [e.retry_in for e in runner.incidents if isinstance(e, WorkerStatus)
                          and e.state == WorkerState.RESTARTING and e.role == role],
            "error": res.error,
        }

    clean = run(None, None)
    rows = []
    for role in ROLES:
        for kind in FAULT_KINDS:
            r = run(role, kind)
            rows.append({"role": role, "kind": kind, "detected": r["detected"],
                         "detection_s": r["detection_s"], "restarts": r["restarts"],
                         "recovered": r["recovered"],
                         "backoff_s": r["backoff_s"],
                         "same_transcript": r["lines"] == clean["lines"],
                         "wall_s": round(r["wall_s"], 2)})
    survived = all(r["same_transcript"] and r["detected"] and r["recovered"] for r in rows)
    if as_json:
        print(json.dumps({"clip": clip["id"], "cold_start_s": round(clean["ready_s"], 2),
                          "undisturbed_wall_s": round(clean["wall_s"], 2), "faults": rows,
                          "all_survived": survived}, indent=2))
        return 0 if survived else 1
    print(f"clip {clip['id']}: undisturbed run {clean['wall_s']:.1f} s, cold start "
          f"{clean['ready_s']:.2f} s; heartbeat timeout {cfg.engine.heartbeat_timeout:g} s; "
          "kill = SIGKILL from outside")
    print(f"{'worker':14} {'fault':6} {'detected':>8} {'latency s':>9} {'restarts':>8} "
          f"{'back up':>7} {'backoff':>8} {'same text':>9} {'wall s':>7}")
    for r in rows:
        lat = "-" if r["detection_s"] is None else f"{r['detection_s']:.2f}"
        print(f"{r['role']:14} {r['kind']:6} {str(r['detected']):>8} {lat:>9} "
              f"{r['restarts']:>8} {str(r['recovered']):>7} {str(r['backoff_s']):>8} "
              f"{str(r['same_transcript']):>9} "
              f"{r['wall_s']:7.1f}")
    return 0 if survived else 1
