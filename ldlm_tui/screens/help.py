"""The app's chrome: modal screens it pushes (key reference, messages, confirmations,
quitting), the status line, the footer that always keeps help and quit in view, and the
command palette's entries.

The key list lives here as data so the help screen, the README and the footer tell the same
story; it is checked against the App's bindings in the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.markup import escape as escape_markup
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Label, Static
from textual.widgets._footer import FooterKey

from ldlm_engine import RunInfo, close_run_names, list_runs
from ldlm_engine.safe_text import visible

from ..messages import LogEntry

KEYS: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "Everywhere",
        [
            ("t / g / r", "Train, Generate, Runs tab"),
            ("s", "start training with the Train tab's settings (asks from other tabs)"),
            ("n", "new run: unlock the Train form (the current run's settings stay)"),
            ("p", "pause / resume (also an attached run)"),
            ("x", "stop: checkpoint and end the run (asks from other tabs)"),
            ("l", "loss chart: toggle log scale"),
            ("m", "messages: recent notices and errors"),
            ("ctrl+p", "command palette (runs by name, every action)"),
            ("? / f1", "this help"),
            ("q / ctrl+q", "quit (asks first while training)"),
            ("tab / shift+tab", "move between fields"),
            ("escape", "leave a field (letter keys act again); end a comparison"),
        ],
    ),
    (
        "Train tab (the loss chart; no need to focus it)",
        [
            ("z", "zoom: the chart takes the whole tab / back"),
            ("[ / ]", "less / more smoothing (0 = raw points)"),
            ("l", "log scale / linear"),
        ],
    ),
    (
        "Letter keys and text fields",
        [
            ("", "while a text field has the cursor, letters type; f1, ctrl+q, escape still act"),
        ],
    ),
    (
        "Generate tab (the current run)",
        [
            ("colours", "(the legend, drawn by the renderer)"),
            ("enter / ctrl+g", "generate from the prompt (the cursor starts in the prompt)"),
            ("[MASK] [MASK*N]", "infill: one / N tokens to fill; else the prompt is continued"),
            ("temp", "temperature: 0 = always the likeliest token (often repeats itself)"),
            ("steps / len", "model calls (0 = one per token) / tokens to write (blank = fill)"),
            ("left / right", "step through the denoising frames"),
            ("space", "replay the denoising"),
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
            ("name", "the run's name (blank: preset-process-time)"),
            ("corpus", "a file, a folder of .txt files, builtin, or a named corpus"),
            ("tokenizer", "char, word or bpe"),
            ("steps / batch / lr", "optimizer steps, sequences per step, peak learning rate"),
            ("seq len", "tokens per training sequence"),
            ("report", "evaluate and print a sample every N steps (0 = never)"),
            ("block", "block process: tokens per block (divides seq len)"),
            ("", "starting values: the preset under your config.toml, like `ldlm train`"),
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


def colour_legend() -> Text:
    """The Generate view's colours (drawn by the shared renderer), for the help screen."""
    try:
        from ..render import legend
    except ImportError:  # pragma: no cover - depends on the tree
        return Text("")
    return legend()


def keys_table() -> Group:
    """Each section as a heading over its keys, the key column aligned across sections."""
    width = max(len(key) for _, rows in KEYS for key, _ in rows)
    parts: list[Text | Table] = []
    for section, rows in KEYS:
        parts.append(Text(section, style="bold underline"))
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True, min_width=width)
        table.add_column()
        for key, what in rows:
            table.add_row(key, colour_legend() if key == "colours" else what)
        parts += [table, Text("")]
    return Group(*parts)


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


