"""The optional captions step, right after the scan: the top tags and the common fixes.

A trigger tag to put first, tags to remove (marked in the list with Space, or
typed), underscores to spaces. The preview follows every change; Ctrl+A (F5)
writes it through the tools' caption edits with an undo copy, Ctrl+Z (F6)
takes it back. Enter goes on (asking first when a previewed edit was not
applied), Esc goes back to the scan. Returns "continue" or "back".
"""

from __future__ import annotations

from typing import Optional

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.widgets import Checkbox, Footer, Input, SelectionList, Static
from textual.widgets.selection_list import Selection

from easytrain.errors import UserError
from easytrain.tools.caption_edits import EditPlan
from easytrain.tui.base import WizardScreen
from easytrain.tui.captions import CaptionStep, TagCounts, chosen_edits
from easytrain.tui.confirm_screen import ConfirmScreen
from easytrain.tui.preview import StepsLine
from easytrain.wording import plural
from easytrain.tui.widgets import AnswerInput, StepsBar, TickBox, TickList

EXAMPLES = 2  # before/after pairs in the preview: the screen must fit 80x24


class CaptionsScreen(WizardScreen[str]):
    BINDINGS = [
        Binding("enter", "accept", "Continue", priority=True),
        Binding("escape", "back", "Back"),
        Binding("ctrl+a,f5", "apply", "Apply", priority=True),
        Binding("ctrl+z,f6", "undo", "Undo", priority=True),
    ]

    def __init__(self, step: CaptionStep, shown_as: str, where: str, steps: Optional[StepsLine],
                 keep_tokens: int = 1) -> None:
        super().__init__(classes="captions")
        self.step = step
        self.shown_as = shown_as
        self.where = where
        self.steps = steps
        self.keep_tokens = keep_tokens
        self.plan: Optional[EditPlan] = None

    # ---------------------------------------------------------------- layout
    def compose(self) -> ComposeResult:
        yield Static(self.where, id="where", markup=False)
        card = VerticalScroll(id="card")
        card.can_focus = False  # Tab goes round the fields only
        with card:
            yield Static("", id="prompt", markup=False)
            with Horizontal(id="caption-tools"):
                with Vertical(id="tags-box"):
                    yield Static("Top tags: Space ticks X = remove", classes="label", markup=False)
                    yield TickList(id="tags", compact=True)
                with Vertical(id="fixes"):
                    yield Static("Trigger tag to put first:", classes="label", markup=False)
                    yield AnswerInput(placeholder="e.g. mychar", id="trigger", compact=True)
                    yield Static("Remove these tags too (commas between):", classes="label", markup=False)
                    yield AnswerInput(placeholder="e.g. watermark, signature", id="remove", compact=True)
                    yield TickBox("underscores to spaces", id="underscores", compact=True)
                    yield Static("", id="outcome", markup=False)
            yield Static("", id="preview", markup=False)
        bar = StepsBar(id="steps")
        bar.show_line(self.steps)
        yield bar
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#outcome", Static).display = False
        self._load_tags()
        self._update_preview()
        tags = self.query_one("#tags", SelectionList)
        # Where Space means "remove": in the list. Tab goes on to the typed fields.
        (tags if tags.option_count else self.query_one("#trigger")).focus()

    def _load_tags(self) -> None:
        try:
            counts = self.step.counts()
        except UserError as exc:
            counts = TagCounts(0, 0, ())
            self._show_outcome(str(exc), bad=True)
        self.query_one("#prompt", Static).update(self._prompt_text(counts))
        tags = self.query_one("#tags", SelectionList)
        tags.clear_options()
        tags.add_options([Selection(Content(f"{count:>5}  {tag}"), tag) for tag, count in counts.top])
        if counts.top:
            tags.highlighted = 0  # Space works as soon as Tab reaches the list

    def _prompt_text(self, counts: TagCounts) -> str:
        if counts.captions == 0:
            return f"Captions in {self.shown_as}: no caption files, so nothing to fix here. Enter goes on."
        return (f"Captions in {self.shown_as}: {plural(counts.captions, 'caption file')}, "
                f"{plural(counts.distinct, 'different tag')}")

    # ---------------------------------------------------------------- the edits and their preview
    def _edits(self):
        return chosen_edits(self.query_one("#trigger", Input).value,
                            tuple(self.query_one("#tags", SelectionList).selected),
                            self.query_one("#remove", Input).value,
                            self.query_one("#underscores", Checkbox).value, self.keep_tokens)

    def _update_preview(self) -> None:
        preview = self.query_one("#preview", Static)
        self.plan = None
        try:
            self.plan = self.step.plan(self._edits())
        except UserError as exc:
            preview.update(str(exc))
            preview.set_class(True, "bad")
            return
        preview.set_class(False, "bad")
        trigger = self.step.trigger_lines(self.query_one("#trigger", Input).value)
        preview.update("\n".join(trigger + preview_lines(self.plan)))

    @on(Input.Changed)
    @on(Checkbox.Changed)
    @on(SelectionList.SelectedChanged)
    def _edits_changed(self) -> None:
        self._update_preview()

    # ---------------------------------------------------------------- keys
    def action_apply(self) -> None:
        plan = self.plan
        if plan is None or not plan.changes:
            self.app.bell()
            return
        try:
            self.step.apply(plan)
        except UserError as exc:
            self._show_outcome(str(exc), bad=True)
            self._update_preview()
            return
        self._clear_fields()
        self._show_outcome(f"Applied to {plural(len(plan.changes), 'caption file')}; the originals are kept "
                           "(Ctrl+Z undoes).")

    def action_undo(self) -> None:
        if not self.step.can_undo:
            self._show_outcome("Nothing was applied here, so there is nothing to undo.", bad=True)
            self.app.bell()
            return
        try:
            result = self.step.undo()
        except UserError as exc:
            self._show_outcome(str(exc), bad=True)
            return
        self._clear_fields()
        self._show_outcome(f"Undone: {plural(len(result.restored), 'caption file')} put back as before.")

    def action_accept(self) -> None:
        if self.plan is None or not self.plan.changes:
            self.finish("continue")
            return

        def decided(go_on: Optional[bool]) -> None:
            if go_on:
                self.finish("continue")

        self.app.push_screen(ConfirmScreen("The caption edits in the preview are not applied. Go on without "
                                           "them? Nothing on disk changes.", yes="Go on", no="Stay"), decided)

    def action_back(self) -> None:
        self.finish("back")

    # ---------------------------------------------------------------- helpers
    def _clear_fields(self) -> None:
        """After apply or undo: the list shows the captions as they are now, the fields start empty."""
        with self.prevent(Input.Changed, Checkbox.Changed, SelectionList.SelectedChanged):
            self.query_one("#trigger", Input).value = ""
            self.query_one("#remove", Input).value = ""
            self.query_one("#underscores", Checkbox).value = False
            self._load_tags()
        self._update_preview()

    def _show_outcome(self, text: str, bad: bool = False) -> None:
        outcome = self.query_one("#outcome", Static)
        outcome.update(text)
        outcome.set_class(bad, "bad")
        outcome.display = True


def preview_lines(plan: Optional[EditPlan]) -> list[str]:
    """What the preview area says: how many files change, a few before/after lines, notes."""
    if plan is None:
        return ["Nothing chosen yet: Enter goes on and leaves the captions as they are."]
    if not plan.changes:
        return [f"Nothing would change in the {plural(plan.captions, 'caption file')}."]
    lines = [f"{len(plan.changes)} of {plural(plan.captions, 'caption file')} would change "
             "(Ctrl+A applies), e.g.:"]
    for change in plan.changes[:EXAMPLES]:
        lines += [f"  before: {change.before}", f"  after:  {change.after}"]
    notes = []
    if plan.without_caption:
        notes.append(f"{plural(plan.without_caption, 'image')} without a caption")
    if plan.skipped:
        notes.append(f"{plural(len(plan.skipped), 'file')} not UTF-8, left as they are")
    if plan.head_underscores:
        notes.append(f"underscores kept in the first keep-tokens tags of {plan.head_underscores}")
    if notes:
        lines.append("Note: " + "; ".join(notes) + ".")
    return lines
