"""The driver of a batch on a Ray cluster.

Each actor holds one loaded pipeline (engine.cluster.pipeline). The driver reads every file
itself with the engine's reader (the same 16 kHz blocks capture sends the local workers),
streams it to an actor in bounded batches of blocks (at most WINDOW batches in flight, so a
long file never sits whole in the object store), folds the events that come back as the local
runner does, and alone writes outputs. No disk is shared with the nodes. A long file runs as
pieces on several actors at once, stitched back with one set of speakers (engine.cluster.split).

Faults are Ray's: actors restart (max_restarts) on a live node when their process or node
dies, and a file (or piece) whose actor died part-way is streamed again from its start (its
stream state died with the actor); every file ends exactly once. A manifest beside the outputs,
written atomically after each file, lets the same command started again skip files whose
outputs are complete.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.audio.source import (
    AudioFileError,
    AudioInfo,
    probe,
    read_blocks,
    truncated_message,
)
from engine.cluster.split import PieceResult, describe, piece_count, plan, stitch
from engine.config import Config
from engine.fileio import atomic_write_text, sha256_file
from engine.messages import (
    SAMPLE_RATE,
    AudioChunk,
    DiarizationResult,
    EndOfStream,
    SpeakerVoices,
    StreamStart,
    TranscriptResult,
    VoicesRecognised,
    WorkerInput,
)
from engine.runner import FileJob, FileResult
from engine.transcript import Transcript

BATCH_S = 30.0  # audio per actor call
WINDOW = 2  # calls in flight per file: bounded memory, the actor never waits for audio
START_WAIT_S = 300.0  # actors load their models within this, or get no files
MAX_ATTEMPTS = 3  # a file whose actor died this often fails (a file that kills actors)
MANIFEST = ".transcrevai-batch.json"


class ClusterError(Exception):
    """The cluster cannot run the batch (no Ray, unreachable, no usable node); one line."""


@dataclass
class NodeReport:
    """What the driver knows of an actor: where it runs and what it did."""

    name: str
    node_id: str = ""
    models: str = ""
    files: int = 0
    audio_s: float = 0.0  # audio of the files it finished
    error: str = ""

    @property
    def host(self) -> str:
        return self.name.split("/")[0]


@dataclass
class Progress:
    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    audio_s: float = 0.0
    total_audio_s: float = 0.0
    t0: float = field(default_factory=time.monotonic)

    def line(self, nodes: list[NodeReport]) -> str:
        wall = max(1e-6, time.monotonic() - self.t0)
        rate = self.audio_s / wall
        left = max(0.0, self.total_audio_s - self.audio_s)
        eta = f"{left / rate / 60:.1f} min" if rate > 0 and self.done < self.total else "-"
        return (f"files {self.done + self.failed}/{self.total} · audio "
                f"{self.audio_s / 3600:.2f} h · {rate:.1f}× real time · ETA {eta} · "
                + per_node(nodes, wall))


def per_node(nodes: list[NodeReport], wall_s: float) -> str:
    """Each node's share of the batch: actors at work, files, audio minutes, speed."""
    hosts: dict[str, list[NodeReport]] = {}
    for n in nodes:
        hosts.setdefault(n.node_id or n.host, []).append(n)
    parts = []
    for reps in hosts.values():
        working = [r for r in reps if not r.error]
        audio = sum(r.audio_s for r in reps)
        label = f"{reps[0].host} {reps[0].node_id[:6]}".strip()
        parts.append(f"{label}: {len(working)} actor{'s' if len(working) != 1 else ''}, "
                     f"{sum(r.files for r in reps)} files, {audio / 60:.1f} min, "
                     f"{audio / max(wall_s, 1e-6):.1f}×"
                     + ("" if working else f" ({reps[0].error})"))
    return " | ".join(parts)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterError("--cluster needs Ray: pip install 'transcrevai[cluster]'") from None
    return ray


