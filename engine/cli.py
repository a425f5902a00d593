"""`transcrevai` command line.

Every failure a user can cause (a bad file, a bad config, a broken model) ends in one line on
stderr and a non-zero exit; details of unexpected errors go to the log, not the terminal.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from engine.audio.paths import AudioFileError, check_file
from engine.config import PROJECT_ROOT, Config, ConfigError, check_paths, load_config
from engine.export import EXPORT_FORMATS, FORMATS, render
from engine.fileio import PUBLIC, atomic_write_text
from engine.messages import FAULT_KINDS, FaultSpec, one_line
from engine.runner import EngineFailure, FileResult, Runner
from engine.sessions import SessionError
from engine.supervisor import Supervisor
from engine.timefmt import short_clock
from engine.workers.spec import ROLES

if TYPE_CHECKING:
    from engine.voices import VoiceStore

__all__ = ["PROJECT_ROOT", "main", "parse_fault", "setup_logging"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class UserError(Exception):
    """A mistake in how the command was called; str() is one line."""


def _err(msg: str) -> None:
    print(f"transcrevai: {msg}", file=sys.stderr, flush=True)


def _info(msg: str) -> None:
    if sys.stderr.isatty():
        print(msg, file=sys.stderr, flush=True)


VOCABULARY_HELP = "a file of names and jargon to expect, one a line (adds to config's vocabulary)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transcrevai",
        description="Offline PT-BR transcription with speaker diarization.")
    parser.add_argument("--config", type=Path, help="config file (default: the project's "
                        "config.toml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("transcribe", help="transcribe recordings headless")
    t.add_argument("files", nargs="+", metavar="FILE")
    t.add_argument("--format", "-f", choices=FORMATS, default="txt")
    t.add_argument("--output", "-o", type=Path,
                   help="output file (one input) or folder (several inputs); default stdout")
    t.add_argument("--language", "-l", help="pt (default), auto, or a language code")
    t.add_argument("--no-diarization", action="store_true", help="skip speaker labels")
    t.add_argument("--speakers", type=int, metavar="N", help="fix the number of speakers")
    t.add_argument("--vocabulary", type=Path, metavar="FILE", help=VOCABULARY_HELP)
    t.add_argument("--realtime", action="store_true",
                   help="feed audio at real-time pace, like a live microphone")
    t.add_argument("--cluster", metavar="ADDRESS",
                   help="run on a Ray cluster: local (a private one for the run), auto, or "
                        "host:port (needs the cluster extra; [cluster] address in config)")
    t.add_argument("--actors", type=int, metavar="N",
                   help="with --cluster: this many actors (default: from the cluster's CPUs)")
    # testing aid: ROLE:KIND:AFTER_S, e.g. transcription:kill:2 (also TRANSCREVAI_INJECT_FAULT)
    t.add_argument("--inject-fault", action="append", default=[], help=argparse.SUPPRESS)

    r = sub.add_parser("replay", help="open the console replaying a recording")
    r.add_argument("file", metavar="FILE")
    r.add_argument("--speed", choices=("1", "2", "fast"), default="1",
                   help="real-time pace (1), twice as fast (2), or as fast as possible")
    r.add_argument("--vocabulary", type=Path, metavar="FILE", help=VOCABULARY_HELP)
    lv = sub.add_parser("live", help="open the console and start recording")
    lv.add_argument("--vocabulary", type=Path, metavar="FILE", help=VOCABULARY_HELP)
    lv.add_argument("--source", metavar="NAME",
                    help="PulseAudio/PipeWire source to record from (pactl list short "
                         "sources; default: [live] source, else the server's default); the "
                         "server is PULSE_SERVER's, e.g. a laptop's mic over ssh -R")

    s = sub.add_parser("sessions", help="list past sessions; rename a speaker; search them")
    ssub = s.add_subparsers(dest="sessions_command", metavar="ACTION")
    ssub.add_parser("list", help="every session: date, duration, speakers, words (default)")
    rn = ssub.add_parser("rename", help="give a speaker a name (used by every export)")
    rn.add_argument("session", metavar="SESSION", help="session id (or a unique prefix)")
    rn.add_argument("speaker", metavar="SPEAKER", help="label (SPEAKER_00) or current name")
    rn.add_argument("name", metavar="NAME", help="new name ('' restores the label)")
    se = ssub.add_parser("search", help="find text in every session (accents optional)")
    se.add_argument("text", metavar="TEXT")

    v = sub.add_parser("speakers", help="voice profiles: enrol, list, rename, forget "
                       "(kept on this machine only)")
    vsub = v.add_subparsers(dest="speakers_command", metavar="ACTION")
    vsub.add_parser("list", help="every voice profile: name, seconds of speech (default)")
    en = vsub.add_parser("enrol", help="remember a voice: SESSION SPEAKER NAME (that "
                         "speaker's clean turns) or FILE NAME (a recording of that one person)")
    en.add_argument("what", nargs="+", metavar="SESSION SPEAKER NAME | FILE NAME")
    en.add_argument("--from", dest="start", type=float, default=0.0, metavar="S",
                    help="with FILE: from this second")
    en.add_argument("--to", dest="end", type=float, metavar="S", help="with FILE: to this second")
    vr = vsub.add_parser("rename", help="rename a voice profile")
    vr.add_argument("old", metavar="OLD")
    vr.add_argument("new", metavar="NEW")
    vf = vsub.add_parser("forget", help="delete a voice profile (every trace of it)")
    vf.add_argument("name", metavar="NAME")

    x = sub.add_parser("export", help="export a session")
    x.add_argument("session", metavar="SESSION", help="session id (or a unique prefix)")
    x.add_argument("--format", "-f", choices=FORMATS, default="txt")
    x.add_argument("--output", "-o", type=Path, help="output file (default: stdout)")

    m = sub.add_parser("models", help="quantization levels: what was tried, what runs")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")
    m.add_argument("--rebuild", action="store_true",
                   help="forget cached validations and run every chain again")

    d = sub.add_parser("doctor", help="check everything a first run needs (models, sound, "
                       "terminal, disk)")
    d.add_argument("--json", action="store_true", help="print JSON instead of a list")

    b = sub.add_parser("bench", help="measure WER, DER and speed on a corpus")
    b.add_argument("--corpus", type=Path, help="folder with manifest.json "
                   "(default: ../shared/corpus beside the project)")
    b.add_argument("--json", action="store_true", help="print JSON instead of a table")
    b.add_argument("--clips", help="only clips whose id contains this text")
    b.add_argument("--no-diarization", action="store_true")
    b.add_argument("--vocabulary", type=Path, metavar="FILE", help=VOCABULARY_HELP)
    b.add_argument("--baseline", action="store_true",
                   help="also run plain faster-whisper (same weights and compute type, beam 5, "
                        "VAD filter, nothing of the project) on the same clips, side by side")
    b.add_argument("--console", action="store_true",
                   help="first-frame time and key latency of the console")
    b.add_argument("--minutes", type=float, metavar="N",
                   help="with --console: N minutes of the corpus's speech looped and replayed "
                        "fast; console RSS and key latency early against late")
    b.add_argument("--speakers", dest="speakers_bench", action="store_true",
                   help="voice profiles: same- vs other-speaker scores (ROC, equal error "
                        "rate, operating point), false names and turns named")
    b.add_argument("--live", action="store_true",
                   help="play each clip through the live path at real-time pace: latency, "
                        "partials, live speaker labels")
    b.add_argument("--soak", type=float, metavar="MINUTES",
                   help="one live session of MINUTES of looped speech: RSS per process over "
                        "time, lag, restarts, console cost (growth after warm-up)")
    b.add_argument("--cluster", metavar="ADDRESS",
                   help="batch throughput on a Ray cluster (local, auto or HOST:PORT) with "
                        "1, 2, ... actors beside the local engine, and identity of outputs")
    b.add_argument("--actors", type=int, metavar="N",
                   help="with --cluster: at most N actors (default: as the CPUs allow)")
    b.add_argument("--long", type=float, metavar="MINUTES", default=20.0,
                   help="with --cluster: also one recording of MINUTES made of the corpus's "
                        "speech, on 1 one-CPU actor and split over 2 (0 skips it; default 20)")
    b.add_argument("--faults", action="store_true",
                   help="inject every fault kind into every worker; report detection and "
                        "recovery")
    return parser


def _apply_overrides(cfg: Config, args: argparse.Namespace) -> Config:
    if getattr(args, "language", None):
        cfg = cfg.replace("transcription", language=args.language)
    if getattr(args, "speakers", None) is not None:
        if not 1 <= args.speakers <= 32:
            raise UserError("--speakers must be between 1 and 32")
        cfg = cfg.replace("diarization", num_speakers=args.speakers)
    if getattr(args, "no_diarization", False):
        cfg = cfg.replace("diarization", enabled=False)
    if args.command == "live" and args.source is not None:
        cfg = cfg.replace("live", source=args.source.strip())
    if getattr(args, "vocabulary", None) is not None:
        terms = cfg.transcription.vocabulary + read_vocabulary(args.vocabulary)
        cfg = cfg.replace("transcription", vocabulary=tuple(dict.fromkeys(terms)))
    return cfg


def read_vocabulary(path: Path) -> tuple[str, ...]:
    """Terms of a vocabulary file: one a line; blank lines and # comments skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise UserError(f"--vocabulary {path}: {why}") from None
    terms = tuple(t for t in (ln.split("#", 1)[0].strip() for ln in text.splitlines()) if t)
    if any(len(t) > 100 for t in terms):
        raise UserError(f"--vocabulary {path}: a line is longer than 100 characters "
                        "(one term a line)")
    return terms


