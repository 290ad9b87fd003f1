"""The Generate pane: prompt or infill template, sampler settings, and the denoising view.

Generation runs in a thread worker: it loads the run (cached per run directory and checkpoint
step, reloaded when a still-training run writes a newer checkpoint), iterates
:func:`ldlm_engine.generate` and posts the frames to the UI in small batches, at most ~30 a
second, so every model call is recorded (for stepping and replay afterwards) while the view
redraws at most ~30 times a second and always shows the latest frame. Engine errors become a
one-line notification. Starting a new generation cancels the one in flight.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Select, Static
from textual.worker import get_current_worker

from ldlm_engine import MASK_MARKER, ConfigError, LdlmError, RunConfig, SampleConfig
from ldlm_engine.sampling import SAMPLERS

from ..widgets.denoise import DenoiseView

REDRAW_INTERVAL_S = 1 / 30
"""The worker posts frames at most this often (the final frame is always posted)."""

MODEL_CACHE_SIZE = 2

PROMPT_PLACEHOLDER = "prompt to continue, or an infill template: The [MASK*8] sat."
HINT = "infill: [MASK] = 1 token, [MASK*N] = N tokens; else the prompt is continued"


class _GenMessage(Message):
    def __init__(self, gen_id: int) -> None:
        super().__init__()
        self.gen_id = gen_id


class _RunLoaded(_GenMessage):
    def __init__(self, gen_id: int, label: str) -> None:
        super().__init__(gen_id)
        self.label = label


class _FramesReady(_GenMessage):
    """A batch of frames (plain dataclasses of lists) with their times since the start."""

    def __init__(self, gen_id: int, frames: list[Any], times: list[float], tokenizer: Any):
        super().__init__(gen_id)
        self.frames = frames
        self.times = times
        self.tokenizer = tokenizer


class _GenFailed(_GenMessage):
    def __init__(self, gen_id: int, error: str) -> None:
        super().__init__(gen_id)
        self.error = error


def _one_line(e: BaseException) -> str:
    s = str(e).strip()
    line = s.splitlines()[0] if s else ""
    if isinstance(e, LdlmError):
        return line or type(e).__name__
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


def _parse_int(name: str, value: str, *, minimum: int | None = None, blank=None) -> Any:
    value = value.strip()
    if not value:
        if blank is not None:
            return blank
        raise ConfigError(f"{name} must not be empty")
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
    if minimum is not None and n < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {n}")
    return n


def _parse_float(name: str, value: str, lo: float, hi: float, *, lo_open=False) -> float:
    value = value.strip()
    try:
        x = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if math.isnan(x) or x > hi or x < lo or (lo_open and x == lo):
        bracket = "(" if lo_open else "["
        raise ConfigError(f"{name} must be in {bracket}{lo:g}, {hi:g}], got {value}")
    return x


class GeneratePane(Widget):
    """Generate text from a run and watch it being denoised; mount it inside a TabPane.

    ``GeneratePane(id=..., run=None)``; ``set_run(name_or_path)`` picks the run. ``frames``
    holds every frame of the last generation, ``position`` the index on screen.
    """

    DEFAULT_CSS = """
    GeneratePane {
        height: 1fr;
        layout: vertical;
        padding: 0 1;
    }
    GeneratePane #gen-run {
        height: 1;
        width: 1fr;
        color: $text-muted;
    }
    GeneratePane .gen-row {
        height: 1;
        width: 1fr;
        margin-top: 1;
    }
    GeneratePane .gen-row Label {
        height: 1;
        width: auto;
        margin: 0 0 0 1;
        color: $text-muted;
    }
    GeneratePane .gen-row Label.first {
        margin: 0 1 0 0;
    }
    GeneratePane #gen-prompt {
        width: 1fr;
    }
    GeneratePane #gen-button {
        margin-left: 1;
        min-width: 10;
    }
    GeneratePane #gen-sampler {
        width: 17;
    }
    GeneratePane .num {
        width: 5;
    }
    GeneratePane #gen-hint {
        height: 1;
        width: 1fr;
        color: $text-muted;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+g", "generate", "Generate"),
        Binding("G", "generate", "Generate", show=False),
        Binding("left,comma", "step(-1)", "Prev frame"),
        Binding("right,full_stop", "step(1)", "Next frame"),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
        Binding("space", "replay", "Replay"),
        Binding("p", "focus_prompt", "Prompt", show=False),
    ]

    def __init__(
        self,
        run: str | None = None,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.run: str | None = None
        self.frames: list[Any] = []
        self.times: list[float] = []
        self.position = -1
        self.tokenizer: Any = None
        self.generating = False
        self.last_error: str | None = None
        self._gen_id = 0
        self._live = True
        self._run_label = ""
        self._run_config: RunConfig | None = None
        self._process_kind = "mask"
        self._replay_timer: Timer | None = None
        self._gen_lock = threading.Lock()
        self._cache: OrderedDict[str, Any] = OrderedDict()
        if run is not None:
            self.set_run(run)
        else:
            self._run_label = "no run selected: open one from the Runs tab"

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        defaults = self._defaults()
        yield Static(Text(self._run_label), id="gen-run")
        with Horizontal(classes="gen-row"):
            yield Label("prompt", classes="first")
            yield Input(placeholder=PROMPT_PLACEHOLDER, id="gen-prompt", compact=True)
            yield Button("Generate", id="gen-button", variant="primary", compact=True)
        with Horizontal(classes="gen-row"):
            samplers = SAMPLERS.get(self._process_kind, ("low_confidence",))
            yield Select(
                [(s, s) for s in samplers],
                value=defaults["sampler"],
                allow_blank=False,
                id="gen-sampler",
                compact=True,
            )
            for key, label in (
                ("steps", "steps"),
                ("length", "len"),
                ("temperature", "temp"),
                ("block_length", "block"),
                ("threshold", "thr"),
                ("seed", "seed"),
            ):
                yield Label(label)
                yield Input(
                    defaults[key],
                    id=f"gen-{key.replace('_', '-')}",
                    classes="num",
                    compact=True,
                    placeholder="auto" if key == "length" else "",
                )
        yield Static(Text(HINT), id="gen-hint")
        yield DenoiseView(id="gen-view")

    def _defaults(self) -> dict[str, str]:
        s = self._run_config.sample if self._run_config is not None else SampleConfig()
        samplers = SAMPLERS.get(self._process_kind, ("low_confidence",))
        return {
            "sampler": s.sampler if s.sampler in samplers else samplers[0],
            "steps": str(s.steps),
            "length": "",
            "temperature": f"{s.temperature:g}",
            "block_length": str(s.block_length),
            "threshold": f"{s.threshold:g}",
            "seed": str(s.seed),
        }

    @property
    def view(self) -> DenoiseView:
        return self.query_one("#gen-view", DenoiseView)

    # ------------------------------------------------------------------ run selection

    def set_run(self, run: str) -> None:
        """Show ``run`` (a name or a path); settings reset to that run's sample defaults."""
        run = str(run)
        changed = run != self.run
        self.run = run
        try:
            from ldlm_engine import resolve_run

            rd = resolve_run(run)
            cfg = RunConfig.from_dict(rd.read_config())
            step = rd.latest_checkpoint_step()
        except LdlmError as e:
            self._run_config = None
            self._run_label = f"run {run}: {_one_line(e)}"
            self._update_run_label()
            if self.is_mounted:
                self.notify(_one_line(e), title="generate", severity="error")
            return
        self._run_config = cfg
        self._process_kind = cfg.process.kind
        ck = f"checkpoint step {step}" if step is not None else "no checkpoint yet"
        self._run_label = (
            f"run {rd.name} · {cfg.process.kind} process · {ck} · seq_len {cfg.model.seq_len}"
        )
        self._update_run_label()
        if changed and self.is_mounted:
            self._apply_defaults()

    def _update_run_label(self) -> None:
        if self.is_mounted:
            self.query_one("#gen-run", Static).update(Text(self._run_label))

    def _apply_defaults(self) -> None:
        d = self._defaults()
        samplers = SAMPLERS.get(self._process_kind, ("low_confidence",))
        select = self.query_one("#gen-sampler", Select)
        select.set_options([(s, s) for s in samplers])
        select.value = d["sampler"]
        for key in ("steps", "length", "temperature", "block_length", "threshold", "seed"):
            self.query_one(f"#gen-{key.replace('_', '-')}", Input).value = d[key]

    # ------------------------------------------------------------------ generation

    def _value(self, key: str) -> str:
        return self.query_one(f"#gen-{key.replace('_', '-')}", Input).value

    def _read_settings(self) -> tuple[str, SampleConfig, int | None]:
        """The prompt, a SampleConfig, and the length (None = fill the model's context)."""
        prompt = self.query_one("#gen-prompt", Input).value
        sampler = self.query_one("#gen-sampler", Select).value
        length = _parse_int("len", self._value("length"), minimum=1, blank=-1)
        cfg = SampleConfig(
            sampler=str(sampler) if isinstance(sampler, str) else "auto",
            length=max(1, length),
            steps=_parse_int("steps", self._value("steps"), minimum=0),
            temperature=_parse_float("temp", self._value("temperature"), 0.0, 1e6),
            block_length=_parse_int("block", self._value("block_length"), minimum=0),
            threshold=_parse_float("thr", self._value("threshold"), 0.0, 1.0, lo_open=True),
            seed=_parse_int("seed", self._value("seed")),
        )
        return prompt, cfg, (None if length < 0 else length)

    def generate(self, prompt: str | None = None) -> bool:
        """Start generating (cancelling any generation in flight); False on a bad setting."""
        self._stop_replay()
        if prompt is not None:
            self.query_one("#gen-prompt", Input).value = prompt
        if self.run is None:
            self._error("no run selected: open a run first")
            return False
        try:
            prompt, cfg, length = self._read_settings()
        except LdlmError as e:
            self._error(_one_line(e))
            return False
        self._gen_id += 1
        self.frames, self.times = [], []
        self.position = -1
        self._live = True
        self.generating = True
        self.last_error = None
        self.view.set_note(f"loading {self.run}…")
        self.run_worker(
            lambda gid=self._gen_id, run=self.run: self._work(gid, run, prompt, cfg, length),
            name="generate",
            group="ldlm-generate",
            thread=True,
            exclusive=True,
            exit_on_error=False,
        )
        return True

    def _load(self, run: str) -> Any:
        """The run's model at its newest checkpoint (cached per run dir and step)."""
        from ldlm_engine import load_run, resolve_run

        rd = resolve_run(run)
        key = str(rd.path.resolve())
        cached = self._cache.get(key)
        latest = rd.latest_checkpoint_step()
        if cached is not None and (latest is None or latest == cached.step):
            self._cache.move_to_end(key)
            return cached
        self._cache.pop(key, None)
        loaded = load_run(rd)
        self._cache[key] = loaded
        while len(self._cache) > MODEL_CACHE_SIZE:
            self._cache.popitem(last=False)
        return loaded

    def _work(self, gen_id: int, run: str, prompt: str, cfg: SampleConfig, length: int | None):
        """Thread worker: load, generate, post batches of frames; stops when cancelled."""
        from ldlm_engine import generate

        worker = get_current_worker()
        # One generation at a time per pane: a cancelled one stops after its current call.
        while not self._gen_lock.acquire(timeout=0.05):
            if worker.is_cancelled:
                return
        try:
            if worker.is_cancelled:
                return
            loaded = self._load(run)
            mcfg = loaded.config.model
            label = (
                f"run {loaded.run.name} · step {loaded.step} · {loaded.process.kind} process · "
                f"{loaded.device.type} · seq_len {mcfg.seq_len}"
            )
            self.post_message(_RunLoaded(gen_id, label))
            if length is None:
                n_prompt = 0 if MASK_MARKER.search(prompt) else len(loaded.tokenizer.encode(prompt))
                cfg.length = max(1, min(loaded.config.sample.length, mcfg.seq_len - n_prompt))
            check = loaded.config.copy()
            check.sample = cfg
            check.validate()
            batch: list[Any] = []
            times: list[float] = []
            last_post = 0.0
            t0 = time.perf_counter()
            frames = generate(
                loaded.model,
                loaded.process,
                loaded.tokenizer,
                cfg,
                prompt,
                device=loaded.device,
                max_len=mcfg.seq_len,
            )
            try:
                for frame in frames:
                    now = time.perf_counter()
                    batch.append(frame)
                    times.append(now - t0)
                    if worker.is_cancelled:
                        return
                    if frame.done or now - last_post >= REDRAW_INTERVAL_S:
                        self.post_message(_FramesReady(gen_id, batch, times, loaded.tokenizer))
                        batch, times, last_post = [], [], now
            finally:
                frames.close()
            if batch:
                self.post_message(_FramesReady(gen_id, batch, times, loaded.tokenizer))
        except Exception as e:  # engine errors (and anything unexpected) become a notice
            self.post_message(_GenFailed(gen_id, _one_line(e)))
        finally:
            self._gen_lock.release()

    def _error(self, message: str) -> None:
        self.last_error = message
        self.notify(message, title="generate", severity="error")

    # ------------------------------------------------------------------ worker messages

    @on(_RunLoaded)
    def _on_run_loaded(self, message: _RunLoaded) -> None:
        if message.gen_id != self._gen_id:
            return
        self._run_label = message.label
        self._update_run_label()
        if not self.frames:
            self.view.set_note("generating…")

    @on(_FramesReady)
    def _on_frames(self, message: _FramesReady) -> None:
        if message.gen_id != self._gen_id:
            return
        self.tokenizer = message.tokenizer
        self.frames.extend(message.frames)
        self.times.extend(message.times)
        if self.frames[-1].done:
            self.generating = False
        if self._live:
            self.position = len(self.frames) - 1
            self._show()
        else:
            self._show()  # the frame count in the status line moved on

    @on(_GenFailed)
    def _on_failed(self, message: _GenFailed) -> None:
        if message.gen_id != self._gen_id:
            return
        self.generating = False
        self.view.set_note("")
        if not self.frames:
            self.view.show(None)
        self._error(message.error)

    # ------------------------------------------------------------------ display

    def tokens_per_s(self, index: int) -> float | None:
        """Generated tokens decided per second of sampling, up to frame ``index``."""
        if not (0 <= index < len(self.frames)) or index >= len(self.times):
            return None
        elapsed = self.times[index]
        frame = self.frames[index]
        if elapsed <= 1e-6 or frame.nfe == 0:
            return None
        if frame.done:
            n = sum(1 for f in frame.fixed if not f)
        elif any(self.frames[0].masked):
            n = sum(1 for m, f in zip(frame.masked, frame.fixed, strict=False) if not m and not f)
        else:  # uniform: every position holds a token from the start; count at the end
            return None
        return n / elapsed

    def _show(self) -> None:
        if not self.frames or self.position < 0:
            self.view.show(None)
            return
        i = self.position
        self.view.show(
            self.frames[i],
            self.tokenizer,
            tokens_per_s=self.tokens_per_s(i),
            position=i,
            total=len(self.frames),
        )

    def load_frames(self, frames: list[Any], tokenizer: Any, times: list[float] | None = None):
        """Show frames produced elsewhere (a saved generation); the last one is displayed."""
        self._stop_replay()
        self._gen_id += 1  # anything still in flight is now stale
        self.generating = False
        self.tokenizer = tokenizer
        self.frames = list(frames)
        self.times = list(times) if times is not None else []
        self.position = len(self.frames) - 1
        self._live = True
        self._show()

    def show_position(self, index: int) -> None:
        """Show frame ``index`` (clamped); following the live generation stops unless last."""
        if not self.frames:
            return
        self.position = max(0, min(index, len(self.frames) - 1))
        self._live = self.position == len(self.frames) - 1
        self._show()

    def _stop_replay(self) -> None:
        if self._replay_timer is not None:
            self._replay_timer.stop()
            self._replay_timer = None

    # ------------------------------------------------------------------ actions

    def action_generate(self) -> None:
        if self.generate():
            self.view.focus()

    def action_step(self, delta: int) -> None:
        self._stop_replay()
        self.show_position(self.position + delta)

    def action_first(self) -> None:
        self._stop_replay()
        self.show_position(0)

    def action_last(self) -> None:
        self._stop_replay()
        self.show_position(len(self.frames) - 1)

    def action_replay(self) -> None:
        """Replay the animation from the first frame (about 2 s, 5-30 frames a second)."""
        self._stop_replay()
        if len(self.frames) < 2:
            return
        self.show_position(0)
        self._live = False
        interval = min(0.2, max(REDRAW_INTERVAL_S, 2.0 / len(self.frames)))
        self._replay_timer = self.set_interval(interval, self._replay_tick)

    def _replay_tick(self) -> None:
        if self.position >= len(self.frames) - 1:
            self._stop_replay()
            self._live = True
            return
        self.show_position(self.position + 1)

    def action_focus_prompt(self) -> None:
        self.query_one("#gen-prompt", Input).focus()

    @on(Input.Submitted)
    def _on_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_generate()

    @on(Button.Pressed, "#gen-button")
    def _on_button(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_generate()
