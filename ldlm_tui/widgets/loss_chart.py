"""The live loss chart: train loss (raw and smoothed) and validation loss on one axis.

Points are collected as they arrive and drawn by a 1 Hz timer only when something changed, so
a fast trainer posting hundreds of steps a second costs the UI (and the GIL the trainer
shares) a handful of redraws. Validation is plotted as ``val_loss`` (nats/token), the same
unit as the training loss, so the two curves are comparable; bits/char is in the stats.

What makes it worth watching lives in pure functions (tested without a terminal):

- :func:`debiased_ema`: exponential smoothing with Adam's bias correction, so the smoothed
  curve starts *on* the data instead of lagging above it through the first drop; the
  smoothing is adjustable (``[`` rougher, ``]`` smoother).
- :func:`robust_ylim`: a y-range from the bulk of the points, so the warm-up spike does not
  squash the interesting part; it never cuts off the latest values.
- :func:`step_ticks`: integer step ticks (1, 2, 5 x 10^k apart).
- :func:`compare_labels`: Compare legends that say what differs between runs.

``z`` (when the chart has focus; the app may bind it too) toggles the ``chart-maximized``
class on the screen: app.tcss hides the form and the sample log so the chart takes the room.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from textual.binding import Binding, BindingType
from textual_plotext import PlotextPlot

SMOOTHING_LEVELS = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)
"""Smoothing factors ``[`` / ``]`` step through (0 = raw)."""
DEFAULT_SMOOTHING = 0.9
REDRAW_S = 1.0  # plotext rebuilds the whole figure: once a second is live enough for a curve
MAX_POINTS = 400  # per series after downsampling; a terminal has fewer columns than this
MAXIMIZED_CLASS = "chart-maximized"


# --------------------------------------------------------------------------- pure functions


def debiased_ema(ys: Sequence[float], smoothing: float) -> list[float]:
    """Bias-corrected exponential moving average (Adam's m / (1 - beta^t)).

    A plain EMA started at the first value lags behind a falling loss and sits above every
    raw point through the first drop; started at zero and divided by ``1 - smoothing^t`` it
    weighs the points seen so far correctly from the first one. ``smoothing`` 0 = raw.
    """
    beta = min(max(float(smoothing), 0.0), 0.9999)
    out: list[float] = []
    m = 0.0
    correction = 1.0
    for y in ys:
        m = beta * m + (1.0 - beta) * y
        correction *= beta
        out.append(m / (1.0 - correction))
    return out


def _quantile(sorted_ys: Sequence[float], q: float) -> float:
    pos = q * (len(sorted_ys) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_ys) - 1)
    return sorted_ys[lo] + (sorted_ys[hi] - sorted_ys[lo]) * (pos - lo)


def robust_ylim(
    series: Sequence[Sequence[float]], *, keep: Sequence[float] = (), q: float = 0.9
) -> tuple[float, float] | None:
    """A y-range that ignores the warm-up spike: up to the ``q`` quantile of all points.

    The first few steps of a run sit far above the rest (loss ~ log(vocab) before the model
    has learned anything) and would squash the part that moves. The range is the minimum to
    the ``q`` quantile, widened to include every value in ``keep`` (the latest points, so the
    current value is never cut), plus a little margin. None with fewer than 10 points (let the
    plot choose).
    """
    ys = sorted(y for s in series for y in s if math.isfinite(y))
    if len(ys) < 10:
        return None
    lo, hi = ys[0], _quantile(ys, q)
    for y in keep:
        if math.isfinite(y):
            lo, hi = min(lo, y), max(hi, y)
    span = hi - lo
    pad = span * 0.05 if span > 0 else max(abs(hi) * 0.05, 1e-3)
    return lo - pad, hi + pad


def step_ticks(lo: float, hi: float, max_ticks: int = 6) -> list[int]:
    """Integer ticks from ``lo`` to ``hi``, 1, 2 or 5 x 10^k apart, at most ``max_ticks``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        return []
    span = max(hi - lo, 1.0)
    raw = span / max(1, max_ticks - 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), 10 * mag)
    step = max(1, round(step))
    while (hi - lo) / step + 1 > max_ticks:
        step *= 2
    first = math.ceil(lo / step) * step
    return list(range(int(first), math.floor(hi) + 1, step))


def tick_label(step: int) -> str:
    """``950``, ``1.5k``, ``12k``, ``1.2M``: short enough for 80 columns."""
    if step >= 1_000_000:
        return f"{step / 1e6:.3g}M"
    if step >= 1000:
        return f"{step / 1e3:.3g}k"
    return str(step)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


# Fields that differ between any two runs and say nothing about the curves.
_IGNORED = ("name", "run_dir", "seed", "device", "created", "train.device", "data.path")


