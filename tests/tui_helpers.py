"""Helpers shared by the app's Pilot tests."""

from __future__ import annotations

import time


async def wait_for(pilot, cond, timeout: float = 60.0, what: str = "condition") -> None:
    """Let the app run until ``cond()`` holds (the trainer runs in its own thread)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.1)


def screen_lines(app) -> list[str]:
    """The app's screen as plain text, one string per row (what a terminal would show)."""
    strips = app.screen._compositor.render_strips()
    return ["".join(seg.text for seg in strip) for strip in strips]


def screen_cells(app, region) -> list[list[tuple[str, tuple | None, tuple | None]]]:
    """(character, background RGB, foreground RGB) of each cell of ``region`` as drawn,
    reverse video resolved, so a test can compare what the user sees before and after."""
    strips = app.screen._compositor.render_strips()
    rows = []
    for y in range(region.y, region.bottom):
        row, x = [], 0
        for seg in strips[y]:
            style = seg.style
            bg = tuple(style.bgcolor.get_truecolor()) if style and style.bgcolor else None
            fg = tuple(style.color.get_truecolor()) if style and style.color else None
            if style is not None and style.reverse:
                bg, fg = fg, bg
            for ch in seg.text:
                if region.x <= x < region.right:
                    row.append((ch, bg, fg))
                x += 1
        rows.append(row)
    return rows
