"""Every Enter gives a new, reproducible sample, and a prompt shows as typed everywhere.

A tiny word-tokenizer run (masked diffusion, trained for a few real steps) drives the Generate
pane through Textual's Pilot and ``ldlm generate`` as a subprocess. "zyzzyva" is not in its
vocabulary: the model sees ``<unk>``, the user must see the word they typed.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import torch
from conftest import run_many
from textual.app import App, ComposeResult
from textual.widgets import Checkbox, Input

from ldlm_engine import RunDir, Trainer, adapt_process, get_preset
from ldlm_engine.session import GenerationSession, SeedPolicy
from ldlm_tui.screens.generate import GeneratePane

TEXT = "the cat sat on the mat. the dog ran to the log. a bird sang in the tree.\n" * 120
UNKNOWN = "zyzzyva"
PROMPT = f"the {UNKNOWN} sat"


@pytest.fixture(scope="module")
def word_run(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("ldlm_home")
    cfg = get_preset("tiny")
    cfg.data.tokenizer = "word"
    cfg.data.source = "synthetic"
    cfg = adapt_process(cfg, "mask")
    cfg.model.seq_len = 24
    cfg.model.d_model, cfg.model.d_ff, cfg.model.n_layers = 32, 64, 1
    cfg.train.batch_size = 8
    cfg.train.max_steps = 20
    cfg.train.warmup_steps = 2
    cfg.train.device = "cpu"
    cfg.train.eval_every = cfg.train.sample_every = cfg.train.checkpoint_every = 0
    cfg.train.eval_tokens = 128
    cfg.sample.length = 12
    cfg.sample.temperature = 1.0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("LDLM_HOME", str(home))
            rd = RunDir.create(cfg, name="words")
            assert Trainer(cfg, run_dir=rd, text=TEXT, handle_signals=False).run() == "finished"
            rd.close()
            yield home, rd.path
    finally:
        torch.set_num_threads(threads)


class Host(App):
    def __init__(self, run: str) -> None:
        super().__init__()
        self._run = run

    def compose(self) -> ComposeResult:
        yield GeneratePane(id="gen", run=self._run)


async def _enter(pilot, pane: GeneratePane, timeout: float = 30.0) -> None:
    """Press Enter in the prompt and wait for the generation to finish."""
    pane.query_one("#gen-prompt", Input).focus()
    await pilot.press("enter")
    deadline = time.monotonic() + timeout
    while pane.generating or pane.result is None:
        assert time.monotonic() < deadline, "generation did not finish"
        await pilot.pause(0.05)
    await pilot.pause()


def test_seed_policy_advances_unless_fixed() -> None:
    seeds = SeedPolicy(next=5)
    assert [seeds.take() for _ in range(3)] == [5, 6, 7]
    seeds.fixed = True
    assert [seeds.take() for _ in range(2)] == [8, 8]
    assert SeedPolicy(next=2**63 - 1).take() == 2**63 - 1  # and the next wraps to 0


def test_every_enter_gives_a_new_sample_with_its_seed(word_run) -> None:
    home, path = word_run
    seen: list[tuple[int, str, str]] = []

    async def go() -> None:
        app = Host(str(path))
        async with app.run_test(size=(100, 30)) as pilot:
            pane = app.query_one(GeneratePane)
            pane.query_one("#gen-prompt", Input).value = "the cat"
            pane.query_one("#gen-length", Input).value = "12"
            for _ in range(2):
                pane.result = None
                await _enter(pilot, pane)
                shown = str(pane.query_one("#gen-seed-used").render())
                seen.append((pane.shown_seed, pane.result.text, shown))
            assert pane.query_one("#gen-seed", Input).value == str(seen[-1][0] + 1)
            # A run not training in this app: its newest checkpoint, and the pane says which.
            assert "checkpoint step 20" in str(pane.query_one("#gen-run").render())
            # A fixed seed is the user's choice: then Enter repeats the sample.
            pane.query_one("#gen-seed", Input).value = str(seen[0][0])
            pane.query_one("#gen-fixed-seed", Checkbox).value = True
            for _ in range(2):
                pane.result = None
                await _enter(pilot, pane)
                assert (pane.shown_seed, pane.result.text) == seen[0][:2]
            assert pane.query_one("#gen-seed", Input).value == str(seen[0][0])

    asyncio.run(go())
    (s1, t1, shown1), (s2, t2, shown2) = seen
    assert s1 != s2 and t1 != t2
    assert f"seed {s1}" in shown1 and f"seed {s2}" in shown2
    # The shown seed reproduces the sample from the command line.
    args = ("generate", path, "--prompt", "the cat", "--length", "12", "--json")
    res = run_many({s: ((*args, "--seed", str(s)), home) for s in (s1, s2)})
    assert json.loads(res[s1].stdout)["text"] == t1, res[s1].stderr
    assert json.loads(res[s2].stdout)["text"] == t2, res[s2].stderr


def test_prompt_shows_as_typed_in_the_pane(word_run) -> None:
    _, path = word_run

    async def go() -> None:
        app = Host(str(path))
        async with app.run_test(size=(100, 30)) as pilot:
            pane = app.query_one(GeneratePane)
            pane.query_one("#gen-prompt", Input).value = PROMPT
            await _enter(pilot, pane)
            plain = pane.view.plain
            assert plain.startswith(PROMPT), plain
            assert "<unk>" not in plain
            assert pane.result.text.startswith(PROMPT)
            assert UNKNOWN in pane.status_line  # and the pane says the model could not see it
            pane.show_position(0)  # every frame, not just the last
            assert pane.view.plain.startswith(PROMPT)

    asyncio.run(go())


def test_prompt_shows_as_typed_in_cli_animate(word_run) -> None:
    home, path = word_run
    args = ("generate", path, "--prompt", PROMPT, "--length", "6", "--seed", "1")
    res = run_many({"animate": ((*args, "--animate"), home), "plain": (args, home)})
    for r in res.values():
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(PROMPT) and "<unk>" not in r.stdout, r.stdout
        assert UNKNOWN in r.stderr  # the note: the model saw <unk>
    assert res["animate"].stdout.split() == res["plain"].stdout.split()


def test_engine_gives_the_display_text_of_every_frame(word_run) -> None:
    _, path = word_run
    session = GenerationSession(device="cpu")
    loaded = session.load(path)
    cfg = session.settings(loaded, length=4)
    frames = list(session.stream(loaded, cfg, PROMPT))
    assert frames and all(tf.typed == {1: UNKNOWN} for tf in frames)
    assert frames[-1].tokens[1] == loaded.tokenizer.unk_id  # what the model saw