def parse_fault(text: str) -> FaultSpec:
    """ROLE:KIND:AFTER_S -> FaultSpec (raises UserError naming what is wrong)."""
    parts = text.split(":")
    if len(parts) != 3 or parts[0] not in ROLES or parts[1] not in FAULT_KINDS:
        raise UserError(f"fault '{text}': expected ROLE:KIND:AFTER_S with ROLE in "
                        f"{'/'.join(ROLES)} and KIND in {'/'.join(FAULT_KINDS)}")
    try:
        after = float(parts[2])
    except ValueError:
        raise UserError(f"fault '{text}': AFTER_S must be a number of seconds") from None
    return FaultSpec(parts[0], parts[1], after)


def _faults(args: argparse.Namespace) -> list[FaultSpec]:
    specs = list(getattr(args, "inject_fault", []))
    env = os.environ.get("TRANSCREVAI_INJECT_FAULT", "")
    specs += [s for s in env.split(",") if s.strip()]
    return [parse_fault(s.strip()) for s in specs]


def setup_logging(cfg: Config) -> None:
    """Engine events (restarts, backoff delays, failures) go to log_dir/engine.log."""
    try:
        cfg.paths.log_dir.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(cfg.paths.log_dir / "engine.log",
                                                       encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("transcrevai")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def _output_target(args: argparse.Namespace, src: str, many: bool) -> Path | None:
    out: Path | None = args.output
    suffix = EXPORT_FORMATS[args.format].suffix
    if out is None:  # several files: each transcript beside its recording
        return Path(src).with_suffix(suffix) if many else None
    if many or out.is_dir():
        return out / f"{Path(src).stem}{suffix}"
    return out


def _output_targets(args: argparse.Namespace, files: list[str],
                    many: bool) -> dict[str, Path | None]:
    """Each input's transcript file. Inputs that would share one (speech.flac and speech.ogg,
    or two x.wav into one folder) keep their extension in the name, then a number, so a
    batch never writes one transcript over another."""
    suffix = EXPORT_FORMATS[args.format].suffix
    first = {f: _output_target(args, f, many) for f in files}
    counts: dict[Path, int] = {}
    for t in first.values():
        if t is not None:
            counts[t] = counts.get(t, 0) + 1
    out: dict[str, Path | None] = {}
    taken = {t for t, n in counts.items() if n == 1}
    for f, t in first.items():
        if t is None or counts[t] == 1:
            out[f] = t
            continue
        name, n = f"{Path(f).name}{suffix}", 1
        while (cand := t.with_name(name)) in taken:
            n += 1
            name = f"{Path(f).name}-{n}{suffix}"
        taken.add(cand)
        out[f] = cand
    return out


class _Bar:
    """Batch progress on a terminal: one updating line per file, then its outcome."""

    WIDTH = 24

    def __init__(self, index: int, total: int, path: str) -> None:
        self.head = f"[{index}/{total}] {Path(path).name}"
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()

    def update(self, fraction: float, phase: str) -> None:
        if self.tty:
            done = int(fraction * self.WIDTH)
            bar = "█" * done + "░" * (self.WIDTH - done)
            sys.stderr.write(f"\r\x1b[K{self.head} ▕{bar}▏ {fraction:4.0%} {phase}")
            sys.stderr.flush()

    def finish(self, outcome: str) -> None:
        if self.tty:
            sys.stderr.write(f"\r\x1b[K{self.head}: {outcome} "
                             f"({time.monotonic() - self.t0:.1f} s)\n")
            sys.stderr.flush()


def _expand(patterns: list[str]) -> list[str]:
    """Glob patterns a shell did not expand (quoted, or no shell); others as given."""
    import glob

    out: list[str] = []
    for p in patterns:
        matches = sorted(glob.glob(p)) if glob.has_magic(p) and not Path(p).exists() else []
        out += matches or [p]
    return out


def cmd_transcribe(cfg: Config, args: argparse.Namespace) -> int:
    files = _expand(args.files)
    if args.output is not None and len(files) > 1:
        if args.output.exists() and not args.output.is_dir():
            raise UserError(f"--output {args.output}: must be a folder when several files "
                            "are given")
    from engine.audio.source import probe

    good: list[str] = []
    durations: dict[str, float] = {}
    status = EXIT_OK
    for f in files:
        try:
            durations[f] = probe(f).duration_s
            good.append(f)
        except AudioFileError as exc:
            _err(str(exc))
            status = EXIT_USAGE
    if not good:
        return status
    many = len(files) > 1
    targets = _output_targets(args, good, many)
    address = args.cluster or cfg.cluster.address
    if address:
        return _transcribe_on_cluster(cfg, args, address, files, durations, targets, status)
    faults = _faults(args)
    failed = len(files) - len(good)
    with Supervisor(cfg, diarization=cfg.diarization.enabled, faults=faults) as engine:
        runner = Runner(engine)
        _info("loading models…")
        runner.wait_ready()
        for i, f in enumerate(good, 1):
            bar = _Bar(i, len(good), f) if many else None
            result = runner.transcribe(f, realtime=args.realtime,
                                       on_progress=bar.update if bar else None)
            target = _emit(result, args, targets[f], quiet=bar is not None)
            if target is None:
                status = status or EXIT_USAGE
                failed += 1
            elif result.error or result.transcript.warnings:  # partial or degraded
                status = status or EXIT_PARTIAL
            if bar is not None:
                bar.finish(f"→ {target}" if target else f"failed: {result.error}")
    if many:
        _info(f"{len(files) - failed} of {len(files)} files transcribed"
              + (f", {failed} failed" if failed else ""))
    return status


def _transcribe_on_cluster(cfg: Config, args: argparse.Namespace, address: str,
                           files: list[str], durations: dict[str, float],
                           targets: dict[str, Path | None], status: int) -> int:
    """The batch on Ray actors: same outputs and exit codes as the local batch; files whose
    outputs a manifest records as complete are skipped (a restarted command resumes).
    `durations`: the inputs that probed well, with their length."""
    from engine.cluster.batch import MANIFEST, ClusterBatch, ClusterError, Manifest, Progress
    from engine.sessions import record_transcript

    if args.actors is not None and args.actors < 1:
        raise UserError("--actors must be 1 or more")
    many, good = len(files) > 1, list(durations)
    if args.output is not None and (many or args.output.is_dir()):
        home = args.output
    else:
        home = Path(os.path.commonpath([str(Path(f).resolve().parent) for f in good]))
    manifest = Manifest(home / MANIFEST)
    todo = [f for f in good if not manifest.complete(f, targets[f])]
    progress = Progress(len(todo), skipped=len(good) - len(todo),
                        total_audio_s=sum(durations[f] for f in todo))
    if progress.skipped:
        _info(f"{progress.skipped} of {len(good)} files already done (manifest {manifest.path})")
    failed = len(files) - len(good)
    if not todo:
        return status
    try:
        batch = ClusterBatch(cfg, address, args.actors or cfg.cluster.actors,
                             cfg.cluster.cpus_per_actor, say=_err)
    except ClusterError as exc:
        raise UserError(str(exc)) from None
    tty = sys.stderr.isatty()

    def emit(result: FileResult, where: str) -> None:
        nonlocal status, failed
        target = _emit(result, args, targets[result.path], quiet=True)
        if target is None:
            status = status or EXIT_USAGE
            failed += 1
            progress.failed += 1
        else:
            progress.done += 1
            progress.audio_s += result.audio_s
            if result.error or result.transcript.warnings:
                status = status or EXIT_PARTIAL
            if target != "stdout" and targets[result.path] is not None:
                manifest.record(result.path, Path(target))
            try:  # listed by `sessions` like a console's, marked as the cluster's
                record_transcript(cfg.paths.recordings_dir, result.transcript,
                                  device=f"cluster {where}")
            except OSError as exc:
                _err(f"{result.path}: transcript written, but not kept as a session: "
                     f"{exc.strerror or exc}")
        if tty:
            sys.stderr.write(f"\r\x1b[K{progress.line(batch.nodes)}")
            sys.stderr.flush()
        if many and target not in (None, "stdout"):
            print(f"{result.path} -> {target} ({where}, {result.audio_s:.1f} s of audio)",
                  flush=True)

    batch.run(todo, emit)
    if tty:
        sys.stderr.write("\n")
    if many:
        _info(f"{len(files) - failed} of {len(files)} files transcribed"
              + (f", {failed} failed" if failed else ""))
    return status


def _emit(result: FileResult, args: argparse.Namespace, target: Path | None,
          quiet: bool = False) -> str | None:
    """Write or print one file's transcript; where it went, or None when nothing could be
    produced."""
    tr = result.transcript
    # in a batch, every line says which file it is about
    about = "" if target is None or str(result.path) in (result.error or "") \
        else f"{result.path}: "
    for warning in tr.warnings:
        if warning != result.error:
            _err(f"warning: {about}{warning}")
    if result.error:
        _err(f"{about}{result.error}")
        if not tr.segments and result.audio_s == 0:
            return None
    text = render(tr, args.format)
    if target is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return "stdout"
    _write_atomic(target, text)
    if not quiet:
        _info(f"wrote {target}")
    return str(target)


def cmd_sessions(cfg: Config, args: argparse.Namespace) -> int:
    """`sessions` (list), `sessions rename`, `sessions search`."""
    from engine.sessions import find_session, iter_sessions, rename_speaker, search_sessions

    folder = cfg.paths.recordings_dir
    action = args.sessions_command or "list"
    try:
        if action == "rename":
            sess = find_session(args.session, folder)
            label = rename_speaker(sess, args.speaker, args.name)
            shown = args.name.strip() or label
            _info(f"{sess.id}: {label} is now '{shown}'")
            return EXIT_OK
        if action == "search":
            hits = search_sessions(folder, args.text)
            for h in hits:
                print(f"{h.session}  {short_clock(h.start):>8}  {h.speaker}: {h.text}")
            if not hits:
                _info(f"'{args.text}' not found in {folder}")
            return EXIT_OK
    except SessionError as exc:
        raise UserError(str(exc)) from None
    rows = list(iter_sessions(folder))
    if not rows:
        _info(f"no sessions in {folder}")
        return EXIT_OK
    print(f"{'session':<36} {'started':<16} {'duration':>8} {'speakers':>8} {'words':>6}  "
          "source   status")
    for sess in rows:
        print(f"{sess.id:<36} {sess.meta.started.replace('T', ' ')[:16]:<16} "
              f"{short_clock(sess.duration_s):>8} {len(sess.speakers):>8} {sess.words:>6}  "
              f"{sess.meta.source:<7}  {sess.status}")
    return EXIT_OK


def cmd_speakers(cfg: Config, args: argparse.Namespace) -> int:
    """`speakers list | enrol | rename | forget`: voice profiles, local only."""
    from engine.voices import VoiceError, VoiceStore, describe, voices_dir

    if not cfg.voices.enabled:
        raise UserError("voice profiles are turned off ([voices] enabled = false in "
                        f"{cfg.source or 'config.toml'})")
    store = VoiceStore(voices_dir(cfg))
    action = args.speakers_command or "list"
    try:
        if action == "enrol":
            return _enrol(cfg, store, args)
        if action == "rename":
            store.rename(args.old, args.new)
            _info(f"voice '{args.old}' is now '{args.new.strip()}'")
            return EXIT_OK
        if action == "forget":
            store.forget(args.name)
            _info(f"voice '{args.name}' forgotten (its profile file is deleted)")
            return EXIT_OK
    except VoiceError as exc:
        raise UserError(str(exc)) from None
    profiles = store.list()
    if not profiles:
        _info(f"no voice profiles in {store.folder}")
        return EXIT_OK
    print(f"{'name':<24} {'speech':>8} {'recordings':>10}  updated")
    for p in profiles:
        d = describe(p)
        print(f"{d['name']:<24} {short_clock(d['seconds']):>8} {d['recordings']:>10}  "
              f"{d['updated'].replace('T', ' ')}")
    return EXIT_OK


def _enrol(cfg: Config, store: VoiceStore, args: argparse.Namespace) -> int:
    from engine.audio.source import read_audio
    from engine.sessions import find_session
    from engine.voices import Embedder, clean_spans, enrol, speech_spans

    what = list(args.what)
    if len(what) == 3:  # SESSION SPEAKER NAME
        try:
            sess = find_session(what[0], cfg.paths.recordings_dir)
        except SessionError as exc:
            raise UserError(str(exc)) from None
        turns = sess.refined if sess.refined is not None else sess.turns
        names = sess.meta.speaker_names
        label = next((lb for lb in dict.fromkeys(t.speaker for t in turns)
                      if what[1] in (lb, names.get(lb))), None)
        if label is None:
            known = ", ".join(names.get(lb, lb) for lb in dict.fromkeys(t.speaker for t in turns))
            raise UserError(f"no speaker {what[1]!r} in session {sess.id} "
                            f"(speakers: {known or 'none'})")
        check_file(sess.meta.audio)
        audio = read_audio(sess.meta.audio)
        spans, source, who, name = clean_spans(turns, label), sess.id, label, what[2]
    elif len(what) == 2:  # FILE NAME: one person speaking
        check_file(what[0])
        audio = read_audio(what[0])
        spans = speech_spans(audio, args.start, args.end)
        source, who, name = str(Path(what[0]).resolve()), Path(what[0]).name, what[1]
    else:
        raise UserError("enrol takes SESSION SPEAKER NAME, or FILE NAME")
    profile = enrol(store, Embedder.from_config(cfg), audio, spans, name, source,
                    cfg.voices.min_enrol_s, who)
    _info(f"voice '{profile.name}' enrolled: {profile.seconds:.1f} s of speech from "
          f"{len(profile.sources)} recording(s), kept in {store.folder}")
    return EXIT_OK


def cmd_export(cfg: Config, args: argparse.Namespace) -> int:
    """Export a session (what its journal holds: a live one is a snapshot of the committed
    part) with the speaker names stored in it."""
    from engine.sessions import find_session

    try:
        sess = find_session(args.session, cfg.paths.recordings_dir)
    except SessionError as exc:
        raise UserError(str(exc)) from None
    for warning in sess.warnings:
        _err(f"warning: {warning}")
    text = render(sess.transcript(), args.format)
    if args.output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return EXIT_OK
    _write_atomic(args.output, text)
    _info(f"wrote {args.output}")
    return EXIT_OK


def _write_atomic(target: Path, text: str) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, text, mode=PUBLIC)
    except OSError as exc:
        raise UserError(f"cannot write {target}: {exc.strerror or exc}") from None


