"""Small Textual messages that carry training events into the UI.

The trainer thread and the metrics-file follower both speak engine events (dicts as written
to ``metrics.jsonl``); :func:`event_to_message` turns one into a message holding only floats
and short strings, so nothing heavy (never a tensor) crosses into the UI thread, and a live
run in this process looks exactly like a run followed from another process.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from textual.message import Message

from ldlm_engine.safe_text import visible

MAX_SAMPLE_CHARS = 2000


def _num(d: dict[str, Any], key: str, default: float = 0.0) -> float:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return default
    return float(v)


class TrainMessage(Message):
    """Base: every training message names its run (stale runs' messages are ignored)."""

    def __init__(self, run: str, step: int) -> None:
        super().__init__()
        self.run = run
        self.step = step


class TrainStep(TrainMessage):
    """A logged optimizer step."""

    def __init__(
        self,
        run: str,
        step: int,
        *,
        loss: float,
        lr: float = 0.0,
        tokens_per_s: float = 0.0,
        epoch: float = 0.0,
        elapsed_s: float = 0.0,
        total_steps: int = 0,
        peak_mem_mb: float = 0.0,
        phase: str = "",
    ) -> None:
        super().__init__(run, step)
        self.phase = phase
        self.loss = loss
        self.lr = lr
        self.tokens_per_s = tokens_per_s
        self.epoch = epoch
        self.elapsed_s = elapsed_s
        self.total_steps = total_steps
        self.peak_mem_mb = peak_mem_mb


class TrainEval(TrainMessage):
    """A held-out evaluation: val_loss in nats/token, bits/char an upper bound unless exact."""

    def __init__(
        self,
        run: str,
        step: int,
        *,
        val_loss: float,
        val_bits_per_char: float,
        exact: bool,
        ar_head_bits_per_char: float | None = None,
    ) -> None:
        super().__init__(run, step)
        self.val_loss = val_loss
        self.val_bits_per_char = val_bits_per_char
        self.exact = exact
        self.ar_head_bits_per_char = ar_head_bits_per_char  # a shifted block model's ar head


class TrainSample(TrainMessage):
    """A periodic sample; ``text`` is model output and must never be parsed as markup."""

    def __init__(self, run: str, step: int, *, text: str) -> None:
        super().__init__(run, step)
        self.text = text


class TrainCheckpoint(TrainMessage):
    def __init__(self, run: str, step: int, *, path: str) -> None:
        super().__init__(run, step)
        self.path = path


class TrainStatus(TrainMessage):
    """A state change: started, paused, resumed, stopping, stopped, finished, failed."""

    def __init__(self, run: str, step: int, *, state: str, message: str = "") -> None:
        super().__init__(run, step)
        self.state = state
        self.message = message


class TrainFinished(Message):
    """Posted by the App's trainer thread when ``Trainer.run`` returns or raises."""

    def __init__(self, run: str, state: str, error: str = "") -> None:
        super().__init__()
        self.run = run
        self.state = state
        self.error = error


class TrainLaunched(Message):
    """Posted by the trainer thread once its run directory exists and the Trainer is built.

    ``config`` is the run's config.json (plain data); ``history`` a resumed run's events so
    far (dicts of numbers and short strings), read before the trainer appends to them.
    """

    def __init__(
        self, run: str, config: dict[str, Any], history: list[dict[str, Any]], *, resumed: bool
    ) -> None:
        super().__init__()
        self.run = run
        self.config = config
        self.history = history
        self.resumed = resumed


@dataclass(frozen=True)
class LogEntry:
    """One line of the app's message log (the status line shows the newest)."""

    when: float
    severity: str  # information, warning, error
    title: str
    text: str

    def line(self) -> str:
        text = " ".join(self.text.split())
        return f"{self.title}: {text}" if self.title else text


class RunAction(Message):
    """The Runs pane asks the App to act on runs: open, attach, compare, resume."""

    def __init__(self, action: str, runs: tuple[str, ...]) -> None:
        super().__init__()
        self.action = action
        self.runs = runs


# How the engine's command-line wording reads in the app (its form labels).
APP_WORDS = {
    "data": "corpus",
    "max-steps": "steps",
    "batch-size": "batch",
    "seq-len": "seq len",
    "sample-every": "report",
    "eval-every": "report",
    "tokenizer": "tokenizer",
    "lr": "lr",
    "preset": "preset",
    "process": "process",
    "name": "name",
    "block-size": "block",
}


def in_app_words(message: str) -> str:
    """An engine message with its command-line flags named as the Train form names them."""
    message = re.sub(r"\bwith --data\b", "in the corpus field", message)

    def label(m: re.Match[str]) -> str:
        flag = m.group(1)
        return f'the "{APP_WORDS[flag]}" field' if flag in APP_WORDS else m.group(0)

    return re.sub(r"--([a-z][a-z-]*)", label, message)


def event_to_message(d: dict[str, Any], run: str) -> TrainMessage | None:
    """One ``metrics.jsonl`` event dict as a message; unknown or malformed events give None."""
    kind = d.get("event")
    step = d.get("step")
    if not isinstance(step, int) or isinstance(step, bool):
        return None
    if kind == "step":
        loss = _num(d, "loss", math.nan)
        if not math.isfinite(loss):
            return None
        return TrainStep(
            run,
            step,
            loss=loss,
            lr=_num(d, "lr"),
            tokens_per_s=_num(d, "tokens_per_s"),
            epoch=_num(d, "epoch"),
            elapsed_s=_num(d, "elapsed_s"),
            total_steps=int(_num(d, "total_steps")),
            peak_mem_mb=_num(d, "peak_mem_mb"),
            phase=_text(d.get("phase")),
        )
    if kind == "eval":
        val_loss = _num(d, "val_loss", math.nan)
        if not math.isfinite(val_loss):
            return None
        return TrainEval(
            run,
            step,
            val_loss=val_loss,
            val_bits_per_char=_num(d, "val_bits_per_char", math.nan),
            exact=d.get("exact") is True,
            ar_head_bits_per_char=(
                _num(d, "ar_head_bits_per_char", math.nan)
                if d.get("ar_head_bits_per_char") is not None
                else None
            ),
        )
    if kind == "sample":
        return TrainSample(run, step, text=str(d.get("text", ""))[:MAX_SAMPLE_CHARS])
    if kind == "checkpoint":
        return TrainCheckpoint(run, step, path=str(d.get("path", ""))[:500])
    if kind == "status":
        return TrainStatus(
            run, step, state=str(d.get("state", ""))[:20], message=str(d.get("message", ""))[:200]
        )
    return None


def _text(value: object, limit: int = 40) -> str:
    """A short display string from a metrics field (anything else: empty)."""
    return visible(value[:limit]) if isinstance(value, str) else ""
