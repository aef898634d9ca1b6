"""Small widgets the screens share: the answer fields and the steps bar."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from rich.segment import Segment
from textual.content import Content
from textual.strip import Strip
from textual.widgets import Checkbox, Input, OptionList, SelectionList, Static

from easytrain.tui.paths import SHOWN_CANDIDATES, complete_path
from easytrain.tui.preview import StepsLine


class BackRequested(Message):
    """Backspace on an empty field: go back one question."""


class AnswerInput(Input):
    """A text field where Backspace on an empty field means "back"."""

    def on_mount(self) -> None:
        if self.app.is_headless:  # a steady cursor keeps test screenshots identical
            self.cursor_blink = False

    def action_delete_left(self) -> None:
        if not self.value:
            self.post_message(BackRequested())
            return
        super().action_delete_left()


class PathInput(AnswerInput):
    """A path field: Tab completes the last part, like a shell."""

    BINDINGS = [Binding("tab", "complete", "Complete", show=False)]

    class Completed(Message):
        def __init__(self, candidates: tuple[str, ...]) -> None:
            super().__init__()
            self.candidates = candidates

    def __init__(self, *args, kind: str, extensions: Iterable[str], base_dir: Path, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.kind = kind
        self.extensions = tuple(extensions)
        self.base_dir = base_dir

    def action_complete(self) -> None:
        result = complete_path(self.value, self.kind, self.extensions, self.base_dir)
        if result.text != self.value:
            self.value = result.text
            self.cursor_position = len(self.value)
        self.post_message(self.Completed(result.candidates))


class ChoiceList(OptionList):
    """The one-of and yes/no field; Backspace goes back like on an empty text field."""

    BINDINGS = [Binding("backspace", "back", show=False)]

    def action_back(self) -> None:
        self.post_message(BackRequested())


TICKED, UNTICKED = "X", " "  # ticked and unticked boxes differ without colour (monochrome, colour-blind)


class TickList(SelectionList):
    """A SelectionList whose boxes show X only when ticked (Textual's own differ by colour alone)."""

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        segments = list(strip)
        index = self.scroll_offset[1] + y
        if len(segments) < 3 or index >= self.option_count:
            return strip
        ticked = self.get_option_at_index(index).value in self.selected
        segments[1] = Segment(TICKED if ticked else UNTICKED, segments[1].style)
        return Strip(segments, strip.cell_length)


class TickBox(Checkbox):
    """A Checkbox that shows X only when ticked."""

    @property
    def _button(self) -> Content:
        button = super()._button
        mark = TICKED if self.value else UNTICKED
        return Content(button.plain[0] + mark + button.plain[2:], button.spans)


class StepsBar(Vertical):
    """The steps preview, coloured by how far the total is from the usual range.

    The count wraps when it must; the warning keeps to one line (cut with an ellipsis).
    """

    def compose(self) -> ComposeResult:
        yield Static("", id="steps-count", markup=False)
        yield Static("", id="steps-warning", markup=False)

    def show_line(self, line: Optional[StepsLine]) -> None:
        self._line = line
        if self.is_mounted:
            self._render_line()

    def on_mount(self) -> None:
        self._render_line()

    def _render_line(self) -> None:
        line = getattr(self, "_line", None)
        self.display = line is not None
        self.remove_class("ok", "warn", "bad")
        if line is None:
            return
        self.add_class(line.level)
        self.query_one("#steps-count", Static).update(line.text)
        warning = self.query_one("#steps-warning", Static)
        warning.update(f"! {line.warning}" if line.warning else "")
        warning.display = bool(line.warning)


def candidates_text(candidates: tuple[str, ...]) -> str:
    shown = "  ".join(candidates[:SHOWN_CANDIDATES])
    more = len(candidates) - SHOWN_CANDIDATES
    return shown + (f"  (+{more} more)" if more > 0 else "")