def cmd_models(cfg: Config, args: argparse.Namespace) -> int:
    """Run (or reuse) the quantization chain of every model in use and print the table."""
    import json
    from dataclasses import asdict

    from engine.models import levels
    from engine.models.quantize import QuantizeError, format_table
    from engine.models.registry import ModelError

    if args.rebuild:
        for manifest in levels.cache_dir(cfg).glob("*.manifest.json"):
            manifest.unlink()
    if levels.needs_build(cfg):
        _info("validating quantization levels (child processes; about a minute)")
    try:
        results = levels.build_all(cfg)
    except (ModelError, QuantizeError) as exc:
        raise EngineFailure(str(exc)) from None
    if args.json:
        out = []
        for r in results:
            d = asdict(r)
            d.update(source=str(r.source), path=str(r.path),
                     manifest=str(r.manifest) if r.manifest else None)
            out.append(d)
        print(json.dumps(out, indent=2))
    else:
        print(format_table(results), end="")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    """Run every first-run check; exit 1 when one of them blocks transcription.

    Takes no Config: a config that does not load is the first check's failure, not a usage
    error, and the checks that do not need it still run."""
    import json

    from engine.doctor import blocking, format_report, run_checks, to_json

    checks = run_checks(args.config)
    if args.json:
        print(json.dumps(to_json(checks), indent=2, ensure_ascii=False))
    else:
        print(format_report(checks, sys.stdout.encoding), end="")
    sys.stdout.flush()
    return EXIT_FAILURE if blocking(checks) else EXIT_OK


