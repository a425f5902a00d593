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

from engine.audio.paths import AudioFileError, check_file
from engine.config import PROJECT_ROOT, Config, ConfigError, load_config
from engine.export import FORMATS, render
from engine.messages import FAULT_KINDS, ROLES, FaultSpec
from engine.session import EngineFailure, FileResult, FileTranscriber
from engine.supervisor import Engine

__all__ = ["PROJECT_ROOT", "main", "parse_fault", "setup_logging"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class UserError(Exception):
    """A mistake in how the command was called; str() is one line."""


def _err(msg: str) -> None:
    print(f"transcrevai: {msg}", file=sys.stderr, flush=True)


def _info(msg: str) -> None:
    if sys.stderr.isatty():
        print(msg, file=sys.stderr, flush=True)


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
    t.add_argument("--realtime", action="store_true",
                   help="feed audio at real-time pace, like a live microphone")
    # testing aid: ROLE:KIND:AFTER_S, e.g. transcription:kill:2 (also TRANSCREVAI_INJECT_FAULT)
    t.add_argument("--inject-fault", action="append", default=[], help=argparse.SUPPRESS)

    r = sub.add_parser("replay", help="open the console replaying a recording")
    r.add_argument("file", metavar="FILE")
    r.add_argument("--speed", choices=("1", "2", "fast"), default="1",
                   help="real-time pace (1), twice as fast (2), or as fast as possible")
    sub.add_parser("live", help="open the console and start recording")

    b = sub.add_parser("bench", help="measure WER, DER and speed on a corpus")
    b.add_argument("--corpus", type=Path, help="folder with manifest.json "
                   "(default: ../shared/corpus beside the project)")
    b.add_argument("--json", action="store_true", help="print JSON instead of a table")
    b.add_argument("--clips", help="only clips whose id contains this text")
    b.add_argument("--no-diarization", action="store_true")
    b.add_argument("--console", action="store_true",
                   help="first-frame time and key latency of the console")
    b.add_argument("--live", action="store_true",
                   help="play each clip through the live path at real-time pace: latency, "
                        "partials, live speaker labels")
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
    return cfg


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
    if out is None:
        return None
    if many or out.is_dir():
        return out / f"{Path(src).stem}.{args.format}"
    return out


def cmd_transcribe(cfg: Config, args: argparse.Namespace) -> int:
    if args.output is not None and len(args.files) > 1:
        if args.output.exists() and not args.output.is_dir():
            raise UserError(f"--output {args.output}: must be a folder when several files "
                            "are given")
    from engine.audio.source import probe

    good: list[str] = []
    status = EXIT_OK
    for f in args.files:
        try:
            probe(f)
            good.append(f)
        except AudioFileError as exc:
            _err(str(exc))
            status = EXIT_USAGE
    if not good:
        return status
    many = len(args.files) > 1
    faults = _faults(args)
    with Engine(cfg, diarization=cfg.diarization.enabled, faults=faults) as engine:
        runner = FileTranscriber(engine)
        _info("loading models…")
        runner.wait_ready()
        for f in good:
            result = runner.transcribe(f, realtime=args.realtime)
            if not _emit(result, args, many):
                status = status or EXIT_USAGE
            elif result.error or result.transcript.warnings:  # partial or degraded
                status = status or EXIT_PARTIAL
    return status


def _emit(result: FileResult, args: argparse.Namespace, many: bool) -> bool:
    """Write or print one file's transcript; False when nothing could be produced."""
    tr = result.transcript
    for warning in tr.warnings:
        if warning != result.error:
            _err(f"warning: {warning}")
    if result.error:
        _err(result.error)
        if not tr.segments and result.audio_s == 0:
            return False
    text = render(tr, args.format)
    target = _output_target(args, result.path, many)
    if target is None:
        if many and args.format == "txt":
            print(f"# {result.path}")
        sys.stdout.write(text)
        sys.stdout.flush()
        return True
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
    except OSError as exc:
        raise UserError(f"cannot write {target}: {exc.strerror or exc}") from None
    _info(f"wrote {target}")
    return True


def cmd_bench(cfg: Config, args: argparse.Namespace) -> int:
    from engine.bench import run_bench

    if args.live:
        from engine.bench_live import run_live_bench

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
        cfg = _apply_overrides(load_config(args.config), args)
        setup_logging(cfg)
        if args.command == "transcribe":
            return cmd_transcribe(cfg, args)
        if args.command == "bench" and not args.console:
            return cmd_bench(cfg, args)
        if getattr(args, "file", None) is not None:
            check_file(args.file)  # one line here, before the screen opens
        if console is None:
            raise UserError("the console is not part of this entry point; run `transcrevai`")
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
        _err(f"internal error: {' '.join(str(exc).split()) or type(exc).__name__}{where}")
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
