"""Offline speaker diarization with numpy + onnxruntime: pyannote segmentation-3.0 + CAM++.

The method follows the idea of pyannote's speaker-diarization-3.x pipeline:

1. Local segmentation. 10 s windows slide over the audio; per ~17 ms frame the segmentation
   model picks one of 7 powerset classes over (up to) 3 *local* speakers, whose identities
   mean nothing outside their window.
2. Local embeddings. Each local speaker's activity is cut at pauses into pieces, and every
   piece gets a CAM++ embedding from the fbank frames where it talks alone (overlap mixes two
   voices). Cutting at pauses matters: segmentation-3.0 sometimes keeps two different voices
   under one local label when a pause separates them, and pyannote's one embedding per local
   speaker then merges those speakers for good. A piece whose speech is mostly that of a piece
   already embedded in an earlier window reuses that embedding, which removes most of the
   repeated work of overlapping windows.
3. Clustering. Average-linkage agglomerative clustering on cosine distance of the embeddings
   with enough speech finds the speakers; their number comes from a distance threshold unless
   the caller fixes or bounds it. A cluster whose speaker talks too little is folded into the
   nearest one unless its voice is clearly different. Every piece then goes to its most
   similar speaker, but never to the one of a piece of another local speaker talking at the
   same time in the same window.
4. Reconstruction. Each window's activity is relabelled with global speakers and summed over
   the overlapping windows; the per-frame speaker count (the rounded mean of the windows'
   local counts) decides how many of the most active speakers are kept at each frame; frames
   become turns and short gaps of one speaker are bridged.

Meant for single-threaded CPU use: ONNX sessions default to one thread, and windows are
processed in blocks so that memory stays flat for long recordings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from scipy.cluster.hierarchy import fcluster, linkage

from engine.diarization.features import FRAME_LENGTH as FBANK_LENGTH
from engine.diarization.features import FRAME_SHIFT as FBANK_SHIFT
from engine.diarization.features import fbank
from engine.messages import SAMPLE_RATE

# Segmentation-3.0 framing (SincNet stride and receptive field), in samples.
SEG_STEP = 270
SEG_FIELD = 991
SEG_CENTER = (SEG_FIELD - 1) / 2
NUM_LOCAL = 3
EMBEDDING_DIM = 192
# Above this many embeddings only the ones with the most speech are clustered (the pairwise
# distance matrix grows quadratically); the others are assigned to the speakers found.
MAX_CLUSTERED = 2000
# Powerset class -> active local speakers: {}, {1}, {2}, {3}, {1,2}, {1,3}, {2,3}.
_POWERSET = np.array(
    [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]],
    dtype=np.uint8,
)


@dataclass(frozen=True)
class DiarizationParams:
    """Tunable settings. The defaults were measured on the dev corpus (see evaluate.py) and
    sit in the middle of the range where all its clips came out right.

    window_s: segmentation window; segmentation-3.0 was trained on 10 s.
    step_s: hop between windows (rounded to whole ~17 ms frames). Smaller judges each frame by
        more windows; segmentation CPU grows as 1/step_s.
    clustering_threshold: clusters whose average pairwise cosine distance (1 - cosine
        similarity) exceeds this are kept apart.
    split_gap_s: a local speaker's activity is cut into separately embedded pieces at pauses
        of at least this length.
    min_piece_s: pieces with less speech than this are joined to the nearest piece of the same
        local speaker.
    min_embedding_s: speech a piece needs to get an embedding of its own; shorter pieces take
        the speaker of the nearest piece of their local speaker.
    min_seed_s: speech an embedding needs to take part in clustering; shorter (noisier) ones
        are only assigned to the speakers found.
    max_embedding_s: at most this much speech (the central part) goes into CAM++ per piece;
        bounds CPU time, as embeddings of longer stretches barely change.
    reuse_overlap: a piece reuses an earlier piece's embedding when each covers at least this
        fraction of the other's speech frames (> 1 disables reuse).
    min_speaker_s: a cluster whose speaker talks less than this (distinct seconds) is folded
        into the nearest one, unless num/min_speakers asks for more speakers, or ...
    distinct_threshold / min_distinct_s: ... unless it talks at least min_distinct_s and its
        centroid is farther than this cosine distance from every kept speaker (a clearly
        different voice that only says a few words). None disables the exception.
    num_speakers / min_speakers / max_speakers: fix or bound the number of speakers.
    min_duration_off: pauses of one speaker shorter than this are bridged.
    min_duration_on: turns shorter than this (after bridging) are dropped.
    batch_size: windows per segmentation call.
    """

    window_s: float = 10.0
    step_s: float = 3.0
    clustering_threshold: float = 0.6
    split_gap_s: float = 0.25
    min_piece_s: float = 0.3
    min_embedding_s: float = 0.25
    min_seed_s: float = 1.0
    max_embedding_s: float | None = 3.0
    reuse_overlap: float = 0.5
    min_speaker_s: float = 1.5
    distinct_threshold: float | None = 0.75
    min_distinct_s: float = 0.5
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    min_duration_off: float = 0.5
    min_duration_on: float = 0.0
    batch_size: int = 4


@dataclass(frozen=True)
class Turn:
    start: float  # seconds
    end: float
    speaker: str  # "SPEAKER_00", "SPEAKER_01", ... numbered in order of first appearance


@dataclass
class _Piece:
    window: int
    local: int
    start: int  # window frames [start, end)
    end: int
    embedding: int = -1  # row in _Analysis.vectors, -1 if none


@dataclass
class _Analysis:
    """Segmentation of every window plus the pieces and their embeddings."""

    activity: np.ndarray  # (W, F, 3) uint8 local speaker activity
    offsets: np.ndarray  # (W,) global frame index of each window's first frame
    num_frames: int  # global frames covering the audio
    pieces: list[_Piece] = field(default_factory=list)  # in window order
    vectors: list[np.ndarray] = field(default_factory=list)  # unit embeddings
    speech: list[np.ndarray] = field(default_factory=list)  # global frames behind each
    seeds: list[bool] = field(default_factory=list)  # enough speech to cluster on

    def embeddings(self) -> np.ndarray:
        if not self.vectors:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        return np.stack(self.vectors)

    def piece_activity(self, p: _Piece) -> np.ndarray:
        """Boolean activity of a piece over its window's frames."""
        mask = np.zeros(self.activity.shape[1], dtype=bool)
        mask[p.start : p.end] = self.activity[p.window, p.start : p.end, p.local] != 0
        return mask


