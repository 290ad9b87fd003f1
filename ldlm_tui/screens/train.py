"""The Train pane: settings form, live loss chart, statistics, progress and sample log.

The pane only displays and collects settings; the App owns the trainer thread (so quitting,
SIGHUP and the Runs pane can all reach it) and feeds this pane the same messages whether the
run trains in this process or is followed through another process's ``metrics.jsonl``.

The form holds no rules of its own: it starts from the engine's ``layered_config`` (the preset
under the user's config.toml) and hands back ``RunChoices`` holding only what the user changed,
so the engine's ``plan_run`` makes of it exactly what ``ldlm train`` makes of the same flags.
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
    RunChoices,
    RunConfig,
    get_preset,
    layered_config,
    list_corpora,
)
from ldlm_engine.config import PROCESSES, TOKENIZERS

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

# How a process is described in the picker; the choices themselves come from the engine.
PROCESS_LABELS = {
    "mask": "mask (LLaDA)",
    "uniform": "uniform (seed)",
    "ar": "ar baseline",
    "block": "block diffusion",
}
# Input id -> (label, parser, settings keys it sets); parsers raise ValueError on bad text.
NUMERIC_FIELDS: dict[str, tuple[str, type, tuple[str, ...]]] = {
    "max-steps": ("steps", int, ("train.max_steps",)),
    "batch-size": ("batch", int, ("train.batch_size",)),
    "lr": ("lr", float, ("train.lr",)),
    "seq-len": ("seq len", int, ("model.seq_len",)),
    "sample-every": ("report", int, ("train.sample_every", "train.eval_every")),
    "block-size": ("block", int, ("process.block_size",)),
}
TOOLTIPS = {
    "name": "the run's folder name under LDLM_HOME/runs (blank: preset-process-time)",
    "corpus": "a text file, a folder of .txt files, builtin, or a named corpus",
    "tokenizer": "char: one token per character; word; bpe: learned subwords",
    "max-steps": "optimizer steps to train",
    "batch-size": "sequences per step",
    "lr": "peak learning rate",
    "seq-len": "tokens per sequence",
    "sample-every": "evaluate and print a sample every N steps (0 = never)",
    "block-size": "block process: tokens per block (must divide seq len)",
    "init-from": "a run whose weights start this one (same shape and tokenizer), e.g. an ar run",
}
# The engine's setting names as this form labels them, for its error messages.
FORM_NAMES = {
    "data.source": "corpus",
    "data.tokenizer": "tokenizer",
    "train.init_from": "start from",
    **{key: label for label, _, keys in NUMERIC_FIELDS.values() for key in keys},
}
# States a trainer reports once on its way to stepping: the first step after one is "training".
TRANSIENT_STATES = ("starting", "started", "resuming", "resumed")
# Form fields that are remembered between launches and filled from a run's config.
TEXT_FIELDS = ("name", "corpus", "init-from", *NUMERIC_FIELDS)
SELECT_FIELDS = ("preset", "process", "tokenizer")


def config_values(cfg: RunConfig) -> dict[str, str]:
    """The form's fields as ``cfg`` sets them (a preset's starting values, or a run's)."""
    t = cfg.train
    return {
        "corpus": cfg.data.source,
        "preset": cfg.preset,
        "process": cfg.process.kind,
        "tokenizer": cfg.data.tokenizer,
        "max-steps": "" if t.max_steps is None else str(t.max_steps),
        "batch-size": str(t.batch_size),
        "lr": f"{t.lr:g}",
        "seq-len": str(cfg.model.seq_len),
        "sample-every": str(t.sample_every),
        "block-size": str(cfg.process.block_size),
        "init-from": t.init_from,
    }


def starting_values(preset: str | None) -> dict[str, str]:
    """What the form shows for ``preset``: the preset under the user's config.toml."""
    return config_values(layered_config(preset))


def layered_config_without_user(preset: str | None) -> RunConfig:
    """The bare preset, for when the user's config.toml cannot be read."""
    cfg = get_preset(preset or "default")
    cfg.preset = preset or "default"
    return cfg


