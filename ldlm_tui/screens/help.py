"""Modal screens the App pushes: the key reference (``?``) and the quit-while-training choice.

The key list lives here as data so the help screen, the README and the footer tell the same
story; it is checked against the App's bindings in the tests.
"""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

KEYS: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "Everywhere",
        [
            ("t / g / r", "Train, Generate, Runs tab"),
            ("s", "start training with the Train tab's settings"),
            ("p", "pause / resume (also an attached run)"),
            ("x", "stop: checkpoint and end the run"),
            ("l", "loss chart: toggle log scale"),
            ("ctrl+p", "command palette"),
            ("?", "this help"),
            ("q", "quit (asks first while training)"),
            ("tab / shift+tab", "move between fields"),
            ("escape", "leave a field (letter keys act again); end a comparison"),
        ],
    ),
    (
        "Runs tab",
        [
            ("enter", "open the run in the Generate tab"),
            ("a", "attach: follow the run's loss and samples"),
            ("space", "mark the run for comparison"),
            ("c", "compare loss curves of marked runs"),
            ("d", "delete (asks first; refused for live runs)"),
            ("R", "resume a stopped run here"),
        ],
    ),
    (
        "Train form",
        [
            ("corpus", "a file, a folder of .txt files, builtin, or a named corpus"),
            ("steps / batch / lr", "optimizer steps, sequences per step, peak learning rate"),
            ("seq len", "tokens per training sequence"),
            ("report", "evaluate and print a sample every N steps (0 = never)"),
        ],
    ),
    (
        "Quitting while training",
        [
            ("s", "stop: checkpoint, then quit"),
            ("b", "keep training in the background, then quit"),
            ("escape", "cancel"),
        ],
    ),
]


def keys_table() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for section, rows in KEYS:
        table.add_row(Text(section, style="bold underline"), "")
        for key, what in rows:
            table.add_row(key, what)
        table.add_row("", "")
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="help"):
            yield Label(Text("ldlm keys", style="bold"))
            yield Static(keys_table())

    def action_dismiss(self, result=None) -> None:  # type: ignore[override]
        self.dismiss(None)


class QuitScreen(ModalScreen[str | None]):
    """Quit while a run trains: stop it, hand it to a background process, or cancel."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "choose('stop')", "Stop"),
        Binding("b", "choose('background')", "Background"),
        Binding("escape,c", "choose(None)", "Cancel"),
    ]

    def __init__(self, run: str) -> None:
        super().__init__()
        self.run = run

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="quit"):
            yield Label(Text(f"Run {self.run} is training."))
            with Horizontal(classes="dialog-buttons"):
                yield Button("Stop (checkpoint) s", id="stop", variant="error", compact=True)
                yield Button(
                    "Keep running in background b", id="background", variant="primary", compact=True
                )
                yield Button("Cancel esc", id="cancel", compact=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None if event.button.id == "cancel" else event.button.id)

    def action_choose(self, choice: str | None) -> None:
        self.dismiss(choice)