def prepare_levels(cfg: Config) -> None:
    """Benchmarks measure the validated levels, so the chain runs first (cached after)."""
    from engine.models import levels
    from engine.models.quantize import QuantizeError
    from engine.models.registry import ModelError

    if levels.needs_build(cfg):
        _info("validating quantization levels first (child processes; about a minute)")
        try:
            levels.build_all(cfg)
        except (ModelError, QuantizeError) as exc:
            raise EngineFailure(str(exc)) from None


def cmd_bench(cfg: Config, args: argparse.Namespace) -> int:
    from engine.bench.replay import run_bench

    prepare_levels(cfg)
    if args.soak:
        from engine.bench.soak import run_soak

        return run_soak(cfg, args)
    if args.cluster:
        from engine.bench.cluster import run_cluster_bench

        return run_cluster_bench(cfg, args)
    if args.speakers_bench:
        from engine.bench.speakers import run_speakers_bench

        return run_speakers_bench(cfg, args)
    if args.live:
        from engine.bench.live import run_live_bench

        return run_live_bench(cfg, args)
    return run_bench(cfg, args)


def _log_internal_error(cfg: Config | None) -> Path | None:
    try:
        log_dir = cfg.paths.log_dir if cfg else Path.cwd()
        log_dir.mkdir(parents=True, exist_ok=True)
        path = log_dir / "cli.log"
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}\n{traceback.format_exc()}")
        return path
    except OSError:
        return None


