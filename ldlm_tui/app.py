"""The Textual app that bare ``ldlm`` opens: Train, Generate and Runs tabs.

The App owns the one trainer thread (a Textual thread worker) so that every way out (the quit
dialog, SIGHUP/SIGTERM, the Runs pane's resume) reaches the same ``Trainer`` and every exit
goes through a checkpoint. The trainer talks to the UI only through small messages
(:mod:`ldlm_tui.messages`); a run trained by another process is followed by polling its
``metrics.jsonl`` and shown through the very same messages.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.timer import Timer
from textual.widgets import Footer, Header, Input, Static, TabbedContent, TabPane

from ldlm_engine import (
    LdlmError,
    RunConfig,
    RunDir,
    Trainer,
    list_corpora,
    list_runs,
    resolve_run,
)

from .messages import RunAction, TrainFinished, TrainMessage, TrainStatus, event_to_message
from .screens.help import HelpScreen, QuitScreen
from .screens.runs import RunsPane
from .screens.train import TrainPane, build_config
from .widgets.loss_chart import LossChart

try:  # written in parallel by another engineer; the app must work without it
    from .screens.generate import GeneratePane
except ImportError:  # pragma: no cover - depends on the tree
    GeneratePane = None  # type: ignore[assignment,misc]

FOLLOW_EVERY_S = 0.5


class GeneratePlaceholder(Static):
    """Stands in for the Generate pane when it is not installed."""

    def set_run(self, run: str) -> None:
        self.update(Text(f"Run {run} selected; the Generate pane is not available."))


class LdlmCommands(Provider):
    """ldlm's entries in the command palette (Ctrl+P)."""

    def _commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        app = self.app
        assert isinstance(app, LdlmApp)
        cmds: list[tuple[str, str, Callable[[], object]]] = [
            ("Start training", "train with the Train tab's settings (s)", app.action_start),
            ("Pause / resume training", "pause or resume the run (p)", app.action_pause),
            ("Stop training", "checkpoint and stop the run (x)", app.action_stop),
            ("Toggle log scale", "loss chart y axis (l)", app.action_log_scale),
            ("Open run…", "the Runs tab: pick a run, Enter (r)", partial(app.action_tab, "runs")),
            ("Generate", "the Generate tab (g)", partial(app.action_tab, "generate")),
            ("ldlm keys", "list every ldlm key (?)", app.action_help),
        ]
        for info in list_runs()[:50]:
            name = info.name
            cmds.append(
                (f"Open run {name}", f"{info.state}, step {info.step}", partial(app.open_run, name))
            )
            cmds.append(
                (f"Attach to run {name}", "follow its loss and samples", partial(app.attach, name))
            )
        return cmds

    async def discover(self) -> Hits:
        for title, help_text, callback in self._commands()[:7]:
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)


