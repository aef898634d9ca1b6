"""Pick a preset: the guides' recipes shipped in answers/presets/, each with what it is for."""

from __future__ import annotations

from typing import Optional, Sequence

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from easytrain.presets import Preset
from easytrain.tui.base import WizardScreen


SUMMARY_WIDTH = 60


def summary(description: str) -> str:
    """The first sentence's first clause, short enough for one line of the list."""
    first = description.split(". ")[0].split(": ", 1)[-1]
    return first if len(first) <= SUMMARY_WIDTH else first[:SUMMARY_WIDTH - 3] + "..."


class PresetScreen(WizardScreen[Optional[str]]):
    """Returns the chosen preset's name, or None (Esc: back to the start)."""

    BINDINGS = [Binding("escape,backspace", "back", "Back")]

    def __init__(self, where: str, presets: Sequence[Preset]) -> None:
        super().__init__(classes="presets")
        self.where = where
        self.presets = presets

    def compose(self) -> ComposeResult:
        yield Static(self.where, id="where", markup=False)
        with VerticalScroll(id="card"):
            yield Static("Which preset?", id="prompt", markup=False)
            yield Static("Each fills the answers with a guide's recipe; every question is still asked, with "
                         "the preset's value filled in. Copy a file in answers/presets/ to make your own.",
                         id="help", markup=False)
            yield OptionList(*[Option(f"{p.name}: {summary(p.description)}", id=p.name) for p in self.presets],
                             id="field")
            yield Static("", id="note", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#field").focus()

    @on(OptionList.OptionHighlighted, "#field")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self.query_one("#note", Static).update(self.presets[event.option_index].description)

    @on(OptionList.OptionSelected, "#field")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.finish(event.option.id)

    def action_back(self) -> None:
        self.finish(None)
