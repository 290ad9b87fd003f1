"""The Train pane: settings form, live loss chart, statistics, progress and sample log.

The pane only displays and collects settings; the App owns the trainer thread (so quitting,
SIGHUP and the Runs pane can all reach it) and feeds this pane the same messages whether the
run trains in this process or is followed through another process's ``metrics.jsonl``.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, ProgressBar, RichLog, Select

from ldlm_engine import (
    PRESETS,
    ConfigError,
    RunConfig,
    adapt_process,
    apply_overrides,
    get_preset,
    list_corpora,
)

from ..messages import (
    TrainCheckpoint,
    TrainEval,
    TrainMessage,
    TrainSample,
    TrainStatus,
    TrainStep,
)
from ..widgets.loss_chart import LossChart
from ..widgets.stats import REFRESH_S, TrainStats

PROCESSES = (("mask (LLaDA)", "mask"), ("uniform (seed)", "uniform"), ("ar baseline", "ar"))
DEFAULT_PRESET = "default"
# Input id -> (label, parser); parsers raise ValueError on bad text.
NUMERIC_FIELDS: dict[str, tuple[str, type]] = {
    "max-steps": ("steps", int),
    "batch-size": ("batch", int),
    "lr": ("lr", float),
    "seq-len": ("seq len", int),
    "sample-every": ("report", int),
}

TOOLTIPS = {
    "max-steps": "optimizer steps to train",
    "batch-size": "sequences per step",
    "lr": "peak learning rate",
    "seq-len": "tokens per sequence",
    "sample-every": "evaluate and print a sample every N steps (0 = never)",
}


def preset_values(name: str) -> dict[str, str]:
    """The form's numeric fields as a preset sets them (so switching preset refills them)."""
    cfg = get_preset(name)
    return {
        "max-steps": str(cfg.train.max_steps or ""),
        "batch-size": str(cfg.train.batch_size),
        "lr": f"{cfg.train.lr:g}",
        "seq-len": str(cfg.model.seq_len),
        "sample-every": str(cfg.train.sample_every or cfg.train.eval_every or 0),
    }


