"""The TranscrevAI console: transcript, per-speaker panes, worker gauges, keyboard control.

It renders engine events and sends commands; models and audio live in the engine's worker
processes. A bridge thread owns the engine and posts event batches; gauges and the status
line refresh on a timer (4 Hz), not per message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal
from textual.css.query import NoMatches
from textual.message import Message

from engine.config import Config
from engine.export import EXPORT_FORMATS, render
from engine.fileio import PUBLIC, atomic_write_text
from engine.messages import (
    EngineEvent,
    EngineFailed,
    Enrol,
    InputDevices,
    MicStatus,
    ModelLevels,
    StreamError,
    VoiceEnrolled,
    WorkerState,
    WorkerStatus,
)
from engine.sessions import (
    Session,
    SessionError,
    iter_sessions,
    load_session,
    store_name,
    store_rejection,
)
from engine.timefmt import clock, minutes
from tui.bridge import EngineBridge
from tui.gc_pause import IdleCollector
from tui.screens.ask import AskScreen
from tui.screens.choose import ChooseScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.help import HelpScreen
from tui.screens.too_small import MIN_HEIGHT, MIN_WIDTH, TooSmallScreen
from tui.state import ConsoleState
from tui.widgets.footer import Footer
from tui.widgets.gauges import Gauges
from tui.widgets.partial_line import PartialLine
from tui.widgets.status_bar import StatusBar
from tui.widgets.transcript_view import TranscriptView

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif"}
OTHER = "::another-file::"
SESSION = "::session::"


def session_label(s: Session) -> str:
    """One line per past session in the open dialog."""
    when = s.meta.started.replace("T", " ")[:16]
    status = "" if s.status == "complete" else f" · {s.status}"
    return (f"{when} · {minutes(s.duration_s)} · {len(s.speakers)} speakers · {s.words} words · "
            f"{s.meta.source}{status}  ({s.id})")
LANGUAGES = (("pt", "Português (pt)"), ("auto", "Detect automatically"), ("en", "English"),
             ("es", "Español"), ("fr", "Français"), ("it", "Italiano"), ("de", "Deutsch"))


class EngineEvents(Message):
    """A batch of engine events, posted from the bridge thread."""

    def __init__(self, events: list[EngineEvent]) -> None:
        super().__init__()
        self.events = events


class TranscrevApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "TranscrevAI"
    # The footer shows the short descriptions; the help screen (?) lists every binding with
    # its tooltip, so a key added here is documented there too.
    BINDINGS = [
        Binding("r", "record", "Record", tooltip="record / stop"),
        Binding("space", "pause", "Pause", tooltip="pause / resume"),
        Binding("o", "open", "Open", tooltip="open a recording"),
        Binding("e", "export", "Export", tooltip="export the transcript"),
        Binding("n", "rename", "Rename", tooltip="rename a speaker"),
        Binding("E", "enrol", "Enrol", show=False,
                tooltip="remember a speaker's voice: later sessions name it (this machine only)"),
        Binding("x", "reject_voice", "Not them", show=False,
                tooltip="a speaker named after a voice profile is not that person"),
        Binding("v", "voices", "Voices", show=False,
                tooltip="voice profiles: rename, forget"),
        Binding("slash", "search", "Search", tooltip="search"),
        Binding("right_square_bracket", "next_match", "Next", show=False,
                tooltip="next match"),
        Binding("left_square_bracket", "previous_match", "Prev", show=False,
                tooltip="previous match"),
        Binding("escape", "clear_search", "Clear", show=False, tooltip="clear the search"),
        Binding("s", "speed", "Speed", show=False,
                tooltip="replay speed 1 / 2"),
        # priority: the transcript would take ←/→ to scroll sideways; dialogs keep them
        # (check_action)
        Binding("left", "seek(-5)", "-5 s", show=False, priority=True,
                tooltip="replay: back 5 s (that stretch is transcribed again)"),
        Binding("right", "seek(5)", "+5 s", show=False, priority=True,
                tooltip="replay: on 5 s (the stretch skipped is left out)"),
        Binding("y", "copy", "Copy", show=False,
                tooltip="copy the search match, else all (OSC 52, works over SSH)"),
        Binding("l", "language", "Lang", tooltip="language"),
        Binding("d", "device", "Mic", show=False, tooltip="microphone (input device)"),
        Binding("g", "toggle_gauges", "Gauges", tooltip="show / hide worker gauges"),
        Binding("p", "toggle_panes", "Speakers", tooltip="per-speaker panes"),
        Binding("question_mark", "help", "Help", tooltip="this help"),
        Binding("q", "quit_console", "Quit", tooltip="quit"),
    ]

    def __init__(self, config: Config, replay: str | None = None, speed: float = 1.0,
                 record: bool = False,
                 events: Sequence[EngineEvent] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`events`: a recorded event stream to show instead of running the engine, and
        `clock`: a fixed clock (tests)."""
        super().__init__()
        self.config = config
        self.clock = clock
        self.collector = IdleCollector()
        self.state = ConsoleState(language=config.transcription.language,
                                  vocabulary=config.transcription.vocabulary)
        self.replay = replay
        self.record_at_start = record  # `transcrevai live`
        self.speed = speed  # 0: as fast as the engine goes
        self.recorded = list(events) if events is not None else None
        self.bridge: EngineBridge | None = None
        self.language = config.transcription.language  # for the next recording opened
        self.exported: list[Path] = []
        self._mic_was_lost = False
        self.device: str | None = None  # None: config's [live] device

    def compose(self) -> ComposeResult:
        yield StatusBar(self.state, id="status")
        with Horizontal(id="main"):
            yield TranscriptView(self.state, id="transcript")
            yield Grid(id="panes", classes="hidden")
        yield PartialLine(self.state, id="partial")
        yield Gauges(self.state, self.config.engine.heartbeat_interval, id="gauges")
        yield Footer()

    def on_mount(self) -> None:
        self._fit(self.size.width, self.size.height)
        self.set_interval(0.25, self.refresh_gauges)
        if self.recorded is not None:
            self._apply(self.recorded)
        else:  # spawning workers costs CPU: draw the first frame before that
            self.call_after_refresh(self._start_engine)
        self.refresh_gauges()

    def _start_engine(self) -> None:
        self.collector.start()
        self.set_interval(0.5, self.collector.tick)
        self.bridge = EngineBridge(self.config, self._post_from_thread)
        self.bridge.start()
        if self.record_at_start:
            self.action_record()
        elif self.replay:
            self.open_recording(self.replay)

    def on_resize(self, event: events.Resize) -> None:
        self._fit(event.size.width, event.size.height)

    def _fit(self, width: int, height: int) -> None:
        """Below the smallest size the console lays out in, a screen says so (the engine
        goes on behind it); above it, the console is back as it was."""
        small = width < MIN_WIDTH or height < MIN_HEIGHT
        screen = self.screen
        if isinstance(screen, TooSmallScreen):
            if small:
                screen.show(width, height)
            else:
                self.pop_screen()
        elif small:
            self.push_screen(TooSmallScreen())

    def _post_from_thread(self, batch: list[EngineEvent]) -> None:
        self.post_message(EngineEvents(batch))

    def on_engine_events(self, message: EngineEvents) -> None:
        self._apply(message.events)

    def _apply(self, events: Sequence[EngineEvent]) -> None:
        version = self.state.version
        now = self.clock()
        for ev in events:
            lost_before = self.state.mic_state == "lost"
            self.state.apply(ev, now)
            self._mic_was_lost = lost_before
            self._notify_problem(ev)
        if self.state.version != version:
            self._sync_transcript()

    def _sync_transcript(self) -> None:
        self.query_one("#transcript", TranscriptView).sync()
        self.query_one("#partial", PartialLine).sync()
        for pane in self.query("#panes TranscriptView").results(TranscriptView):
            pane.sync()
            if pane.speaker is not None:
                pane.border_title = self.state.shown_name(pane.speaker)

    def _notify_problem(self, ev: EngineEvent) -> None:
        """Engine errors as one-line notifications; the console itself carries on."""
        match ev:
            case WorkerStatus(state=WorkerState.FAILED, detail=why):
                self.notify(why, title=f"{ev.role} failed", severity="error", timeout=10)
            case WorkerStatus(state=WorkerState.RESTARTING, detail=why):
                self.notify(why, title=f"{ev.role} worker", severity="warning")
            case StreamError(message=msg):
                self.notify(msg, severity="error", timeout=10)
            case MicStatus(state="lost", detail=why, retry_in=retry):
                self.notify(f"{why}; retrying in {retry:.0f} s (recording kept)",
                            title="Microphone", severity="warning")
            case MicStatus(state="recording") if self.state.mic_state == "recording" and \
                    self._mic_was_lost:
                self.notify("microphone back; recording resumed", title="Microphone")
            case VoiceEnrolled(name=name, error=""):
                self.notify(f"'{name}' remembered from {ev.seconds:.0f} s of speech; later "
                            "sessions name this voice", title="Voice profile")
            case VoiceEnrolled(error=why):
                self.notify(why, title="Voice profile", severity="warning", timeout=10)
            case InputDevices(devices=devices, error=error):
                self._choose_device(devices, error)
            case MicStatus(state="stopped", path=path):
                self.notify(f"saved {path}", title="Recording")
            case EngineFailed(message=msg):  # the engine cannot go on
                self.notify(msg, title="Engine stopped", severity="error", timeout=10)
            case ModelLevels(error=""):
                used = ", ".join(f"{kind} {level}" for kind, level in ev.levels)
                self.notify(f"validated in {ev.elapsed_s:.0f} s: {used}",
                            title="Quantization levels")
            case ModelLevels(error=why):
                self.notify(f"staying on FP32: {why}", title="Quantization levels",
                            severity="warning")
            case _:
                pass

    def refresh_gauges(self) -> None:
        """On a timer, which can fire once more while the app shuts down and its widgets
        are already gone (seen as a rare NoMatches at the end of a pilot test)."""
        now = self.clock()
        try:
            status = self.query_one("#status", StatusBar)
            gauges = self.query_one("#gauges", Gauges)
        except NoMatches:
            return
        status.sync(now)
        if gauges.display:
            gauges.sync(now)

    # ------------------------------------------------------------ actions
    def action_help(self) -> None:
        # built once and kept (installed): a help screen made per press was garbage each time
        if not self.is_screen_installed("help"):
            self.install_screen(HelpScreen(self.BINDINGS), "help")
        self.push_screen("help")

    def action_toggle_gauges(self) -> None:
        gauges = self.query_one("#gauges", Gauges)
        gauges.display = not gauges.display

    def action_toggle_panes(self) -> None:
        panes = self.query_one("#panes", Grid)
        if panes.has_class("hidden"):
            panes.remove_children()
            # as many side-by-side columns as fit at ~30 cells each (2x2 from 60 columns:
            # four panes stacked in 18 rows left one of them no line at all)
            count = max(1, len(self.state.speakers))
            panes.styles.grid_size_columns = max(1, min(count, self.size.width // 30))
            for label in self.state.speakers:
                view = TranscriptView(self.state, speaker=label, classes="pane")
                view.border_title = self.state.shown_name(label)
                panes.mount(view)
                view.sync()
            panes.remove_class("hidden")
            self.query_one("#transcript").add_class("hidden")
        else:
            panes.add_class("hidden")
            self.query_one("#transcript").remove_class("hidden")

    def action_record(self) -> None:
        """Start recording from the microphone, or stop the recording in progress."""
        if self.bridge is None:
            self.notify("The engine is not running.", severity="error")
            return
        if self.state.recording:
            self.bridge.stop_recording()
            self.notify("stopping: the last phrase and the speaker pass follow")
            return
        if self.state.paused:
            self.state.paused = False
            self.bridge.pause(False)
        self.bridge.record(language=self.language, device=self.device)
        self.notify("recording from the microphone")

    def action_pause(self) -> None:
        if self.bridge is None or not self.state.source:
            self.notify("Nothing is playing.", severity="warning")
            return
        self.state.paused = not self.state.paused
        self.bridge.pause(self.state.paused)
        self.refresh_gauges()

    def action_open(self) -> None:
        """Past sessions (reopened from disk, newest first), then recordings to replay."""
        folder = self.config.paths.recordings_dir
        sessions = list(iter_sessions(folder))[::-1]
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in AUDIO_SUFFIXES) \
            if folder.is_dir() else []
        options = [(f"{SESSION}{s.meta_path}", session_label(s)) for s in sessions]
        options += [(str(p), f"▶ replay {p.name}") for p in files]
        options.append((OTHER, "Another file…"))
        self.push_screen(ChooseScreen(f"Open a session or a recording ({folder})", options),
                         self._open)

    def _open(self, choice: str | None) -> None:
        if choice == OTHER:
            self.push_screen(AskScreen("Path of the recording", placeholder="/path/to/file.wav"),
                             self._open)
        elif choice and choice.startswith(SESSION):
            self.reopen_session(Path(choice[len(SESSION):]))
        elif choice:
            self.open_recording(choice)

    def reopen_session(self, meta_path: Path) -> None:
        """Show a past session's transcript and speakers; its audio can be replayed (o)."""
        try:
            sess = load_session(meta_path)
        except SessionError as exc:
            self.notify(str(exc), severity="error")
            return
        self.state.show_session(sess.meta.audio, sess.duration_s, sess.segments,
                                sess.refined if sess.refined is not None else sess.turns,
                                sess.meta.speaker_names, str(sess.meta_path),
                                sess.meta.language, sess.meta.model, sess.recognised,
                                sess.meta.rejected_voices)
        self._sync_transcript()
        self.refresh_gauges()
        for warning in sess.warnings:
            self.notify(warning, severity="warning")
        self.notify(f"{sess.id}: {len(sess.segments)} segments, {sess.status}",
                    title="Session")

    def open_recording(self, path: str) -> None:
        if self.bridge is None:
            self.notify("The engine is not running.", severity="error")
            return
        if self.state.paused:
            self.state.paused = False
            self.bridge.pause(False)
        self.state.speed = self.speed
        self.bridge.open(str(Path(path).expanduser()), realtime=self.speed > 0,
                         speed=self.speed or 1.0, language=self.language)
        self.notify(f"opening {Path(path).name}")

    def action_speed(self) -> None:
        """A replay through the live path plays on at speed 2 (or back at 1) from where it
        is; the next recording opened plays at it too. A fast replay has no pace to change."""
        if self.speed == 0:
            self.notify("This replay runs as fast as the engine goes (--speed fast).",
                        severity="warning")
            return
        self.speed = 2.0 if self.speed < 2.0 else 1.0
        self.state.speed = self.speed
        if self.bridge is not None:
            self.bridge.set_speed(self.speed)
        self.refresh_gauges()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """←/→ seek on the main screen only: in a dialog they move the cursor."""
        if action == "seek":
            return len(self.screen_stack) == 1
        return True

    def action_seek(self, by_s: float) -> None:
        """Move a replay at speed 1 or 2 by `by_s` seconds: back transcribes that stretch
        again (its text and speakers go and come anew), on leaves the stretch out."""
        if self.bridge is None or self.state.source_kind != "file" or not self.state.source:
            self.notify("Seeking works while a recording replays.", severity="warning")
            return
        if self.speed == 0:
            self.notify("A fast replay (--speed fast) has no play position to move; "
                        "replay at speed 1 or 2.", severity="warning")
            return
        self.bridge.seek(by_s)

    def action_copy(self) -> None:
        """To the clipboard through OSC 52 (the terminal sets it, so it works over SSH):
        the current search match with its speaker and time, else the whole transcript."""
        segs = self.state.segments
        if not segs:
            self.notify("Nothing to copy yet.", severity="warning")
            return
        current = self.state.current_match
        if current is not None and current < len(segs):
            seg = segs[current]
            text = f"[{clock(seg.start)}] {self.state.name(seg.speaker)}: {seg.text}"
            what = "the selected line"
        else:
            text = render(self.state.transcript(), "txt")
            what = f"the transcript ({len(segs)} lines)"
        self.copy_to_clipboard(text)
        self.notify(f"copied {what} to the clipboard", title="Copy")

    def action_export(self) -> None:
        if not self.state.segments:
            self.notify("Nothing to export yet.", severity="warning")
            return
        options = [(f.name, f.label) for f in EXPORT_FORMATS.values()]
        self.push_screen(ChooseScreen("Export as", options), self._export)

    def _export(self, fmt: str | None) -> None:
        if fmt is None:
            return
        suffix = EXPORT_FORMATS[fmt].suffix
        if self.state.session_path:  # beside the session's files in recordings/
            meta = Path(self.state.session_path)
            target = meta.with_name(meta.name.removesuffix(".meta.json") + suffix)
        else:
            target = Path(self.state.source or "session").with_suffix(suffix)
        try:
            atomic_write_text(target, render(self.state.transcript(), fmt), mode=PUBLIC)
        except OSError as exc:
            self.notify(f"cannot write {target}: {exc.strerror or exc}", severity="error")
            return
        self.exported.append(target)
        self.notify(f"wrote {target}", title="Export")

    def action_rename(self) -> None:
        speakers = self.state.speakers
        if not speakers:
            self.notify("No speakers yet.", severity="warning")
            return
        options = [(label, f"{self.state.name(label)}" + (f"  ({label})" if
                   self.state.name(label) != label else "")) for label in speakers]
        self.push_screen(ChooseScreen("Rename which speaker?", options), self._ask_name)

    def _ask_name(self, label: str | None) -> None:
        if label is None:
            return

        def apply(name: str | None) -> None:
            if name is not None:
                self.state.rename(label, name)
                self._sync_transcript()
                if self.state.session_path:  # kept with the session, used by every export
                    try:
                        store_name(Path(self.state.session_path), label, name)
                    except SessionError as exc:
                        self.notify(str(exc), severity="error")

        self.push_screen(AskScreen(f"New name for {self.state.name(label)}",
                                   self.state.name(label)), apply)

    def _speaker_options(self, labels: Sequence[str]) -> list[tuple[str, str]]:
        return [(label, self.state.name(label) + (f"  ({label})" if self.state.name(label)
                                                   != label else "")) for label in labels]

    def action_enrol(self) -> None:
        """Remember a speaker's voice under a name (their clean turns in this session); the
        diarization worker does it, the console holds no voice model."""
        if not self.config.voices.enabled:
            self.notify("Voice profiles are turned off ([voices] enabled = false).",
                        severity="warning")
            return
        labels = [lb for lb in self.state.speakers if lb in {t.speaker for t in self.state.turns}]
        audio = self.state.source
        if not labels or not audio or self.bridge is None:
            self.notify("No diarized speakers to enrol yet.", severity="warning")
            return
        if self.state.recording:
            self.notify("Stop the recording first: the voice is read from the saved WAV.",
                        severity="warning")
            return

        def named(label: str | None) -> None:
            if label is None:
                return

            def send(name: str | None) -> None:
                if name and name.strip() and self.bridge is not None:
                    session = Path(self.state.session_path).name.removesuffix(".meta.json")
                    self.bridge.enrol(Enrol(audio, tuple(self.state.turns), label,
                                            name.strip(), session or audio))
                    self.notify(f"enrolling {name.strip()}…", title="Voice profile")

            shown = self.state.name(label)
            self.push_screen(AskScreen(f"Remember {shown}'s voice as", "" if shown == label
                                       else shown, "a name"), send)

        self.push_screen(ChooseScreen("Enrol which speaker's voice?",
                                      self._speaker_options(labels)), named)

    def action_reject_voice(self) -> None:
        """A speaker named after a voice profile is someone else: back to the label, kept
        with the session."""
        named = [lb for lb in self.state.speakers if self.state.is_recognised(lb)]
        if not named:
            self.notify("No speaker here was named after a voice profile.", severity="warning")
            return

        def reject(label: str | None) -> None:
            if label is None:
                return
            self.state.reject(label)
            self._sync_transcript()
            if self.state.session_path:
                try:
                    store_rejection(Path(self.state.session_path), label)
                except SessionError as exc:
                    self.notify(str(exc), severity="error")

        self.push_screen(ChooseScreen("Which speaker is not who the voice profile says?",
                                      self._speaker_options(named)), reject)

    def action_voices(self) -> None:
        """The voice profiles on this machine: rename or forget one."""
        from engine.voices import VoiceError, VoiceStore, voices_dir

        store = VoiceStore(voices_dir(self.config))
        profiles = store.list()
        if not profiles:
            self.notify(f"No voice profiles yet (E enrols a speaker; {store.folder}).",
                        title="Voices")
            return
        options = [(p.name, f"{p.name} · {minutes(p.seconds)} of speech · "
                    f"{len(p.sources)} recording(s)") for p in profiles]

        def chosen(name: str | None) -> None:
            if name is None:
                return

            def act(what: str | None) -> None:
                if what == "rename":
                    self.push_screen(AskScreen(f"New name for the voice {name}", name), renamed)
                elif what == "forget":
                    self.push_screen(ConfirmScreen(f"Forget {name}'s voice on this machine? "
                                                   "(its profile file is deleted)"), forget)

            def renamed(new: str | None) -> None:
                if new and new.strip():
                    try:
                        store.rename(name, new)
                    except VoiceError as exc:
                        self.notify(str(exc), severity="error")

            def forget(yes: bool | None) -> None:
                if yes:
                    try:
                        store.forget(name)
                        self.notify(f"{name}'s voice is forgotten", title="Voices")
                    except VoiceError as exc:
                        self.notify(str(exc), severity="error")

            self.push_screen(ChooseScreen(f"Voice {name}", [("rename", "Rename"),
                                                             ("forget", "Forget")]), act)

        self.push_screen(ChooseScreen(f"Voice profiles ({store.folder})", options), chosen)

    def action_search(self) -> None:
        self.push_screen(AskScreen("Search the transcript", self.state.query,
                                   "words (accents optional)"), self._search)

    def _search(self, query: str | None) -> None:
        if query is None:
            return
        found = self.state.search(query)
        if query.strip() and not found:
            self.notify(f"'{query.strip()}' not found", severity="warning")
        self._sync_transcript()
        self.refresh_gauges()

    def action_next_match(self) -> None:
        if self.state.step_match(+1) is not None:
            self._sync_transcript()
            self.refresh_gauges()

    def action_previous_match(self) -> None:
        if self.state.step_match(-1) is not None:
            self._sync_transcript()
            self.refresh_gauges()

    def action_clear_search(self) -> None:
        if self.state.query:
            self.state.search("")
            self._sync_transcript()
            self.refresh_gauges()

    def action_device(self) -> None:
        """Pick the microphone for the next recording (the list comes from capture)."""
        if self.bridge is None:
            self.notify("The engine is not running.", severity="error")
            return
        self.bridge.list_devices()

    def _choose_device(self, devices: tuple[tuple[str, str], ...], error: str) -> None:
        if error or not devices:
            self.notify(error or "no input devices found", title="Microphone",
                        severity="error")
            return

        def chosen(device: str | None) -> None:
            if device is not None:
                self.device = device
                label = dict(devices).get(device, device)
                self.notify(f"next recording uses {label}", title="Microphone")

        self.push_screen(ChooseScreen("Microphone for the next recording", list(devices)),
                         chosen)

    def action_language(self) -> None:
        options = [(code, label) for code, label in LANGUAGES]
        self.push_screen(ChooseScreen("Language of the next recording", options),
                         self._set_language)

    def _set_language(self, code: str | None) -> None:
        if code is not None:
            self.language = code
            self.state.language = code
            self.refresh_gauges()

    def action_quit_console(self) -> None:
        if not self.state.recording:
            self.exit()
            return

        def answer(yes: bool | None) -> None:
            if yes:  # the WAV and journal on disk are complete up to now: stop flushes them
                if self.bridge is not None:
                    self.bridge.stop_recording()
                self.exit()

        self.push_screen(ConfirmScreen("Recording is in progress. Stop and quit?"), answer)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key | events.MouseDown):
            self.collector.key()  # no full collection while the user is acting
        await super().on_event(event)

    def on_unmount(self) -> None:
        self.collector.stop()
        if self.bridge is not None:
            self.bridge.stop()
            self.bridge.join(timeout=5)
