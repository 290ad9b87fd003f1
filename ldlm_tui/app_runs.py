"""What the app does with runs it did not start itself: follow one that another process trains
(attach), make one the current run (open), overlay several (compare), continue one (resume).

A mixin of :class:`ldlm_tui.app.LdlmApp`, which owns the trainer thread, the panes and the
current run; everything here goes through the same messages and the same current run.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from textual.timer import Timer

from ldlm_engine import LdlmError, RunDir, resolve_run

from .messages import RunAction, event_to_message
from .widgets.loss_chart import LossChart, compare_labels

FOLLOW_EVERY_S = 0.5  # while the run logs
FOLLOW_IDLE_MAX_S = 2.0  # a quiet (or finished) run is looked at ever more rarely, up to this


class RunsMixin:
    """Attach, open, compare and resume, for :class:`~ldlm_tui.app.LdlmApp`."""

    attached: RunDir | None
    _follower: Any
    _follow_timer: Timer | None
    _follow_delay: float

    def _resolve(self, name: str) -> RunDir | None:
        try:
            return resolve_run(name)
        except LdlmError as e:
            self.report(str(e), "error")
            return None

    def attach(self, name: str) -> None:
        """Follow a run's metrics (any process's) in the Train pane's chart, stats and log."""
        run = self._resolve(name)
        if run is None:
            return
        if self.training and self.run_dir is not None:
            if run.path.resolve() == self.run_dir.path.resolve():
                self.action_tab("train")
                return
            self.report("A run is training here; stop it (x) before attaching.", "error")
            return
        self._follow(run)
        self.action_tab("train")

    def _follow(self, run: RunDir) -> None:
        self._detach()
        self.attached = run
        self._follower = run.metrics_follower()
        self.train_pane.reset(run.name, run.liveness(), title=f"loss: {run.name}")
        self.train_pane.set_controls(running=False, attached=True)
        self._set_current(run)
        self._follow_delay = FOLLOW_EVERY_S
        self._poll_follower()

    def _detach(self) -> None:
        if self._follow_timer is not None:
            self._follow_timer.stop()
        self._follow_timer, self._follower, self.attached = None, None, None

    def _poll_follower(self) -> None:
        """Read what the run logged since the last look, then look again: soon while it logs,
        ever later (up to FOLLOW_IDLE_MAX_S) while it is quiet, so watching costs ~nothing."""
        self._follow_timer = None
        follower, run = self._follower, self.attached
        if run is None or follower is None:
            return
        events = follower.poll()
        for d in events:
            msg = event_to_message(d, run.name)
            if msg is not None:
                self._on_train_message(msg)
        if self._follower is not follower or self._follow_timer is not None:
            return  # detached or attached to another run meanwhile
        delay = FOLLOW_EVERY_S if events else min(2 * self._follow_delay, FOLLOW_IDLE_MAX_S)
        self._follow_delay = delay
        self._follow_timer = self.set_timer(delay, self._poll_follower)

    def _live_attached(self) -> RunDir | None:
        if self.attached is not None and self.attached.liveness() == "live":
            return self.attached
        return None

    def open_run(self, name: str) -> None:
        """Make ``name`` the current run and sample from it in the Generate tab.

        While a run trains here the Train pane keeps showing it; otherwise it follows the
        opened run (its curve, its settings)."""
        run = self._resolve(name)
        if run is None:
            return
        if self.training:
            self._generate_run(run)
            self.current_run = run.name
        else:
            self._follow(run)
        self.action_tab("generate")

    def compare(self, names: tuple[str, ...]) -> None:
        """Overlay these runs' losses, each legend naming the settings that differ."""
        curves: dict[str, tuple[list[float], list[float]]] = {}
        configs: dict[str, dict[str, Any] | None] = {}
        for name in names:
            try:
                rd = resolve_run(name)
                events = rd.read_metrics()
            except LdlmError as e:
                self.report(str(e), "error")
                continue
            steps = [e for e in events if e.get("event") == "step"]
            xs = [float(e["step"]) for e in steps if isinstance(e.get("loss"), (int, float))]
            ys = [float(e["loss"]) for e in steps if isinstance(e.get("loss"), (int, float))]
            curves[name] = (xs, ys)
            try:
                configs[name] = rd.read_config()
            except LdlmError:
                configs[name] = None  # its curve still shows, under its name
        if curves:
            self.main_query(LossChart).set_compare(curves, compare_labels(configs))
            self.action_tab("train")

    def resume_run(self, name: str) -> None:
        """Continue a stopped run in this app's trainer thread, with the run's own settings."""
        if self.training:
            self.report("A run is already training here (x stops it).", "warning")
            return
        if self._resolve(name) is None:
            return
        self.train_pane.set_controls(running=True)
        self._launch(partial(self._train_resume, name), name, resume=True)
        self.action_tab("train")

    def on_run_action(self, msg: RunAction) -> None:
        if msg.action == "open":
            self.open_run(msg.runs[0])
        elif msg.action == "attach":
            self.attach(msg.runs[0])
        elif msg.action == "compare":
            self.compare(msg.runs)
        elif msg.action == "resume":
            self.resume_run(msg.runs[0])
