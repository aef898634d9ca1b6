"""A yes/no confirmation over the current screen (used by Ctrl+Q)."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from easytrain.tui.base import WizardModal
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option


class ConfirmScreen(WizardModal[bool]):
    BINDINGS = [
        Binding("escape,n", "answer(False)", "No"),
        Binding("y", "answer(True)", "Yes"),
    ]

    def __init__(self, question: str, yes: str = "Yes", no: str = "No") -> None:
        super().__init__(classes="confirm")
        self.question = question
        self.yes, self.no = yes, no

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Static(self.question, id="confirm-question", markup=False)
            yield OptionList(Option(f"{self.no} (n)", id="no"), Option(f"{self.yes} (y)", id="yes"),
                             id="confirm-options")

    def on_mount(self) -> None:
        self.query_one("#confirm-options").focus()

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.finish(event.option.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.finish(value)
