"""Snapshot tests of the Train and Runs panes at 80×24 and 120×40.

Deterministic on purpose: an empty LDLM_HOME, download cache, config and state folders in a
temp dir (the user's config.toml would change the form), no training, no clock, UTC, and runs
with fixed contents and file times.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from ldlm_engine import RunDir, adapt_process, get_preset
from ldlm_tui.app import LdlmApp

FIXED_TIME = 1_700_000_000  # 2023-11-14 22:13 UTC


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LDLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LDLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LDLM_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("LDLM_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield tmp_path / "home"
    monkeypatch.undo()
    time.tzset()


def frozen_run(
    name: str,
    preset: str,
    process: str,
    step: int,
    best: float | None,
    state: str,
    corpus: str = "builtin",
    losses: tuple[float, ...] = (),
):
    cfg = adapt_process(get_preset(preset), process)
    cfg.data.source = corpus
    rd = RunDir.create(cfg, name=name)
    for i, loss in enumerate(losses):
        rd.append_event({"event": "step", "step": (i + 1) * 10, "loss": loss})
    rd.write_status(state, step=step)
    summary = {"created": FIXED_TIME + len(name), "best_val_bits_per_char": best, "step": step}
    (rd.path / "summary.json").write_text(json.dumps(summary))
    for p in rd.path.iterdir():
        os.utime(p, (FIXED_TIME, FIXED_TIME))
    rd.close()


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_train_pane(snap_compare, home, size):
    assert snap_compare(LdlmApp(), terminal_size=size)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_runs_pane(snap_compare, home, size):
    frozen_run("shakespeare-small", "small", "mask", 20000, 1.712, "finished", "shakespeare")
    frozen_run("seed-uniform", "seed", "uniform", 1200, None, "stopped", "/data/my-notes.txt")
    frozen_run("tiny-ar", "tiny", "ar", 300, 2.345, "finished")
    damaged = home / "runs" / "half-copied"
    damaged.mkdir()
    (damaged / "config.json").write_text("{")
    os.utime(damaged / "config.json", (FIXED_TIME, FIXED_TIME))
    assert snap_compare(LdlmApp(), terminal_size=size, press=["r"])


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_train_pane_showing_a_run(snap_compare, home, size):
    """The current run's settings, read-only, with its curve; n makes a new run of them."""
    losses = (5.0, 4.1, 3.6, 3.3, 3.1, 3.0, 2.9, 2.85, 2.8, 2.78)
    frozen_run("tiny-ar", "tiny", "ar", 100, 2.345, "stopped", "/data/plays.txt", losses)

    async def drawn(pilot) -> None:  # the chart and the stats redraw on timers
        await pilot.pause(1.0)

    assert snap_compare(LdlmApp(watch="tiny-ar"), terminal_size=size, run_before=drawn)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_failed_start_stays_on_the_status_line(snap_compare, home, size):
    async def bad_start(pilot) -> None:
        pilot.app.train_pane.query_one("#max-steps").value = "lots"
        await pilot.press("s")
        await pilot.pause()

    assert snap_compare(LdlmApp(), terminal_size=size, run_before=bad_start)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_generate_pane(snap_compare, home, size):
    """The Generate tab before any run exists: the prompt has the keyboard."""

    async def opened(pilot) -> None:
        await pilot.press("g")
        pilot.app.query_one("#gen-prompt").cursor_blink = False  # a blink is a flaky pixel
        await pilot.pause(0.3)

    assert snap_compare(LdlmApp(), terminal_size=size, run_before=opened)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_help_screen(snap_compare, home, size):
    """? over the Train tab: every key, the chart's included."""
    assert snap_compare(LdlmApp(), terminal_size=size, press=["question_mark"])
