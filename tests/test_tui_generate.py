"""The Generate pane and the denoising view, driven through Textual's Pilot.

One tiny masked-diffusion model is trained once for the module (a few seconds on a CPU) into
a temporary LDLM_HOME; the pane loads it with ``load_run`` exactly as it would a real run.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import torch
from textual.app import App, ComposeResult

from ldlm_engine import Frame, RunDir, Trainer, build_tokenizer, get_preset
from ldlm_tui.screens.generate import GeneratePane
from ldlm_tui.widgets.denoise import MASK_GLYPH, DenoiseView, render_frame

TEXT = "the quick brown fox jumps over the lazy dog.\nab cd ef gh ij\n" * 150
SEQ_LEN = 32


@pytest.fixture(scope="module")
def run_path(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("ldlm_home")
    cfg = get_preset("tiny")
    cfg.data.tokenizer = "char"
    cfg.data.source = "synthetic"
    cfg.model.seq_len = SEQ_LEN
    cfg.model.d_model = 32
    cfg.model.d_ff = 64
    cfg.train.batch_size = 8
    cfg.train.max_steps = 30
    cfg.train.warmup_steps = 5
    cfg.train.device = "cpu"
    cfg.train.eval_every = 0
    cfg.train.sample_every = 0
    cfg.train.checkpoint_every = 0
    cfg.train.eval_tokens = 256
    cfg.sample.length = 12
    # One intra-op thread: on a busy 2-core machine, two threads spin against each other and
    # the tiny model trains and samples several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("LDLM_HOME", str(home))
            rd = RunDir.create(cfg, name="tiny-gen")
            state = Trainer(cfg, run_dir=rd, text=TEXT, handle_signals=False).run()
            rd.close()
            assert state == "finished"
            yield rd.path
    finally:
        torch.set_num_threads(threads)


class Host(App):
    def __init__(self, run: str | None = None) -> None:
        super().__init__()
        self._run = run

    def compose(self) -> ComposeResult:
        yield GeneratePane(id="gen", run=self._run)


async def _wait_done(pilot, pane: GeneratePane, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.05)
        if not pane.generating and (pane.frames or pane.last_error):
            await pilot.pause()
            return
    raise AssertionError("generation did not finish")


def _set(pane: GeneratePane, **values: str) -> None:
    from textual.widgets import Input

    for key, value in values.items():
        pane.query_one(f"#gen-{key.replace('_', '-')}", Input).value = value


def test_generate_continues_prompt(run_path: Path) -> None:
    async def go() -> None:
        app = Host(str(run_path))
        async with app.run_test(size=(80, 24)) as pilot:
            pane = app.query_one(GeneratePane)
            assert "tiny-gen" in str(pane.query_one("#gen-run").render())
            pane.query_one("#gen-prompt").focus()
            await pilot.press(*"the ")
            _set(pane, length="10", temperature="0")
            await pilot.press("enter")
            await _wait_done(pilot, pane)
            assert pane.last_error is None
            frames, tok = pane.frames, pane.tokenizer
            last = frames[-1]
            assert last.done and not any(last.masked)
            assert len(frames) == last.nfe + 1 == 11  # initial frame + one per model call
            assert frames[0].nfe == 0 and all(frames[0].masked[4:])
            assert pane.position == len(frames) - 1
            view = pane.query_one(DenoiseView)
            assert view.plain.startswith("the ") and MASK_GLYPH not in view.plain
            assert "NFE 10" in view.status and "done" in view.status and "tok/s" in view.status
            for f in frames:
                assert render_frame(f, tok).plain.startswith("the ")
            # Focus moved to the view: step back through the frames.
            await pilot.press("left")
            assert pane.position == len(frames) - 2
            assert view.plain.count(MASK_GLYPH) == 1
            await pilot.press("left", "comma")
            assert pane.position == len(frames) - 4
            assert view.plain.count(MASK_GLYPH) == 3
            await pilot.press("home")
            assert pane.position == 0 and view.plain.count(MASK_GLYPH) == 10
            await pilot.press("left")  # clamped
            assert pane.position == 0
            await pilot.press("right", "full_stop")
            assert pane.position == 2 and view.plain.count(MASK_GLYPH) == 8
            await pilot.press("end")
            assert pane.position == len(frames) - 1 and MASK_GLYPH not in view.plain
            # Replay animates from the first frame towards the last; any step key stops it.
            await pilot.press("space")
            assert pane.position == 0
            deadline = time.monotonic() + 5
            while pane.position < 2 and time.monotonic() < deadline:
                await pilot.pause(0.05)
            assert pane.position >= 2
            await pilot.press("end")
            await pilot.pause(0.3)
            assert pane.position == len(frames) - 1

    asyncio.run(go())


def test_infill_keeps_context_and_threshold_sampler(run_path: Path) -> None:
    async def go() -> None:
        app = Host(str(run_path))
        async with app.run_test(size=(80, 24)) as pilot:
            pane = app.query_one(GeneratePane)
            pane.query_one("#gen-sampler").value = "threshold"
            _set(pane, temperature="0.8", seed="3", threshold="0.5")
            pane.query_one("#gen-prompt").value = "ab[MASK*5]cd"
            pane.query_one(DenoiseView).focus()
            await pilot.press("G")  # the binding works wherever focus is not in an Input
            await _wait_done(pilot, pane)
            assert pane.last_error is None
            frames = pane.frames
            assert frames[-1].done and not any(frames[-1].masked)
            assert len(frames) == frames[-1].nfe + 1
            assert len(frames[0].tokens) == 9
            for f in frames:
                text = render_frame(f, pane.tokenizer).plain
                assert text.startswith("ab") and text.endswith("cd")
                assert f.tokens[:2] == frames[0].tokens[:2]
                assert f.tokens[-2:] == frames[0].tokens[-2:]
            assert frames[0].masked == [False, False] + [True] * 5 + [False, False]

    asyncio.run(go())


def test_errors_are_notifications(run_path: Path) -> None:
    async def go() -> None:
        app = Host()  # no run yet
        async with app.run_test(size=(80, 24)) as pilot:
            pane = app.query_one(GeneratePane)
            await pilot.press("ctrl+g")
            assert pane.last_error and "no run" in pane.last_error
            pane.set_run("tiny-gen")  # by name, under $LDLM_HOME
            await pilot.pause()
            assert "tiny-gen" in str(pane.query_one("#gen-run").render())
            # A prompt longer than the model's context: the engine refuses, the app lives on.
            pane.generate("the quick brown fox jumps over the lazy dog " * 2)
            await _wait_done(pilot, pane)
            assert pane.last_error and "seq_len" in pane.last_error
            assert any("seq_len" in n.message for n in app._notifications)
            # A malformed setting never reaches the worker.
            _set(pane, steps="many")
            assert not pane.generate("the ")
            assert "steps" in (pane.last_error or "")
            _set(pane, steps="0", threshold="2")
            assert not pane.generate("the ")
            assert "thr" in (pane.last_error or "")
            # ...and a good request still works afterwards.
            _set(pane, threshold="0.9", length="4")
            assert pane.generate("the ")
            await _wait_done(pilot, pane)
            assert pane.last_error is None and pane.frames[-1].done

    asyncio.run(go())


def test_new_generation_cancels_old(run_path: Path) -> None:
    async def go() -> None:
        app = Host(str(run_path))
        async with app.run_test(size=(80, 24)) as pilot:
            pane = app.query_one(GeneratePane)
            _set(pane, length="20")
            pane.generate("the ")
            pane.generate("ab")
            await _wait_done(pilot, pane)
            assert pane.last_error is None
            assert all(render_frame(f, pane.tokenizer).plain.startswith("ab") for f in pane.frames)
            assert len(pane.frames) == pane.frames[-1].nfe + 1

    asyncio.run(go())


class _CharTok:
    """A stand-in tokenizer: id i is the i-th character of VOCAB (0..4 are specials)."""

    kind = "char"
    VOCAB = "\x00\x01\x02\x03\x04 abcdefghijklmnopqrstuvwxyz.[]\n"

    def token_text(self, i: int) -> str:
        return self.VOCAB[i]

    def ids(self, s: str) -> list[int]:
        return [self.VOCAB.index(c) for c in s]


def _frames() -> list[Frame]:
    """A prompt, a revealed line with a [markup-like] word, a newline and a half-masked line."""
    tok = _CharTok()
    ids = tok.ids("the [red] fox jumps over the lazy dog.\nit sleeps all day long.")
    n = len(ids)
    nl = ids.index(tok.ids("\n")[0])
    fixed = [i < 4 for i in range(n)]
    masked = [i > nl and (i * 7) % 5 < 3 for i in range(n)]
    first = Frame(
        step=0,
        nfe=0,
        tokens=ids[:4] + [4] * (n - 4),
        masked=[not f for f in fixed],
        changed=[],
        confidence=[1.0] * 4 + [0.0] * (n - 4),
        fixed=fixed,
    )
    last = Frame(
        step=5,
        nfe=5,
        tokens=[4 if m else t for t, m in zip(ids, masked, strict=True)],
        masked=masked,
        changed=[10, 11, 12, nl, nl + 2, n - 1],
        confidence=[1.0 if fixed[i] else (i % 11) / 10 for i in range(n)],
        fixed=fixed,
    )
    return [first, last]


def test_render_frame_styles() -> None:
    tok = _CharTok()
    first, last = _frames()
    text = render_frame(first, tok)
    assert text.plain == "the " + MASK_GLYPH * (len(first.tokens) - 4)
    text = render_frame(last, tok)
    assert "[red]" in text.plain  # generated text is never parsed as markup
    assert "dog.↵\n" in text.plain  # a revealed newline is marked, then breaks the line
    assert text.plain.count(MASK_GLYPH) == sum(last.masked)
    styles = {str(span.style) for span in text.spans}
    assert any("reverse" in s for s in styles) and any("dim" in s for s in styles)


def test_render_word_tokens() -> None:
    tok = build_tokenizer("word", "the fox ran.\nthe dog sat (here).\n")
    ids = tok.encode("the fox ran.\nthe dog")
    n = len(ids)
    masked = [i == 2 for i in range(n)]
    frame = Frame(
        1,
        1,
        [4 if m else t for t, m in zip(ids, masked, strict=True)],
        masked,
        [3, 4],
        [1.0] * n,
        [i < 2 for i in range(n)],
    )
    assert render_frame(frame, tok).plain == f"the fox {MASK_GLYPH}.↵\nthe dog"


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_snapshot_hand_built_frame(snap_compare, size) -> None:
    async def before(pilot) -> None:
        pane = pilot.app.query_one(GeneratePane)
        pane.load_frames(_frames(), _CharTok(), times=[0.0, 0.05])
        pane.query_one(DenoiseView).focus()  # as after Enter; and no blinking cursor
        await pilot.pause()

    assert snap_compare(Host(), terminal_size=size, run_before=before)