class YesNoScreen(ModalScreen[bool]):
    """A question with a yes and a cancel button; subclasses bind the keys that answer."""

    VARIANT = "primary"  # the yes button's look
    DIALOG_ID: str | None = "confirm"  # app.tcss sizes this dialog to its text

    def __init__(self, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id=self.DIALOG_ID):
            yield Label(Text(self.question))
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant=self.VARIANT, compact=True)
                yield Button("Cancel (n)", id="no", compact=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class ConfirmScreen(YesNoScreen):
    """A yes/no question before a long or destructive action started away from its tab."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y,enter", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "Cancel"),
    ]


class MessagesScreen(ModalScreen[None]):
    """Every notice and error of this session, newest last (toasts fade; these stay)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,m,q", "close", "Close")]

    def __init__(self, entries: list[LogEntry]) -> None:
        super().__init__()
        self.entries = entries

    def compose(self) -> ComposeResult:
        import time

        table = Table.grid(padding=(0, 1))
        table.add_column(style="dim", no_wrap=True)
        table.add_column()
        styles = {"error": "bold red", "warning": "yellow"}
        for e in self.entries[-100:]:
            stamp = time.strftime("%H:%M:%S", time.localtime(e.when))
            table.add_row(stamp, Text(e.line(), style=styles.get(e.severity, "")))
        with VerticalScroll(classes="dialog", id="messages"):
            yield Label(Text("Messages (escape closes)", style="bold"))
            yield Static(table if self.entries else Text("No messages yet.", style="dim"))

    def on_mount(self) -> None:
        self.query_one("#messages").scroll_end(animate=False)

    def action_close(self) -> None:
        self.dismiss(None)


class LdlmFooter(Footer):
    """The footer with help and quit first, so a narrow terminal cuts other keys, never them.

    Inside a text field ``?`` and ``q`` type; their other keys (f1, ctrl+q) show instead. It
    is rebuilt only when the keys it shows change (every focus change asks), since a rebuild
    costs the UI thread a layout pass that a key press then waits for.
    """

    FIRST = ("help", "quit")
    # Textual's compact footer gives every key a right margin, the palette key docked at the
    # right edge too: the last column then showed whatever key lay underneath ("^p palettee").
    DEFAULT_CSS = "LdlmFooter.-compact FooterKey.-command-palette { margin-right: 0; }"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shown: tuple[Any, ...] | None = None

    def _keys(self) -> list[tuple[Binding, bool, str]]:
        by_action: dict[str, tuple[Binding, bool, str]] = {}
        for _node, binding, enabled, tooltip in self.screen.active_bindings.values():
            if not binding.show:
                continue
            seen = by_action.get(binding.action)
            shorter = seen is None or len(self.app.get_key_display(binding)) < len(
                self.app.get_key_display(seen[0])
            )
            if shorter:  # of a binding's keys, the plainest one that acts here: q, not ^q
                by_action[binding.action] = (binding, enabled, tooltip)
        return sorted(
            by_action.values(),
            key=lambda b: self.FIRST.index(b[0].action) if b[0].action in self.FIRST else 99,
        )

    def _signature(self) -> tuple[Any, ...]:
        keys = tuple((b.key, b.action, b.description, on) for b, on, _ in self._keys())
        palette = self.screen.active_bindings.get(self.app.COMMAND_PALETTE_BINDING)
        return keys, palette is not None and palette.enabled, self.size.width

    async def recompose(self) -> None:
        if self._bindings_ready and self.is_attached:
            signature = self._signature()
            if signature == self._shown:
                return
        await super().recompose()

    def on_resize(self) -> None:
        if self._bindings_ready and self._shown is not None and self._shown[-1] != self.size.width:
            self.call_after_refresh(self.recompose)

    def _palette(self) -> Any:
        if self.show_command_palette and self.app.ENABLE_COMMAND_PALETTE:
            return self.screen.active_bindings.get(self.app.COMMAND_PALETTE_BINDING)
        return None

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        self._shown = self._signature()
        palette = self._palette()
        # Only keys that fit whole: a key cut at the edge reads as a stray word ("g Gener").
        room = self.size.width or 10_000
        if palette is not None:
            room -= len(self.app.get_key_display(palette.binding)) + 2 + len("palette")
        keys = []
        for binding, enabled, tooltip in self._keys():
            shown = self.app.get_key_display(binding)
            room -= len(shown) + len(binding.description) + 2  # "k Desc" and the margin
            if room < 0 and keys:
                break
            keys.append((binding, shown, enabled, tooltip))
        self.styles.grid_size_columns = len(keys)
        for binding, shown, enabled, tooltip in keys:
            yield FooterKey(
                binding.key,
                shown,
                binding.description,
                binding.action,
                disabled=not enabled,
                tooltip=tooltip,
            ).data_bind(compact=Footer.compact)
        if palette is not None:
            yield FooterKey(
                palette.binding.key,
                self.app.get_key_display(palette.binding),
                palette.binding.description,
                palette.binding.action,
                classes="-command-palette",
                disabled=not palette.enabled,
                tooltip=palette.binding.tooltip or palette.binding.description,
            )


class StatusLine(Static):
    """The top line: the current run and the latest message (errors stay until replaced)."""

    DEFAULT_CSS = "StatusLine { dock: top; height: 1; background: $panel; padding: 0 1; }"

    def show(self, run: str, entry: LogEntry | None) -> None:
        line = Text.assemble(("ldlm", "bold"), no_wrap=True, overflow="ellipsis", end="")
        line.append("  run " if run else "  no run", style="dim")
        if run:
            line.append(visible(run), style="bold")
        if entry is not None:
            style = {"error": "bold red", "warning": "yellow"}.get(entry.severity, "")
            line.append("  │ ", style="dim")
            line.append(entry.line(), style=style)
            line.append("  m: messages", style="dim")
        self.update(line, layout=False)  # one fixed line: no layout pass


class LdlmCommands(Provider):
    """ldlm's entries in the command palette (Ctrl+P)."""

    _runs: tuple[RunInfo, ...] = ()

    async def startup(self) -> None:
        # Once per opening of the palette (Textual awaits it before any search), not once per
        # keystroke: listing reads every run's status files.
        self._runs = tuple(list_runs()[:50])

    def _commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        app: Any = self.app  # the LdlmApp (not imported here: it imports this module)
        cmds: list[tuple[str, str, Callable[[], object]]] = [
            ("Start training", "train with the Train tab's settings (s)", app.action_start),
            ("New run", "edit the Train form for a new run (n)", app.action_new_run),
            ("Pause / resume training", "pause or resume the run (p)", app.action_pause),
            ("Stop training", "checkpoint and stop the run (x)", app.action_stop),
            ("Toggle log scale", "loss chart y axis (l)", app.action_log_scale),
            ("Open run…", "the Runs tab: pick a run, Enter (r)", partial(app.action_tab, "runs")),
            ("Generate", "the Generate tab (g)", partial(app.action_tab, "generate")),
            ("Messages", "recent messages and errors (m)", app.action_messages),
            ("ldlm keys", "list every ldlm key (?)", app.action_help),
        ]
        for info in self._runs:  # a name's control characters and markup shown, not obeyed
            name, shown = info.name, escape_markup(visible(info.name))
            cmds.append(
                (
                    f"Open run {shown}",
                    f"{escape_markup(visible(info.state))}, step {info.step}",
                    partial(app.open_run, name),
                )
            )
            cmds.append(
                (f"Attach to run {shown}", "follow its loss and samples", partial(app.attach, name))
            )
        return cmds

    async def discover(self) -> Hits:
        for title, help_text, callback in self._commands()[:9]:
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        commands = self._commands()
        found = False
        for title, help_text, callback in commands:
            score = matcher.match(title)
            if score > 0:
                found = True
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
        if found or not query.strip():
            return
        # Nothing matched: perhaps a mistyped run name ("open run alpah").
        app: Any = self.app
        for name in close_run_names(query.split()[-1]):
            yield Hit(0.5, f"Open run {name} (did you mean?)", partial(app.open_run, name))
