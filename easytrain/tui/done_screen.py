"""After saving: start training now, or exit and start it later."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from easytrain.tui.base import WizardScreen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option


class DoneScreen(WizardScreen[str]):
    """Returns "train" or "exit"."""

    BINDINGS = [
        Binding("t", "choose('train')", "Start training"),
        Binding("e,escape", "choose('exit')", "Exit"),
    ]

    def __init__(self, where: str, message: str, command: str) -> None:
        super().__init__(classes="done")
        self.where = where
        self.message = message
        self.command = command

    def compose(self) -> ComposeResult:
        yield Static(self.where, id="where", markup=False)
        with VerticalScroll(id="card"):
            yield Static(self.message, id="prompt", markup=False)
            yield Static(f"To train it later (also over SSH):\n  {self.command}", id="help", markup=False)
            yield OptionList(Option("Start training now (t)", id="train"),
                             Option("Exit; start later with the command above (e)", id="exit"), id="field")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#field").focus()

    @on(OptionList.OptionSelected, "#field")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.finish(event.option.id)

    def action_choose(self, choice: str) -> None:
        self.finish(choice)
