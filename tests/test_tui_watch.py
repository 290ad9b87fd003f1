"""``ldlm watch``: what it shows at 80×24, and that its benchmark really starts it in a pty."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, ldlm_env
from textual.widgets import RichLog
from tui_helpers import screen_lines, wait_for

from ldlm_engine import RunDir, get_preset
from ldlm_tui.app import LdlmApp

pytestmark = pytest.mark.anyio


def logged_run(name: str, samples: int = 10) -> RunDir:
    """A run with a loss curve, evaluations and samples in its metrics log (no training)."""
    rd = RunDir.create(get_preset("tiny"), name=name)
    for i in range(1, 201):
        rd.append_event({"event": "step", "step": i, "loss": 4.0 / (1 + 0.02 * i)})
        if i % 20 == 0:
            rd.append_event({"event": "eval", "step": i, "val_loss": 4.2 / (1 + 0.02 * i)})
        if i % (200 // samples) == 0:
            rd.append_event({"event": "sample", "step": i, "text": f"sample text number {i}"})
    rd.write_status("stopped", step=200)
    rd.close()
    return rd


async def test_watch_at_80x24_shows_a_titled_chart_and_six_sample_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("LDLM_HOME", str(tmp_path / "home"))
    logged_run("watched")
    app = LdlmApp(watch="watched")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(1.2)  # the chart redraws on its timer
        text = "\n".join(screen_lines(app))
        assert "loss: watched" in text
        log = app.main_query("#samples")
        assert isinstance(log, RichLog)
        assert log.scrollable_content_region.height >= 6
        shown = [line for line in text.splitlines() if "sample text number" in line]
        assert len(shown) >= 6, text


def test_the_watch_benchmark_measures_startup_and_idle_cpu(tmp_path):
    home = tmp_path / "home"
    env = ldlm_env(home)
    res = subprocess.run(
        [sys.executable, "-c", "from ldlm_engine import RunDir, get_preset; import sys; "
         "rd = RunDir.create(get_preset('tiny'), name='w'); "
         "rd.append_event({'event': 'step', 'step': 1, 'loss': 3.0}); rd.close()"],
        env=env, capture_output=True, text=True, timeout=120, cwd=REPO / "tests",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    cmd = [sys.executable, "watch_startup.py", "--run", "w", "--idle", "1", "--json"]
    res = subprocess.run(
        cmd, env=env, cwd=REPO / "benchmarks", capture_output=True, text=True, timeout=180
    )
    assert res.returncode == 0, res.stderr + res.stdout
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["startup_s"] > 0 and out["idle_cpu_pct"] >= 0
    assert out["size"] == "80x24" and "load_avg_1m" in out


async def test_following_a_quiet_run_backs_off_and_new_lines_still_arrive(tmp_path, monkeypatch):
    from ldlm_tui.app_runs import FOLLOW_EVERY_S, FOLLOW_IDLE_MAX_S
    from ldlm_tui.widgets.loss_chart import LossChart

    monkeypatch.setenv("LDLM_HOME", str(tmp_path / "home"))
    rd = logged_run("quiet")
    app = LdlmApp(watch="quiet")
    async with app.run_test(size=(80, 24)) as pilot:
        chart = app.main_query(LossChart)
        await pilot.pause(FOLLOW_EVERY_S * 8)  # 0.5 + 1 + 2: it looks at most every 2 s
        assert app._follow_delay == FOLLOW_IDLE_MAX_S
        seen = len(chart.train_loss)
        with open(rd.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write('{"event": "step", "step": 201, "loss": 0.5}\n')
        await wait_for(pilot, lambda: len(chart.train_loss) > seen, FOLLOW_IDLE_MAX_S + 5)
        assert len(chart.train_loss) == seen + 1
        assert app._follow_delay == FOLLOW_EVERY_S  # it logged: looked at often again
