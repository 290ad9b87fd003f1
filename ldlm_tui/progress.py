"""Training and generation displays for the headless CLI.

:func:`make_training_display` returns a sink for :class:`ldlm_engine.Trainer` (a callable taking
:mod:`ldlm_engine.events` objects): a Rich progress bar with the periodic samples and evaluations
printed above it on an interactive terminal, or plain one-line-per-event logs otherwise (nohup,
CI, a detached run's ``train.log``, ``TERM=dumb``)::

    step 120/300 | epoch 0.29 | loss 3.112 | 52,300 tok/s | lr 1.2e-03 | eta 5s
    eval step 100 | val ≤ 4.51 bits/char (±0.08)
    sample step 100 | 'the cat sat\\non the mat'

:func:`render_frame` / :func:`render_transcript` (from :mod:`ldlm_tui.render`, shared with the
app) turn denoising frames into a ``rich.text.Text`` (generated text is never parsed as markup).

The ETA is the engine's (:class:`ldlm_engine.eta.Eta`), the one the app and ``ldlm runs``
show. This module imports neither torch nor the engine at import time.
"""

from __future__ import annotations

import math
import os
import sys
from typing import IO, Any

from rich.console import Console
from rich.text import Text

# One renderer for the CLI and the app: re-exported for ``ldlm generate --animate``.
from .render import MASK_GLYPH, render_frame, render_transcript  # noqa: F401


