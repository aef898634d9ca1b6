"""The queue route: the answers files in a folder and whether each one validates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from easytrain.tui.base import WizardScreen
from textual.widgets import Footer, Static

from easytrain import answers as answers_file
from easytrain.errors import UserError


@dataclass(frozen=True)
class QueueEntry:
    name: str
    problems: tuple[str, ...] = ()  # empty: the file validates

    @property
    def valid(self) -> bool:
        return not self.problems


def check_queue(folder: Path) -> list[QueueEntry]:
    """Every *.json in ``folder`` in name order (the order the queue runs them), checked."""
    entries = []
    for path in sorted(p for p in folder.glob("*.json") if p.is_file()):
        try:
            answers_file.load(path)
            entries.append(QueueEntry(path.name))
        except UserError as exc:
            entries.append(QueueEntry(path.name, tuple(getattr(exc, "problems", None) or ())
                                      or (str(exc).split(": ", 1)[-1],)))
    return entries


def entry_lines(entry: QueueEntry) -> list[str]:
    """One line for a valid file; for an invalid one, every problem on its own (wrapped) line."""
    if entry.valid:
        return [f"{entry.name}: ok"]
    return [f"{entry.name}: invalid", *(f"  - {problem}" for problem in entry.problems)]


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
        good = sum(1 for e in self.entries if e.valid)
        yield Static(self.where, id="where", markup=False)
        with VerticalScroll(id="card"):
            yield Static(f"{self.shown_as}: {len(self.entries)} answers files, {good} valid", id="prompt",
                         markup=False)
            for entry in self.entries:
                yield Static("\n".join(entry_lines(entry)), classes="queue-file" + ("" if entry.valid else " bad"),
                             markup=False)
            if good:
                hint = ("Enter runs them in this order; invalid files are reported and skipped; finished "
                        "files move to complete/. Esc goes back.")
            else:
                hint = "Nothing here can run: Esc to choose another folder."
            yield Static(hint, id="hint" if good else "error", markup=False)
        yield Footer()

    def action_run(self) -> None:
        if not any(e.valid for e in self.entries):
            self.app.bell()
            return
        self.finish("run")

    def action_back(self) -> None:
        self.finish("back")