ConsoleRunner = Callable[[Config, argparse.Namespace], int]


def main(argv: Sequence[str] | None = None, console: ConsoleRunner | None = None) -> int:
    """Run a command; `console` (given by tui.cli) runs the full-screen console commands."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg: Config | None = None
    try:
        if args.command == "doctor":
            return cmd_doctor(args)
        cfg = _apply_overrides(load_config(args.config), args)
        check_paths(cfg)
        setup_logging(cfg)
        if args.command == "transcribe":
            return cmd_transcribe(cfg, args)
        if args.command == "sessions":
            return cmd_sessions(cfg, args)
        if args.command == "export":
            return cmd_export(cfg, args)
        if args.command == "speakers":
            return cmd_speakers(cfg, args)
        if args.command == "models":
            return cmd_models(cfg, args)
        if args.command == "bench" and args.soak is not None and args.soak <= 0:
            raise UserError("--soak MINUTES must be more than 0")
        if args.command == "bench" and args.minutes is not None and (
                args.minutes <= 0 or not args.console):
            raise UserError("--minutes N goes with --console and must be more than 0")
        if args.command == "bench" and not args.console and not (args.soak and console):
            return cmd_bench(cfg, args)
        if getattr(args, "file", None) is not None:
            check_file(args.file)  # one line here, before the screen opens
        if console is None:
            raise UserError("the console is not part of this entry point; run `transcrevai`")
        if args.command == "live":
            from engine.audio.mic import no_sound_server

            problem = no_sound_server()  # say it here, not inside a full screen
            if problem:
                _err(problem)
                return EXIT_FAILURE
        return console(cfg, args)
    except (ConfigError, UserError, AudioFileError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    except EngineFailure as exc:
        _err(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # last resort: one line, details in the log
        log = _log_internal_error(cfg)
        where = f" (details in {log})" if log else ""
        _err(f"internal error: {one_line(exc)}{where}")
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
