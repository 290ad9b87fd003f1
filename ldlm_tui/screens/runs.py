"""The Runs pane: every run under ``$LDLM_HOME``, refreshed every two seconds.

It reads only ``list_runs()`` (summary + status files, no metrics scan) so it stays cheap with
many runs, and asks the App (via :class:`~ldlm_tui.messages.RunAction`) to open, attach,
compare or resume, since those touch the other panes and the trainer thread the App owns.
Deleting happens here, behind a confirmation, and is refused for live runs.
"""

from __future__ import annotations

import time
from pathlib import PurePath
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from ldlm_engine import LdlmError, RunDir, RunInfo, delete_run, list_runs
from ldlm_engine.safe_text import visible

from ..messages import RunAction
from .help import YesNoScreen

COLUMNS = ("", "name", "state", "step", "val b/c", "corpus", "preset", "process", "updated")
REFRESH_S = 2.0
CORPUS_WIDTH = 18


def corpus_label(source: str) -> str:
    """A corpus as the table shows it: a named corpus as is, a path by its last part."""
    if not source:
        return "-"
    label = PurePath(source).name or source if ("/" in source or "\\" in source) else source
    return label if len(label) <= CORPUS_WIDTH else label[: CORPUS_WIDTH - 1] + "…"


def read_corpus(info: RunInfo) -> str:
    """The run's corpus from its config.json ("" when it cannot be read: damaged runs)."""
    if info.state == "damaged":
        return ""
    try:
        data = RunDir(info.path).read_config().get("data")
    except (LdlmError, OSError, ValueError):
        return ""
    source = data.get("source") if isinstance(data, dict) else None
    return source if isinstance(source, str) else ""


def run_row(info: RunInfo, marked: bool, corpus: str = "") -> tuple[str, ...]:
    best = info.best_val_bits_per_char
    updated = "-"
    if info.last_update:
        updated = time.strftime("%m-%d %H:%M", time.localtime(info.last_update))
    return (  # every string from a run folder with its control characters shown
        "●" if marked else " ",
        visible(info.name),
        visible(info.state),
        str(info.step),
        "-" if best is None else f"{best:.3f}",
        visible(corpus_label(corpus)),
        visible(info.preset),
        visible(info.process),
        updated,
    )


class ConfirmDelete(YesNoScreen):
    """Asks before a run directory (checkpoints included) is removed for good: the key that
    deletes is ``y`` alone (no Enter binding), and the button is red."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Delete"),
        Binding("n,escape", "answer(False)", "Cancel"),
    ]
    VARIANT = "error"
    DIALOG_ID = None

    def __init__(self, run: str) -> None:
        super().__init__(f"Delete run {run} and its checkpoints?", "Delete")
        self.run = run


class RunsTable(DataTable):
    """The table; Enter is shown in the footer as Open."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Open", show=True)]


class RunsPane(Vertical):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "attach", "Attach"),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("d", "delete", "Delete"),
        Binding("R", "resume", "Resume"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.marked: set[str] = set()
        self.infos: dict[str, RunInfo] = {}
        self._rows: list[tuple[str, ...]] = []
        self._corpora: dict[tuple[str, float], str] = {}  # (name, created) -> corpus: fixed

    def compose(self) -> ComposeResult:
        yield RunsTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="runs-hint")

    def on_mount(self) -> None:
        table = self.query_one(RunsTable)
        for c in COLUMNS:
            table.add_column(c, key=c or "mark")
        self.refresh_runs()
        self.set_interval(REFRESH_S, self._tick)

    def _tick(self) -> None:
        """Refresh only while visible: a hidden tab need not stat every run directory."""
        node = self
        while node is not None:
            if not getattr(node, "display", True):
                return
            node = node.parent
        self.refresh_runs()

    # ------------------------------------------------------------------ table
    def refresh_runs(self) -> None:
        """Re-read the runs; rebuild the table only when something changed (keeps the cursor)."""
        infos = list_runs()
        self.infos = {i.name: i for i in infos}
        self.marked &= set(self.infos)
        rows = [run_row(i, i.name in self.marked, self._corpus(i)) for i in infos]
        self._rows_changed = rows != self._rows
        self._show_hint()
        if not self._rows_changed:
            return
        self._rows = rows
        table = self.query_one(RunsTable)
        current = self.current_run()
        table.clear()
        for info, row in zip(infos, rows, strict=True):  # Text: a cell is never markup
            table.add_row(*(Text(c, end="") for c in row), key=info.name)
        if current in self.infos:
            table.move_cursor(row=table.get_row_index(current))
        self._show_hint()

    def _corpus(self, info: RunInfo) -> str:
        key = (info.name, info.created)
        if key not in self._corpora:
            corpus = read_corpus(info)
            if not corpus:
                return ""  # not cached: a damaged run may be repaired
            self._corpora[key] = corpus
        return self._corpora[key]

    def _show_hint(self) -> None:
        """Counts and keys; for a damaged run under the cursor, why it is damaged."""
        hint = self.query_one("#runs-hint", Static)
        if not self.infos:
            empty = "No runs yet: press t for the Train tab, then s to start one."
            hint.update(empty, layout=False)
            return
        info = self.infos.get(self.current_run() or "")
        reason = getattr(info, "reason", "") if info is not None else ""
        if info is not None and info.state == "damaged":
            why = Text(
                f"{visible(info.name)} is damaged: {visible(reason or 'unreadable files')}", "red"
            )
            hint.update(why, layout=False)
            return
        marked = f", {len(self.marked)} marked" if self.marked else ""
        runs = "1 run" if len(self.infos) == 1 else f"{len(self.infos)} runs"
        keys = "enter opens, a attaches, space marks for c (compare)"
        hint.update(f"{runs}{marked}.  {keys}.", layout=False)  # one line: no layout pass

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_hint()

    def current_run(self) -> str | None:
        table = self.query_one(RunsTable)
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:
            return None
        return str(key.value) if key.value is not None else None

    # ------------------------------------------------------------------ actions
    def _need_run(self) -> str | None:
        run = self.current_run()
        if run is None:
            self.notify("No run selected.", severity="warning")
        return run

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(RunAction("open", (str(event.row_key.value),)))

    def action_attach(self) -> None:
        if run := self._need_run():
            self.post_message(RunAction("attach", (run,)))

    def action_mark(self) -> None:
        if run := self._need_run():
            self.marked ^= {run}
            self.refresh_runs()

    def action_compare(self) -> None:
        runs = tuple(sorted(self.marked)) or tuple(filter(None, [self.current_run()]))
        if not runs:
            self.notify("Mark runs with space, then press c.", severity="warning")
            return
        self.post_message(RunAction("compare", runs))

    def action_resume(self) -> None:
        if run := self._need_run():
            self.post_message(RunAction("resume", (run,)))

    def action_delete(self) -> None:
        run = self._need_run()
        if run is None:
            return
        info = self.infos.get(run)
        if info is not None and info.state == "live":
            self.notify(
                f"Run {visible(run)} is live: stop it first.", severity="error", markup=False
            )
            return

        def done(yes: bool | None) -> None:
            if not yes:
                return
            try:
                delete_run(self.infos[run].path if run in self.infos else run)
            except LdlmError as e:
                self.notify(visible(str(e)), severity="error", markup=False)
                return
            self.marked.discard(run)
            self.notify(f"Deleted run {visible(run)}.", markup=False)
            self.refresh_runs()

        self.app.push_screen(ConfirmDelete(visible(run)), done)