def use_rich(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` is an interactive terminal that can take live updates."""
    stream = stream if stream is not None else sys.stdout
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def make_console(stream: IO[str] | None = None, *, stderr: bool = False) -> Console:
    """A Rich console that honours NO_COLOR and TERM=dumb and never guesses markup."""
    no_color = bool(os.environ.get("NO_COLOR")) or os.environ.get("TERM") == "dumb"
    return Console(
        file=stream,
        stderr=stderr,
        no_color=no_color,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=False,
    )


def format_duration(seconds: float | None) -> str:
    """``0:00:05`` style (hours may exceed 24); ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    return f"{s // 3600}:{(s % 3600) // 60:02d}:{s % 60:02d}"


def format_bound(
    bits_per_char: float, stderr: float = 0.0, exact: bool = False, ar_head: float | None = None
) -> str:
    """``val ≤ 4.51 bits/char (±0.08)`` (a bound) or ``val = 4.51 bits/char`` (exact, ar);
    a shifted block model adds its ar head's exact figure, ``· ar head = 3.90``."""
    rel = "=" if exact else "≤"
    out = f"val {rel} {bits_per_char:.2f} bits/char"
    if not exact and stderr:
        out += f" (±{stderr:.2f})"
    if ar_head is not None and math.isfinite(ar_head):
        out += f" · ar head = {ar_head:.2f}"
    return out


def one_line(text: str) -> str:
    """A sample on one line: its Python repr (newlines and control characters escaped)."""
    return repr(text)


def _eta() -> Any:
    from ldlm_engine.eta import Eta  # torch-free, but only when a display is made

    return Eta()


class PlainDisplay:
    """One line per event, flushed at once (safe for nohup, pipes and ``tail -f``)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.eta = _eta()
        self.last_status: dict[str, Any] = {}

    def print(self, line: str = "") -> None:
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (BrokenPipeError, OSError):
            pass  # a closed log must never stop training

    def __call__(self, event: Any) -> None:
        kind = getattr(event, "event", "")
        self.eta.add(event)
        if kind == "step":
            total = event.total_steps or 0
            of = f"/{total}" if total else ""
            self.print(
                f"step {event.step}{of} | epoch {event.epoch:.2f} | loss {event.loss:.3f} | "
                f"{event.tokens_per_s:,.0f} tok/s | lr {event.lr:.1e} | eta {self.eta.text}"
            )
        elif kind == "eval":
            self.print(
                f"eval step {event.step} | "
                + format_bound(
                    event.val_bits_per_char,
                    event.stderr_bits_per_char,
                    event.exact,
                    event.ar_head_bits_per_char,
                )
                + f" | {event.val_bits_per_token:.2f} bits/token"
            )
        elif kind == "sample":
            self.print(f"sample step {event.step} | {one_line(event.text)}")
        elif kind == "checkpoint":
            self.print(f"checkpoint step {event.step} | {event.path}")
        elif kind == "status":
            self.last_status = {"state": event.state, "message": event.message}
            msg = f" | {event.message}" if event.message else ""
            self.print(f"status {event.state} at step {event.step}{msg}")

    def close(self) -> None:
        pass


class RichDisplay:
    """A live progress bar (step/total, epoch, loss, val, tok/s, lr, ETA) with log lines above."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        class TwoLineProgress(Progress):
            """The bar on one line, the statistics under it (fits 80 columns)."""

            stats = Text("starting…", style="dim")

            def get_renderables(self):
                yield self.make_tasks_table(self.tasks)
                yield self.stats

        self.console = console or make_console()
        self.eta = _eta()
        self.last_status: dict[str, Any] = {}
        self.val = "val –"
        self.last_step: Any = None
        self.progress = TwoLineProgress(
            TextColumn("train", style="bold"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            TextColumn("{task.fields[eta]}"),
            console=self.console,
            transient=False,
            refresh_per_second=4,
            expand=True,
        )
        self.task = self.progress.add_task("train", total=None, eta="")
        self.progress.start()

    def _log(self, text: Text) -> None:
        self.progress.console.print(text)

    def __call__(self, event: Any) -> None:
        kind = getattr(event, "event", "")
        self.eta.add(event)
        if kind == "step":
            self.last_step = event
            self._show_stats()
        elif kind == "eval":
            rel = "=" if event.exact else "≤"
            self.val = f"val {rel} {event.val_bits_per_char:.2f} b/c"
            self._show_stats()  # at once: the line must not keep "val –" after an eval
            line = Text(f"eval step {event.step}  ", style="cyan")
            line.append(
                format_bound(
                    event.val_bits_per_char,
                    event.stderr_bits_per_char,
                    event.exact,
                    event.ar_head_bits_per_char,
                )
            )
            line.append(f" · {event.val_bits_per_token:.2f} bits/token", style="dim")
            self._log(line)
        elif kind == "sample":
            line = Text(f"sample step {event.step}\n", style="magenta")
            line.append(Text(event.text))  # plain Text: the sample is never parsed as markup
            self._log(line)
        elif kind == "checkpoint":
            self._log(Text(f"checkpoint step {event.step}  {event.path}", style="dim"))
        elif kind == "status":
            self.last_status = {"state": event.state, "message": event.message}
            style = {"failed": "bold red", "stopped": "yellow", "finished": "green"}.get(
                event.state, "dim"
            )
            msg = f" · {event.message}" if event.message else ""
            self._log(Text(f"{event.state} at step {event.step}{msg}", style=style))
            self._show_stats()  # an ended run has no ETA

    def _show_stats(self) -> None:
        """The statistics line and the bar's ETA, from the latest step and eval."""
        event = self.last_step
        if event is None:
            self.progress.stats = Text(self.val, style="dim")
            return
        self.progress.stats = Text(
            f"epoch {event.epoch:.2f} · loss {event.loss:.3f} · {self.val} · "
            f"{event.tokens_per_s:,.0f} tok/s · lr {event.lr:.1e}"
        )
        eta = self.eta.text
        self.progress.update(
            self.task,
            completed=event.step,
            total=event.total_steps or None,
            eta=f"eta {eta}" if self.eta.seconds is not None else "",
        )

    def close(self) -> None:
        self.progress.stop()


def make_training_display(stream: IO[str] | None = None) -> PlainDisplay | RichDisplay:
    """Rich progress on an interactive terminal, plain lines otherwise (see module docstring)."""
    if use_rich(stream):
        return RichDisplay(make_console(stream))
    return PlainDisplay(stream)