def connect(address: str) -> Any:
    """Join the cluster: `local` starts a private Ray on this machine for the run, `auto`
    the cluster this machine is part of, else a Ray address (host:port)."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    import logging

    logging.getLogger("ray").setLevel(logging.ERROR)  # its start-up notices are not ours
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "configure_logging": False}
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"cannot join the Ray cluster at {address}: "
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") \
            from None
    return ray


def plan_actors(nodes: list[dict[str, Any]], actors: int, cpus_per_actor: int,
                max_cpus: int = 0) -> list[tuple[str, int]]:
    """(node id, CPUs) for each actor. By default an actor per `cpus_per_actor` CPUs of a
    node (at least one per node); `actors` spreads that many over the nodes by their CPUs;
    `max_cpus` caps each actor. CPUs are whole, so an actor's whisper threads equal what
    Ray reserves for it."""
    plan = _plan(nodes, actors, cpus_per_actor)
    return [(nid, min(c, max_cpus)) for nid, c in plan] if max_cpus > 0 else plan


def _plan(nodes: list[dict[str, Any]], actors: int, cpus_per_actor: int
          ) -> list[tuple[str, int]]:
    alive = [(n["NodeID"], int(n.get("Resources", {}).get("CPU", 0))) for n in nodes
             if n.get("Alive") and int(n.get("Resources", {}).get("CPU", 0)) >= 1]
    if not alive:
        return []
    if actors <= 0:
        per = max(1, cpus_per_actor)
        return [(nid, per if cpu >= per else cpu) for nid, cpu in alive
                for _ in range(max(1, cpu // per))]
    counts = {nid: 0 for nid, _ in alive}
    cpus = dict(alive)
    for _ in range(actors):  # to the node with the most whole CPUs per actor left
        nid = max(counts, key=lambda n: (cpus[n] // (counts[n] + 1), -counts[n]))
        counts[nid] += 1
    return [(nid, max(1, cpus[nid] // n)) for nid, n in counts.items() for _ in range(n)]


class Manifest:
    """Files whose outputs are complete: input size and mtime, output path and hash."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, dict[str, Any]] = {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            self.done = dict(data.get("done", {}))
        except (OSError, ValueError, AttributeError):
            pass
        self.lock = threading.Lock()

    @staticmethod
    def _stamp(src: str) -> dict[str, int]:
        st = os.stat(src)
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def complete(self, src: str, target: Path | None) -> bool:
        entry = self.done.get(os.path.abspath(src))
        if entry is None or target is None or entry.get("output") != str(target):
            return False
        try:
            return (entry.get("input") == self._stamp(src)
                    and entry.get("output_sha256") == sha256_file(target))
        except OSError:
            return False

    def record(self, src: str, target: Path) -> None:
        with self.lock:
            self.done[os.path.abspath(src)] = {"input": self._stamp(src), "output": str(target),
                                               "output_sha256": sha256_file(target)}
            atomic_write_text(self.path, json.dumps({"version": 1, "done": self.done},
                                                    indent=1, ensure_ascii=False))


