"""The Textual app driven by a Pilot at 80×24: real (tiny) training, attach, runs, keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable, Input, RichLog, Select
from tui_helpers import wait_for

from ldlm_engine import RunDir, get_preset
from ldlm_tui.app import LdlmApp
from ldlm_tui.messages import TrainSample, TrainStep, event_to_message
from ldlm_tui.screens.help import KEYS, HelpScreen, QuitScreen
from ldlm_tui.screens.runs import ConfirmDelete
from ldlm_tui.widgets.loss_chart import LossChart

pytestmark = pytest.mark.anyio
SIZE = (80, 24)
FORM = {"max-steps": "400", "batch-size": "8", "seq-len": "32", "lr": "0.003", "sample-every": "8"}


async def fill_form(app, pilot, **extra):
    pane = app.train_pane
    pane.query_one("#preset", Select).value = "tiny"
    await pilot.pause()
    for fid, value in {**FORM, **extra}.items():
        pane.query_one(f"#{fid}", Input).value = value
    await pilot.pause()


def fake_run(name: str, losses=(), lr: float | None = None, **status) -> RunDir:
    """A run directory with a config and, optionally, a hand-written loss curve."""
    cfg = get_preset("tiny")
    if lr is not None:
        cfg.train.lr = lr
    rd = RunDir.create(cfg, name=name)
    for i, loss in enumerate(losses):
        rd.append_event({"event": "step", "step": (i + 1) * 10, "loss": loss})
    if status:
        rd.write_status(**status)
    rd.close()
    return rd


async def test_train_pause_resume_stop_resume_background(home, monkeypatch):
    spawned = []
    import ldlm_tui.launch

    monkeypatch.setattr(
        ldlm_tui.launch, "spawn_detached", lambda argv, log: spawned.append((argv, log)) or 4242
    )
    app = LdlmApp()
    async with app.run_test(size=SIZE) as pilot:
        await fill_form(app, pilot)
        await pilot.press("s")
        pane, chart = app.train_pane, app.query_one(LossChart)
        has_data = lambda: len(chart.train_steps) >= 2 and pane.samples >= 1  # noqa: E731
        await wait_for(pilot, has_data, what="data")
        assert app.training and pane.run_name == app.run_dir.name
        await pilot.pause(0.3)  # the 4 Hz chart timer has drawn

        await pilot.press("p")
        await wait_for(pilot, lambda: pane.state == "paused", what="paused")
        step = app.trainer.step
        await pilot.pause(0.6)
        assert app.trainer.step == step, "a paused trainer must not step"

        await pilot.press("p")
        await wait_for(pilot, lambda: app.trainer.step > step, what="resumed steps")

        await pilot.press("x")
        await wait_for(pilot, lambda: not app.training, what="stop")
        await pilot.pause()
        assert app.train_state == "stopped" and pane.state == "stopped"
        stopped_at = app.run_dir.latest_checkpoint_step()
        assert stopped_at is not None and stopped_at >= step

        # Resume it from the Runs tab (R), then quit into the background.
        await pilot.press("r")
        table = app.query_one("#runs-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1, what="runs list")
        await pilot.press("R")
        await wait_for(pilot, lambda: app.training, what="resume")
        await wait_for(pilot, lambda: app.trainer.step > stopped_at, what="resumed training")
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen), what="quit dialog")
        await pilot.press("b")
        await wait_for(pilot, lambda: not app.is_running, what="exit")
    rd = app.run_dir
    assert spawned == [(["train", "--resume", str(rd.path)], rd.log_path)]
    assert rd.latest_checkpoint_step() > stopped_at
    assert json.loads(rd.status_path.read_text())["state"] == "stopped"


async def test_hangup_checkpoints_and_exits(home):
    app = LdlmApp()
    async with app.run_test(size=SIZE) as pilot:
        await fill_form(app, pilot, **{"sample-every": "0"})
        await pilot.press("s")
        stepped = lambda: app.trainer is not None and app.trainer.step > 0  # noqa: E731
        await wait_for(pilot, stepped, what="steps")
        app.hangup()  # what run_app's SIGHUP/SIGTERM handler calls
        await wait_for(pilot, lambda: not app.is_running, what="exit")
    assert app.train_state == "stopped"
    assert app.run_dir.latest_checkpoint_step() is not None


TRAINER_SCRIPT = textwrap.dedent(
    """
    import sys
    from ldlm_engine import RunDir, Trainer, get_preset
    cfg = get_preset("tiny")
    cfg.model.d_model, cfg.model.n_layers, cfg.model.d_ff, cfg.model.seq_len = 32, 1, 64, 32
    t = cfg.train
    t.batch_size, t.max_steps, t.log_every, t.warmup_steps = 8, 5000, 2, 2
    t.eval_every, t.sample_every, t.checkpoint_every, t.eval_tokens = 20, 6, 0, 512
    rd = RunDir.create(cfg.validate(), name=sys.argv[1])
    print(Trainer(cfg, run_dir=rd).run(), flush=True)
    """
)


async def test_attach_to_run_of_another_process(home):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", TRAINER_SCRIPT, "ext"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (home / "runs" / "ext" / "metrics.jsonl").exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the trainer never started"
            time.sleep(0.1)
        app = LdlmApp(watch="ext")
        async with app.run_test(size=SIZE) as pilot:
            pane, chart = app.train_pane, app.query_one(LossChart)
            assert pane.run_name == "ext" and app.attached is not None
            await wait_for(
                pilot, lambda: len(chart.train_steps) >= 3 and pane.samples >= 1, what="events"
            )
            log = pane.query_one("#samples", RichLog)
            assert any("[6]" in line.text for line in log.lines)
            await pilot.press("x")  # asks the other process to stop through control.json
            out, err = proc.communicate(timeout=60)
            assert out.strip() == "stopped", err
            await wait_for(pilot, lambda: pane.state == "stopped", what="stopped status")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_runs_pane_lists_compares_and_deletes_with_confirmation(home):
    fake_run("alpha", losses=(4.0, 3.0, 2.5), state="stopped", step=30)
    fake_run("beta", losses=(4.2, 3.5), lr=1e-3)
    live = fake_run("gamma")
    live.acquire_lock()  # looks like a trainer in another process
    app = LdlmApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        pane = app.query_one("#runs-pane")
        table = app.query_one("#runs-table", DataTable)
        assert table.row_count == 3
        names = {str(k.value) for k in table.rows}
        assert names == {"alpha", "beta", "gamma"}
        assert pane.infos["gamma"].state == "live"

        # compare: mark two runs with space, press c
        for name in ("alpha", "beta"):
            table.move_cursor(row=table.get_row_index(name))
            await pilot.press("space")
        assert pane.marked == {"alpha", "beta"}
        await pilot.press("c")
        await pilot.pause()
        chart = app.query_one(LossChart)
        assert set(chart.compare) == {"alpha", "beta"}
        assert chart.compare["alpha"][0] == [10.0, 20.0, 30.0]
        assert chart.compare_labels == {"alpha": "alpha (lr=0.003)", "beta": "beta (lr=0.001)"}
        assert app.query_one("#tabs").active == "train"
        await pilot.press("escape")
        assert not chart.compare

        # open: Enter loads the run into the Generate tab
        table.move_cursor(row=table.get_row_index("alpha"))
        await pilot.press("r", "enter")
        await pilot.pause()
        assert app.query_one("#tabs").active == "generate"
        assert getattr(app.query_one("#generate-pane"), "run", "alpha") == "alpha"

        # delete: refused for the live run, confirmed for another (escape leaves the prompt)
        await pilot.press("escape", "r")
        table.move_cursor(row=table.get_row_index("gamma"))
        await pilot.press("d")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmDelete)
        table.move_cursor(row=table.get_row_index("beta"))
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDelete)
        await pilot.press("n")
        await pilot.pause()
        assert (home / "runs" / "beta").exists()
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert not (home / "runs" / "beta").exists()
        assert table.row_count == 2
    live.close()


async def test_help_screen_lists_every_key(home):
    app = LdlmApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        documented = " ".join(key for _, rows in KEYS for key, _ in rows)
        for binding in app.BINDINGS:
            if binding.show:
                for key in binding.key.split(","):
                    shown = binding.key_display or app.get_key_display(Binding(key, ""))
                    assert shown.lower() in documented or key in documented, shown
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


async def test_command_palette_and_tab_keys(home):
    app = LdlmApp()
    async with app.run_test(size=SIZE) as pilot:
        tabs = app.query_one("#tabs")
        for key, tab in (("g", "generate"), ("r", "runs"), ("t", "train")):
            await pilot.press(key)
            assert tabs.active == tab
            await pilot.press("escape")  # Generate puts the cursor in its prompt
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"toggle log")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert app.query_one(LossChart).log_scale
        await pilot.press("l")
        assert not app.query_one(LossChart).log_scale


async def test_bad_settings_notify_without_creating_a_run(home):
    app = LdlmApp(data="/no/such/corpus.txt")
    async with app.run_test(size=SIZE) as pilot:
        assert app.train_pane.query_one("#corpus", Input).value == "/no/such/corpus.txt"
        await pilot.press("s")
        await wait_for(pilot, lambda: app.messages and not app.training, what="an error")
        assert any("no such file" in n.message for n in app._notifications)
        app.train_pane.query_one("#max-steps", Input).value = "lots"
        await pilot.press("s")
        await pilot.pause()
        assert any("steps must be a whole number" in n.message for n in app._notifications)
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


async def test_resize_to_tiny_and_back(home):
    app = LdlmApp()
    async with app.run_test(size=SIZE) as pilot:
        for tab in ("r", "g", "t"):
            await pilot.press(tab)
            await pilot.resize_terminal(20, 5)
            await pilot.pause()
            await pilot.resize_terminal(120, 40)
            await pilot.pause()
            await pilot.resize_terminal(*SIZE)
            await pilot.pause()
        assert app.is_running


async def test_save_screenshot_works(home, tmp_path):
    app = LdlmApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        path = app.save_screenshot(str(tmp_path / "train.svg"))
    assert Path(path).read_text().startswith("<svg")


def test_events_become_small_messages_and_samples_stay_plain_text():
    msg = event_to_message({"event": "sample", "step": 3, "text": "[bold]x[/] [link=a]y"}, "r")
    assert isinstance(msg, TrainSample) and msg.text == "[bold]x[/] [link=a]y"
    step = event_to_message({"event": "step", "step": 1, "loss": 2.5, "lr": 1e-3}, "r")
    assert isinstance(step, TrainStep) and step.loss == 2.5
    assert event_to_message({"event": "step", "step": "x", "loss": 1.0}, "r") is None
    assert event_to_message({"event": "step", "step": 1, "loss": float("nan")}, "r") is None
    assert event_to_message({"event": "mystery", "step": 1}, "r") is None


async def test_sample_log_never_parses_markup(home):
    app = LdlmApp()
    async with app.run_test(size=SIZE) as pilot:
        pane = app.train_pane
        pane.reset("r", "attached")
        pane.ingest(TrainSample("r", 7, text="[bold red]not markup[/] [link=x]"))
        pane.ingest(TrainSample("other", 8, text="ignored"))
        await pilot.pause()
        lines = pane.query_one("#samples", RichLog).lines
        assert len(lines) == 1
        assert "[bold red]not markup[/] [link=x]" in lines[0].text
        assert isinstance(Text("x"), Text)
