"""The live loss chart: train loss (raw and smoothed) and validation loss on one axis.

Points are collected as they arrive and drawn by a 1 Hz timer only when something changed, so
a fast trainer posting hundreds of steps a second costs the UI (and the GIL the trainer
shares) a handful of redraws. Validation is plotted as ``val_loss`` (nats/token), the same
unit as the training loss, so the two curves are comparable; bits/char is in the stats.

What makes it worth watching lives in pure functions (tested without a terminal):

- :func:`smooth`: a centred local-linear smoother. An exponential average (even a debiased
  one) trails a falling loss by about 1/(1 - smoothing) steps, so at 0.95 it drew the
  smoothed line above every raw point; a window centred on each point, fitted with a line
  (one-sided at the ends), is unbiased on a trend as well as on a flat noisy series. The
  smoothing is adjustable (``[`` rougher, ``]`` smoother).
- :func:`robust_ylim`: a y-range from the bulk of the points, so the warm-up spike does not
  squash the interesting part; it never cuts off the latest values.
- :func:`step_ticks`: integer step ticks (1, 2, 5 x 10^k apart).
- :func:`compare_labels`: Compare legends that say what differs between runs.

``z`` toggles the ``chart-maximized`` class on the screen: app.tcss hides the form and the
sample log so the chart takes the room. The app binds ``[``, ``]`` and ``z`` for the whole
Train tab, so they work without moving the focus onto the chart.

The figure is composed afresh for every frame (:meth:`LossChart.render`): plotext turns a
log-scale figure's data into logarithms *in place* when it builds, so building the same figure
twice (any resize) took the log of the log, pushed every point off the canvas and crashed in
its legend code (IndexError). Anything plotext still raises becomes a one-line note in the
chart instead of taking the app down.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.text import Text
from textual_plotext import PlotextPlot

SMOOTHING_LEVELS = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)
"""Smoothing factors ``[`` / ``]`` step through (0 = raw)."""
DEFAULT_SMOOTHING = 0.9
REDRAW_S = 1.0  # plotext rebuilds the whole figure: once a second is live enough for a curve
POINTS_PER_COLUMN = 2  # per series after downsampling: a braille cell is 2 dots wide
MAXIMIZED_CLASS = "chart-maximized"
MIN_WIDTH, MIN_HEIGHT = 20, 5  # below this plotext has no room for axes: a note instead
XLABEL_HEIGHT = 12
LEGEND_HEIGHT = 10  # a shorter chart keeps its rows for the curves (the legend covers them)


# --------------------------------------------------------------------------- pure functions


def half_window(smoothing: float) -> int:
    """Points each side of the centre for a smoothing factor (0 -> 0: raw).

    An EMA with factor b has its centre of mass b / (1 - b) points back; the same number of
    points on each side averages away the same noise without the lag (0.95 -> 19).
    """
    b = min(max(float(smoothing), 0.0), 0.999)
    return round(b / (1.0 - b))


class Smoother:
    """Running sums of a series, so each smoothed point costs O(1) however wide the window.

    ``values(h)`` fits a line to the points within ``h`` of each point (fewer at the ends,
    where the window is one-sided) and evaluates it there. In the middle the window is
    symmetric and the fit is its plain mean; at the ends the line keeps a trend from pulling
    the curve off the data. A flat series comes back unchanged from the first point.
    """

    def __init__(self, ys: Sequence[float] = ()) -> None:
        self._sy = [0.0]  # prefix sums of y_j
        self._sjy = [0.0]  # prefix sums of j * y_j
        self._done: list[float] = []  # points whose window no later point can change
        self._done_h = -1
        for y in ys:
            self.append(y)

    def __len__(self) -> int:
        return len(self._sy) - 1

    def append(self, y: float) -> None:
        j = len(self)
        self._sy.append(self._sy[-1] + y)
        self._sjy.append(self._sjy[-1] + j * y)

    def _at(self, i: int, h: int) -> float:
        a, b = max(0, i - h), min(len(self) - 1, i + h)
        n = b - a + 1
        sy = self._sy[b + 1] - self._sy[a]
        if n == 1:
            return sy
        mean_u = (n - 1) / 2.0  # u = j - a runs over 0..n-1
        suy = (self._sjy[b + 1] - self._sjy[a]) - a * sy
        var_u = n * (n * n - 1) / 12.0  # sum of (u - mean_u)^2
        slope = (suy - mean_u * sy) / var_u
        return sy / n + slope * ((i - a) - mean_u)

    def values(self, h: int) -> list[float]:
        """The smoothed series at half-window ``h``; cached where no new point can change it."""
        if h != self._done_h:
            self._done, self._done_h = [], h
        n = len(self)
        final = max(0, n - h - 1)  # points i with i + h <= n - 1 keep their value
        done = self._done
        for i in range(len(done), final):
            done.append(self._at(i, h))
        return done + [self._at(i, h) for i in range(len(done), n)]


def smooth(ys: Sequence[float], smoothing: float) -> list[float]:
    """``ys`` smoothed at ``smoothing`` (0 = raw); see :class:`Smoother`."""
    h = half_window(smoothing)
    return list(ys) if h == 0 else Smoother(ys).values(h)


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


def _thin(xs: Sequence[float], ys: Sequence[float], limit: int) -> tuple[list, list]:
    """Every k-th point (plus the last), at most about ``limit``: a redraw of a long run costs
    the UI thread what a terminal can show, not what the run has logged."""
    if len(xs) <= limit:
        return list(xs), list(ys)
    k = math.ceil(len(xs) / max(1, limit))
    return list(xs[::k]) + list(xs[-1:]), list(ys[::k]) + list(ys[-1:])


# --------------------------------------------------------------------------- the widget


class LossChart(PlotextPlot):
    """Loss vs step; ``compare`` mode overlays several runs' smoothed training losses.

    For the app: ``set_compare(curves, labels=compare_labels(configs))`` shows runs with
    legends that differ; ``smoother()`` / ``rougher()`` change the smoothing;
    ``toggle_maximized()`` gives the chart the pane; ``toggle_log_scale()`` as before.
    """

    DEFAULT_CSS = "LossChart { min-height: 5; }"

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
        self._smoother = Smoother()  # the train losses' running sums
        self.draw_error = ""  # what plotext raised at the last frame ("" = drawn as asked)

    def on_mount(self) -> None:
        super().on_mount()
        self.set_interval(REDRAW_S, self.redraw_if_dirty)

    # ------------------------------------------------------------------ data
    def clear(self, title: str = "loss") -> None:
        self.train_steps, self.train_loss = [], []
        self.val_steps, self.val_loss = [], []
        self.compare, self.compare_labels = {}, {}
        self._smoother = Smoother()
        self.title = title
        self.dirty = True

    @property
    def smoothed_loss(self) -> list[float]:
        """The smoothed training loss (:class:`Smoother` at ``smoothing``)."""
        if len(self._smoother) != len(self.train_loss):  # the lists were replaced
            self._smoother = Smoother(self.train_loss)
        h = half_window(self.smoothing)
        return list(self.train_loss) if h == 0 else self._smoother.values(h)

    def add_train(self, step: int, loss: float) -> None:
        if not math.isfinite(loss):
            return
        self.train_steps.append(step)
        self.train_loss.append(loss)
        self._smoother.append(loss)
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
        self.redraw()
        return self.log_scale

    def set_smoothing(self, smoothing: float) -> None:
        self.smoothing = min(max(float(smoothing), 0.0), 0.999)
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

    @property
    def point_count(self) -> int:
        return len(self.train_steps) + len(self.val_steps)

    # ------------------------------------------------------------------ drawing
    def redraw_if_dirty(self) -> None:
        if self.dirty:
            self.redraw()

    def redraw(self) -> None:
        """Draw the current data now (the figure itself is composed by :meth:`render`)."""
        self.dirty = False
        if self.is_mounted:
            self.refresh()

    def render(self) -> Any:
        """A fresh figure for this size; a note when it cannot be drawn (never a traceback)."""
        width, height = self.size.width, self.size.height
        if width < MIN_WIDTH or height < MIN_HEIGHT:
            return Text("chart: too small", style="dim", no_wrap=True, overflow="ellipsis")
        self.draw_error = ""
        for legend in (True, False):  # plotext's legend is its most fragile part
            try:
                self._compose_figure(width, legend=legend and height >= LEGEND_HEIGHT)
                return super().render()
            except Exception as e:  # a chart must never take the app down
                self.draw_error = self.draw_error or f"{type(e).__name__}: {e}"
        kind = self.draw_error.split(":", 1)[0]
        return Text(f"loss chart cannot be drawn here ({kind})", style="dim")

    def _compose_figure(self, width: int, *, legend: bool = True) -> None:
        """Issue every plotext command for the current data (plotext draws it at build)."""
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        title = "compare" if self.compare else self.title
        scale = "log" if self.log_scale else "linear"
        for full in (f"{title} ({scale}, smoothing {self.smoothing:g})", f"{title} ({scale})"):
            if len(full) <= width - 14:  # plotext leaves out a title wider than the plot
                title = full
                break
        plt.title(title)
        if self.size.height >= XLABEL_HEIGHT:  # else the tick numbers say it: a row for data
            plt.xlabel("step")
        # Log scale: only positive losses have a logarithm (plotext raises on the others).
        floor = 0.0 if self.log_scale else -math.inf
        shown: list[list[float]] = []
        latest: list[float] = []
        xs_all: list[float] = []

        limit = POINTS_PER_COLUMN * width

        def draw(kind: str, xs: Sequence[float], ys: Sequence[float], label: str, marker: str):
            tx, ty = _thin(xs, ys, limit)
            pts = [(x, y) for x, y in zip(tx, ty, strict=False) if math.isfinite(y) and y > floor]
            if not pts:
                return
            px, py = [p[0] for p in pts], [p[1] for p in pts]
            getattr(plt, kind)(px, py, label=label if legend else None, marker=marker)
            shown.append(py)
            latest.append(py[-1])
            xs_all.extend((px[0], px[-1]))

        if self.compare:
            for name, (xs, ys) in self.compare.items():
                label = self.compare_labels.get(name, name)
                draw("plot", xs, smooth(ys, self.smoothing), label, "braille")
        else:
            if self.train_steps:
                draw("plot", self.train_steps, self.train_loss, "train", "dot")
                draw("plot", self.train_steps, self.smoothed_loss, "smoothed", "braille")
            if self.val_steps:
                draw("scatter", self.val_steps, self.val_loss, "val", "x")
        if xs_all:
            ticks = step_ticks(min(xs_all), max(xs_all), max(2, min(8, width // 10)))
            if ticks:
                plt.xticks(ticks, [tick_label(t) for t in ticks])
        if shown and self.log_scale:
            plt.yscale("log")
        elif shown:
            ylim = robust_ylim(shown, keep=latest)
            if ylim is not None:
                plt.ylim(*ylim)
