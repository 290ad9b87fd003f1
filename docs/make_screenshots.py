"""Regenerate the README's screenshots (SVG) of each pane from a real, short training.

    LDLM_HOME=$(mktemp -d) python docs/make_screenshots.py

Trains a `tiny` model on the built-in corpus from the Train pane, captures it, generates from
the result in the Generate pane, and captures the Runs pane. Takes a minute or two on a CPU.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from textual.widgets import Input, Select

from ldlm_tui.app import LdlmApp
from ldlm_tui.screens.generate import GeneratePane

OUT = Path(__file__).resolve().parent / "screenshots"
SIZE = (110, 34)


async def wait_for(pilot, cond, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not get there in time")
        await pilot.pause(0.2)


async def main() -> None:
    OUT.mkdir(exist_ok=True)
    os.environ.setdefault("LDLM_CONFIG_DIR", tempfile.mkdtemp())  # not the user's config.toml
    app = LdlmApp()
    async with app.run_test(size=SIZE) as pilot:
        pane = app.train_pane

        pane.query_one("#preset", Select).value = "tiny"
        await pilot.pause(0.3)
        pane.query_one("#name", Input).value = "tiny-builtin"  # the preset's own settings
        await pilot.press("escape", "s")
        await wait_for(pilot, lambda: app.trainer is not None and app.trainer.step >= 780)
        await pilot.pause(0.5)
        app.save_screenshot(str(OUT / "train.svg"))
        await wait_for(pilot, lambda: not app.training)
        run = pane.run_name
        await pilot.press("g")  # the finished run is the current run: Generate samples it
        gen = app.query_one(GeneratePane)
        assert gen.run == run, (gen.run, run)
        await pilot.pause(0.2)
        # The tiny preset samples speculatively: each call keeps the drafts its ar head
        # accepts; stepping back two frames shows the last blocks still partly masked.
        gen.query_one("#gen-prompt", Input).value = "The "  # the run's own sample settings
        gen.generate()
        await wait_for(pilot, lambda: len(gen.frames) > 0 and not gen.generating)
        gen.view.focus()  # out of the prompt: the arrow keys step through the frames
        await pilot.press("end", "left", "left")
        await pilot.pause(0.3)
        app.save_screenshot(str(OUT / "generate.svg"))
        await pilot.press("escape", "r")
        await pilot.pause(2.5)
        app.save_screenshot(str(OUT / "runs.svg"))


if __name__ == "__main__":
    asyncio.run(main())