def compare_labels(
    configs: Mapping[str, Mapping[str, Any] | None], *, width: int = 36, max_fields: int = 3
) -> dict[str, str]:
    """Legend labels for Compare: each run's name plus the config fields that differ.

    ``configs`` maps run name -> its ``config.json`` as a dict (None if unreadable). Fields
    equal in every run are left out (``lr=0.001`` only when the runs' lr differ), by their
    last name (``model.d_model`` -> ``d_model``). A label longer than ``width`` drops the
    names' common prefix (``…-b``) before the fields, so two runs never look alike.
    """
    names = list(configs)
    flat = {n: _flatten(c) if c else {} for n, c in configs.items()}
    keys = sorted({k for f in flat.values() for k in f})
    differing = []
    for k in keys:
        if k in _IGNORED or k.rsplit(".", 1)[-1] in _IGNORED:
            continue
        values = {repr(flat[n].get(k)) for n in names}
        if len(values) > 1:
            differing.append(k)
    prefix = _common_prefix(names) if len(names) > 1 else ""
    labels: dict[str, str] = {}
    for n in names:
        fields = [
            f"{k.rsplit('.', 1)[-1]}={_short(flat[n].get(k))}" for k in differing[:max_fields]
        ]
        if len(differing) > max_fields:
            fields.append("…")
        detail = f" ({', '.join(fields)})" if fields else ""
        label = n + detail
        if len(label) > width and len(prefix) > 3:
            label = "…" + n[len(prefix) - 1 :] + detail
        labels[n] = label
    return labels


def _common_prefix(names: Sequence[str]) -> str:
    first, last = min(names), max(names)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    s = str(v)
    return s if len(s) <= 14 else s[:6] + "…" + s[-6:]


def _thin(xs: list[float], ys: list[float], limit: int = MAX_POINTS):
    """Every k-th point (plus the last) so plotting stays cheap on long runs."""
    if len(xs) <= limit:
        return xs, ys
    k = math.ceil(len(xs) / limit)
    return xs[::k] + xs[-1:], ys[::k] + ys[-1:]


# --------------------------------------------------------------------------- the widget