def build_config(settings: dict[str, Any]) -> RunConfig:
    """A validated RunConfig from the form's settings (ConfigError with one line if not).

    ``sample-every`` sets both the sample and the evaluation cadence, and the log cadence is
    shortened for short runs, so whatever the preset, a run shows samples and a curve.
    """
    cfg = get_preset(settings["preset"])
    adapt_process(cfg, settings["process"])
    steps = settings["max-steps"]
    every = settings["sample-every"]
    train: dict[str, Any] = {
        "max_steps": steps,
        "batch_size": settings["batch-size"],
        "lr": settings["lr"],
        "sample_every": every,
        "eval_every": every,
        "sample_every_epochs": 0,
        "eval_every_epochs": 0,
        "log_every": max(1, min(cfg.train.log_every, steps // 50)),
        "warmup_steps": min(cfg.train.warmup_steps, steps // 10),
    }
    if cfg.train.epochs is not None:
        train["epochs"] = None  # the form's step count is the budget
    model = {"seq_len": settings["seq-len"]}
    apply_overrides(cfg, {"data": {"source": settings["corpus"]}, "train": train, "model": model})
    return cfg.validate()


class Field(Horizontal):
    """One labelled one-line control; the form must fit 80×24 without a mouse."""

    DEFAULT_CSS = """
    Field { height: 1; margin-bottom: 1; }
    Field > Label { width: 8; color: $text-muted; }
    Field > Input, Field > Select { width: 1fr; }
    """

    def __init__(self, label: str, control, **kwargs) -> None:
        super().__init__(**kwargs)
        self._label = label
        self._control = control

    def compose(self) -> ComposeResult:
        yield Label(self._label)
        yield self._control


class TrainPane(Vertical):
    """Form on the left; stats, progress, chart and samples on the right."""

    def __init__(self, data: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.initial_corpus = data or "builtin"
        self.run_name = ""
        self.samples = 0
        self._progress: tuple[int, int] | None = None  # shown by a timer, not per step

    def on_mount(self) -> None:
        self.set_interval(REFRESH_S, self._show_progress)

    def _show_progress(self) -> None:
        if self._progress is not None:
            total, step = self._progress
            self._progress = None
            self.query_one(ProgressBar).update(total=total, progress=step)

    def compose(self) -> ComposeResult:
        values = preset_values(DEFAULT_PRESET)
        corpora = [(Text(f"{n}: {d}"), n) for n, d in list_corpora()]
        with Horizontal(id="train-body"):
            with VerticalScroll(id="train-form"):
                yield Field("corpus", Input(self.initial_corpus, id="corpus", compact=True))
                yield Field(
                    "known",
                    Select(corpora, id="corpus-pick", prompt="pick…", compact=True),
                )
                yield Field(
                    "preset",
                    Select(
                        [(p, p) for p in PRESETS],
                        value=DEFAULT_PRESET,
                        allow_blank=False,
                        id="preset",
                        compact=True,
                    ),
                )
                yield Field(
                    "process",
                    Select(
                        PROCESSES,
                        value=get_preset(DEFAULT_PRESET).process.kind,
                        allow_blank=False,
                        id="process",
                        compact=True,
                    ),
                )
                for fid, (label, typ) in NUMERIC_FIELDS.items():
                    kind = "integer" if typ is int else "number"
                    field = Input(values[fid], id=fid, type=kind, compact=True)
                    field.tooltip = TOOLTIPS.get(fid)
                    yield Field(label, field)
                with Horizontal(id="train-buttons"):
                    yield Button("Start", id="start", variant="success", compact=True)
                    yield Button("Pause", id="pause", compact=True, disabled=True)
                    yield Button("Stop", id="stop", variant="error", compact=True, disabled=True)
            with Vertical(id="train-main"):
                yield TrainStats(id="stats")
                yield ProgressBar(total=100, id="progress", show_eta=False)
                yield LossChart(id="chart")
                yield RichLog(id="samples", markup=False, highlight=False, wrap=True, max_lines=500)

    # ------------------------------------------------------------------ form
    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "corpus-pick" and event.value is not Select.NULL:
            self.query_one("#corpus", Input).value = str(event.value)
        elif event.select.id == "preset" and event.value is not Select.NULL:
            for fid, v in preset_values(str(event.value)).items():
                self.query_one(f"#{fid}", Input).value = v
            kind = get_preset(str(event.value)).process.kind
            self.query_one("#process", Select).value = kind

    def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {"start": "app.start", "pause": "app.pause", "stop": "app.stop"}
        if event.button.id in actions:
            event.stop()
            self.run_action(actions[event.button.id])

    def read_settings(self) -> dict[str, Any]:
        """The form as typed values; ConfigError names the first field that doesn't parse."""
        corpus = self.query_one("#corpus", Input).value.strip()
        if not corpus:
            raise ConfigError("corpus must not be empty (try 'builtin')")
        settings: dict[str, Any] = {
            "corpus": corpus,
            "preset": str(self.query_one("#preset", Select).value),
            "process": str(self.query_one("#process", Select).value),
        }
        for fid, (label, typ) in NUMERIC_FIELDS.items():
            text = self.query_one(f"#{fid}", Input).value.strip()
            try:
                settings[fid] = typ(text)
            except ValueError:
                raise ConfigError(f"{label} must be a number, got {text!r}") from None
        return settings

    def set_controls(self, running: bool, paused: bool = False, attached: bool = False) -> None:
        """Enable the buttons that make sense now (Pause/Stop also work on attached runs)."""
        self.query_one("#start", Button).disabled = running
        pause = self.query_one("#pause", Button)
        pause.disabled = not (running or attached)
        pause.label = "Resume" if paused else "Pause"
        self.query_one("#stop", Button).disabled = not (running or attached)

    # ------------------------------------------------------------------ display
    def reset(self, run: str, state: str, title: str = "loss") -> None:
        """Forget the previous run's curves and samples."""
        self.run_name = run
        self.query_one(LossChart).clear(title=title)
        self.query_one(TrainStats).reset(run, state)
        self.query_one("#samples", RichLog).clear()
        self.query_one(ProgressBar).update(total=100, progress=0)
        self._progress = None
        self.samples = 0

    def ingest(self, msg: TrainMessage) -> None:
        """Show one training message (ignored if it belongs to another run)."""
        if msg.run != self.run_name:
            return
        stats = self.query_one(TrainStats)
        chart = self.query_one(LossChart)
        if msg.step > stats.step:  # status/checkpoint steps too: a stop lands between logs
            stats.step, stats.dirty = msg.step, True
        if isinstance(msg, TrainStep):
            chart.add_train(msg.step, msg.loss)
            stats.update_step(
                msg.step,
                msg.total_steps,
                msg.loss,
                msg.lr,
                msg.tokens_per_s,
                msg.epoch,
                msg.elapsed_s,
                msg.peak_mem_mb,
            )
            if msg.total_steps:
                self._progress = (msg.total_steps, msg.step)
        elif isinstance(msg, TrainEval):
            chart.add_val(msg.step, msg.val_loss)
            stats.update_eval(msg.val_bits_per_char, msg.exact)
        elif isinstance(msg, TrainSample):
            log = self.query_one("#samples", RichLog)
            line = Text(f"[{msg.step}] ", style="bold cyan")
            text = msg.text.replace("\n", "⏎ ") if msg.text.strip() else "(blank)"
            line.append(text)  # a plain Text: model output is never parsed as markup
            log.write(line)
            self.samples += 1
        elif isinstance(msg, TrainStatus):
            stats.set_state(msg.state, msg.message)
        elif isinstance(msg, TrainCheckpoint):
            note = Text(f"[{msg.step}] checkpoint saved", style="dim")
            self.query_one("#samples", RichLog).write(note)

    @property
    def state(self) -> str:
        return self.query_one(TrainStats).state
