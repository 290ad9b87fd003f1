"""Training statistics: the numbers beside the chart, redrawn at most a few times a second.

Values arrive with every message but are only rendered by a timer when changed, for the same
reason as the chart: the UI must cost the trainer next to nothing.
"""

from __future__ import annotations

import math

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from ldlm_engine.eta import Eta

# Live numbers repaint twice a second: each repaint holds the GIL the trainer thread needs, and
# a faster counter is not easier to read.
REFRESH_S = 0.5


def fmt_rate(x: float) -> str:
    """Human tokens/s: ``950``, ``12.3k``, ``1.20M``."""
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


class TrainStats(Static):
    """Step/total, epoch, loss, val bits/char, tokens/s, ETA, lr, device, memory, state."""

    DEFAULT_CSS = "TrainStats { height: 4; }"  # fixed: a redraw then needs no layout pass

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.reset()

    def reset(self, run: str = "", state: str = "idle") -> None:
        self.run = run
        self.state = state
        self.message = ""
        self.phase = ""
        self.step = 0
        self.total = 0
        self.epoch = 0.0
        self.loss: float | None = None
        self.val_bpc: float | None = None
        self.val_exact = False
        self.val_ar_head: float | None = None
        self.tokens_per_s = 0.0
        self.eta = Eta()  # the engine's: the same ETA as the CLI and `ldlm runs`
        self.lr: float | None = None
        self.device = "-"
        self.peak_mem_mb = 0.0
        self.dirty = True

    def on_mount(self) -> None:
        self.set_interval(REFRESH_S, self.redraw_if_dirty)
        self.redraw()

    def set_state(self, state: str, message: str = "") -> None:
        self.state = state
        self.eta.set_state(state)
        if message:
            self.message = message
            if message.startswith("device "):
                self.device = message.split(",")[0].removeprefix("device ").strip()
        self.dirty = True

    def update_step(
        self, step, total, loss, lr, tokens_per_s, epoch, elapsed_s, mem, phase: str = ""
    ) -> None:
        self.phase = phase
        self.step, self.loss, self.lr, self.epoch = step, loss, lr, epoch
        self.tokens_per_s, self.peak_mem_mb = tokens_per_s, mem
        if total:
            self.total = total
        self.eta.add_step(step, elapsed_s, total)
        self.dirty = True

    def update_eval(self, val_bpc: float, exact: bool, ar_head: float | None = None) -> None:
        self.val_bpc, self.val_exact, self.val_ar_head = val_bpc, exact, ar_head
        self.dirty = True

    def redraw_if_dirty(self) -> None:
        if self.dirty:
            self.redraw()

    def redraw(self) -> None:
        self.dirty = False
        self.update(self.render_stats(), layout=False)

    def render_stats(self) -> Group:
        def num(x: float | None, spec: str) -> str:
            return "-" if x is None or not math.isfinite(x) else format(x, spec)

        total = f"/{self.total}" if self.total else ""
        rel = "=" if self.val_exact else "≤"
        val = "-" if self.val_bpc is None else f"{rel} {num(self.val_bpc, '.3f')}"
        if self.val_ar_head is not None and math.isfinite(self.val_ar_head):
            val += f" ar {self.val_ar_head:.2f}"  # the ar head's exact figure
        mem = f"{self.peak_mem_mb:.0f} MB" if self.peak_mem_mb else "-"
        cells = [
            ("step", f"{self.step}{total}"),
            ("epoch", num(self.epoch, ".2f")),
            ("loss", num(self.loss, ".4f")),
            ("val b/c", val),
            ("tok/s", fmt_rate(self.tokens_per_s) if self.tokens_per_s else "-"),
            ("ETA", self.eta.text),
            ("lr", num(self.lr, ".2e")),
            ("device", self.device),
            ("mem", mem),
        ]
        table = Table.grid(padding=(0, 1), expand=True)
        for _ in range(3):
            table.add_column(style="dim", no_wrap=True)
            table.add_column(no_wrap=True, ratio=1)
        for i in range(0, len(cells), 3):
            row: list[Text | str] = []
            for label, value in cells[i : i + 3]:
                row += [label, Text(value)]
            table.add_row(*row)
        state = Text.assemble(("state ", "dim"), (self.state, "bold"), no_wrap=True)
        if self.phase:  # what the run is learning now: "ar", "block 8"
            state.append_text(Text.assemble(("  phase ", "dim"), self.phase))
        if self.run:
            state.append_text(Text.assemble(("  run ", "dim"), self.run))
        state.overflow = "ellipsis"
        return Group(state, table)