class LossChart(PlotextPlot):
    """Loss vs step; ``compare`` mode overlays several runs' smoothed training losses.

    For the app: ``set_compare(curves, labels=compare_labels(configs))`` shows runs with
    legends that differ; ``smoother()`` / ``rougher()`` change the smoothing;
    ``toggle_maximized()`` gives the chart the pane; ``toggle_log_scale()`` as before.
    """

    DEFAULT_CSS = "LossChart { min-height: 5; } LossChart:focus { background-tint: $primary 5%; }"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left_square_bracket", "rougher", "Rougher", show=False),
        Binding("right_square_bracket", "smoother", "Smoother", show=False),
        Binding("z", "toggle_maximized", "Zoom chart"),
    ]

    can_focus = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.log_scale = False
        self.smoothing = DEFAULT_SMOOTHING
        self.train_steps: list[float] = []
        self.train_loss: list[float] = []
        self.val_steps: list[float] = []
        self.val_loss: list[float] = []
        self.compare: dict[str, tuple[list[float], list[float]]] = {}
        self.compare_labels: dict[str, str] = {}
        self.title = "loss"
        self.dirty = True
        self._ema: list[float] = []  # debiased EMA of train_loss at self.smoothing
        self._ema_m = 0.0
        self._ema_c = 1.0

    def on_mount(self) -> None:
        super().on_mount()
        self.set_interval(REDRAW_S, self.redraw_if_dirty)
        self.redraw()

    # ------------------------------------------------------------------ data
    def clear(self, title: str = "loss") -> None:
        self.train_steps, self.train_loss = [], []
        self.val_steps, self.val_loss = [], []
        self.compare, self.compare_labels = {}, {}
        self._reset_ema()
        self.title = title
        self.dirty = True

    def _reset_ema(self) -> None:
        self._ema, self._ema_m, self._ema_c = [], 0.0, 1.0

    @property
    def ema_loss(self) -> list[float]:
        """The smoothed training loss (bias-corrected EMA at ``smoothing``)."""
        if len(self._ema) != len(self.train_loss):
            self._reset_ema()
            self._ema = debiased_ema(self.train_loss, self.smoothing)
            beta = self.smoothing
            self._ema_c = beta ** len(self.train_loss)
            self._ema_m = self._ema[-1] * (1 - self._ema_c) if self._ema else 0.0
        return self._ema

    def add_train(self, step: int, loss: float) -> None:
        if not math.isfinite(loss):
            return
        self.train_steps.append(step)
        self.train_loss.append(loss)
        if len(self._ema) == len(self.train_loss) - 1:  # incremental: O(1) per point
            beta = min(max(self.smoothing, 0.0), 0.9999)
            self._ema_m = beta * self._ema_m + (1 - beta) * loss
            self._ema_c *= beta
            self._ema.append(self._ema_m / (1 - self._ema_c))
        self.dirty = True

    def add_val(self, step: int, val_loss: float) -> None:
        if math.isfinite(val_loss):
            self.val_steps.append(step)
            self.val_loss.append(val_loss)
            self.dirty = True

    def set_compare(
        self,
        curves: dict[str, tuple[list[float], list[float]]],
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """Show these runs' raw (steps, losses), smoothed, over the live curves until cleared.

        ``labels`` (run name -> legend), e.g. from :func:`compare_labels` with each run's
        ``config.json``, says what differs between the runs; default: the names.
        """
        self.compare = {name: (list(x), list(y)) for name, (x, y) in curves.items()}
        self.compare_labels = dict(labels or {})
        self.dirty = True

    def clear_compare(self) -> bool:
        """Back to the live curves (which kept collecting meanwhile); False if not comparing."""
        if not self.compare:
            return False
        self.compare, self.compare_labels = {}, {}
        self.dirty = True
        return True

    def toggle_log_scale(self) -> bool:
        self.log_scale = not self.log_scale
        self.dirty = True
        self.redraw()
        return self.log_scale

    def set_smoothing(self, smoothing: float) -> None:
        self.smoothing = min(max(float(smoothing), 0.0), 0.9999)
        self._reset_ema()
        self.dirty = True
        if self.is_mounted:
            self.redraw()

    def smoother(self) -> float:
        """Next smoothing level up (``]``); returns the new smoothing."""
        higher = [s for s in SMOOTHING_LEVELS if s > self.smoothing + 1e-9]
        self.set_smoothing(higher[0] if higher else SMOOTHING_LEVELS[-1])
        return self.smoothing

    def rougher(self) -> float:
        """Next smoothing level down (``[``); returns the new smoothing."""
        lower = [s for s in SMOOTHING_LEVELS if s < self.smoothing - 1e-9]
        self.set_smoothing(lower[-1] if lower else 0.0)
        return self.smoothing

    def toggle_maximized(self) -> bool:
        """Give the chart the whole pane (hides the form and the sample log) or restore it."""
        screen = self.screen
        screen.toggle_class(MAXIMIZED_CLASS)
        self.dirty = True
        return screen.has_class(MAXIMIZED_CLASS)

    def action_smoother(self) -> None:
        self.smoother()

    def action_rougher(self) -> None:
        self.rougher()

    def action_toggle_maximized(self) -> None:
        self.toggle_maximized()

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
        smooth = f"smoothing {self.smoothing:g}"
        if self.compare:
            plt.title(f"compare ({scale}, {smooth})")
        else:
            plt.title(f"{self.title} ({scale}, {smooth})")
        plt.xlabel("step")
        shown: list[list[float]] = []
        latest: list[float] = []
        xs_all: list[float] = []
        if self.compare:
            for name, (xs, ys) in self.compare.items():
                if xs:
                    sm = debiased_ema(ys, self.smoothing)
                    label = self.compare_labels.get(name, name)
                    plt.plot(*_thin(xs, sm), label=label, marker="braille")
                    shown.append(sm)
                    latest.append(sm[-1])
                    xs_all += [xs[0], xs[-1]]
        else:
            if self.train_steps:
                ema = self.ema_loss
                plt.plot(*_thin(self.train_steps, self.train_loss), label="train", marker="dot")
                plt.plot(*_thin(self.train_steps, ema), label="smoothed", marker="braille")
                shown += [self.train_loss, ema]
                latest += [self.train_loss[-1], ema[-1]]
                xs_all += [self.train_steps[0], self.train_steps[-1]]
            if self.val_steps:
                plt.scatter(*_thin(self.val_steps, self.val_loss), label="val", marker="x")
                shown.append(self.val_loss)
                latest.append(self.val_loss[-1])
                xs_all += [self.val_steps[0], self.val_steps[-1]]
        if xs_all:
            lo, hi = min(xs_all), max(xs_all)
            width = self.size.width or 80
            ticks = step_ticks(lo, hi, max(2, min(8, width // 10)))
            if ticks:
                plt.xticks(ticks, [tick_label(t) for t in ticks])
        if shown and self.log_scale:
            plt.yscale("log")
        elif shown:
            ylim = robust_ylim(shown, keep=latest)
            if ylim is not None:
                plt.ylim(*ylim)
        self.refresh()
