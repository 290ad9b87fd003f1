"""A short settings field (a number in a form) that is safe to type over."""

from __future__ import annotations

from textual.widgets import Input


class SettingInput(Input):
    """A short settings field whose focusing click selects the whole value, as Tab does.

    Typing then replaces the value: clicking into "0" and typing "0.8" must give "0.8", not
    "00.8"; a second click places the cursor as usual.
    """

    _fresh = False

    def on_focus(self) -> None:
        self._fresh = True

    def on_blur(self) -> None:
        self._fresh = False

    def on_key(self) -> None:
        self._fresh = False

    def on_click(self) -> None:
        if self._fresh:
            self._fresh = False
            self.select_all()
