"""Snapshot tests of the Train and Runs panes at 80×24 and 120×40.

Deterministic on purpose: an empty LDLM_HOME and download cache in a temp dir, no training,
no clock, UTC, and runs with fixed contents and file times.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from ldlm_engine import RunDir, get_preset
from ldlm_tui.app import LdlmApp

FIXED_TIME = 1_700_000_000  # 2023-11-14 22:13 UTC


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LDLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LDLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield tmp_path / "home"
    monkeypatch.undo()
    time.tzset()


def frozen_run(name: str, preset: str, process: str, step: int, best: float | None, state: str):
    cfg = get_preset(preset)
    cfg.process.kind = process
    rd = RunDir.create(cfg, name=name)
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
    frozen_run("shakespeare-small", "small", "mask", 20000, 1.712, "finished")
    frozen_run("seed-uniform", "seed", "uniform", 1200, None, "stopped")
    frozen_run("tiny-ar", "tiny", "ar", 300, 2.345, "finished")
    assert snap_compare(LdlmApp(), terminal_size=size, press=["r"])