def _session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Input shapes change from call to call (CAM++ length, last batch), so memory patterns
    # would rarely be reused; the arena stays on: without it the heap fragmented and peak
    # RSS grew by ~80 MB per session (measured).
    opts.enable_mem_pattern = False
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class VoiceChanges:
    """Whether the voice changes across a pause, from segmentation alone (no embeddings).

    The transcription worker merges speech into decode units at pauses and must not merge
    two voices; the diarization worker's turns are not there yet when a piece is decoded
    (the workers run side by side). Within one window the model's local speaker labels are
    comparable, so a window centred on the pause tells whether the speaker talking alone
    most just before it is the one just after. Depends on the audio only, so a restarted
    worker cuts the same units. One window per run: a batch of 8 grew the transcription
    worker by ~160 MB (SincNet's first layer output for 8 x 10 s).
    """

    def __init__(self, segmentation_path: Path, side_s: float = 2.0, min_s: float = 0.3,
                 window_s: float = 10.0) -> None:
        self._seg = _session(Path(segmentation_path), 1)
        self._seg_in = self._seg.get_inputs()[0].name
        self.window = int(round(window_s * SAMPLE_RATE))
        self.frames = (self.window - SEG_FIELD) // SEG_STEP + 1
        self.side = int(round(side_s * SAMPLE_RATE / SEG_STEP))
        self.min_frames = int(round(min_s * SAMPLE_RATE / SEG_STEP))

    def __call__(self, audio: np.ndarray, pauses: list[int]) -> list[bool]:
        """For each pause (a sample index of `audio`): does another voice speak after it?"""
        out: list[bool] = []
        x = np.zeros((1, 1, self.window), dtype=np.float32)
        for p in pauses:
            s = p - self.window // 2
            chunk = audio[max(0, s) : s + self.window]
            x[:] = 0.0
            x[0, 0, max(0, -s) : max(0, -s) + chunk.shape[0]] = chunk
            log_probs = self._seg.run(None, {self._seg_in: x})[0]
            act = _POWERSET[np.argmax(log_probs[0, : self.frames], axis=-1)]
            alone = act * (act.sum(axis=-1, keepdims=True) == 1)
            f = int(round((p - s - SEG_CENTER) / SEG_STEP))
            before = alone[max(0, f - self.side) : f].sum(axis=0)
            after = alone[f + 1 : f + 1 + self.side].sum(axis=0)
            out.append(bool(before.max() >= self.min_frames
                            and after.max() >= self.min_frames
                            and before.argmax() != after.argmax()))
        return out

    def activity(self, audio: np.ndarray, min_s: float) -> list[tuple[int, int]]:
        """Where the segmentation model hears someone speak (sample ranges at least `min_s`
        long): the speech the diarizer's turns are made of, which the VAD can miss (soft or
        distant voices). Whole windows side by side, so each sample is judged once."""
        x = np.zeros((1, 1, self.window), dtype=np.float32)
        active: list[np.ndarray] = []
        for s in range(0, max(1, len(audio)), self.window):
            chunk = audio[s : s + self.window]
            x[:] = 0.0
            x[0, 0, : chunk.shape[0]] = chunk
            log_probs = self._seg.run(None, {self._seg_in: x})[0]
            frames = min(self.frames, int(np.ceil(max(0, chunk.shape[0] - SEG_FIELD)
                                                  / SEG_STEP)) + 1)
            act = _POWERSET[np.argmax(log_probs[0, :frames], axis=-1)].any(axis=-1)
            active.append(act)
        out: list[tuple[int, int]] = []
        if not active:
            return out
        per = self.frames
        on = np.concatenate([a if len(a) == per else np.pad(a, (0, per - len(a)))
                             for a in active])
        edges = np.flatnonzero(np.diff(np.concatenate([[0], on.astype(np.int8), [0]])))
        for f0, f1 in zip(edges[::2], edges[1::2], strict=True):
            # frame f of window w is centred at w * window + SEG_CENTER + (f % per) * STEP
            a = self._centre(f0) - SEG_STEP // 2
            b = self._centre(f1 - 1) + SEG_STEP // 2
            a, b = max(0, a), min(len(audio), b)
            if b - a >= min_s * SAMPLE_RATE:
                out.append((a, b))
        return out

    def _centre(self, frame: int) -> int:
        w, f = divmod(int(frame), self.frames)
        return int(w * self.window + SEG_CENTER + f * SEG_STEP)


