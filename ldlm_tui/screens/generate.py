"""The Generate pane: prompt or infill template, sampler settings, and the denoising view.

Generation goes through :class:`ldlm_engine.session.GenerationSession`, as ``ldlm generate``
does: the session loads the run (cached per checkpoint, reloaded when a still-training run
writes a newer one), validates the settings and times the sampler (model time only, so
drawing never lowers the reported tokens/s). A thread worker iterates the session's stream
and posts the frames to the UI in small batches, at most ~30 a second; every frame is kept
(compactly, :class:`~ldlm_tui.widgets.frame_history.FrameHistory`) for stepping and replay,
while the view redraws at most ~30 times a second and always shows the latest frame.

Long generations (``ar`` and ``block`` at any length, ``mask`` by windows) stream: frames cover
only the window being written (``Frame.offset``), the text grows block by block while the
current block's denoising is animated, and the view follows the end unless scrolled up.

Errors stay visible in the status line under the settings, in the pane's own words, and the
previous output stays on screen. Starting a new generation cancels the one in flight.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, Label, Select, Static
from textual.worker import get_current_worker

from ldlm_engine import MASK_MARKER, LdlmError, RunConfig, SampleConfig
from ldlm_engine.config import SAMPLERS_BY_PROCESS as SAMPLERS  # torch-free
from ldlm_engine.config import samplers_for
from ldlm_engine.prompts import repeated_token

from ..render import TokenTexts
from ..widgets.denoise import DenoiseView
from ..widgets.frame_history import FrameHistory
from ..widgets.setting_input import SettingInput
from .generate_settings import (
    FIELDS,
    FIXED_TIP,
    ROW_1,
    ROW_2,
    SAMPLER_TIP,
    parse_settings,
    setting_values,
)

REDRAW_INTERVAL_S = 1 / 30
"""The worker posts frames at most this often (the final frame is always posted)."""

PROMPT_PLACEHOLDER = "prompt to continue, or an infill template: The [MASK*8] sat."
HINT = "infill: [MASK] = 1 token, [MASK*N] = N tokens; else the prompt is continued"


class _GenMessage(Message):
    def __init__(self, gen_id: int) -> None:
        super().__init__()
        self.gen_id = gen_id


class _RunLoaded(_GenMessage):
    def __init__(self, gen_id: int, label: str, kind: str) -> None:
        super().__init__(gen_id)
        self.label = label
        self.kind = kind


class _FramesReady(_GenMessage):
    """A batch of frames (plain dataclasses of lists) with their model time so far."""

    def __init__(
        self,
        gen_id: int,
        frames: list[Any],
        times: list[float],
        tokenizer: Any,
        typed: dict[int, str],
    ):
        super().__init__(gen_id)
        self.frames = frames
        self.times = times
        self.tokenizer = tokenizer
        self.typed = typed  # prompt words to draw as typed (plain data from the engine)


class _GenDone(_GenMessage):
    """The session's report (plain data) once the last frame has been posted."""

    def __init__(self, gen_id: int, result: Any) -> None:
        super().__init__(gen_id)
        self.result = result


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


