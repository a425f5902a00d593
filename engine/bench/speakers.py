"""`transcrevai bench --speakers`: how well voice profiles name people, on a corpus.

Each identity of the manifest (`speakers` of each clip, turns from the clip's RTTM when it has
several voices) is enrolled from its other recordings (leave one out: the reference turns of
that identity, as a user would pick the right speaker to enrol) and tested on the held-out
recording through the product's own path: the diarizer finds the speakers there, each gets a
voice over its clean turns, and `recognise` names them at the threshold.

Scores for the ROC: every diarized speaker against every profile. Genuine when the speaker's
reference identity (most overlap) is the profile's; impostor when it is another person's.
Identities named after a recording rather than a person (corpus ids with "unknown", or from
one source) may be one person, so pairs from the same source are left out of the impostor
set and shown apart ("unverified"). The operating point is the lowest threshold with no
false accept, plus a margin; `[voices] threshold` should be it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.audio.source import read_audio
from engine.bench.corpus import load_corpus
from engine.config import Config
from engine.messages import SAMPLE_RATE, SpeakerTurn
from engine.scoring import read_rttm
from engine.voices import (
    Embedder,
    Profile,
    clean_spans,
    recognise,
    session_voices,
    speech_spans,
)

MARGIN = 0.05  # above the highest impostor score: the operating point


def source_of(identity: str) -> str:
    """The dataset an identity comes from (the id's first word): only across sources are
    two ids known to be two people."""
    return identity.split("_")[0]


@dataclass
class Recording:
    clip: str
    audio: np.ndarray
    ref: list[SpeakerTurn]  # reference turns (a one-voice clip: its speech, that voice)
    hyp: list[SpeakerTurn] = field(default_factory=list)
    voices: dict[str, np.ndarray] = field(default_factory=dict)  # diarized label -> voice
    identity_of: dict[str, str] = field(default_factory=dict)  # diarized label -> reference


def _identity_of(hyp: list[SpeakerTurn], ref: list[SpeakerTurn]) -> dict[str, str]:
    overlap: dict[tuple[str, str], float] = {}
    for h in hyp:
        for r in ref:
            o = min(h.end, r.end) - max(h.start, r.start)
            if o > 0:
                overlap[(h.speaker, r.speaker)] = overlap.get((h.speaker, r.speaker), 0.0) + o
    out: dict[str, str] = {}
    for (label, ident), _ in sorted(overlap.items(), key=lambda kv: -kv[1]):
        out.setdefault(label, ident)
    return out


def _load(corpus: Path, clips: list[dict[str, Any]]) -> list[Recording]:
    out = []
    for clip in clips:
        if clip.get("synthetic") or not clip.get("speakers"):
            continue
        audio = read_audio(corpus / clip["file"])
        if clip.get("rttm"):
            ref = read_rttm(corpus / clip["rttm"])
        elif len(clip["speakers"]) == 1:
            ref = [SpeakerTurn(a, b, clip["speakers"][0]) for a, b in speech_spans(audio)]
        else:
            continue  # several voices and no turns: nothing to attribute
        out.append(Recording(clip["id"], audio, ref))
    return out


def _profile(embedder: Embedder, identity: str, recs: list[Recording]) -> Profile | None:
    total, seconds = None, 0.0
    for r in recs:
        vec, used = embedder.voice(r.audio, clean_spans(r.ref, identity))
        if vec is not None:
            total = vec * used if total is None else total + vec * used
            seconds += used
    if total is None:
        return None
    return Profile(identity, (total / float(np.linalg.norm(total))).astype(np.float32), seconds)


def _roc(genuine: list[float], impostor: list[float]) -> tuple[list[dict[str, float]], float]:
    """False accept / false reject rates over thresholds; the equal error rate."""
    rows, eer, best = [], 1.0, 2.0
    for t in np.round(np.arange(-0.2, 1.0001, 0.05), 2):
        far = float(np.mean([s >= t for s in impostor])) if impostor else 0.0
        frr = float(np.mean([s < t for s in genuine])) if genuine else 0.0
        rows.append({"threshold": float(t), "far": far, "frr": frr})
        if abs(far - frr) < best:
            best, eer = abs(far - frr), (far + frr) / 2
    return rows, eer


def run_speakers_bench(cfg: Config, args: argparse.Namespace) -> int:
    loaded = load_corpus(args)
    if loaded is None:
        return 2
    corpus, clips = loaded
    from engine.diarization.pipeline import DiarizationParams, Diarizer
    from engine.models.registry import diarization_paths

    seg, emb = diarization_paths(cfg.paths.models_dir)
    diarizer = Diarizer(seg, emb, DiarizationParams(), threads=cfg.diarization.threads)
    embedder = Embedder(emb, cfg.diarization.threads)
    recs = _load(corpus, clips)
    for r in recs:
        turns = diarizer(r.audio, SAMPLE_RATE)
        r.hyp = [SpeakerTurn(t.start, t.end, t.speaker) for t in turns]
        r.voices = session_voices(embedder, r.audio, r.hyp)
        r.identity_of = _identity_of(r.hyp, r.ref)
    holders: dict[str, list[Recording]] = {}
    for r in recs:
        for ident in dict.fromkeys(t.speaker for t in r.ref):
            holders.setdefault(ident, []).append(r)
    min_s = cfg.voices.min_enrol_s
    threshold = cfg.voices.threshold
    genuine: list[float] = []
    impostor: list[float] = []
    unverified: list[float] = []
    enrolled: list[dict[str, Any]] = []
    named_turns = enrolled_turns = false_names = unverified_names = 0
    false_detail: list[str] = []
    for r in recs:
        # the profiles a user would hold when this recording comes: every identity enrolled
        # from its other recordings, when those hold enough clean speech
        profiles = []
        for ident, have in holders.items():
            others = [o for o in have if o is not r]
            p = _profile(embedder, ident, others) if others else None
            if p is not None and p.seconds >= min_s:
                profiles.append(p)
        present = {t.speaker for t in r.ref}
        for label, voice in r.voices.items():
            truth = r.identity_of.get(label)
            for p in profiles:
                score = float(np.dot(voice, p.vector))
                if truth == p.name:
                    genuine.append(score)
                elif truth is not None and source_of(truth) != source_of(p.name):
                    impostor.append(score)
                else:
                    unverified.append(score)
        names = {m.speaker: m.name for m in recognise(r.voices, profiles, threshold)}
        for label, name in names.items():
            truth = r.identity_of.get(label)
            if truth == name:
                continue
            known = truth is not None and source_of(truth) != source_of(name)
            false_names += known
            unverified_names += not known
            false_detail.append(f"{r.clip}: {label} ({truth}) named {name}"
                                + ("" if known else " (same source: may be one person)"))
        held = {p.name for p in profiles} & present
        for t in r.ref:
            if t.speaker not in held:
                continue
            enrolled_turns += 1
            best = max(r.hyp, key=lambda h: min(h.end, t.end) - max(h.start, t.start),
                       default=None)
            if best is not None and names.get(best.speaker) == t.speaker:
                named_turns += 1
        if held:
            enrolled.append({"clip": r.clip, "enrolled_present": sorted(held),
                             "named": names})
    roc, eer = _roc(genuine, impostor)
    point = round(max(impostor, default=0.0) + MARGIN, 2)
    share = named_turns / enrolled_turns if enrolled_turns else None
    doc = {
        "threshold_in_use": threshold, "operating_point": point, "eer": round(eer, 4),
        "genuine": len(genuine), "impostor": len(impostor), "unverified": len(unverified),
        "genuine_min": round(min(genuine), 3) if genuine else None,
        "impostor_max": round(max(impostor), 3) if impostor else None,
        "unverified_max": round(max(unverified), 3) if unverified else None,
        "false_names": false_names, "unverified_names": unverified_names,
        "false_name_detail": false_detail,
        "enrolled_turns": enrolled_turns, "named_turns": named_turns,
        "named_share": round(share, 4) if share is not None else None,
        "min_enrol_s": min_s, "roc": roc, "clips": enrolled,
    }
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    out = sys.stdout
    print(f"voice profiles on {corpus} ({len(recs)} recordings; each identity enrolled from "
          f"its other recordings, >= {min_s:g} s of clean speech)", file=out)
    print(f"trials: genuine {len(genuine)} (min score {doc['genuine_min']}), impostor "
          f"{len(impostor)} (max {doc['impostor_max']}), same-source unverified "
          f"{len(unverified)} (max {doc['unverified_max']})", file=out)
    print("threshold   FAR     FRR", file=out)
    for row in roc:
        print(f"{row['threshold']:>8.2f}  {row['far']:6.1%}  {row['frr']:6.1%}", file=out)
    print(f"EER {eer:.1%}; operating point (no false accept + {MARGIN}) {point}; "
          f"in use ({'[voices] threshold'}) {threshold}", file=out)
    print(f"at {threshold}: false names {false_names} (and {unverified_names} between ids of "
          f"one source, unverified); turns of enrolled speakers named "
          f"{named_turns}/{enrolled_turns}"
          + (f" ({share:.1%})" if share is not None else ""), file=out)
    for line in false_detail:
        print(f"  named otherwise: {line}", file=out)
    return 0