class Diarizer:
    """Callable offline diarizer; construct once (loads both models), call per recording."""

    def __init__(
        self,
        segmentation_path: Path,
        embedding_path: Path,
        params: DiarizationParams = DiarizationParams(),  # noqa: B008 - frozen, so shared is safe
        threads: int = 1,
    ) -> None:
        self.params = params
        self._seg = _session(Path(segmentation_path), threads)
        self._emb = _session(Path(embedding_path), threads)
        self._seg_in = self._seg.get_inputs()[0].name
        self._emb_in = self._emb.get_inputs()[0].name
        self.window = int(round(params.window_s * SAMPLE_RATE))
        self.window_frames = (self.window - SEG_FIELD) // SEG_STEP + 1
        # A hop of whole segmentation frames keeps every window on one global frame grid.
        self.step_frames = max(1, int(round(params.step_s * SAMPLE_RATE / SEG_STEP)))
        self.step = self.step_frames * SEG_STEP
        self.frame_s = SEG_STEP / SAMPLE_RATE

    def _frames(self, seconds: float) -> int:
        return int(math.ceil(seconds / self.frame_s - 1e-9))

    # ------------------------------------------------------------------ entry point
    def __call__(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE,
                 release: Callable[[int], None] | None = None) -> list[Turn]:
        """Diarize mono audio in [-1, 1]; returns turns sorted by start time.

        The audio is read window by window (a memory-mapped file works); `release(n)` is
        called once samples before n are no longer needed.
        """
        wav = _as_mono_16k(audio, sample_rate)
        if wav.shape[0] < SEG_FIELD:
            return []
        analysis = self._analyse(wav, release)
        labels, num = self._cluster(analysis)
        if num == 0:
            return []
        binary = self._reconstruct(analysis, labels, num)
        return self._to_turns(binary, wav.shape[0] / SAMPLE_RATE)

    # ------------------------------------------------------------------ stages 1 + 2
    def _analyse(self, wav: np.ndarray,
                 release: Callable[[int], None] | None = None) -> _Analysis:
        """Segment all windows (batched) and embed their pieces, block by block."""
        extra = max(0, wav.shape[0] - self.window)
        starts = np.arange(1 + math.ceil(extra / self.step), dtype=np.int64) * self.step
        nfr = self.window_frames
        out = _Analysis(
            activity=np.zeros((len(starts), nfr, NUM_LOCAL), dtype=np.uint8),
            offsets=starts // SEG_STEP,
            num_frames=(wav.shape[0] - SEG_FIELD) // SEG_STEP + 1,
        )
        recent: list[int] = []  # embeddings whose speech may overlap the coming windows
        bs = max(1, self.params.batch_size)
        batch = np.zeros((min(bs, len(starts)), 1, self.window), dtype=np.float32)
        for b0 in range(0, len(starts), bs):
            block = starts[b0 : b0 + bs]
            batch[:] = 0.0
            for i, s in enumerate(block):
                chunk = wav[s : s + self.window]
                batch[i, 0, : chunk.shape[0]] = chunk
            log_probs = self._seg.run(None, {self._seg_in: batch[: len(block)]})[0]
            act = _POWERSET[np.argmax(log_probs[:, :nfr], axis=-1)]
            out.activity[b0 : b0 + len(block)] = act
            if act.any():
                self._embed_block(wav, out, b0, len(block), recent)
            if release is not None and b0 + bs < len(starts):
                release(int(starts[b0 + bs]))  # the next batch starts there
        return out

    def _split(self, active: np.ndarray) -> list[tuple[int, int]]:
        return split_pieces(active, self._frames(self.params.split_gap_s),
                            self._frames(self.params.min_piece_s))

    def _embed_block(
        self, wav: np.ndarray, out: _Analysis, w0: int, count: int, recent: list[int]
    ) -> None:
        """Pieces and CAM++ embeddings for windows w0 .. w0+count-1.

        The fbank is computed once over the block's span and sliced per piece; each fbank
        frame belongs to the segmentation frame nearest to its centre.
        """
        p = self.params
        starts = out.offsets[w0 : w0 + count] * SEG_STEP
        span0 = int(starts[0])
        feats = fbank(wav[span0 : min(wav.shape[0], int(starts[-1]) + self.window)])
        if feats.shape[0] == 0:
            return
        centers = span0 + np.arange(feats.shape[0]) * FBANK_SHIFT + FBANK_LENGTH / 2
        min_frames = self._frames(p.min_embedding_s)
        min_seed = self._frames(p.min_seed_s)
        cap = None if p.max_embedding_s is None else max(2, int(p.max_embedding_s * 100))
        for i in range(count):
            w = w0 + i
            act = out.activity[w]
            g0 = int(out.offsets[w])
            recent[:] = [e for e in recent if out.speech[e][-1] >= g0]
            alone = act.sum(axis=1) == 1
            s = int(starts[i])
            lo = int(np.searchsorted(centers, s))
            hi = int(np.searchsorted(centers, s + self.window))
            fb_to_seg = np.clip(
                np.rint((centers[lo:hi] - s - SEG_CENTER) / SEG_STEP).astype(np.int64),
                0, self.window_frames - 1,
            )
            for k in range(NUM_LOCAL):
                active = act[:, k] != 0
                for a, b in self._split(active):
                    piece = _Piece(w, k, a, b)
                    out.pieces.append(piece)
                    used = np.zeros_like(active)
                    used[a:b] = active[a:b]
                    clean = used & alone
                    if clean.sum() >= min_frames:
                        used = clean  # speech of this speaker alone
                    elif used.sum() < min_frames:
                        continue
                    frames = (np.flatnonzero(used) + g0).astype(np.int32)
                    piece.embedding = self._find_reusable(out, recent, frames)
                    if piece.embedding >= 0:
                        continue
                    idx = np.flatnonzero(used[fb_to_seg]) + lo
                    if idx.shape[0] < 2:
                        continue
                    if cap is not None and idx.shape[0] > cap:
                        mid = (idx.shape[0] - cap) // 2
                        idx = idx[mid : mid + cap]
                    x = feats[idx]
                    x = x - x.mean(axis=0, keepdims=True)  # per-utterance mean, as in training
                    vec = self._emb.run(None, {self._emb_in: x[None]})[0][0]
                    norm = float(np.linalg.norm(vec))
                    if not norm > 0.0:
                        continue
                    piece.embedding = len(out.vectors)
                    out.vectors.append((vec / norm).astype(np.float32))
                    out.speech.append(frames)
                    out.seeds.append(frames.shape[0] >= min_seed)
                    recent.append(piece.embedding)

    def _find_reusable(self, out: _Analysis, recent: list[int], frames: np.ndarray) -> int:
        """An earlier embedding of mostly the same speech, or -1."""
        need = self.params.reuse_overlap
        if need > 1.0:
            return -1
        for e in reversed(recent):
            other = out.speech[e]
            if other[0] > frames[-1] or other[-1] < frames[0]:
                continue
            common = np.intersect1d(other, frames, assume_unique=True).shape[0]
            if common >= need * frames.shape[0] and common >= need * other.shape[0]:
                return e
        return -1

    # ------------------------------------------------------------------ stage 3
    def _cluster(self, out: _Analysis) -> tuple[np.ndarray, int]:
        """Global speaker per piece (-1 = none) and the number of speakers."""
        x = out.embeddings()
        piece_label = np.full(len(out.pieces), -1, dtype=np.int64)
        if x.shape[0] == 0:
            return piece_label, 0
        seeds = np.flatnonzero(out.seeds)
        if seeds.shape[0] == 0:  # only short speech: cluster what there is
            seeds = np.arange(x.shape[0])
        if seeds.shape[0] > MAX_CLUSTERED:
            talk = np.array([out.speech[i].shape[0] for i in seeds])
            seeds = np.sort(seeds[np.argsort(-talk, kind="stable")[:MAX_CLUSTERED]])
        centroids = self._speakers(x[seeds], x, out.speech)
        sim = x @ centroids.T  # (embeddings, speakers)

        by_window: dict[int, list[int]] = {}
        for j, pc in enumerate(out.pieces):
            by_window.setdefault(pc.window, []).append(j)
        for members in by_window.values():
            self._assign_window(out, members, sim, piece_label)
        return piece_label, centroids.shape[0]

    def _assign_window(
        self, out: _Analysis, members: list[int], sim: np.ndarray, label: np.ndarray
    ) -> None:
        """Most similar speaker per piece of one window, but never the speaker of a piece of
        another local speaker active at the same time (most confident pieces choose first)."""
        pieces = out.pieces
        with_emb = [j for j in members if pieces[j].embedding >= 0]
        masks = {j: out.piece_activity(pieces[j]) for j in with_emb}
        with_emb.sort(key=lambda j: -float(sim[pieces[j].embedding].max()))
        for j in with_emb:
            taken = {
                int(label[o]) for o in with_emb
                if label[o] >= 0 and pieces[o].local != pieces[j].local
                and bool((masks[o] & masks[j]).any())
            }
            order = np.argsort(-sim[pieces[j].embedding])
            free = [int(c) for c in order if int(c) not in taken]
            label[j] = free[0] if free else int(order[0])
        # Pieces without an embedding follow the nearest piece of the same local speaker.
        for j in members:
            if pieces[j].embedding >= 0:
                continue
            same = [o for o in with_emb if pieces[o].local == pieces[j].local]
            if same:
                near = min(same, key=lambda o: abs(pieces[o].start - pieces[j].start))
                label[j] = label[near]

    def _speakers(
        self, x: np.ndarray, x_all: np.ndarray, speech: list[np.ndarray]
    ) -> np.ndarray:
        """Unit centroids (K, D) of the speakers found by clustering the seed embeddings ``x``.

        ``x_all`` and ``speech`` (every embedding and its frames) measure how much each
        candidate speaker talks, for folding in the ones that talk too little.
        """
        p = self.params
        n = x.shape[0]
        if n == 1:
            return x / np.linalg.norm(x, axis=1, keepdims=True)
        tree = linkage(x.astype(np.float64), method="average", metric="cosine")
        labels = fcluster(tree, t=p.clustering_threshold, criterion="distance") - 1
        lo = p.num_speakers or p.min_speakers or 1
        hi = p.num_speakers or p.max_speakers or n
        lo, hi = min(lo, n), max(1, min(hi, n))
        large = self._large_clusters(x, labels, x_all, speech)
        if not lo <= len(large) <= hi:
            target = lo if len(large) < lo else hi
            # Walk down the dendrogram from `target` clusters until enough of them are large
            # (a bounded walk: past that, the biggest clusters are taken as they are).
            for k in range(target, min(n, target + 40) + 1):
                labels = fcluster(tree, t=k, criterion="maxclust") - 1
                large = self._large_clusters(x, labels, x_all, speech)
                if len(large) >= target:
                    break
            if len(large) < target:  # too few real speakers: take the biggest clusters
                large = self._large_clusters(x, labels, x_all, speech, keep=target)
            large = large[:target]
        # Fold the small clusters into the nearest large one, then take the centroids.
        cents = _unit_centroids(x, labels, large)
        remap = {c: i for i, c in enumerate(large)}
        final = np.array(
            [remap.get(int(c), int(np.argmax(cents @ v))) for c, v in zip(labels, x, strict=True)],
            dtype=np.int64,
        )
        return _unit_centroids(x, final, list(range(len(large))))

    def _large_clusters(
        self,
        x: np.ndarray,
        labels: np.ndarray,
        x_all: np.ndarray,
        speech: list[np.ndarray],
        keep: int | None = None,
    ) -> list[int]:
        """Clusters kept as speakers, most talkative first: those that talk at least
        min_speaker_s, plus clearly distinct ones (see DiarizationParams); with ``keep``: the
        ``keep`` most talkative, whatever their size. Talk time is the distinct speech of every
        embedding nearest to the cluster's centroid, not only of its seeds."""
        num = int(labels.max()) + 1
        nearest = np.argmax(x_all @ _unit_centroids(x, labels, list(range(num))).T, axis=1)
        sizes = []
        for c in range(num):
            members = np.flatnonzero(nearest == c)
            talk = 0.0
            if members.size:
                talk = np.unique(np.concatenate([speech[m] for m in members])).shape[0]
            sizes.append((talk * self.frame_s, int((labels == c).sum()), c))
        sizes.sort(reverse=True)
        if keep is not None:
            return [c for _, _, c in sizes[:keep]]
        p = self.params
        big = [c for s, _, c in sizes if s >= p.min_speaker_s]
        if p.distinct_threshold is not None and big:
            cents = _unit_centroids(x, labels, list(range(num)))
            talkers = list(big)
            for talk_s, _, c in sizes:
                if c in talkers or talk_s < p.min_distinct_s:
                    continue
                if 1.0 - float((cents[talkers] @ cents[c]).max()) > p.distinct_threshold:
                    big.append(c)
        return big or [sizes[0][2]]

    # ------------------------------------------------------------------ stage 4
    def _reconstruct(self, out: _Analysis, labels: np.ndarray, num: int) -> np.ndarray:
        """(frames, speakers) boolean activity from window activities and piece labels."""
        nglob, nfr = out.num_frames, self.window_frames
        total = nglob + nfr  # room for the padded tail of the last window
        count_sum = np.zeros(total, dtype=np.float32)
        cover = np.zeros(total, dtype=np.float32)
        score = np.zeros((total, num), dtype=np.float32)
        for w in range(out.activity.shape[0]):
            o = int(out.offsets[w])
            count_sum[o : o + nfr] += out.activity[w].sum(axis=1)
            cover[o : o + nfr] += 1.0
        mapped = np.zeros((nfr, num), dtype=np.float32)
        current = -1
        for j, pc in enumerate(out.pieces):
            if pc.window != current:
                if current >= 0:
                    o = int(out.offsets[current])
                    score[o : o + nfr] += mapped
                mapped[:] = 0.0
                current = pc.window
            c = labels[j]
            if c >= 0:  # max over the pieces a window gives to one speaker
                seg = out.activity[pc.window, pc.start : pc.end, pc.local]
                np.maximum(mapped[pc.start : pc.end, c], seg, out=mapped[pc.start : pc.end, c])
        if current >= 0:
            o = int(out.offsets[current])
            score[o : o + nfr] += mapped
        count_sum, cover, score = count_sum[:nglob], cover[:nglob], score[:nglob]
        count = np.rint(count_sum / np.maximum(cover, 1.0)).astype(np.int64)
        limit = self.params.num_speakers or self.params.max_speakers
        count = np.minimum(count, min(num, limit) if limit else num)
        order = np.argsort(-score, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.broadcast_to(np.arange(num), order.shape), axis=1)
        return (rank < count[:, None]) & (score > 0)

    def _to_turns(self, binary: np.ndarray, duration: float) -> list[Turn]:
        """Frames -> per-speaker turns with gap bridging, short-turn removal and labels."""
        p = self.params
        half = 0.5 * self.frame_s
        center0 = SEG_CENTER / SAMPLE_RATE
        raw: list[tuple[float, float, int]] = []
        for spk in range(binary.shape[1]):
            merged: list[list[float]] = []
            for a, b in _runs(binary[:, spk]):
                start = max(0.0, center0 + a * self.frame_s - half)
                end = min(duration, center0 + (b - 1) * self.frame_s + half)
                if merged and start - merged[-1][1] < p.min_duration_off:
                    merged[-1][1] = end
                else:
                    merged.append([start, end])
            raw += [(s, e, spk) for s, e in merged if e > s and e - s >= p.min_duration_on]
        raw.sort()
        names: dict[int, str] = {}
        for _, _, spk in raw:
            names.setdefault(spk, f"SPEAKER_{len(names):02d}")
        return [Turn(round(s, 3), round(e, 3), names[spk]) for s, e, spk in raw]


