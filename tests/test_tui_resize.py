"""The app at every size: no crash in any chart mode, a note when too small, chart keys that
work from anywhere on the Train tab, and a footer without stray characters."""

from __future__ import annotations

import itertools

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Input
from tui_helpers import screen_lines

from ldlm_tui.app import MIN_SIZE, LdlmApp
from ldlm_tui.screens.help import KEYS
from ldlm_tui.widgets.loss_chart import MAXIMIZED_CLASS, MIN_HEIGHT, LossChart

pytestmark = pytest.mark.anyio

# From below the app's minimum to a large terminal, tiny and lopsided shapes included.
SIZES = [(20, 6), (40, 10), (59, 15), (60, 16), (80, 24), (120, 40), (240, 70), (61, 70), (240, 16)]


DATA = ["many", "near zero", "one point", "flat"]


def fill(chart: LossChart, kind: str) -> None:
    """Curves that have broken plotext: near-zero and zero losses (log of 0), one point,
    a flat line (an empty y range), many points with a warm-up spike."""
    chart.clear()
    if kind == "one point":
        chart.add_train(1, 2.5)
    elif kind == "near zero":
        for i, y in enumerate([1e-9, 0.0, 3e-7, 1e-12, 0.0, 2e-9]):
            chart.add_train(i + 1, y)
        chart.add_val(6, 0.0)
    elif kind == "flat":
        for i in range(30):
            chart.add_train(i * 5, 1.25)
        chart.add_val(145, 1.25)
    else:  # many
        for i in range(3000):
            chart.add_train(i + 1, 6.0 * 0.99**i + 0.8 + 0.05 * ((i * 7919) % 13) / 13)
        for i in range(0, 3000, 250):
            chart.add_val(i + 1, 1.0 + 5.0 * 0.99**i)
    chart.redraw()


class ChartOnly(App):
    """The chart alone, so the sweep over modes, data and sizes costs little but plotext."""

    def compose(self) -> ComposeResult:
        yield LossChart()


async def test_the_chart_draws_at_every_size_in_every_mode_and_with_any_data():
    app = ChartOnly()
    async with app.run_test(size=(80, 24)) as pilot:
        chart = app.query_one(LossChart)
        modes = ["linear", "log", "raw", "smoothest", "compare"]
        for mode, kind in itertools.product(modes, DATA):
            fill(chart, kind)
            chart.log_scale = mode == "log"
            chart.set_smoothing({"raw": 0.0, "smoothest": 0.995}.get(mode, 0.9))
            if mode == "compare":
                chart.set_compare(
                    {"a": (list(chart.train_steps), list(chart.train_loss)), "b": ([1.0], [0.0])}
                )
            for size in SIZES if kind == "many" else [(20, 6), (40, 10), (80, 24)]:
                await pilot.resize_terminal(*size)
                await pilot.pause()
                # Drawn by plotext on the first try (not the fallback note), with its title.
                assert not chart.draw_error, (mode, kind, size, chart.draw_error)
                if size[0] >= 60 and size[1] >= MIN_HEIGHT:
                    drawn = "".join(screen_lines(app))
                    assert "loss" in drawn or "compare" in drawn, (mode, kind, size)
            chart.clear_compare()


async def test_no_size_crashes_the_app_and_too_small_says_so(home):
    app = LdlmApp()
    async with app.run_test(size=(80, 24)) as pilot:
        chart = app.main_query(LossChart)
        fill(chart, "many")
        for log, maximised, compare in [(True, False, False), (False, True, True)]:
            chart.log_scale = log
            app.screen.set_class(maximised, MAXIMIZED_CLASS)
            if compare:
                chart.set_compare({"a": (list(chart.train_steps), list(chart.train_loss))})
            for size in SIZES:
                await pilot.resize_terminal(*size)
                await pilot.pause()
                assert app.is_running, size
                small = size[0] < MIN_SIZE[0] or size[1] < MIN_SIZE[1]
                assert app.screen.has_class("too-small") == small, size
                text = " ".join(" ".join(screen_lines(app)).split())
                need = f"terminal too small: need at least {MIN_SIZE[0]}×{MIN_SIZE[1]}"
                assert (need in text) == small, size  # wrapped when narrow
                if not small:
                    assert not chart.draw_error, (size, chart.draw_error)
                    assert "? Help" in text or "f1 Help" in text, size


async def test_log_scale_survives_a_resize(home):
    """The crash as reported: l, then a resize (plotext took the log of the log)."""
    app = LdlmApp()
    async with app.run_test(size=(80, 24)) as pilot:
        chart = app.main_query(LossChart)
        fill(chart, "many")
        await pilot.press("l")
        for size in [(120, 40), (60, 16), (80, 24)]:
            await pilot.resize_terminal(*size)
            await pilot.pause()
            assert app.is_running
            assert "loss (log" in "\n".join(screen_lines(app)), size


async def test_chart_keys_work_from_the_train_tab_without_focusing_the_chart(home):
    app = LdlmApp()
    async with app.run_test(size=(80, 24)) as pilot:
        chart = app.main_query(LossChart)
        fill(chart, "many")
        await pilot.press("escape")
        assert not chart.has_focus
        s0 = chart.smoothing
        await pilot.press("right_square_bracket")
        assert chart.smoothing > s0
        await pilot.press("left_square_bracket", "left_square_bracket")
        assert chart.smoothing < s0
        await pilot.press("z")
        assert app.screen.has_class(MAXIMIZED_CLASS)
        await pilot.press("z", "l")
        assert not app.screen.has_class(MAXIMIZED_CLASS) and chart.log_scale
        assert not chart.has_focus
        # From the form's buttons too (focus inside the Train pane)...
        app.train_pane.query_one("#start").focus()
        await pilot.press("right_square_bracket")
        assert chart.smoothing > s0 - 1e-9
        # ...but never while typing: [ and z go into the field.
        field = app.train_pane.query_one("#name", Input)
        field.focus()
        before = chart.smoothing
        await pilot.press("z", "left_square_bracket")
        assert field.value == "z[" and chart.smoothing == before
        assert not app.screen.has_class(MAXIMIZED_CLASS)
        # On another tab they do nothing to the chart.
        await pilot.press("escape", "r", "z")
        assert not app.screen.has_class(MAXIMIZED_CLASS)


async def test_help_lists_the_chart_keys(home):
    documented = {key for _, rows in KEYS for key, _ in rows}
    assert {"z", "[ / ]", "l"} <= documented
    app = LdlmApp()
    async with app.run_test(size=(80, 40)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        text = "\n".join(screen_lines(app))
        assert "[ / ]" in text and "zoom" in text


async def test_footer_shows_whole_keys_and_nothing_stray(home):
    app = LdlmApp()
    async with app.run_test(size=(80, 24)) as pilot:
        for width, tab in itertools.product((80, 120, 61), ("t", "g", "r")):
            await pilot.resize_terminal(width, 24)
            await pilot.press("escape", tab)
            await pilot.pause(0.2)
            line = screen_lines(app)[-1]
            keys, sep, palette = line.partition("▏")
            assert sep and palette == "^p palette", (width, repr(line))  # nothing after it
            shown = [
                f"{app.get_key_display(b)} {b.description}"
                for _n, b, _e, _t in app.screen.active_bindings.values()
            ]
            rest = keys.strip()
            while rest:  # the keys side is whole "key Description" items, nothing else
                item = max((s for s in shown if rest.startswith(s)), key=len, default=None)
                assert item is not None, (width, tab, repr(line))
                rest = rest[len(item) :].strip()
