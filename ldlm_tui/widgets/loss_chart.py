"""The live loss chart: train loss (raw and EMA-smoothed) and validation loss on one axis.

Points are collected as they arrive and drawn by a 1 Hz timer only when something changed, so
a fast trainer posting hundreds of steps a second costs the UI (and the GIL the trainer
shares) a handful of redraws. Validation is plotted as ``val_loss`` (nats/token), the same
unit as the training loss, so the two curves are comparable; bits/char is in the stats.
"""

from __future__ import annotations

import math

from textual_plotext import PlotextPlot

EMA_ALPHA = 0.1
REDRAW_S = 1.0  # plotext rebuilds the whole figure: once a second is live enough for a curve
MAX_POINTS = 400  # per series after downsampling; a terminal has fewer columns than this


def _thin(xs: list[float], ys: list[float], limit: int = MAX_POINTS):
    """Every k-th point (plus the last) so plotting stays cheap on long runs."""
    if len(xs) <= limit:
        return xs, ys
    k = math.ceil(len(xs) / limit)
    return xs[::k] + xs[-1:], ys[::k] + ys[-1:]


class LossChart(PlotextPlot):
    """Loss vs step; ``compare`` mode overlays several runs' smoothed training losses."""

    DEFAULT_CSS = "LossChart { min-height: 5; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.log_scale = False
        self.train_steps: list[float] = []
        self.train_loss: list[float] = []
        self.ema_loss: list[float] = []
        self.val_steps: list[float] = []
        self.val_loss: list[float] = []
        self.compare: dict[str, tuple[list[float], list[float]]] = {}
        self.title = "loss"
        self.dirty = True

    def on_mount(self) -> None:
        super().on_mount()
        self.set_interval(REDRAW_S, self.redraw_if_dirty)
        self.redraw()

    # ------------------------------------------------------------------ data
    def clear(self, title: str = "loss") -> None:
        self.train_steps, self.train_loss, self.ema_loss = [], [], []
        self.val_steps, self.val_loss = [], []
        self.compare = {}
        self.title = title
        self.dirty = True

    def add_train(self, step: int, loss: float) -> None:
        if not math.isfinite(loss):
            return
        prev = self.ema_loss[-1] if self.ema_loss else loss
        self.train_steps.append(step)
        self.train_loss.append(loss)
        self.ema_loss.append(prev + EMA_ALPHA * (loss - prev))
        self.dirty = True

    def add_val(self, step: int, val_loss: float) -> None:
        if math.isfinite(val_loss):
            self.val_steps.append(step)
            self.val_loss.append(val_loss)
            self.dirty = True

    def set_compare(self, curves: dict[str, tuple[list[float], list[float]]]) -> None:
        """Show these runs' smoothed (steps, losses) over the live curves until cleared."""
        self.compare = {name: (list(x), _ema(list(y))) for name, (x, y) in curves.items()}
        self.dirty = True

    def clear_compare(self) -> bool:
        """Back to the live curves (which kept collecting meanwhile); False if not comparing."""
        if not self.compare:
            return False
        self.compare = {}
        self.dirty = True
        return True

    def toggle_log_scale(self) -> bool:
        self.log_scale = not self.log_scale
        self.dirty = True
        self.redraw()
        return self.log_scale

    @property
    def point_count(self) -> int:
        return len(self.train_steps) + len(self.val_steps)

    # ------------------------------------------------------------------ drawing
    def redraw_if_dirty(self) -> None:
        if self.dirty:
            self.redraw()

    def redraw(self) -> None:
        self.dirty = False
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        scale = "log" if self.log_scale else "linear"
        title = "compare: " + ", ".join(self.compare) if self.compare else self.title
        plt.title(f"{title} ({scale})")
        plt.xlabel("step")
        plotted = False
        if self.compare:
            for name, (xs, ys) in self.compare.items():
                if xs:
                    plt.plot(*_thin(xs, ys), label=name[:24], marker="braille")
                    plotted = True
        else:
            if self.train_steps:
                plt.plot(*_thin(self.train_steps, self.train_loss), label="train", marker="dot")
                plt.plot(*_thin(self.train_steps, self.ema_loss), label="ema", marker="braille")
                plotted = True
            if self.val_steps:
                plt.scatter(*_thin(self.val_steps, self.val_loss), label="val", marker="x")
                plotted = True
        if plotted and self.log_scale:
            plt.yscale("log")
        self.refresh()


def _ema(ys: list[float]) -> list[float]:
    out: list[float] = []
    for y in ys:
        out.append(y if not out else out[-1] + EMA_ALPHA * (y - out[-1]))
    return out
