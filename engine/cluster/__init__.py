"""Batch transcription on a Ray cluster (the optional `cluster` extra).

`pipeline` is what runs in a Ray actor: the transcription and diarization handlers the
local workers run, loaded once, fed the same messages. `batch` is the driver: it reads
each file, streams it to an actor in bounded pieces, folds the results the way the local
runner does, and alone writes outputs. Nothing here imports `ray` at module level, so the
default install (without the extra) still imports the engine.
"""
