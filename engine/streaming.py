"""The live transcription policy: VAD phrases, partial text while speaking, commit at pauses.

Measured choice (see `transcrevai bench --live`): a phrase is the speech up to a pause of
`end_silence_ms`. While it grows, it is decoded fast (beam 1, no word times) at most every
`partial_interval_s` for the partial line; when the pause arrives it is decoded once more
with the full settings and committed. Committed text never changes, so each phrase costs one
final decode and the delay after the speaker stops is the pause plus that decode. The
alternative, LocalAgreement over a growing buffer, commits only what two successive decodes
agree on, which needs a decode after the phrase ended anyway and costs more decodes per word.

Whisper invents text on silence and noise, so nothing reaches whisper that the VAD did not
call speech, and committed segments go through `clean_segments` (repeat loops, low
confidence, known subtitle credits).

Pure logic with the VAD injected: the transcription worker runs it on real models and tests
run it on synthetic speech marks.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from engine.config import LiveConfig
from engine.messages import SAMPLE_RATE, Segment

Vad = Callable[[np.ndarray], list[tuple[int, int]]]  # audio -> speech (start, end) samples
Pausing = Callable[[np.ndarray], bool]  # audio -> is the speaker silent at its very end?
# a soft cut falls at least this far before the buffer's end (0.7 s made every soft cut
# commit that much later: bench --live phrase p95 2.63 -> 2.03 s with 0.35 s, same WER)
SOFT_MARGIN = SAMPLE_RATE * 35 // 100


@dataclass(frozen=True)
class Decision:
    """What to do with the first `n` samples of the open buffer.

    skip: no speech; acknowledge and drop. partial: decode (fast) for the partial line, keep.
    commit: decode (full) as final text, acknowledge and drop.
    """

    kind: str  # "skip" | "partial" | "commit"
    n: int
    speech_end: int | None = None  # commit: where the VAD heard the last speech (samples)


class PhraseCutter:
    """Decides, for the open (not yet committed) audio of one live stream, what to do next."""

    def __init__(self, cfg: LiveConfig, vad: Vad, pausing: Pausing | None = None) -> None:
        self.cfg = cfg
        self.vad = vad
        # the VAD closes a phrase only after `end_silence_ms`; a partial decode started in
        # that wait would hold up the commit by up to a decode, so none starts in a pause
        self.pausing = pausing
        self.end_silence = int(cfg.end_silence_ms * SAMPLE_RATE / 1000)
        self.keep = SAMPLE_RATE // 2  # silence kept before speech (context for the decoder)
        self.last_partial_at = -1e9
        self.partial_upto = 0  # buffer length the last partial covered

    def decide(self, audio: np.ndarray, now: float, lag_s: float,
               final: bool = False) -> Decision | None:
        """The next step for `audio` (the open buffer) or None to wait for more audio."""
        n = len(audio)
        if n == 0:
            return None
        if n < SAMPLE_RATE // 4 and not final:
            return None
        speech = self.vad(audio)
        if not speech:
            if final:
                return Decision("skip", n)
            if n > self.keep + SAMPLE_RATE // 2:
                return Decision("skip", n - self.keep)
            return None
        first_start = speech[0][0]
        if first_start > self.keep + SAMPLE_RATE // 10:
            return Decision("skip", first_start - self.keep)
        behind = lag_s > self.cfg.catch_up_lag_s
        first_end = speech[0][1]
        closed = len(speech) > 1 or first_end < n - self.end_silence // 2
        pad = SAMPLE_RATE // 10  # the VAD's speech_pad_ms in the worker
        if final:
            return Decision("commit", n, max(speech[-1][1] - pad, speech[-1][0] + 1))
        if closed:
            cut = first_end if len(speech) == 1 else (first_end + speech[1][0]) // 2
            if behind and len(speech) > 1:
                # behind live: longer phrases, fewer fixed decode costs, to catch up
                limit = int(self.cfg.max_phrase_s * SAMPLE_RATE)
                closed_ends = [e for (_, e) in speech if e < n - self.end_silence // 2]
                fits = [e for e in closed_ends if e <= limit]
                if fits:
                    cut = fits[-1]
            self.partial_upto = 0
            cut = max(1, min(cut, n))
            ends = [e for (_, e) in speech if e <= cut]
            return Decision("commit", cut, max(1, (ends[-1] if ends else cut) - pad))
        if n - first_start >= int(self.cfg.soft_phrase_s * SAMPLE_RATE) and not behind:
            # a long phrase with no pause the VAD calls one: commit up to a short dip (a
            # breath between words) so its first words do not wait for the phrase's end
            soft = int(self.cfg.soft_phrase_s * SAMPLE_RATE)
            dip = quiet_dip(audio, first_start + soft // 2, n - SOFT_MARGIN, first_start)
            if dip is not None:
                self.partial_upto = 0
                return Decision("commit", dip, dip)
        if n - first_start >= int(self.cfg.max_phrase_s * SAMPLE_RATE):
            self.partial_upto = 0
            return Decision("commit", quietest_cut(audio, first_start + (n - first_start) // 2,
                                                   n - SAMPLE_RATE // 2))
        # none in the half second before the soft cut either: the commit would wait for it
        soft_in = int(self.cfg.soft_phrase_s * SAMPLE_RATE) - (n - first_start)
        if (not behind and now - self.last_partial_at >= self.cfg.partial_interval_s
                and not 0 < soft_in <= SAMPLE_RATE // 2
                and n - first_start >= SAMPLE_RATE // 2 and n > self.partial_upto
                and not trailing_pause(audio, first_start)
                and not (self.pausing is not None and self.pausing(audio))):
            self.last_partial_at = now
            self.partial_upto = n
            return Decision("partial", n)
        return None


def trailing_pause(audio: np.ndarray, speech_start: int, tail: int = SAMPLE_RATE * 3 // 20,
                   ratio: float = 0.1) -> bool:
    """Is the speaker (probably) pausing? The last 150 ms are far quieter than the phrase.

    A partial decode started now would likely still run when the pause turns out to end
    the phrase, and the commit would wait for it: skipping it saves up to a decode of delay.
    """
    if len(audio) - speech_start < 2 * tail:
        return False
    phrase = audio[speech_start:len(audio) - tail].astype(np.float64)
    last = audio[len(audio) - tail:].astype(np.float64)
    return float(np.mean(last * last)) < ratio * float(np.mean(phrase * phrase))


def quiet_dip(audio: np.ndarray, lo: int, hi: int, speech_start: int,
              ratio: float = 0.03, frame: int = SAMPLE_RATE // 50) -> int | None:
    """The latest nearly silent 20 ms frame in [lo, hi) (below `ratio` of the phrase's mean
    speech energy): a breath between words, where a cut splits no word. None if none."""
    lo, hi = max(0, lo), min(len(audio), hi)
    if hi - lo < frame:
        return None
    usable = (hi - lo) // frame * frame
    energy = np.square(audio[lo:lo + usable].astype(np.float64)).reshape(-1, frame).mean(axis=1)
    speech = audio[speech_start:hi].astype(np.float64)
    quiet = np.flatnonzero(energy < ratio * float(np.mean(speech * speech)))
    if not len(quiet):
        return None
    return lo + int(quiet[-1]) * frame + frame // 2


def quietest_cut(audio: np.ndarray, lo: int, hi: int, frame: int = SAMPLE_RATE // 50) -> int:
    """The middle of the quietest 20 ms frame in [lo, hi): where a forced cut splits least."""
    lo, hi = max(0, lo), min(len(audio), hi)
    if hi - lo < frame:
        return max(1, hi)
    usable = (hi - lo) // frame * frame
    energy = np.square(audio[lo:lo + usable].astype(np.float64)).reshape(-1, frame).sum(axis=1)
    return lo + int(np.argmin(energy)) * frame + frame // 2


# Texts whisper produces from silence or noise (subtitle credits of its training data).
_CREDITS = (
    "legendas pela comunidade amara org", "legendado por", "legendas por",
    "obrigado por assistir", "inscreva se no canal", "transcricao e legendas",
    "subtitles by the amara org community", "thanks for watching", "legenda adriana zanotto",
)


def _plain(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(re.findall(r"[a-z0-9]+", text))


def collapse_repeats(text: str, min_repeats: int = 3, max_n: int = 6) -> str:
    """Cut word n-gram loops ("é o que é o que é o que ...") down to one occurrence."""
    words = text.split()
    n = 1
    while n <= max_n:
        i, out, changed = 0, [], False
        while i < len(words):
            gram = [w.lower().strip(".,!?") for w in words[i:i + n]]
            reps = 1
            while ([w.lower().strip(".,!?") for w in words[i + reps * n:i + (reps + 1) * n]]
                   == gram and len(gram) == n):
                reps += 1
            if reps >= min_repeats:
                out.extend(words[i:i + n])
                i += reps * n
                changed = True
            else:
                out.append(words[i])
                i += 1
        words = out
        n = 1 if changed else n + 1
        if changed and len(words) < 2:
            break
    return " ".join(words)


def clean_segments(segments: Sequence[Segment],
                   dropped: list[tuple[str, str]] | None = None) -> list[Segment]:
    """Drop what is most likely not speech; cut repetition loops of the rest.

    `dropped` collects (filter, text) of what each filter removed, so a benchmark can show
    whether a filter eats real speech.
    """
    out: list[Segment] = []
    for seg in segments:
        plain = _plain(seg.text)
        if not plain:
            continue
        why = ("no_speech" if seg.no_speech_prob > 0.6 and seg.avg_logprob < -0.7
               else "low_logprob" if seg.avg_logprob < -1.5
               else "credits" if any(c in plain for c in _CREDITS) else None)
        if why is not None:  # no_speech: the model says it heard none and is unsure
            if dropped is not None:
                dropped.append((why, seg.text))
            continue
        text = collapse_repeats(seg.text)
        if text != seg.text:
            if dropped is not None:
                cut = seg.text.split()[len(text.split()):]
                dropped.append(("repeats", " ".join(cut)))
            kept = len(text.split())
            words = seg.words[:kept] if seg.words else seg.words
            end = words[-1].end if words else seg.end
            seg = Segment(seg.start, end, text, words, seg.speaker, seg.avg_logprob,
                          seg.no_speech_prob, seg.language)
        out.append(seg)
    return out