class LdlmApp(App):
    """See the module docstring; ``watch`` opens straight into a run, ``data`` fills the corpus."""

    CSS_PATH = "app.tcss"
    TITLE = "ldlm"
    SUB_TITLE = "diffusion language models"
    COMMANDS = App.COMMANDS | {LdlmCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "start", "Start"),
        Binding("p", "pause", "Pause"),
        Binding("x", "stop", "Stop"),
        Binding("l", "log_scale", "Log"),
        Binding("t", "tab('train')", "Train"),
        Binding("g", "tab('generate')", "Generate"),
        Binding("r", "tab('runs')", "Runs"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
        Binding("escape", "leave_field", "Back", show=False),
    ]

    def __init__(self, watch: str | None = None, data: str | None = None) -> None:
        super().__init__()
        self.watch_run = watch
        self.data = data
        self.trainer: Trainer | None = None
        self.run_dir: RunDir | None = None
        self.train_state = ""  # last TrainFinished state of this app's trainer
        self._train_done = threading.Event()
        self._train_done.set()
        self._exit_after: str | None = None
        self.attached: RunDir | None = None
        self._follower = None
        self._follow_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with TabbedContent(initial="train", id="tabs"):
            with TabPane("Train", id="train"):
                yield TrainPane(data=self.data, id="train-pane")
            with TabPane("Generate", id="generate"):
                if GeneratePane is not None:
                    yield GeneratePane(id="generate-pane")
                else:
                    yield GeneratePlaceholder(
                        "Pick a run in the Runs tab (r) and press Enter.", id="generate-pane"
                    )
            with TabPane("Runs", id="runs"):
                yield RunsPane(id="runs-pane")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        if self.watch_run:
            self.attach(self.watch_run)

    @property
    def train_pane(self) -> TrainPane:
        return self.query_one(TrainPane)

    @property
    def training(self) -> bool:
        """Whether this app's trainer thread is running."""
        return not self._train_done.is_set()

    # ------------------------------------------------------------------ navigation
    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        if tab == "runs":
            self.query_one(RunsPane).refresh_runs()
            self.query_one("#runs-table").focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_log_scale(self) -> None:
        self.query_one(LossChart).toggle_log_scale()

    def action_leave_field(self) -> None:
        """Escape: leave a text field (letter keys act again), or end a loss comparison."""
        if isinstance(self.focused, Input):
            self.set_focus(None)
        else:
            self.query_one(LossChart).clear_compare()

    # ------------------------------------------------------------------ training
    def action_start(self) -> None:
        if self.training:
            self.notify("A run is already training here (x stops it).", severity="warning")
            return
        try:
            settings = self.train_pane.read_settings()
            cfg = build_config(settings)
            _check_corpus(cfg.data.source)
            run_dir = RunDir.create(cfg)
        except LdlmError as e:
            self.notify(str(e), severity="error", title="cannot start")
            return
        self._launch(cfg, run_dir, resume=False)

    def _launch(self, cfg: RunConfig, run_dir: RunDir, *, resume: bool) -> None:
        """Start the trainer thread on ``run_dir`` and point the Train pane at it."""
        run = run_dir.name
        try:
            trainer = Trainer(
                cfg, run_dir=run_dir, sinks=[self._sink(run)], resume=resume, handle_signals=False
            )
        except LdlmError as e:
            self.notify(str(e), severity="error", title="cannot start")
            return
        self._detach()
        self.trainer, self.run_dir, self.train_state = trainer, run_dir, ""
        self._train_done.clear()
        pane = self.train_pane
        pane.reset(run, "starting", title=f"loss: {run}")
        if resume:  # show the curve so far; the trainer appends to it
            for d in run_dir.read_metrics():
                if (msg := event_to_message(d, run)) is not None:
                    pane.ingest(msg)
            pane.query_one("#stats").set_state("resuming")
        pane.set_controls(running=True)
        self.action_tab("train")
        self.run_worker(
            partial(self._train_thread, trainer, run_dir),
            thread=True,
            name=f"train {run}",
            group="trainer",
            exit_on_error=False,
        )

    def _sink(self, run: str) -> Callable[[object], None]:
        """Runs on the trainer thread: convert and post (thread-safe, never blocks on the UI)."""

        def sink(event) -> None:
            msg = event_to_message(event.to_dict(), run)
            if msg is not None:
                self.post_message(msg)

        return sink

    def _train_thread(self, trainer: Trainer, run_dir: RunDir) -> None:
        state, error = "failed", ""
        try:
            state = trainer.run()
        except LdlmError as e:
            error = str(e)
        except Exception as e:  # a bug or an OOM must not take the UI down with it
            error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        finally:
            run_dir.close()
            self._train_done.set()
            self.post_message(TrainFinished(run_dir.name, state, error))

    @on(TrainMessage)
    def _on_train_message(self, msg: TrainMessage) -> None:
        self.train_pane.ingest(msg)
        if isinstance(msg, TrainStatus) and msg.run == self.train_pane.run_name:
            paused = msg.state == "paused"
            live = self.attached is not None and msg.state in ("started", "resumed", "paused")
            self.train_pane.set_controls(running=self.training, paused=paused, attached=live)

    def on_train_finished(self, msg: TrainFinished) -> None:
        self.train_state = msg.state
        self.train_pane.set_controls(running=False)
        if msg.error:
            self.train_pane.query_one("#stats").set_state("failed", msg.error)
            self.notify(msg.error, severity="error", title="training failed")
        elif self._exit_after is None:
            self.notify(f"Run {msg.run} {msg.state}.")
        if self._exit_after is not None:
            self._finish_exit()

    def action_pause(self) -> None:
        if self.training and self.trainer is not None:
            if self.trainer.paused:
                self.trainer.request_resume()
            else:
                self.trainer.request_pause()
            self.train_pane.set_controls(running=True, paused=self.trainer.paused)
            return
        run = self._live_attached()
        if run is not None:
            action = "resume" if self.train_pane.state == "paused" else "pause"
            run.request(action)
            self.notify(f"Asked run {run.name} to {action}.")
            return
        self.notify("Nothing is training.", severity="warning")

    def action_stop(self) -> None:
        if self.training and self.trainer is not None:
            self.trainer.request_stop("stopped from the TUI")
            self.train_pane.query_one("#stats").set_state("stopping")
            self.notify("Stopping: saving a checkpoint…")
            return
        run = self._live_attached()
        if run is not None:
            run.request("stop")
            self.notify(f"Asked run {run.name} to stop (it checkpoints first).")
            return
        self.notify("Nothing is training.", severity="warning")

    # ------------------------------------------------------------------ attach / runs
    def attach(self, name: str) -> None:
        """Follow a run's metrics (any process's) in the Train pane's chart, stats and log."""
        try:
            run = resolve_run(name)
        except LdlmError as e:
            self.notify(str(e), severity="error")
            return
        if self.training and self.run_dir is not None:
            if run.path.resolve() == self.run_dir.path.resolve():
                self.action_tab("train")
                return
            self.notify("A run is training here; stop it (x) before attaching.", severity="error")
            return
        self._detach()
        self.attached = run
        self._follower = run.metrics_follower()
        self.train_pane.reset(run.name, run.liveness(), title=f"loss: {run.name}")
        self.train_pane.set_controls(running=False, attached=True)
        self._poll_follower()
        self._follow_timer = self.set_interval(FOLLOW_EVERY_S, self._poll_follower)
        self.action_tab("train")

    def _detach(self) -> None:
        if self._follow_timer is not None:
            self._follow_timer.stop()
        self._follow_timer, self._follower, self.attached = None, None, None

    def _poll_follower(self) -> None:
        if self.attached is None or self._follower is None:
            return
        for d in self._follower.poll():
            msg = event_to_message(d, self.attached.name)
            if msg is not None:
                self._on_train_message(msg)

    def _live_attached(self) -> RunDir | None:
        if self.attached is not None and self.attached.liveness() == "live":
            return self.attached
        return None

    def open_run(self, name: str) -> None:
        pane = self.query_one("#generate-pane")
        try:
            pane.set_run(name)  # type: ignore[attr-defined]
        except LdlmError as e:
            self.notify(str(e), severity="error")
            return
        self.action_tab("generate")

    def compare(self, names: tuple[str, ...]) -> None:
        curves: dict[str, tuple[list[float], list[float]]] = {}
        for name in names:
            try:
                events = resolve_run(name).read_metrics()
            except LdlmError as e:
                self.notify(str(e), severity="error")
                continue
            steps = [e for e in events if e.get("event") == "step"]
            xs = [float(e["step"]) for e in steps if isinstance(e.get("loss"), (int, float))]
            ys = [float(e["loss"]) for e in steps if isinstance(e.get("loss"), (int, float))]
            curves[name] = (xs, ys)
        if curves:
            self.query_one(LossChart).set_compare(curves)
            self.action_tab("train")

    def resume_run(self, name: str) -> None:
        """Continue a stopped run in this app's trainer thread, with the run's own settings."""
        if self.training:
            self.notify("A run is already training here (x stops it).", severity="warning")
            return
        try:
            run = resolve_run(name)
            state = run.liveness()
            if state == "live":
                raise LdlmError(f"run {name} is live; attach to it (a) instead")
            if state == "finished":
                raise LdlmError(f"run {name} has finished; nothing to resume")
            cfg = RunConfig.from_dict(run.read_config())
        except LdlmError as e:
            self.notify(str(e), severity="error")
            return
        self._launch(cfg, run, resume=True)

    def on_run_action(self, msg: RunAction) -> None:
        if msg.action == "open":
            self.open_run(msg.runs[0])
        elif msg.action == "attach":
            self.attach(msg.runs[0])
        elif msg.action == "compare":
            self.compare(msg.runs)
        elif msg.action == "resume":
            self.resume_run(msg.runs[0])

    # ------------------------------------------------------------------ quitting
    async def action_quit(self) -> None:
        if not self.training or self.run_dir is None:
            self.exit()
            return

        def chosen(choice: str | None) -> None:
            if choice is None or not self.training or self.trainer is None:
                if choice is not None:
                    self.exit()
                return
            self._exit_after = choice
            self.trainer.request_stop("quit from the TUI")
            self.notify("Saving a checkpoint before quitting…", timeout=30)

        self.push_screen(QuitScreen(self.run_dir.name), chosen)

    def _finish_exit(self) -> None:
        """After the trainer thread saved: exit, handing the run to a new process if asked."""
        message = None
        rd = self.run_dir
        if self._exit_after == "background" and rd is not None and self.train_state == "stopped":
            argv = ["train", "--resume", str(rd.path)]
            try:
                from .launch import spawn_detached

                pid = spawn_detached(argv, rd.log_path)
            except Exception as e:
                message = (
                    f"could not continue run {rd.name} in the background ({e}); "
                    f"resume it with: ldlm train --resume {rd.name}"
                )
            else:
                message = (
                    f"run {rd.name} continues in the background (pid {pid}): ldlm watch {rd.name}"
                )
        self.exit(message=message)

    def hangup(self) -> None:
        """SIGHUP/SIGTERM: stop (with a checkpoint) and exit; safe to call from a signal handler."""
        if self.trainer is not None and self.training:
            self._exit_after = self._exit_after or "stop"
            self.trainer.request_stop("terminal closed")  # a threading.Event: signal-safe
            return
        loop = getattr(self, "_loop", None)
        if loop is not None:
            loop.call_soon_threadsafe(self.exit)

    def wait_for_trainer(self, timeout: float = 300.0) -> bool:
        """Stop any trainer thread still running (the UI died) and wait for its checkpoint."""
        if self.trainer is not None and self.training:
            self.trainer.request_stop("the TUI exited")
        return self._train_done.wait(timeout)


def _check_corpus(source: str) -> None:
    """Refuse an unknown corpus before a run directory is created for it."""
    if source in {name for name, _ in list_corpora()}:
        return
    if not Path(source).expanduser().exists():
        raise LdlmError(f"no such file, folder or corpus: {source}")


def run_app(watch: str | None = None, data: str | None = None) -> None:
    """Run the TUI; a lost terminal (SIGHUP) or SIGTERM checkpoints the run before exiting."""
    app = LdlmApp(watch=watch, data=data)
    previous = {}

    def on_signal(signum, frame) -> None:
        app.hangup()

    for sig in (getattr(signal, "SIGHUP", None), signal.SIGTERM):
        if sig is not None:
            previous[sig] = signal.signal(sig, on_signal)
    try:
        app.run()
    finally:
        app.wait_for_trainer()
        for sig, handler in previous.items():
            with contextlib.suppress(Exception):
                signal.signal(sig, handler)