def _messages(info: AudioInfo, sid: int, language: str | None, block: int,
              start: int = 0, end: int | None = None
              ) -> Iterator[tuple[list[WorkerInput], int]]:
    """(batch of messages, samples read so far) for one file, or the piece [start, end) of
    it as a stream of its own: the blocks capture would send; the reader's errors are
    raised as AudioFileError after the blocks before them."""
    piece = start > 0 or end is not None
    batch: list[WorkerInput] = [StreamStart(sid, language, voices=piece)]
    per = max(1, int(BATCH_S * SAMPLE_RATE) // block)
    seq = offset = 0
    want = None if end is None else end - start
    for samples in read_blocks(info, block, start_sample=start):
        if want is not None:
            samples = samples[: max(0, want - offset)]
            if not len(samples):
                break
        batch.append(AudioChunk(sid, seq, offset, samples))
        seq += 1
        offset += len(samples)
        if len(batch) >= per:
            yield batch, offset
            batch = []
    batch.append(EndOfStream(sid, offset))
    yield batch, offset


@dataclass
class _Split:
    """A long file running as pieces on several actors; assembled when all have ended."""

    sid: int
    path: str
    info: AudioInfo
    pieces: list[tuple[int, int]]  # samples of the recording, [start, end)
    streams: list[int]  # each piece's stream id (unique within the batch)
    results: list[PieceResult | None] = field(default_factory=list)

    @property
    def left(self) -> int:
        return sum(r is None for r in self.results)


class ClusterBatch:
    """Runs files on actors; `emit(result, target)` writes one (on the driver's thread)."""

    def __init__(self, config: Config, address: str, actors: int = 0,
                 cpus_per_actor: int = 0, say: Callable[[str], None] | None = None,
                 max_cpus: int = 0) -> None:
        self.config = config
        self.ray = connect(address)
        self.say = say or (lambda line: print(f"transcrevai: {line}", file=sys.stderr))
        self.nodes: list[NodeReport] = []
        self.actors: list[tuple[Any, NodeReport]] = []
        self.cpus: list[int] = []
        self._start_actors(actors, cpus_per_actor or 1, max_cpus)

    def _start_actors(self, actors: int, cpus_per_actor: int, max_cpus: int) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from engine.cluster.pipeline import Pipeline

        remote = self.ray.remote(Pipeline)
        plan = plan_actors(self.ray.nodes(), actors, cpus_per_actor, max_cpus)
        if not plan:
            raise ClusterError("the Ray cluster has no node with a CPU")
        self.cpus = [c for _nid, c in plan]  # per actor, as planned
        handles = []
        for i, (nid, cpus) in enumerate(plan):
            h = remote.options(
                num_cpus=cpus, max_restarts=2, max_task_retries=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(nid, soft=True),
            ).remote(self.config, cpus)
            handles.append((h, NodeReport(f"actor {i + 1}", node_id=nid)))
        # models load on every node at once; each actor verifies its weights as it loads
        asked = {h.where.remote(): (h, rep) for h, rep in handles}
        ready, late = self.ray.wait(list(asked), num_returns=len(asked), timeout=START_WAIT_S)
        for ref in ready + late:
            h, rep = asked[ref]
            try:
                if ref in late:
                    raise TimeoutError(f"not started within {START_WAIT_S:.0f} s (no room on "
                                       "its node, or the node is gone)")
                info = self.ray.get(ref)
            except Exception as exc:  # a node without usable weights gets no work
                rep.error = _one_line(exc)
                self.say(f"node {rep.node_id[:12]} ({rep.name}): {rep.error}; it gets no files")
                self.ray.kill(h, no_restart=True)
                self.nodes.append(rep)
                continue
            rep.models = info["models"]
            rep.name = f"{info['host']}/{info['pid']}"
            self.nodes.append(rep)
            self.actors.append((h, rep))
        if not self.actors:
            raise ClusterError("no actor could load the models: "
                               + "; ".join(r.error for r in self.nodes))

    def close(self) -> None:
        """End the actors (their CPUs go back to the cluster); the connection stays."""
        for handle, _rep in self.actors:
            try:
                self.ray.kill(handle, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors = []

    def split(self, files: list[str]) -> dict[int, _Split]:
        """The long files that run as pieces on several actors at once (by file number)."""
        cc = self.config.cluster
        out: dict[int, _Split] = {}
        stream = len(files) + 1
        for sid, f in enumerate(files, 1):
            try:
                info = probe(f)
            except AudioFileError:
                continue  # fails alone, one line, when its turn comes
            if piece_count(info.duration_s, len(self.actors), cc) < 2:
                continue
            pieces = plan(info, len(self.actors), cc)
            out[sid] = _Split(sid, f, info, pieces, list(range(stream, stream + len(pieces))),
                              [None] * len(pieces))
            stream += len(pieces)
            self.say(f"{f}: {len(pieces)} pieces cut at pauses ({describe(pieces)}), "
                     "run side by side")
        return out

    def run(self, files: list[str], emit: Callable[[FileResult, str], None],
            language: str | None = None) -> None:
        """Each file once, on whichever actor is free (a long one as pieces on several at
        once); `emit` is called on this thread."""
        splits = self.split(files)
        todo: queue.Queue[tuple[int, str, int, int]] = queue.Queue()  # piece -1: whole file
        for sid, f in enumerate(files, 1):
            for k in range(len(splits[sid].pieces)) if sid in splits else [-1]:
                todo.put((sid, f, 0, k))
        results: queue.Queue[tuple[FileResult, str] | None] = queue.Queue()
        block = max(1, int(self.config.engine.chunk_s * SAMPLE_RATE))

        lock = threading.Lock()
        in_flight = [0]  # work taken and not yet ended: some may still come back to `todo`

        def serve(handle: Any, rep: NodeReport) -> None:
            while True:
                try:
                    sid, path, attempt, k = todo.get(timeout=0.2)
                except queue.Empty:
                    with lock:
                        if in_flight[0] == 0:
                            break
                    continue
                with lock:
                    in_flight[0] += 1
                sp = splits.get(sid)
                try:
                    if sp is None:
                        res = self._one(handle, rep, sid, path, language, block)
                    else:
                        piece = self._piece(handle, rep, sp, k, language, block)
                except _ActorLost as lost:
                    if attempt + 1 >= MAX_ATTEMPTS:
                        why = f"{path}: {lost} ({MAX_ATTEMPTS} tries)"
                        if sp is None:
                            res = FileResult(path, Transcript(source=path), error=why)
                        else:
                            piece = PieceResult(sp.pieces[k][0], Transcript(source=path),
                                                error=why)
                    else:
                        todo.put((sid, path, attempt + 1, k))  # from its start, any actor
                        with lock:
                            in_flight[0] -= 1
                        if not self._back(handle, rep):
                            break  # Ray could not restart it anywhere: this actor retires
                        continue
                if sp is not None:
                    a, b = sp.pieces[k]
                    rep.audio_s += (b - a) / SAMPLE_RATE if piece.error is None else 0.0
                    with lock:
                        sp.results[k] = piece
                        last = sp.left == 0
                    if not last:
                        with lock:
                            in_flight[0] -= 1
                        continue
                    res = self._assemble(sp, rep.models.split(" + ")[0])
                else:
                    rep.audio_s += res.audio_s if res.error is None else 0.0
                rep.files += 1
                results.put((res, rep.name))
                with lock:
                    in_flight[0] -= 1
            results.put(None)

        threads = [threading.Thread(target=serve, args=a, daemon=True) for a in self.actors]
        for t in threads:
            t.start()
        running = len(threads)
        while running:
            item = results.get()
            if item is None:
                running -= 1
                continue
            emit(*item)
        failed: set[int] = set()
        while not todo.empty():  # every actor retired: what is left fails, one line each
            sid, path, _attempt, _k = todo.get()
            if sid in failed:
                continue
            failed.add(sid)
            why = f"{path}: no actor left on the cluster to run it"
            sp = splits.get(sid)
            if sp is None or sp.left == len(sp.pieces):
                emit(FileResult(path, Transcript(source=path), error=why), "-")
                continue
            for k, r in enumerate(sp.results):  # the pieces that ended keep their text
                if r is None:
                    sp.results[k] = PieceResult(sp.pieces[k][0], Transcript(source=path),
                                                error=why)
            model = next((n.models for n in self.nodes if n.models), "")
            emit(self._assemble(sp, model.split(" + ")[0]), "-")

    def _back(self, handle: Any, rep: NodeReport) -> bool:
        """Whether Ray brought the actor back (restarted on a node with room) in time."""
        ray = self.ray
        deadline = time.monotonic() + self.config.cluster.restart_wait_s
        info: dict[str, Any] | None = None
        why = ""
        while info is None and time.monotonic() < deadline:
            try:
                info = ray.get(handle.where.remote(),
                               timeout=max(0.1, deadline - time.monotonic()))
            except ray.exceptions.ActorUnavailableError:  # restarting: ask again
                time.sleep(0.5)
            except Exception as exc:  # dead for good, or not back in time
                why = type(exc).__name__
                break
        if info is None:  # not restarted (no room left, or restarts used up)
            exc_name = why or "timed out"
            rep.error = f"lost ({exc_name})"
            self.say(f"{rep.name}: actor lost and not restarted ({exc_name}); its files go "
                     "to the others")
            try:
                self.ray.kill(handle, no_restart=True)
            except Exception:  # already gone
                pass
            return False
        rep.name = f"{info['host']}/{info['pid']}"
        return True

    def _one(self, handle: Any, rep: NodeReport, sid: int, path: str, language: str | None,
             block: int) -> FileResult:
        try:
            info = probe(path)
        except AudioFileError as exc:  # changed since the command checked it
            return FileResult(path, Transcript(source=path), error=str(exc))
        job, _voices, _fed = self._stream(handle, sid, path, info, language, block)
        if job.failed:  # the actor raised: nothing of this file is kept
            return FileResult(path, Transcript(source=path), audio_s=info.duration_s,
                              error=job.result.error)
        return job.finish(rep.models.split(" + ")[0])

    def _piece(self, handle: Any, rep: NodeReport, sp: _Split, k: int, language: str | None,
               block: int) -> PieceResult:
        """One piece of a split file, as a stream of its own; its speakers' voices too."""
        start, end = sp.pieces[k]
        job, voices, fed = self._stream(handle, sp.streams[k], sp.path, sp.info, language,
                                        block, start, end)
        res = job.finish(rep.models.split(" + ")[0])
        return PieceResult(start, res.transcript, voices, res.work_s, res.dropped, res.error,
                           fed)

    def _assemble(self, sp: _Split, model: str) -> FileResult:
        """A split file's result from its pieces (speakers matched across them)."""
        pieces = [r for r in sp.results if r is not None]
        tr = stitch(sp.path, sp.info.duration_s, pieces, self.config.cluster.stitch_threshold)
        tr.model = model
        errors = [p.error for p in pieces if p.error]
        res = FileResult(sp.path, tr, audio_s=sp.info.duration_s,
                         error=errors[0] if errors else None)
        for p in pieces:
            for role, w in p.work_s.items():
                res.work_s[role] = res.work_s.get(role, 0.0) + w
            res.dropped += p.dropped
        for e in errors[1:]:
            tr.warnings.append(e)
        if sp.info.truncated:  # as the whole-file path says it, once
            msg = truncated_message(sp.info, sum(p.samples for p in pieces))
            res.error = res.error or msg
            tr.warnings.append(msg)
        return res

    def _stream(self, handle: Any, sid: int, path: str, info: AudioInfo,
                language: str | None, block: int, start: int = 0, end: int | None = None
                ) -> tuple[FileJob, list[tuple[str, Any, float]], int]:
        """Stream a file (or its piece [start, end)) through an actor, folded as the local
        runner folds it; with the speakers' voices a piece's diarization sent, and the
        samples fed (a truncated file's pieces end early)."""
        ray = self.ray
        whole = start == 0 and end is None
        length = info.duration_s if whole else ((end or 0) - start) / SAMPLE_RATE
        job = FileJob(sid, FileResult(path, Transcript(source=path, duration_s=length),
                                      audio_s=length))
        voices: list[tuple[str, Any, float]] = []
        pending: list[Any] = []
        fed = 0

        def fold(ref: Any) -> None:
            for ev in ray.get(ref):
                match ev:
                    case TranscriptResult():
                        job.take_transcript(ev)
                    case DiarizationResult():
                        job.take_turns(ev)
                    case VoicesRecognised(matches=matches):
                        job.result.transcript.recognise(matches)
                    case SpeakerVoices():
                        voices[:] = list(ev.voices)

        try:
            try:
                for msgs, upto in _messages(info, sid, language, block, start, end):
                    fed = upto
                    pending.append(handle.feed.remote(msgs))
                    while len(pending) >= WINDOW:
                        fold(pending.pop(0))
            except AudioFileError as exc:  # decoding failed part-way: end what was read
                job.result.error = str(exc)
                job.result.transcript.warnings.append(str(exc))
                pending.append(handle.feed.remote([EndOfStream(sid, fed)]))
            for ref in pending:
                fold(ref)
        except ray.exceptions.RayActorError as exc:
            raise _ActorLost(f"its actor died ({type(exc).__name__})") from None
        except ray.exceptions.RayTaskError as exc:
            job.failed = True
            job.result.error = f"{path}: {_one_line(getattr(exc, 'cause', None) or exc)}"
            return job, voices, fed
        if info.truncated and whole:  # a split file's pieces are told once, assembled
            msg = truncated_message(info, fed)
            job.result.error = job.result.error or msg
            job.result.transcript.warnings.append(msg)
        return job, voices, fed


class _ActorLost(Exception):
    pass


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
