"""The Textual app that bare ``ldlm`` opens: Train, Generate and Runs tabs.

The App owns the one trainer thread (a Textual thread worker) so that every way out (the quit
dialog, SIGHUP/SIGTERM, the Runs pane's resume) reaches the same ``Trainer`` and every exit
goes through a checkpoint. Starting and resuming go through the engine's use cases
(:func:`~ldlm_engine.plan_run`, :func:`~ldlm_engine.plan_resume`), exactly as ``ldlm train``
does, so a run started here and one started on the command line from the same inputs are the
same run. The trainer talks to the UI only through small messages (:mod:`ldlm_tui.messages`);
a run trained by another process is followed by polling its ``metrics.jsonl`` and shown
through the very same messages.

There is one *current run*: the run being trained, attached to or opened. The Train form shows
its settings (read-only until "new run") and the Generate pane samples from it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import events, on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.timer import Timer
from textual.widgets import Input, Static, TabbedContent, TabPane, TextArea
from textual.worker import Worker, WorkerState

from ldlm_engine import (
    ConfigError,
    LdlmError,
    RunDir,
    discard_unstarted_run,
    plan_resume,
    plan_run,
    resolve_run,
)

from .app_runs import RunsMixin
from .messages import (
    LogEntry,
    TrainCheckpoint,
    TrainLaunched,
    TrainMessage,
    TrainStatus,
    event_to_message,
    in_app_words,
)
from .screens.generate import GeneratePane
from .screens.help import (
    ConfirmScreen,
    HelpScreen,
    LdlmCommands,
    LdlmFooter,
    MessagesScreen,
    QuitScreen,
    StatusLine,
)
from .screens.runs import RunsPane
from .screens.train import TrainPane
from .widgets.loss_chart import LossChart

if TYPE_CHECKING:  # torch: `ldlm watch` and the idle app open without importing it
    from ldlm_engine import Trainer

MAX_MESSAGES = 200
# Below this the form, chart and footer cannot all be drawn: the app says so instead.
MIN_SIZE = (60, 16)
# App keys that are letters: never acted on while a text field has focus.
LETTER_ACTIONS = frozenset(
    {"start", "pause", "stop", "log_scale", "tab", "new_run", "messages", "chart"}
)


class LdlmApp(RunsMixin, App):
    """See the module docstring; ``watch`` opens straight into a run, ``data`` fills the corpus.

    ``remember``: read and write the theme and the last form values in the user state folder
    (:mod:`ldlm_tui.state`); off by default so a test's app never sees the user's state.
    """

    CSS_PATH = "app.tcss"
    TITLE = "ldlm"
    SUB_TITLE = "diffusion language models"
    COMMANDS = App.COMMANDS | {LdlmCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark,f1", "help", "Help"),
        Binding("q,ctrl+q", "quit", "Quit"),
        Binding("s", "start", "Start"),
        Binding("p", "pause", "Pause"),
        Binding("x", "stop", "Stop"),
        Binding("n", "new_run", "New run"),
        Binding("l", "log_scale", "Log"),
        Binding("z", "chart('toggle_maximized')", "Zoom chart"),
        Binding("left_square_bracket", "chart('rougher')", "Rougher", show=False),
        Binding("right_square_bracket", "chart('smoother')", "Smoother", show=False),
        Binding("t", "tab('train')", "Train"),
        Binding("g", "tab('generate')", "Generate"),
        Binding("r", "tab('runs')", "Runs"),
        Binding("m", "messages", "Messages", show=False),
        Binding("escape", "leave_field", "Back", show=False),
    ]

    def __init__(
        self, watch: str | None = None, data: str | None = None, *, remember: bool = False
    ) -> None:
        super().__init__()
        self.watch_run = watch
        self.data = data
        self.remember = remember
        self.remembered: dict[str, Any] = {}
        if remember:
            from .state import load_state

            self.remembered = load_state()
        self.trainer: Trainer | None = None
        self.run_dir: RunDir | None = None
        self.train_state = ""  # last finished state of this app's trainer
        self.current_run = ""  # trained, attached or opened: what Train and Generate show
        self.messages: list[LogEntry] = []
        self._shown_messages = -1
        self._train_done = threading.Event()
        self._train_done.set()
        self._cancel = threading.Event()  # the UI is going away: do not start training
        self._tab_focused = ""  # a tab action_tab opened (and focused) itself
        self._launching = ""  # the run the trainer worker is working on (for its errors)
        self._resuming = False
        self._exit_after: str | None = None
        self.attached: RunDir | None = None
        self._follower = None
        self._follow_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield StatusLine(id="status-line")
        with TabbedContent(initial="train", id="tabs"):
            with TabPane("Train", id="train"):
                form = self.remembered.get("form")
                yield TrainPane(data=self.data, remembered=form, id="train-pane")
            with TabPane("Generate", id="generate"):
                yield GeneratePane(id="generate-pane")
            with TabPane("Runs", id="runs"):
                yield RunsPane(id="runs-pane")
        yield LdlmFooter(compact=True)
        need = f"terminal too small: need at least {MIN_SIZE[0]}×{MIN_SIZE[1]}"
        yield Static(need, id="too-small")

    def on_resize(self, event: events.Resize) -> None:
        small = event.size.width < MIN_SIZE[0] or event.size.height < MIN_SIZE[1]
        self.screen_stack[0].set_class(small, "too-small")

    def on_mount(self) -> None:
        theme = self.remembered.get("theme")
        if theme and theme in self.available_themes:
            self.theme = theme
        if self.train_pane.config_error:
            self.report(self.train_pane.config_error, "warning", "your config.toml")
        self._show_status()
        self.set_interval(0.25, self._show_status)
        if self.watch_run:
            self.attach(self.watch_run)

    def watch_theme(self, theme: str) -> None:
        """Remember the theme the user picks (the palette's "Change theme")."""
        if self.remember and theme != self.remembered.get("theme"):
            from .state import update_state

            self.remembered["theme"] = theme
            update_state(theme=theme)

    def main_query(self, selector: Any) -> Any:
        """``query_one`` on the main screen, also while a dialog is on top of it."""
        return self.screen_stack[0].query_one(selector)

    @property
    def train_pane(self) -> TrainPane:
        return self.main_query(TrainPane)

    @property
    def training(self) -> bool:
        """Whether this app's trainer thread is running (planning included)."""
        return not self._train_done.is_set()

    @property
    def active_tab(self) -> str:
        return str(self.main_query(TabbedContent).active)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Letter keys never act while a text field (or an open list) has the keyboard."""
        if action in LETTER_ACTIONS:
            focused = self.focused
            if isinstance(focused, (Input, TextArea)) or type(focused).__name__ == "SelectOverlay":
                return False
        if action == "chart":  # the chart's keys act where the chart is: the Train tab
            return self.active_tab == "train"
        return True

    # ------------------------------------------------------------------ messages
    def notify(  # type: ignore[override]
        self,
        message: str,
        *,
        title: str = "",
        severity: Any = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """A toast, also kept in the message log (m) and on the status line."""
        with contextlib.suppress(Exception):  # a message must never take the app down
            plain = Text.from_markup(message).plain if markup else message
            self.messages.append(LogEntry(time.time(), str(severity), title, plain))
            del self.messages[:-MAX_MESSAGES]
        if timeout is None and severity == "error":
            timeout = 10.0
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def report(
        self, message: str, severity: str = "information", title: str = "", *, form: bool = True
    ) -> None:
        """Say something (never parsed as markup); ``form``: name flags by the form's labels."""
        text = in_app_words(message) if form else message
        self.notify(text, title=title, severity=severity, markup=False)
        self._show_status()  # at once (the timer covers notices posted from other threads)

    def _show_status(self) -> None:
        key = (len(self.messages), self.messages[-1].when if self.messages else 0, self.current_run)
        if key == self._shown_messages:
            return
        entry = self.messages[-1] if self.messages else None
        try:
            line = self.main_query(StatusLine)
        except NoMatches:  # the app is closing
            return
        self._shown_messages = key  # type: ignore[assignment]
        line.show(self.current_run, entry)

    def action_messages(self) -> None:
        self.push_screen(MessagesScreen(list(self.messages)))

    # ------------------------------------------------------------------ navigation
    def action_tab(self, tab: str) -> None:
        tabs = self.main_query(TabbedContent)
        if tabs.active != tab:
            self._tab_focused = tab  # its TabActivated must not move the cursor again
        tabs.active = tab
        self._focus_tab(tab)

    @on(TabbedContent.TabActivated)
    def _on_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """A tab opened by mouse (or a key of the tab bar) gets the keyboard too."""
        tab = event.pane.id
        if tab is None:
            return
        if tab == self._tab_focused:
            self._tab_focused = ""
            return
        self._focus_tab(tab)

    def _focus_tab(self, tab: str) -> None:
        """Put the keyboard where that tab is used: the prompt, the runs table."""
        if tab == "runs":
            self.main_query(RunsPane).refresh_runs()
            self.main_query("#runs-table").focus()
        elif tab == "generate":
            pane = self.main_query("#generate-pane")
            focus = getattr(pane, "focus_prompt", None)
            focus = focus or getattr(pane, "action_focus_prompt", None)
            if focus is not None:
                focus()
        elif tab == "train" and isinstance(self.focused, Input):
            self.set_focus(None)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_log_scale(self) -> None:
        self.main_query(LossChart).toggle_log_scale()

    def action_chart(self, method: str) -> None:
        """``[`` / ``]`` / ``z`` from anywhere on the Train tab: no need to focus the chart."""
        if method in ("rougher", "smoother", "toggle_maximized"):
            getattr(self.main_query(LossChart), method)()

    def action_leave_field(self) -> None:
        """Escape: leave a text field (letter keys act again), or end a loss comparison."""
        if isinstance(self.focused, Input):
            self.set_focus(None)
        else:
            self.main_query(LossChart).clear_compare()

    def _confirm(self, question: str, then: Callable[[], None], yes: str = "Yes") -> None:
        """Run ``then`` after a yes (y/enter) to ``question``; n/escape cancels."""

        def answered(ok: bool | None) -> None:
            if ok:
                then()

        self.push_screen(ConfirmScreen(question, yes), answered)

    # ------------------------------------------------------------------ current run
    def _set_current(self, rd: RunDir, config: dict[str, Any] | None = None) -> None:
        """``rd`` becomes the current run: the Train form shows it, Generate samples it."""
        self.current_run = rd.name
        if config is None:
            with contextlib.suppress(LdlmError, OSError, ValueError):
                config = rd.read_config()
        if not self.training or (self.run_dir is not None and self.run_dir.name == rd.name):
            self.train_pane.show_run(rd.name, config)
        self._generate_run(rd)
        self._show_status()

    def _generate_run(self, rd: RunDir) -> None:
        pane = self.main_query("#generate-pane")
        ref = str(rd.path)  # a run outside the runs folder is known by its path
        with contextlib.suppress(LdlmError, OSError):
            if resolve_run(rd.name).path.resolve() == rd.path.resolve():
                ref = rd.name
        try:
            pane.set_run(ref)  # type: ignore[attr-defined]
        except LdlmError as e:
            self.report(str(e), "error", "generate")

    def action_new_run(self) -> None:
        """Unlock the Train form for a new run (the shown settings are the template)."""
        self.train_pane.unlock()
        self.main_query(TabbedContent).active = "train"
        self.train_pane.query_one("#name", Input).focus()

    # ------------------------------------------------------------------ training
    def action_start(self) -> None:
        if self.training:
            self.report("A run is already training here (x stops it).", "warning")
            return
        if self.train_pane.locked:
            self.action_tab("train")
            self.report(
                f"The form shows run {self.train_pane.shown_run}; press n for a new run "
                "(its settings stay as a template).",
                "warning",
            )
            return
        if self.active_tab != "train":
            self._confirm(
                "Start training a new run with the Train tab's settings?", self._start, "Start"
            )
            return
        self._start()

    def _start(self) -> None:
        """Read the form, then plan, create and train in the worker (nothing on disk until
        the plan holds: a bad corpus or number leaves no run directory)."""
        if self.training:
            return
        try:
            choices = self.train_pane.read_choices()
        except LdlmError as e:
            self.report(str(e), "error", "cannot start")
            return
        if self.remember:
            from .state import update_state

            update_state(form=self.train_pane.values())
        self._detach()
        self.train_pane.reset("", "preparing")  # reading and tokenizing the corpus
        self.train_pane.set_controls(running=True)
        self._launch(partial(self._train_new, choices), "new run")

    def _launch(self, job: Callable[[], tuple[str, str]], what: str, resume: bool = False) -> None:
        self._train_done.clear()
        self._launching, self._resuming = what, resume
        self.train_state = ""
        self.run_worker(
            job, thread=True, exclusive=True, exit_on_error=False, name=what, group="trainer"
        )

    def _sink(self, run: str) -> Callable[[object], None]:
        """Runs on the trainer thread: convert and post (thread-safe, never blocks on the UI)."""

        def sink(event) -> None:
            msg = event_to_message(event.to_dict(), run)
            if msg is not None:
                self.post_message(msg)

        return sink

    def _train_new(self, choices) -> tuple[str, str]:
        """Trainer thread: plan (reads and tokenizes the corpus), create, train."""
        try:
            plan = plan_run(choices)
            if self._cancel.is_set():
                return "", "cancelled"
            rd = plan.create()
            self._launching = rd.name
            try:
                trainer = plan.trainer(rd, sinks=[self._sink(rd.name)], handle_signals=False)
            except BaseException:
                rd.close()
                discard_unstarted_run(rd)
                raise
            return self._train(trainer, rd, fresh=True)
        finally:
            self._train_done.set()

    def _train_resume(self, name: str) -> tuple[str, str]:
        """Trainer thread: check the run may continue, then train it in place."""
        try:
            try:
                plan = plan_resume(name)
            except ConfigError as e:  # its advice is for the command line: say where to type it
                if "--max-steps" not in str(e):
                    raise
                raise ConfigError(
                    f"{e}: from a shell, `ldlm train --resume {name} --max-steps N`"
                ) from None
            rd = plan.run
            self._launching = rd.name
            # The app resumes with the run's own settings: nothing for record_settings().
            trainer = plan.trainer(sinks=[self._sink(rd.name)], handle_signals=False)
            return self._train(trainer, rd, fresh=False)
        finally:
            self._train_done.set()

    def _train(self, trainer: Trainer, rd: RunDir, *, fresh: bool) -> tuple[str, str]:
        history = [] if fresh else rd.read_metrics()
        self.trainer, self.run_dir = trainer, rd
        self.post_message(TrainLaunched(rd.name, rd.read_config(), history, resumed=not fresh))
        try:
            if self._cancel.is_set():
                rd.close()
                if fresh:
                    discard_unstarted_run(rd)
                return rd.name, "cancelled"
            try:
                state = trainer.run()
            except BaseException:
                if fresh and trainer.state == "created" and trainer.step == 0:
                    rd.close()
                    discard_unstarted_run(rd)  # it never took a step: leave nothing behind
                raise
            return rd.name, state
        finally:
            rd.close()

    def on_train_launched(self, msg: TrainLaunched) -> None:
        self._detach()
        rd = self.run_dir
        if rd is None or rd.name != msg.run:
            return
        self.train_pane.reset(msg.run, "resuming" if msg.resumed else "starting")
        self.main_query("#generate-pane").set_live(rd.path, self.trainer)  # type: ignore[attr-defined]
        self._set_current(rd, msg.config)
        for d in msg.history:  # a resumed run's curve so far; the trainer appends to it
            if (m := event_to_message(d, msg.run)) is not None:
                self.train_pane.ingest(m)
        if msg.resumed:
            self.train_pane.query_one("#stats").set_state("resuming")
        self.train_pane.set_controls(running=True)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The trainer worker ended: its result, or its error in one line."""
        worker = event.worker
        if worker.group != "trainer":
            return
        if event.state == WorkerState.SUCCESS:
            run, state = worker.result or ("", "failed")
            self._trainer_finished(run, state, "")
        elif event.state == WorkerState.ERROR:
            error = worker.error
            if isinstance(error, LdlmError):
                text = str(error)
            else:  # a bug or an OOM must not take the UI down with it
                first = str(error).splitlines()[0] if str(error) else ""
                text = f"{type(error).__name__}: {first}"
            self._trainer_finished(self._launching, "failed", text)
        elif event.state == WorkerState.CANCELLED:
            self._trainer_finished("", "cancelled", "")

    def _trainer_finished(self, run: str, state: str, error: str) -> None:
        self.train_state = state
        if self.run_dir is not None:  # Generate goes back to the run's checkpoints
            self.main_query("#generate-pane").set_live(self.run_dir.path, None)  # type: ignore[attr-defined]
        pane = self.train_pane
        pane.set_controls(running=False)
        if error:
            started = self.run_dir is not None and self.run_dir.name == run and run
            if started:
                pane.query_one("#stats").set_state("failed", in_app_words(error))
            else:
                pane.query_one("#stats").set_state("not started")
            title = "training failed" if started else "cannot start"
            # A resume has no form: its advice names `ldlm train` flags, and says so.
            self.report(error, "error", title, form=not self._resuming)
        elif state == "failed":
            reason = getattr(pane.query_one("#stats"), "message", "") or "see train.log"
            self.report(f"Run {run} failed: {reason}", "error", "training failed")
        elif state == "cancelled":
            pass
        elif self._exit_after is None and run:
            self.report(f"Run {run} {state} at step {self.trainer.step if self.trainer else 0}.")
        if self._exit_after is not None:
            self._finish_exit()

    @on(TrainMessage)
    def _on_train_message(self, msg: TrainMessage) -> None:
        self.train_pane.ingest(msg)
        if isinstance(msg, TrainCheckpoint) and msg.run == self.current_run:
            rd = self.run_dir if self.run_dir is not None else self.attached
            if rd is not None and rd.name == msg.run:
                self._generate_run(rd)  # Generate offers the newest checkpoint
        if isinstance(msg, TrainStatus) and msg.run == self.train_pane.run_name:
            paused = msg.state == "paused"
            live = self.attached is not None and msg.state in ("started", "resumed", "paused")
            self.train_pane.set_controls(running=self.training, paused=paused, attached=live)

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
            self.train_pane.set_controls(running=False, paused=action == "pause", attached=True)
            self.report(f"Asked run {run.name} to {action}.")
            return
        self.report("Nothing is training.", "warning")

    def action_stop(self) -> None:
        if not (self.training and self.trainer is not None) and self._live_attached() is None:
            self.report("Nothing is training.", "warning")
            return
        if self.active_tab != "train":
            self._confirm("Stop the run? (it saves a checkpoint first)", self._stop, "Stop")
            return
        self._stop()

    def _stop(self) -> None:
        if self.training and self.trainer is not None:
            self.trainer.request_stop("stopped from the TUI")
            self.train_pane.query_one("#stats").set_state("stopping")
            self.report("Stopping: saving a checkpoint…")
            return
        run = self._live_attached()
        if run is not None:
            run.request("stop")
            self.report(f"Asked run {run.name} to stop (it checkpoints first).")

    # ------------------------------------------------------------------ quitting
    async def action_quit(self) -> None:
        if not self.training or self.run_dir is None or self.trainer is None:
            self._cancel.set()
            self.exit()
            return

        def chosen(choice: str | None) -> None:
            if choice is None or not self.training or self.trainer is None:
                if choice is not None:
                    self.exit()
                return
            self._exit_after = choice
            self.trainer.request_stop("quit from the TUI")
            self.report("Saving a checkpoint before quitting…")

        self.push_screen(QuitScreen(self.run_dir.name), chosen)

    def _finish_exit(self) -> None:
        """After the trainer thread saved: exit, saying in the shell what became of the run."""
        message = None
        rd = self.run_dir
        step = self.trainer.step if self.trainer is not None else 0
        if rd is not None and self.train_state == "stopped":
            message = f"stopped run {rd.name} at step {step}; resume: ldlm train --resume {rd.name}"
        if self._exit_after == "background" and rd is not None and self.train_state == "stopped":
            from .launch import continue_in_background

            message = continue_in_background(rd.path, rd.name, rd.log_path)
        self.exit(message=message)

    def hangup(self) -> None:
        """SIGHUP/SIGTERM: stop (with a checkpoint) and exit; safe to call from a signal handler."""
        self._cancel.set()  # a threading.Event: signal-safe
        if self.trainer is not None and self.training:
            self._exit_after = self._exit_after or "stop"
            self.trainer.request_stop("terminal closed")
            return
        loop = getattr(self, "_loop", None)
        if loop is not None:
            loop.call_soon_threadsafe(self.exit)

    def wait_for_trainer(self, timeout: float = 300.0) -> bool:
        """Stop any trainer thread still running (the UI died) and wait for its checkpoint."""
        self._cancel.set()
        if self.trainer is not None and self.training:
            self.trainer.request_stop("the TUI exited")
        return self._train_done.wait(timeout)


def run_app(watch: str | None = None, data: str | None = None) -> None:
    """Run the TUI; a lost terminal (SIGHUP) or SIGTERM checkpoints the run before exiting."""
    app = LdlmApp(watch=watch, data=data, remember=True)
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