def _unit_centroids(x: np.ndarray, labels: np.ndarray, clusters: list[int]) -> np.ndarray:
    """Normalised mean embedding of each listed cluster, shape (len(clusters), D)."""
    cents = np.stack([x[labels == c].mean(axis=0) for c in clusters])
    return cents / np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12)


def split_pieces(active: np.ndarray, gap: int, min_len: int) -> list[tuple[int, int]]:
    """Cut one local speaker's activity at pauses of `gap` frames or more; join pieces with
    less than `min_len` active frames to the neighbour across the shorter pause."""
    pieces: list[list[int]] = []
    for a, b in _runs(active):
        if pieces and a - pieces[-1][1] < gap:
            pieces[-1][1] = b
        else:
            pieces.append([a, b])
    while len(pieces) > 1:
        sizes = [int(active[a:b].sum()) for a, b in pieces]
        i = int(np.argmin(sizes))
        if sizes[i] >= min_len:
            break
        left = pieces[i][0] - pieces[i - 1][1] if i > 0 else None
        right = pieces[i + 1][0] - pieces[i][1] if i + 1 < len(pieces) else None
        j = i - 1 if right is None or (left is not None and left <= right) else i + 1
        lo, hi = min(i, j), max(i, j)
        pieces[lo] = [pieces[lo][0], pieces[hi][1]]
        del pieces[hi]
    return [(a, b) for a, b in pieces]


def _runs(active: np.ndarray) -> Iterator[tuple[int, int]]:
    """[start, end) index pairs of the nonzero runs of a vector."""
    edges = np.diff(np.concatenate(([0], (active != 0).astype(np.int8), [0])))
    yield from zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(),
                   strict=True)


def _as_mono_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """float32 mono 16 kHz; integer PCM is scaled, other rates are resampled."""
    x = np.asarray(audio)
    if x.ndim == 2 and 1 in x.shape:
        x = x.reshape(-1)
    if x.ndim != 1:
        raise ValueError(f"expected mono audio, got shape {x.shape}")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
    x = x.astype(np.float32, copy=False)
    if sample_rate != SAMPLE_RATE:
        from scipy.signal import resample_poly

        g = math.gcd(int(sample_rate), SAMPLE_RATE)
        x = resample_poly(x, SAMPLE_RATE // g, int(sample_rate) // g).astype(np.float32)
    return np.ascontiguousarray(x)
