"""The chart's pure functions and keys, and the compact frame history of the Generate pane."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest
from textual.app import App, ComposeResult

from ldlm_engine import Frame
from ldlm_engine.sampling import Transcript
from ldlm_tui.widgets.frame_history import FrameHistory
from ldlm_tui.widgets.loss_chart import (
    MAXIMIZED_CLASS,
    LossChart,
    Smoother,
    compare_labels,
    robust_ylim,
    smooth,
    step_ticks,
    tick_label,
)

# --------------------------------------------------------------------------- smoothing


def _plain_ema(ys: list[float], beta: float) -> list[float]:
    out = [ys[0]]
    for y in ys[1:]:
        out.append(beta * out[-1] + (1 - beta) * y)
    return out


def _noisy_decline(n: int = 300, seed: int = 0) -> list[float]:
    """A training loss as the chart sees it: a steady decline under small step-to-step noise."""
    rng = random.Random(seed)
    return [4.0 - 0.01 * i + rng.uniform(-0.05, 0.05) for i in range(n)]


def test_smoothing_follows_a_falling_loss_instead_of_lagging_above_it() -> None:
    ys = _noisy_decline()
    for s in (0.9, 0.95, 0.99):
        sm = smooth(ys, s)
        assert len(sm) == len(ys)
        # An EMA at 0.95 (as drawn before) sits above every raw point of the decline; the
        # smoothed line must cross the data, and stay within the noise of the trend.
        above = sum(a > y for a, y in zip(sm, ys, strict=True))
        assert 0.2 * len(ys) < above < 0.8 * len(ys), (s, above)
        trend = [4.0 - 0.01 * i for i in range(len(ys))]
        assert max(abs(a - t) for a, t in zip(sm, trend, strict=True)) < 0.05, s
    ema = _plain_ema(ys, 0.95)
    assert all(e > y for e, y in zip(ema[40:], ys[40:], strict=True))  # what the fix is for


def test_smoothing_a_constant_gives_the_constant_from_the_first_point() -> None:
    for s in (0.0, 0.5, 0.95, 0.995):
        assert smooth([3.0] * 50, s) == pytest.approx([3.0] * 50)
        assert smooth([3.0], s) == [3.0]
    assert smooth([], 0.95) == []
    ys = _noisy_decline(50)
    assert smooth(ys, 0.0) == ys  # smoothing 0 = raw
    rough, smoother = smooth(ys, 0.5), smooth(ys, 0.98)
    wiggle = lambda v: sum(abs(a - b) for a, b in itertools.pairwise(v))  # noqa: E731
    assert wiggle(smoother) < wiggle(rough) < wiggle(ys)


def test_incremental_smoother_matches_smoothing_from_scratch() -> None:
    ys = _noisy_decline(120, seed=3)
    inc = Smoother()
    for i, y in enumerate(ys):
        inc.append(y)
        if i % 17 == 0:  # values() caches the settled head: later points must not skew it
            assert inc.values(19) == pytest.approx(smooth(ys[: i + 1], 0.95))
    assert inc.values(4) == pytest.approx(smooth(ys, 0.8))
    assert inc.values(19) == pytest.approx(smooth(ys, 0.95))


def test_robust_ylim_ignores_the_spike_but_keeps_the_current_value() -> None:
    ys = [9.0, 7.0, 5.0] + [2.0 + 0.001 * (i % 7) for i in range(100)]
    lo, hi = robust_ylim([ys], keep=[ys[-1]])
    assert lo < 2.0 and hi < 3.0  # the warm-up spike (9, 7, 5) does not set the range
    lo, hi = robust_ylim([ys], keep=[4.5])  # a current value above the bulk is never cut
    assert hi >= 4.5
    assert robust_ylim([[1.0, 2.0]]) is None  # too few points: let the plot decide
    flat = robust_ylim([[3.0] * 20])
    assert flat is not None and flat[0] < 3.0 < flat[1]


def test_step_ticks_are_integers() -> None:
    for lo, hi, n in [(0, 300, 6), (1, 7, 6), (0, 12_345, 8), (3, 3, 5), (10, 11, 4)]:
        ticks = step_ticks(lo, hi, n)
        assert ticks and all(isinstance(t, int) for t in ticks)
        assert len(ticks) <= n and all(lo <= t <= hi for t in ticks)
        gaps = {b - a for a, b in itertools.pairwise(ticks)}
        assert len(gaps) <= 1
    assert step_ticks(0, 300, 6) == [0, 100, 200, 300]
    assert [tick_label(t) for t in (950, 1500, 12_000, 1_200_000)] == ["950", "1.5k", "12k", "1.2M"]


def test_compare_labels_show_what_differs() -> None:
    base = {"model": {"d_model": 64, "seq_len": 128}, "train": {"lr": 1e-3, "seed": 0}}
    other = {"model": {"d_model": 128, "seq_len": 128}, "train": {"lr": 1e-3, "seed": 1}}
    labels = compare_labels(
        {"shakespeare-char-small-run-a": base, "shakespeare-char-small-run-b": other}, width=30
    )
    a, b = labels.values()
    assert a != b
    assert "d_model=64" in a and "d_model=128" in b
    assert "seq_len" not in a and "lr" not in a and "seed" not in a  # equal or noise: left out
    assert a.endswith("-a (d_model=64)") and b.endswith("-b (d_model=128)")
    same = compare_labels({"x": base, "y": base})
    assert same == {"x": "x", "y": "y"}
    assert compare_labels({"x": None, "y": base})["x"].startswith("x")


# --------------------------------------------------------------------------- the chart widget


class ChartHost(App):
    CSS = f"""
    Screen.{MAXIMIZED_CLASS} #side {{ display: none; }}
    """

    def compose(self) -> ComposeResult:
        from textual.widgets import Static

        yield Static("form", id="side")
        yield LossChart(id="chart")


def test_chart_smoothing_and_maximize() -> None:
    async def go() -> None:
        app = ChartHost()
        async with app.run_test(size=(80, 24)) as pilot:
            chart = app.query_one(LossChart)
            for i in range(50):
                chart.add_train(i * 10, 5.0 * 0.9**i + 1.0)
            chart.add_val(490, 1.1)
            assert chart.smoothed_loss == pytest.approx(smooth(chart.train_loss, chart.smoothing))
            s0 = chart.smoothing
            assert chart.smoother() > s0
            chart.rougher()
            assert chart.rougher() < s0
            assert chart.smoothed_loss == pytest.approx(smooth(chart.train_loss, chart.smoothing))
            chart.add_train(500, 1.0)  # incremental after a change of smoothing
            assert chart.smoothed_loss == pytest.approx(smooth(chart.train_loss, chart.smoothing))
            side = app.query_one("#side")
            assert side.display
            chart.toggle_maximized()
            assert app.screen.has_class(MAXIMIZED_CLASS)
            await pilot.pause()
            assert not side.display
            chart.toggle_maximized()
            assert not app.screen.has_class(MAXIMIZED_CLASS)
            chart.set_compare(
                {"run-a": ([1.0, 2.0], [3.0, 2.0]), "run-b": ([1.0, 2.0], [3.0, 2.5])},
                labels={"run-a": "run-a (lr=0.001)", "run-b": "run-b (lr=0.0003)"},
            )
            chart.redraw()
            await pilot.pause()
            assert chart.compare_labels["run-b"] == "run-b (lr=0.0003)"
            assert chart.clear_compare() and not chart.compare_labels

    asyncio.run(go())


# --------------------------------------------------------------------------- frame history


def _random_frames(seed: int, n: int = 120, kinds: str = "full") -> list[Frame]:
    """A generation that mixes full-sequence frames and windowed ones (offset > 0)."""
    rng = random.Random(seed)
    prompt = 5
    toks = [rng.randrange(5, 50) for _ in range(prompt)] + [4] * (n - prompt)
    masked = [False] * prompt + [True] * (n - prompt)
    fixed = [True] * prompt + [False] * (n - prompt)
    conf = [1.0] * prompt + [0.0] * (n - prompt)
    frames = [Frame(0, 0, list(toks), list(masked), [], list(conf), list(fixed))]
    pos, step = prompt, 0
    while pos < n:
        step += 1
        if kinds == "full" or rng.random() < 0.3:  # a whole-sequence frame revealing a few
            chosen = [p for p in range(pos, min(n, pos + 6)) if masked[p]][: rng.randint(1, 3)]
            for p in chosen:
                toks[p], masked[p], conf[p] = rng.randrange(5, 50), False, rng.random()
            for p in range(n):  # masked positions' passing guesses change every call
                if masked[p]:
                    conf[p] = rng.random()
            pos = next((p for p in range(n) if masked[p]), n)
            frames.append(
                Frame(step, step, list(toks), list(masked), chosen, list(conf), list(fixed))
            )
        else:  # a window (block) at pos
            end = min(n, pos + 4)
            for p in range(pos, end):
                toks[p], masked[p], conf[p] = rng.randrange(5, 50), False, rng.random()
            frames.append(
                Frame(
                    step,
                    step,
                    toks[pos:end],
                    masked[pos:end],
                    list(range(pos, end)),
                    conf[pos:end],
                    fixed[pos:end],
                    offset=pos,
                )
            )
            pos = end
    frames[-1].done = True
    return frames


@pytest.mark.parametrize("kinds", ["full", "mixed"])
def test_frame_history_rebuilds_every_frame(kinds: str, monkeypatch) -> None:
    import ldlm_tui.widgets.frame_history as fh

    monkeypatch.setattr(fh, "MIN_KEYFRAME_GAP", 16)  # many keyframes on a short sequence
    frames = _random_frames(3, kinds=kinds)
    history = FrameHistory()
    transcript = Transcript()
    expected = []
    for i, f in enumerate(frames):
        history.append(f, 0.01 * i)
        transcript.apply(f)
        expected.append(transcript.frame())
    assert len(history) == len(frames)
    order = list(range(len(frames)))
    random.Random(0).shuffle(order)  # random access, stepping forward and back
    for i in order + list(range(len(frames))) + list(range(len(frames) - 1, -1, -1)):
        got, want = history[i], expected[i]
        assert got.tokens == want.tokens and got.masked == want.masked
        assert got.fixed == want.fixed and got.changed == want.changed
        assert got.step == want.step and got.done == want.done
        decided = [not m for m in got.masked]  # only these confidences are kept (and drawn)
        got_c = [c for c, d in zip(got.confidence, decided, strict=True) if d]
        want_c = [c for c, d in zip(want.confidence, decided, strict=True) if d]
        assert got_c == pytest.approx(want_c, abs=1e-4)
    assert history.tokens_per_s(len(frames) - 1) == pytest.approx(
        (len(frames[0].tokens) - 5) / (0.01 * (len(frames) - 1))
    )


def test_frame_history_memory_is_linear_for_one_token_frames() -> None:
    n = 4000  # an ar generation: one frame per token
    history = FrameHistory()
    history.append(Frame(0, 0, [4] * n, [True] * n, [], [0.0] * n, [False] * n), 0.0)
    for p in range(n):
        history.append(Frame(p + 1, p + 1, [7], [False], [p], [0.5], [False], offset=p), 0.0)
    # Full frames would take n^2 = 16M list entries; deltas and a few keyframes are small.
    assert history.nbytes() < 4_000_000
    assert len(history._keys) < 12
    f = history[2000]
    assert f.tokens[:2000] == [7] * 2000 and all(f.masked[2000:]) and not f.masked[1999]
    assert history.end(2000) == 2000