class GeneratePane(Widget):
    """Generate text from a run and watch it being denoised; mount it inside a TabPane.

    ``GeneratePane(id=..., run=None)``; ``set_run(name_or_path)`` picks the run. ``frames``
    holds every frame of the last generation (``frames[i]`` is the whole sequence after
    frame ``i``), ``position`` the index on screen, ``result`` the session's report of the
    last finished generation, ``last_error`` the error shown in the status line.
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
    }
    GeneratePane #gen-prompt-row {
        margin-top: 1;
    }
    GeneratePane .gen-row Label {
        height: 1;
        width: auto;
        margin: 0 1 0 2;
        color: $text-muted;
    }
    GeneratePane .gen-row Label.first {
        margin: 0 1 0 0;
        width: 7;
    }
    GeneratePane #gen-prompt {
        width: 1fr;
    }
    GeneratePane #gen-button {
        margin-left: 1;
        min-width: 10;
    }
    GeneratePane #gen-sampler {
        width: 18;
    }
    GeneratePane .num {
        width: 7;
    }
    GeneratePane #gen-fixed-seed {
        margin-left: 2;
    }
    GeneratePane #gen-seed-used {
        width: 1fr;
        margin-left: 2;
        color: $text-muted;
    }
    GeneratePane #gen-status {
        height: 1;
        width: 1fr;
        color: $text-muted;
    }
    GeneratePane #gen-status.error {
        color: $error;
    }
    GeneratePane #gen-status.warning {
        color: $warning;
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
        Binding("slash,i", "focus_prompt", "Prompt", show=False),
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
        self.frames = FrameHistory()
        self.position = -1
        self.tokenizer: Any = None
        self.generating = False
        self.last_error: str | None = None
        self.result: Any = None
        self._session: Any = None
        self._pending: FrameHistory | None = None  # the new generation, until its 1st frame
        self._gen_id = 0
        self._live = True
        self._run_label = ""
        self._run_config: RunConfig | None = None
        self._process_kind = "mask"
        self._status = ("", HINT)
        self._replay_timer: Timer | None = None
        self._replay_stride = 1
        self._gen_lock = threading.Lock()
        self.live_run: str | None = None  # the path of the run training in this app
        self._pending_seed: int | None = None
        self._shown_seed: int | None = None
        if run is not None:
            self.set_run(run)
        else:
            self._run_label = "no run selected: open one from the Runs tab"

    @property
    def session(self) -> Any:
        """The pane's :class:`GenerationSession` (created on first use; keeps loaded models)."""
        if self._session is None:
            from ldlm_engine.session import GenerationSession

            self._session = GenerationSession(device="auto")
        return self._session

    @property
    def times(self) -> list[float]:
        """Model time (s) spent up to each frame."""
        return [self.frames.elapsed(i) for i in range(len(self.frames))]

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        defaults = self._defaults()
        yield Static(Text(self._run_label), id="gen-run")
        with Horizontal(classes="gen-row", id="gen-prompt-row"):
            yield Label("prompt", classes="first")
            prompt = Input(placeholder=PROMPT_PLACEHOLDER, id="gen-prompt", compact=True)
            prompt.tooltip = HINT + ". Enter generates."
            yield prompt
            yield Button("Generate", id="gen-button", variant="primary", compact=True)
        with Horizontal(classes="gen-row", id="gen-row-1"):
            yield Label("sampler", classes="first")
            samplers = self._samplers()
            select = Select(
                [(s, s) for s in samplers],
                value=defaults["sampler"],
                allow_blank=False,
                id="gen-sampler",
                compact=True,
            )
            select.tooltip = SAMPLER_TIP
            yield select
            yield from self._fields(defaults, ROW_1)
        with Horizontal(classes="gen-row", id="gen-row-2"):
            yield from self._fields(defaults, ROW_2, first=True)
        with Horizontal(classes="gen-row", id="gen-row-3"):
            yield from self._fields(defaults, ("seed",), first=True)
            fixed = Checkbox("fixed", False, id="gen-fixed-seed", compact=True)
            fixed.tooltip = FIXED_TIP
            yield fixed
            yield Static(self._seed_text(), id="gen-seed-used")
        yield Static(self._status_text(), id="gen-status")
        yield DenoiseView(id="gen-view")

    def _fields(self, defaults: dict[str, str], keys: tuple[str, ...], first: bool = False):
        for key, label, kind, tip in FIELDS:
            if key not in keys:
                continue
            yield Label(label, classes="first" if first else "")
            first = False
            field = SettingInput(
                defaults[key],
                id=f"gen-{key.replace('_', '-')}",
                classes="num",
                type=kind,  # type: ignore[arg-type]
                compact=True,
                placeholder="auto" if key == "length" else "",
            )
            field.tooltip = tip
            yield field

    def _samplers(self) -> tuple[str, ...]:
        if self._run_config is not None and self._run_config.process.kind == self._process_kind:
            return samplers_for(self._run_config.process)
        return SAMPLERS.get(self._process_kind, ("low_confidence",))

    def _defaults(self) -> dict[str, str]:
        s = self._run_config.sample if self._run_config is not None else SampleConfig()
        return setting_values(s, self._samplers())

    @property
    def view(self) -> DenoiseView:
        return self.query_one("#gen-view", DenoiseView)

    # ------------------------------------------------------------------ status line

    def _status_text(self) -> Text:
        return Text(self._status[1], no_wrap=True, overflow="ellipsis")

    def set_status(self, message: str, kind: str = "") -> None:
        """Show ``message`` under the settings until the next generation; ``kind`` is
        "error", "warning" or "" (a hint)."""
        self._status = (kind, message or HINT)
        if self.is_mounted:
            status = self.query_one("#gen-status", Static)
            status.set_class(kind == "error", "error")
            status.set_class(kind == "warning", "warning")
            status.update(self._status_text())

    @property
    def status_line(self) -> str:
        return self._status[1]

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
                self._error(_one_line(e))
            return
        self._run_config = cfg
        self._process_kind = cfg.process.kind
        if self.live_run is not None and self.live_run == str(rd.path.resolve()):
            ck = "training here: samples its live weights"
        else:
            ck = f"checkpoint step {step}" if step is not None else "no checkpoint yet"
        self._run_label = (
            f"run {rd.name} · {cfg.process.kind} process · {ck} · seq_len {cfg.model.seq_len}"
        )
        self._update_run_label()
        if changed and self.is_mounted:
            self._apply_defaults()

    @property
    def shown_seed(self) -> int | None:
        """The seed of the sample on screen (None before the first generation)."""
        return self._shown_seed

    def _seed_text(self) -> Text:
        seed = self.shown_seed
        if seed is None:
            return Text("")
        return Text(f"this sample: seed {seed}", no_wrap=True, overflow="ellipsis")

    def _update_seed(self) -> None:
        if self.is_mounted:
            self.query_one("#gen-seed-used", Static).update(self._seed_text())

    def set_live(self, run_path: Any, trainer: Any | None) -> None:
        """``run_path`` trains in this app (``trainer``; None when it stops): generate from
        its live weights, which the engine's session snapshots between optimizer steps."""
        from pathlib import Path

        self.session.set_live(Path(run_path), trainer)
        path = str(Path(run_path).resolve())
        self.live_run = path if trainer is not None else None
        if self.run is not None:
            self.set_run(self.run)  # the label says where the weights come from

    def _update_run_label(self) -> None:
        if self.is_mounted:
            self.query_one("#gen-run", Static).update(Text(self._run_label))

    def _apply_defaults(self) -> None:
        d = self._defaults()
        samplers = self._samplers()
        select = self.query_one("#gen-sampler", Select)
        select.set_options([(s, s) for s in samplers])
        select.value = d["sampler"]
        for key, *_ in FIELDS:
            self.query_one(f"#gen-{key.replace('_', '-')}", Input).value = d[key]

    # ------------------------------------------------------------------ generation

    def _value(self, key: str) -> str:
        return self.query_one(f"#gen-{key.replace('_', '-')}", Input).value

    def _read_settings(self) -> tuple[str, dict[str, Any]]:
        """The prompt and the session overrides (length None = the run's default)."""
        prompt = self.query_one("#gen-prompt", Input).value
        sampler = self.query_one("#gen-sampler", Select).value
        values = {key: self._value(key) for key, *_ in FIELDS}
        overrides = parse_settings(values, str(sampler) if isinstance(sampler, str) else "auto")
        return prompt, overrides

    def generate(self, prompt: str | None = None) -> bool:
        """Start generating (cancelling any generation in flight); False on a bad setting.

        The previous output stays on screen until the new generation's first frame arrives,
        and stays there if the new one fails.
        """
        self._stop_replay()
        if prompt is not None:
            self.query_one("#gen-prompt", Input).value = prompt
        if self.run is None:
            self._error("no run selected: open one from the Runs tab")
            return False
        try:
            prompt, overrides = self._read_settings()
        except LdlmError as e:
            self._error(_one_line(e))
            return False
        seeds = self.session.seeds  # the engine's policy: a new seed per generation unless fixed
        seeds.next = overrides["seed"]
        seeds.fixed = self.query_one("#gen-fixed-seed", Checkbox).value
        overrides["seed"] = self._pending_seed = seeds.take()
        self.query_one("#gen-seed", Input).value = str(seeds.next)
        self._gen_id += 1
        self._pending = FrameHistory()
        self.generating = True
        self.last_error = None
        self.set_status(HINT)
        self.view.set_note(f"loading {self.run}…")
        self.run_worker(
            lambda gid=self._gen_id, run=self.run: self._work(gid, run, prompt, overrides),
            name="generate",
            group="ldlm-generate",
            thread=True,
            exclusive=True,
            exit_on_error=False,
        )
        return True

    def _work(self, gen_id: int, run: str, prompt: str, overrides: dict[str, Any]) -> None:
        """Thread worker: load, stream, post batches of frames; stops when cancelled."""
        worker = get_current_worker()
        # One generation at a time per pane: a cancelled one stops after its current call.
        while not self._gen_lock.acquire(timeout=0.05):
            if worker.is_cancelled:
                return
        try:
            if worker.is_cancelled:
                return
            session = self.session
            loaded = session.load(run)
            mcfg = loaded.config.model
            weights = "live weights" if loaded.live else "checkpoint"
            label = (
                f"run {loaded.run.name} · {weights} step {loaded.step} · "
                f"{loaded.process.kind} process · {loaded.device.type} · seq_len {mcfg.seq_len}"
            )
            self.post_message(_RunLoaded(gen_id, label, loaded.process.kind))
            if overrides.get("length") is None and loaded.process.kind in ("mask", "uniform"):
                # blank length: the run's default, kept within one window of the model
                n_prompt = 0 if MASK_MARKER.search(prompt) else len(loaded.tokenizer.encode(prompt))
                room = max(1, mcfg.seq_len - n_prompt)
                overrides = {**overrides, "length": min(loaded.config.sample.length, room)}
            cfg = session.settings(loaded, **overrides)
            frames: list[Any] = []
            times: list[float] = []
            last: Any = None
            last_post = 0.0
            stream = session.stream(loaded, cfg, prompt)
            try:
                for tf in stream:
                    if worker.is_cancelled:
                        return
                    last = tf
                    frames.append(tf.frame)  # plain lists, fresh per frame: safe to hand over
                    times.append(tf.elapsed_s)
                    now = time.perf_counter()
                    if tf.frame.done or now - last_post >= REDRAW_INTERVAL_S:
                        ready = _FramesReady(gen_id, frames, times, loaded.tokenizer, tf.typed)
                        self.post_message(ready)
                        frames, times, last_post = [], [], now
            finally:
                stream.close()
            if frames and last is not None:
                ready = _FramesReady(gen_id, frames, times, loaded.tokenizer, last.typed)
                self.post_message(ready)
            if last is not None and not worker.is_cancelled:
                self.post_message(_GenDone(gen_id, session.result(loaded, cfg, prompt, last)))
        except Exception as e:  # engine errors (and anything unexpected) go to the status line
            self.post_message(_GenFailed(gen_id, _one_line(e)))
        finally:
            self._gen_lock.release()

    def _error(self, message: str) -> None:
        self.last_error = message
        self.set_status(message, "error")

    # ------------------------------------------------------------------ worker messages

    @on(_RunLoaded)
    def _on_run_loaded(self, message: _RunLoaded) -> None:
        if message.gen_id != self._gen_id:
            return
        self._run_label = message.label
        self._process_kind = message.kind
        self._update_run_label()
        self.view.set_note("generating…")

    @on(_FramesReady)
    def _on_frames(self, message: _FramesReady) -> None:
        if message.gen_id != self._gen_id:
            return
        if self._pending is not None:  # the first frames: the new generation takes over
            self.frames, self._pending = self._pending, None
            self.result = None
            self.position = -1
            self._live = True
            self._shown_seed = self._pending_seed
            self._update_seed()
            self.view.follow()
        self.tokenizer = message.tokenizer
        self.view.typed = message.typed
        for frame, t in zip(message.frames, message.times, strict=True):
            self.frames.append(frame, t)
        if self._live:
            self.position = len(self.frames) - 1
        self._show()  # (when stepping back, the frame count in the status line moved on)

    @on(_GenDone)
    def _on_done(self, message: _GenDone) -> None:
        if message.gen_id != self._gen_id:
            return
        self.generating = False
        self.result = message.result
        self._collapse_hint(getattr(message.result, "notes", ()))

    @on(_GenFailed)
    def _on_failed(self, message: _GenFailed) -> None:
        if message.gen_id != self._gen_id:
            return
        self.generating = False
        self._pending = None
        self._show()  # the previous output (or the partial one) stays
        self._error(message.error)

    def _collapse_hint(self, notes: list[str] | tuple[str, ...] = ()) -> None:
        """Show the session's notes (e.g. prompt text the vocabulary lacks) and warn when the
        sample is one token over and over (a greedy or young model)."""
        parts = [str(n) for n in notes if n]
        if self.frames:
            tokens, fixed = self.frames.final_tokens()
            found = repeated_token(tokens, fixed)
            if found is not None:
                tok, share = found
                texts = TokenTexts(self.tokenizer) if self.tokenizer is not None else str
                shown = texts(tok)
                shown = repr(shown) if shown.strip() else repr(shown).replace(" ", "␠")
                advice = "raise temp (0.8-1)" if self._temperature() == 0 else "train longer"
                parts.append(
                    f"the sample repeats one token ({shown}, {share:.0%}): "
                    f"{advice} for livelier text"
                )
        if parts:
            self.set_status(" · ".join(parts), "warning")

    def _temperature(self) -> float:
        try:
            return float(self._value("temperature"))
        except ValueError:
            return -1.0

    # ------------------------------------------------------------------ display

    def tokens_per_s(self, index: int) -> float | None:
        """Generated tokens decided per second of model time, up to frame ``index``."""
        if not (0 <= index < len(self.frames)):
            return None
        return self.frames.tokens_per_s(index)

    def _show(self) -> None:
        if not self.frames or self.position < 0:
            self.view.show(None)
            return
        i = self.position
        end = self.frames.end(i)
        if i == 0 and self._process_kind in ("ar", "block"):
            fixed = self.frames.slice(0).fixed
            end = fixed.index(False) if False in fixed else end  # just the prompt, then a note
        self.view.show_history(
            self.frames,
            i,
            self.tokenizer,
            end=end,
            tokens_per_s=self.frames.tokens_per_s(i),
            tokens_per_call=self.frames.tokens_per_call(i),
        )

    def load_frames(self, frames: list[Any], tokenizer: Any, times: list[float] | None = None):
        """Show frames produced elsewhere (a saved generation); the last one is displayed."""
        self._stop_replay()
        self._gen_id += 1  # anything still in flight is now stale
        self.generating = False
        self._pending = None
        self._shown_seed = None
        self._update_seed()
        self.tokenizer = tokenizer
        self.view.typed = {}
        self.frames = FrameHistory()
        for i, f in enumerate(frames):
            self.frames.append(f, times[i] if times is not None and i < len(times) else 0.0)
        self.position = len(self.frames) - 1
        self._live = True
        self.last_error = None
        self.set_status(HINT)
        self._show()
        if self.frames and self.frames[-1].done:
            self._collapse_hint()

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
        self.generate()  # focus stays where it is (the prompt, after Enter)

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
        """Replay the animation from the first frame (about 2-10 s, 5-30 frames a second;
        a long generation skips frames to stay within that)."""
        self._stop_replay()
        n = len(self.frames)
        if n < 2:
            return
        self.show_position(0)
        self._live = False
        self._replay_stride = max(1, math.ceil(n / (10 / REDRAW_INTERVAL_S)))
        interval = min(0.2, max(REDRAW_INTERVAL_S, 2.0 / n))
        self._replay_timer = self.set_interval(interval, self._replay_tick)

    def _replay_tick(self) -> None:
        if self.position >= len(self.frames) - 1:
            self._stop_replay()
            self._live = True
            return
        self.show_position(min(len(self.frames) - 1, self.position + self._replay_stride))

    def action_focus_prompt(self) -> None:
        self.query_one("#gen-prompt", Input).focus()

    def focus_prompt(self) -> None:
        """Put the cursor in the prompt (for the app: when the tab opens)."""
        self.action_focus_prompt()

    @on(Input.Submitted)
    def _on_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_generate()

    @on(Button.Pressed, "#gen-button")
    def _on_button(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_generate()
