"""The wizard app: `easytrain` with no command.

`create_app()` builds it (commands/wizard.py and the tests use the same
factory); commands/wizard.py runs it and, only after Textual has fully
exited, does what the person chose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from textual import work
from textual.app import App
from textual.binding import Binding

from easytrain.tui.confirm_screen import ConfirmScreen
from easytrain.tui.flow import Outcome, Wizard


class WizardApp(App[Optional[Outcome]]):
    CSS_PATH = "wizard.tcss"
    TITLE = "easytrain"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]

    def __init__(self, *, route: Optional[str] = None, path: Optional[str] = None,
                 base_dir: Optional[Path] = None) -> None:
        super().__init__()
        self.route = route
        self.start_path = path
        self.wizard = Wizard(self, Path(base_dir) if base_dir else Path.cwd())

    def on_mount(self) -> None:
        self.run_flow()

    @work(exclusive=True, group="wizard")
    async def run_flow(self) -> None:
        outcome = await self.wizard.run(self.route, self.start_path)
        self.exit(outcome)

    async def action_quit(self) -> None:
        if isinstance(self.screen, ConfirmScreen):
            return
        from easytrain.tui.start_screen import StartScreen

        if isinstance(self.screen, StartScreen) and not self.wizard.changed:  # nothing answered: nothing to lose
            self.exit(Outcome("quit"))
            return

        def decided(quit_now: Optional[bool]) -> None:
            if quit_now:
                self.exit(Outcome("quit"))

        self.push_screen(ConfirmScreen("Quit the wizard? Answers that are not saved are lost.",
                                       yes="Quit", no="Stay"), decided)


def create_app(*, route: Optional[str] = None, path: Optional[str] = None,
               base_dir: Optional[Path] = None) -> WizardApp:
    """The wizard; ``route`` ("new", "train", "edit", "queue") skips the start screen."""
    from easytrain.textsafe import escape_in_rendered_text

    escape_in_rendered_text()  # captions, tags and file names never reach the terminal raw
    return WizardApp(route=route, path=path, base_dir=base_dir)
