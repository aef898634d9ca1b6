"""The review: every answer grouped, the computed plan, and the way out.

Selecting a row jumps to that question (the flow comes back here after it);
`s` goes on to saving. Defaults are shown dimmed so the typed answers stand out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from easytrain.tui.base import WizardScreen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from easytrain import questions as Q
from easytrain.tui.preview import StepsLine
from easytrain.tui.widgets import StepsBar

KEY_WIDTH = 24
VALUE_WIDTH = 48


@dataclass(frozen=True)
class ReviewRow:
    key: str
    value: Any
    origin: str  # "" (typed), "default" or "detected"


@dataclass(frozen=True)
class ReviewView:
    where: str
    rows: Sequence[ReviewRow]  # in question order
    summary: Sequence[str]  # steps, architecture, planned files
    warnings: Sequence[str]
    steps: Optional[StepsLine]
    save_label: str = "save"


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]


def row_text(row: ReviewRow) -> Text:
    """``  key   value  origin``; a key as long as its column or longer keeps one space before its value,
    which gives up the columns the key takes (the row still fits 80 columns)."""
    q = Q.BY_ID[row.key]
    key = f"  {row.key:<{KEY_WIDTH}}" + (" " if len(row.key) >= KEY_WIDTH else "")
    overflow = max(0, len(row.key) + 1 - KEY_WIDTH)
    text = Text(key, style="bold")
    if row.origin == "missing":
        text.append("(needs an answer: Enter)", style="bold red")
        return text
    shown = Q.format_value(q, row.value)
    if shown == "":
        shown = "(empty)"
    text.append(shorten(shown, VALUE_WIDTH - overflow))
    if row.origin:
        text.append(f"  {row.origin}", style="dim")
    return text


class ReviewScreen(WizardScreen[tuple]):
    """Returns ("jump", key), ("save",) or ("back",)."""

    BINDINGS = [
        Binding("s,ctrl+s", "save", "Save"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, view: ReviewView) -> None:
        super().__init__(classes="review")
        self.view = view

    def compose(self) -> ComposeResult:
        view = self.view
        yield Static(view.where, id="where", markup=False)
        summary = list(view.summary) + [f"! {w}" for w in view.warnings]
        yield Static("\n".join(summary), id="summary", markup=False)
        options: list[Option] = []
        by_group = {group: [r for r in view.rows if Q.BY_ID[r.key].group == group] for group in Q.GROUPS}
        for group, rows in by_group.items():
            if not rows:
                continue
            options.append(Option(Text(group.upper(), style="bold underline"), disabled=True))
            options += [Option(row_text(row), id=row.key) for row in rows]
        yield Static(f"Enter on a row changes it; s to {view.save_label}; Esc goes back.", id="hint",
                     markup=False)
        yield OptionList(*options, id="rows")
        bar = StepsBar(id="steps")
        bar.show_line(view.steps)
        yield bar
        yield Footer()

    def on_mount(self) -> None:
        rows = self.query_one("#rows", OptionList)
        rows.focus()
        rows.highlighted = 1 if rows.option_count > 1 else None
        missing = [row.key for row in self.view.rows if row.origin == "missing"]
        if missing:  # the first answer still needed is where Enter goes
            self.select_key(missing[0])

    def select_key(self, key: str) -> None:
        rows = self.query_one("#rows", OptionList)
        rows.highlighted = rows.get_option_index(key)

    @on(OptionList.OptionSelected, "#rows")
    def _jump(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.finish(("jump", event.option.id))

    def action_save(self) -> None:
        self.finish(("save",))

    def action_back(self) -> None:
        self.finish(("back",))