class Field(Horizontal):
    """One labelled one-line control; the form must fit 80×24 without a mouse."""

    DEFAULT_CSS = """
    Field { height: 1; }
    Field > Label { width: 10; color: $text-muted; }
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
    """Form on the left; stats, progress, chart and samples on the right.

    The form is either a new run's settings (editable) or the current run's settings
    (read-only, filled from its config.json) until :meth:`unlock` makes a new run of them.
    """

    def __init__(
        self, data: str | None = None, remembered: dict[str, str] | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.initial_corpus = data
        self.remembered = dict(remembered or {})
        self.run_name = ""
        self.shown_run = ""  # the run whose settings the read-only form shows
        self.locked = False
        self.config_error = ""  # a damaged user config.toml, reported by the App
        self.samples = 0
        self._progress: tuple[int, int] | None = None  # shown by a timer, not per step
        self._base: dict[str, str] = {}  # the starting values: what counts as "not chosen"
        self._preset_shown = ""

    def on_mount(self) -> None:
        self.set_interval(REFRESH_S, self._show_progress)
        self._show_block_field(self.value("process"))

    def _show_progress(self) -> None:
        if self._progress is not None:
            total, step = self._progress
            self._progress = None
            self.query_one(ProgressBar).update(total=total, progress=step)

    def _starting(self, preset: str | None) -> dict[str, str]:
        try:
            return starting_values(preset)
        except ConfigError as e:  # the user's config.toml: say so, fall back to the preset
            self.config_error = str(e)
            return config_values(layered_config_without_user(preset))

    def compose(self) -> ComposeResult:
        remembered = self.remembered
        preset = remembered.get("preset")
        if preset not in PRESETS:
            preset = None
        self._base = self._starting(preset)
        self._preset_shown = self._base["preset"]
        values = {**self._base, "name": ""}
        for key, value in remembered.items():  # a name or a start run is chosen per run
            if key in TEXT_FIELDS and key not in ("name", "init-from"):
                values[key] = value
        for key, choices in (("process", PROCESSES), ("tokenizer", TOKENIZERS)):
            if remembered.get(key) in choices:
                values[key] = remembered[key]
        if self.initial_corpus:
            values["corpus"] = self.initial_corpus
        corpora = [(Text(f"{n}: {d}"), n) for n, d in list_corpora()]
        processes = [(PROCESS_LABELS.get(p, p), p) for p in PROCESSES]
        with Horizontal(id="train-body"):
            with VerticalScroll(id="train-form", can_focus=False):
                yield Label(Text("New run"), id="form-title")
                yield Field("name", self._input("name", values["name"], placeholder="auto"))
                yield Field("corpus", self._input("corpus", values["corpus"]))
                yield Field(
                    "known", Select(corpora, id="corpus-pick", prompt="pick…", compact=True)
                )
                yield Field("preset", self._select("preset", PRESETS, values["preset"]))
                yield Field("process", self._select("process", processes, values["process"]))
                yield Field("tokenizer", self._select("tokenizer", TOKENIZERS, values["tokenizer"]))
                start = self._input("init-from", values["init-from"], placeholder="scratch")
                yield Field("start from", start)
                for fid, (label, typ, _) in NUMERIC_FIELDS.items():
                    kind = "integer" if typ is int else "number"
                    yield Field(label, self._input(fid, values[fid], kind=kind), id=f"field-{fid}")
                with Horizontal(id="train-buttons"):
                    yield Button("Start", id="start", variant="success", compact=True)
                    yield Button("Pause", id="pause", compact=True, disabled=True)
                    yield Button("Stop", id="stop", variant="error", compact=True, disabled=True)
            with Vertical(id="train-main"):
                yield TrainStats(id="stats")
                yield ProgressBar(total=100, id="progress", show_eta=False)
                yield LossChart(id="chart")
                yield RichLog(id="samples", markup=False, highlight=False, wrap=True, max_lines=500)

    @staticmethod
    def _input(fid: str, value: str, kind: str = "text", placeholder: str = "") -> Input:
        field = Input(value, id=fid, type=kind, compact=True, placeholder=placeholder)
        field.tooltip = TOOLTIPS.get(fid)
        return field

    @staticmethod
    def _select(fid: str, options, value: str) -> Select:
        opts = [o if isinstance(o, tuple) else (o, o) for o in options]
        select = Select(opts, value=value, allow_blank=False, id=fid, compact=True)
        select.tooltip = TOOLTIPS.get(fid)
        return select

    # ------------------------------------------------------------------ form
    def value(self, fid: str) -> str:
        widget = self.query_one(f"#{fid}")
        if isinstance(widget, Select):
            return "" if widget.value is Select.NULL else str(widget.value)
        assert isinstance(widget, Input)
        return widget.value.strip()

    def values(self) -> dict[str, str]:
        """Every field as typed (remembered between launches)."""
        return {fid: self.value(fid) for fid in (*TEXT_FIELDS, *SELECT_FIELDS)}

    def _fill(self, values: dict[str, str]) -> None:
        for fid, v in values.items():
            widget = self.query_one(f"#{fid}")
            if isinstance(widget, Select):
                widget.value = v
            else:
                assert isinstance(widget, Input)
                widget.value = v
        if "process" in values:
            self._show_block_field(values["process"])

    def _show_block_field(self, process: str) -> None:
        self.query_one("#field-block-size").display = process == "block"

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.value is Select.NULL:
            return
        if event.select.id == "corpus-pick" and not self.locked:
            self.query_one("#corpus", Input).value = str(event.value)
        elif event.select.id == "preset" and str(event.value) != self._preset_shown:
            self._preset_shown = str(event.value)
            self._base = self._starting(str(event.value))
            fill = {k: v for k, v in self._base.items() if k not in ("corpus", "preset")}
            self._fill(fill)
        elif event.select.id == "process":
            self._show_block_field(str(event.value))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {"start": "app.start", "pause": "app.pause", "stop": "app.stop"}
        if event.button.id in actions:
            event.stop()
            self.run_action("app.new_run" if self.locked else actions[event.button.id])

    def read_choices(self) -> RunChoices:
        """The form as engine choices: only fields that differ from the starting values count
        as chosen, so an untouched form is exactly ``ldlm train`` without flags. ConfigError
        names the first field that does not parse, by its label."""
        settings: dict[str, dict[str, Any]] = {}

        def choose(key: str, value: Any) -> None:
            section, name = key.split(".")
            settings.setdefault(section, {})[name] = value

        corpus = self.value("corpus")
        if not corpus:
            raise ConfigError("corpus must not be empty (try 'builtin')")
        if corpus != self._base.get("corpus"):
            choose("data.source", corpus)
        if self.value("tokenizer") != self._base.get("tokenizer"):
            choose("data.tokenizer", self.value("tokenizer"))
        if self.value("init-from") != self._base.get("init-from", ""):
            choose("train.init_from", self.value("init-from") or None)
        process = self.value("process")
        for fid, (label, typ, keys) in NUMERIC_FIELDS.items():
            text = self.value(fid)
            if text == self._base.get(fid, "") or (fid == "block-size" and process != "block"):
                continue
            if not text:
                value = None
            else:
                try:
                    value = typ(text)
                except ValueError:
                    what = "a whole number" if typ is int else "a number"
                    raise ConfigError(f"{label} must be {what}, got {text!r}") from None
            for key in keys:
                choose(key, value)
        return RunChoices(
            preset=self.value("preset"),
            process=process if process != self._base.get("process") else None,
            settings=settings,
            name=self.value("name") or None,
            flag_names=FORM_NAMES,
        )

    def show_run(self, name: str, config: dict[str, Any] | None) -> None:
        """Show ``name``'s settings read-only (the current run); None: keep the fields."""
        if config is not None:
            try:
                cfg = RunConfig.from_dict(config)
            except ConfigError:
                cfg = None
            if cfg is not None:
                values = config_values(cfg)
                self._preset_shown = values["preset"] if values["preset"] in PRESETS else ""
                if values["preset"] not in PRESETS:
                    values.pop("preset")
                if values["process"] not in PROCESSES:
                    values.pop("process")
                if values["tokenizer"] not in TOKENIZERS:
                    values.pop("tokenizer")
                self._fill({**values, "name": name})
        self.shown_run = name
        self._set_locked(True)

    def unlock(self) -> None:
        """A new run: the form becomes editable, keeping the shown values as a template."""
        if self.locked:
            preset = self.value("preset")
            self._base = self._starting(preset if preset in PRESETS else None)
            self._preset_shown = preset
            self.query_one("#name", Input).value = ""
        self.shown_run = ""
        self._set_locked(False)

    def _set_locked(self, locked: bool) -> None:
        self.locked = locked
        for fid in (*TEXT_FIELDS, *SELECT_FIELDS, "corpus-pick"):
            self.query_one(f"#{fid}").disabled = locked
        title = Text("New run")
        if locked:
            title = Text.assemble(
                ("Run ", "bold"), (self.shown_run, "bold"), ("  n: new run", "dim")
            )
        self.query_one("#form-title", Label).update(title)
        self.query_one("#start", Button).label = "New" if locked else "Start"

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
            if stats.state in TRANSIENT_STATES:  # "resumed" is news for a moment, not a state
                stats.set_state("training")
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
                msg.phase,
            )
            if msg.total_steps:
                self._progress = (msg.total_steps, msg.step)
        elif isinstance(msg, TrainEval):
            chart.add_val(msg.step, msg.val_loss)
            stats.update_eval(msg.val_bits_per_char, msg.exact, msg.ar_head_bits_per_char)
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
