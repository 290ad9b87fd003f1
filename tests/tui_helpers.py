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
