"""Diarization worker: who spoke when, from ONNX segmentation + speaker embeddings.

For a file the speakers are clustered over the whole stream at its end, which is what gives
consistent labels across a recording; the work runs while transcription is still busy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

from engine.channel import Sender
from engine.config import Config
from engine.messages import (
    SAMPLE_RATE,
    AudioChunk,
    DiarizationResult,
    EndOfStream,
    EngineEvent,
    Role,
    SpeakerTurn,
    StreamStart,
    WorkerInput,
)
from engine.models.registry import diarization_paths
from engine.workers.streams import StreamTable


class DiarizationHandler:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.table = StreamTable()
        self.diarizer: Any = None

    def load(self) -> str:
        from engine.diarization.pipeline import DiarizationParams, Diarizer

        # Whisper's threads lose most when they share a core; at a lower priority diarization
        # runs in the time transcription leaves idle instead of stalling it.
        os.nice(self.config.diarization.nice)

        dc = self.config.diarization
        if dc.backend != "onnx":
            raise NotImplementedError(f"diarization backend '{dc.backend}' is not available yet")
        seg, emb = diarization_paths(self.config.paths.models_dir)
        overrides: dict[str, Any] = {
            "num_speakers": dc.num_speakers or None,
            "min_speakers": dc.min_speakers or None,
            "max_speakers": dc.max_speakers or None,
        }
        if dc.clustering_threshold:
            overrides["clustering_threshold"] = dc.clustering_threshold
        self.diarizer = Diarizer(seg, emb, DiarizationParams(**overrides), threads=dc.threads)
        return "segmentation-3.0 + CAM++ fp32"

    def handle(self, msg: WorkerInput) -> Iterator[EngineEvent]:
        match msg:
            case StreamStart():
                self.table.start(msg)
            case AudioChunk():
                st = self.table.get(msg)
                if st is not None:
                    st.add(msg)
            case EndOfStream(stream_id=sid, total_samples=total):
                st = self.table.get(msg)
                if st is None:
                    return
                audio = st.audio()
                offset_s = st.start_sample / SAMPLE_RATE
                t0 = time.perf_counter()
                turns = self.diarizer(audio, SAMPLE_RATE) if len(audio) else []
                self.table.finish(sid, total)
                yield DiarizationResult(
                    sid, tuple(SpeakerTurn(round(t.start + offset_s, 3),
                                           round(t.end + offset_s, 3), t.speaker)
                               for t in turns),
                    total, True, work_s=time.perf_counter() - t0, audio_s=len(audio) / SAMPLE_RATE)
            case _:
                return


def make_handler(config: Config, outputs: Mapping[Role, Sender]) -> DiarizationHandler:
    return DiarizationHandler(config)
