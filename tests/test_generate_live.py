"""Generate on a run training in this app samples its live weights, snapshotted by the
trainer between optimizer steps; the copy stays in the engine's session.

A real tiny training in the app (Pilot, 80x24), before its first checkpoint exists.
"""

from __future__ import annotations

import pytest
import torch
from textual.widgets import Input, Select
from tui_helpers import wait_for

from ldlm_engine import Trainer
from ldlm_tui.app import LdlmApp
from ldlm_tui.screens.generate import GeneratePane

pytestmark = pytest.mark.anyio
FORM = {"max-steps": "2000", "batch-size": "8", "seq-len": "32", "sample-every": "0"}


async def _generate(app, pilot, pane: GeneratePane) -> None:
    pane.result = None
    pane.query_one("#gen-prompt", Input).focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: pane.result is not None or pane.last_error, what="a sample")
    assert pane.last_error is None, pane.last_error


def _label(pane: GeneratePane) -> str:
    return str(pane.query_one("#gen-run").render())


async def test_generate_samples_the_live_weights_of_the_run_training_here(home):
    app = LdlmApp()
    async with app.run_test(size=(80, 24)) as pilot:
        try:
            pane = app.train_pane
            pane.query_one("#preset", Select).value = "tiny"
            await pilot.pause()
            for fid, value in FORM.items():
                pane.query_one(f"#{fid}", Input).value = value
            await pilot.pause()
            await pilot.press("s")
            await wait_for(pilot, lambda: app.training and app.trainer.step >= 3, what="steps")
            rd = app.run_dir
            gen = app.query_one(GeneratePane)
            await pilot.press("g")
            gen.query_one("#gen-length", Input).value = "8"
            assert "live weights" in _label(gen)

            # While it trains: a snapshot from between two steps, no checkpoint needed.
            await _generate(app, pilot, gen)
            assert rd.latest_checkpoint_step() is None  # "no checkpoint found" before this
            assert gen.result.step >= 3 and gen.result.text
            assert f"live weights step {gen.result.step}" in _label(gen)

            # Paused: the sample comes from exactly the trainer's weights, as a copy.
            app.set_focus(None)  # out of the prompt: letter keys are the app's again
            await pilot.press("p")
            await wait_for(pilot, lambda: app.trainer.paused, what="paused")
            await pilot.pause(0.3)
            await _generate(app, pilot, gen)
            trainer: Trainer = app.trainer
            assert gen.result.step == trainer.step
            (loaded,) = [x for x in gen.session._cache.values() if x.live]
            theirs = trainer.model.state_dict()
            for name, mine in loaded.model.state_dict().items():
                assert torch.equal(mine.cpu(), theirs[name].cpu()), name
                assert mine.data_ptr() != theirs[name].data_ptr()  # never the trainer's tensors

            # Stopped: it checkpoints, and Generate goes back to the run's checkpoints.
            app.set_focus(None)
            await pilot.press("x")  # from the Generate tab it asks first
            await wait_for(pilot, lambda: app.screen is not app.screen_stack[0], what="ask")
            await pilot.press("y")
            await wait_for(pilot, lambda: not app.training, what="stop")
            await pilot.pause()
            saved = rd.latest_checkpoint_step()
            assert saved == trainer.step
            await _generate(app, pilot, gen)
            assert f"checkpoint step {saved}" in _label(gen)
            assert not any(x.live for x in gen.session._cache.values())
        finally:  # a failed check must not leave a paused trainer holding the test open
            if app.trainer is not None:
                app.trainer.request_stop()
                app.trainer.request_resume()
