"""The Generate pane and the shared text renderer, driven through Textual's Pilot.

Two tiny models (masked diffusion and ar, seq_len 32) are trained once for the module (a few
seconds on a CPU) into a temporary LDLM_HOME; the pane loads them through the engine's
GenerationSession exactly as it would real runs.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import torch
from textual.app import App, ComposeResult
from textual.widgets import Input, Select

from ldlm_engine import Frame, RunDir, Trainer, adapt_process, build_tokenizer, get_preset
from ldlm_engine.prompts import repeated_token
from ldlm_engine.sampling import Transcript
from ldlm_engine.session import GenerationSession
from ldlm_tui.progress import render_transcript as cli_render_transcript
from ldlm_tui.render import Tail, TokenTexts
from ldlm_tui.screens.generate import HINT, GeneratePane
from ldlm_tui.widgets.denoise import MASK_GLYPH, DenoiseView, render_frame

TEXT = "the quick brown fox jumps over the lazy dog.\nab cd ef gh ij\n" * 150
SEQ_LEN = 32


def _train(name: str, kind: str, shifted: bool = False) -> Path:
    cfg = get_preset("tiny")
    cfg.data.tokenizer = "char"
    cfg.data.source = "synthetic"
    cfg = adapt_process(cfg, kind)
    cfg.process.ar_phase = 0.0
    if kind == "block" and not shifted:
        cfg.process.block_shift, cfg.process.ar_loss = False, 0.0
        cfg.sample.sampler = "low_confidence"
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
    rd = RunDir.create(cfg, name=name)
    state = Trainer(cfg, run_dir=rd, text=TEXT, handle_signals=False).run()
    rd.close()
    assert state == "finished"
    return rd.path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("ldlm_home")
    # One intra-op thread: on a busy 2-core machine, two threads spin against each other and
    # the tiny model trains and samples several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("LDLM_HOME", str(home))
            yield {
                "mask": _train("tiny-gen", "mask"),
                "ar": _train("tiny-ar", "ar"),
                "shifted": _train("tiny-spec", "block", shifted=True),
                "plain": _train("tiny-plain", "block"),
            }
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run_path(runs) -> Path:
    return runs["mask"]


class Host(App):
    def __init__(self, run: str | None = None) -> None:
        super().__init__()
        self._run = run

    def compose(self) -> ComposeResult:
        yield GeneratePane(id="gen", run=self._run)


async def _wait_done(pilot, pane: GeneratePane, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.05)
        if not pane.generating:
            await pilot.pause()
            return
    raise AssertionError("generation did not finish")


def _set(pane: GeneratePane, **values: str) -> None:
    for key, value in values.items():
        pane.query_one(f"#gen-{key.replace('_', '-')}", Input).value = value


def test_generate_continues_prompt_through_the_session(run_path: Path) -> None:
    async def go() -> None:
        app = Host(str(run_path))
        async with app.run_test(size=(80, 24)) as pilot:
            pane = app.query_one(GeneratePane)
            assert "tiny-gen" in str(pane.query_one("#gen-run").render())
            prompt = pane.query_one("#gen-prompt")
            prompt.focus()
            await pilot.press(*"the ")
            _set(pane, length="10", temperature="0.7", seed="5")
            await pilot.press("enter")
            await _wait_done(pilot, pane)
            assert pane.last_error is None
            assert app.focused is prompt  # focus stays in the prompt after a generation
            frames, tok = pane.frames, pane.tokenizer
            last = frames[-1]
            assert last.done and not any(last.masked)
            assert len(frames) == last.nfe + 1 == 11  # initial frame + one per model call
            assert frames[0].nfe == 0 and all(frames[0].masked[4:])
            assert pane.position == len(frames) - 1
            # The pane generated through the session: its report, the same text the CLI's
            # path (GenerationSession.run with the same settings) writes.
            res = pane.result
            assert res is not None and res.nfe == 10 and res.temperature == 0.7
            session = GenerationSession(device="cpu")
            loaded = session.load(str(run_path))
            cli = session.run(
                loaded, session.settings(loaded, length=10, temperature=0.7, seed=5), "the "
            )
            assert res.text == cli.text and res.generated_tokens == 10
            assert pane.session.load(str(run_path)) is pane.session.load(str(run_path))  # cached
            view = pane.query_one(DenoiseView)
            assert view.plain.startswith("the ") and MASK_GLYPH not in view.plain
            assert view.plain == res.text
            status = view.status
            assert "NFE 10" in status and "done" in status and "tok/s" in status
            assert "1.00 tok/call" in status
            for i in range(len(frames)):
                assert render_frame(frames[i], tok).plain.startswith("the ")
            # Out of the prompt (as Esc does), step back through the frames.
            view.focus()
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
            assert pane.position < len(frames) - 1  # started again from the first frame
            deadline = time.monotonic() + 5
            while pane.position < 2 and time.monotonic() < deadline:
                await pilot.pause(0.05)
            assert pane.position >= 2
            await pilot.press("end")
            await pilot.pause(0.3)
            assert pane.position == len(frames) - 1
            await pilot.press("slash")
            assert app.focused is prompt

    asyncio.run(go())


def test_a_shifted_run_samples_speculatively_as_the_cli_does(runs) -> None:
    """A shifted block run offers (and defaults to) the speculative sampler; a plain block
    run does not offer it. The pane's text is the CLI session's, one frame per call."""

    async def go() -> None:
        app = Host(str(runs["shifted"]))
        async with app.run_test(size=(80, 24)) as pilot:
            pane = app.query_one(GeneratePane)
            select = pane.query_one("#gen-sampler", Select)
            assert select.value == "speculative"
            pane.query_one("#gen-prompt").focus()
            await pilot.press(*"the ")
            _set(pane, length="40", temperature="1", seed="2")
            await pilot.press("enter")
            await _wait_done(pilot, pane)
            assert pane.last_error is None
            res = pane.result
            assert res is not None and res.sampler == "speculative"
            assert len(pane.frames) == res.nfe + 1 and res.nfe <= 40
            session = GenerationSession(device="cpu")
            loaded = session.load(str(runs["shifted"]))
            cli = session.run(
                loaded, session.settings(loaded, length=40, temperature=1.0, seed=2), "the "
            )
            assert res.text == cli.text and cli.sampler == "speculative"
            # speculation writes left to right: a template is infilled, and said to be
            fill = session.run(loaded, session.settings(loaded, seed=2), "the [MASK*4] sat")
            assert fill.sampler == "left_to_right" and fill.text.endswith(" sat")
            pane.set_run(str(runs["plain"]))
            await pilot.pause()
            options = [str(o[0]) for o in select._options]
            assert "speculative" not in options and "low_confidence" in options

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
            for i in range(len(frames)):
                f = frames[i]
                text = render_frame(f, pane.tokenizer).plain
                assert text.startswith("ab") and text.endswith("cd")
                assert f.tokens[:2] == frames[0].tokens[:2]
                assert f.tokens[-2:] == frames[0].tokens[-2:]
            assert frames[0].masked == [False, False] + [True] * 5 + [False, False]

    asyncio.run(go())


def test_errors_stay_in_the_pane_and_keep_the_output(run_path: Path) -> None:
    async def go() -> None:
        app = Host()  # no run yet
        async with app.run_test(size=(80, 24)) as pilot:
            pane = app.query_one(GeneratePane)
            status = pane.query_one("#gen-status")
            await pilot.press("ctrl+g")
            assert pane.last_error and "no run" in pane.last_error
            assert "no run" in pane.status_line and status.has_class("error")
            pane.set_run("tiny-gen")  # by name, under $LDLM_HOME
            await pilot.pause()
            assert "tiny-gen" in str(pane.query_one("#gen-run").render())
            _set(pane, length="8")
            assert pane.generate("the ")
            await _wait_done(pilot, pane)
            assert pane.last_error is None and pane.status_line != "no run"
            view = pane.query_one(DenoiseView)
            before, n_frames = view.plain, len(pane.frames)
            assert before.startswith("the ") and MASK_GLYPH not in before
            # Lengths the model cannot do: the engine refuses, the output stays, the error
            # stays on screen (no toast that fades).
            _set(pane, length="100000")
            assert pane.generate("the ")
            await _wait_done(pilot, pane)
            assert pane.last_error and "length" in pane.last_error
            assert pane.last_error in pane.status_line and status.has_class("error")
            assert view.plain == before and len(pane.frames) == n_frames
            await pilot.pause(0.5)
            assert pane.last_error in pane.status_line
            _set(pane, length="")
            pane.generate("ab[MASK*40]cd")  # an infill template longer than the window
            await _wait_done(pilot, pane)
            assert pane.last_error and "window" in pane.last_error
            assert view.plain == before
            # A malformed setting never reaches the worker.
            _set(pane, steps="many")
            assert not pane.generate("the ")
            assert "steps" in (pane.last_error or "")
            _set(pane, steps="0", threshold="2")
            assert not pane.generate("the ")
            assert "threshold" in (pane.last_error or "")
            assert view.plain == before
            # ...and a good request still works afterwards, clearing the error.
            _set(pane, threshold="0.9", length="4")
            assert pane.generate("the ")
            await _wait_done(pilot, pane)
            assert pane.last_error is None and pane.frames[-1].done
            assert not status.has_class("error")
            # What the model could not see in the prompt is said, not silently dropped.
            assert pane.generate("Zebra ")
            await _wait_done(pilot, pane)
            assert "vocabulary" in pane.status_line and "'Z'" in pane.status_line
            assert status.has_class("warning") and pane.last_error is None

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
            frames = pane.frames
            assert all(
                render_frame(frames[i], pane.tokenizer).plain.startswith("ab")
                for i in range(len(frames))
            )
            assert len(frames) == frames[-1].nfe + 1

    asyncio.run(go())


def test_long_ar_generation_streams_and_scrolls(runs) -> None:
    """An ar run writes 20x its seq_len: the text grows, the view follows the end until the
    user scrolls up, the live status counts, and every frame can be stepped to afterwards."""
    n = 640

    async def go() -> None:
        app = Host(str(runs["ar"]))
        async with app.run_test(size=(80, 24)) as pilot:
            pane = app.query_one(GeneratePane)
            view = pane.query_one(DenoiseView)
            _set(pane, length=str(n), temperature="1", seed="1")
            assert pane.generate("the ")
            seen_lengths: list[int] = []
            scrolled_up_at: float | None = None
            deadline = time.monotonic() + 60
            while pane.generating and time.monotonic() < deadline:
                await pilot.pause(0.02)
                if pane.frames and pane.position >= 0:
                    seen_lengths.append(len(view.plain))
                if scrolled_up_at is None and view.max_scroll_y > 4 and pane.generating:
                    # following: at the end, give or take the lines written since the last
                    # redraw (a loaded machine writes more of them between two redraws: the
                    # next redraw catches up, so wait for it rather than for a quiet machine)
                    assert view.following
                    for _ in range(100):
                        if view.max_scroll_y - view.scroll_y <= 2 or not pane.generating:
                            break
                        await pilot.pause(0.02)
                    assert view.following and view.max_scroll_y - view.scroll_y <= 2
                    assert "tok/s" in view.status and "1.00 tok/call" in view.status
                    view.focus()
                    await pilot.press("up", "up")
                    scrolled_up_at = view.scroll_y
                    assert not view.following
            assert not pane.generating and pane.last_error is None
            await pilot.pause(0.1)
            frames = pane.frames
            assert len(frames) == n + 1 and frames[-1].done and frames[-1].nfe == n
            # The text grew while it was written (not n placeholders then a jump).
            assert len(set(seen_lengths)) > 3 and seen_lengths == sorted(seen_lengths)
            assert len(view.plain) >= n and MASK_GLYPH not in view.plain
            shown = view.plain  # special tokens are drawn, the decoded text drops them
            for special in ("<unk>", "<end>", "<start>", "<pad>"):
                shown = shown.replace(special, "")
            assert shown == pane.result.text
            assert view.virtual_size.height > view.size.height
            assert scrolled_up_at is not None  # (the text outgrew the view mid-generation)
            assert view.scroll_y == scrolled_up_at < view.max_scroll_y  # the user's place kept
            # Frames are stored compactly and rebuilt on demand: frame k has k tokens written.
            assert frames.nbytes() < 2_000_000
            for k in (1, 33, 300, n - 1):
                f = frames[k]
                written = zip(f.masked, f.fixed, strict=True)
                assert sum(1 for m, fx in written if not m and not fx) == k
            view.focus()
            await pilot.press("home")  # frame 0: the prompt and what is to come
            assert view.plain.startswith("the ") and f"{n} more to generate" in view.plain
            await pilot.press("right")
            assert pane.position == 1 and "more to generate" in view.plain
            assert len(view.plain) < 80  # the prompt, one token and a note, not 640 glyphs
            await pilot.press("end")
            assert len(view.plain) >= n and "more to generate" not in view.plain
            view.follow()
            await pilot.pause()
            assert view.following

    asyncio.run(go())


def test_sampler_row_takes_typed_values_and_fits_80_columns(run_path: Path) -> None:
    async def go() -> None:
        app = Host(str(run_path))
        async with app.run_test(size=(80, 24)) as pilot:
            pane = app.query_one(GeneratePane)
            for key in (
                "sampler",
                "steps",
                "length",
                "temperature",
                "block-length",
                "threshold",
                "seed",
            ):
                w = pane.query_one(f"#gen-{key}")
                assert w.region.width >= 6 and w.region.right <= 80, key
                assert w.tooltip, key
            temp = pane.query_one("#gen-temperature", Input)
            stored = json.loads((run_path / "config.json").read_text())["sample"]
            assert temp.value == f"{stored['temperature']:g}"  # the run's own default
            await pilot.click(temp, offset=(3, 0))  # the focusing click selects the value...
            await pilot.press(*"0.5")
            assert temp.value == "0.5"  # ...so typing replaces it ("0.80.5" before)
            await pilot.click(temp, offset=(1, 0))  # a second click places the cursor
            await pilot.press("9")
            assert temp.value == "09.5"
            temp.value = "0.8"
            pane.query_one("#gen-prompt").focus()
            for _ in range(8):  # Tab to the field: it selects the whole value, typing replaces
                await pilot.press("tab")
                if app.focused is temp:
                    break
            assert app.focused is temp
            await pilot.press(*"0.9")
            assert temp.value == "0.9"
            _set(pane, length="6", temperature="0.8")
            pane.generate("ab")
            await _wait_done(pilot, pane)
            assert pane.result is not None and pane.result.temperature == 0.8

    asyncio.run(go())


# --------------------------------------------------------------------------- the renderer


class _CharTok:
    """A stand-in tokenizer: id i is the i-th character of VOCAB (0..4 are specials)."""

    kind = "char"
    VOCAB = "\x00\x01\x02\x03\x04 abcdefghijklmnopqrstuvwxyz.[]\n\x1b"

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


def _windowed_frames() -> list[Frame]:
    """Block-style frames: frame 0 plans 12 positions, later frames cover 4-token blocks."""
    tok = _CharTok()
    ids = tok.ids("ab cd efgh\x1bij")
    n = len(ids)
    frames = [
        Frame(
            0,
            0,
            ids[:2] + [4] * (n - 2),
            [False] * 2 + [True] * (n - 2),
            [],
            [1.0] * 2 + [0.0] * (n - 2),
            [True] * 2 + [False] * (n - 2),
        )
    ]
    step = 0
    for start in range(2, n, 4):
        block = list(range(start, min(start + 4, n)))
        for half in (block[:2], block[2:]):
            step += 1
            toks = [ids[p] if p in half or p < half[0] else 4 for p in block]
            masked = [not (p in half or p < half[0]) for p in block]
            frames.append(
                Frame(
                    step,
                    step,
                    toks,
                    masked,
                    half,
                    [0.3 + 0.1 * (p % 5) for p in block],
                    [False] * len(block),
                    done=block[-1] == n - 1 and half is not block[:2],
                    offset=start,
                )
            )
    return frames


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


def test_cli_and_app_render_the_same_text() -> None:
    """`ldlm generate --animate` and the Generate pane draw every frame identically."""
    frames = _windowed_frames()
    tok = _CharTok()

    async def go() -> None:
        app = Host()
        async with app.run_test(size=(80, 24)) as pilot:
            pane = app.query_one(GeneratePane)
            view = pane.query_one(DenoiseView)
            transcript = Transcript()
            for i, frame in enumerate(frames):
                transcript.apply(frame)
                cli = cli_render_transcript(transcript, tok)  # what the CLI draws
                pane.load_frames(frames[: i + 1], tok)
                await pilot.pause()
                assert view.text.plain == cli.plain, i
                assert view.text.spans == cli.spans, i
            assert "␛" in view.text.plain  # the escape character is made visible
            assert view.text.plain == "ab cd efgh␛ij"
            assert "more to generate" in cli_render_transcript(_partial(frames, 2), tok).plain

    asyncio.run(go())


def _long_block_frames(n: int = 1500, bs: int = 8) -> list[Frame]:
    """A block sampler's frames for n tokens of text with a line break every ~40 tokens."""
    tok = _CharTok()
    line = "the quick brown fox jumps over the dog.\n"
    ids = tok.ids("ab") + [tok.ids(line[i % len(line)])[0] for i in range(n)]
    total = len(ids)
    first = [
        Frame(
            0,
            0,
            ids[:2] + [4] * n,
            [False] * 2 + [True] * n,
            [],
            [1.0] * 2 + [0.0] * n,
            [True] * 2 + [False] * n,
        )
    ]
    frames, step = first, 0
    for s in range(2, total, bs):
        block = list(range(s, min(s + bs, total)))
        for k in (len(block) // 2, len(block)):
            step += 1
            done = block[:k]
            frames.append(
                Frame(
                    step,
                    step,
                    [ids[p] if p in done else 4 for p in block],
                    [p not in done for p in block],
                    done[-1:],
                    [0.25 + 0.5 * (p % 2) for p in block],
                    [False] * len(block),
                    done=s + bs >= total and k == len(block),
                    offset=s,
                )
            )
    return frames


def test_long_text_in_chunks_matches_the_cli() -> None:
    """Frozen chunks of a long text draw exactly what the CLI draws, at any frame."""
    frames = _long_block_frames()
    tok = _CharTok()

    async def go() -> None:
        app = Host()
        async with app.run_test(size=(80, 24)) as pilot:
            pane = app.query_one(GeneratePane)
            view = pane.query_one(DenoiseView)
            pane.load_frames(frames, tok)
            await pilot.pause()
            assert len(view._chunks) >= 2  # most of the text is frozen, not redrawn
            assert len(view._text) < 600  # the live part is small
            for k in (len(frames) - 1, 5, 200, len(frames) // 2, len(frames) - 1):
                pane.show_position(k)
                await pilot.pause()
                cli = cli_render_transcript(_partial(frames, k), tok)
                assert view.plain == cli.plain, k

    asyncio.run(go())


def _partial(frames: list[Frame], k: int) -> Transcript:
    t = Transcript()
    for f in frames[: k + 1]:
        t.apply(f)
    return t


def test_tail_keeps_the_last_lines() -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console(width=20, height=5, record=True, color_system=None)
    console.print(Tail(Text("\n".join(f"line {i}" for i in range(50)))))
    out = console.export_text().splitlines()
    assert out == ["line 46", "line 47", "line 48", "line 49"]


def test_repeated_token_hint() -> None:
    fixed = [True] * 3 + [False] * 20
    assert repeated_token([1, 2, 3] + [5] * 20, fixed) == (5, 1.0)
    assert repeated_token([1, 2, 3] + list(range(6, 16)) + [7] * 10, fixed)[0] == 7
    assert repeated_token([1, 2, 3, *list(range(20))], fixed) is None
    assert repeated_token([1, 2, 3, 5, 5], [True] * 3 + [False] * 2) is None  # too short

    async def go() -> None:
        app = Host()
        async with app.run_test(size=(80, 24)) as pilot:
            pane = app.query_one(GeneratePane)
            assert pane.status_line == HINT
            _set(pane, temperature="0")  # greedy: the advice is to raise the temperature
            tok = _CharTok()
            ids = tok.ids("ab") + tok.ids(" ") * 20
            n = len(ids)
            frame = Frame(
                1, 1, ids, [False] * n, [], [0.9] * n, [True] * 2 + [False] * 20, done=True
            )
            pane.load_frames([frame], tok)
            await pilot.pause()
            assert "repeats one token" in pane.status_line and "temp" in pane.status_line
            assert pane.query_one("#gen-status").has_class("warning")

    asyncio.run(go())


def test_token_texts_sanitise_control_characters() -> None:
    texts = TokenTexts(_CharTok())
    assert texts(_CharTok.VOCAB.index("\x1b")) == "␛"
    assert texts(_CharTok.VOCAB.index("\n")) == "\n"


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_snapshot_hand_built_frame(snap_compare, size) -> None:
    async def before(pilot) -> None:
        pane = pilot.app.query_one(GeneratePane)
        pane.load_frames(_frames(), _CharTok(), times=[0.0, 0.05])
        pane.query_one(DenoiseView).focus()  # and no blinking cursor
        await pilot.pause()

    assert snap_compare(Host(), terminal_size=size, run_before=before)
