"""Focus is visible on every focusable widget, in the dark and the light theme, and an open
dropdown has a frame (it read as one list with the form underneath)."""

from __future__ import annotations

import pytest
from textual.widgets import Select, Tabs
from tui_helpers import screen_cells, screen_lines

from ldlm_engine import RunDir, get_preset
from ldlm_tui.app import LdlmApp

pytestmark = pytest.mark.anyio
THEMES = ("textual-dark", "textual-light")
BG_DELTA = 40  # RGB distance: grey 234 -> 235 is ~1.7, a clear highlight is well above 40
FG_DELTA = 60


def _distance(a, b) -> float:
    if a is None or b is None:
        return 0.0 if a == b else 255.0
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) ** 0.5


def clearly_changed(before, after) -> bool:
    """Most of the widget changed (a background), or an edge did (a bar or a border)."""
    changed = [
        [
            a[0] != b[0]
            or _distance(a[1], b[1]) >= BG_DELTA
            or (a[0].strip() != "" and _distance(a[2], b[2]) >= FG_DELTA)
            for a, b in zip(r0, r1, strict=True)
        ]
        for r0, r1 in zip(before, after, strict=True)
    ]
    cells = [c for row in changed for c in row]
    if not cells:
        return False
    if sum(cells) >= 0.6 * len(cells):
        return True
    edges = [changed[0], changed[-1], *zip(*changed, strict=True)]
    return any(sum(edge) >= max(2, 0.8 * len(edge)) for edge in edges)  # corners may differ


def focus_target(widget):
    """Where focus shows: the active tab for the tab bar, else the widget itself."""
    if isinstance(widget, Tabs) and widget.active_tab is not None:
        return widget.active_tab
    return widget


@pytest.mark.parametrize("theme", THEMES)
async def test_every_focusable_widget_shows_focus_clearly(home, theme):
    rd = RunDir.create(get_preset("tiny"), name="a-run")  # the runs table has a row
    rd.write_status("stopped", step=10)
    rd.close()
    app = LdlmApp()
    async with app.run_test(size=(120, 40)) as pilot:
        app.theme = theme
        checked = set()
        for tab in ("t", "g", "r"):
            await pilot.press("escape", tab)
            await pilot.pause()
            for widget in list(app.screen.focus_chain):
                kind = (type(widget).__name__, widget.has_class("-textual-compact"))
                if kind in checked:  # one of each kind of widget: styles go by kind
                    continue
                checked.add(kind)
                app.set_focus(None)
                await pilot.pause()
                target = focus_target(widget)
                before = screen_cells(app, target.region)
                widget.focus()
                await pilot.pause()
                after = screen_cells(app, target.region)
                name = f"{type(widget).__name__}#{widget.id}"
                assert clearly_changed(before, after), (theme, tab, name)
        kinds = {name for name, _ in checked}
        assert {"Input", "Select", "Button", "LossChart", "RichLog", "RunsTable"} <= kinds
        assert {"SettingInput", "DenoiseView", "ContentTabs"} <= kinds


@pytest.mark.parametrize("theme", THEMES)
async def test_an_open_dropdown_has_a_frame(home, theme):
    app = LdlmApp()
    async with app.run_test(size=(80, 24)) as pilot:
        app.theme = theme
        select = app.train_pane.query_one("#preset", Select)
        select.focus()
        await pilot.press("enter")
        await pilot.pause()
        assert select.expanded
        lines = screen_lines(app)
        top = next(i for i, line in enumerate(lines) if "╭" in line)
        left = lines[top].index("╭")
        bottom = next(i for i in range(top + 1, len(lines)) if lines[i][left] == "╰")
        assert bottom - top >= 3  # a frame around the options
        assert all(lines[i][left] == "│" for i in range(top + 1, bottom))
        assert "tiny" in "".join(lines[top + 1 : bottom])
