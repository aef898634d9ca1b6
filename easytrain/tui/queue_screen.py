"""The queue route: the answers files in a folder and whether each one validates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from easytrain.tui.base import WizardScreen
from textual.widgets import DataTable, Footer, Static

from easytrain import answers as answers_file
from easytrain.errors import UserError


@dataclass(frozen=True)
class QueueEntry:
    name: str
    problem: Optional[str]  # None: the file validates


def check_queue(folder: Path) -> list[QueueEntry]:
    """Every *.json in ``folder`` in name order (the order the queue runs them), checked."""
    entries = []
    for path in sorted(p for p in folder.glob("*.json") if p.is_file()):
        try:
            answers_file.load(path)
            entries.append(QueueEntry(path.name, None))
        except UserError as exc:
            first = exc.problems[0] if getattr(exc, "problems", None) else str(exc)
            more = len(getattr(exc, "problems", None) or []) - 1
            entries.append(QueueEntry(path.name, first + (f" (+{more} more)" if more > 0 else "")))
    return entries


class QueueScreen(WizardScreen[str]):
    """Returns "run" or "back"."""

    BINDINGS = [
        Binding("enter", "run", "Run the queue"),
        Binding("escape,backspace", "back", "Back"),
    ]

    def __init__(self, where: str, shown_as: str, entries: Sequence[QueueEntry]) -> None:
        super().__init__(classes="queue")
        self.where = where
        self.shown_as = shown_as
        self.entries = list(entries)

    def compose(self) -> ComposeResult:
        good = sum(1 for e in self.entries if e.problem is None)
        yield Static(self.where, id="where", markup=False)
        with VerticalScroll(id="card"):
            yield Static(f"{self.shown_as}: {len(self.entries)} answers files, {good} valid", id="prompt",
                         markup=False)
            table = DataTable(id="files", show_cursor=False, zebra_stripes=True)
            table.can_focus = False
            table.add_columns("file", "status")
            for entry in self.entries:
                table.add_row(entry.name, "ok" if entry.problem is None else f"invalid: {entry.problem}")
            yield table
            if good:
                hint = ("Enter runs them in this order; invalid files are reported and skipped; finished "
                        "files move to complete/. Esc goes back.")
            else:
                hint = "Nothing here can run: Esc to choose another folder."
            yield Static(hint, id="hint" if good else "error", markup=False)
        yield Footer()

    def action_run(self) -> None:
        if not any(e.problem is None for e in self.entries):
            self.app.bell()
            return
        self.finish("run")

    def action_back(self) -> None:
        self.finish("back")
