"""The one ETA of a training run, from its step events and its plan.

The CLI progress line, the app's statistics and ``ldlm runs list/show`` each used to compute
their own (one from its own clock since the first step it saw, one from the average since
the run began), so the same run at the same moment showed two different times. Here the ETA
is a function of the step events alone (``step``, ``elapsed_s``, ``total_steps``), which every
front end sees the same, whether it trains the run or follows its ``metrics.jsonl``:

    pace = elapsed time per step over the last :data:`WINDOW` logged steps
    ETA  = pace x (planned steps - latest step)

The recent pace follows a run that speeds up or slows down (evaluations and checkpoints are
in it, as they will recur); with a single event the pace is the average since the start. A
run that has stopped, finished or failed has no ETA. Torch-free.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections import deque
from typing import Any

from . import layout as L
from .fileio import open_nofollow
from .metrics_log import parse_lines

WINDOW = 20
"""Logged steps the pace is measured over."""

ENDED_STATES = frozenset({"stopping", "stopped", "finished", "failed", "dead", "damaged"})
"""Run states (events' and ``RunDir.liveness()``'s) in which no ETA is shown."""

TAIL_BYTES = 64 * 1024
"""How much of the end of ``metrics.jsonl`` :func:`run_eta` reads: many step events."""


def format_eta(seconds: float | None) -> str:
    """``1h02m``, ``3m05s``, ``12s``; ``-`` when there is none. The one format everywhere."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class Eta:
    """Feed it a run's events in order (``add``); ``seconds``/``text`` give its ETA."""

    def __init__(self, window: int = WINDOW) -> None:
        self._points: deque[tuple[int, float]] = deque(maxlen=max(2, window))
        self.total = 0
        self.ended = False

    def add(self, event: Any) -> None:
        """Take one event: an engine :class:`~ldlm_engine.events.Event` or its dict."""
        get = event.get if isinstance(event, dict) else lambda k, d=None: getattr(event, k, d)
        kind = get("event", "")
        if kind == "step":
            self.add_step(get("step", 0), get("elapsed_s", 0.0), get("total_steps", 0))
        elif kind == "status":
            self.set_state(str(get("state", "")))

    def add_step(self, step: Any, elapsed_s: Any, total_steps: Any = 0) -> None:
        if not (_is_num(step) and _is_num(elapsed_s)):
            return
        if _is_num(total_steps) and total_steps > 0:
            self.total = int(total_steps)
        if self._points:
            last_step, last_elapsed = self._points[-1]
            if step <= last_step or elapsed_s < last_elapsed:  # a resume from an earlier step
                self._points.clear()
        self._points.append((int(step), float(elapsed_s)))
        self.ended = False

    def set_state(self, state: str) -> None:
        """A run's state (a status event or ``liveness()``): ended states have no ETA."""
        if state in ENDED_STATES:
            self.ended = True
        elif state in ("started", "resumed", "live"):
            self.ended = False

    @property
    def seconds(self) -> float | None:
        if self.ended or not self._points or self.total <= 0:
            return None
        step, elapsed = self._points[-1]
        if step >= self.total:
            return None
        first_step, first_elapsed = self._points[0]
        if step > first_step:
            pace = (elapsed - first_elapsed) / (step - first_step)
        elif step > 0:
            pace = elapsed / step
        else:
            return None
        return max(0.0, pace) * (self.total - step)

    @property
    def text(self) -> str:
        return format_eta(self.seconds)


def run_eta(run: Any, state: str | None = None) -> Eta:
    """The ETA of a run on disk (a :class:`~ldlm_engine.runs.RunDir`), from the end of its
    ``metrics.jsonl`` (bounded read, no symlink followed) and its state (``liveness()``
    unless given)."""
    eta = Eta()
    data = b""
    with contextlib.suppress(OSError):
        fd = open_nofollow(run.path / L.METRICS_FILE)
        try:
            size = os.fstat(fd).st_size
            start = max(0, size - TAIL_BYTES)
            data = os.pread(fd, size - start, start)
        finally:
            os.close(fd)
        if start > 0:  # the first line is probably cut
            data = data[data.find(b"\n") + 1 :]
    for event in parse_lines(data):
        eta.add(event)
    eta.set_state(state if state is not None else run.liveness())
    return eta


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


__all__ = ["ENDED_STATES", "Eta", "format_eta", "run_eta"]
