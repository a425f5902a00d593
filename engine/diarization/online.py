"""Live (streaming) speaker diarization on the offline diarizer's two ONNX models.

For a microphone session the offline pass (pipeline.py) cannot label speech until the end;
this module labels it a second or so after it was spoken, in the spirit of diart (rolling
window + incremental clustering), written for this project:

1. Every ``step_s`` of new audio, segmentation-3.0 runs on the latest ``window_s`` of the
   stream (zero padded at the start). Its frames lie on the same global ~17 ms grid as the
   offline pipeline's, so a frame has one index for the whole session.
2. Frames older than ``latency_s`` behind the stream end and not yet settled are *settled*
   now: the model saw them with that much right context. Each local speaker's activity is cut
   at pauses into pieces (as offline: one local label may hold two voices across a pause);
   the pieces that touch the settle region are labelled.
3. A piece that continues one piece of the previous window (one-to-one, most shared speech
   frames) inherits its global speaker and embedding; a piece is (re-)embedded with CAM++
   only when it is new or its speech has grown by ``regrow``, which keeps CPU small (speaker
   changes cost an embedding, long turns a few). A piece without a new embedding keeps its
   speaker. The others pick the most similar global centroid (cosine, ``continuity_bonus``
   for the speaker they had), most confident first, never the speaker of a piece of another
   local speaker talking at the same time. Below ``delta_new`` a piece with ``min_new_s`` of
   speech founds a new speaker; a shorter one is assigned tentatively (or left unlabelled if
   it talks over every known speaker) and decides once it has enough speech. A centroid is
   the speech-weighted mean of the latest embedding of each piece assigned to it (a
   re-embedded piece replaces its earlier share, and is judged against its speaker without
   that share, so a speaker founded on a short or overlapped first embedding is refined
   rather than duplicated).
4. Settled frames become turns. Pauses shorter than ``min_duration_off`` are bridged when the
   window shows the same local speaker resuming, so long turns come out as contiguous pieces
   of about one step each; each stretch of audio is labelled exactly once.

``relabel_stable`` maps the labels of a later offline pass onto the live ones so that names
the user gave to live speakers survive the refinement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from engine.diarization.features import FRAME_LENGTH as FBANK_LENGTH
from engine.diarization.features import FRAME_SHIFT as FBANK_SHIFT
from engine.diarization.features import fbank
from engine.diarization.pipeline import (
    _POWERSET,
    NUM_LOCAL,
    SAMPLE_RATE,
    SEG_CENTER,
    SEG_FIELD,
    SEG_STEP,
    _runs,
    _session,
    split_pieces,
)
from engine.messages import SpeakerTurn

# Global frame g covers samples [g * SEG_STEP + _FRAME_LO, g * SEG_STEP + _FRAME_LO + SEG_STEP)
# of the stream (centre g * SEG_STEP + SEG_CENTER), the same grid as the offline pipeline.
_FRAME_LO = int(SEG_CENTER) - SEG_STEP // 2


@dataclass(frozen=True)
class OnlineParams:
    """Tunable settings; defaults measured on the dev corpus (``python -m
    engine.diarization.online --corpus ...``) and chosen in the middle of the good range.

    window_s: segmentation window (context the model sees); segmentation CPU ~ window / step.
    step_s: how often a window is processed (rounded to whole ~17 ms frames).
    latency_s: frames are settled once the stream is this far past them (right context).
    split_gap_s / min_piece_s: a local speaker's activity is cut into pieces at pauses of at
        least split_gap_s; pieces with less speech than min_piece_s join a neighbour.
    min_embedding_s: clean (non-overlapped) speech a piece needs for its own embedding;
        below, all its speech (or the local speaker's whole window) is used.
    max_embedding_s: at most this much (the newest) speech goes into one CAM++ call.
    regrow: a piece is embedded again once its speech has grown by this factor.
    delta_new: a piece less similar than this (cosine) to every speaker founds a new one ...
    min_new_s: ... if it has this much speech (shorter ones are assigned tentatively and
        decide when re-embedded), unless talking over every known speaker forces it.
    continuity_bonus: added to the similarity of the speaker a piece had in the last window.
    continuity: a piece continues a piece of the last window if this fraction of the speech
        of each (on the frames both windows saw) is shared.
    min_update_s: speech an embedding needs to move a centroid.
    min_duration_off: shorter pauses of one speaker are bridged.
    """

    window_s: float = 5.0
    step_s: float = 0.5
    latency_s: float = 1.0
    split_gap_s: float = 0.25
    min_piece_s: float = 0.3
    min_embedding_s: float = 0.25
    max_embedding_s: float = 3.0
    regrow: float = 2.0
    delta_new: float = 0.4
    min_new_s: float = 1.0
    continuity_bonus: float = 0.2
    continuity: float = 0.5
    min_update_s: float = 0.5
    min_duration_off: float = 0.5


@dataclass
class _Track:
    """A piece as last seen: its speech frames (global indices), speaker and embedding."""

    frames: np.ndarray
    local: int = -1  # local speaker in its window
    speaker: int = -1
    vector: np.ndarray | None = None
    embedded: int = 0  # speech frames behind ``vector``
    contribution: int = -1  # key in OnlineDiarizer._contrib, -1 if none
    fresh: bool = False  # embedded in the current step
    tentative: bool = False  # speaker chosen on too little speech to be sure


@dataclass
class _Speaker:
    total: np.ndarray  # speech-weighted sum of unit embeddings
    weight: float = 0.0

    def centroid(self) -> np.ndarray:
        return self.total / max(float(np.linalg.norm(self.total)), 1e-12)


@dataclass
class _Piece:
    local: int
    start: int  # window frames [start, end)
    end: int
    mask: np.ndarray = field(repr=False)  # activity over the window frames
    track: _Track | None = None


class OnlineDiarizer:
    """Streaming diarizer for one session: feed audio blocks, receive settled speaker turns."""

    def __init__(
        self,
        segmentation_path: Path,
        embedding_path: Path,
        params: OnlineParams = OnlineParams(),  # noqa: B008 - frozen, so shared is safe
        threads: int = 1,
    ) -> None:
        if params.window_s < params.latency_s + params.step_s + 1.0:
            raise ValueError("window_s must exceed latency_s + step_s by at least 1 s")
        self.params = params
        self._seg = _session(Path(segmentation_path), threads)
        self._emb = _session(Path(embedding_path), threads)
        self._seg_in = self._seg.get_inputs()[0].name
        self._emb_in = self._emb.get_inputs()[0].name
        self.frame_s = SEG_STEP / SAMPLE_RATE
        self.window = max(SEG_FIELD, int(round(params.window_s * SAMPLE_RATE)))
        self.window_frames = (self.window - SEG_FIELD) // SEG_STEP + 1
        self.step = max(1, int(round(params.step_s / self.frame_s))) * SEG_STEP
        self.latency = int(round(params.latency_s * SAMPLE_RATE))
        self.reset()

    def reset(self) -> None:
        """Forget the session (a new stream); the loaded ONNX sessions are kept, since
        creating them anew per recording grew the worker's RSS by tens of MB each time."""
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # stream sample index of _buf[0]
        self._n = 0  # samples fed so far
        self._last_run = 0  # stream end of the last processed window
        self._settled = 0  # frames [0, _settled) are settled
        self._done = False
        self._tracks: list[_Track] = []
        self._prev_end = 0  # global frame after the last window's frames
        self._speakers: list[_Speaker] = []
        self._contrib: dict[int, tuple[int, np.ndarray, float]] = {}  # id -> speaker, vec, w
        self._next_contrib = 0
        self._names: dict[int, str] = {}
        self._last_end: dict[int, int] = {}  # speaker -> frame after its last emitted frame

    def restart(self) -> None:
        """Start again at a new place in the same recording (a replay seeked): the audio
        position and open tracks go, the voices heard so far and their names stay, so a
        speaker met again gets the label it had."""
        speakers, names = self._speakers, self._names
        self.reset()
        self._speakers, self._names = speakers, names

    # ------------------------------------------------------------------ public API
    @property
    def processed_s(self) -> float:
        """Audio time up to which turns are settled (final)."""
        if self._done:
            return self._n / SAMPLE_RATE
        if self._settled == 0:
            return 0.0
        # exact (turn times are rounded to 1 ms and may pass it by up to 0.5 ms)
        return min(self._n, self._settled * SEG_STEP + _FRAME_LO) / SAMPLE_RATE

    @property
    def samples_fed(self) -> int:
        """Samples given to feed() so far (a restarted worker offsets its turns by this)."""
        return self._n

    def feed(self, samples: np.ndarray) -> list[SpeakerTurn]:
        """Append 16 kHz mono audio; returns the turns settled by it (often none), so that a
        live view can label speech about ``latency_s`` + ``step_s`` after it was spoken."""
        if self._done:
            raise RuntimeError("feed() after flush()")
        x = np.asarray(samples).reshape(-1)
        if np.issubdtype(x.dtype, np.integer):  # PCM: scale to [-1, 1]
            x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
        x = x.astype(np.float32, copy=False)
        self._buf = np.concatenate([self._buf, x]) if self._buf.size else x.copy()
        self._n += x.shape[0]
        out: list[SpeakerTurn] = []
        while self._n - self._last_run >= self.step:
            # One window per step; with small blocks the window ends at the newest sample.
            end = self._n if self._n - self._last_run < 2 * self.step else (
                self._last_run + self.step)
            out += self._process(end, final=False)
            self._last_run = end
        self._trim()
        return out

    def flush(self) -> list[SpeakerTurn]:
        """End of stream: settle the frames still held back for right context."""
        if self._done:
            return []
        out = self._process(self._n, final=True) if self._n >= SEG_FIELD else []
        self._done = True
        self._buf = np.zeros(0, dtype=np.float32)
        return out

    def voices(self, min_s: float) -> dict[str, np.ndarray]:
        """Each labelled speaker's voice so far (unit centroid), once it rests on `min_s`
        seconds of speech: what a live session matches against voice profiles."""
        return {self._names[c]: sp.centroid() for c, sp in enumerate(self._speakers)
                if c in self._names and sp.weight >= min_s}

    @property
    def num_speakers(self) -> int:
        """Speakers that have been given a label so far."""
        return len(self._names)

    # ------------------------------------------------------------------ internals
    def _trim(self) -> None:
        """Keep only the audio the next windows can still need."""
        keep_from = self._n - self.window - 2 * self.step
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start :]
            self._buf_start = keep_from

    def _window_audio(self, start: int) -> np.ndarray:
        out = np.zeros(self.window, dtype=np.float32)
        lo = max(start, self._buf_start)
        hi = min(start + self.window, self._buf_start + self._buf.shape[0])
        if hi > lo:
            out[lo - start : hi - start] = self._buf[lo - self._buf_start : hi - self._buf_start]
        return out

    def _frames(self, seconds: float) -> int:
        return int(np.ceil(seconds / self.frame_s - 1e-9))

    def _process(self, end: int, final: bool) -> list[SpeakerTurn]:
        """Segment the window ending at stream sample ``end`` and settle what it allows."""
        start = ((end - self.window) // SEG_STEP) * SEG_STEP  # on the global frame grid
        g0 = start // SEG_STEP
        nfr = self.window_frames
        # Settle frames whose centre is at least `latency` behind the end (all at the end).
        limit = end if final else end - self.latency
        upto = min(g0 + nfr, (limit - int(SEG_CENTER)) // SEG_STEP + 1)
        if upto <= self._settled:
            return []
        lo_f = max(0, self._settled - g0)  # settle region in window frames [lo_f, hi_f)
        hi_f = upto - g0
        wav = self._window_audio(start)
        log_probs = self._seg.run(None, {self._seg_in: wav[None, None]})[0]
        act = _POWERSET[np.argmax(log_probs[0, :nfr], axis=-1)].astype(bool)
        if g0 < 0:  # frames before the stream start (padding) hold nobody
            act[: min(nfr, -g0)] = False
        pieces = self._pieces(act, lo_f, hi_f)
        self._match_tracks(pieces, g0)
        feats = _LazyFbank(wav)
        alone = act.sum(axis=1) == 1
        for pc in pieces:
            self._maybe_embed(pc, act, alone, feats)
        self._assign(pieces)
        for pc in pieces:
            assert pc.track is not None
            pc.track.frames = (np.flatnonzero(pc.mask) + g0).astype(np.int64)
        self._tracks = [pc.track for pc in pieces if pc.track is not None]
        self._prev_end = g0 + nfr
        # shares of ended pieces stay in their centroids for good; forget their bookkeeping
        alive = {t.contribution for t in self._tracks}
        self._contrib = {k: v for k, v in self._contrib.items() if k in alive}
        turns = self._emit(pieces, act, lo_f, hi_f, g0, end if final else None)
        self._settled = upto
        return turns

    def _pieces(self, act: np.ndarray, lo_f: int, hi_f: int) -> list[_Piece]:
        """Pieces (cut at pauses) of each local speaker that talk in the settle region."""
        gap = self._frames(self.params.split_gap_s)
        min_len = self._frames(self.params.min_piece_s)
        out: list[_Piece] = []
        for k in range(NUM_LOCAL):
            active = act[:, k]
            spans = split_pieces(active, gap, min_len)
            for a, b in spans:
                mask = np.zeros_like(active)
                mask[a:b] = active[a:b]
                if mask[lo_f:hi_f].any():
                    out.append(_Piece(k, a, b, mask))
        return out

    def _match_tracks(self, pieces: list[_Piece], g0: int) -> None:
        """Each piece continues at most one piece of the previous window, one it shares most
        speech with (one-to-one: two local speakers talking over each other stay apart)."""
        gain = np.zeros((len(pieces), len(self._tracks)))
        for i, pc in enumerate(pieces):
            frames = np.flatnonzero(pc.mask) + g0
            mine = int((frames < self._prev_end).sum())
            for j, tr in enumerate(self._tracks):
                if tr.frames.size == 0 or tr.frames[-1] < frames[0] or tr.frames[0] > frames[-1]:
                    continue
                common = np.intersect1d(tr.frames, frames, assume_unique=True).shape[0]
                # on the frames both windows saw, most speech of each must be shared (a piece
                # the last window merged with another voice does not continue it)
                theirs = int((tr.frames >= g0).sum())
                if common >= self.params.continuity * max(1, mine, theirs):
                    gain[i, j] = common + (0.5 if tr.local == pc.local else 0.0)
        rows, cols = linear_sum_assignment(-gain) if gain.size else ([], [])
        for pc in pieces:
            pc.track = _Track(frames=np.zeros(0, dtype=np.int64), local=pc.local)
        for i, j in zip(rows, cols, strict=True):
            if gain[i, j] <= 0:
                continue
            old = self._tracks[j]
            pieces[i].track = _Track(
                frames=old.frames, local=pieces[i].local, speaker=old.speaker,
                vector=old.vector, embedded=old.embedded, contribution=old.contribution,
                tentative=old.tentative)

    def _maybe_embed(
        self, pc: _Piece, act: np.ndarray, alone: np.ndarray, feats: _LazyFbank
    ) -> None:
        """(Re-)embed a piece that is new or whose speech has grown enough."""
        p = self.params
        tr = pc.track
        assert tr is not None
        used = pc.mask & alone
        min_frames = self._frames(p.min_embedding_s)
        if used.sum() < min_frames:
            used = pc.mask
        if used.sum() < min_frames and tr.vector is None:
            # too little of its own: borrow the local speaker's clean speech in the window
            whole = act[:, pc.local] & alone
            used = whole if whole.sum() >= min_frames else act[:, pc.local]
        count = int(used.sum())
        min_new = self._frames(p.min_new_s)
        if tr.vector is not None and not (tr.tentative and tr.embedded < min_new <= count) and (
            count < p.regrow * tr.embedded
            or tr.embedded >= self._frames(p.max_embedding_s)
        ):
            return  # a tentative piece decides as soon as it has enough speech
        vec = self._embed(feats, used)
        if vec is None:
            return
        tr.vector = vec
        tr.embedded = count
        tr.fresh = True

    def _embed(self, feats: _LazyFbank, used: np.ndarray) -> np.ndarray | None:
        """Unit CAM++ embedding of the fbank frames under the used segmentation frames."""
        f, to_seg = feats.get()
        idx = np.flatnonzero(used[np.clip(to_seg, 0, used.shape[0] - 1)])
        if idx.shape[0] < 2:
            return None
        cap = max(2, int(self.params.max_embedding_s * 100))
        idx = idx[-cap:]
        x = f[idx]
        x = x - x.mean(axis=0, keepdims=True)
        vec = self._emb.run(None, {self._emb_in: x[None]})[0][0]
        norm = float(np.linalg.norm(vec))
        if not norm > 0.0:
            return None
        return (vec / norm).astype(np.float32)

    def _assign(self, pieces: list[_Piece]) -> None:
        """Global speaker per piece: most confident first, never the speaker of a co-talking
        piece of another local speaker; a piece with enough speech below delta_new founds a
        new speaker, a shorter one is assigned tentatively (no bonus, no centroid update)."""
        p = self.params
        live = [i for i, s in enumerate(self._speakers) if s.weight > 0]
        cents = (np.stack([self._speakers[i].centroid() for i in live]) if live
                 else np.zeros((0, 1), dtype=np.float32))
        scores: list[np.ndarray] = []
        for pc in pieces:
            tr = pc.track
            assert tr is not None
            if tr.vector is None or not live:
                s = np.zeros(len(live), dtype=np.float32)
            else:
                s = (cents @ tr.vector).astype(np.float32)
            if tr.contribution >= 0 and tr.vector is not None:
                # judge the piece against its speaker without its own share; a speaker only
                # this piece founded scores just delta_new: the piece moves to another speaker
                # only if clearly similar (its better embedding then replaces the old share)
                spk, vec, w = self._contrib[tr.contribution]
                rest = self._speakers[spk].total - w * vec
                norm = float(np.linalg.norm(rest))
                own = live.index(spk)
                if self._speakers[spk].weight - w <= 1e-6 or norm <= 1e-6:
                    s[own] = p.delta_new
                else:
                    s[own] = float(rest @ tr.vector) / norm
            if tr.speaker in live and not tr.tentative:
                # no new embedding, no new evidence: keep the speaker (unless a co-talking
                # piece claims it); with one, the speaker it had gets a small bonus
                s[live.index(tr.speaker)] += p.continuity_bonus if tr.fresh else 2.0
            scores.append(s)
        order = sorted(range(len(pieces)),
                       key=lambda i: -float(scores[i].max()) if scores[i].size else 0.0)
        done: list[int] = []
        min_new = self._frames(p.min_new_s)
        for i in order:
            pc, tr = pieces[i], pieces[i].track
            assert tr is not None
            taken = {pieces[j].track.speaker for j in done  # type: ignore[union-attr]
                     if pieces[j].local != pc.local and bool((pieces[j].mask & pc.mask).any())}
            free = [c for c in np.argsort(-scores[i]).tolist() if live[c] not in taken]
            enough = tr.vector is not None and tr.embedded >= min_new
            if free and (scores[i][free[0]] >= p.delta_new or not enough):
                choice = live[free[0]]
                tr.tentative = not enough and scores[i][free[0]] < p.delta_new
            elif not enough:
                # talks over every known speaker but too briefly to found one: unlabelled
                # until it has enough speech (a spurious speaker would cost more)
                choice, tr.tentative = -1, True
            else:
                assert tr.vector is not None  # enough
                choice, tr.tentative = len(self._speakers), False
                self._speakers.append(_Speaker(total=np.zeros_like(tr.vector)))
                live.append(choice)
                vec = tr.vector
                scores = [  # later pieces of this step can join the new speaker
                    np.append(s, -1.0 if o.track is None or o.track.vector is None
                              else float(o.track.vector @ vec))
                    for s, o in zip(scores, pieces, strict=True)]
            tr.speaker = choice
            if choice >= 0 and (tr.fresh or tr.contribution < 0 or
                                self._contrib[tr.contribution][0] != choice):
                self._contribute(tr)
            done.append(i)

    def _contribute(self, tr: _Track) -> None:
        """Replace the track's share in a centroid by its current embedding and speaker."""
        if tr.contribution >= 0:
            spk, vec, old_w = self._contrib.pop(tr.contribution)
            self._speakers[spk].total -= old_w * vec
            self._speakers[spk].weight -= old_w
            if self._speakers[spk].weight <= 1e-6:
                self._speakers[spk].weight = 0.0
                self._speakers[spk].total[:] = 0.0
            tr.contribution = -1
        speaker = self._speakers[tr.speaker]
        w = tr.embedded * self.frame_s
        if tr.vector is None or (speaker.weight > 0 and (
                tr.tentative or w < self.params.min_update_s)):
            return
        key = self._next_contrib
        self._next_contrib += 1
        self._contrib[key] = (tr.speaker, tr.vector, w)
        speaker.total += w * tr.vector
        speaker.weight += w
        tr.contribution = key

    def _emit(
        self, pieces: list[_Piece], act: np.ndarray, lo_f: int, hi_f: int, g0: int,
        final_end: int | None,
    ) -> list[SpeakerTurn]:
        """Turns for the settle region, bridging short pauses of one speaker."""
        nfr = act.shape[0]
        num = len(self._speakers)
        binary = np.zeros((nfr, max(num, 1)), dtype=bool)
        for pc in pieces:
            tr = pc.track
            if tr is not None and tr.speaker >= 0:
                binary[:, tr.speaker] |= pc.mask
        bridge = self._frames(self.params.min_duration_off)
        for pc in pieces:  # a pause whose resumption by the same local speaker is visible
            tr = pc.track
            if tr is None or tr.speaker < 0:
                continue
            nxt = np.flatnonzero(act[pc.end :, pc.local])
            if nxt.size and nxt[0] < bridge:
                binary[pc.end : pc.end + int(nxt[0]), tr.speaker] = True
        out: list[SpeakerTurn] = []
        r0 = g0 + lo_f  # global index of the first frame to settle
        for c in range(num):
            col = binary[:, c]
            runs = list(_runs(col))
            for (_, b), (a, _) in zip(runs[:-1], runs[1:], strict=True):
                if a - b < bridge:
                    col[b:a] = True
            last = self._last_end.get(c)  # a pause that began before this region
            if runs and last is not None:
                first = next((a for a, b in runs if b > lo_f), None)
                if first is not None and first > lo_f and g0 + first - last < bridge:
                    col[lo_f:first] = True
            for a, b in _runs(col[lo_f:hi_f]):
                ga, gb = r0 + a, r0 + b
                s = max(0, ga * SEG_STEP + _FRAME_LO)
                e = gb * SEG_STEP + _FRAME_LO
                if final_end is not None:
                    e = min(e, final_end)
                if e <= s:
                    continue
                name = self._names.setdefault(c, f"SPEAKER_{len(self._names):02d}")
                out.append(SpeakerTurn(round(s / SAMPLE_RATE, 3), round(e / SAMPLE_RATE, 3),
                                       name))
                self._last_end[c] = gb
        out.sort(key=lambda t: (t.start, t.speaker))
        return out


class _LazyFbank:
    """Fbank of a window computed on first use, with each fbank frame's segmentation frame."""

    def __init__(self, wav: np.ndarray) -> None:
        self._wav = wav
        self._cache: tuple[np.ndarray, np.ndarray] | None = None

    def get(self) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is None:
            f = fbank(self._wav)
            centers = np.arange(f.shape[0]) * FBANK_SHIFT + FBANK_LENGTH / 2
            to_seg = np.rint((centers - SEG_CENTER) / SEG_STEP).astype(np.int64)
            self._cache = (f, to_seg)
        return self._cache


# ---------------------------------------------------------------------- relabelling
def relabel_stable(live: list[SpeakerTurn], offline: list[SpeakerTurn]) -> dict[str, str]:
    """Map each offline speaker label to a live label by maximal time overlap (Hungarian on
    the overlap matrix), so names given to live speakers survive an offline refinement.
    Offline speakers without overlapping live speech (or beyond the live count) get fresh
    labels that no live speaker uses."""
    live_labels = sorted({t.speaker for t in live})
    off_labels = sorted({t.speaker for t in offline})
    overlap = np.zeros((len(off_labels), len(live_labels)))
    li = {s: i for i, s in enumerate(live_labels)}
    oi = {s: i for i, s in enumerate(off_labels)}
    for o in offline:
        for t in live:
            d = min(o.end, t.end) - max(o.start, t.start)
            if d > 0:
                overlap[oi[o.speaker], li[t.speaker]] += d
    mapping: dict[str, str] = {}
    if overlap.size:
        rows, cols = linear_sum_assignment(-overlap)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            if overlap[r, c] > 0:
                mapping[off_labels[r]] = live_labels[c]
    used = set(live_labels) | set(mapping.values())
    n = 0
    for s in off_labels:  # in label order, so the result does not depend on turn order
        if s in mapping:
            continue
        while f"SPEAKER_{n:02d}" in used:
            n += 1
        mapping[s] = f"SPEAKER_{n:02d}"
        used.add(mapping[s])
    return mapping
