"""The one screen that asks any question of the spec.

The flow hands it a QuestionView (the question, the current answer, its
default, how to check a value); it hands back a Move through dismiss: an
accepted value (and whether the person typed it or kept the default), back,
review or quit. It never knows which question it shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from easytrain.tui.base import WizardScreen
from textual.widgets import Footer, Input, OptionList, Static
from textual.widgets.option_list import Option

from easytrain import questions as Q
from easytrain.tui.browser_screen import PathBrowser
from easytrain.tui.preview import StepsLine
from easytrain.tui.widgets import AnswerInput, BackRequested, ChoiceList, PathInput, StepsBar, candidates_text

PATH_KINDS = ("file", "folder", "model")
YES_NO = ((True, "yes"), (False, "no"))


@dataclass(frozen=True)
class Move:
    kind: str  # "accept" | "back" | "review"
    value: Any = None
    typed: bool = False


@dataclass(frozen=True)
class QuestionView:
    """Everything the question screen shows, prepared by the flow."""
    question: Q.Question
    value: Any  # the current answer: typed, or the default
    typed: bool
    default: Any
    where: str  # "New training - network - question 9 of 33"
    steps: Optional[StepsLine]
    check: Callable[[Q.Question, Any], Optional[str]]
    base_dir: Path
    note: Callable[[Q.Question, Any], Optional[str]] = lambda q, v: None  # e.g. what was detected
    browse_from: Optional[Path] = None  # where Ctrl+O opens with nothing typed: beside the chosen dataset


def as_typed(text: str) -> str:
    """Help text with its `easytrain ...` commands in the form that runs as typed (easytrain/invocation.py)."""
    from easytrain.invocation import prefix, quote

    return text.replace("`easytrain ", "`" + " ".join(quote(word) for word in prefix()) + " ")


def choices_of(q: Q.Question) -> tuple[tuple[Any, str], ...]:
    return YES_NO if q.kind == "yesno" else q.choices


def default_hint(q: Q.Question, default: Any, value: Any = None) -> str:
    if q.kind in ("yesno", "choice"):
        return f"Up/Down choose, Enter accepts (default: {Q.format_value(q, default) or 'none'})"
    if default is None or default == "":
        if q.required:
            return "An answer is needed" if value in (None, "") else "Enter keeps the answer shown"
        return "Enter leaves it empty"
    return f"Enter keeps {Q.format_value(q, default)}"


class QuestionScreen(WizardScreen[Move]):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+s", "review", "Review"),
        Binding("f2,ctrl+o", "browse", "Browse", show=False),
    ]

    def __init__(self, view: QuestionView) -> None:
        super().__init__(classes=f"question kind-{view.question.kind}")
        self.view = view

    # ---------------------------------------------------------------- layout
    def compose(self) -> ComposeResult:
        q, view = self.view.question, self.view
        yield Static(view.where, id="where", markup=False)
        with VerticalScroll(id="card"):
            yield Static(q.prompt, id="prompt", markup=False)
            yield Static(as_typed(q.help), id="help", markup=False)
            hint = default_hint(q, view.default, view.value if view.typed else None)
            if q.kind in PATH_KINDS:
                hint += " | Tab completes, Ctrl+O browses"
            yield Static(hint, id="hint", markup=False)
            yield self._field()
            yield Static("", id="error", markup=False)
            yield Static("", id="note", markup=False)
        bar = StepsBar(id="steps")
        bar.show_line(view.steps)
        yield bar
        yield Footer()

    def _field(self):
        q, view = self.view.question, self.view
        if q.kind in ("yesno", "choice"):
            options = []
            for value, label in choices_of(q):
                text = label + ("   (default)" if value == view.default else "")
                options.append(Option(text))
            field = ChoiceList(*options, id="field")
            values = [v for v, _ in choices_of(q)]
            if view.value in values:
                field.highlighted = values.index(view.value)
            return field
        text = Q.format_value(q, view.value) if view.typed else ""
        placeholder = Q.format_value(q, view.default) if view.default not in (None, "") else ""
        if q.kind in PATH_KINDS:
            return PathInput(text, placeholder=placeholder, id="field", kind=q.kind,
                             extensions=q.extensions, base_dir=view.base_dir)
        return AnswerInput(text, placeholder=placeholder, id="field")

    def on_mount(self) -> None:
        self.query_one("#field").focus()
        field = self.query_one("#field")
        if isinstance(field, Input) and field.value:
            self._live_check(field.value)
        elif self.view.typed or self.view.question.kind in ("yesno", "choice"):
            self._show_note(self.view.value)
        else:
            self._show_note(self.view.default)

    # ---------------------------------------------------------------- checking
    def _parse(self, raw: str) -> tuple[Any, bool, Optional[str]]:
        """(value, typed, problem) for what is in the field."""
        q = self.view.question
        if not raw.strip():
            value = self.view.default
            return value, False, self.view.check(q, value)
        try:
            value = Q.parse_text(q, raw)
        except ValueError as exc:
            return None, True, str(exc)
        return value, True, self.view.check(q, value)

    def _live_check(self, raw: str) -> None:
        if not raw.strip():
            self._show_error(None)
            self._show_note(self.view.default)
            return
        value, _, problem = self._parse(raw)
        self._show_error(problem)
        self._show_note(value if problem is None else None)

    def _show_error(self, problem: Optional[str]) -> None:
        error = self.query_one("#error", Static)
        error.update(problem or "")
        error.display = bool(problem)

    def _show_note(self, value: Any) -> None:
        note = self.query_one("#note", Static)
        text = None
        if value not in (None, ""):
            try:
                text = self.view.note(self.view.question, value)
            except Exception as exc:  # a note is a courtesy; show why it failed instead
                text = str(exc)
        note.update(text or "")
        note.display = bool(text)

    # ---------------------------------------------------------------- events
    @on(Input.Changed, "#field")
    def _changed(self, event: Input.Changed) -> None:
        self._live_check(event.value)

    @on(Input.Submitted, "#field")
    def _submitted(self, event: Input.Submitted) -> None:
        value, typed, problem = self._parse(event.value)
        if problem:
            self._show_error(problem)
            self.app.bell()
            return
        self.finish(Move("accept", value, typed))

    @on(OptionList.OptionSelected, "#field")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        value = choices_of(self.view.question)[event.option_index][0]
        problem = self.view.check(self.view.question, value)
        if problem:
            self._show_error(problem)
            self.app.bell()
            return
        self.finish(Move("accept", value, value != self.view.default))

    @on(OptionList.OptionHighlighted, "#field")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._show_note(choices_of(self.view.question)[event.option_index][0])

    @on(PathInput.Completed)
    def _completed(self, event: PathInput.Completed) -> None:
        note = self.query_one("#note", Static)
        if event.candidates:
            note.update(candidates_text(event.candidates))
            note.display = True

    @on(BackRequested)
    def _back_requested(self) -> None:
        self.action_back()

    def action_back(self) -> None:
        self.finish(Move("back"))

    def action_review(self) -> None:
        self.finish(Move("review"))

    def action_browse(self) -> None:
        q = self.view.question
        if q.kind not in PATH_KINDS:
            return
        field = self.query_one("#field", PathInput)
        start = field.value or (Q.format_value(q, self.view.default) if self.view.default else "")
        start = start or (str(self.view.browse_from) if self.view.browse_from else "")
        self.app.push_screen(PathBrowser(q.kind, q.extensions, start, self.view.base_dir), self._browsed)

    def _browsed(self, chosen: Optional[str]) -> None:
        if chosen is None:
            return
        field = self.query_one("#field", PathInput)
        field.value = chosen
        field.cursor_position = len(chosen)
        field.focus()
