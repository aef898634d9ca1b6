"""Suggested repeats and epochs, right after the scan: one key to take them.

`a` writes the suggested repeats into the answers (folder_repeats) and the
epochs; nothing on disk changes. `r` renames the `N_name` folders instead,
after showing what would be renamed and asking; Ctrl+Z takes a rename made
here back. Enter keeps the repeats as they are; Esc goes back to the scan.
Returns "accept", "keep", "renamed", "undone" or "back".
"""

from __future__ import annotations

from typing import Optional

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Footer, Static

from easytrain.errors import UserError
from easytrain.repeats import TARGET_STEPS, RepeatsSuggestion
from easytrain.tools.repeats_rename import plan_renames
from easytrain.invocation import command
from easytrain.tui.base import WizardScreen
from easytrain.tui.confirm_screen import ConfirmScreen
from easytrain.tui.preview import StepsLine
from easytrain.tui.widgets import StepsBar


class RepeatsScreen(WizardScreen[str]):
    BINDINGS = [
        Binding("a", "accept", "Use these"),
        Binding("r", "rename", "Rename folders"),
        Binding("enter", "keep", "Keep mine"),
        Binding("ctrl+z,f6", "undo", "Undo rename"),
        Binding("escape,backspace", "back", "Back"),
    ]

    def __init__(self, suggestion: RepeatsSuggestion, step, where: str, steps: Optional[StepsLine]) -> None:
        super().__init__(classes="repeats")
        self.suggestion = suggestion
        self.step = step  # tui.repeats.RenameStep: the folder, and the renames made in this run
        self.where = where
        self.steps = steps

    def compose(self) -> ComposeResult:
        s = self.suggestion
        low, high = TARGET_STEPS
        yield Static(self.where, id="where", markup=False)
        with VerticalScroll(id="card"):
            if s.changes_anything:
                prompt = f"Suggested repeats and epochs: about {low}-{high} steps, each folder a similar share"
            else:
                prompt = f"Your repeats and epochs already land in {low}-{high} steps"
            yield Static(prompt, id="prompt", markup=False)
            table = DataTable(id="subsets", show_cursor=False, zebra_stripes=True)
            table.can_focus = False
            table.add_columns("folder", "images", "repeats now", "suggested")
            for f in s.folders:
                table.add_row(f.folder, str(f.images), str(f.repeats_now), str(f.repeats))
            yield table
            yield Static(f"now:       {s.steps_now.line()}\nsuggested: {s.steps.line()}", id="repeats-steps",
                         markup=False)
            if s.changes_anything:
                hint = ("a: use these (kept in the answers; no folder is renamed)   r: rename the folders "
                        "instead   Enter: keep mine   Esc: back")
            else:
                hint = "Enter goes on; Esc goes back to the scan."
            if self.step.can_undo:
                hint += "   Ctrl+Z: undo the rename"
            yield Static(hint, id="hint", markup=False)
            yield Static("", id="outcome", markup=False)
        bar = StepsBar(id="steps")
        bar.show_line(self.steps)
        yield bar
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#outcome", Static).display = False

    def action_accept(self) -> None:
        if not self.suggestion.changes_anything:
            self.finish("keep")
            return
        self.finish("accept")

    def action_keep(self) -> None:
        self.finish("keep")

    def action_back(self) -> None:
        self.finish("back")

    def action_rename(self) -> None:
        changed = {f.folder: f.repeats for f in self.suggestion.folders if f.repeats != f.repeats_now}
        try:
            renames = plan_renames(self.step.folder, changed)
        except UserError as exc:
            self._show_outcome(str(exc), bad=True)
            return
        if not renames:
            self._show_outcome("The folder names already carry the suggested repeats.", bad=True)
            return

        def decided(rename: Optional[bool]) -> None:
            if not rename:
                return
            try:
                self.step.apply(renames)
            except (UserError, OSError) as exc:
                self._show_outcome(f"nothing was renamed: {exc}", bad=True)
                return
            self.finish("renamed")

        listing = ", ".join(r.line() for r in renames)
        self.app.push_screen(ConfirmScreen(f"Rename {listing}? The old names are kept in the undo record "
                                           f"(Ctrl+Z here, or `{command('images', 'DIR', '--undo')}`).",
                                           yes="Rename", no="Don't"), decided)

    def action_undo(self) -> None:
        if not self.step.can_undo:
            self._show_outcome("No folder was renamed here, so there is nothing to undo.", bad=True)
            self.app.bell()
            return
        try:
            self.step.undo()
        except UserError as exc:
            self._show_outcome(str(exc), bad=True)
            return
        self.finish("undone")

    def _show_outcome(self, text: str, bad: bool = False) -> None:
        outcome = self.query_one("#outcome", Static)
        outcome.update(text)
        outcome.set_class(bad, "bad")
        outcome.display = True
