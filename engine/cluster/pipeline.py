"""One loaded pipeline (transcription + diarization) per Ray actor.

The actor runs the very handlers the local worker processes run (engine.workers.*), with the
same messages (engine.messages), so a transcript made on the cluster is the one made
locally. The models load once, when the actor starts; each handler verifies the pinned
hashes of its weights as it loads, so a node with missing or damaged weights fails here,
by name, before it is given any file.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.config import Config
from engine.messages import EngineEvent, WorkerInput

MODELS_ENV = "TRANSCREVAI_MODELS_DIR"  # a node's own models folder, in its environment


class Pipeline:
    """Plain Python (tests and the driver's own checks use it without Ray too)."""

    def __init__(self, config: Config, threads: int) -> None:
        from engine.workers import diarization, transcription

        own = os.environ.get(MODELS_ENV)
        if own:  # this node keeps its weights elsewhere than the driver's machine does
            config = config.replace("paths", models_dir=Path(own))
        # the CPUs Ray gave this actor, and nothing more: actors never oversubscribe a node
        config = config.replace("transcription", cpu_threads=max(1, threads))
        # one process holds both: diarization's lower priority would slow transcription too
        config = config.replace("diarization", nice=0)
        self.config = config
        self.transcription = transcription.make_handler(config, {})
        self.models = [self.transcription.load()]
        self.diarization: Any = None
        if config.diarization.enabled:
            self.diarization = diarization.make_handler(config, {})
            self.models.append(self.diarization.load())

    def where(self) -> dict[str, Any]:
        """Which host and process this is, and what it loaded (progress and errors name it)."""
        return {"host": socket.gethostname(), "pid": os.getpid(),
                "models": " + ".join(self.models)}

    def feed(self, messages: Sequence[WorkerInput]) -> list[EngineEvent]:
        """Messages of one stream, in order, to both handlers; the events they publish."""
        out: list[EngineEvent] = []
        for msg in messages:
            out.extend(self.transcription.handle(msg))
            if self.diarization is not None:
                out.extend(self.diarization.handle(msg))
        return out
