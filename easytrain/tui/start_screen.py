"""The first screen: which of the four routes to take."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from easytrain.tui.base import WizardScreen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

ROUTES = (
    ("new", "New training, guided", "answer the questions one by one; every answer has a sensible default"),
    ("preset", "New training from a preset", "character, style, outfit or Prodigy: the guides' settings filled in"),
    ("train", "Train from a saved answers file", "check the file, review it, start"),
    ("edit", "Edit a saved answers file", "every answer pre-filled; change folders, name or settings"),
    ("queue", "Run a queue folder", "train every answers file in a folder, in name order"),
)


class StartScreen(WizardScreen[str]):

    def compose(self) -> ComposeResult:
        yield Static("easytrain - LoRA training for Stable Diffusion", id="where", markup=False)
        with VerticalScroll(id="card"):
            yield Static("What do you want to do?", id="prompt", markup=False)
            yield Static("Up/Down choose, Enter starts. Esc goes back a question later on; "
                         "Ctrl+S jumps to the review; Ctrl+Q quits.", id="help", markup=False)
            options = [Option(f"{label}\n  {detail}", id=key) for key, label, detail in ROUTES]
            yield OptionList(*options, id="field")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#field").focus()

    @on(OptionList.OptionSelected, "#field")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.finish(event.option.id)
