"""What was found in the image folder, shown right after it is chosen.

Each `N_name` folder with its repeats, images and captions, then the folder
problems and file warnings of the scan. Enter goes on, Esc goes back to the
folder question. A folder with no usable images cannot be accepted.
"""

from __future__ import annotations

from typing import Callable, Optional

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from easytrain.tui.base import WizardScreen
from textual.widgets import DataTable, Footer, Static

from easytrain.data.scan import DatasetScan
from easytrain.tui.preview import StepsLine
from easytrain.tui.widgets import StepsBar
from easytrain.wording import plural


def scan_problems(scan: DatasetScan) -> list[str]:
    lines = [f"! {p}" for p in scan.problems]
    lines += [f"- {w}" for w in scan.warnings]
    return lines


class ScanScreen(WizardScreen[str]):
    BINDINGS = [
        Binding("enter", "accept", "Continue"),
        Binding("enter", "choose_again", "Choose another folder"),  # instead of Continue: nothing to train on
        Binding("escape,backspace", "back", "Back"),
    ]

    def __init__(self, scan: DatasetScan, shown_as: str, where: str, steps: Optional[StepsLine],
                 shorten: Callable[[str], str] = str) -> None:
        super().__init__(classes="scan")
        self.scan = scan
        self.shorten = shorten
        self.shown_as = shown_as
        self.where = where
        self.steps = steps

    def compose(self) -> ComposeResult:
        scan = self.scan
        yield Static(self.where, id="where", markup=False)
        with VerticalScroll(id="card"):
            total = scan.total_images
            yield Static(f"Found in {self.shown_as}: {plural(len(scan.subsets), 'folder')}, "
                         f"{plural(total, 'image')}, {scan.images_per_epoch} per epoch with repeats",
                         id="prompt", markup=False)
            table = DataTable(id="subsets", show_cursor=False, zebra_stripes=True)
            table.can_focus = False
            table.add_columns("folder", "repeats", "images", "captions", "x repeats")
            for subset in scan.subsets:
                table.add_row(subset.folder.name, str(subset.repeats), str(len(subset.images)),
                              str(subset.captions), str(subset.images_per_epoch))
            yield table
            problems = [self.shorten(line) for line in scan_problems(scan)]
            text = "\n".join(problems) if problems else "No problems found."
            yield Static(text, id="scan-problems", classes="bad" if scan.problems else "", markup=False)
            if total == 0:
                yield Static("Nothing to train on here: Enter or Esc to choose another folder.", id="error",
                             markup=False)
            else:
                yield Static("Enter continues; Esc goes back to the folder question.", id="hint", markup=False)
        bar = StepsBar(id="steps")
        bar.show_line(self.steps)
        yield bar
        yield Footer()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """Enter continues when there are images to train on, and goes back to the folder question when not."""
        if action == "accept":
            return self.scan.total_images > 0
        if action == "choose_again":
            return self.scan.total_images == 0
        return True

    def action_accept(self) -> None:
        self.finish("continue")

    def action_choose_again(self) -> None:
        self.finish("back")

    def action_back(self) -> None:
        self.finish("back")
